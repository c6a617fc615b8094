"""Meta checkpoint directories: `params.json`, `consolidated.NN.pth`, `tokenizer.model`.

This is the layout of Meta's own Llama downloads. Tensor names are already ours (our
modules are named after Meta's), and W_q/W_k rows are in the "interleaved" RoPE layout
Meta's complex-number rotation expects, so a model read from here runs that form.

Large models come split for model parallelism, one `consolidated.NN.pth` per GPU, and
each file holds a slice of every matrix. Meta's code (fairscale layers) splits them as
follows, and `merge_model_parallel` concatenates them back:

* column-parallel (each GPU computes some output features): wq, wk, wv, w1, w3 and the
  output head, split along dim 0;
* row-parallel (each GPU reads some input features): wo and w2, split along dim 1;
* the embedding: Llama 3's VocabParallelEmbedding splits the vocabulary (dim 0), while
  Llama 1/2's ParallelEmbedding splits the embedding width (dim 1); the slice's width
  tells which;
* norms are small and replicated in every file.

`tokenizer.model` is a tiktoken file: one `base64(token bytes) rank` line per learned
token, where the rank is the token id. It holds nothing else, and Meta's code adds Llama
3's 256 special tokens after the last rank. That is all `read_meta` assumes when the
directory has only `tokenizer.model`.

Any other tokenizer needs more than tiktoken's format can say: SmolLM2 has its 17 control
tokens at ids 0..16, before the learned ones; it splits digits off one by one before the
GPT-2 regex, which is not one regex (all a tiktoken reader takes); and a chat model needs
its chat template and BOS/EOS tokens. So `write_meta` writes, beside every
tokenizer.model, `tokenizer_special.json`, llmhood's own sidecar (Meta's tools ignore it),
and `read_meta` uses it when present:

    {
      "llmhood_sidecar_version": 1,
      "special_tokens": {"<|endoftext|>": 0, "<|im_start|>": 1, ...},
      "added_tokens": {...},        (only if any: matched whole but not special)
      "pre_tokenizer": {...},       (the HF tokenizer.json pre_tokenizer object)
      "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
      "add_bos": false,
      "chat_template": "...",
      "ignore_merges": false,
      "merges": ["Ġ t", ...]        (only if tiktoken's rule would not rebuild them)
    }

tiktoken stores no merge list: two adjacent symbols merge whenever their concatenation
is a token, lowest rank first. `BPETokenizer.from_tiktoken` rebuilds that as a merge list
holding every split of every token. A tokenizer trained with a merge list (SmolLM2's, one
merge per token) has a different list, and although it gives the same tokens on every
text we tried, that is not equality by construction; so its merges go into the sidecar
(0.8 MB for SmolLM2) and the round trip is exact. tiktoken also takes a word that is
itself a token whole (`ignore_merges`); the Hugging Face Llama 3 tokenizer.json does not,
which changes how some rare words are cut, so the flag is stored as well.
"""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from llmhood.errors import LLMHoodError
from llmhood.model.config import ModelConfig
from llmhood.model.transformer import Transformer
from llmhood.tokenizer.bpe import BPETokenizer, piece_to_bytes
from llmhood.weights.checkpoint import (
    Checkpoint,
    checkpoint_dir,
    export_state_dict,
    load_torch_file,
    output_dir,
    read_json,
    write_json,
)

SIDECAR = "tokenizer_special.json"
SIDECAR_VERSION = 1
TOKENIZER = "tokenizer.model"

# The dimension each model-parallel matrix is split along (see the module docstring).
_SPLIT_DIM = {"wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "output": 0, "wo": 1, "w2": 1}
_SHARD = re.compile(r"consolidated\.(\d+)\.pth")
# Llama 1/2 files store RoPE's frequency table, which is computed, not learned.
_IGNORED = {"rope.freqs"}


# ---- reading ------------------------------------------------------------------------------


def _shard_files(path: Path) -> list[Path]:
    numbered = {}
    for file in path.glob("consolidated.*.pth"):
        match = _SHARD.fullmatch(file.name)
        if match:
            numbered[int(match.group(1))] = file
    if not numbered:
        raise LLMHoodError(
            f"{path} has a params.json but no weights: expected consolidated.00.pth (and "
            "consolidated.01.pth, ... for a model split across GPUs). Download the weights too."
        )
    missing = [f"consolidated.{i:02d}.pth" for i in range(max(numbered) + 1) if i not in numbered]
    if missing:
        raise LLMHoodError(
            f"{path} lacks {', '.join(missing)}: the model is split into {max(numbered) + 1} files "
            "and all of them are needed. Download the missing ones."
        )
    return [numbered[i] for i in sorted(numbered)]


def _merge_dim(name: str, slice_shape: torch.Size, dim: int) -> int | None:
    """The dim that model parallelism split `name` along, or None if it is replicated."""
    module = name.split(".")[-2]
    if module == "tok_embeddings":
        return 0 if slice_shape[1] == dim else 1
    return _SPLIT_DIM.get(module)


def merge_model_parallel(
    shards: list[dict[str, torch.Tensor]], dim: int, progress: bool = False
) -> dict[str, torch.Tensor]:
    """One state dict from the slices Meta's model parallelism saved, one dict per rank.

    `dim` is the model width, which tells how the embedding was split.
    """
    names = [name for name in shards[0] if name not in _IGNORED]
    for rank, shard in enumerate(shards[1:], 1):
        if shard.keys() != shards[0].keys():
            odd = sorted(shard.keys() ^ shards[0].keys())
            raise LLMHoodError(
                f"Model-parallel file {rank} holds other tensors than file 0 "
                f"({', '.join(odd[:5])}); the files belong to different checkpoints."
            )
    merged = {}
    for name in tqdm(names, desc="loading", unit="tensor", file=sys.stderr, disable=not progress):
        slices = [shard[name] for shard in shards]
        axis = _merge_dim(name, slices[0].shape, dim) if len(slices) > 1 else None
        merged[name] = slices[0] if axis is None else torch.cat(slices, dim=axis)
    return merged


def _sidecar_tokenizer(model_file: Path, sidecar: dict[str, Any]) -> BPETokenizer:
    """The tokenizer `write_meta` saved: ranks from tokenizer.model, the rest from the sidecar."""
    special = sidecar.get("special_tokens") or {}
    plain = sidecar.get("added_tokens") or {}
    # from_tiktoken reads the ranks and rebuilds tiktoken's merge list; the pre-tokenizer,
    # the merges (when stored) and the token roles are then replaced by the sidecar's.
    ranked = BPETokenizer.from_tiktoken(model_file, special_tokens={**special, **plain})
    spelled = ranked.to_tokenizer_json()
    pieces: list[str | None] = [None] * ranked.vocab_size
    for piece, i in spelled["model"]["vocab"].items():
        pieces[i] = piece
    for content, i in {**special, **plain}.items():
        pieces[i] = content
    stored = sidecar.get("merges")
    merges = (
        [tuple(pair) for pair in spelled["model"]["merges"]]
        if stored is None
        else [tuple(merge.split(" ")) for merge in stored]
    )

    def token_id(name: str) -> int | None:
        content = sidecar.get(name)
        return None if content is None else ranked.token_to_id(content)

    return BPETokenizer(
        pieces,
        merges,
        added_tokens={
            **dict.fromkeys(special.values(), True),
            **dict.fromkeys(plain.values(), False),
        },
        pre_tokenizer=sidecar["pre_tokenizer"],
        ignore_merges=bool(sidecar.get("ignore_merges", True)),
        bos_id=token_id("bos_token"),
        eos_id=token_id("eos_token"),
        pad_id=token_id("pad_token"),
        add_bos=bool(sidecar.get("add_bos", False)),
        chat_template=sidecar.get("chat_template"),
    )


def _read_tokenizer(path: Path) -> BPETokenizer | None:
    model_file = path / TOKENIZER
    if not model_file.is_file():
        return None
    if not (path / SIDECAR).is_file():
        return BPETokenizer.from_tiktoken(model_file)
    sidecar = read_json(path / SIDECAR)
    if (
        not isinstance(sidecar, dict)
        or sidecar.get("llmhood_sidecar_version") != SIDECAR_VERSION
        or not isinstance(sidecar.get("pre_tokenizer"), dict)
    ):
        raise LLMHoodError(
            f"{path / SIDECAR} is not a version-{SIDECAR_VERSION} llmhood tokenizer sidecar. "
            "It was written by another version of llmhood or damaged; export the model again."
        )
    return _sidecar_tokenizer(model_file, sidecar)


def read_meta(path: str | Path, progress: bool = True) -> Checkpoint:
    """Read a Meta Llama directory; q/k rows stay in Meta's "interleaved" layout."""
    path = checkpoint_dir(path, "Meta checkpoint", "params.json")
    params = read_json(path / "params.json")
    if not isinstance(params, dict):
        raise LLMHoodError(f"{path / 'params.json'} is not a JSON object; the file is damaged.")
    if "dim" not in params:
        raise LLMHoodError(
            f"{path / 'params.json'} lacks 'dim', which a Llama params.json needs; the file is "
            "incomplete or belongs to another model."
        )
    shards = [load_torch_file(file) for file in _shard_files(path)]
    state_dict = merge_model_parallel(shards, params["dim"], progress)
    embedding = state_dict.get("tok_embeddings.weight")
    try:
        config = ModelConfig.from_meta(
            params, vocab_size=None if embedding is None else embedding.shape[0]
        )
    except KeyError as e:
        raise LLMHoodError(
            f"{path / 'params.json'} lacks {e}, which a Llama params.json needs; the file is "
            "incomplete."
        ) from e
    tokenizer = _read_tokenizer(path)
    return Checkpoint(config, state_dict, tokenizer, source=f"{path} (Meta)")


# ---- writing ------------------------------------------------------------------------------


def _write_tokenizer(path: Path, tokenizer: BPETokenizer) -> None:
    spelled = tokenizer.to_tokenizer_json()
    added = spelled["added_tokens"]
    added_ids = {t["id"] for t in added}
    learned = sorted(i for i in spelled["model"]["vocab"].values() if i not in added_ids)
    with (path / TOKENIZER).open("w", encoding="ascii") as f:
        for i in learned:
            token = piece_to_bytes(tokenizer.id_to_piece(i))
            f.write(f"{base64.b64encode(token).decode('ascii')} {i}\n")

    special = {t["content"]: t["id"] for t in added if t["special"]}
    plain = {t["content"]: t["id"] for t in added if not t["special"]}
    sidecar: dict[str, Any] = {
        "llmhood_sidecar_version": SIDECAR_VERSION,
        "special_tokens": special,
    }
    if plain:
        sidecar["added_tokens"] = plain
    sidecar["pre_tokenizer"] = spelled["pre_tokenizer"]
    for name, i in (
        ("bos_token", tokenizer.bos_id),
        ("eos_token", tokenizer.eos_id),
        ("pad_token", tokenizer.pad_id),
    ):
        sidecar[name] = None if i is None else tokenizer.id_to_piece(i)
    sidecar["add_bos"] = tokenizer.add_bos
    sidecar["chat_template"] = tokenizer.chat_template
    rebuilt = BPETokenizer.from_tiktoken(path / TOKENIZER, special_tokens={**special, **plain})
    merges = spelled["model"]["merges"]
    if merges != rebuilt.to_tokenizer_json()["model"]["merges"]:
        # Byte-level pieces never hold a space (it is spelled "Ġ"), so one can separate a pair.
        sidecar["merges"] = [f"{left} {right}" for left, right in merges]
    sidecar["ignore_merges"] = tokenizer.ignore_merges
    write_json(path / SIDECAR, sidecar)


def write_meta(
    path: str | Path,
    model: Transformer,
    tokenizer: BPETokenizer | None,
    dtype: torch.dtype | None = None,
) -> None:
    """Write `model` (and `tokenizer`) as a Meta checkpoint directory, in one file.

    A tied output head is saved under both names, as one storage: Meta's code expects an
    `output.weight`, and torch.save writes a shared storage only once.
    """
    path = output_dir(path)
    write_json(path / "params.json", model.config.to_meta())
    state = export_state_dict(model, "interleaved", dtype)
    if "output.weight" not in state:
        state["output.weight"] = state["tok_embeddings.weight"]
    torch.save(state, path / "consolidated.00.pth")
    if tokenizer is not None:
        _write_tokenizer(path, tokenizer)
