"""Meta directories: round trips through our writer and reader, the same weights through
transformers, a checkpoint split the way Meta's model parallelism splits one, tokenizers
against Meta's own tokenizer.model and tiktoken, and broken directories."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import torch
from test_hf_checkpoint import (
    STYLES,
    TEXTS,
    assert_same_tensors,
    assert_same_tokenizer,
    in_layout,
    logits,
    tiny_model,
    trained_tokenizer,
)
from transformers import LlamaForCausalLM

from llmhood.errors import LLMHoodError
from llmhood.tokenizer import BPETokenizer
from llmhood.tokenizer.bpe import LLAMA3_PATTERN, llama3_special_tokens
from llmhood.weights.checkpoint import build_model
from llmhood.weights.gguf import read_gguf
from llmhood.weights.hf import write_hf
from llmhood.weights.meta import SIDECAR, read_meta, write_meta

# ---- weights ------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("style", STYLES)
def test_write_read_roundtrip(tmp_path, style, tie):
    model = tiny_model(style, tie)
    write_meta(tmp_path, model, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["consolidated.00.pth", "params.json"]
    ckpt = read_meta(tmp_path, progress=False)
    assert ckpt.config.rope_style == "interleaved"
    assert ckpt.config.tie_embeddings == tie
    # A tied head is saved under both names, as Meta's code expects, sharing one storage.
    assert_same_tensors(ckpt.state_dict, in_layout(model, "interleaved"))

    ours = build_model(ckpt, torch.float32)
    assert (ours.output.weight is ours.tok_embeddings.weight) == tie
    if style == "interleaved":
        assert torch.equal(logits(ours), logits(model))
    else:
        torch.testing.assert_close(logits(ours), logits(model), rtol=0, atol=1e-5)


def test_tied_head_is_stored_once(tmp_path):
    write_meta(tmp_path / "tied", tiny_model("interleaved", tie=True), None)
    write_meta(tmp_path / "untied", tiny_model("interleaved", tie=False), None)
    tied = (tmp_path / "tied" / "consolidated.00.pth").stat().st_size
    untied = (tmp_path / "untied" / "consolidated.00.pth").stat().st_size
    assert untied - tied > 300 * 64 * 4 * 0.9


@pytest.mark.parametrize("style", STYLES)
def test_same_model_as_transformers(tmp_path, style):
    """Through a Meta directory our model still equals transformers on the HF export."""
    model = tiny_model(style, tie=False)
    write_meta(tmp_path / "meta", model, None)
    write_hf(tmp_path / "hf", model, None)
    ours = build_model(read_meta(tmp_path / "meta", progress=False), torch.float32)
    reference = LlamaForCausalLM.from_pretrained(
        tmp_path / "hf", attn_implementation="eager", dtype=torch.float32
    ).eval()
    torch.testing.assert_close(logits(ours), logits(reference), rtol=0, atol=1e-5)


def test_checkpoint_as_meta_ships_it(tmp_path):
    """Meta's params.json gives the FFN width by formula and says nothing of tying; Llama 3.2's
    small models simply have no output.weight, and then the head is the embedding."""
    model = tiny_model("interleaved", tie=True)
    write_meta(tmp_path, model, None)
    params = json.loads((tmp_path / "params.json").read_text())
    del params["hidden_dim"], params["tie_embeddings"]
    params.update(multiple_of=32, ffn_dim_multiplier=0.75)  # 0.75 * (2/3 * 4 * 64) -> 128
    (tmp_path / "params.json").write_text(json.dumps(params))
    state = torch.load(tmp_path / "consolidated.00.pth")
    del state["output.weight"]
    torch.save(state, tmp_path / "consolidated.00.pth")

    ckpt = read_meta(tmp_path, progress=False)
    assert ckpt.config.hidden_dim == 128 and not ckpt.config.tie_embeddings
    ours = build_model(ckpt, torch.float32)
    assert ours.output.weight is ours.tok_embeddings.weight
    assert torch.equal(logits(ours), logits(model))


def split_like_meta(state: dict[str, torch.Tensor], ranks: int, embedding_dim: int):
    """What each GPU of Meta's model-parallel code saves, written from its layer types:
    ColumnParallelLinear keeps a block of output rows (wq, wk, wv, w1, w3, output),
    RowParallelLinear a block of input columns (wo, w2), the embedding a block of the
    vocabulary (Llama 3, dim 0) or of the width (Llama 2, dim 1); norms are whole everywhere."""
    columns = ("wq", "wk", "wv", "w1", "w3", "output")
    rows = ("wo", "w2")
    shards = [{} for _ in range(ranks)]
    for name, t in state.items():
        kind = name.split(".")[-2]
        dim = 0 if kind in columns else 1 if kind in rows else None
        if kind == "tok_embeddings":
            dim = embedding_dim
        for rank in range(ranks):
            shards[rank][name] = t.clone() if dim is None else t.chunk(ranks, dim)[rank].clone()
    return shards


@pytest.mark.parametrize("embedding_dim", [0, 1], ids=["llama3", "llama2"])
def test_model_parallel_shards_merge(tmp_path, embedding_dim):
    model = tiny_model("interleaved", tie=False)
    write_meta(tmp_path, model, None)
    (tmp_path / "consolidated.00.pth").unlink()
    state = model.state_dict()
    shards = split_like_meta(state, 2, embedding_dim)
    shards[0]["rope.freqs"] = torch.ones(8)  # Llama 2 stores its RoPE table; it is not a weight
    shards[1]["rope.freqs"] = torch.ones(8)
    for rank, shard in enumerate(shards):
        assert shard["layers.0.attention.wk.weight"].shape == (16, 64)
        assert shard["layers.0.feed_forward.w2.weight"].shape == (64, 64)
        torch.save(shard, tmp_path / f"consolidated.{rank:02d}.pth")
    ckpt = read_meta(tmp_path, progress=False)
    assert_same_tensors(ckpt.state_dict, state)
    assert torch.equal(logits(build_model(ckpt, torch.float32)), logits(model))


# ---- tokenizers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama32_tokenizer(llama32_tokenizer_dir) -> BPETokenizer:
    return BPETokenizer.from_tokenizer_json(llama32_tokenizer_dir / "tokenizer.json")


def test_llama32_tokenizer_roundtrip(tmp_path, llama32_tokenizer, llama32_tokenizer_dir):
    write_meta(tmp_path, tiny_model("interleaved"), llama32_tokenizer)
    # Our tokenizer.model is Meta's, byte for byte.
    original = (llama32_tokenizer_dir / "tokenizer.model").read_bytes()
    assert (tmp_path / "tokenizer.model").read_bytes() == original
    sidecar = json.loads((tmp_path / SIDECAR).read_text())
    assert "merges" not in sidecar  # tiktoken's rule rebuilds Llama 3's merge list exactly
    assert sidecar["ignore_merges"] is False  # as the HF tokenizer.json has it
    assert_same_tokenizer(read_meta(tmp_path, progress=False).tokenizer, llama32_tokenizer)


def test_tokenizer_model_without_sidecar_is_llama3(tmp_path, llama32_tokenizer_dir):
    """A directory as Meta ships it: tokenizer.model plus Llama 3's specials, as tiktoken does."""
    model_file = llama32_tokenizer_dir / "tokenizer.model"
    write_meta(tmp_path, tiny_model("interleaved"), None)
    (tmp_path / "tokenizer.model").write_bytes(model_file.read_bytes())
    tokenizer = read_meta(tmp_path, progress=False).tokenizer
    ranks = tiktoken.load.load_tiktoken_bpe(str(model_file))
    specials = llama3_special_tokens(len(ranks))
    reference = tiktoken.Encoding(
        "llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )
    for text in TEXTS:
        assert tokenizer.encode(text) == reference.encode(text, allowed_special="all")
    assert tokenizer.bos_id == specials["<|begin_of_text|>"]


def test_trained_tokenizer_roundtrip(tmp_path):
    """Control tokens before the learned ones and digits split off alone: what tokenizer.model
    cannot say and the sidecar must carry."""
    tokenizer = trained_tokenizer(tmp_path / "source")
    write_meta(tmp_path / "out", tiny_model("interleaved"), tokenizer)
    sidecar = json.loads((tmp_path / "out" / SIDECAR).read_text())
    assert sidecar["special_tokens"] == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    assert_same_tokenizer(read_meta(tmp_path / "out", progress=False).tokenizer, tokenizer)
    # tiktoken reads tokenizer.model: every learned token's bytes at its id, ids 0..2 left free.
    ranks = tiktoken.load.load_tiktoken_bpe(str(tmp_path / "out" / "tokenizer.model"))
    assert sorted(ranks.values()) == list(range(3, tokenizer.vocab_size))
    assert all(tokenizer.decode_bytes([i]) == token for token, i in ranks.items())


@pytest.mark.real
def test_smollm2_tokenizer_roundtrip(tmp_path, smollm2_gguf):
    """The real case the sidecar exists for, with the 21 bytes SmolLM2 has no token for."""
    metadata = read_gguf(smollm2_gguf).metadata
    tokenizer = BPETokenizer.from_gguf(metadata)
    write_meta(tmp_path, tiny_model("interleaved"), tokenizer)
    assert_same_tokenizer(read_meta(tmp_path, progress=False).tokenizer, tokenizer)
    sidecar = json.loads((tmp_path / SIDECAR).read_text())
    assert sidecar["merges"] == list(metadata["tokenizer.ggml.merges"])
    lines = (tmp_path / "tokenizer.model").read_bytes().splitlines()
    assert len(lines) == tokenizer.vocab_size - 17
    token, rank = lines[0].split()
    assert (base64.b64decode(token), int(rank)) == (b"!", 17)


# ---- errors -------------------------------------------------------------------------------


@pytest.fixture
def exported(tmp_path) -> Path:
    folder = tmp_path / "model"
    write_meta(folder, tiny_model("interleaved", tie=False), None)
    return folder


def test_missing_directory(tmp_path):
    with pytest.raises(LLMHoodError, match="does not exist"):
        read_meta(tmp_path / "nowhere")


def test_missing_params(exported):
    (exported / "params.json").unlink()
    with pytest.raises(LLMHoodError, match=r"no params\.json"):
        read_meta(exported)


def test_broken_params(exported):
    (exported / "params.json").write_text('{"dim": 64,')
    with pytest.raises(LLMHoodError, match="not valid JSON"):
        read_meta(exported)


def test_params_without_a_key(exported):
    params = json.loads((exported / "params.json").read_text())
    del params["n_layers"]
    (exported / "params.json").write_text(json.dumps(params))
    with pytest.raises(LLMHoodError, match="n_layers"):
        read_meta(exported)


def test_no_weights(exported):
    (exported / "consolidated.00.pth").unlink()
    with pytest.raises(LLMHoodError, match="no weights"):
        read_meta(exported)


def test_missing_shard(exported):
    (exported / "consolidated.00.pth").rename(exported / "consolidated.02.pth")
    with pytest.raises(LLMHoodError, match=r"consolidated\.00\.pth, consolidated\.01\.pth"):
        read_meta(exported)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_pth(exported, damage):
    file = exported / "consolidated.00.pth"
    data = file.read_bytes()
    file.write_bytes(
        {"truncate": data[: len(data) // 2], "garbage": b"not a checkpoint" * 4, "empty": b""}[
            damage
        ]
    )
    with pytest.raises(LLMHoodError, match=r"consolidated\.00\.pth could not be read"):
        read_meta(exported)


def test_shards_of_different_checkpoints(exported):
    state = torch.load(exported / "consolidated.00.pth")
    shards = split_like_meta(state, 2, 0)
    del shards[1]["norm.weight"]
    for rank, shard in enumerate(shards):
        torch.save(shard, exported / f"consolidated.{rank:02d}.pth")
    with pytest.raises(LLMHoodError, match=r"different checkpoints"):
        read_meta(exported)


def test_damaged_sidecar(tmp_path):
    tokenizer = trained_tokenizer(tmp_path / "source")
    write_meta(tmp_path / "out", tiny_model("interleaved"), tokenizer)
    (tmp_path / "out" / SIDECAR).write_text('{"special_tokens": {}}')
    with pytest.raises(LLMHoodError, match="sidecar"):
        read_meta(tmp_path / "out")


def test_write_refuses_a_non_empty_directory(exported):
    with pytest.raises(LLMHoodError, match="not empty"):
        write_meta(exported, tiny_model("interleaved"), None)


@pytest.mark.real
def test_smollm2_export_roundtrip(tmp_path, smollm2):
    """The real model through a Meta directory: the same layout, so the very same logits."""
    import llmhood

    write_meta(tmp_path, smollm2.model, smollm2.tokenizer)
    reread = llmhood.load(tmp_path, dtype="float32", progress=False)
    ids = torch.tensor([smollm2.tokenizer.encode("The capital of France is")])
    with torch.inference_mode():
        assert torch.equal(reread.model(ids), smollm2.model(ids))
    assert_same_tokenizer(reread.tokenizer, smollm2.tokenizer)
