"""GGUF files written here, read by the references: the `gguf` package's reader and
quantizers, transformers' GGUF loading, llama.cpp where it is installed, and llmhood's own
reader; LoRA adapters in llama.cpp's convention; bad input refused with a clear message.

How close a rounded file's logits must be to the source model's:

* The exact check is against the source model with every weight rounded by `gguf`'s own
  quantizers (the reference for what an F16 or Q8_0 file holds): the model read back from
  our file must give the same logits bit for bit.
* Against the unrounded source, the bound comes from the format's rounding. A weight
  matrix rounded with relative RMS error u (measured per matrix, the largest taken) moves
  each output of its matmul by about u of its size; errors of independent signs from the
  M = 7·n_layers + 2 matrices on a token's path add up like √M. So the logits move by
  about u·√M·max|logit|; the bound is twice that, the factor 2 being the margin of this
  estimate (the tiny models here reach 0.71 of the estimate, SmolLM2 0.3).
* Two float32 implementations of the same weights (ours, transformers', llama.cpp's with an
  F32 KV cache) differ by float32 rounding only: 1e-5 on logits of size ~1, as in
  test_hf_checkpoint.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFReader, GGUFValueType
from test_hf_checkpoint import (
    TEXTS,
    assert_same_tokenizer,
    logits,
    tiny_model,
    tokens,
    trained_tokenizer,
)
from transformers import AutoTokenizer, LlamaForCausalLM

import llmhood
from llmhood.errors import LLMHoodError
from llmhood.model import ModelConfig, Transformer
from llmhood.model.rope_scaling import RopeScaling, ntk_base
from llmhood.tokenizer import BPETokenizer
from llmhood.tokenizer.bpe import bytes_to_piece
from llmhood.train.lora import LoraConfig, adapted_layers, apply_lora
from llmhood.weights.checkpoint import Checkpoint, build_model
from llmhood.weights.gguf import read_gguf
from llmhood.weights.gguf_llama import read_gguf_checkpoint
from llmhood.weights.gguf_writer import (
    quantize_q8_0,
    read_gguf_lora,
    sampling_metadata,
    write_gguf,
    write_gguf_lora,
)

FILE_TYPES = ["f32", "f16", "q8_0"]
STYLES = ["interleaved", "half"]
FLOAT32_ATOL = 1e-5
# llama.cpp's names for llmhood's, restated from its tensor list (llama-arch.cpp).
GGUF_NAMES = {
    "tok_embeddings.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "output.weight": "output.weight",
}
BLOCK_NAMES = {
    "attention_norm": "attn_norm", "attention.wq": "attn_q", "attention.wk": "attn_k",
    "attention.wv": "attn_v", "attention.wo": "attn_output", "ffn_norm": "ffn_norm",
    "feed_forward.w1": "ffn_gate", "feed_forward.w3": "ffn_up", "feed_forward.w2": "ffn_down",
}  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> BPETokenizer:
    return trained_tokenizer(tmp_path_factory.mktemp("tokenizer") / "trained")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """llmhood.load remembers measurements per file; keep them out of the user's cache."""
    monkeypatch.setenv("LLMHOOD_CACHE", str(tmp_path / "cache"))


# ---- references ---------------------------------------------------------------------------


def gguf_name(name: str) -> str:
    if name in GGUF_NAMES:
        return GGUF_NAMES[name]
    _, layer, rest = name.split(".", 2)
    return f"blk.{layer}.{BLOCK_NAMES[rest.removesuffix('.weight')]}.weight"


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to HF's W_q/W_k rows (LlamaModel.permute)."""
    return (
        w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def expected_type(shape: tuple[int, ...], file_type: str) -> Q:
    """llama.cpp's choice: 1-D tensors F32; Q8_0 only for rows of whole 32-blocks, else F16."""
    if len(shape) == 1 or file_type == "f32":
        return Q.F32
    if file_type == "q8_0" and shape[-1] % 32 == 0:
        return Q.Q8_0
    return Q.F16


def rounded_by_gguf(t: torch.Tensor, qtype: Q) -> torch.Tensor:
    """`t` as a file of type `qtype` holds it, by the gguf package's quantize and dequantize."""
    data = gguf.quants.quantize(t.numpy(), qtype)
    return torch.from_numpy(gguf.quants.dequantize(data, qtype).astype(np.float32)).reshape(t.shape)


def gguf_layout(model: Transformer) -> dict[str, torch.Tensor]:
    """`model`'s tensors (float32) as a GGUF holds them: W_q/W_k rows of a half-layout model
    permuted by llama.cpp's converter, and no tied head."""
    config = model.config
    heads = {"wq": config.n_heads, "wk": config.n_kv_heads}
    out = {}
    for name, t in model.state_dict().items():
        kind = name.split(".")[-2]
        t = t.detach().float()
        out[name] = t
        if config.rope_style == "half" and kind in heads:
            out[name] = torch.from_numpy(llama_cpp_permute(t.numpy(), heads[kind]))
    if config.tie_embeddings:
        out.pop("output.weight")
    return out


def gguf_state(model: Transformer) -> dict[str, torch.Tensor]:
    return {gguf_name(name): t for name, t in gguf_layout(model).items()}


def reference_model(model: Transformer, file_type: str) -> Transformer:
    """`model` with every weight rounded as the gguf package rounds it for `file_type`."""
    state = gguf_layout(model)
    rounded = {
        n: rounded_by_gguf(t, expected_type(tuple(t.shape), file_type)) for n, t in state.items()
    }
    config = model.config.replace(rope_style="interleaved")
    return build_model(Checkpoint(config, rounded, None, "reference"), torch.float32)


def rounding_bound(model: Transformer, rounded: Transformer, reference: torch.Tensor) -> float:
    """2·u·√M·max|logit| (see the module docstring); `rounded` holds the file's weights."""
    errors = []
    held = rounded.state_dict()
    norm = torch.linalg.vector_norm
    for name, t in gguf_layout(model).items():
        if t.ndim == 2:  # RMS(delta) / RMS(t), both over t.numel() values
            errors.append((norm(held[name] - t) / norm(t)).item())
    matrices = 7 * model.config.n_layers + 2
    return 2 * max(errors) * math.sqrt(matrices) * reference.abs().max().item()


def float32(x: float) -> float:
    return float(np.float32(x))


def field(reader: GGUFReader, key: str) -> tuple[object, GGUFValueType]:
    f = reader.fields[key]
    return f.contents(), f.types[0]


def written(
    model: Transformer, tokenizer: BPETokenizer, folder: Path, file_type: str, **kw
) -> Path:
    return write_gguf(model, tokenizer, folder / f"model-{file_type}.gguf", file_type,
                      progress=False, **kw)  # fmt: skip


# ---- merged models: read back -------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_the_file_reads_back_to_the_model(tmp_path, tokenizer, file_type, style, tie):
    model = tiny_model(style, tie=tie)
    path = written(model, tokenizer, tmp_path, file_type)
    ckpt = read_gguf_checkpoint(path, progress=False)
    back = build_model(ckpt, torch.float32)
    config = model.config
    assert ckpt.config == config.replace(
        rope_style="interleaved", norm_eps=float32(config.norm_eps),
        rope_theta=float32(config.rope_theta),
    )  # fmt: skip
    assert_same_tokenizer(ckpt.tokenizer, tokenizer)
    assert torch.equal(logits(back), logits(reference_model(model, file_type)))
    source = logits(model)
    if file_type == "f32" and style == "interleaved":
        assert torch.equal(logits(back), source)
    elif file_type == "f32":  # the other RoPE form on the same weights: float32 rounding
        torch.testing.assert_close(logits(back), source, rtol=0, atol=FLOAT32_ATOL)
    else:
        assert (logits(back) - source).abs().max() <= rounding_bound(model, back, source)


@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_a_bfloat16_model_is_written_from_its_own_values(tmp_path, tokenizer, file_type):
    model = tiny_model("half").to(torch.bfloat16)
    back = build_model(read_gguf_checkpoint(written(model, tokenizer, tmp_path, file_type),
                                            progress=False), torch.float32)  # fmt: skip
    as_float32 = tiny_model("half").to(torch.bfloat16).float()
    assert torch.equal(logits(back), logits(reference_model(as_float32, file_type)))


def test_llmhood_load_reads_it_with_the_recommended_sampling(tmp_path, tokenizer):
    model = tiny_model("interleaved")
    sampling = {"temperature": 0.5, "top_k": 20, "top_p": 0.75, "repetition_penalty": 1.25}
    path = written(model, tokenizer, tmp_path, "f32", metadata=sampling_metadata(sampling))
    llm = llmhood.load(path, dtype="float32", quantize=None, progress=False)
    assert torch.equal(logits(llm.model), logits(model))
    assert llm.chat_settings.options == sampling  # all exact in float32
    assert llm.tokenizer.encode(TEXTS[0]) == tokenizer.encode(TEXTS[0])


# ---- merged models: the gguf package ------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_gguf_reader_sees_the_same_tensors_and_keys(tmp_path, tokenizer, file_type, tie):
    model = tiny_model("half", tie=tie)
    path = written(model, tokenizer, tmp_path, file_type, metadata={"general.name": "Tiny"})
    reader = GGUFReader(path)
    expected = gguf_state(model)
    assert [t.name for t in reader.tensors] == list(expected)
    assert ("output.weight" in expected) == (not tie)
    for t in reader.tensors:
        source = expected[t.name]
        assert tuple(int(n) for n in reversed(t.shape)) == tuple(source.shape), t.name
        assert t.tensor_type == expected_type(tuple(source.shape), file_type), t.name
        assert t.data_offset % 32 == 0
        if t.tensor_type == Q.F32:
            assert np.array_equal(t.data, source.numpy()), t.name
        elif t.tensor_type == Q.F16:
            assert np.array_equal(t.data, source.numpy().astype(np.float16)), t.name
        else:
            assert np.array_equal(t.data, gguf.quants.quantize(source.numpy(), Q.Q8_0)), t.name

    c = model.config
    uint32, float_ = GGUFValueType.UINT32, GGUFValueType.FLOAT32
    assert field(reader, "GGUF.version")[0] == 3
    assert field(reader, "general.architecture") == ("llama", GGUFValueType.STRING)
    assert field(reader, "general.name") == ("Tiny", GGUFValueType.STRING)
    assert field(reader, "general.alignment") == (32, uint32)
    file_type_ids = {"f32": 0, "f16": 1, "q8_0": 7}  # llama.cpp's LLAMA_FTYPE_* values
    assert field(reader, "general.file_type") == (file_type_ids[file_type], uint32)
    for key, value in {
        "context_length": c.max_seq_len, "embedding_length": c.dim, "block_count": c.n_layers,
        "feed_forward_length": c.hidden_dim, "attention.head_count": c.n_heads,
        "attention.head_count_kv": c.n_kv_heads, "rope.dimension_count": c.head_dim,
        "vocab_size": c.vocab_size,
    }.items():  # fmt: skip
        assert field(reader, f"llama.{key}") == (value, uint32), key
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == (float32(c.norm_eps), float_)
    assert field(reader, "llama.rope.freq_base") == (float32(c.rope_theta), float_)

    data = tokenizer.to_tokenizer_json()
    pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    assert field(reader, "tokenizer.ggml.model")[0] == "gpt2"
    assert field(reader, "tokenizer.ggml.pre")[0] == "smollm"  # digits split off, then GPT-2
    assert field(reader, "tokenizer.ggml.tokens")[0] == pieces
    assert field(reader, "tokenizer.ggml.merges")[0] == [
        " ".join(m) for m in data["model"]["merges"]
    ]
    control, normal = 3, 1  # llama.cpp's token types
    types = [control if i in tokenizer.special_ids else normal for i in range(len(pieces))]
    assert field(reader, "tokenizer.ggml.token_type") == (types, GGUFValueType.ARRAY)
    assert reader.fields["tokenizer.ggml.token_type"].types[1] == GGUFValueType.INT32
    assert field(reader, "tokenizer.ggml.bos_token_id") == (tokenizer.bos_id, uint32)
    assert field(reader, "tokenizer.ggml.eos_token_id") == (tokenizer.eos_id, uint32)
    assert field(reader, "tokenizer.ggml.padding_token_id") == (tokenizer.pad_id, uint32)
    assert field(reader, "tokenizer.ggml.add_bos_token") == (False, GGUFValueType.BOOL)
    assert field(reader, "tokenizer.chat_template")[0] == tokenizer.chat_template


def test_q8_0_bytes_equal_the_gguf_quantizer_on_hard_cases():
    """Ties at .5, which roundf rounds away from zero, and values a hair below them, which a
    floor(x + 0.5) would round up; an all-zero block (d = 0); scales too small for f16; a
    lone large value; blocks of equal values (each x·(1/d) lands on ±127)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 256, generator=generator)
    x[0, :32] = torch.arange(32) * 0.5 - 8
    x[1, :32] = 0
    x[2, :32] = torch.tensor([127.0, 0.5, 1.5, -0.5, -2.5, 63.5, -63.5] + [0.0] * 25)
    x[3] *= 1e-30
    x[4, :32] = 1e-3
    x[4, 7] = 1e4
    x[5] = -0.75
    x[6] *= 1e5
    below_ties = torch.nextafter(torch.arange(31) + 0.5, torch.zeros(31))
    x[7, :32] = torch.cat([torch.tensor([127.0]), below_ties])  # d = 1: x·(1/d) is x itself
    reference = gguf.quants.quantize(x.numpy(), Q.Q8_0).reshape(-1)
    assert np.array_equal(quantize_q8_0(x).numpy(), reference)
    with pytest.raises(LLMHoodError, match=r"a tensor of shape \[4, 48\] has none"):
        quantize_q8_0(torch.zeros(4, 48))


def test_rows_that_are_not_whole_q8_0_blocks_fall_back_to_f16_and_the_vocab_is_padded(
    tmp_path, tokenizer
):
    """dim 48 gives every weight but W_2 rows of 48 values, not a whole number of
    32-blocks; W_2 reads rows of hidden_dim 96, three blocks. The embedding has 20 more rows
    than the tokenizer has tokens: GGUF lists them as unused [PAD<id>] tokens."""
    config = ModelConfig(dim=48, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=320,
                         hidden_dim=96, max_seq_len=64, tie_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(config).eval()
    path = written(model, tokenizer, tmp_path, "q8_0")
    reader = GGUFReader(path)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == Q.F16
    assert types["blk.0.attn_output.weight"] == types["output.weight"] == Q.F16
    assert types["blk.0.ffn_down.weight"] == Q.Q8_0
    assert types["blk.0.attn_norm.weight"] == Q.F32
    tokens_ = field(reader, "tokenizer.ggml.tokens")[0]
    token_types = field(reader, "tokenizer.ggml.token_type")[0]
    assert tokens_[300:] == [f"[PAD{i}]" for i in range(300, 320)]
    assert token_types[300:] == [5] * 20  # UNUSED
    back = build_model(read_gguf_checkpoint(path, progress=False), torch.float32)
    ids = tokens(320)
    with torch.inference_mode():
        assert torch.equal(back(ids), reference_model(model, "q8_0")(ids))


# ---- merged models: transformers and llama.cpp --------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("file_type", FILE_TYPES)
def test_transformers_loads_the_file(tmp_path, tokenizer, file_type, tie):
    model = tiny_model("half", tie=tie)
    path = written(model, tokenizer, tmp_path, file_type)
    theirs = LlamaForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                              dtype=torch.float32).eval()  # fmt: skip
    assert theirs.config.tie_word_embeddings == tie
    ours = build_model(read_gguf_checkpoint(path, progress=False), torch.float32)
    torch.testing.assert_close(logits(theirs), logits(ours), rtol=0, atol=FLOAT32_ATOL)
    hf_tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in TEXTS:
        assert hf_tokenizer.encode(text, add_special_tokens=False) == tokenizer.encode(text)


def llama_cpp_logits(llm, ids: list[int]) -> torch.Tensor:
    """(len(ids), vocab) float32 logits of every position; the model is closed afterwards."""
    llm.eval(ids)
    logits = torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))
    llm.close()
    return logits


@pytest.mark.parametrize("style", STYLES)
def test_llama_cpp_runs_the_file_and_the_adapter(tmp_path, tokenizer, style):
    """llama.cpp on the F32 file, alone and with the adapter (B of a half-layout model's
    wq/wk permuted on the way), against our model with the adapter merged in. Its KV cache
    is made F32 (the default F16 would round every key and value); then float32 rounding
    is all that separates the two."""
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (`pip install .[bench]`)"
    )
    model = tiny_model(style, tie=False)
    base = written(model, tokenizer, tmp_path, "f32")
    adapters, alpha, rank = random_adapters(model.config, style)
    adapter = write_gguf_lora(tmp_path / "lora.gguf", adapters, alpha=alpha, rank=rank,
                              config=model.config, rope_style=style)  # fmt: skip
    ids = tokens()[0].tolist()
    f32 = 0  # GGML_TYPE_F32
    for lora, expected in [(None, model), (adapter, merged(model, adapters, alpha / rank))]:
        options = {} if lora is None else {"lora_path": str(lora)}
        llm = llama_cpp.Llama(model_path=str(base), n_ctx=64, logits_all=True, type_k=f32,
                              type_v=f32, verbose=False, **options)  # fmt: skip
        for text in TEXTS:
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer.encode(
                text
            )
        theirs = llama_cpp_logits(llm, ids)
        with torch.inference_mode():
            ours = expected(torch.tensor([ids]))[0]
        torch.testing.assert_close(theirs, ours, rtol=0, atol=FLOAT32_ATOL)


# ---- merged models: bad input -------------------------------------------------------------


def test_an_unknown_file_type_is_refused(tmp_path, tokenizer):
    with pytest.raises(LLMHoodError, match=r"Unknown GGUF file_type 'q4_0'.*f32, f16, q8_0"):
        write_gguf(tiny_model("half"), tokenizer, tmp_path / "m.gguf", "q4_0")
    assert not any(tmp_path.iterdir())


def test_a_quantized_model_is_refused(tmp_path, tokenizer):
    path = written(tiny_model("interleaved"), tokenizer, tmp_path, "q8_0")
    llm = llmhood.load(path, quantize="int8", progress=False)
    with pytest.raises(LLMHoodError, match="quantized weights"):
        write_gguf(llm.model, llm.tokenizer, tmp_path / "again.gguf")
    assert not (tmp_path / "again.gguf").exists()


def test_a_directory_is_not_a_file_to_write(tmp_path, tokenizer):
    (tmp_path / "out.gguf").mkdir()
    with pytest.raises(LLMHoodError, match=r"is a directory; give the path of the .gguf file"):
        write_gguf(tiny_model("half"), tokenizer, tmp_path / "out.gguf")


def test_other_bad_input_is_refused(tmp_path, tokenizer):
    model = tiny_model("half")
    path = tmp_path / "m.gguf"
    with pytest.raises(LLMHoodError, match="needs the model's BPETokenizer"):
        write_gguf(model, None, path)
    with pytest.raises(LLMHoodError, match="takes an llmhood Transformer"):
        write_gguf(LlamaForCausalLM, tokenizer, path)
    with pytest.raises(LLMHoodError, match="position_encoding='cope'"):
        write_gguf(Transformer(model.config.replace(position_encoding="cope")), tokenizer, path)
    with pytest.raises(LLMHoodError, match=r"'llama.block_count' describes the tensors"):
        write_gguf(model, tokenizer, path, metadata={"llama.block_count": 3})
    with pytest.raises(LLMHoodError, match=r"'general.sampling.top_k' is 'many'.*must be INT32"):
        write_gguf(model, tokenizer, path, metadata={"general.sampling.top_k": "many"})
    with pytest.raises(LLMHoodError, match=r"'my.key' is .*must be a bool, an int"):
        write_gguf(model, tokenizer, path, metadata={"my.key": {"a": 1}})
    with pytest.raises(LLMHoodError, match="has no key for the sampling setting"):
        sampling_metadata({"seed": 3})
    llama3 = RopeScaling("llama3", 8.0, 8192)
    with pytest.raises(LLMHoodError, match="RoPE scaling \\(llama3\\) has no GGUF spelling"):
        write_gguf(Transformer(model.config.replace(rope_scaling=llama3)), tokenizer, path)
    small = tiny_model("half", vocab_size=200)
    with pytest.raises(LLMHoodError, match="300 tokens but the model's embedding only 200"):
        write_gguf(small, tokenizer, path)
    assert not path.exists()


def test_an_unknown_pre_tokenizer_is_refused_unless_named(tmp_path):
    """GPT-2's regex with tiktoken's whole-word lookup is no pre-tokenizer llama.cpp names."""
    pieces = [bytes_to_piece(bytes([b])) for b in range(256)]
    metadata = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
                "tokenizer.ggml.tokens": pieces, "tokenizer.ggml.merges": []}  # fmt: skip
    plain = BPETokenizer.from_gguf(metadata)
    gpt2 = plain.to_tokenizer_json()["pre_tokenizer"]
    odd = BPETokenizer(pieces, [], added_tokens={}, pre_tokenizer=gpt2, ignore_merges=True)
    model = tiny_model("half", vocab_size=256)
    with pytest.raises(LLMHoodError, match=r"tokenizer.ggml.pre"):
        write_gguf(model, odd, tmp_path / "odd.gguf", progress=False)
    named = write_gguf(model, odd, tmp_path / "odd.gguf", progress=False,
                       metadata={"tokenizer.ggml.pre": "x"})  # fmt: skip
    assert field(GGUFReader(named), "tokenizer.ggml.pre")[0] == "x"
    plain_file = written(model, plain, tmp_path, "f32")
    assert field(GGUFReader(plain_file), "tokenizer.ggml.pre")[0] == "gpt-2"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, tokenizer):
    """The last weight is beyond float16's range, so F16 fails after most of the file is
    written; the file already there must be untouched, and nothing else left behind."""
    path = written(tiny_model("half"), tokenizer, tmp_path, "f16")
    before = path.read_bytes()
    model = tiny_model("half", tie=False)
    with torch.no_grad():
        model.output.weight[-1, -1] = 1e5
    with pytest.raises(LLMHoodError, match=r"output.weight holds values float16 cannot store"):
        write_gguf(model, tokenizer, path, "f16", progress=False)
    assert path.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    write_gguf(model, tokenizer, path, "f32", progress=False)
    assert read_gguf_checkpoint(path, progress=False).state_dict["output.weight"][-1, -1] == 1e5


# ---- metadata -----------------------------------------------------------------------------


def test_metadata_overrides_and_extra_keys(tmp_path, tokenizer):
    extra = {
        "general.name": "Tiny Llama",
        "llama.context_length": 64,
        "tokenizer.chat_template": None,  # left out
        "my.flag": True, "my.count": 7, "my.big": 1 << 40, "my.ratio": 0.25,
        "my.names": ["a", "b"], "my.ids": [1, 2, 3], "my.values": [1, 2.5],
        **sampling_metadata({"temperature": 0.5, "top_k": 40, "min_p": 0.125}),
    }  # fmt: skip
    reader = GGUFReader(written(tiny_model("half"), tokenizer, tmp_path, "f32", metadata=extra))
    V = GGUFValueType
    assert field(reader, "general.name") == ("Tiny Llama", V.STRING)
    assert field(reader, "llama.context_length") == (64, V.UINT32)
    assert "tokenizer.chat_template" not in reader.fields
    assert field(reader, "my.flag") == (True, V.BOOL)
    assert field(reader, "my.count") == (7, V.INT32)
    assert field(reader, "my.big") == (1 << 40, V.INT64)
    assert field(reader, "my.ratio") == (0.25, V.FLOAT32)
    for key, value, element in [("my.names", ["a", "b"], V.STRING), ("my.ids", [1, 2, 3], V.INT32),
                                ("my.values", [1.0, 2.5], V.FLOAT32)]:  # fmt: skip
        assert field(reader, key) == (value, V.ARRAY)
        assert reader.fields[key].types[1] == element
    # the types llama.cpp reads these keys as (llama-model-loader checks them)
    assert field(reader, "general.sampling.temp") == (0.5, V.FLOAT32)
    assert field(reader, "general.sampling.top_k") == (40, V.INT32)
    assert field(reader, "general.sampling.min_p") == (0.125, V.FLOAT32)


@pytest.mark.parametrize(
    "scaling",
    [RopeScaling("linear", 4.0), RopeScaling("yarn", 4.0, 32, beta_fast=16.0, beta_slow=2.0)],
)
def test_rope_scaling_is_written_as_llama_cpp_spells_it(tmp_path, tokenizer, scaling):
    model = Transformer(tiny_model("half").config.replace(rope_scaling=scaling))
    path = written(model, tokenizer, tmp_path, "f32")
    reader = GGUFReader(path)
    assert field(reader, "llama.rope.scaling.type")[0] == scaling.kind
    assert field(reader, "llama.rope.scaling.factor") == (4.0, GGUFValueType.FLOAT32)
    if scaling.kind == "yarn":
        assert field(reader, "llama.rope.scaling.original_context_length") == (
            32, GGUFValueType.UINT32,
        )  # fmt: skip
        assert field(reader, "llama.rope.scaling.yarn_beta_fast")[0] == 16.0
        assert field(reader, "llama.rope.scaling.yarn_beta_slow")[0] == 2.0
    assert read_gguf_checkpoint(path, progress=False).config.rope_scaling == scaling


def test_static_ntk_scaling_is_written_as_its_larger_base(tmp_path, tokenizer):
    model = Transformer(tiny_model("half").config.replace(rope_scaling=RopeScaling("ntk", 4.0)))
    reader = GGUFReader(written(model, tokenizer, tmp_path, "f32"))
    base = ntk_base(model.config.head_dim, model.config.rope_theta, 4.0)
    assert field(reader, "llama.rope.freq_base")[0] == float32(base)
    assert not [key for key in reader.fields if key.startswith("llama.rope.scaling")]


# ---- LoRA adapters ------------------------------------------------------------------------


def random_adapters(
    config: ModelConfig, style: str, rank: int = 4, seed: int = 0
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float, int]:
    """A (r, in) and B (out, r) for every projection of every layer, B's rows in `style`."""
    generator = torch.Generator().manual_seed(seed)
    shapes = {n: t.shape for n, t in tiny_model(style).state_dict().items()}
    adapters = {}
    for name, shape in shapes.items():
        if len(shape) == 2 and name.startswith("layers."):
            out_features, in_features = shape
            a = torch.randn(rank, in_features, generator=generator) * 0.1
            b = torch.randn(out_features, rank, generator=generator) * 0.1
            adapters[name.removesuffix(".weight")] = (a, b)
    return adapters, 8.0, rank


def merged(model: Transformer, adapters: dict, scale: float) -> Transformer:
    """The model with W + scale·B·A folded in, in its own rope layout."""
    state = {name: t.clone() for name, t in model.state_dict().items()}
    for name, (a, b) in adapters.items():
        state[f"{name}.weight"] += scale * (b @ a)
    if model.config.tie_embeddings:
        state.pop("output.weight")
    return build_model(Checkpoint(model.config, state, None, "merged"), torch.float32)


@pytest.mark.parametrize("style", STYLES)
def test_lora_round_trip(tmp_path, style):
    config = tiny_model(style).config
    adapters, alpha, rank = random_adapters(config, style)
    path = write_gguf_lora(tmp_path / "lora.gguf", adapters, alpha=alpha, rank=rank,
                           config=config, rope_style=style, base_name="Tiny")  # fmt: skip
    back, alpha_back, rank_back = read_gguf_lora(path)
    assert (alpha_back, rank_back) == (alpha, rank)
    assert back.keys() == adapters.keys()
    heads = {"wq": config.n_heads, "wk": config.n_kv_heads}
    for name, (a, b) in adapters.items():
        kind = name.rsplit(".", 1)[-1]
        if style == "half" and kind in heads:
            b = torch.from_numpy(llama_cpp_permute(b.numpy(), heads[kind]))
        assert torch.equal(back[name][0], a), name
        assert torch.equal(back[name][1], b), name


def test_gguf_reader_sees_an_adapter_as_llama_cpp_expects_it(tmp_path, tokenizer):
    """llama-adapter.cpp's checks, restated: general.type 'adapter', adapter.type 'lora',
    the arch of the base, and for each base tensor W (ggml ne = [in, out]) a lora_a with
    ne [in, r] and a lora_b with ne [r, out]."""
    model = tiny_model("half", tie=False)
    base = GGUFReader(written(model, tokenizer, tmp_path, "f32"))
    adapters, alpha, rank = random_adapters(model.config, "half")
    path = write_gguf_lora(tmp_path / "lora.gguf", adapters, alpha=alpha, rank=rank,
                           config=model.config, rope_style="half", base_name="Tiny")  # fmt: skip
    reader = GGUFReader(path)
    assert field(reader, "general.type")[0] == "adapter"
    assert field(reader, "adapter.type")[0] == "lora"
    assert field(reader, "adapter.lora.alpha") == (alpha, GGUFValueType.FLOAT32)
    assert field(reader, "general.architecture")[0] == "llama"
    assert field(reader, "general.base_model.0.name")[0] == "Tiny"
    base_ne = {t.name: [int(n) for n in t.shape] for t in base.tensors}
    names = [t.name for t in reader.tensors]
    assert names == [f"{gguf_name(n + '.weight')}.lora_{p}" for n in adapters for p in "ab"]
    for t in reader.tensors:
        assert t.tensor_type == Q.F32
        weight, part = t.name.rsplit(".", 1)
        n_in, n_out = base_ne[weight]
        assert [int(n) for n in t.shape] == ([n_in, rank] if part == "lora_a" else [rank, n_out])


@pytest.mark.parametrize("style", STYLES)
def test_the_merged_weights_from_the_files_equal_the_adapters(tmp_path, tokenizer, style):
    """W + (alpha/r)·B·A, computed from the two files with gguf's reader, against the
    adapters merged in the model's own layout and put into GGUF's by llama.cpp's permute.
    The two sides multiply the same numbers in different row orders: float32 rounding."""
    model = tiny_model(style)
    config = model.config
    base = GGUFReader(written(model, tokenizer, tmp_path, "f32"))
    adapters, alpha, rank = random_adapters(config, style)
    lora = GGUFReader(write_gguf_lora(tmp_path / "lora.gguf", adapters, alpha=alpha, rank=rank,
                                      config=config, rope_style=style))  # fmt: skip
    alpha_file = field(lora, "adapter.lora.alpha")[0]
    parts = {t.name: np.array(t.data) for t in lora.tensors}
    weights = {t.name: np.array(t.data) for t in base.tensors}
    heads = {"wq": config.n_heads, "wk": config.n_kv_heads}
    own = model.state_dict()
    for name, (a, b) in adapters.items():
        key = gguf_name(f"{name}.weight")
        r = parts[f"{key}.lora_a"].shape[0]
        from_files = weights[key] + alpha_file / r * (
            parts[f"{key}.lora_b"] @ parts[f"{key}.lora_a"]
        )
        expected = (own[f"{name}.weight"] + alpha / rank * (b @ a)).numpy()
        kind = name.rsplit(".", 1)[-1]
        if style == "half" and kind in heads:
            expected = llama_cpp_permute(expected, heads[kind])
        np.testing.assert_allclose(from_files, expected, rtol=0, atol=1e-6, err_msg=name)


def test_an_adapter_trained_here_runs_the_same_from_the_files(tmp_path, tokenizer):
    """llmhood's LoraLinear (y = W·x + (α/r)·B·A·x) on a half-layout model, against the base
    GGUF with the adapter GGUF merged in, in the interleaved form: float32 rounding."""
    model = tiny_model("half")
    base = written(model, tokenizer, tmp_path, "f32")
    apply_lora(model, LoraConfig(rank=4, alpha=12.0))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, layer in adapted_layers(model):
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator) * 0.1)
    adapters = {name: (layer.lora_A, layer.lora_B) for name, layer in adapted_layers(model)}
    path = write_gguf_lora(tmp_path / "lora.gguf", adapters, alpha=12.0, rank=4,
                           config=model.config, rope_style="half")  # fmt: skip
    read, alpha, rank = read_gguf_lora(path)
    from_files = build_model(read_gguf_checkpoint(base, progress=False), torch.float32)
    assert (alpha, rank) == (12.0, 4)
    torch.testing.assert_close(
        logits(merged(from_files, read, alpha / rank)), logits(model.eval()), rtol=0,
        atol=FLOAT32_ATOL,
    )  # fmt: skip


def test_bad_adapters_are_refused(tmp_path, tokenizer):
    config = tiny_model("half").config
    adapters, alpha, rank = random_adapters(config, "half")
    path = tmp_path / "lora.gguf"

    def write(adapters=adapters, alpha=alpha, rank=rank) -> Path:
        return write_gguf_lora(path, adapters, alpha=alpha, rank=rank, config=config,
                               rope_style="half")  # fmt: skip

    pair = adapters["layers.0.attention.wq"]
    with pytest.raises(LLMHoodError, match="no adapters to write"):
        write({})
    with pytest.raises(LLMHoodError, match=r"'layers.9.attention.wq' is not a layer"):
        write({"layers.9.attention.wq": pair})
    with pytest.raises(LLMHoodError, match="'tok_embeddings' is not a layer"):
        write({"tok_embeddings": pair})
    with pytest.raises(
        LLMHoodError, match=r"A \[4, 64\] and B \[64, 4\], but rank 4 .* B \[32, 4\]"
    ):
        write({"layers.0.attention.wk": pair})
    with pytest.raises(LLMHoodError, match="but rank 8"):
        write(rank=8)
    with pytest.raises(LLMHoodError, match="alpha=0 is invalid"):
        write(alpha=0)
    with pytest.raises(LLMHoodError, match="a pair of tensors"):
        write({"layers.0.attention.wq": pair[0]})
    assert not path.exists()
    with pytest.raises(LLMHoodError, match="is not a LoRA adapter"):
        read_gguf_lora(written(tiny_model("half"), tokenizer, tmp_path, "f32"))


# ---- the real model -----------------------------------------------------------------------


@pytest.mark.real
def test_smollm2_round_trips_exactly_in_f32_and_as_llama_cpp_quantizes_in_q8_0(tmp_path, smollm2):
    """SmolLM2-135M-Instruct read from its Q4_1 GGUF into float32, written again: in F32 it
    reads back to the same logits, config and tokenizer; in Q8_0 the embedding's and the
    first and last blocks' bytes are the gguf package's quantization of our weights (the tiny
    models above check every tensor, and gguf's reader), and the logits stay within the
    rounding bound."""
    model, tokenizer = smollm2.model, smollm2.tokenizer
    text = "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n"
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.inference_mode():
        reference = model(ids)

    f32 = written(model, tokenizer, tmp_path, "f32")
    back = read_gguf_checkpoint(f32, progress=False)
    assert_same_tokenizer(back.tokenizer, tokenizer)
    assert back.config == model.config
    with torch.inference_mode():
        assert torch.equal(build_model(back, torch.float32)(ids), reference)
    del back
    f32.unlink()

    q8 = read_gguf(written(model, tokenizer, tmp_path, "q8_0"))
    expected = gguf_state(model)
    assert list(q8.tensors) == list(expected)
    last = model.config.n_layers - 1
    for name, info in q8.tensors.items():
        source_tensor = expected[name].numpy()
        assert info.ggml_type == expected_type(source_tensor.shape, "q8_0"), name
        if name == "token_embd.weight" or name.startswith(("blk.0.", f"blk.{last}.")):
            reference_bytes = gguf.quants.quantize(source_tensor, info.ggml_type).reshape(-1)
            assert np.array_equal(q8.raw(name), reference_bytes.view(np.uint8)), name
    rounded = build_model(read_gguf_checkpoint(q8, progress=False), torch.float32)
    with torch.inference_mode():
        got = rounded(ids)
    assert torch.equal(got.argmax(-1)[0, -1], reference.argmax(-1)[0, -1])
    assert (got - reference).abs().max() <= rounding_bound(model, rounded, reference)


@pytest.mark.real
def test_llama_cpp_runs_smollm2_as_written(tmp_path, smollm2):
    """Our F32 export of SmolLM2 in llama.cpp (F32 KV cache): the same tokens, the sampling
    keys read back, and logits within twice the float32 bound of test_real_model.py (each
    side carries float32 rounding of its own)."""
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (`pip install .[bench]`)"
    )
    from test_real_model import float32_bound

    sampling = sampling_metadata({"temperature": 0.25, "top_p": 0.875})
    path = written(smollm2.model, smollm2.tokenizer, tmp_path, "f32", metadata=sampling)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, logits_all=True, type_k=0, type_v=0,
                          verbose=False)  # fmt: skip
    text = "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n"
    ids = smollm2.tokenizer.encode(text)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids
    assert float(llm.metadata["general.sampling.temp"]) == 0.25
    theirs = llama_cpp_logits(llm, ids)
    with torch.inference_mode():
        ours = smollm2.model(torch.tensor([ids]))[0]
    assert torch.equal(theirs.argmax(-1), ours.argmax(-1))
    assert (theirs - ours).abs().max() <= 2 * float32_bound(smollm2.config, ours)
