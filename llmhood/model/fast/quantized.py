"""Weight-only quantized linear layers: int4 groupwise and int8 per-channel.

Decoding one token reads every weight once and does two flops with each, so on a CPU the
time per token is the time it takes to stream the weights from memory. Storing them in
4 or 8 bits instead of 16 cuts that traffic 4× or 2×; the activations stay in bf16 and the
kernels (`torch._weight_int4pack_mm_for_cpu`, `torch._weight_int8pack_mm`) widen each
weight on the fly, inside the dot product.

**int4, groupwise asymmetric.** Every run of `group_size` (32) consecutive inputs of an
output row has its own scale s and zero z, and a weight is w = (q − 8)·s + z with q in
0..15. GGUF's Q4_1 stores exactly such groups of 32, as w = d·q + m, so a Q4_1 tensor is
*repacked*, not re-quantized: q stays the file's code, s = d and z = m + 8d. The only
change is the dtype of s and z (the kernel wants them in the activation dtype, bf16;
the file has f16). Tensors from other sources are quantized the way llama.cpp makes
Q4_1: d = (max − min)/15 and m = min per group.

**Q8_0 as two int4 halves.** Q8_0 (w = d·q, q an int8, groups of 32) does not fit in four
bits, but q = 16·hi + lo with hi = q >> 4 in −8..7 and lo = q & 15 in 0..15, so
w = 16d·hi + d·lo: two int4 weights, one with scale 16d and zero 0 (code hi + 8), one
with scale d and zero 8d (code lo). Side by side they make one int4 matrix twice as
wide, and the input is repeated to match: y = [x, x]·[W_hi, W_lo]ᵀ. That is the tied
output head of SmolLM2 in half the bytes of bf16, with no rounding of its codes.

**int8, per output channel, symmetric.** w = q·s with one s per output row: what the
kernel supports. It is a re-quantization (lossy), whatever the source was.

A layer keeps nothing but its packed form: there is no float `weight` to look at. The
`Int4Weight`/`Int8Weight` records it is built from dequantize, and are what the tests
compare the layers with.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmhood.errors import LLMHoodError

GROUP_SIZE = 32  # Q4_1 and Q8_0 blocks; also what torch's int4 kernels accept (32..256)
# From this many input rows on, a bf16 matmul beats the int4 kernel. Measured on whole
# decode steps of SmolLM2, with the weights streaming from memory as they do in use: int4
# wins clearly at 8 rows, the two tie at 16, bf16 wins from 24 (`llmhood bench`'s batch).
DENSE_ROWS = 16
N_MULTIPLE = 16  # torch's CPU int4 packing works on blocks of 16 output rows
INT8_K_MULTIPLE = 16  # inputs of the int8 kernel


@dataclass
class Int4Weight:
    """An int4 groupwise weight before packing: w = (codes − 8)·scale + zero.

    codes: (out_features, in_features) uint8 in 0..15; scale, zero: (out_features,
    in_features // group_size) float32.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)

    @classmethod
    def from_q4_1(cls, d: torch.Tensor, m: torch.Tensor, q: torch.Tensor) -> Int4Weight:
        """From Q4_1 blocks: d, m (out, in // 32) float32 (the file's f16 values, widened),
        q (out, in) codes 0..15. w = d·q + m = (q − 8)·d + (m + 8d)."""
        return cls(q.to(torch.uint8), d.float(), m.float() + 8 * d.float())

    @classmethod
    def from_q8_0(cls, d: torch.Tensor, q: torch.Tensor) -> Int4Weight:
        """From Q8_0 blocks, d (out, in // 32), q (out, in) int8: the weight [W_hi, W_lo] of
        shape (out, 2·in) that, applied to [x, x], equals x·Wᵀ with W = d·q."""
        q = q.to(torch.int16)
        hi, lo = (q >> 4) + 8, q & 15  # arithmetic shift: hi in -8..7
        d = d.float()
        codes = torch.cat((hi, lo), dim=1).to(torch.uint8)
        scale = torch.cat((16 * d, d), dim=1)
        zero = torch.cat((torch.zeros_like(d), 8 * d), dim=1)
        return cls(codes, scale, zero)

    @classmethod
    def quantize(cls, w: torch.Tensor, group_size: int = GROUP_SIZE) -> Int4Weight:
        """Round a float weight (out, in) to 16 levels per group, as llama.cpp's Q4_1 does."""
        out_features, in_features = w.shape
        groups = w.float().reshape(out_features, in_features // group_size, group_size)
        low, high = groups.amin(-1), groups.amax(-1)
        d = (high - low) / 15
        inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
        q = ((groups - low[..., None]) * inv[..., None]).round().clamp(0, 15)
        return cls.from_q4_1(d, low, q.reshape(out_features, in_features))

    def dequantize(self) -> torch.Tensor:
        """(out, in) float32: what the kernel multiplies by, up to the rounding of scale and
        zero to the activation dtype."""
        group = self.codes.shape[1] // self.scale.shape[1]
        scale = self.scale.repeat_interleave(group, dim=1)
        zero = self.zero.repeat_interleave(group, dim=1)
        return (self.codes.float() - 8) * scale + zero

    @staticmethod
    def cat(weights: list[Int4Weight]) -> Int4Weight:
        """Stack along the output dimension: one matrix for several projections of x."""
        return Int4Weight(*(torch.cat(parts) for parts in zip(*_fields(weights), strict=True)))


def _fields(weights: list[Int4Weight]) -> list[tuple[torch.Tensor, ...]]:
    return [(w.codes, w.scale, w.zero) for w in weights]


def check_int4_shape(out_features: int, in_features: int) -> None:
    if out_features % N_MULTIPLE or in_features % GROUP_SIZE:
        raise LLMHoodError(
            f"A {out_features}×{in_features} weight cannot be stored as int4: torch's CPU kernel "
            f"needs the output size to be a multiple of {N_MULTIPLE} and the input size a "
            f"multiple of {GROUP_SIZE}. Load this model without quantize='int4'."
        )


class Int4Linear(nn.Module):
    """y = x·Wᵀ with W held as int4 groups (see the module docstring).

    `repeat_input`: how many copies of x the packed matrix spans along its input (2 for
    a Q8_0 weight split into two int4 halves). `dense`: optionally the same W in the
    activation dtype, (out, in), used for inputs of `dense_rows` rows or more. torch's
    int4 kernel is built for a few rows at a time (decoding); for a prefill or a large
    batch a bf16 matmul is faster, so a mode that can afford the memory keeps both.
    """

    def __init__(
        self,
        packed: torch.Tensor,
        scale_zero: torch.Tensor,
        repeat_input: int = 1,
        dense: torch.Tensor | None = None,
        dense_rows: int = DENSE_ROWS,
    ) -> None:
        super().__init__()
        groups, self.out_features, _ = scale_zero.shape
        packed_in = packed.shape[1] * 2
        self.in_features = packed_in // repeat_input
        self.repeat_input = repeat_input
        self.group_size = packed_in // groups
        self.dense_rows = dense_rows
        self.register_buffer("packed", packed)  # (out, in / 2) uint8, torch's blocked layout
        self.register_buffer("scale_zero", scale_zero)  # (in / group_size, out, 2)
        self.register_buffer("dense", dense)

    @classmethod
    def from_weight(
        cls,
        weight: Int4Weight,
        dtype: torch.dtype = torch.bfloat16,
        repeat_input: int = 1,
        dense: bool = False,
    ) -> Int4Linear:
        """Pack `weight` for the kernel; scale and zero are stored in `dtype`, the dtype of
        the activations it will multiply. `dense`: also keep W, dequantized, in `dtype`."""
        check_int4_shape(*weight.shape)
        packed = torch._convert_weight_to_int4pack_for_cpu(weight.codes.to(torch.int32), 1)
        scale_zero = torch.stack((weight.scale, weight.zero), dim=-1).transpose(0, 1)
        w = weight.dequantize().to(dtype) if dense else None
        if w is not None and repeat_input > 1:
            w = w.view(w.shape[0], repeat_input, -1).sum(1)
        return cls(packed, scale_zero.to(dtype).contiguous(), repeat_input, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in_features) -> (..., out_features), in the dtype of scale and zero
        x2 = x.reshape(-1, self.in_features)
        if self.dense is not None and x2.shape[0] >= self.dense_rows:
            y = F.linear(x2, self.dense)
        else:
            if self.repeat_input > 1:
                x2 = x2.repeat(1, self.repeat_input)
            y = torch._weight_int4pack_mm_for_cpu(x2, self.packed, self.group_size, self.scale_zero)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        dense = f", dense from {self.dense_rows} rows" if self.dense is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, int4{dense}"


@dataclass
class Int8Weight:
    """w = codes·scale; codes (out, in) int8, scale (out,) float32."""

    codes: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def quantize(cls, w: torch.Tensor) -> Int8Weight:
        """Symmetric per-row rounding to −127..127."""
        w = w.float()
        scale = w.abs().amax(dim=1) / 127
        inv = torch.where(scale > 0, 1 / scale, torch.zeros_like(scale))
        codes = (w * inv[:, None]).round().clamp(-127, 127).to(torch.int8)
        return cls(codes, scale)

    def dequantize(self) -> torch.Tensor:
        return self.codes.float() * self.scale[:, None]

    @staticmethod
    def cat(weights: list[Int8Weight]) -> Int8Weight:
        return Int8Weight(
            torch.cat([w.codes for w in weights]), torch.cat([w.scale for w in weights])
        )


class Int8Linear(nn.Module):
    """y = x·Wᵀ with W held as int8 rows and one scale per row."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.register_buffer("codes", codes)  # (out, in) int8
        self.register_buffer("scale", scale)  # (out,) in the activation dtype

    @classmethod
    def from_weight(cls, weight: Int8Weight, dtype: torch.dtype = torch.bfloat16) -> Int8Linear:
        in_features = weight.codes.shape[1]
        if in_features % INT8_K_MULTIPLE:
            # torch 2.13's bf16 kernel silently returns garbage for other sizes
            raise LLMHoodError(
                f"A weight with {in_features} inputs cannot be stored as int8: torch's CPU kernel "
                f"needs a multiple of {INT8_K_MULTIPLE}. Load this model without quantize='int8'."
            )
        return cls(weight.codes.contiguous(), weight.scale.to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in_features) -> (..., out_features), in the dtype of the scales
        y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features), self.codes, self.scale)
        return y.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def int4_available() -> bool:
    """Whether this torch build has the CPU int4 kernels."""
    return hasattr(torch, "_weight_int4pack_mm_for_cpu") and hasattr(
        torch, "_convert_weight_to_int4pack_for_cpu"
    )


def int8_available() -> bool:
    return hasattr(torch, "_weight_int8pack_mm")


@contextmanager
def int4_kernel_only(model: nn.Module) -> Iterator[None]:
    """Send every Int4Linear's input through the int4 kernel, whatever its number of rows.

    A perplexity run feeds hundreds of rows at once, which a dense copy would serve; the
    int4 arithmetic that decoding uses is only measured with the copy out of the way.
    """
    layers = [m for m in model.modules() if isinstance(m, Int4Linear)]
    saved = [m.dense_rows for m in layers]
    for m in layers:
        m.dense_rows = sys.maxsize
    try:
        yield
    finally:
        for m, rows in zip(layers, saved, strict=True):
            m.dense_rows = rows
