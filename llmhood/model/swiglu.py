"""The SwiGLU feed-forward network.

A plain FFN is W2·act(W1·x). SwiGLU (Shazeer, 2020) multiplies the activated branch by a
second, linear branch, W2·(silu(W1·x) ⊙ W3·x): the linear branch acts as a learned,
per-channel gate. Because there are three matrices instead of two, Llama shrinks the
inner width to about 2/3 of 4·dim to keep the parameter count of a 4·dim plain FFN.
Names follow Meta's checkpoints: w1 is the gate, w3 the up projection, w2 the down one
(Hugging Face calls them gate_proj, up_proj and down_proj).
"""

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)  # gate
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)  # up
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)  # down
        # [W_1; W_3] as one matrix when set (llmhood.model.fast.fusion); None: the plain path.
        self.w13: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (bs, seqlen, dim) -> (bs, seqlen, hidden_dim) -> (bs, seqlen, dim)
        if self.w13 is None:
            gate, up = self.w1(x), self.w3(x)
        else:
            gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)
