"""The training loss: cross-entropy on the trained positions only, never a full logits tensor.

A batch of 8 rows of 512 tokens has 4,096 positions; their float32 logits over SmolLM2's
49,152 tokens would be 805 MB, and autograd would keep them (and their softmax) for the
backward pass. Yet only the trained positions (assistant tokens, llmhood.train.data) have a
loss. So the output head runs on those positions alone, in chunks, each chunk under
activation checkpointing: its logits exist while its loss is computed and again, briefly,
when its gradient is, and peak memory holds one chunk's logits, `chunk` × vocab_size.

Losses are returned as a sum with the number of tokens it covers, not as a mean: the
trainer divides by the trained tokens of the whole accumulated batch, so that a step with
gradient accumulation equals the same step taken as one large batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE = -100  # a label that trains nothing (prompt, padding), as in transformers


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
