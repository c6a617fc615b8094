"""The training loss: cross-entropy on the trained positions only, never a full logits tensor.

A batch of 8 rows of 512 tokens has 4,096 positions; their float32 logits over SmolLM2's
49,152 tokens would be 805 MB, and autograd would keep them (and their softmax) for the
backward pass. Yet only the trained positions (assistant tokens, llmhood.train.data) have a
loss. So the output head runs on those positions alone, `chunk` at a time, and the logits
are never kept: one autograd function (`_HeadNLL`) computes each chunk's logits, keeps
only their log-sum-exp, and in the backward pass computes them again and turns them in
place into the gradient, softmax − one-hot. Peak memory holds one chunk's float32 logits,
`chunk` × vocab_size, and a copy in the compute dtype; activation checkpointing of the same
chunks through autograd would also hold their log-softmax and its gradient, three times
as much, and make the allocator's heap grow by that much more.

Losses are returned as a sum with the number of tokens it covers, not as a mean: the
trainer divides by the trained tokens of the whole accumulated batch, so that a step with
gradient accumulation equals the same step taken as one large batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE = -100  # a label that trains nothing (prompt, padding), as in transformers


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype the head's matmul runs in: autocast's where it is on, else the input's."""
    kind = t.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else t.dtype


class _HeadNLL(torch.autograd.Function):
    """-log softmax(h·Wᵀ)[label] for each row, `chunk` rows of logits at a time: (n, dim),
    (vocab, dim), (n,) -> (n,) float32. Saved for the backward pass: h, W (a reference, or
    an NF4 head's dequantized copy) and one log-sum-exp per row, never the logits.

    The arithmetic is F.cross_entropy's over `head(h).float()`: logits in the compute dtype,
    the softmax in float32, and its gradient cast back to the compute dtype for the matmuls."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor,
        chunk: int,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        h, w = hidden.to(dtype), weight.to(dtype)
        nll = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
        lse = torch.empty_like(nll)
        for start in range(0, h.shape[0], chunk):
            rows = slice(start, start + chunk)
            logits = F.linear(h[rows], w).float()  # (chunk, vocab)
            lse[rows] = torch.logsumexp(logits, dim=1)
            nll[rows] = lse[rows] - logits.gather(1, labels[rows, None])[:, 0]
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.chunk, ctx.dtype = chunk, dtype
        return nll

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, labels, lse = ctx.saved_tensors
        h, w = hidden.to(ctx.dtype), weight.to(ctx.dtype)
        want_h, want_w = ctx.needs_input_grad[:2]
        grad_h = torch.empty_like(h) if want_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if want_w else None
        for start in range(0, h.shape[0], ctx.chunk):
            rows = slice(start, start + ctx.chunk)
            probs = F.linear(h[rows], w).float().sub_(lse[rows, None]).exp_()  # softmax
            n = probs.shape[0]
            probs[torch.arange(n, device=probs.device), labels[rows]] -= 1
            g = probs.mul_(grad[rows, None].float()).to(ctx.dtype)  # d nll / d logits
            if want_h:
                grad_h[rows] = g @ w
            if want_w:
                grad_w += (g.t() @ h[rows]).float()
        if want_h:
            grad_h = grad_h.to(hidden.dtype)
        if want_w:
            grad_w = grad_w.to(weight.dtype)
        return grad_h, grad_w, None, None, None


def _head_weight(head: nn.Module) -> torch.Tensor | None:
    """The head's (vocab, dim) weight where it is a plain bias-free projection (a linear
    layer, or an NF4 one dequantized), else None: then it runs as the module it is."""
    if getattr(head, "bias", None) is not None:
        return None
    if hasattr(head, "dequantize"):
        return head.dequantize()
    if isinstance(head, nn.Linear):
        return head.weight
    return None


def _chunk_nll(head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token negative log-likelihood of one chunk: (n, dim), (n,) -> (n,) float32."""
    logits = head(hidden).float()  # (n, vocab)
    return F.cross_entropy(logits, labels, reduction="none")


def token_nll(
    hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    """-log p(label) at every trained position, in their order: (n_trained,) float32.

    hidden: (bs, T, dim), the model's normalised last hidden states (`model(..., head=False)`);
    labels: (bs, T), labels[b, t] the token position t must predict, or IGNORE.
    """
    keep = labels != IGNORE  # (bs, T)
    h, y = hidden[keep], labels[keep]  # (n, dim), (n,)
    if h.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32)
    weight = _head_weight(head)
    if weight is not None:
        return _HeadNLL.apply(h, weight, y, chunk, _compute_dtype(h))
    # Any other head: each chunk under activation checkpointing, through autograd.
    parts = []
    for start in range(0, h.shape[0], chunk):
        part = (h[start : start + chunk], y[start : start + chunk])
        if torch.is_grad_enabled() and h.requires_grad:
            parts.append(checkpoint(_chunk_nll, head, *part, use_reentrant=False))
        else:
            parts.append(_chunk_nll(head, *part))
    return torch.cat(parts)


def shift_labels(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Labels for next-token prediction: position t predicts token t + 1 where that token
    is trained (mask True), else IGNORE. tokens, mask: (bs, T) -> (bs, T) int64."""
    labels = torch.full_like(tokens, IGNORE)
    labels[:, :-1] = torch.where(mask[:, 1:], tokens[:, 1:], IGNORE)
    return labels


def _trained_nll(
    model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor, chunk: int, forward: dict
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's NLL at the trained positions (n_trained,), and the labels (bs, T)."""
    hidden = model(tokens, head=False, **forward)  # (bs, T, dim)
    labels = shift_labels(tokens, mask)
    return token_nll(hidden, model.output, labels, chunk), labels


def loss_sum(
    model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor, chunk: int = 1024, **forward
) -> tuple[torch.Tensor, int]:
    """The summed cross-entropy of the trained tokens of a batch, and how many there are.

    tokens: (bs, T) int64; mask: (bs, T) bool, True where a token is trained (predicted
    from the tokens before it); `forward`: more arguments of the model's forward, such as
    positions and key_padding.
    """
    nll, _ = _trained_nll(model, tokens, mask, chunk, forward)
    return nll.sum(), nll.numel()


def sequence_logprob(
    model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor, chunk: int = 1024, **forward
) -> torch.Tensor:
    """log p(trained tokens | the tokens before them), summed per row: (bs,) float32.

    What preference losses compare (llmhood.train.dpo): a response's log-likelihood
    under the policy and under the reference."""
    nll, labels = _trained_nll(model, tokens, mask, chunk, forward)  # (n_trained,), row-major
    rows = (labels != IGNORE).nonzero()[:, 0]  # the row of each trained position
    return -torch.zeros(tokens.shape[0], device=nll.device).index_add(0, rows, nll)
