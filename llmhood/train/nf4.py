"""NF4: the 4-bit NormalFloat base weights of QLoRA (Dettmers et al., 2023).

Trained weights are close to normally distributed, so a 4-bit code spends its 16 values
where a normal distribution puts its mass: each value is a quantile of N(0, 1). A weight is
cut into blocks of 64 consecutive values (of the flattened tensor; the last block may be
shorter), each block is divided by its absolute maximum so that it lies in [-1, 1], and
each value is replaced by the index of the nearest code; two indices share a byte. That
costs 4 bits per weight plus one float32 absmax per block (0.5 bits per weight).

Double quantization shrinks the absmax values too: their mean is subtracted and the
centred values are quantized to 8-bit codes in blocks of 256, with one float32 absmax per
block of 256. The statistics then cost 8/64 + 32/(64·256) ≈ 0.127 bits per weight.

The layout and rounding are those of bitsandbytes (`quantize_4bit` with quant_type="nf4"),
so that the packed bytes are identical and a QLoRA base made here is the one it would make.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmhood.errors import LLMHoodError

# The 16 NF4 values, sorted. Quantiles of N(0, 1), normalised to [-1, 1] by the largest:
# the 8 positive ones at probabilities linspace(δ, 1/2, 9)[:-1] and the 7 negative ones at
# linspace(δ, 1/2, 8)[:-1] (mirrored), with δ = 0.9677083, plus an exact zero. The code is
# asymmetric (8 positive values, 7 negative) so that zero, frequent in weights, is exact.
# These are bitsandbytes' float32 values (its `create_normal_map()`); the quantiles taken in
# float64 (torch.special.ndtri), rounded to float32 and then normalised give them exactly.
NF4_CODE = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
])  # fmt: skip
ZERO_CODE = 7  # NF4_CODE[7] == 0.0: what the unused half of an odd tensor's last byte holds
ABSMAX_BLOCK = 256  # double quantization: absmax values per 8-bit block
TINY = 1e-38  # the least absmax divided by: an all-zero block gives zeros, not NaNs


def dynamic_map() -> torch.Tensor:
    """The signed 8-bit "dynamic" code (Dettmers, 2015) that double quantization uses: (256,).

    Values span seven decades: decade 10^(e-6), e = 0..6, holds 2^e levels (the centres
    of 2^e equal bins over [0.1, 1], times 10^(e-6)) with both signs, so small centred
    absmax values keep their relative precision. With 0 and 1.0 that is 256 values."""
    values = [0.0, 1.0]
    for e in range(7):
        edges = torch.linspace(0.1, 1.0, 2**e + 1)
        centres = (edges[:-1] + edges[1:]) / 2
        decade = 10.0 ** (e - 6) * centres
        values += decade.tolist() + (-decade).tolist()
    return torch.tensor(sorted(values))


DYNAMIC_CODE = dynamic_map()


def _nearest(normed: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Index of the nearest value of the sorted `code`; a value exactly halfway between two
    goes to the lower one (bitsandbytes' rule: its bucketize against the float32 midpoints)."""
    midpoints = (code[:-1] + code[1:]) / 2
    return torch.bucketize(normed, midpoints.to(normed.device)).to(torch.uint8)


def _blockwise(flat: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,) -> normalised values (n,) in [-1, 1] and the absmax of each block (n_blocks,).

    The last block may be short: it is padded with zeros, which leave its absmax alone.
    Values are multiplied by 1/absmax, as bitsandbytes does in full blocks (its CPU code
    divides in a short last block): x·(1/a) and x/a can differ in the last bit, which
    changes a code only for a value that sits on a midpoint."""
    n = flat.numel()
    blocks = F.pad(flat, (0, -n % block_size)).view(-1, block_size)
    absmax = blocks.abs().amax(dim=1)
    normed = blocks * (1.0 / absmax.clamp(min=TINY)).unsqueeze(1)
    return normed.reshape(-1)[:n], absmax


@dataclass
class NF4Weight:
    """A weight in NF4. Without double quantization `absmax` is float32 (n_blocks,); with
    it, `absmax` holds uint8 codes (n_blocks,) of `absmax - offset` in DYNAMIC_CODE, and
    `absmax_scale` is float32 (ceil(n_blocks / 256),)."""

    packed: torch.Tensor  # uint8 (ceil(numel / 2),): value 2i in the high nibble, 2i+1 low
    absmax: torch.Tensor
    shape: tuple[int, ...]
    block_size: int
    absmax_scale: torch.Tensor | None = None
    offset: float | None = None
    dtype: torch.dtype = torch.float32  # the original weight's, dequantize's default

    @property
    def double_quant(self) -> bool:
        return self.absmax_scale is not None

    @property
    def nbytes(self) -> int:
        """Bytes held: packed codes and statistics (the float32 offset counts 4)."""
        stats = [self.absmax] if self.absmax_scale is None else [self.absmax, self.absmax_scale]
        return self.packed.nbytes + sum(t.nbytes for t in stats) + 4 * self.double_quant

    def block_absmax(self) -> torch.Tensor:
        """The float32 absmax of each block (n_blocks,), decoding the 8-bit codes if needed."""
        if self.absmax_scale is None:
            return self.absmax.float()
        scales = self.absmax_scale.float().repeat_interleave(ABSMAX_BLOCK)[: self.absmax.numel()]
        code = DYNAMIC_CODE.to(self.absmax.device)
        return code[self.absmax.long()] * scales + self.offset

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight back, `shape`, computed in float32 and then cast (as bitsandbytes)."""
        n = math.prod(self.shape)
        indices = torch.stack([self.packed >> 4, self.packed & 0x0F], dim=1).reshape(-1)[:n]
        values = NF4_CODE.to(self.packed.device)[indices.long()]
        scales = self.block_absmax().repeat_interleave(self.block_size)[:n]
        return (values * scales).reshape(self.shape).to(dtype or self.dtype)


def quantize_nf4(
    weight: torch.Tensor, block_size: int = 64, double_quant: bool = False
) -> NF4Weight:
    """Quantize a float weight of any shape to NF4 in blocks of `block_size` values."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise LLMHoodError(f"NF4 block size must be a positive integer, not {block_size!r}.")
    if not weight.is_floating_point():
        raise LLMHoodError(f"NF4 quantizes float weights; this one is {weight.dtype}.")
    if weight.numel() == 0:
        raise LLMHoodError(f"NF4 has nothing to quantize: the weight's shape is {weight.shape}.")
    flat = weight.detach().reshape(-1).float()
    normed, absmax = _blockwise(flat, block_size)
    indices = _nearest(normed, NF4_CODE)
    if indices.numel() % 2:
        indices = F.pad(indices, (0, 1), value=ZERO_CODE)
    packed = (indices[0::2] << 4) | indices[1::2]
    result = NF4Weight(packed, absmax, tuple(weight.shape), block_size, dtype=weight.dtype)
    if double_quant:
        offset = absmax.mean()
        normed_absmax, result.absmax_scale = _blockwise(absmax - offset, ABSMAX_BLOCK)
        result.absmax = _nearest(normed_absmax, DYNAMIC_CODE)
        result.offset = offset.item()
    return result


class NF4Linear(nn.Module):
    """A frozen linear layer stored in NF4: the QLoRA base an adapter is trained on.

    Only the codes and the statistics are held, as buffers; the float weight exists for
    the length of one forward (or `dequantize` call) and there are no parameters."""

    def __init__(self, weight: NF4Weight, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if len(weight.shape) != 2:
            raise LLMHoodError(f"NF4Linear needs a 2-D (out, in) weight, not shape {weight.shape}.")
        self.out_features, self.in_features = weight.shape
        # A float, not a buffer: reading a tensor's value in every forward would make the
        # host wait for the device. It travels in state_dicts as the module's extra state.
        self.block_size, self.offset, self.dtype = weight.block_size, weight.offset, weight.dtype
        self.register_buffer("packed", weight.packed)
        self.register_buffer("absmax", weight.absmax)
        self.register_buffer("absmax_scale", weight.absmax_scale)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_linear(
        cls, linear: nn.Module, block_size: int = 64, double_quant: bool = True
    ) -> NF4Linear:
        weight = getattr(linear, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            shape = None if weight is None else tuple(weight.shape)
            raise LLMHoodError(f"NF4Linear is built from a layer with a 2-D weight; got {shape}.")
        return cls(quantize_nf4(weight, block_size, double_quant), getattr(linear, "bias", None))

    def nf4_weight(self) -> NF4Weight:
        shape = (self.out_features, self.in_features)
        return NF4Weight(self.packed, self.absmax, shape, self.block_size, self.absmax_scale,
                         self.offset, self.dtype)  # fmt: skip

    def get_extra_state(self) -> dict[str, float | None]:
        return {"offset": self.offset}

    def set_extra_state(self, state: dict[str, float | None]) -> None:
        self.offset = state["offset"]

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight (out_features, in_features), in `dtype` (default: the original's)."""
        return self.nf4_weight().dequantize(dtype)

    @property
    def nbytes(self) -> int:
        """Bytes held (codes, statistics, any bias): to set against 2 bytes a weight in bf16."""
        return sum(b.nbytes for b in self.buffers()) + 4 * (self.offset is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in_features) -> (..., out_features), in x's dtype
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantize(x.dtype), bias)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> NF4Linear:
        # Module.to(dtype), .half() and .bfloat16() would cast every float buffer and round
        # the float32 statistics. Here the buffers follow the device only; the dtype asked
        # for becomes what `dequantize` gives by default.
        probe = fn(torch.empty(0, dtype=self.dtype, device=self.packed.device))
        self.dtype = probe.dtype
        for name, buffer in self._buffers.items():
            if buffer is not None:
                self._buffers[name] = buffer.to(probe.device)
        return self

    def extra_repr(self) -> str:
        double = self.absmax_scale is not None
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"block_size={self.block_size}, double_quant={double}")  # fmt: skip


class NF4Embedding(NF4Linear):
    """A frozen embedding table in NF4, looked up without dequantizing the whole table.

    QLoRA's base is mostly its linear layers, but a small model's tied embedding is a fifth
    of it (SmolLM2: 28M of 135M weights), and left in bf16 it would be the larger part of a
    4-bit base. A row of `dim` values holds dim / block_size whole blocks when the block
    size divides it, so a lookup decodes just the rows asked for; the tied output head is an
    NF4Linear over the same buffers (`head`), so the table is stored once."""

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table (vocab, dim): for code that reads the embedding's dtype
        or device (a KV cache's), not for lookups."""
        return self.dequantize()

    def head(self) -> NF4Linear:
        """The output head tied to this table: the same codes and statistics, no copy."""
        return NF4Linear(self.nf4_weight())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # ids: (...) int64 -> (..., dim) in the table's dtype
        vocab, dim = self.out_features, self.in_features
        if dim % self.block_size or dim % 2:
            return F.embedding(ids, self.dequantize())
        weight = self.nf4_weight()
        packed = self.packed.view(vocab, dim // 2)[ids]  # (..., dim / 2)
        codes = torch.stack([packed >> 4, packed & 0x0F], dim=-1).flatten(-2)  # (..., dim)
        values = NF4_CODE.to(packed.device)[codes.long()]
        scales = weight.block_absmax().view(vocab, dim // self.block_size)[ids]
        blocks = values.unflatten(-1, (dim // self.block_size, self.block_size))
        return (blocks * scales.unsqueeze(-1)).flatten(-2).to(self.dtype)
