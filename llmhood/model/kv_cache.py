"""The key/value cache: why decoding costs O(n) per token instead of O(n²).

Keys and values of past tokens never change (the mask stops them from seeing the
future), so each new token only needs its own K and V, appended to what earlier steps
stored. The cache is preallocated for the whole generation (prompt + new tokens) to
avoid re-allocating and copying a growing tensor at every step. All rows of a batch share
one write position: a left-padded batch keeps its rows aligned in the cache, while each
row's RoPE positions are tracked separately by the caller.
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
