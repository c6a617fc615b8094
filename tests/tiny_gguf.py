"""A tiny random Llama written as a GGUF file the way llama.cpp writes SmolLM2: Q4_1 blocks
for the linear layers, a Q8_0 tied embedding, float32 norms and SmolLM2's own tokenizer.

Every engine reads it (llmhood, transformers, llama.cpp), so the speed modes and the
benchmark can be tested end to end in seconds. Written with the `gguf` package, the
reference writer, not with llmhood's code.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from llmhood.weights.gguf import read_gguf

DIM, LAYERS, HEADS, KV_HEADS, HIDDEN, CONTEXT = 64, 2, 4, 2, 128, 256
TOKENIZER_KEYS = (
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token", "tokenizer.chat_template",
)  # fmt: skip
V = gguf.GGUFValueType
TYPES = {
    "tokenizer.ggml.tokens": (V.ARRAY, V.STRING),
    "tokenizer.ggml.merges": (V.ARRAY, V.STRING),
    "tokenizer.ggml.token_type": (V.ARRAY, V.INT32),
    "tokenizer.ggml.add_bos_token": (V.BOOL, None),
}


def write_tiny_gguf(
    path: Path, smollm2_gguf: Path, seed: int = 0, extra: dict | None = None
) -> Path:
    """`extra`: more metadata, {key: (value, GGUFValueType)}."""
    metadata = read_gguf(smollm2_gguf).metadata
    vocab = len(metadata["tokenizer.ggml.tokens"])
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(DIM)
    writer.add_feed_forward_length(HIDDEN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(DIM // HEADS)
    writer.add_vocab_size(vocab)
    for key in TOKENIZER_KEYS:
        value = metadata[key]
        vtype, sub = TYPES.get(key, (V.STRING if isinstance(value, str) else V.UINT32, None))
        writer.add_key_value(key, value, vtype, sub_type=sub)
    for key, (value, vtype) in (extra or {}).items():
        writer.add_key_value(key, value, vtype)

    def add(name: str, shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType) -> None:
        if len(shape) == 1:
            writer.add_tensor(name, (1 + 0.1 * rng.standard_normal(shape)).astype(np.float32))
            return
        values = (rng.standard_normal(shape) * 0.5 / np.sqrt(shape[1])).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)

    q = gguf.GGMLQuantizationType
    head_dim = DIM // HEADS
    add("token_embd.weight", (vocab, DIM), q.Q8_0)
    add("output_norm.weight", (DIM,), q.F32)
    for i in range(LAYERS):
        add(f"blk.{i}.attn_norm.weight", (DIM,), q.F32)
        add(f"blk.{i}.attn_q.weight", (DIM, DIM), q.Q4_1)
        add(f"blk.{i}.attn_k.weight", (KV_HEADS * head_dim, DIM), q.Q4_1)
        add(f"blk.{i}.attn_v.weight", (KV_HEADS * head_dim, DIM), q.Q4_1)
        add(f"blk.{i}.attn_output.weight", (DIM, DIM), q.Q4_1)
        add(f"blk.{i}.ffn_norm.weight", (DIM,), q.F32)
        add(f"blk.{i}.ffn_gate.weight", (HIDDEN, DIM), q.Q4_1)
        add(f"blk.{i}.ffn_up.weight", (HIDDEN, DIM), q.Q4_1)
        add(f"blk.{i}.ffn_down.weight", (DIM, HIDDEN), q.Q4_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
