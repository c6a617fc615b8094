"""Contextual position encoding (CoPE): positions that count what the model chooses.

RoPE measures distance in tokens, so "the third sentence back" or "the second-to-last
marker" sits at a different distance in every text. CoPE (Golovneva et al., 2024) lets
the query decide what to count. For query i and every key t <= i a gate

    g_it = σ(s_it),   s_it = q_i·k_t / √d   (the scaled score attention already has)

says how much token t counts, and the position of key j relative to query i is the sum
of the gates from j up to i,

    p_ij = Σ_{t=j..i} g_it,

a reverse cumulative sum along the key axis. If the gates fire only on markers, p_ij
is the number of markers between j and i; if they fire on everything, it is the
ordinary distance plus one. Positions are fractional, so each layer learns embeddings
e[0], ..., e[npos - 1] for the whole numbers and interpolates between e[⌊p⌋] and e[⌈p⌉];
p is clamped to npos - 1, the largest count the layer can tell apart. The term q_i·e[p_ij]
is added to the attention logit s_ij. Since (1 - w)·q·e[⌊p⌋] + w·q·e[⌈p⌉] = q·e[p] for
w = p - ⌊p⌋, the module scores each query against all npos embeddings once and then
interpolates scores, instead of building an embedding for every (i, j).

Masked keys (the future, padding) must not count: their scores are -inf, σ(-inf) = 0,
so they add nothing to any sum and the encoding stays causal. The gates use the query
of every head, so positions are per head; the embeddings are shared by the heads of a
layer, as in the paper. The embeddings start at zero: an untrained CoPE layer is a
layer without position encoding.
"""

from __future__ import annotations

import torch
from torch import nn


class CoPE(nn.Module):
    def __init__(self, npos: int, head_dim: int) -> None:
        super().__init__()
        self.npos = npos
        self.pos_emb = nn.Parameter(torch.zeros(npos, head_dim))  # e[0 .. npos-1]

    def positions(self, scores: torch.Tensor) -> torch.Tensor:
        """p_ij from the masked scaled scores: (..., q_len, kv_len) -> same shape, float32."""
        gates = torch.sigmoid(scores.float())  # 0 where the score is -inf
        return gates.flip(-1).cumsum(-1).flip(-1).clamp(max=self.npos - 1)

    def forward(self, q: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The logits q_i·e[p_ij] to add to the scores.

        q: (..., q_len, head_dim); scores: (..., q_len, kv_len), q·kᵀ/√d with -inf where
        masked. Returns (..., q_len, kv_len) in the scores' dtype.
        """
        p = self.positions(scores)
        below = p.floor()
        weight = p - below  # how far p lies from ⌊p⌋ towards ⌈p⌉
        per_position = (q @ self.pos_emb.T).float()  # (..., q_len, npos): q_i·e[n]
        at_below = per_position.gather(-1, below.long())
        at_above = per_position.gather(-1, p.ceil().long())
        return (at_below + weight * (at_above - at_below)).type_as(scores)
