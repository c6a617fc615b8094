"""Adapters on disk against peft: our export applied by peft to our HF export of the base
gives our logits; a peft adapter loads into llmhood with peft's logits; merging changes
nothing; a QLoRA adapter runs on the NF4 base it was trained on. Bases from an HF directory
(q/k rows in "half" order) and from GGUF ("interleaved") both, since the LoRA B rows of wq
and wk must follow the base's order.

Tolerance 1e-4 on logits of size ~1: two float32 implementations of the same ~10 matmuls in a
different order differ by ~1e-6; 1e-4 still catches any misplaced row (those differ by ~1e-1).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_gguf import write_tiny_gguf
from tiny_run import smollm2_tokenizer, write_tiny_base

import llmhood
from llmhood.errors import LLMHoodError
from llmhood.speed.modes import REFERENCE, build
from llmhood.train.adapter import read_adapter, save_adapter, write_peft
from llmhood.train.export import export, merged
from llmhood.train.lora import LoraConfig, adapted_layers, apply_lora
from llmhood.weights.hf import write_hf

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
TOKENS = torch.tensor([[1, 520, 31, 4005, 17, 9, 300, 2, 88, 1200]])


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf):
    return smollm2_tokenizer(smollm2_gguf)


@pytest.fixture(scope="module", params=["hf", "gguf"])
def base(request, tmp_path_factory, tokenizer, smollm2_gguf) -> Path:
    folder = tmp_path_factory.mktemp(f"base-{request.param}")
    if request.param == "hf":
        return write_tiny_base(folder / "base", tokenizer)
    return write_tiny_gguf(folder / "tiny.gguf", smollm2_gguf)


def random_adapter(base: Path, out: Path, dora: bool = False, nf4: dict | None = None) -> Path:
    """An adapter with every tensor random (B is zero at initialisation, which would hide
    any misplaced row)."""
    model, _ = build(base, REFERENCE, False, keep=False, decode_step=False)
    if nf4 is not None:
        from llmhood.train.adapter import quantize_base

        quantize_base(model, nf4["double_quant"])
    lora = LoraConfig(rank=4, alpha=8, target=["all-linear"], dora=dora)
    apply_lora(model, lora)
    torch.manual_seed(1)
    with torch.no_grad():
        for _, layer in adapted_layers(model):
            layer.lora_B.normal_(0, 0.2)
            if dora:
                layer.magnitude.mul_(1 + 0.1 * torch.randn_like(layer.magnitude))
    return save_adapter(model, out, lora, str(base), nf4)


def ours(base: Path, adapter: Path) -> torch.Tensor:
    llm = llmhood.load(base, adapter=adapter, progress=False)
    with torch.no_grad():
        return llm.model(TOKENS)


def hf_base(base: Path, folder: Path) -> Path:
    """Our HF export of the base (for a GGUF base; an HF base is one already)."""
    if base.is_dir():
        return base
    model, ckpt = build(base, REFERENCE, False, keep=False, decode_step=False)
    write_hf(folder, model, ckpt.tokenizer)
    return folder


def peft_logits(hf_dir: Path, adapter_dir: Path) -> torch.Tensor:
    model = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(model, adapter_dir).eval()
    with torch.no_grad():
        return model(TOKENS).logits


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_peft_applies_our_adapter_as_we_do(base, tmp_path, dora):
    adapter = random_adapter(base, tmp_path / "adapter", dora=dora)
    exported = export(adapter, tmp_path / "peft", fmt="peft", progress=False)
    expected = peft_logits(hf_base(base, tmp_path / "hf"), exported)
    got = ours(base, adapter)
    assert (got - expected).abs().max() < 1e-4
    assert (got - ours(base, exported)).abs().max() < 1e-5  # and it reads back


def test_a_peft_adapter_loads_into_llmhood(base, tmp_path):
    hf_dir = hf_base(base, tmp_path / "hf")
    model = transformers.LlamaForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    config = peft.LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=["q_proj", "k_proj", "down_proj"],
        init_lora_weights=False,
    )
    torch.manual_seed(2)
    peft.get_peft_model(model, config).save_pretrained(tmp_path / "theirs")
    expected = peft_logits(hf_dir, tmp_path / "theirs")
    assert (ours(base, tmp_path / "theirs") - expected).abs().max() < 1e-4


def test_merged_equals_the_adapter_and_exports(base, tmp_path):
    adapter = random_adapter(base, tmp_path / "adapter", dora=True)
    net, _ = merged(adapter, progress=False)
    with torch.no_grad():
        assert (net(TOKENS) - ours(base, adapter)).abs().max() <= 1e-5
    out = export(adapter, tmp_path / "merged", fmt="hf", merge=True, progress=False)
    theirs = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        assert (theirs(TOKENS).logits - ours(base, adapter)).abs().max() < 1e-4


def test_a_qlora_adapter_runs_on_its_nf4_base(base, tmp_path):
    adapter = random_adapter(base, tmp_path / "adapter", nf4={"double_quant": True})
    assert read_adapter(adapter).nf4 == {"double_quant": True}
    model, _ = build(base, REFERENCE, False, keep=False, decode_step=False)
    from llmhood.train.adapter import attach

    attach(model, read_adapter(adapter))
    model.eval()
    plain = llmhood.load(base, dtype="float32", quantize=None, progress=False).model
    with torch.no_grad():
        on_nf4, on_float = model(TOKENS), plain(TOKENS)
    assert (ours(base, adapter) - on_nf4).abs().max() < 1e-5
    assert (on_nf4 - on_float).abs().max() > 1e-3  # the NF4 base is really there


def test_adapter_errors(base, tmp_path):
    with pytest.raises(LLMHoodError, match="holds no adapter"):
        llmhood.load(base, adapter=tmp_path, progress=False)
    adapter = random_adapter(base, tmp_path / "adapter")
    with pytest.raises(LLMHoodError, match="merge it first"):
        llmhood.load(base, adapter=adapter, quantize="int4", progress=False)
    with pytest.raises(LLMHoodError, match="--format hf writes a whole model"):
        export(adapter, tmp_path / "x", fmt="hf", progress=False)
    other = write_tiny_base(tmp_path / "wider", smollm2_tokenizer_for(base), dim=48, n_heads=4)
    with pytest.raises(LLMHoodError, match="another base"):
        llmhood.load(other, adapter=adapter, progress=False)


def smollm2_tokenizer_for(base: Path):
    return build(base, REFERENCE, False, keep=False, decode_step=False)[1].tokenizer


def test_write_peft_names(base, tmp_path):
    adapter = read_adapter(random_adapter(base, tmp_path / "adapter"))
    config = build(base, REFERENCE, False, keep=False, decode_step=False)[0].config
    out = write_peft(adapter, config, tmp_path / "peft")
    from safetensors.torch import load_file

    keys = set(load_file(out / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in keys


def test_exports_to_gguf_load_back(base, tmp_path):
    """A merged F32 GGUF runs as the adapter does; the adapter alone as llama.cpp's LoRA
    GGUF holds our A and B (B's q/k rows in GGUF's interleaved order)."""
    from llmhood.train.adapter import convert_rows
    from llmhood.weights.gguf_writer import read_gguf_lora

    adapter = random_adapter(base, tmp_path / "adapter")
    merged_file = export(adapter, tmp_path / "m", fmt="gguf", merge=True, progress=False)
    back = llmhood.load(merged_file, dtype="float32", quantize=None, progress=False)
    with torch.no_grad():
        assert (back.model(TOKENS) - ours(base, adapter)).abs().max() < 1e-4
    lora_file = export(adapter, tmp_path / "a", fmt="gguf", progress=False)
    pairs, alpha, rank = read_gguf_lora(lora_file)
    saved = read_adapter(adapter)
    config = build(base, REFERENCE, False, keep=False, decode_step=False)[0].config
    expected = convert_rows(saved.tensors, config, saved.rope_style, "interleaved")
    assert (alpha, rank) == (8.0, 4)
    for name, (a, b) in pairs.items():
        assert torch.equal(a, expected[f"{name}.lora_A"]) and torch.equal(
            b, expected[f"{name}.lora_B"]
        )
