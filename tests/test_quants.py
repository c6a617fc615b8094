"""Our dequantizers against gguf-py's (`gguf.quants.dequantize`), bit for bit."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from llmhood.errors import LLMHoodError
from llmhood.weights.quants import BLOCK_SIZES, SUPPORTED_TYPES, GGMLType, dequantize

# Byte offsets of the f16 scales (d, and dmin/m where the type has one) inside one block,
# from ggml's block structs. Random bytes there would often be inf/NaN; the tests put
# finite values there and leave every other byte random.
F16_SCALE_OFFSETS = {
    GGMLType.Q4_0: (0,),
    GGMLType.Q4_1: (0, 2),
    GGMLType.Q5_0: (0,),
    GGMLType.Q5_1: (0, 2),
    GGMLType.Q8_0: (0,),
    GGMLType.Q2_K: (80, 82),
    GGMLType.Q3_K: (108,),
    GGMLType.Q4_K: (0, 2),
    GGMLType.Q5_K: (0, 2),
    GGMLType.Q6_K: (208,),
}
QUANTIZABLE_BY_GGUF = [
    GGMLType.F16,
    GGMLType.BF16,
    GGMLType.Q8_0,
    GGMLType.Q4_0,
    GGMLType.Q4_1,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
]


def reference(data: np.ndarray, ggml_type: GGMLType) -> np.ndarray:
    return gguf.quants.dequantize(data, gguf.GGMLQuantizationType(int(ggml_type)))


def random_blocks(
    rng: np.random.Generator, ggml_type: GGMLType, rows: int, blocks_per_row: int
) -> np.ndarray:
    """(rows, blocks_per_row * type_size) random uint8 with finite f16 scales."""
    type_size = BLOCK_SIZES[ggml_type][1]
    blocks = rng.integers(0, 256, size=(rows * blocks_per_row, type_size), dtype=np.uint8)
    for offset in F16_SCALE_OFFSETS[ggml_type]:
        scales = rng.uniform(-2.0, 2.0, size=(len(blocks), 1)).astype(np.float16)
        blocks[:, offset : offset + 2] = scales.view(np.uint8)
    return blocks.reshape(rows, -1)


def test_every_supported_type_is_covered_here():
    assert set(SUPPORTED_TYPES) == {GGMLType.F32, *F16_SCALE_OFFSETS, *QUANTIZABLE_BY_GGUF}


@pytest.mark.parametrize("ggml_type", QUANTIZABLE_BY_GGUF, ids=lambda t: t.name)
def test_quantized_floats_match_gguf(ggml_type):
    rng = np.random.default_rng(int(ggml_type))
    rows, cols = 5, 256
    # Rows of very different magnitude, so the block scales differ by orders of magnitude.
    floats = rng.standard_normal((rows, cols)).astype(np.float32)
    floats *= np.logspace(-3, 2, rows, dtype=np.float32)[:, None]
    data = gguf.quants.quantize(floats, gguf.GGMLQuantizationType(int(ggml_type)))
    data = data.view(np.uint8)

    want = reference(data, ggml_type)
    got = dequantize(data, ggml_type, (rows, cols))

    assert got.dtype == torch.float32
    assert got.shape == want.shape == (rows, cols)
    assert np.array_equal(got.numpy(), want)
    assert np.isfinite(want).all()


@pytest.mark.parametrize("ggml_type", list(F16_SCALE_OFFSETS), ids=lambda t: t.name)
@pytest.mark.parametrize("rows", [1, 3])
def test_random_blocks_match_gguf(ggml_type, rows):
    rng = np.random.default_rng(100 + int(ggml_type) + rows)
    block_size = BLOCK_SIZES[ggml_type][0]
    data = random_blocks(rng, ggml_type, rows, blocks_per_row=4)

    want = reference(data, ggml_type)
    got = dequantize(data, ggml_type, (rows, 4 * block_size))

    assert np.isfinite(want).all()
    assert got.shape == want.shape
    assert np.array_equal(got.numpy(), want)


def test_three_dimensional_shape():
    rng = np.random.default_rng(7)
    data = random_blocks(rng, GGMLType.Q4_K, rows=6, blocks_per_row=1)
    got = dequantize(data, GGMLType.Q4_K, (2, 3, 256))
    assert np.array_equal(got.numpy(), reference(data, GGMLType.Q4_K).reshape(2, 3, 256))


def test_f32_is_copied_not_aliased():
    """The input of a real load is a read-only memory map, so the result must own its memory."""
    floats = np.arange(8, dtype=np.float32)
    got = dequantize(floats.view(np.uint8), GGMLType.F32, (2, 4))
    got += 1
    assert np.array_equal(floats, np.arange(8, dtype=np.float32))
    assert np.array_equal(got.numpy().ravel(), floats + 1)


def test_torch_bytes_in():
    rng = np.random.default_rng(8)
    data = random_blocks(rng, GGMLType.Q6_K, rows=2, blocks_per_row=1)
    got = dequantize(torch.from_numpy(data), GGMLType.Q6_K, (2, 256))
    assert np.array_equal(got.numpy(), reference(data, GGMLType.Q6_K))


def test_bf16_every_bit_pattern_matches_gguf():
    bits = np.arange(1 << 16, dtype=np.uint16)
    want = reference(bits.view(np.uint8).reshape(1, -1), GGMLType.BF16).view(np.uint32)
    got = dequantize(bits.view(np.uint8), GGMLType.BF16, (1 << 16,)).numpy().view(np.uint32)
    assert np.array_equal(got, want.ravel())


def test_f16_every_bit_pattern_matches_gguf():
    """Equal bits everywhere; for NaN inputs both give NaN (torch sets the quiet bit of a
    signalling NaN, numpy keeps it, so NaN bits may differ there)."""
    bits = np.arange(1 << 16, dtype=np.uint16)
    want = reference(bits.view(np.uint8), GGMLType.F16)
    got = dequantize(bits.view(np.uint8), GGMLType.F16, (1 << 16,)).numpy()
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert nan.sum() == 2 * 1023
    assert np.array_equal(got[~nan].view(np.uint32), want[~nan].view(np.uint32))


def test_unsupported_type_is_named_with_the_alternatives():
    with pytest.raises(LLMHoodError) as error:
        dequantize(np.zeros(66, dtype=np.uint8), GGMLType.IQ2_XXS, (256,))
    message = str(error.value)
    assert "IQ2_XXS" in message and "16" in message
    for supported in ("Q4_K", "Q8_0", "F16"):
        assert supported in message


def test_block_sizes_match_gguf():
    for gguf_type, sizes in gguf.GGML_QUANT_SIZES.items():
        ours = GGMLType(int(gguf_type))
        assert ours.name == gguf_type.name
        if ours == GGMLType.Q8_1:
            # ggml's block_q8_1 is two f16 and 32 int8 (static_assert'ed 36 bytes in
            # ggml-common.h); gguf-py still lists an old f32 layout of 40 bytes.
            assert sizes == (32, 40) and BLOCK_SIZES[ours] == (32, 36)
        else:
            assert BLOCK_SIZES[ours] == sizes
