"""Hugging Face directories: our writer against transformers' reader, our reader against our
writer, and broken directories that must fail with a clear message.

The helpers at the top (tiny models, the layout conversion written from rope.py's
permutations, a tokenizer trained by `tokenizers`) are shared with test_meta_checkpoint.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaForCausalLM

from llmhood.errors import LLMHoodError
from llmhood.model import ModelConfig, Transformer
from llmhood.model.rope import half_to_interleaved, interleaved_to_half
from llmhood.tokenizer import BPETokenizer
from llmhood.weights.checkpoint import Checkpoint, build_model
from llmhood.weights.hf import read_hf, write_hf

STYLES = ["interleaved", "half"]
TEXTS = [
    "Hello, world! How are you doing today?",
    "Numbers 1234567 and 3.14159, dates 2024-06-01.",
    "  leading spaces,\ttabs\n\nand newlines\r\n",
    "ünïcödé, 日本語のテキスト, emoji 🦙🔥 and Ελληνικά",
    "<|im_start|>user\nhi<|im_end|> <|eot_id|><|begin_of_text|>",
]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3 + 3?"},
]


def tiny_model(style: str, tie: bool = True, vocab_size: int = 300, seed: int = 0) -> Transformer:
    """A small random Llama. Weights are small (std 0.05) so logits stay near 1 and a 1e-5
    tolerance is tight; norm gains are random so that swapping two norms would show."""
    config = ModelConfig(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=vocab_size, hidden_dim=128,
        max_seq_len=128, rope_style=style, tie_embeddings=tie,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    model = Transformer(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.copy_(torch.rand(p.shape, generator=generator) + 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return model.eval()


def tokens(vocab_size: int = 300) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def logits(model: Transformer | LlamaForCausalLM) -> torch.Tensor:
    out = model(tokens())
    return out if isinstance(out, torch.Tensor) else out.logits


def in_layout(model: Transformer, style: str) -> dict[str, torch.Tensor]:
    """The model's state dict with q/k rows permuted into `style`, by rope.py's permutations."""
    config = model.config
    permute = interleaved_to_half if style == "half" else half_to_interleaved
    heads = {"wq": config.n_heads, "wk": config.n_kv_heads}
    out = {}
    for name, t in model.state_dict().items():
        kind = name.split(".")[-2]
        out[name] = permute(t, heads[kind]) if style != config.rope_style and kind in heads else t
    return out


def assert_same_tensors(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    for name, t in expected.items():
        assert torch.equal(got[name], t), name


def trained_tokenizer(folder: Path) -> BPETokenizer:
    """A SmolLM2-like tokenizer trained here by `tokenizers`: control tokens at ids 0..2 before
    the learned ones, digits split off one by one, and a merge list (not tiktoken ranks)."""
    folder.mkdir()
    reference = Tokenizer(models.BPE())
    reference.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    reference.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    reference.train_from_iterator(TEXTS * 20, trainer)
    reference.save(str(folder / "tokenizer.json"))
    template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + "
        "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
        "{% endif %}"
    )
    config = {
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|im_end|>",
        "chat_template": template,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return BPETokenizer.from_tokenizer_json(folder / "tokenizer.json")


def assert_same_tokenizer(got: BPETokenizer, expected: BPETokenizer) -> None:
    assert got.to_tokenizer_json() == expected.to_tokenizer_json()
    for attribute in ("bos_id", "eos_id", "pad_id", "add_bos", "chat_template", "ignore_merges"):
        assert getattr(got, attribute) == getattr(expected, attribute), attribute
    for text in TEXTS:
        assert got.encode(text) == expected.encode(text)


@pytest.fixture(scope="module")
def llama32_tokenizer(llama32_tokenizer_dir) -> BPETokenizer:
    return BPETokenizer.from_tokenizer_json(llama32_tokenizer_dir / "tokenizer.json")


# ---- weights ------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("style", STYLES)
def test_write_read_roundtrip(tmp_path, style, tie):
    model = tiny_model(style, tie)
    write_hf(tmp_path, model, None)
    ckpt = read_hf(tmp_path, progress=False)
    assert ckpt.config.rope_style == "half"
    assert ckpt.config.tie_embeddings == tie
    assert ckpt.tokenizer is None
    expected = in_layout(model, "half")
    if tie:
        assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")
        expected.pop("output.weight")
    assert_same_tensors(ckpt.state_dict, expected)

    ours = build_model(ckpt, torch.float32)
    assert (ours.output.weight is ours.tok_embeddings.weight) == tie
    if style == "half":
        assert torch.equal(logits(ours), logits(model))
    else:  # the same model in the other RoPE form: equal up to float rounding
        torch.testing.assert_close(logits(ours), logits(model), rtol=0, atol=1e-5)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("style", STYLES)
def test_transformers_reads_our_export(tmp_path, style, tie):
    model = tiny_model(style, tie)
    write_hf(tmp_path, model, None)
    reference = LlamaForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", dtype=torch.float32
    ).eval()
    assert reference.config.tie_word_embeddings == tie
    torch.testing.assert_close(logits(reference), logits(model), rtol=0, atol=1e-5)


def test_sharded_export(tmp_path):
    model = tiny_model("interleaved", tie=False)
    max_bytes = 40_000  # the 300 x 64 float32 embedding (76.8 kB) is bigger and gets a file alone
    write_hf(tmp_path, model, None, max_shard_bytes=max_bytes)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2
    assert not (tmp_path / "model.safetensors").exists()
    total = 0
    for shard in shards:
        tensors = load_file(tmp_path / shard)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        assert size <= max_bytes or len(tensors) == 1
        assert all(index["weight_map"][name] == shard for name in tensors)
        total += size
    assert index["metadata"]["total_size"] == total

    ours = build_model(read_hf(tmp_path, progress=False), torch.float32)
    torch.testing.assert_close(logits(ours), logits(model), rtol=0, atol=1e-5)
    reference = LlamaForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", dtype=torch.float32
    )
    torch.testing.assert_close(logits(reference.eval()), logits(model), rtol=0, atol=1e-5)


def test_bfloat16_export(tmp_path):
    model = tiny_model("half")
    write_hf(tmp_path, model, None, dtype=torch.bfloat16)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert {t.dtype for t in load_file(tmp_path / "model.safetensors").values()} == {torch.bfloat16}
    ours = build_model(read_hf(tmp_path, progress=False), torch.float32)
    rounded = tiny_model("half")
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    assert torch.equal(logits(ours), logits(rounded))
    assert ours.tok_embeddings.weight.dtype == torch.float32


def test_pytorch_model_bin(tmp_path):
    """Old repos ship a pickle; their RoPE tables (`rotary_emb.inv_freq`) are skipped."""
    model = tiny_model("half", tie=False)
    write_hf(tmp_path, model, None)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    ours = build_model(read_hf(tmp_path, progress=False), torch.float32)
    assert torch.equal(logits(ours), logits(model))


def test_build_model_uses_no_random_init(tmp_path, monkeypatch):
    """Building must not fill real memory with random weights that the checkpoint replaces:
    initialisers may only see shape-only tensors on the meta device."""
    write_hf(tmp_path, tiny_model("half"), None)
    ckpt = read_hf(tmp_path, progress=False)
    for name in ("kaiming_uniform_", "normal_", "uniform_"):
        original = getattr(torch.nn.init, name)

        def on_meta_only(tensor, *args, _original=original, **kwargs):
            assert tensor.device.type == "meta", "random initialisation of real memory"
            return _original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.nn.init, name, on_meta_only)
    model = build_model(ckpt, torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert all(t.device.type == "cpu" for t in (*model.parameters(), *model.buffers()))


# ---- tokenizers ---------------------------------------------------------------------------


def test_llama32_tokenizer_roundtrip(tmp_path, llama32_tokenizer, llama32_tokenizer_dir):
    model = tiny_model("half", vocab_size=llama32_tokenizer.vocab_size)
    write_hf(tmp_path, model, llama32_tokenizer)
    got = read_hf(tmp_path, progress=False).tokenizer
    assert_same_tokenizer(got, llama32_tokenizer)
    # transformers reads the exported files as it reads Meta's originals.
    exported = AutoTokenizer.from_pretrained(tmp_path)
    original = AutoTokenizer.from_pretrained(llama32_tokenizer_dir)
    for text in TEXTS:
        assert exported.encode(text) == original.encode(text)
    assert (exported.bos_token, exported.eos_token) == (original.bos_token, original.eos_token)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["bos_token_id"] == llama32_tokenizer.bos_id
    assert config["eos_token_id"] == llama32_tokenizer.eos_id


def test_trained_tokenizer_roundtrip(tmp_path):
    tokenizer = trained_tokenizer(tmp_path / "source")
    write_hf(tmp_path / "out", tiny_model("half"), tokenizer)
    assert_same_tokenizer(read_hf(tmp_path / "out", progress=False).tokenizer, tokenizer)
    reference = Tokenizer.from_file(str(tmp_path / "source" / "tokenizer.json"))
    exported = AutoTokenizer.from_pretrained(tmp_path / "out")
    for text in TEXTS:
        assert exported.encode(text) == reference.encode(text).ids
    assert exported.pad_token == "<|im_end|>"
    assert exported.apply_chat_template(MESSAGES, tokenize=False) == tokenizer.apply_chat_template(
        MESSAGES, add_generation_prompt=False
    )
    generation = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert generation == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}


# ---- errors -------------------------------------------------------------------------------


@pytest.fixture
def exported(tmp_path) -> Path:
    folder = tmp_path / "model"
    write_hf(folder, tiny_model("half", tie=False), None, max_shard_bytes=100_000)
    return folder


def first_shard(folder: Path) -> Path:
    return sorted(folder.glob("model-*.safetensors"))[0]


def test_missing_directory(tmp_path):
    with pytest.raises(LLMHoodError, match="does not exist"):
        read_hf(tmp_path / "nowhere")


def test_file_instead_of_directory(exported):
    with pytest.raises(LLMHoodError, match="is a file"):
        read_hf(exported / "config.json")


def test_missing_config(exported):
    (exported / "config.json").unlink()
    with pytest.raises(LLMHoodError, match=r"no config\.json"):
        read_hf(exported)


def test_broken_config(exported):
    (exported / "config.json").write_text("{not json")
    with pytest.raises(LLMHoodError, match="not valid JSON"):
        read_hf(exported)


def test_config_without_a_key(exported):
    config = json.loads((exported / "config.json").read_text())
    del config["hidden_size"]
    (exported / "config.json").write_text(json.dumps(config))
    with pytest.raises(LLMHoodError, match="hidden_size"):
        read_hf(exported)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"architectures": ["LlamaForSequenceClassification"]}, "LlamaForCausalLM"),
        ({"model_type": "mistral"}, "mistral"),
    ],
)
def test_other_architecture(exported, change, message):
    config = json.loads((exported / "config.json").read_text())
    config.update(change)
    (exported / "config.json").write_text(json.dumps(config))
    with pytest.raises(LLMHoodError, match=message):
        read_hf(exported)


def test_no_weights(exported):
    for file in exported.glob("model*"):
        file.unlink()
    with pytest.raises(LLMHoodError, match="no weights"):
        read_hf(exported)


def test_index_names_a_missing_shard(exported):
    shard = first_shard(exported)
    shard.unlink()
    with pytest.raises(LLMHoodError, match=shard.name):
        read_hf(exported)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors(exported, damage):
    shard = first_shard(exported)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00" * 64)
    with pytest.raises(LLMHoodError, match=rf"{shard.name} is not a readable safetensors"):
        read_hf(exported)


def test_corrupt_pytorch_model_bin(tmp_path):
    write_hf(tmp_path, tiny_model("half"), None)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(LLMHoodError, match=r"pytorch_model\.bin could not be read"):
        read_hf(tmp_path)


def test_extra_tensor(exported):
    shard = first_shard(exported)
    tensors = load_file(shard)
    tensors["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(64)
    save_file(tensors, shard)
    with pytest.raises(LLMHoodError, match=r"q_proj\.bias"):
        read_hf(exported)


def test_missing_tensor(exported):
    shard = first_shard(exported)
    tensors = load_file(shard)
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, shard)
    ckpt = read_hf(exported, progress=False)
    with pytest.raises(LLMHoodError, match="lacks"):
        build_model(ckpt, torch.float32)


def test_shape_mismatch(exported):
    config = json.loads((exported / "config.json").read_text())
    config["vocab_size"] = 301
    (exported / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        LLMHoodError, match=r"tok_embeddings\.weight is \[300, 64\], expected \[301"
    ):
        build_model(read_hf(exported, progress=False), torch.float32)


def test_build_model_names_every_problem():
    model = tiny_model("interleaved")
    state = model.state_dict()
    del state["layers.1.feed_forward.w2.weight"]
    state["layers.2.attention.wq.weight"] = torch.zeros(64, 64)
    state["norm.weight"] = torch.zeros(32)
    with pytest.raises(LLMHoodError) as error:
        build_model(Checkpoint(model.config, state, None, "test"), torch.float32)
    message = str(error.value)
    assert "lacks layers.1.feed_forward.w2.weight" in message
    assert "layers.2.attention.wq.weight" in message
    assert "norm.weight is [32], expected [64]" in message


def test_write_refuses_a_non_empty_directory(exported):
    with pytest.raises(LLMHoodError, match="not empty"):
        write_hf(exported, tiny_model("half"), None)
    with pytest.raises(LLMHoodError, match="is a file"):
        write_hf(exported / "config.json", tiny_model("half"), None)


# ---- the real model -----------------------------------------------------------------------


@pytest.mark.real
def test_smollm2_export_runs_in_transformers(tmp_path, smollm2, hf_smollm2):
    """SmolLM2 from GGUF, exported: transformers reads our directory and computes what it
    computes from the GGUF file itself; we read it back to the same model and tokenizer."""
    import llmhood

    write_hf(tmp_path, smollm2.model, smollm2.tokenizer)
    text = "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n"
    ids = torch.tensor([smollm2.tokenizer.encode(text)])
    exported = LlamaForCausalLM.from_pretrained(
        tmp_path, attn_implementation="eager", dtype=torch.float32
    ).eval()
    reread = llmhood.load(tmp_path, dtype="float32", progress=False)
    with torch.inference_mode():
        reference = hf_smollm2(ids).logits
        torch.testing.assert_close(exported(ids).logits, reference, rtol=0, atol=1e-5)
        torch.testing.assert_close(reread.model(ids), smollm2.model(ids), rtol=0, atol=1e-4)
    assert AutoTokenizer.from_pretrained(tmp_path).encode(text) == ids[0].tolist()
    assert_same_tokenizer(reread.tokenizer, smollm2.tokenizer)
