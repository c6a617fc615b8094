"""A Llama model from a GGUF file: llama.cpp's tensor names mapped onto ours.

llama.cpp's converter permutes W_q and W_k of Hugging Face checkpoints back into Meta's
interleaved RoPE layout before writing GGUF, so the tensors load as stored and the model
runs the complex RoPE form (config.rope_style = "interleaved"). Quantized tensors are
dequantized to float once, at load time; the model then computes in the chosen dtype.
"""

from __future__ import annotations

import re
from collections.abc import Container
from pathlib import Path

import torch
from tqdm import tqdm

from llmhood.errors import LLMHoodError
from llmhood.model.config import ModelConfig
from llmhood.tokenizer import BPETokenizer
from llmhood.weights.checkpoint import Checkpoint
from llmhood.weights.gguf import GGUFFile, read_gguf

_GLOBAL_NAMES = {
    "token_embd.weight": "tok_embeddings.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "output.weight",
}
_BLOCK_NAMES = {
    "attn_norm": "attention_norm",
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_norm": "ffn_norm",
    "ffn_gate": "feed_forward.w1",
    "ffn_up": "feed_forward.w3",
    "ffn_down": "feed_forward.w2",
}
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.weight")
# llama.cpp's keys for the sampling settings a model's authors recommend.
_SAMPLING_KEYS = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_k": "top_k",
    "general.sampling.top_p": "top_p",
    "general.sampling.min_p": "min_p",
    "general.sampling.penalty_repeat": "repetition_penalty",
}


def llmhood_name(gguf_name: str) -> str | None:
    """`blk.3.attn_q.weight` -> `layers.3.attention.wq.weight`; None for tensors we do not use."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _BLOCK.fullmatch(gguf_name)
    if match and match.group(2) in _BLOCK_NAMES:
        return f"layers.{match.group(1)}.{_BLOCK_NAMES[match.group(2)]}.weight"
    return None


def read_gguf_checkpoint(
    source: str | Path | GGUFFile, progress: bool = True, raw: Container[str] = ()
) -> Checkpoint:
    """`source`: a path, or a file already parsed (a caller that also reads its blocks).
    `raw`: llmhood names that a caller repacks from the file's blocks itself; they are not
    dequantized and their state-dict entries are shape-only (meta device) tensors."""
    gguf = source if isinstance(source, GGUFFile) else read_gguf(source)
    path = gguf.path
    config = ModelConfig.from_gguf(gguf.metadata, has_output_tensor="output.weight" in gguf.tensors)
    unknown = [n for n in gguf.tensors if llmhood_name(n) is None]
    if unknown:
        raise LLMHoodError(
            f"{path} holds tensors that a plain Llama does not have ({', '.join(unknown[:5])}); "
            "llmhood cannot run this model (RoPE frequency tables, biases and mixtures of experts "
            "are not supported yet)."
        )
    state_dict = {}
    names = [n for n in gguf.tensors if llmhood_name(n) is not None]
    for name in tqdm(names, desc="dequantizing", unit="tensor", disable=not progress, leave=False):
        ours = llmhood_name(name)
        shape = gguf.tensors[name].shape
        state_dict[ours] = torch.empty(shape, device="meta") if ours in raw else gguf.load(name)
    tokenizer = BPETokenizer.from_gguf(gguf.metadata)
    sampling = {ours: gguf.metadata[key] for key, ours in _SAMPLING_KEYS.items()
                if isinstance(gguf.metadata.get(key), int | float)}  # fmt: skip
    return Checkpoint(config, state_dict, tokenizer, f"{path} (GGUF)", sampling)
