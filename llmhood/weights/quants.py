"""ggml tensor types and how to turn their bytes back into float32.

A GGUF file stores each tensor as a run of *blocks*. A block holds a fixed number of values
(`block_size`) in a fixed number of bytes (`type_size`): a few scale factors plus small
integers, one per value. Dequantizing a tensor therefore never needs to look across block
boundaries, so every decoder here reshapes the bytes to `(n_blocks, type_size)` and works
on all blocks at once with torch ops; there is no Python loop over blocks.

The layouts are the ones ggml defines (`ggml-common.h`). Multi-byte fields are little-endian,
`f16` is IEEE half precision. The arithmetic is done in float32, one rounding per operation
and in the same order as the reference decoder, which is what makes the results equal bit
for bit, not merely close. The float steps run in place on the freshly converted codes:
a new float32 buffer per step would cost more (in page faults) than the arithmetic.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from enum import IntEnum

import numpy as np
import torch

from llmhood.errors import LLMHoodError


class GGMLType(IntEnum):
    """Every tensor type id ggml has defined for GGUF files.

    The ids are stored in the file, so they never change. Ids 31-33 and 36-38 are
    repacked layouts that llama.cpp has since removed from files (it now repacks at load
    time); they are listed so that an old file gets a precise error instead of "unknown".
    """

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    Q4_0_4_4 = 31
    Q4_0_4_8 = 32
    Q4_0_8_8 = 33
    TQ1_0 = 34
    TQ2_0 = 35
    IQ4_NL_4_4 = 36
    IQ4_NL_4_8 = 37
    IQ4_NL_8_8 = 38
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


QK_K = 256
"""Values per super-block in the K-quants (and most IQ types)."""

BLOCK_SIZES: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 2 + 16),
    GGMLType.Q4_1: (32, 2 + 2 + 16),
    GGMLType.Q5_0: (32, 2 + 4 + 16),
    GGMLType.Q5_1: (32, 2 + 2 + 4 + 16),
    GGMLType.Q8_0: (32, 2 + 32),
    GGMLType.Q8_1: (32, 2 + 2 + 32),
    GGMLType.Q2_K: (QK_K, QK_K // 16 + QK_K // 4 + 2 + 2),
    GGMLType.Q3_K: (QK_K, QK_K // 8 + QK_K // 4 + 12 + 2),
    GGMLType.Q4_K: (QK_K, 2 + 2 + 12 + QK_K // 2),
    GGMLType.Q5_K: (QK_K, 2 + 2 + 12 + QK_K // 8 + QK_K // 2),
    GGMLType.Q6_K: (QK_K, QK_K // 2 + QK_K // 4 + QK_K // 16 + 2),
    GGMLType.Q8_K: (QK_K, 4 + QK_K + QK_K // 8),
    GGMLType.IQ2_XXS: (QK_K, 2 + QK_K // 4),
    GGMLType.IQ2_XS: (QK_K, 2 + QK_K // 4 + QK_K // 32),
    GGMLType.IQ3_XXS: (QK_K, 2 + QK_K // 4 + QK_K // 8),
    GGMLType.IQ1_S: (QK_K, 2 + QK_K // 8 + QK_K // 16),
    GGMLType.IQ4_NL: (32, 2 + 16),
    GGMLType.IQ3_S: (QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    GGMLType.IQ2_S: (QK_K, 2 + QK_K // 4 + QK_K // 16),
    GGMLType.IQ4_XS: (QK_K, 2 + 2 + QK_K // 2 + QK_K // 64),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.IQ1_M: (QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    GGMLType.BF16: (1, 2),
    GGMLType.Q4_0_4_4: (32, 2 + 16),
    GGMLType.Q4_0_4_8: (32, 2 + 16),
    GGMLType.Q4_0_8_8: (32, 2 + 16),
    GGMLType.TQ1_0: (QK_K, 2 + 4 * 13),
    GGMLType.TQ2_0: (QK_K, 2 + 64),
    GGMLType.IQ4_NL_4_4: (32, 2 + 16),
    GGMLType.IQ4_NL_4_8: (32, 2 + 16),
    GGMLType.IQ4_NL_8_8: (32, 2 + 16),
    GGMLType.MXFP4: (32, 1 + 16),
    GGMLType.NVFP4: (64, 4 + 32),
    GGMLType.Q1_0: (128, 2 + 16),
}
"""(values per block, bytes per block) for every type: the file parser needs the byte size
of a tensor even when llmhood cannot decode it. Q8_1 is 36 bytes as in ggml's
`block_q8_1` (two f16 + 32 int8); gguf-py's table still says 40, from an older layout."""


def tensor_nbytes(ggml_type: GGMLType, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of this type and (row-major) shape occupies in the file.

    Blocks run along the last (contiguous) dimension, so that dimension must be a whole
    number of blocks.
    """
    block_size, type_size = BLOCK_SIZES[ggml_type]
    row = shape[-1] if shape else 1
    if row % block_size:
        raise ValueError(
            f"a row of {row} values is not a whole number of {ggml_type.name} blocks "
            f"of {block_size}"
        )
    return math.prod(shape) // block_size * type_size


def _f16(two_bytes: torch.Tensor) -> torch.Tensor:
    """(n_blocks, 2) uint8 holding one f16 per block -> (n_blocks, 1) float32."""
    return two_bytes.view(torch.float16).to(torch.float32)


def _unpack(packed: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Split packed bytes into `bits`-wide unsigned fields, in ggml's order.

    ggml packs a run of `group` bytes so that their lowest fields hold the first `group`
    values, the next-higher fields the next `group` values, and so on. packed:
    (n_blocks, n_bytes) uint8 -> (n_blocks, n_bytes * 8 // bits) uint8.
    """
    n_blocks = packed.shape[0]
    groups = packed.reshape(n_blocks, -1, group)
    mask = (1 << bits) - 1
    fields = [(groups >> shift) & mask for shift in range(0, 8, bits)]
    return torch.stack(fields, dim=-2).reshape(n_blocks, -1)


def _dequantize_f32(blocks: torch.Tensor) -> torch.Tensor:
    """F32: 4 bytes per value, stored as is.

    The copy keeps the result from aliasing the (read-only) memory-mapped file.
    """
    return blocks.view(torch.float32).clone()


def _dequantize_f16(blocks: torch.Tensor) -> torch.Tensor:
    """F16: 2 bytes per value, IEEE half precision; widening to float32 is exact.

    One caveat: torch marks a signalling-NaN half as quiet when widening (numpy keeps the
    bit). A weight is never a NaN, so no real tensor is affected.
    """
    return _f16(blocks)


def _dequantize_bf16(blocks: torch.Tensor) -> torch.Tensor:
    """BF16: 2 bytes per value, the upper half of a float32 (same exponent range, 8-bit
    mantissa); widening just appends 16 zero bits."""
    return blocks.view(torch.bfloat16).to(torch.float32)


def q8_0_fields(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q8_0 blocks (n_blocks, 34) -> d (n_blocks, 1) float32, q (n_blocks, 32) int8.
    Also read by llmhood.weights.repack, which keeps the codes."""
    return _f16(blocks[:, :2]), blocks[:, 2:].view(torch.int8)


def _dequantize_q8_0(blocks: torch.Tensor) -> torch.Tensor:
    """Q8_0, 32 values in 34 bytes: f16 scale d, then 32 int8 q.

    value = d * q
    """
    d, q = q8_0_fields(blocks)
    return q.to(torch.float32).mul_(d)


def _dequantize_q4_0(blocks: torch.Tensor) -> torch.Tensor:
    """Q4_0, 32 values in 18 bytes: f16 scale d, then 16 bytes of 4-bit q.

    Byte j holds value j in its low nibble and value j + 16 in its high nibble.
    value = d * (q - 8), so q = 0..15 covers -8d..7d.
    """
    d = _f16(blocks[:, :2])
    q = _unpack(blocks[:, 2:], bits=4, group=16).to(torch.float32)
    return q.sub_(8).mul_(d)


def q4_1_fields(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_1 blocks (n_blocks, 20) -> d, m (n_blocks, 1) float32, q (n_blocks, 32) codes
    0..15. Also read by llmhood.weights.repack, which keeps the codes."""
    return _f16(blocks[:, :2]), _f16(blocks[:, 2:4]), _unpack(blocks[:, 4:], bits=4, group=16)


def _dequantize_q4_1(blocks: torch.Tensor) -> torch.Tensor:
    """Q4_1, 32 values in 20 bytes: f16 scale d, f16 offset m, then 16 bytes of 4-bit q
    (nibble order as in Q4_0).

    value = d * q + m: the offset lets the 16 levels sit anywhere, not centred on zero.
    """
    d, m, q = q4_1_fields(blocks)
    return q.to(torch.float32).mul_(d).add_(m)


def _five_bit(high_bits: torch.Tensor, low_nibbles: torch.Tensor) -> torch.Tensor:
    """Q5_0/Q5_1 codes: bit j of the 32-bit little-endian `high_bits` is the fifth bit of
    value j; the nibbles are laid out as in Q4_0. -> (n_blocks, 32) float32 in 0..31."""
    high = _unpack(high_bits, bits=1, group=1)
    low = _unpack(low_nibbles, bits=4, group=16)
    return (low | (high << 4)).to(torch.float32)


def _dequantize_q5_0(blocks: torch.Tensor) -> torch.Tensor:
    """Q5_0, 32 values in 22 bytes: f16 scale d, 4 bytes of fifth bits, 16 bytes of
    nibbles.

    value = d * (q - 16)
    """
    d = _f16(blocks[:, :2])
    q = _five_bit(blocks[:, 2:6], blocks[:, 6:])
    return q.sub_(16).mul_(d)


def _dequantize_q5_1(blocks: torch.Tensor) -> torch.Tensor:
    """Q5_1, 32 values in 24 bytes: f16 scale d, f16 offset m, 4 bytes of fifth bits,
    16 bytes of nibbles.

    value = d * q + m
    """
    d = _f16(blocks[:, :2])
    m = _f16(blocks[:, 2:4])
    q = _five_bit(blocks[:, 4:8], blocks[:, 8:])
    return q.mul_(d).add_(m)


def _k_scales_and_mins(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpack the 12 bytes that hold eight 6-bit scales and eight 6-bit mins (Q4_K, Q5_K).

    Bytes 0-3 hold scales 0-3 and bytes 4-7 mins 0-3 in their low 6 bits. Scales and mins
    4-7 take their low 4 bits from the nibbles of bytes 8-11 (scale low, min high) and
    their top 2 bits from the spare top bits of bytes 0-3 (scales) and 4-7 (mins).
    packed: (n_blocks, 12) uint8 -> two (n_blocks, 8) uint8.
    """
    first, second, third = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = torch.cat((first & 63, (third & 15) | ((first >> 6) << 4)), dim=1)
    mins = torch.cat((second & 63, (third >> 4) | ((second >> 6) << 4)), dim=1)
    return scales, mins


def _k_affine(blocks: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """value = (d * scale) * q - (dmin * min), per 32-value sub-block (Q4_K, Q5_K).

    blocks: the (n_blocks, type_size) bytes, whose first 16 are d, dmin and the packed
    scales; q: (n_blocks, 8, 32) float32 codes -> (n_blocks, 256).
    """
    d = _f16(blocks[:, 0:2])
    dmin = _f16(blocks[:, 2:4])
    scales, mins = _k_scales_and_mins(blocks[:, 4:16])
    step = (d * scales.to(torch.float32)).unsqueeze(-1)  # (n_blocks, 8, 1)
    offset = (dmin * mins.to(torch.float32)).unsqueeze(-1)  # (n_blocks, 8, 1)
    return q.mul_(step).sub_(offset).reshape(blocks.shape[0], QK_K)


def _dequantize_q4_k(blocks: torch.Tensor) -> torch.Tensor:
    """Q4_K, 256 values in 144 bytes: a super-block of eight 32-value sub-blocks.

    Bytes: f16 d, f16 dmin, 12 bytes of packed 6-bit scales and mins (one pair per
    sub-block), 128 bytes of 4-bit q. Each 32-byte run of q holds two sub-blocks: the low
    nibbles the first, the high nibbles the second.
    value = d * scale[s] * q - dmin * min[s]: the per-sub-block scales are themselves
    quantized against the two f16 super-scales, which is where the bits are saved.
    """
    q = _unpack(blocks[:, 16:], bits=4, group=32).to(torch.float32)
    return _k_affine(blocks, q.view(-1, 8, 32))


def _dequantize_q5_k(blocks: torch.Tensor) -> torch.Tensor:
    """Q5_K, 256 values in 176 bytes: Q4_K's layout with 32 bytes of fifth bits inserted
    before the nibbles.

    Bytes: f16 d, f16 dmin, 12 bytes of scales/mins, 32 bytes qh, 128 bytes of nibbles.
    Bit s of qh[j] is the fifth bit of value j of sub-block s.
    value = d * scale[s] * q - dmin * min[s], q = 0..31.
    """
    high = _unpack(blocks[:, 16:48], bits=1, group=32)
    low = _unpack(blocks[:, 48:], bits=4, group=32)
    q = (low | (high << 4)).to(torch.float32)
    return _k_affine(blocks, q.view(-1, 8, 32))


def _dequantize_q6_k(blocks: torch.Tensor) -> torch.Tensor:
    """Q6_K, 256 values in 210 bytes: sixteen 16-value sub-blocks, no offsets.

    Bytes: 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 scales, f16 d.
    The block is two halves of 128 values. In half h, the nibbles of ql[64h : 64h + 64]
    give values 0-63 (low nibbles) and 64-127 (high nibbles); the four 2-bit fields of
    qh[32h : 32h + 32] give the top bits of values 0-31, 32-63, 64-95 and 96-127.
    value = d * scale[i // 16] * (q - 32), q = 0..63.
    """
    n_blocks = blocks.shape[0]
    low = _unpack(blocks[:, :128], bits=4, group=64)
    high = _unpack(blocks[:, 128:192], bits=2, group=32)
    q = ((low | (high << 4)).to(torch.int8) - 32).to(torch.float32)
    scales = blocks[:, 192:208].view(torch.int8).to(torch.float32)
    step = (_f16(blocks[:, 208:210]) * scales).unsqueeze(-1)  # (n_blocks, 16, 1)
    return q.view(n_blocks, 16, 16).mul_(step).reshape(n_blocks, QK_K)


def _dequantize_q2_k(blocks: torch.Tensor) -> torch.Tensor:
    """Q2_K, 256 values in 84 bytes: sixteen 16-value sub-blocks.

    Bytes: 16 bytes of scales (low nibble: scale, high nibble: min, one byte per
    sub-block), 64 bytes of 2-bit q, f16 d, f16 dmin. The q bytes are two halves of 32;
    the four 2-bit fields of byte j of half h give values j, j + 32, j + 64, j + 96 of
    that half's 128.
    value = d * scale[s] * q - dmin * min[s], q = 0..3.
    """
    n_blocks = blocks.shape[0]
    packed_scales = blocks[:, :16]
    q = _unpack(blocks[:, 16:80], bits=2, group=32).to(torch.float32)
    step = (_f16(blocks[:, 80:82]) * (packed_scales & 15).to(torch.float32)).unsqueeze(-1)
    offset = (_f16(blocks[:, 82:84]) * (packed_scales >> 4).to(torch.float32)).unsqueeze(-1)
    return q.view(n_blocks, 16, 16).mul_(step).sub_(offset).reshape(n_blocks, QK_K)


def _dequantize_q3_k(blocks: torch.Tensor) -> torch.Tensor:
    """Q3_K, 256 values in 110 bytes: sixteen 16-value sub-blocks, no offsets.

    Bytes: 32 bytes hmask, 64 bytes of 2-bit low parts (laid out as in Q2_K), 12 bytes of
    6-bit scales, f16 d. Bit s of hmask[j] belongs to value 32s + j; when it is *clear*
    the value is shifted down by 4, so q = low - 4 * (1 - bit) lies in -4..3.
    Scale i takes its low 4 bits from byte i (i < 8, low nibble) or byte i - 8 (high
    nibble), and its top 2 bits from bits 2(i // 4) of byte 8 + i % 4; it is stored
    with a bias of 32.
    value = d * (scale[i // 16] - 32) * q
    """
    n_blocks = blocks.shape[0]
    high = _unpack(blocks[:, :32], bits=1, group=32)
    low = _unpack(blocks[:, 32:96], bits=2, group=32)
    q = (low.to(torch.int8) - ((high ^ 1) << 2).to(torch.int8)).to(torch.float32)
    scale_low = _unpack(blocks[:, 96:104], bits=4, group=8)
    scale_high = _unpack(blocks[:, 104:108], bits=2, group=4)
    scales = ((scale_low | (scale_high << 4)).to(torch.int8) - 32).to(torch.float32)
    step = (_f16(blocks[:, 108:110]) * scales).unsqueeze(-1)  # (n_blocks, 16, 1)
    return q.view(n_blocks, 16, 16).mul_(step).reshape(n_blocks, QK_K)


_DECODERS: dict[GGMLType, Callable[[torch.Tensor], torch.Tensor]] = {
    GGMLType.F32: _dequantize_f32,
    GGMLType.F16: _dequantize_f16,
    GGMLType.BF16: _dequantize_bf16,
    GGMLType.Q8_0: _dequantize_q8_0,
    GGMLType.Q4_0: _dequantize_q4_0,
    GGMLType.Q4_1: _dequantize_q4_1,
    GGMLType.Q5_0: _dequantize_q5_0,
    GGMLType.Q5_1: _dequantize_q5_1,
    GGMLType.Q2_K: _dequantize_q2_k,
    GGMLType.Q3_K: _dequantize_q3_k,
    GGMLType.Q4_K: _dequantize_q4_k,
    GGMLType.Q5_K: _dequantize_q5_k,
    GGMLType.Q6_K: _dequantize_q6_k,
}

SUPPORTED_TYPES: tuple[GGMLType, ...] = tuple(_DECODERS)
"""The types `dequantize` can decode."""


def _as_byte_tensor(data: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Flat uint8 tensor over the same memory, without a copy."""
    if isinstance(data, torch.Tensor):
        return data.reshape(-1).view(torch.uint8)
    flat = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    with warnings.catch_warnings():
        # A memory-mapped file is read-only; torch warns because it cannot enforce that.
        # Every decoder only reads its input and returns new memory, so this is safe.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(flat)


def dequantize(
    data: np.ndarray | torch.Tensor, ggml_type: GGMLType | int, shape: tuple[int, ...]
) -> torch.Tensor:
    """Decode a tensor's raw bytes into a new float32 tensor of `shape` (row-major order).

    data: the tensor's bytes as stored in the file (any array over them; it is read as
    uint8). Raises LLMHoodError for a type llmhood cannot decode.
    """
    ggml_type = GGMLType(ggml_type)
    decoder = _DECODERS.get(ggml_type)
    if decoder is None:
        supported = ", ".join(t.name for t in SUPPORTED_TYPES)
        raise LLMHoodError(
            f"llmhood cannot dequantize ggml type {ggml_type.name} (type id "
            f"{int(ggml_type)}); it decodes {supported}. Use a model file quantized to one of "
            "those types (for example re-quantize with llama.cpp's llama-quantize to Q4_K_M "
            "or Q8_0)."
        )
    raw = _as_byte_tensor(data)
    expected = tensor_nbytes(ggml_type, shape)
    if raw.numel() != expected:
        raise ValueError(
            f"{ggml_type.name} tensor of shape {shape} needs {expected} bytes, got {raw.numel()}"
        )
    type_size = BLOCK_SIZES[ggml_type][1]
    blocks = raw.view(-1, type_size)  # (n_blocks, type_size)
    return decoder(blocks).reshape(shape)
