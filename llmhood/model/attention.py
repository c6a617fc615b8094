"""Causal self-attention with grouped KV heads, in an explicit and a fast form.

Each query head scores every key, softmax(q·kᵀ/√d + mask), and averages the values with
those weights. Dividing by √d keeps the scores' variance near 1 whatever the head width,
so the softmax does not saturate. The mask adds -inf where a query must not look: at
later positions (causality) and at padding.

MHA, GQA and MQA differ only in `n_kv_heads`. With fewer KV heads than query heads, each
KV head serves a group of n_heads // n_kv_heads consecutive query heads, which shrinks
the KV cache by that factor (3× for SmolLM2) at little cost in quality (Ainslie et al.,
2023). Neither path copies K/V to the query head count:

* `explicit_attention` writes the formula out and can return the attention weights
  (the plots need them). Queries are viewed as (kv_head, group) so one matmul serves a
  whole group.
* `scaled_dot_product_attention` from PyTorch is the fast path (fused, no (T×S) weight
  matrix kept around); `enable_gqa` lets it broadcast the KV heads itself.

`Attention.impl` switches between them; tests hold the two equal. "auto" takes SDPA for
several queries per row (a prompt) and the explicit form for one (a decode step): on a CPU
the fused kernel's fixed cost per call outweighs its work there, the more so with a batch.

Position enters through `config.position_encoding`: "rope" rotates q and k before the
scores; "cope" adds contextual position logits to the scores (cope.py). CoPE's gates are
computed from the score matrix itself, so a layer with CoPE always takes the explicit
path: the fused kernel would need that matrix as an additive mask and so save nothing.
"none" leaves attention only the causal mask to infer order from.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from llmhood.model.config import ModelConfig
from llmhood.model.cope import CoPE
from llmhood.model.kv_cache import KVCache
from llmhood.model.rope import RoPE

AttentionImpl = Literal["sdpa", "explicit", "auto"]


def causal_mask(
    q_len: int,
    kv_len: int,
    key_padding: torch.Tensor | None = None,
    segments: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean mask, True where a query may attend: (bs or 1, 1, q_len, kv_len).

    The q_len queries are the last q_len of the kv_len positions (earlier ones are in the
    cache), so query i may see keys 0 .. kv_len - q_len + i. `key_padding` (bs, kv_len) is
    True for real tokens and False for padding. `segments` (bs, kv_len) numbers the
    documents packed into one row: a query sees only keys of its own document, so the
    mask is block-diagonal and each document is computed as if it were alone.
    """
    given = key_padding if key_padding is not None else segments
    device = given.device if given is not None else None
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    mask = (k_pos <= q_pos)[None, None]  # (1, 1, q_len, kv_len)
    if key_padding is not None:
        # A padding query still sees itself, so that no softmax row is all -inf (NaN);
        # its output is never read.
        mask = (mask & key_padding[:, None, None, :].to(torch.bool)) | (k_pos == q_pos)
    if segments is not None:
        same = segments[:, -q_len:, None] == segments[:, None, :]  # (bs, q_len, kv_len)
        mask = mask & same[:, None]
    return mask


def explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    cope: CoPE | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q·kᵀ/√d + mask)·v, written out; with `cope`, its logits join the scores.

    q: (bs, n_heads, q_len, head_dim); k, v: (bs, n_kv_heads, kv_len, head_dim);
    mask: (bs or 1, 1, q_len, kv_len) bool, or None when every query sees every key.
    Returns the output (bs, n_heads, q_len, head_dim) in q's dtype and the weights
    (bs, n_heads, q_len, kv_len) in float32.

    The arithmetic is float32 whatever the model's dtype: a bf16 model then loses nothing
    in its scores, and on a CPU the float32 matmuls of these small per-head matrices are
    also faster than bf16 ones, whose kernels have a larger fixed cost per call. (A float32
    KV cache would spare the conversion of K and V, but a decode step then reads twice the
    bytes from a cache that the weights streaming past have long evicted: slower.)
    """
    bs, n_heads, q_len, head_dim = q.shape
    n_kv_heads = k.shape[1]
    group = n_heads // n_kv_heads
    # A group's queries are stacked as the rows of one matrix per KV head, so K and V are
    # read as they are: broadcasting them over the group would copy them `group` times.
    # Batch and KV heads flattened into one dimension: bmm on 3-d tensors skips matmul's
    # reshaping, a few microseconds per call that add up over every layer of every step.
    rows = (bs * n_kv_heads, group * q_len, head_dim)
    k32, v32 = (t.float().reshape(bs * n_kv_heads, -1, head_dim) for t in (k, v))
    scores = torch.bmm(q.float().reshape(rows), k32.transpose(1, 2)).mul_(1 / math.sqrt(head_dim))
    scores = scores.view(bs, n_kv_heads, group, q_len, -1)  # (bs, kv, g, q, kv_len)
    if mask is not None:
        scores.masked_fill_(~mask[:, :, None], float("-inf"))
    if cope is not None:
        scores = scores + cope(q.view(bs, n_kv_heads, group, q_len, head_dim), scores)
    weights = torch.softmax(scores, dim=-1)
    out = torch.bmm(weights.reshape(bs * n_kv_heads, group * q_len, -1), v32)
    return out.view(bs, n_heads, q_len, head_dim).type_as(q), weights.view(bs, n_heads, q_len, -1)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads = config.n_heads
        self.n_kv_heads = config.n_kv_heads
        self.head_dim = config.head_dim
        self.wq = nn.Linear(config.dim, config.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, config.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, config.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(config.n_heads * self.head_dim, config.dim, bias=False)
        # [W_q; W_k; W_v] as one matrix when set (llmhood.model.fast.fusion); None: the plain path.
        self.wqkv: nn.Module | None = None
        self.rotary = config.position_encoding == "rope"
        self.cope = (
            CoPE(config.cope_npos, self.head_dim) if config.position_encoding == "cope" else None
        )
        self.impl: AttentionImpl = "sdpa"
        # When True, the explicit path runs and its weights are kept in `last_weights`.
        self.capture_weights = False
        self.last_weights: torch.Tensor | None = None

    def forward(
        self,
        x: torch.Tensor,
        rope: RoPE,
        rope_table: tuple[torch.Tensor, ...],
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        bs, seqlen, _ = x.shape  # x: (bs, seqlen, dim)
        if self.wqkv is None:
            q = self.wq(x).view(bs, seqlen, self.n_heads, self.head_dim)
            k = self.wk(x).view(bs, seqlen, self.n_kv_heads, self.head_dim)
            v = self.wv(x).view(bs, seqlen, self.n_kv_heads, self.head_dim)
            if self.rotary:
                q, k = rope.rotate(q, rope_table), rope.rotate(k, rope_table)
        else:  # q's and k's heads are neighbours in one output: one rotation serves both
            qkv = self.wqkv(x).view(bs, seqlen, -1, self.head_dim)
            qk, v = qkv.split([self.n_heads + self.n_kv_heads, self.n_kv_heads], dim=2)
            if self.rotary:
                qk = rope.rotate(qk, rope_table)
            q, k = qk.split([self.n_heads, self.n_kv_heads], dim=2)

        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (bs, heads, seqlen, head_dim)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (bs, n_kv_heads, kv_len, head_dim)

        explicit = self.impl == "explicit" or (self.impl == "auto" and seqlen == 1)
        if explicit or self.capture_weights or self.cope is not None:
            out, weights = explicit_attention(q, k, v, mask, self.cope)
            self.last_weights = weights if self.capture_weights else None
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        out = out.transpose(1, 2).reshape(bs, seqlen, self.n_heads * self.head_dim)
        return self.wo(out)
