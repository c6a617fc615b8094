"""Packing: several training rows in one sequence, each computed as if it were alone.

Chat rows are short and of every length; padding each batch to its longest row spends
compute on padding. Packing lays rows end to end in sequences of `seq_len` tokens instead.
Each row keeps its own RoPE positions, restarting at 0, and a block-diagonal causal mask
(Transformer's `segments`) keeps every token from attending to another row, so a packed
sequence's loss is the sum of its rows' losses, to float32 rounding. Rows are placed
longest first into the first sequence with room (first-fit decreasing), which leaves
little of each sequence empty; the rest is padding that trains nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmhood.errors import LLMHoodError
from llmhood.train.data import Example


@dataclass
class Packed:
    """A batch of packed sequences, each (n, seq_len): tokens, trained-token mask, RoPE
    positions, and segments (the row each token belongs to; -1 for padding)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    segments: torch.Tensor

    def forward_args(self) -> dict[str, torch.Tensor]:
        return {"positions": self.positions, "segments": self.segments}


def pack(examples: Sequence[Example], seq_len: int, pad_id: int = 0) -> Packed:
    """Pack `examples` (each at most seq_len tokens) into as few sequences as first-fit
    decreasing finds."""
    too_long = [i for i, e in enumerate(examples) if len(e.ids) > seq_len]
    if too_long:
        raise LLMHoodError(
            f"Row {too_long[0]} has {len(examples[too_long[0]].ids)} tokens, more than "
            f"seq_len {seq_len}: truncate or drop it before packing."
        )
    bins: list[list[int]] = []  # example indices per sequence
    room: list[int] = []
    for i in sorted(range(len(examples)), key=lambda i: -len(examples[i].ids)):
        size = len(examples[i].ids)
        for b, free in enumerate(room):
            if free >= size:
                bins[b].append(i)
                room[b] -= size
                break
        else:
            bins.append([i])
            room.append(seq_len - size)
    n = len(bins)
    tokens = torch.full((n, seq_len), pad_id, dtype=torch.long)
    mask = torch.zeros(n, seq_len, dtype=torch.bool)
    positions = torch.zeros(n, seq_len, dtype=torch.long)
    segments = torch.full((n, seq_len), -1, dtype=torch.long)
    for b, members in enumerate(bins):
        at = 0
        for segment, i in enumerate(members):
            e = examples[i]
            end = at + len(e.ids)
            tokens[b, at:end] = torch.tensor(e.ids)
            mask[b, at:end] = torch.tensor(e.mask)
            positions[b, at:end] = torch.arange(len(e.ids))
            segments[b, at:end] = segment
            at = end
    return Packed(tokens, mask, positions, segments)
