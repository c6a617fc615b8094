"""The learning-rate schedule: linear warm-up, then a cosine decay to a floor.

Adam's first steps rest on moment estimates from a handful of gradients, and a full-size
step on them can throw a pretrained model off its minimum; ramping the rate up over the
first `warmup` steps lets the estimates settle first. After that a cosine decay (Loshchilov
and Hutter, 2017) spends most steps near the peak and eases off at the end:

    lr(t) = peak · t / warmup                                  t < warmup
    lr(t) = floor + (peak − floor) · (1 + cos(π · p)) / 2      p = (t − warmup) / (total − warmup)

With floor = 0 this is transformers' `get_cosine_schedule_with_warmup`, which the tests
hold it to, except past the last step: there the rate stays at the floor (a resumed run
that goes on does not climb back up the cosine).
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from llmhood.errors import LLMHoodError


def lr_factor(step: int, warmup: int, total: int, floor: float = 0.0) -> float:
    """The rate at `step` as a fraction of the peak; `floor` as a fraction too."""
    if step < warmup:
        return step / max(1, warmup)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: Optimizer, warmup: int, total: int, floor: float = 0.0) -> LambdaLR:
    """A scheduler for `optimizer`: call its `step()` after each optimiser step. Its state
    (the step count) goes into checkpoints with `state_dict()`, for exact resumes."""
    if total < 1 or not 0 <= warmup <= total:
        raise LLMHoodError(
            f"A schedule of {total} steps with {warmup} warm-up steps is impossible: warm-up "
            "must be between 0 and the number of steps, which must be at least 1."
        )
    if not 0 <= floor <= 1:
        raise LLMHoodError(f"The schedule's floor {floor} must be a fraction of the peak, 0..1.")
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total, floor))
