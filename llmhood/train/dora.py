"""DoRA: LoRA on the direction of a weight, with its magnitude trained apart (Liu et al., 2024).

    W' = m ⊙ (W + s·B·A) / ‖W + s·B·A‖        norms per output row; m: (out,), starts at ‖W‖

Full fine-tuning tends to change a weight's row norms and its row directions in different
proportions, which plain LoRA, whose update moves both together, imitates poorly. DoRA
splits them: a trainable magnitude per output row, and a LoRA update of the direction. At
the start m = ‖W‖ and B = 0, so W' = W. As the paper proposes, the norm ‖W + s·B·A‖ is
treated as a constant in the backward pass (detached): gradients then skip a costly term
that changes them little, and no graph is kept for it.

With dropout on the adapter's input the update cannot be folded into one weight, so the
output is written as the base layer's plus corrections (x_d the dropped-out input):

    y = x·Wᵀ + (m/‖·‖ − 1) ⊙ x_d·Wᵀ + (m/‖·‖) ⊙ s·x_d·Aᵀ·Bᵀ

which equals x·W'ᵀ exactly when there is no dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmhood.train.lora import LoraLinear, frozen_weight


class DoraLinear(LoraLinear):
    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0,
                 use_rslora: bool = False) -> None:  # fmt: skip
        super().__init__(base, rank, alpha, dropout, use_rslora)
        weight = frozen_weight(base).detach().float()
        self.magnitude = nn.Parameter(weight.norm(dim=1))  # (out,)

    def _scale(self, weight: torch.Tensor) -> torch.Tensor:
        """m / ‖W + s·B·A‖ per output row, the norm detached: (out,)."""
        norm = (weight.float() + self.delta_weight().float()).norm(dim=1).detach()
        return self.magnitude / norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (..., out)
        if not self.enabled:
            return y
        weight = frozen_weight(self.base)
        scale = self._scale(weight)
        xd = self.dropout(x)
        base = y if isinstance(self.dropout, nn.Identity) else F.linear(xd, weight)
        correction = (scale - 1) * base.float() + scale * self.update(xd).float()
        return y + correction.to(y.dtype)

    def merged_weight(self) -> torch.Tensor:
        weight = frozen_weight(self.base)
        merged = self._scale(weight)[:, None] * (weight.float() + self.delta_weight().float())
        return merged.to(weight.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", dora"
