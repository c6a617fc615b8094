"""The key/value cache: why decoding costs O(n) per token instead of O(n²).

Keys and values of past tokens never change (the mask stops them from seeing the
future), so each new token only needs its own K and V, appended to what earlier steps
stored. The cache is preallocated for the whole generation (prompt + new tokens) to
avoid re-allocating and copying a growing tensor at every step. All rows of a batch share
one write position: a left-padded batch keeps its rows aligned in the cache, while each
row's RoPE positions are tracked separately by the caller.

Generation fills a batch's cache one prompt at a time (`fill_row`): a prompt's keys and
values, computed alone, go to the end of its row, so that every row ends in the same slot.
A batch can shrink mid-generation (`keep_rows`): once a row has finished, carrying its
keys and values along would make every later step compute for it too.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        max_len: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0  # tokens stored so far (the same for every layer once a forward ends)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's keys/values and return everything cached for the layer.

        k, v: (bs, n_kv_heads, seqlen, head_dim) -> (bs, n_kv_heads, length + seqlen, head_dim)
        """
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {end} were asked for.")
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        """Called once per forward pass, after every layer has written its n new positions."""
        self.length += n

    def fill_row(self, row: int, alone: KVCache, end: int) -> None:
        """Copy the slots a one-row cache holds into batch row `row`, ending before `end`.

        The slots before them stay as they are; the caller masks them as padding.
        """
        n = alone.length
        self.k[:, row, :, end - n : end] = alone.k[:, 0, :, :n]
        self.v[:, row, :, end - n : end] = alone.v[:, 0, :, :n]

    def keep_rows(self, rows: torch.Tensor, first_slot: int = 0) -> None:
        """Keep only the batch rows `rows` (1-D int64, ascending), and only slots `first_slot`
        onwards.

        Slots before `first_slot` must be padding in every kept row: after the longest
        prompts have finished, the leading columns that only they needed would otherwise
        stay in every attention step. The kept rows move up in place, each to the first free
        row: a row only ever moves to a lower index, so none is overwritten before it has
        moved, and no second cache is allocated (peak memory stays that of the first).
        """
        if not 0 <= first_slot <= self.length:
            raise ValueError(f"first_slot={first_slot} is outside the {self.length} stored slots.")
        kept = rows.tolist()
        if kept != sorted(set(kept)):
            raise ValueError(f"rows must be distinct and ascending, got {kept}.")
        for i, row in enumerate(kept):
            if row != i:
                self.k[:, i] = self.k[:, row]
                self.v[:, i] = self.v[:, row]
        # (n_layers, len(rows), n_kv_heads, max_len - first_slot, head_dim): views, no copy
        self.k = self.k[:, : len(kept), :, first_slot:]
        self.v = self.v[:, : len(kept), :, first_slot:]
        self.max_len -= first_slot
        self.length -= first_slot
