"""The order of the data: which micro-batches make each optimiser step, on every process.

The whole schedule is a pure function of the examples, the seed and the step number. Each
epoch shuffles the sequences with a generator seeded by (seed, epoch); step s of an epoch
takes the next `grad_accum × world` micro-batches, and process r takes every world-th of
them, starting at its rank. So a run resumed at step k needs nothing but k to continue
with exactly the data it would have seen, mid-epoch included, and 2 processes with
accumulation 1 see the same global batches as 1 process with accumulation 2. Each step's
trained-token count is known before its first micro-batch runs, which is what the loss is
divided by (llmhood.train.step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llmhood.errors import LLMHoodError
from llmhood.train.data import Example
from llmhood.train.packing import pack


@dataclass
class MicroBatch:
    tokens: torch.Tensor  # (n, T) int64
    mask: torch.Tensor  # (n, T) bool: trained tokens
    positions: torch.Tensor | None = None  # (n, T): packed rows restart at 0
    segments: torch.Tensor | None = None  # (n, T): packed rows' block-diagonal mask
    real: int = 0  # tokens that are not padding

    @property
    def trained(self) -> int:
        """Tokens with a loss: trained tokens that have a token before them."""
        return int(self.mask[:, 1:].sum())

    def forward_args(self) -> dict[str, torch.Tensor]:
        if self.segments is None:
            return {}
        return {"positions": self.positions, "segments": self.segments}


def padded(examples: Sequence[Example], pad_id: int) -> MicroBatch:
    """Rows padded on the right to the longest: causal attention never looks right, so the
    padding changes no real token and needs no mask of its own."""
    length = max(len(e.ids) for e in examples)
    tokens = torch.full((len(examples), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(examples), length, dtype=torch.bool)
    for i, e in enumerate(examples):
        tokens[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = torch.tensor(e.mask)
    return MicroBatch(tokens, mask, real=sum(len(e.ids) for e in examples))


def sft_units(examples: Sequence[Example], seq_len: int, pack_rows: bool, pad_id: int) -> list:
    """What a schedule shuffles: one packed sequence each (a MicroBatch of one row), or the
    rows themselves, padded per micro-batch."""
    if not pack_rows:
        return list(examples)
    packed = pack(examples, seq_len, pad_id)
    return [
        MicroBatch(
            packed.tokens[i : i + 1],
            packed.mask[i : i + 1],
            packed.positions[i : i + 1],
            packed.segments[i : i + 1],
            int((packed.segments[i] >= 0).sum()),
        )
        for i in range(packed.tokens.shape[0])
    ]


def collate(units: list, pad_id: int) -> MicroBatch:
    """One micro-batch of sft/pretrain units: packed sequences stacked, or rows padded."""
    if isinstance(units[0], MicroBatch):
        parts = ("tokens", "mask", "positions", "segments")
        return MicroBatch(
            *(torch.cat([getattr(u, f) for u in units]) for f in parts),
            real=sum(u.real for u in units),
        )
    return padded(units, pad_id)


class Schedule:
    """Micro-batches by (step, rank) over as many epochs as asked. `units` are what is
    shuffled (rows, packed sequences, preference pairs, prompts); `collate` turns
    `batch_size` of them into one micro-batch."""

    def __init__(
        self,
        units: Sequence[Any],
        collate: Callable[[list], Any],
        *,
        batch_size: int,
        grad_accum: int,
        seed: int,
        world: int = 1,
    ) -> None:
        if not units:
            raise LLMHoodError("No training example is left: every row was dropped (see above).")
        self.units, self.collate = list(units), collate
        self.batch_size, self.grad_accum, self.world, self.seed = (
            batch_size,
            grad_accum,
            world,
            seed,
        )
        # A short last step still runs; under several processes a rank left without a
        # micro-batch of it repeats one of its own with weight zero (distributed.micro_batches).
        self.steps_per_epoch = math.ceil(len(self.units) / (batch_size * grad_accum * world))

    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.units), generator=generator).tolist()

    def step(self, step: int) -> list[list[Any]]:
        """Every process's micro-batches of global step `step` (from 0), by rank."""
        epoch, within = divmod(step, self.steps_per_epoch)
        order = self._order(epoch)
        size = self.grad_accum * self.world * self.batch_size
        chosen = order[within * size : (within + 1) * size]
        micro = [
            self.collate([self.units[i] for i in chosen[j : j + self.batch_size]])
            for j in range(0, len(chosen), self.batch_size)
        ]
        return [micro[rank :: self.world] for rank in range(self.world)]

    def total_steps(self, epochs: float, max_steps: int) -> int:
        return max_steps or max(1, math.ceil(epochs * self.steps_per_epoch))
