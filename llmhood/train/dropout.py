"""LoRA's dropout, with masks that cost almost nothing to draw and nothing to keep.

torch's CPU dropout draws one Bernoulli number per element from a Mersenne twister: about
11 ms for a (2048, 576) input on 2 cores. A LoRA step over SmolLM2 with dropout draws a mask
for each of the 7 adapted layers of 30 blocks, and again when activation checkpointing runs
each block a second time: 420 masks, 4 s of a 24 s float32 step (measured with
torch.profiler, 2026-12-02). The arithmetic of the step is no larger for it.

So the mask here is a hash, not a stream (dropout.cpp): element i of a call is kept when
splitmix64(splitmix64(seed) + i·φ) is at least p·2³², and kept elements are scaled by the
inverse of the exact keep rate. The hash runs at a few nanoseconds an element in one
vectorised loop, the same on any number of threads. The seed is one number drawn from torch's
generator per call, so everything that makes torch's own dropout repeatable does the same
here: `torch.manual_seed`, checkpointing's recomputation (which restores the generator's
state first), exact resume (which restores it from the checkpoint). The backward pass runs
the same kernel on the gradient with the same seed: the same mask, never stored.

It is a fast path beside the plain one, and chosen the same way as the others: the kernel is
compiled on first use (llmhood.speed.kernels), and without a compiler, off the CPU, or with
LLMHOOD_FAST_DROPOUT=0, `F.dropout` runs instead. The masks differ from torch's, as any two
random streams do; tests/test_dropout.py checks what makes it dropout: the keep rate against
the binomial law, the expectation, independence between elements and calls, and a backward
pass that uses the forward's mask.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmhood.speed import kernels

SOURCE = Path(__file__).with_name("dropout.cpp")
ENV = "LLMHOOD_FAST_DROPOUT"  # "0": torch's own dropout


@cache
def _kernel() -> str | None:
    if hasattr(torch.ops.llmhood_train, "hashed_dropout"):
        return None
    return kernels.load(SOURCE)


def available() -> str | None:
    """None when the hashed dropout will run in this process, else why not."""
    if os.environ.get(ENV, "1") == "0":
        return f"{ENV}=0 asks for torch's dropout"
    return _kernel()


def hashed_dropout(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """x with each element zeroed with probability p, else scaled by 1/(1 − p); the mask a
    function of (seed, index in x): any shape, the same shape back."""
    return torch.ops.llmhood_train.hashed_dropout(x, p, seed)


class _HashedDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        ctx.p, ctx.seed = p, seed
        return hashed_dropout(x, p, seed)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return hashed_dropout(grad, ctx.p, ctx.seed), None, None


class Dropout(nn.Module):
    """nn.Dropout with the hashed mask on CPU tensors where the kernel runs."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (...) -> (...)
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu" or available() is not None:
            return F.dropout(x, self.p, training=True)
        seed = int(torch.randint(0, 2**62, (1,)))
        return _HashedDropout.apply(x, self.p, seed)

    def extra_repr(self) -> str:
        return f"p={self.p}"
