"""Hugging Face model directories: `config.json`, safetensors weights, `tokenizer.json`.

transformers' Llama names its tensors after its own modules (`model.layers.3.self_attn.q_proj`,
`mlp.gate_proj`) where Meta's code, and ours, say `layers.3.attention.wq`,
`feed_forward.w1`. Only the names differ, with one exception: when Hugging Face converted
Meta's weights it permuted the rows of W_q and W_k inside each head, so that its
rotate-half RoPE pairs channel i with i + head_dim/2 instead of 2i with 2i+1. A model read
from here therefore keeps those rows as stored and runs the "half" RoPE form; writing a
model that uses the "interleaved" form applies the same permutation HF's converter does.

Weights come as one `model.safetensors` or, past a size, as shards listed in
`model.safetensors.index.json`. safetensors is a JSON header plus raw tensor bytes, so it
can be opened without running any code and read tensor by tensor. Older repos ship
`pytorch_model.bin` (a pickle); it is read too, with pickle restricted to tensors.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from llmhood.errors import LLMHoodError
from llmhood.model.config import ModelConfig
from llmhood.model.transformer import Transformer
from llmhood.tokenizer.bpe import BPETokenizer
from llmhood.weights.checkpoint import (
    Checkpoint,
    checkpoint_dir,
    export_state_dict,
    load_torch_file,
    output_dir,
    read_json,
    write_json,
)

# Shards stay below this size, so no single file is unwieldy to download or upload.
DEFAULT_MAX_SHARD_BYTES = 2 * 1000**3

SAFETENSORS = "model.safetensors"
PYTORCH_BIN = "pytorch_model.bin"
INDEX_SUFFIX = ".index.json"
GENERATION_CONFIG = "generation_config.json"

_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
_BLOCK_NAMES = {
    "input_layernorm": "attention_norm",
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.up_proj": "feed_forward.w3",
    "mlp.down_proj": "feed_forward.w2",
}
_OUR_GLOBAL_NAMES = {ours: hf for hf, ours in _GLOBAL_NAMES.items()}
_OUR_BLOCK_NAMES = {ours: hf for hf, ours in _BLOCK_NAMES.items()}
_HF_BLOCK = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight")
_OUR_BLOCK = re.compile(r"layers\.(\d+)\.(.+)\.weight")
# Older checkpoints store RoPE's frequency table, which is computed, not learned.
_IGNORED = re.compile(r".*\.rotary_emb\.inv_freq")


def llmhood_name(hf_name: str) -> str | None:
    """`model.layers.3.mlp.gate_proj.weight` -> `layers.3.feed_forward.w1.weight`, or None."""
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    match = _HF_BLOCK.fullmatch(hf_name)
    if match and match.group(2) in _BLOCK_NAMES:
        return f"layers.{match.group(1)}.{_BLOCK_NAMES[match.group(2)]}.weight"
    return None


def hf_name(name: str) -> str:
    """The inverse of `llmhood_name`, for every tensor our Transformer has."""
    if name in _OUR_GLOBAL_NAMES:
        return _OUR_GLOBAL_NAMES[name]
    match = _OUR_BLOCK.fullmatch(name)
    if match is None or match.group(2) not in _OUR_BLOCK_NAMES:
        raise ValueError(f"{name} is not a Llama tensor")
    return f"model.layers.{match.group(1)}.{_OUR_BLOCK_NAMES[match.group(2)]}.weight"


# ---- reading ------------------------------------------------------------------------------


def _weight_files(path: Path) -> list[Path]:
    """The files holding the weights, in the order transformers looks for them."""
    for single in (SAFETENSORS, PYTORCH_BIN):
        if (path / single).is_file():
            return [path / single]
        index_path = path / (single + INDEX_SUFFIX)
        if index_path.is_file():
            index = read_json(index_path)
            weight_map = index.get("weight_map") if isinstance(index, dict) else None
            if not isinstance(weight_map, dict) or not weight_map:
                raise LLMHoodError(
                    f"{index_path} has no weight_map; the index is damaged. Download it again."
                )
            files = [path / name for name in dict.fromkeys(weight_map.values())]
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise LLMHoodError(
                    f"{index_path} lists the shard(s) {', '.join(missing)}, which are not in "
                    f"{path}. The download is incomplete: fetch every file the index names."
                )
            return files
    raise LLMHoodError(
        f"{path} has a config.json but no weights: expected {SAFETENSORS} or the shards named by "
        f"{SAFETENSORS}{INDEX_SUFFIX} (or {PYTORCH_BIN}). Download the weight files too."
    )


@contextmanager
def _safetensors_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except SafetensorError as e:
        raise LLMHoodError(
            f"{path} is not a readable safetensors file ({e}). It is probably truncated or "
            "damaged: download or export it again."
        ) from e


def _read_tensors(files: list[Path], progress: bool) -> dict[str, torch.Tensor]:
    """Every tensor of every weight file, under its HF name."""
    with ExitStack() as stack:
        sources = []  # (file, name, getter)
        for file in files:
            if file.suffix == ".safetensors":
                with _safetensors_errors(file):
                    handle = stack.enter_context(safe_open(file, framework="pt"))
                    names = handle.keys()
                sources += [(file, name, handle.get_tensor) for name in names]
            else:
                tensors = load_torch_file(file)
                sources += [(file, name, tensors.__getitem__) for name in tensors]
        out = {}
        bar = tqdm(sources, desc="loading", unit="tensor", file=sys.stderr, disable=not progress)
        for file, name, get in bar:
            with _safetensors_errors(file):
                out[name] = get(name)
        return out


def read_hf(path: str | Path, progress: bool = True) -> Checkpoint:
    """Read a Hugging Face Llama directory; q/k rows stay in HF's "half" layout."""
    path = checkpoint_dir(path, "Hugging Face model", "config.json")
    hf_config = read_json(path / "config.json")
    if not isinstance(hf_config, dict):
        raise LLMHoodError(f"{path / 'config.json'} is not a JSON object; the file is damaged.")
    architectures = hf_config.get("architectures") or ["LlamaForCausalLM"]
    if "LlamaForCausalLM" not in architectures:
        raise LLMHoodError(
            f"{path} holds a {', '.join(architectures)} model; llmhood runs LlamaForCausalLM "
            "(a Llama language model) only."
        )
    try:
        config = ModelConfig.from_hf(hf_config)
    except KeyError as e:
        raise LLMHoodError(
            f"{path / 'config.json'} lacks {e}, which a Llama config needs; the file is incomplete."
        ) from e

    state_dict = {}
    unknown = []
    for name, tensor in _read_tensors(_weight_files(path), progress).items():
        ours = llmhood_name(name)
        if ours is not None:
            state_dict[ours] = tensor
        elif not _IGNORED.fullmatch(name):
            unknown.append(name)
    if unknown:
        raise LLMHoodError(
            f"{path} holds tensors a plain Llama does not have ({', '.join(sorted(unknown)[:5])}); "
            "llmhood cannot run this model (biases and other extra weights are not supported)."
        )

    tokenizer = None
    if (path / "tokenizer.json").is_file():
        tokenizer = BPETokenizer.from_tokenizer_json(path / "tokenizer.json")
    source = f"{path} (Hugging Face)"
    return Checkpoint(config, state_dict, tokenizer, source, _recommended_sampling(path))


def _recommended_sampling(path: Path) -> dict[str, float]:
    """The sampling settings in `generation_config.json`, if the directory has one.

    transformers samples only with `do_sample: true`; a file that says `false` recommends
    greedy decoding, whatever temperature it also lists.
    """
    file = path / GENERATION_CONFIG
    if not file.is_file():
        return {}
    config = read_json(file)
    if not isinstance(config, dict):
        raise LLMHoodError(f"{file} is not a JSON object; the file is damaged.")
    if config.get("do_sample") is False:
        return {"temperature": 0.0}
    names = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")
    return {k: config[k] for k in names if isinstance(config.get(k), int | float)}


# ---- writing ------------------------------------------------------------------------------


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Tensors in order, cut into groups of at most `max_bytes` (a larger tensor goes alone)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += nbytes
    return shards


def _token(tokenizer: BPETokenizer, i: int | None) -> str | None:
    return None if i is None else tokenizer.id_to_piece(i)


def write_hf(
    path: str | Path,
    model: Transformer,
    tokenizer: BPETokenizer | None,
    dtype: torch.dtype | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> None:
    """Write `model` (and `tokenizer`) as a directory transformers' from_pretrained reads.

    `dtype` converts the weights (default: as the model holds them). A tied output head is
    stored once, as the embedding, with tie_word_embeddings set.
    """
    path = output_dir(path)
    state = export_state_dict(model, "half", dtype)
    tensors = {hf_name(name): t for name, t in state.items()}

    shards = _shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        save_file(tensors, path / SAFETENSORS, metadata={"format": "pt"})
    else:
        weight_map = {}
        for number, shard in enumerate(shards, 1):
            name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, path / name, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        write_json(
            path / (SAFETENSORS + INDEX_SUFFIX),
            {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
        )

    ids = {}
    if tokenizer is not None:
        ids = {
            "bos_token_id": tokenizer.bos_id,
            "eos_token_id": tokenizer.eos_id,
            "pad_token_id": tokenizer.pad_id,
        }
    hf_config = model.config.to_hf(**ids)
    hf_config["torch_dtype"] = str(state["tok_embeddings.weight"].dtype).removeprefix("torch.")
    write_json(path / "config.json", hf_config)
    write_json(path / "generation_config.json", {k: v for k, v in ids.items() if v is not None})
    if tokenizer is None:
        return
    write_json(path / "tokenizer.json", tokenizer.to_tokenizer_json(), indent=None)
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": _token(tokenizer, tokenizer.bos_id),
        "eos_token": _token(tokenizer, tokenizer.eos_id),
        "pad_token": _token(tokenizer, tokenizer.pad_id),
        "add_bos_token": tokenizer.add_bos,
        "model_max_length": model.config.max_seq_len,
        "clean_up_tokenization_spaces": False,
    }
    if tokenizer.chat_template is not None:
        tokenizer_config["chat_template"] = tokenizer.chat_template
    write_json(path / "tokenizer_config.json", tokenizer_config)
