"""Writing GGUF: a model as the one file llama.cpp runs, and a LoRA adapter to go beside one.

The layout is the one gguf.py reads, version 3, little-endian:

    magic "GGUF" | version 3 | tensor count u64 | metadata count u64
    metadata:     key string | value type u32 | value                     (repeated)
    tensor infos: name string | n_dims u32 | ne u64 * n_dims | ggml type u32 | offset u64
    zero padding to `general.alignment` (32, written out rather than left to the default)
    tensor data:  each tensor at its offset from the data start, padded to the alignment

Every key has the type llama.cpp reads it as (it checks: a u32 key written as i32 fails to
load), so the standard keys carry their types here; keys a caller adds get theirs from the
Python value (bool, int as i32 or i64, float as f32, str, or a list of one of these).

Which type each tensor gets follows llama.cpp's converter (convert_hf_to_gguf.py): 1-D
tensors (the norms) stay F32, since ggml reads norm gains as F32 and they are a rounding
error of the file size; 2-D weights take the file type. Q8_0 cuts each row into blocks of
32, so a weight whose rows are not whole blocks falls back to F16, as llama.cpp's does.

GGUF stores W_q and W_k rows in the interleaved RoPE layout (llama.cpp's converter permutes
Hugging Face's half layout back into Meta's), and gguf_llama.py loads them as stored; so
a model is exported in the "interleaved" layout whatever its own rope_style, which makes
reading the exact inverse of writing.

A LoRA adapter is a GGUF of its own, in the convention of llama.cpp's
convert_lora_to_gguf.py (see write_gguf_lora): the pairs A, B under the base tensor's name
plus `.lora_a` / `.lora_b`, and alpha in the metadata, so llama.cpp applies it at run time
over any base file of the same model, quantized or not.

A file is written under a temporary name in the target's directory and renamed over the
target at the end. `os.replace` is atomic within one file system, so a crash leaves either
the old file or none under the final name, never half of a new one, and a model still
memory-mapped from the old file keeps reading the old bytes.
"""

from __future__ import annotations

import math
import os
import secrets
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from tqdm import tqdm

from llmhood.errors import LLMHoodError
from llmhood.model.config import ModelConfig, RopeStyle
from llmhood.model.rope import half_to_interleaved
from llmhood.model.rope_scaling import ntk_base
from llmhood.model.transformer import Transformer
from llmhood.tokenizer.bpe import _GGUF_PRE_TOKENIZERS, BPETokenizer
from llmhood.weights.checkpoint import export_state_dict
from llmhood.weights.gguf import _SCALAR_DTYPES, GGUF_MAGIC, GGUFValueType, read_gguf
from llmhood.weights.gguf_llama import _BLOCK_NAMES, _GLOBAL_NAMES, _SAMPLING_KEYS, llmhood_name
from llmhood.weights.quants import GGMLType, tensor_nbytes

VERSION = 3
ALIGNMENT = 32
Q8_0_BLOCK = 32
GGML_QUANT_VERSION = 2
"""The revision of ggml's block layouts (`general.quantization_version`); Q8_0 is in it."""
_CHUNK_BLOCKS = 1 << 14
"""Q8_0 blocks quantized at a time: 2 MB of float32, which stays in the CPU's cache."""

_V = GGUFValueType


class LlamaFileType(IntEnum):
    """llama.cpp's `general.file_type`: what most of the weights are stored as."""

    ALL_F32 = 0
    MOSTLY_F16 = 1
    MOSTLY_Q8_0 = 7


FILE_TYPES: dict[str, tuple[GGMLType, LlamaFileType]] = {
    "f32": (GGMLType.F32, LlamaFileType.ALL_F32),
    "f16": (GGMLType.F16, LlamaFileType.MOSTLY_F16),
    "q8_0": (GGMLType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}


class TokenType(IntEnum):
    """llama.cpp's `tokenizer.ggml.token_type` values (the ones a byte-level BPE uses)."""

    NORMAL = 1
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5


# The types llama.cpp reads the standard keys as. A caller's override of one of these keys
# is checked against its type rather than typed from the Python value.
_KEY_TYPES: dict[str, tuple[GGUFValueType, GGUFValueType | None]] = {
    "general.architecture": (_V.STRING, None),
    "general.type": (_V.STRING, None),
    "general.name": (_V.STRING, None),
    "general.file_type": (_V.UINT32, None),
    "general.quantization_version": (_V.UINT32, None),
    "general.alignment": (_V.UINT32, None),
    "general.base_model.count": (_V.UINT32, None),
    "llama.context_length": (_V.UINT32, None),
    "llama.embedding_length": (_V.UINT32, None),
    "llama.block_count": (_V.UINT32, None),
    "llama.feed_forward_length": (_V.UINT32, None),
    "llama.attention.head_count": (_V.UINT32, None),
    "llama.attention.head_count_kv": (_V.UINT32, None),
    "llama.attention.layer_norm_rms_epsilon": (_V.FLOAT32, None),
    "llama.rope.freq_base": (_V.FLOAT32, None),
    "llama.rope.dimension_count": (_V.UINT32, None),
    "llama.vocab_size": (_V.UINT32, None),
    "llama.rope.scaling.type": (_V.STRING, None),
    "llama.rope.scaling.factor": (_V.FLOAT32, None),
    "llama.rope.scaling.original_context_length": (_V.UINT32, None),
    "llama.rope.scaling.yarn_beta_fast": (_V.FLOAT32, None),
    "llama.rope.scaling.yarn_beta_slow": (_V.FLOAT32, None),
    "tokenizer.ggml.model": (_V.STRING, None),
    "tokenizer.ggml.pre": (_V.STRING, None),
    "tokenizer.ggml.tokens": (_V.ARRAY, _V.STRING),
    "tokenizer.ggml.token_type": (_V.ARRAY, _V.INT32),
    "tokenizer.ggml.merges": (_V.ARRAY, _V.STRING),
    "tokenizer.ggml.bos_token_id": (_V.UINT32, None),
    "tokenizer.ggml.eos_token_id": (_V.UINT32, None),
    "tokenizer.ggml.padding_token_id": (_V.UINT32, None),
    "tokenizer.ggml.add_bos_token": (_V.BOOL, None),
    "tokenizer.chat_template": (_V.STRING, None),
    "general.sampling.temp": (_V.FLOAT32, None),
    "general.sampling.top_k": (_V.INT32, None),
    "general.sampling.top_p": (_V.FLOAT32, None),
    "general.sampling.min_p": (_V.FLOAT32, None),
    "general.sampling.penalty_repeat": (_V.FLOAT32, None),
    "adapter.type": (_V.STRING, None),
    "adapter.lora.alpha": (_V.FLOAT32, None),
}
# Keys that describe the tensors or the format itself: overriding one would make a file that
# contradicts its own contents, so they come from the model and tokenizer only.
_DERIVED_KEYS = frozenset({
    "general.architecture", "general.type", "general.file_type", "general.quantization_version",
    "general.alignment", "llama.embedding_length", "llama.block_count",
    "llama.feed_forward_length", "llama.attention.head_count", "llama.attention.head_count_kv",
    "llama.rope.dimension_count", "llama.vocab_size", "tokenizer.ggml.model",
    "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
    "adapter.type", "adapter.lora.alpha",
})  # fmt: skip
_INT_RANGES = {
    _V.UINT8: (0, 1 << 8), _V.INT8: (-(1 << 7), 1 << 7),
    _V.UINT16: (0, 1 << 16), _V.INT16: (-(1 << 15), 1 << 15),
    _V.UINT32: (0, 1 << 32), _V.INT32: (-(1 << 31), 1 << 31),
    _V.UINT64: (0, 1 << 64), _V.INT64: (-(1 << 63), 1 << 63),
}  # fmt: skip
_F16_LIMIT = 65520.0
"""The smallest magnitude float16 rounds to infinity (65504 is its largest finite value)."""
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_OUR_GLOBAL_NAMES = {ours: theirs for theirs, ours in _GLOBAL_NAMES.items()}
_OUR_BLOCK_NAMES = {ours: theirs for theirs, ours in _BLOCK_NAMES.items()}
_PROJECTIONS = ("attention.wq", "attention.wk", "attention.wv", "attention.wo",
                "feed_forward.w1", "feed_forward.w3", "feed_forward.w2")  # fmt: skip
_SAMPLING_NAMES = {ours: key for key, ours in _SAMPLING_KEYS.items()}


def gguf_name(name: str) -> str:
    """`layers.3.attention.wq.weight` -> `blk.3.attn_q.weight`: gguf_llama's names, inverted."""
    if name in _OUR_GLOBAL_NAMES:
        return _OUR_GLOBAL_NAMES[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit():
        module = parts[2].removesuffix(".weight")
        if parts[2].endswith(".weight") and module in _OUR_BLOCK_NAMES:
            return f"blk.{parts[1]}.{_OUR_BLOCK_NAMES[module]}.weight"
    raise LLMHoodError(
        f"{name} is not a tensor of a plain Llama, so GGUF has no name for it. A model with "
        "LoRA adapters must be merged first (llmhood.train.lora.merge), or its adapters written "
        "with write_gguf_lora; a model in a fast mode must be loaded with dtype='float32'."
    )


def sampling_metadata(sampling: Mapping[str, float]) -> dict[str, float]:
    """A checkpoint's recommended sampling (`Checkpoint.sampling`, in SamplingParams' names)
    as the `general.sampling.*` keys llama.cpp reads, for write_gguf's `metadata`."""
    unknown = sorted(set(sampling) - _SAMPLING_NAMES.keys())
    if unknown:
        raise LLMHoodError(
            f"GGUF has no key for the sampling setting(s) {', '.join(unknown)}; it records "
            f"{', '.join(_SAMPLING_NAMES)}."
        )
    return {_SAMPLING_NAMES[name]: value for name, value in sampling.items()}


# ---- quantization -------------------------------------------------------------------------


def quantize_q8_0(x: torch.Tensor) -> torch.Tensor:
    """Q8_0 blocks of `x` (..., k), k a multiple of 32: uint8 (numel // 32 * 34,).

    Each block of 32 stores d = absmax/127 as f16 and q = round(x/d) as int8, computed as
    ggml's reference quantizer does so that the bytes are llama.cpp's own: in float32, x
    times the reciprocal 1/d (d itself before its f16 rounding; 0 for an all-zero block),
    rounded half away from zero (C's roundf), not half to even as torch.round does. The
    blocks go in chunks that stay in the CPU's cache, each step in place: a fresh
    whole-tensor buffer per step costs more in page faults than the arithmetic.
    """
    if x.ndim == 0 or x.shape[-1] % Q8_0_BLOCK:
        raise LLMHoodError(
            f"Q8_0 quantizes rows of whole blocks of {Q8_0_BLOCK} values; a tensor of shape "
            f"{list(x.shape)} has none. Store it as F16 or F32."
        )
    blocks = x.detach().to(torch.float32).reshape(-1, Q8_0_BLOCK)
    out = torch.empty((blocks.shape[0], 2 + Q8_0_BLOCK), dtype=torch.uint8)
    for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
        chunk = blocks[start : start + _CHUNK_BLOCKS]
        d = chunk.abs().amax(dim=1, keepdim=True).div_(127)
        scaled = chunk * torch.where(d == 0, torch.zeros_like(d), 1 / d)
        magnitude = scaled.abs()
        rounded = magnitude.floor()
        rounded.add_(magnitude.sub_(rounded) >= 0.5).copysign_(scaled)
        out[start : start + _CHUNK_BLOCKS, :2] = d.to(torch.float16).view(torch.uint8)
        out[start : start + _CHUNK_BLOCKS, 2:] = rounded.to(torch.int8).view(torch.uint8)
    return out.reshape(-1)


def _tensor_type(shape: tuple[int, ...], file_type: GGMLType) -> GGMLType:
    if len(shape) == 1 or file_type == GGMLType.F32:
        return GGMLType.F32
    if file_type == GGMLType.Q8_0 and shape[-1] % Q8_0_BLOCK:
        return GGMLType.F16
    return file_type


# ---- the file -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Value:
    """One typed metadata value; `element` is the element type of an array."""

    type: GGUFValueType
    value: Any
    element: GGUFValueType | None = None


@dataclass(frozen=True)
class _Tensor:
    name: str
    ggml_type: GGMLType
    data: torch.Tensor  # any float dtype, torch (row-major) shape; converted when written

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.ggml_type, self.shape)

    def encode(self) -> np.ndarray:
        """The tensor's bytes in the file (uint8)."""
        if self.ggml_type == GGMLType.Q8_0:
            return quantize_q8_0(self.data).numpy()
        if self.ggml_type == GGMLType.F16:
            low, high = torch.aminmax(self.data)
            if not -_F16_LIMIT < low <= high < _F16_LIMIT:
                raise LLMHoodError(
                    f"{self.name} holds values float16 cannot store (beyond ±65504, or NaN). "
                    "Write the file with file_type='f32'."
                )
            return self.data.to(torch.float16).numpy().view(np.uint8).reshape(-1)
        return self.data.to(torch.float32).numpy().view(np.uint8).reshape(-1)


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return _U64.pack(len(data)) + data


def _encode_value(value: _Value) -> bytes:
    out = _U32.pack(value.type)
    if value.type == _V.STRING:
        return out + _string(value.value)
    if value.type != _V.ARRAY:
        return out + np.asarray(value.value, dtype=_SCALAR_DTYPES[value.type]).tobytes()
    out += _U32.pack(value.element) + _U64.pack(len(value.value))
    if value.element == _V.STRING:
        return out + b"".join(_string(item) for item in value.value)
    return out + np.asarray(value.value, dtype=_SCALAR_DTYPES[value.element]).tobytes()


def _fits(value: Any, vtype: GGUFValueType) -> bool:
    """Whether `value` can be stored as a scalar of `vtype` without changing its meaning."""
    if vtype == _V.BOOL:
        return isinstance(value, bool)
    if vtype == _V.STRING:
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if vtype in (_V.FLOAT32, _V.FLOAT64):
        return True
    low, high = _INT_RANGES[vtype]
    return isinstance(value, int) and low <= value < high


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones, tuples as lists."""
    if isinstance(value, np.generic):
        return value.item()
    return list(value) if isinstance(value, tuple) else value


def _scalar_type(value: Any) -> GGUFValueType | None:
    if isinstance(value, bool):
        return _V.BOOL
    if isinstance(value, str):
        return _V.STRING
    if isinstance(value, float):
        return _V.FLOAT32
    if isinstance(value, int):
        return next((t for t in (_V.INT32, _V.INT64, _V.UINT64) if _fits(value, t)), None)
    return None


def _element_type(items: list[Any]) -> GGUFValueType | None:
    """One type for all of `items`: ints widen to i64 and, beside floats, become f32."""
    types = {_scalar_type(item) for item in items}
    if types <= {_V.INT32, _V.INT64} and types:
        return _V.INT64 if _V.INT64 in types else _V.INT32
    if types <= {_V.INT32, _V.INT64, _V.FLOAT32} and types:
        return _V.FLOAT32
    return types.pop() if len(types) == 1 else None


def _typed(key: str, value: Any) -> _Value:
    """`value` as the type llama.cpp reads `key` as, or as its Python type says."""
    value = _plain(value)
    items = [_plain(item) for item in value] if isinstance(value, list) else None
    vtype, element = _KEY_TYPES.get(key, (None, None))
    if vtype is None:
        vtype = _V.ARRAY if items is not None else _scalar_type(value)
        element = _element_type(items) if items is not None else None
    if vtype == _V.ARRAY:
        if items is not None and element is not None and all(_fits(i, element) for i in items):
            return _Value(_V.ARRAY, items, element)
    elif vtype is not None and _fits(value, vtype):
        return _Value(vtype, value)
    if key in _KEY_TYPES:
        expected = f"a list of {element.name}" if vtype == _V.ARRAY else vtype.name
    else:
        expected = "a bool, an int, a float, a str, or a non-empty list of one of these"
    raise LLMHoodError(
        f"The GGUF metadata value for {key!r} is {value!r} ({type(value).__name__}), but it must "
        f"be {expected}."
    )


def _with_overrides(
    entries: dict[str, _Value], metadata: Mapping[str, Any] | None
) -> dict[str, _Value]:
    """`entries` with a caller's keys set (typed) or, where the value is None, left out."""
    out = dict(entries)
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not key:
            raise LLMHoodError(f"GGUF metadata keys are non-empty strings, not {key!r}.")
        if key in _DERIVED_KEYS:
            raise LLMHoodError(
                f"The GGUF key {key!r} describes the tensors or the format, so it is written from "
                "the model and tokenizer and cannot be overridden; change the model instead."
            )
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _typed(key, value)
    return out


def _output_file(path: str | Path) -> Path:
    """`path` as a file to create or replace, its directory created if need be."""
    path = Path(path)
    if path.is_dir():
        raise LLMHoodError(
            f"{path} is a directory; give the path of the .gguf file to write, such as "
            f"{path / 'model.gguf'}."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LLMHoodError(f"Cannot create the directory for {path}: {error.strerror}.") from None
    return path


def _padding(size: int) -> int:
    """Zero bytes that bring `size` up to the next multiple of the alignment."""
    return -size % ALIGNMENT


def _write(path: Path, metadata: dict[str, _Value], tensors: list[_Tensor], progress: bool) -> Path:
    """Write the GGUF file atomically: a temporary file beside `path`, renamed over it."""
    header = bytearray(GGUF_MAGIC)
    header += _U32.pack(VERSION) + _U64.pack(len(tensors)) + _U64.pack(len(metadata))
    for key, value in metadata.items():
        header += _string(key) + _encode_value(value)
    offset = 0
    for tensor in tensors:
        header += _string(tensor.name) + _U32.pack(len(tensor.shape))
        header += b"".join(_U64.pack(n) for n in reversed(tensor.shape))
        header += _U32.pack(tensor.ggml_type) + _U64.pack(offset)
        offset += tensor.nbytes + _padding(tensor.nbytes)
    header += bytes(_padding(len(header)))

    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with temporary.open("xb") as file:
            file.write(header)
            bar = tqdm(tensors, desc="writing", unit="tensor", disable=not progress, leave=False)
            for tensor in bar:
                _write_tensor(file, tensor)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise LLMHoodError(f"Cannot write {path}: {error.strerror or error}.") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _write_tensor(file: BinaryIO, tensor: _Tensor) -> None:
    data = tensor.encode()
    assert data.nbytes == tensor.nbytes, tensor.name
    file.write(memoryview(data))
    file.write(bytes(_padding(data.nbytes)))


# ---- models -------------------------------------------------------------------------------


def _rope_metadata(config: ModelConfig) -> tuple[float, dict[str, Any]]:
    """(rope.freq_base, the llama.rope.scaling.* keys): what llama.cpp and gguf_llama read."""
    scaling = config.rope_scaling
    if scaling is None:
        return config.rope_theta, {}
    if scaling.kind == "ntk":  # plain RoPE on a larger base (see ModelConfig.to_hf)
        return ntk_base(config.head_dim, config.rope_theta, scaling.factor), {}
    if scaling.kind == "linear":
        return config.rope_theta, {"type": "linear", "factor": scaling.factor}
    if scaling.kind == "yarn" and scaling.attention_factor is None and scaling.truncate:
        return config.rope_theta, {
            "type": "yarn",
            "factor": scaling.factor,
            "original_context_length": scaling.original_max_position_embeddings,
            "yarn_beta_fast": scaling.beta_fast,
            "yarn_beta_slow": scaling.beta_slow,
        }
    detail = ", with its own attention_factor or truncate=False" if scaling.kind == "yarn" else ""
    raise LLMHoodError(
        f"This model's RoPE scaling ({scaling.kind}{detail}) has no GGUF spelling that llmhood "
        "reads back the same (GGUF carries linear and YaRN scaling; llama.cpp's Llama 3.1 "
        "scaling is a rope_freqs tensor). Save it with write_hf or write_meta instead."
    )


def _pre_tokenizer_name(tokenizer_json: dict[str, Any]) -> str:
    """The `tokenizer.ggml.pre` name llama.cpp gives this tokenizer's way of cutting words."""
    pre, ignore = tokenizer_json["pre_tokenizer"], tokenizer_json["model"]["ignore_merges"]
    for name, (config, ignore_merges) in _GGUF_PRE_TOKENIZERS.items():
        if config == pre and ignore_merges == ignore:
            return name
    raise LLMHoodError(
        "This tokenizer cuts text into words in a way none of the GGUF pre-tokenizer names "
        f"llmhood knows stands for ({', '.join(_GGUF_PRE_TOKENIZERS)}). If llama.cpp knows it "
        "by a name, pass metadata={'tokenizer.ggml.pre': name}; llmhood will not read it back."
    )


def _tokenizer_metadata(tokenizer: BPETokenizer, n_vocab: int, pre: str | None) -> dict[str, Any]:
    """The tokenizer.* keys BPETokenizer.from_gguf and llama.cpp read.

    GGUF lists one token per id of the model's embedding, so ids the tokenizer leaves unused
    (or lacks, when the embedding is padded past the vocabulary) are written as
    `[PAD<id>]` of type UNUSED, as llama.cpp's converter does.
    """
    if tokenizer.vocab_size > n_vocab:
        raise LLMHoodError(
            f"The tokenizer has {tokenizer.vocab_size} tokens but the model's embedding only "
            f"{n_vocab} rows; they do not belong together. Pass the model's own tokenizer."
        )
    data = tokenizer.to_tokenizer_json()
    pieces: list[str | None] = [None] * n_vocab
    for piece, i in data["model"]["vocab"].items():
        pieces[i] = piece
    types = [TokenType.NORMAL] * n_vocab
    for token in data["added_tokens"]:
        types[token["id"]] = TokenType.CONTROL if token["special"] else TokenType.USER_DEFINED
    for i, piece in enumerate(pieces):
        if piece is None:
            pieces[i], types[i] = f"[PAD{i}]", TokenType.UNUSED
    entries: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre or _pre_tokenizer_name(data),
        "tokenizer.ggml.tokens": pieces,
        "tokenizer.ggml.token_type": [int(t) for t in types],
        "tokenizer.ggml.merges": [f"{left} {right}" for left, right in data["model"]["merges"]],
        "tokenizer.ggml.bos_token_id": tokenizer.bos_id,
        "tokenizer.ggml.eos_token_id": tokenizer.eos_id,
        "tokenizer.ggml.padding_token_id": tokenizer.pad_id,
        "tokenizer.ggml.add_bos_token": tokenizer.add_bos,
        "tokenizer.chat_template": tokenizer.chat_template,
    }
    return {key: value for key, value in entries.items() if value is not None}


def _model_tensors(model: Transformer, file_type: GGMLType) -> list[_Tensor]:
    """The model's tensors, each converted only when it is written: a float32 copy of a
    bfloat16 model all at once would double the memory the export needs."""
    state = export_state_dict(model, "interleaved", None)
    return [
        _Tensor(gguf_name(name), _tensor_type(tuple(t.shape), file_type), t)
        for name, t in state.items()
    ]


def write_gguf(
    model: Transformer,
    tokenizer: BPETokenizer,
    path: str | Path,
    file_type: str = "f32",
    *,
    metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Write `model` and `tokenizer` as one llama-architecture GGUF file; returns its path.

    `file_type`: "f32", "f16" or "q8_0", what the 2-D weights are stored as (norms stay F32;
    Q8_0 falls back to F16 for rows that are not whole blocks of 32). A tied output head is
    stored once, as the embedding (no output.weight), which is how llama.cpp and
    transformers recognise a tied head. `metadata` sets keys beyond the ones written from
    the model (general.name, a chat template, general.sampling.* from `sampling_metadata`,
    or anything else), or leaves one out with the value None. An existing file at `path` is
    replaced; not before the new one is complete.
    """
    if file_type not in FILE_TYPES:
        raise LLMHoodError(
            f"Unknown GGUF file_type {file_type!r}; llmhood writes {', '.join(FILE_TYPES)}."
        )
    if not isinstance(model, Transformer):
        raise LLMHoodError(
            f"write_gguf takes an llmhood Transformer (llm.model), not a {type(model).__name__}."
        )
    if not isinstance(tokenizer, BPETokenizer):
        raise LLMHoodError(
            "write_gguf needs the model's BPETokenizer (llm.tokenizer): a GGUF file carries its "
            "tokenizer, and llama.cpp will not load one without."
        )
    config = model.config
    if config.position_encoding != "rope":
        raise LLMHoodError(
            f"This model uses position_encoding={config.position_encoding!r}, which llama.cpp's "
            "Llama cannot run; save it as a Meta checkpoint (write_meta) instead."
        )
    path = _output_file(path)
    ggml_type, llama_file_type = FILE_TYPES[file_type]
    rope_theta, scaling = _rope_metadata(config)
    pre = (metadata or {}).get("tokenizer.ggml.pre")
    entries: dict[str, Any] = {
        "general.architecture": "llama",
        "general.type": "model",
        "general.name": path.stem,
        "general.file_type": int(llama_file_type),
        "general.quantization_version": GGML_QUANT_VERSION,
        "general.alignment": ALIGNMENT,
        "llama.context_length": config.max_seq_len,
        "llama.embedding_length": config.dim,
        "llama.block_count": config.n_layers,
        "llama.feed_forward_length": config.hidden_dim,
        "llama.attention.head_count": config.n_heads,
        "llama.attention.head_count_kv": config.n_kv_heads,
        "llama.attention.layer_norm_rms_epsilon": config.norm_eps,
        "llama.rope.freq_base": rope_theta,
        "llama.rope.dimension_count": config.head_dim,
        "llama.vocab_size": config.vocab_size,
        **{f"llama.rope.scaling.{key}": value for key, value in scaling.items()},
        **_tokenizer_metadata(tokenizer, config.vocab_size, pre if isinstance(pre, str) else None),
    }
    typed = _with_overrides({key: _typed(key, value) for key, value in entries.items()}, metadata)
    return _write(path, typed, _model_tensors(model, ggml_type), progress)


# ---- LoRA adapters ------------------------------------------------------------------------


def _check_lora_pair(
    name: str, a: Any, b: Any, weight_shape: tuple[int, ...], rank: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        raise LLMHoodError(f"The adapter of {name} must be a pair of tensors (A, B).")
    out_features, in_features = weight_shape
    if tuple(a.shape) != (rank, in_features) or tuple(b.shape) != (out_features, rank):
        raise LLMHoodError(
            f"The adapter of {name} has A {list(a.shape)} and B {list(b.shape)}, but rank {rank} "
            f"on this model needs A [{rank}, {in_features}] (rank, in) and B "
            f"[{out_features}, {rank}] (out, rank)."
        )
    return a.detach().to(torch.float32), b.detach().to(torch.float32)


def write_gguf_lora(
    path: str | Path,
    adapters: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    alpha: float,
    rank: int,
    config: ModelConfig,
    rope_style: RopeStyle,
    base_name: str = "",
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write an unmerged LoRA adapter as llama.cpp loads one (`--lora`); returns the path.

    `adapters` maps llmhood layer names ("layers.0.attention.wq", ... "feed_forward.w2")
    to (A (r, in), B (out, r)) with B's rows in `rope_style`; `config` is the base model's.
    The file follows llama.cpp's convention (convert_lora_to_gguf.py writes it,
    llama-adapter.cpp reads it): general.type "adapter", adapter.type "lora",
    adapter.lora.alpha (f32), general.architecture "llama", and per adapted weight
    `blk.N.attn_q.weight.lora_a` holding A and `.lora_b` holding B, both F32, in torch's
    (row-major) shapes, so ggml's ne is A (in, r) and B (r, out). llama.cpp adds
    (alpha / r)·B·(A·x), taking r from B, so pass alpha = s·r for any other scale s (rsLoRA:
    alpha·√r). The base GGUF stores W_q/W_k rows interleaved, so B of wq and wk is put in
    that layout too; A acts on the input side and is unaffected.
    """
    path = _output_file(path)
    if not adapters:
        raise LLMHoodError("There are no adapters to write; pass at least one (A, B) pair.")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0:
        raise LLMHoodError(
            f"alpha={alpha!r} is invalid: the LoRA alpha must be a number > 0 (llama.cpp reads "
            "0 as 'no alpha' and would scale by 1 instead of alpha/r)."
        )
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise LLMHoodError(f"rank={rank!r} is invalid: a LoRA rank is an integer ≥ 1.")
    if rope_style not in ("interleaved", "half"):
        raise LLMHoodError(f"rope_style must be 'interleaved' or 'half', not {rope_style!r}.")
    shapes = {n: tuple(t.shape) for n, t in Transformer.shapes_only(config).state_dict().items()}
    heads = {"attention.wq": config.n_heads, "attention.wk": config.n_kv_heads}
    tensors = []
    for name, pair in adapters.items():
        projection = name.split(".", 2)[-1]
        if projection not in _PROJECTIONS or f"{name}.weight" not in shapes:
            raise LLMHoodError(
                f"{name!r} is not a layer llmhood writes adapters for: expected "
                f"'layers.N.<{'|'.join(_PROJECTIONS)}>' with N below {config.n_layers}."
            )
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise LLMHoodError(f"The adapter of {name} must be a pair of tensors (A, B).")
        a, b = _check_lora_pair(name, *pair, shapes[f"{name}.weight"], rank)
        if projection in heads and rope_style == "half":
            b = half_to_interleaved(b, heads[projection])
        base = gguf_name(f"{name}.weight")
        tensors += [
            _Tensor(f"{base}.lora_a", GGMLType.F32, a.contiguous()),
            _Tensor(f"{base}.lora_b", GGMLType.F32, b.contiguous()),
        ]
    entries: dict[str, Any] = {
        "general.architecture": "llama",
        "general.type": "adapter",
        "general.name": path.stem,
        "general.alignment": ALIGNMENT,
        "adapter.type": "lora",
        "adapter.lora.alpha": float(alpha),
    }
    if base_name:
        entries.update({"general.base_model.count": 1, "general.base_model.0.name": base_name})
    typed = _with_overrides({key: _typed(key, value) for key, value in entries.items()}, metadata)
    return _write(path, typed, tensors, progress=False)


def read_gguf_lora(
    path: str | Path,
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], float, int]:
    """(adapters, alpha, rank) from a llama.cpp LoRA GGUF, with llmhood layer names.

    B's rows come in the "interleaved" layout, as stored (the layout of a GGUF base model's
    W_q/W_k). A file without adapter.lora.alpha (or with 0) is one llama.cpp scales by 1,
    so its alpha is returned as the rank. Adapters of different ranks, of the token
    embedding (llama.cpp stores those transposed) or of norms are not read.
    """
    gguf = read_gguf(path)
    meta = gguf.metadata
    kind = (meta.get("general.type"), meta.get("adapter.type"))
    if kind != ("adapter", "lora"):
        raise LLMHoodError(
            f"{gguf.path} is not a LoRA adapter (general.type={kind[0]!r}, adapter.type="
            f"{kind[1]!r}; an adapter has 'adapter' and 'lora'). A whole model loads with "
            "llmhood.load."
        )
    if meta.get("general.architecture") != "llama":
        raise LLMHoodError(
            f"{gguf.path} adapts a {meta.get('general.architecture')!r} model; llmhood runs "
            "the Llama architecture only."
        )
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for name in gguf.tensors:
        base, _, part = name.rpartition(".")
        ours = llmhood_name(base)
        layer = None if ours is None else ours.removesuffix(".weight")
        if (
            part not in ("lora_a", "lora_b")
            or layer is None
            or layer.split(".", 2)[-1] not in _PROJECTIONS
        ):
            raise LLMHoodError(
                f"{gguf.path} holds the tensor {name!r}, which is not the lora_a or lora_b of a "
                "block projection; llmhood reads adapters of wq, wk, wv, wo, w1, w2 and w3 only."
            )
        parts.setdefault(layer, {})[part] = gguf.load(name)
    adapters = {}
    for layer, pair in parts.items():
        if len(pair) != 2:
            raise LLMHoodError(f"{gguf.path} has only one of lora_a and lora_b for {layer}.")
        a, b = pair["lora_a"], pair["lora_b"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise LLMHoodError(
                f"{gguf.path}: the adapter of {layer} has lora_a {list(a.shape)} and lora_b "
                f"{list(b.shape)}, not (r, in) and (out, r)."
            )
        adapters[layer] = (a, b)
    if not adapters:
        raise LLMHoodError(f"{gguf.path} holds no adapter tensors.")
    ranks = {a.shape[0] for a, _ in adapters.values()}
    if len(ranks) != 1:
        raise LLMHoodError(
            f"{gguf.path} holds adapters of ranks {sorted(ranks)}; llmhood reads adapters of "
            "one rank."
        )
    rank = ranks.pop()
    alpha = meta.get("adapter.lora.alpha") or float(rank)
    if not isinstance(alpha, int | float) or not math.isfinite(alpha):
        raise LLMHoodError(f"{gguf.path} has adapter.lora.alpha={alpha!r}, not a number.")
    return adapters, float(alpha), rank
