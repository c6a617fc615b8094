"""LoRA and DoRA against peft: one layer tensor by tensor, and a whole tiny Llama against
transformers with peft's adapters on it; forward outputs and the gradients of A, B and the
DoRA magnitude. Then what the trainer relies on: the start equals the base, merging equals
the adapter, the base with adapters off, and the checks on a config."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from test_hf_checkpoint import tiny_model, tokens
from torch import nn

from llmhood.errors import LLMHoodError
from llmhood.train import dropout as dropout_kernel
from llmhood.train.dora import DoraLinear
from llmhood.train.lora import (
    TARGETS,
    LoraConfig,
    LoraLinear,
    adapter_state_dict,
    adapters_disabled,
    apply_lora,
    merge,
)
from llmhood.weights.hf import write_hf

peft = pytest.importorskip("peft")


class OneLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(32, 48, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_proj(x)


def peft_config(dora: bool, rslora: bool, dropout: float = 0.0, targets=("q_proj",)):
    return peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), lora_dropout=dropout,
                           use_rslora=rslora, use_dora=dora)  # fmt: skip


def copy_from_peft(ours: LoraLinear, theirs: nn.Module) -> None:
    with torch.no_grad():
        ours.lora_A.copy_(theirs.lora_A["default"].weight)
        ours.lora_B.copy_(theirs.lora_B["default"].weight)
        if isinstance(ours, DoraLinear):
            ours.magnitude.copy_(theirs.lora_magnitude_vector["default"].weight)


@pytest.mark.parametrize(("dropout", "masks"), [(0.0, None), (0.3, "torch"), (0.3, "hashed")])
@pytest.mark.parametrize("rslora", [False, True])
@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_one_layer_equals_peft(dora, rslora, dropout, masks, monkeypatch):
    """With dropout, both draw the same mask: torch's (the plain path, LLMHOOD_FAST_DROPOUT=0)
    from the same seed, or the hashed one (llmhood.train.dropout), peft's dropout module then
    replaced by ours, so that peft's arithmetic runs on the mask llmhood's would."""
    if masks == "torch":
        monkeypatch.setenv(dropout_kernel.ENV, "0")
    elif masks == "hashed" and dropout_kernel.available() is not None:
        pytest.skip(f"the hashed dropout does not run here: {dropout_kernel.available()}")
    torch.manual_seed(0)
    model = OneLayer()
    ours = (DoraLinear if dora else LoraLinear)(copy.deepcopy(model.q_proj), 4, 8, dropout, rslora)
    theirs = peft.get_peft_model(model, peft_config(dora, rslora, dropout))
    layer = theirs.base_model.model.q_proj
    if masks == "hashed":
        layer.lora_dropout["default"] = dropout_kernel.Dropout(dropout)
    with torch.no_grad():  # a trained-looking B, so the update is not zero
        layer.lora_B["default"].weight.normal_()
    copy_from_peft(ours, layer)
    x = torch.randn(3, 5, 32)
    torch.manual_seed(1)  # the same dropout mask for both
    want = theirs(x)
    torch.manual_seed(1)
    got = ours(x)
    # Same operations in the same order: equal to float32 rounding of a reordered sum at most.
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    want.square().sum().backward()
    got.square().sum().backward()
    pairs = [(ours.lora_A, layer.lora_A["default"].weight),
             (ours.lora_B, layer.lora_B["default"].weight)]  # fmt: skip
    if dora:
        pairs.append((ours.magnitude, layer.lora_magnitude_vector["default"].weight))
    for mine, reference in pairs:
        torch.testing.assert_close(mine.grad, reference.grad, rtol=1e-5, atol=1e-5)
    assert ours.base.weight.grad is None  # the base stays frozen


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_a_whole_model_equals_transformers_with_peft(tmp_path, dora):
    """Our tiny Llama with adapters on all seven projections, against transformers reading
    its export with peft's adapters carrying the same numbers."""
    from transformers import LlamaForCausalLM

    model = tiny_model("half", tie=True)
    write_hf(tmp_path, model, None)
    hf = LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager",
                                          dtype=torch.float32)  # fmt: skip
    hf_names = [hf_name for _, hf_name in TARGETS.values()]
    theirs = peft.get_peft_model(hf, peft_config(dora, False, targets=hf_names))
    apply_lora(model, LoraConfig(rank=4, alpha=8, dora=dora))
    torch.manual_seed(2)
    for i, block in enumerate(model.layers):
        for ours_name, (part, hf_name) in TARGETS.items():
            group = "self_attn" if part == "attention" else "mlp"
            layer = theirs.base_model.model.model.layers[i].get_submodule(f"{group}.{hf_name}")
            with torch.no_grad():
                layer.lora_B["default"].weight.normal_(std=0.05)
            copy_from_peft(getattr(getattr(block, part), ours_name), layer)
    ids = tokens()
    want, got = theirs(ids).logits, model(ids)
    # Two float32 models of 2 layers with logits near 1: rounding alone stays below 1e-5.
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    want.square().mean().backward()
    got.square().mean().backward()
    ours = model.layers[1].feed_forward.w2
    reference = theirs.base_model.model.model.layers[1].mlp.down_proj
    # Gradients pass back through both layers: relative 1e-4 is float32 rounding there.
    for mine, ref in [(ours.lora_A, reference.lora_A["default"].weight),
                      (ours.lora_B, reference.lora_B["default"].weight)]:  # fmt: skip
        torch.testing.assert_close(mine.grad, ref.grad, rtol=1e-4, atol=1e-7)


def test_an_adapter_starts_equal_to_its_base():
    model = tiny_model("interleaved")
    ids = tokens()
    with torch.no_grad():
        base = model(ids)
    names = apply_lora(model, LoraConfig(rank=8, alpha=16))
    assert len(names) == 2 * 7 and names[0] == "layers.0.attention.wq"
    with torch.no_grad():
        assert torch.equal(model(ids), base)  # B = 0: not one bit changes
    a = model.layers[0].attention.wq.lora_A
    assert a.abs().max() <= 1 / math.sqrt(a.shape[1])  # Kaiming-uniform, a = √5: U(±1/√in)
    assert a.std() > 0.5 / math.sqrt(3 * a.shape[1])  # and really spread, not zero
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
    c = model.config
    kv = c.n_kv_heads * c.head_dim
    # q and o: dim -> dim; k and v: dim -> kv; gate, up and down: dim <-> hidden_dim
    per_block = 8 * ((2 * c.dim) * 2 + (c.dim + kv) * 2 + (c.dim + c.hidden_dim) * 3)
    trained = sum(p.numel() for p in adapter_state_dict(model).values())
    assert trained == c.n_layers * per_block  # r·(in + out) per projection


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_merging_gives_the_adapter_logits_and_disabling_the_base(dora):
    model = tiny_model("interleaved")
    ids = tokens()
    with torch.no_grad():
        base = model(ids)
    apply_lora(model, LoraConfig(rank=4, alpha=8, dora=dora, target=["q_proj", "w2"]))
    with torch.no_grad():
        for _, p in adapter_state_dict(model).items():
            p.add_(torch.randn_like(p) * 0.05)
        adapted = model(ids)
        with adapters_disabled(model):
            assert torch.equal(model(ids), base)
        assert torch.equal(model(ids), adapted)  # on again after the block
        merge(model)
        merged = model(ids)
    assert type(model.layers[0].attention.wq) is nn.Linear
    assert (merged - adapted).abs().max() <= 1e-5  # fp32, W + s·B·A folded once
    assert (adapted - base).abs().max() > 1e-3  # the adapter did change the model


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (LoraConfig(target=["q_proj", "attn_q"]), "Unknown target module 'attn_q'"),
        (LoraConfig(rank=0), "--rank 0 is invalid"),
        (LoraConfig(alpha=-1), "--alpha -1 is invalid"),
        (LoraConfig(dropout=1.0), "--dropout 1.0 is invalid"),
    ],
)
def test_bad_configs_are_clear_errors(config, message):
    with pytest.raises(LLMHoodError, match=message):
        apply_lora(tiny_model("interleaved"), config)


def test_adapters_go_on_once():
    model = tiny_model("interleaved")
    apply_lora(model, LoraConfig())
    with pytest.raises(LLMHoodError, match="adapters already"):
        apply_lora(model, LoraConfig())


def test_rslora_scales_by_the_square_root_of_the_rank():
    assert LoraConfig(rank=16, alpha=8).scaling == 0.5
    assert LoraConfig(rank=16, alpha=8, use_rslora=True).scaling == 2.0
