"""Fused projections: one matrix multiply where the plain model does two or three.

W_q, W_k and W_v all multiply the same normalised x, and so do the SwiGLU gate (w1) and up
(w3) projections. Stacking each set into one matrix, [W_q; W_k; W_v] and [W_1; W_3], gives
the same numbers from one call: x is read once, the kernel is launched once instead of
three times, and the larger matrix keeps its threads busier. At batch 1 each call moves
little data, so the saved launches are a real share of a decode step.

`fuse(model)` does it for float weights without copying them twice: the stacked matrix is
built once and the original `wq`, `wk`, ... parameters become views into it, so the model
keeps its anatomy (parameter names, counts, histograms) and its state dict. Quantized
modes build their stacked matrices from the quantized parts instead (llmhood.speed.modes).
`Attention.wqkv` and `SwiGLU.w13` switch the fused path on; unset, the plain path runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmhood.model.transformer import Transformer


class FusedLinear(nn.Module):
    """y = x·Wᵀ for a stacked W held as a buffer: its parameters live in the parts it stacks."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        # Not persistent: the state dict keeps the parts under their own names.
        self.register_buffer("weight", weight, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fused"


def stack(parts: list[nn.Linear]) -> FusedLinear:
    """One FusedLinear for `parts`, whose weights become views of its stacked matrix."""
    fused = FusedLinear(torch.cat([p.weight.detach() for p in parts]))
    start = 0
    for p in parts:
        rows = p.weight.shape[0]
        p.weight = nn.Parameter(fused.weight[start : start + rows], requires_grad=False)
        start += rows
    return fused


# The linear layers of a block, by sub-module, grouped by the input they share: each group
# of more than one becomes one fused matrix under the group's name.
GROUPS = {
    "attention": {"wqkv": ("wq", "wk", "wv"), "wo": ("wo",)},
    "feed_forward": {"w13": ("w1", "w3"), "w2": ("w2",)},
}


def fuse(model: Transformer) -> Transformer:
    """Switch every block to fused q/k/v and gate/up projections (float weights), in place."""
    for layer in model.layers:
        for part, groups in GROUPS.items():
            module = getattr(layer, part)
            for target, names in groups.items():
                if len(names) > 1:
                    setattr(module, target, stack([getattr(module, n) for n in names]))
    return model


def unfuse(model: Transformer) -> Transformer:
    """Back to the plain path; the parts still hold the same (shared) values."""
    for layer in model.layers:
        layer.attention.wqkv = None
        layer.feed_forward.w13 = None
    return model
