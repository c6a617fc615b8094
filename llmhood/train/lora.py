"""LoRA: a frozen weight plus a trainable low-rank update (Hu et al., 2021).

    y = x·Wᵀ + s · dropout(x)·Aᵀ·Bᵀ        A: (r, in), B: (out, r), s = α / r

Fine-tuning changes a weight by a matrix of low intrinsic rank, so LoRA trains that change
as the product B·A of two thin matrices and leaves W untouched: r·(in + out) numbers per
layer instead of in·out, and no optimiser state for W. A starts Kaiming-uniform with a = √5
(nn.Linear's own initialisation, U(−1/√in, 1/√in)) and B at zero, so the adapted model
starts exactly equal to the base and the first gradients reach B through a random A.
rsLoRA (Kalajdzievski, 2023) scales by α/√r instead, which keeps the update's size steady
as the rank grows.

Adapters are put on the model from outside: `apply_lora` replaces the chosen linear layers
of a plain llmhood Transformer by `LoraLinear` wrappers around them, and `merge` folds them
back into plain layers. The model itself knows nothing of training. The base layer may be
any module with a `weight` to read, or NF4Linear (QLoRA), which dequantizes its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from llmhood.errors import LLMHoodError
from llmhood.model import Transformer
from llmhood.model.fast.fusion import unfuse
from llmhood.train.dropout import Dropout

# The seven linear layers of a block by llmhood (Meta) name, and the names Hugging Face and
# peft give them; `--target` takes either.
TARGETS = {
    "wq": ("attention", "q_proj"),
    "wk": ("attention", "k_proj"),
    "wv": ("attention", "v_proj"),
    "wo": ("attention", "o_proj"),
    "w1": ("feed_forward", "gate_proj"),
    "w3": ("feed_forward", "up_proj"),
    "w2": ("feed_forward", "down_proj"),
}
HF_NAMES = {hf: ours for ours, (_, hf) in TARGETS.items()}
ALL_LINEAR = "all-linear"  # every linear layer of the blocks; the output head stays frozen


def lora_scaling(rank: int, alpha: float, use_rslora: bool = False) -> float:
    """s = α/r, or α/√r with rsLoRA."""
    return alpha / (math.sqrt(rank) if use_rslora else rank)


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target: list[str] = field(default_factory=lambda: [ALL_LINEAR])
    use_rslora: bool = False
    dora: bool = False  # weight-decomposed LoRA (llmhood.train.dora)

    @property
    def scaling(self) -> float:
        return lora_scaling(self.rank, self.alpha, self.use_rslora)

    def targets(self) -> list[str]:
        """The llmhood names of the layers to adapt; LLMHoodError for an unknown name."""
        if ALL_LINEAR in self.target:
            return list(TARGETS)
        names = []
        for name in self.target:
            ours = HF_NAMES.get(name, name)
            if ours not in TARGETS:
                known = ", ".join([ALL_LINEAR, *TARGETS, *HF_NAMES])
                raise LLMHoodError(f"Unknown target module {name!r}; choose from: {known}.")
            names.append(ours)
        return list(dict.fromkeys(names))

    def validate(self) -> None:
        if not (isinstance(self.rank, int) and self.rank >= 1):
            raise LLMHoodError(f"--rank {self.rank} is invalid: a LoRA rank is an integer ≥ 1.")
        if not self.alpha > 0:
            raise LLMHoodError(f"--alpha {self.alpha} is invalid: the LoRA alpha must be > 0.")
        if not 0 <= self.dropout < 1:
            raise LLMHoodError(f"--dropout {self.dropout} is invalid: it must be in [0, 1).")
        self.targets()


def frozen_weight(base: nn.Module) -> torch.Tensor:
    """The base layer's weight as a float tensor (out, in): an NF4 layer dequantizes it."""
    if hasattr(base, "dequantize"):
        return base.dequantize()
    return base.weight


class LoraLinear(nn.Module):
    """A frozen linear layer and its low-rank update; `enabled=False` gives the base alone."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
                 use_rslora: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        for p in base.parameters():
            p.requires_grad_(False)
        device = frozen_weight(base).device
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()  # hashed masks
        self.rank, self.alpha = rank, alpha
        self.scaling = lora_scaling(rank, alpha, use_rslora)
        self.enabled = True

    def update(self, x: torch.Tensor) -> torch.Tensor:
        """s · x·Aᵀ·Bᵀ: (..., in) -> (..., out), in the adapter's dtype or autocast's.

        Under autocast the matmuls run in its dtype whatever x's, so x is left as it is:
        converting it to the adapter's float32 first would copy it only for autocast to copy
        it back. And s scales the rank-r intermediate, r numbers a row instead of `out`."""
        if not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.lora_A.dtype)
        return F.linear(F.linear(x, self.lora_A) * self.scaling, self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (..., out)
        if not self.enabled:
            return y
        return y + self.update(self.dropout(x)).to(y.dtype)

    def delta_weight(self) -> torch.Tensor:
        """s·B·A: (out, in), what merging adds to the base weight."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        w = frozen_weight(self.base)
        return (w.float() + self.delta_weight().float()).to(w.dtype)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, scaling={self.scaling:g}"


def adapted_layers(model: nn.Module) -> Iterator[tuple[str, LoraLinear]]:
    for name, module in model.named_modules():
        if isinstance(module, LoraLinear):
            yield name, module


def apply_lora(model: Transformer, config: LoraConfig) -> list[str]:
    """Freeze `model` and wrap its target layers in adapters, in place; returns their names.

    Fused projections are switched off first: an adapter belongs to one projection, and
    the plain path computes each one on its own."""
    from llmhood.train.dora import DoraLinear  # dora builds on this module

    config.validate()
    if any(True for _ in adapted_layers(model)):
        raise LLMHoodError("This model has adapters already; merge or reload it first.")
    unfuse(model)
    model.set_decode_step(False)  # the C++ step runs plain layers only
    for p in model.parameters():
        p.requires_grad_(False)
    kind = DoraLinear if config.dora else LoraLinear
    names = []
    for i, layer in enumerate(model.layers):
        for target in config.targets():
            part, _ = TARGETS[target]
            parent = getattr(layer, part)
            adapter = kind(getattr(parent, target), config.rank, config.alpha, config.dropout,
                           config.use_rslora)  # fmt: skip
            setattr(parent, target, adapter)
            names.append(f"layers.{i}.{part}.{target}")
    return names


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base: plain nn.Linear layers with W + s·B·A, in place."""
    for name, adapter in list(adapted_layers(model)):
        parent_name, _, leaf = name.rpartition(".")
        weight = adapter.merged_weight().detach()
        merged = nn.Linear(adapter.in_features, adapter.out_features, bias=False,
                           device=weight.device, dtype=weight.dtype)  # fmt: skip
        merged.weight = nn.Parameter(weight, requires_grad=False)
        setattr(model.get_submodule(parent_name), leaf, merged)
    return model


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """The base model, for as long as the block runs: DPO's reference log-probs come from
    the same weights with the adapters off, not from a second copy of the model."""
    layers = [adapter for _, adapter in adapted_layers(model)]
    states = [a.enabled for a in layers]
    try:
        for a in layers:
            a.enabled = False
        yield
    finally:
        for a, state in zip(layers, states, strict=True):
            a.enabled = state


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changed: every adapter's trainable tensors, by llmhood name."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
