"""int4/int8 weights and layers against independent references: gguf's dequantizer for the
repacked GGUF blocks, and float matmuls with the dequantized weights for the kernels."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

from llmhood.errors import LLMHoodError
from llmhood.model.fast.quantized import (
    Int4Linear,
    Int4Weight,
    Int8Linear,
    Int8Weight,
    check_int4_shape,
    int4_kernel_only,
)
from llmhood.weights.gguf import read_gguf
from llmhood.weights.repack import gguf_int4_weights, q4_1_weight, q8_0_weight

Q = gguf.GGMLQuantizationType


def gguf_blocks(values: np.ndarray, qtype: Q) -> tuple[torch.Tensor, np.ndarray]:
    """`values` quantized by gguf, as raw bytes, and gguf's own dequantization of them."""
    raw = gguf.quants.quantize(values, qtype)
    return torch.from_numpy(raw.copy()).reshape(-1), gguf.quants.dequantize(raw, qtype)


def weights(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_q4_1_repack_is_exact():
    raw, want = gguf_blocks(weights((32, 128)), Q.Q4_1)
    w = q4_1_weight(raw, (32, 128))
    assert w.codes.dtype == torch.uint8 and int(w.codes.max()) <= 15
    assert np.array_equal(w.dequantize().numpy(), want)  # bit for bit


def test_q8_0_as_two_int4_halves_is_exact():
    raw, want = gguf_blocks(weights((16, 64)), Q.Q8_0)
    w = q8_0_weight(raw, (16, 64))
    assert w.shape == (16, 128) and int(w.codes.max()) <= 15
    halves = w.dequantize()
    assert np.array_equal((halves[:, :64] + halves[:, 64:]).numpy(), want)


@pytest.mark.real
def test_real_q4_1_and_q8_0_blocks_repack_exactly(smollm2_gguf):
    file = read_gguf(smollm2_gguf)
    repacked = gguf_int4_weights(file)
    reader = gguf.GGUFReader(smollm2_gguf)
    tensors = {t.name: t for t in reader.tensors}
    for ours, theirs in (
        ("layers.0.attention.wq.weight", "blk.0.attn_q.weight"),
        ("layers.29.feed_forward.w2.weight", "blk.29.ffn_down.weight"),
        ("tok_embeddings.weight", "token_embd.weight"),
    ):
        want = gguf.quants.dequantize(tensors[theirs].data, tensors[theirs].tensor_type)
        got = repacked[ours].dequantize()
        if got.shape[1] == 2 * want.shape[1]:  # Q8_0: the two halves add up to the weight
            got = got[:, : want.shape[1]] + got[:, want.shape[1] :]
        assert np.array_equal(got.numpy(), want), ours
    assert len(repacked) == 30 * 7 + 1


def test_quantize_recovers_q4_1_codes():
    """Re-quantizing a dequantized Q4_1 tensor lands on the file's codes: what makes int4 of a
    float source of Q4_1 values as good as repacking."""
    raw, want = gguf_blocks(weights((16, 64), seed=3), Q.Q4_1)
    again = Int4Weight.quantize(torch.from_numpy(want))
    assert torch.equal(again.codes, q4_1_weight(raw, (16, 64)).codes)
    torch.testing.assert_close(again.dequantize(), torch.from_numpy(want), atol=1e-6, rtol=0)


def assert_close_to(got: torch.Tensor, want: torch.Tensor, rel: float) -> None:
    """Equal up to `rel` of the largest output: bf16 rounds each output to 3 digits, and a
    small output may be the difference of large products."""
    assert got.shape == want.shape
    assert float((got.float() - want).abs().max()) <= rel * float(want.abs().max())


def bf16_rounded(w: Int4Weight) -> torch.Tensor:
    """The weight the kernel multiplies by: scale and zero rounded to bf16."""
    rounded = Int4Weight(w.codes, w.scale.bfloat16().float(), w.zero.bfloat16().float())
    return rounded.dequantize()


@pytest.mark.parametrize("rows", [1, 3, 17])
def test_int4_linear_equals_the_dequantized_weight(rows):
    torch.manual_seed(0)
    w = Int4Weight.quantize(torch.randn(48, 96))
    layer = Int4Linear.from_weight(w)
    x = torch.randn(2, rows, 96).bfloat16()
    got = layer(x)
    assert got.shape == (2, rows, 48) and got.dtype == torch.bfloat16
    assert_close_to(got, x.float() @ bf16_rounded(w).T, 1e-2)


def test_int4_head_from_q8_0_halves():
    raw, want = gguf_blocks(weights((32, 64), seed=1), Q.Q8_0)
    w = q8_0_weight(raw, (32, 64))
    layer = Int4Linear.from_weight(w, repeat_input=2)
    assert layer.in_features == 64
    x = torch.randn(5, 64).bfloat16()
    halves = bf16_rounded(w)  # d in bf16; 16d and 8d are then exact too
    assert_close_to(layer(x), x.float() @ (halves[:, :64] + halves[:, 64:]).T, 1e-2)
    assert_close_to(layer(x), x.float() @ torch.from_numpy(want).T, 2e-2)


def test_dense_copy_serves_many_rows_and_equals_the_kernel():
    torch.manual_seed(0)
    w = Int4Weight.quantize(torch.randn(32, 64))
    layer = Int4Linear.from_weight(w, dense=True)
    assert layer.dense is not None and layer.dense.dtype == torch.bfloat16
    many = torch.randn(layer.dense_rows, 64).bfloat16()
    dense = layer(many)
    with int4_kernel_only(layer):
        kernel = layer(many)
    assert layer.dense_rows < 100  # restored
    assert_close_to(dense, kernel.float(), 2e-2)
    assert_close_to(dense, many.float() @ w.dequantize().bfloat16().float().T, 1e-2)


def test_int8_linear_equals_the_dequantized_weight():
    torch.manual_seed(0)
    w = torch.randn(24, 48)
    q = Int8Weight.quantize(w)
    assert q.codes.dtype == torch.int8 and int(q.codes.abs().max()) == 127
    torch.testing.assert_close(q.dequantize(), w, atol=float(q.scale.max()) / 2 + 1e-6, rtol=0)
    layer = Int8Linear.from_weight(q)
    x = torch.randn(3, 48).bfloat16()
    assert_close_to(
        layer(x), x.float() @ (q.codes.float() * q.scale.bfloat16().float()[:, None]).T, 1e-2
    )


def test_cat_stacks_output_rows():
    a, b = Int4Weight.quantize(torch.randn(16, 32)), Int4Weight.quantize(torch.randn(32, 32))
    both = Int4Weight.cat([a, b])
    assert both.shape == (48, 32)
    assert torch.equal(both.dequantize(), torch.cat([a.dequantize(), b.dequantize()]))


def test_shapes_the_kernel_cannot_take_are_refused():
    with pytest.raises(LLMHoodError, match="multiple of 16"):
        check_int4_shape(24, 64)
    with pytest.raises(LLMHoodError, match="multiple of 32"):
        Int4Linear.from_weight(Int4Weight.quantize(torch.randn(16, 48), group_size=16))
    with pytest.raises(LLMHoodError, match="multiple of 16"):
        Int8Linear.from_weight(Int8Weight.quantize(torch.randn(16, 40)))
