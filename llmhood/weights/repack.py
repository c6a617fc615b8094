"""GGUF blocks straight into int4 weights, without a trip through float.

Dequantizing a Q4_1 tensor and quantizing it again would land on the same codes only if
the rounding happened to come out the same way; reading the codes, scales and offsets from
the blocks makes the int4 weight the file's own numbers (llmhood.model.fast.quantized explains
the mapping). Block layouts are those of llmhood.weights.quants.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmhood.model.fast.quantized import GROUP_SIZE, Int4Weight
from llmhood.weights.gguf import GGUFFile, read_gguf
from llmhood.weights.gguf_llama import llmhood_name
from llmhood.weights.quants import BLOCK_SIZES, GGMLType, _as_byte_tensor, q4_1_fields, q8_0_fields


def q4_1_weight(raw: torch.Tensor, shape: tuple[int, int]) -> Int4Weight:
    """A Q4_1 tensor's bytes (any shape, uint8) -> its Int4Weight; shape (out, in)."""
    d, m, q = q4_1_fields(raw.reshape(-1, BLOCK_SIZES[GGMLType.Q4_1][1]))
    groups = (shape[0], shape[1] // GROUP_SIZE)
    return Int4Weight.from_q4_1(d.reshape(groups), m.reshape(groups), q.reshape(shape))


def q8_0_weight(raw: torch.Tensor, shape: tuple[int, int]) -> Int4Weight:
    """A Q8_0 tensor's bytes -> the two-halves Int4Weight of shape (out, 2·in)."""
    d, q = q8_0_fields(raw.reshape(-1, BLOCK_SIZES[GGMLType.Q8_0][1]))
    return Int4Weight.from_q8_0(d.reshape(shape[0], shape[1] // GROUP_SIZE), q.reshape(shape))


def gguf_int4_weights(source: str | Path | GGUFFile) -> dict[str, Int4Weight]:
    """Every 2-D Q4_1 or Q8_0 tensor of a Llama GGUF file, by llmhood name, as Int4Weight.

    Q8_0 tensors come as two halves (shape (out, 2·in)); other types are left out.
    """
    gguf = source if isinstance(source, GGUFFile) else read_gguf(source)
    repack = {GGMLType.Q4_1: q4_1_weight, GGMLType.Q8_0: q8_0_weight}
    weights = {}
    for name, info in gguf.tensors.items():
        ours = llmhood_name(name)
        if ours is None or info.ggml_type not in repack or len(info.shape) != 2:
            continue
        weights[ours] = repack[info.ggml_type](_as_byte_tensor(gguf.raw(name)), info.shape)
    return weights
