"""One optimiser step over an accumulated batch, normalised by its trained tokens.

A step's batch may not fit in memory at once, so it comes as micro-batches whose gradients
add up before the update. Their losses must be weighted by tokens, not averaged per
micro-batch: rows differ in how many tokens they train (a long answer, a short one), and
the mean of per-micro-batch means would weigh a token of a short micro-batch more than a
token of a long one. Each micro-batch's summed loss is divided by the trained tokens of
the *whole* step, so the gradient is the one of the full batch's mean, and a step with
accumulation 4 equals the same step taken as one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer

from llmhood.errors import LLMHoodError

# A micro-batch's summed loss and its trained-token count, computed when called.
MicroBatch = Callable[[], tuple[torch.Tensor, int]]


@dataclass
class StepStats:
    loss: float  # mean over the step's trained tokens
    tokens: int  # trained tokens in the step
    grad_norm: float  # before clipping
    lr: float


def optimizer_step(
    model: nn.Module,
    micro_batches: Sequence[MicroBatch],
    tokens: int,
    optimizer: Optimizer,
    max_grad_norm: float | None = 1.0,
    *,
    scale: float = 1.0,
    local: int | None = None,
) -> StepStats:
    """Accumulate the gradients of `micro_batches`, clip, and update once.

    `tokens`: the trained tokens of the whole step, known before the first backward pass
    (the schedule counts them), so each backward can be scaled right away and no graph is
    kept across micro-batches. With several processes, `micro_batches` are this process's
    share, `local` their tokens, and `scale` the world size: DDP averages the gradients
    over the processes, so each one's must be `scale` times its share of the sum.
    The returned loss is this process's, per its own tokens.
    """
    if tokens < 1:
        raise LLMHoodError("This step has no trained token; its rows should have been dropped.")
    optimizer.zero_grad(set_to_none=True)
    total, counted = 0.0, 0
    for micro_batch in micro_batches:
        loss, n = micro_batch()
        (loss * (scale / tokens)).backward()
        total += loss.item()
        counted += n
    expected = tokens if local is None else local
    if counted != expected:
        raise LLMHoodError(f"The step was told of {expected} trained tokens but has {counted}.")
    params = [p for p in model.parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm or float("inf"))
    optimizer.step()
    lr = optimizer.param_groups[0]["lr"]
    return StepStats(total / max(1, counted), counted, float(norm), lr)
