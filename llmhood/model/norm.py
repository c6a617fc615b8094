"""RMSNorm: LayerNorm without the mean.

Llama normalises each token vector by its root-mean-square only, x / sqrt(mean(x²) + eps),
then scales it by a learned per-channel gain. Dropping the mean subtraction and the bias
saves work and, as Zhang & Sennrich (2019) found, loses nothing in quality. The statistic
is computed in float32 even when the model runs in bf16, because a sum of 576 squares in
bf16 loses most of its mantissa; the result is cast back before the gain is applied,
which is also the order the reference implementations use.
"""

import torch
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., dim)
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.type_as(x)
