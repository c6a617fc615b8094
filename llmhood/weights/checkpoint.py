"""What every checkpoint reader returns, and how it becomes a running model.

A checkpoint, whatever its format, comes down to a `ModelConfig`, a state dict in
llmhood's (that is, Meta's) tensor names and a tokenizer. The readers only translate
names and layouts; checking that the tensors fit the architecture happens once, here,
so a broken or mismatched file gets the same clear error from every format.

The model is built on PyTorch's `meta` device, which records shapes without allocating
memory, and the loaded tensors are then assigned as its parameters. Otherwise every
weight would first be filled with random numbers (seconds of work for a large model)
and the checkpoint then copied over them (twice the memory at the peak).

What the directory formats (Hugging Face, Meta) share lives here too: opening a
checkpoint directory and its JSON and PyTorch files with errors that name the file,
and the model's state dict in one rope layout, without the duplicate of a tied head.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from llmhood.errors import LLMHoodError
from llmhood.model.config import ModelConfig, RopeStyle
from llmhood.model.fast.quantized import Int4Linear, Int8Linear
from llmhood.model.rope import half_to_interleaved, interleaved_to_half
from llmhood.model.transformer import Transformer

if TYPE_CHECKING:
    from llmhood.tokenizer.bpe import BPETokenizer


@dataclass
class Checkpoint:
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]  # Meta names; q/k rows in config.rope_style's layout
    tokenizer: BPETokenizer | None
    source: str  # for messages: the path and its format
    # How the checkpoint's authors say to sample it, in SamplingParams' names (temperature,
    # top_p, ...); empty when it says nothing (llmhood.generate.chat_settings).
    sampling: dict[str, float] = field(default_factory=dict)


def _listing(names: Iterable[str], limit: int = 6) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_state_dict(ckpt: Checkpoint, model: Transformer) -> None:
    """Raise LLMHoodError unless the state dict holds exactly the tensors `model` has."""
    tied = model.config.tie_embeddings
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    got = {name: tuple(t.shape) for name, t in ckpt.state_dict.items()}
    if tied:
        expected.pop("output.weight")
        got.pop("output.weight", None)
    missing = expected.keys() - got.keys()
    unexpected = got.keys() - expected.keys()
    wrong = [
        f"{name} is {list(got[name])}, expected {list(shape)}"
        for name, shape in expected.items()
        if name in got and got[name] != shape
    ]
    problems = []
    if missing:
        problems.append(f"it lacks {_listing(missing)}")
    if unexpected:
        problems.append(
            f"it has tensors a Llama of this shape does not use ({_listing(unexpected)})"
        )
    if wrong:
        problems.append("some shapes do not match the config: " + "; ".join(wrong[:4]))
    if problems:
        raise LLMHoodError(
            f"The weights in {ckpt.source} do not fit the model its config describes: "
            f"{'; '.join(problems)}. The checkpoint is incomplete or its config belongs to another "
            "model; re-download or re-export it."
        )


def build_model(ckpt: Checkpoint, dtype: torch.dtype) -> Transformer:
    """A Transformer holding the checkpoint's tensors (cast to `dtype`), in eval mode.

    The output head is tied to the embedding when the config says so or when the state
    dict has no `output.weight` (Meta's small Llama 3.2 models ship without one). A tied
    config with an `output.weight` ignores that tensor, as transformers does.
    """
    tied = ckpt.config.tie_embeddings or "output.weight" not in ckpt.state_dict
    config = ckpt.config.replace(tie_embeddings=tied)
    model = Transformer.shapes_only(config)
    _check_state_dict(ckpt, model)
    tensors = {
        name: t.to(dtype)
        for name, t in ckpt.state_dict.items()
        if not (tied and name == "output.weight")
    }
    model.load_state_dict(tensors, strict=False, assign=True)
    if tied:
        model.output.weight = model.tok_embeddings.weight
    return model.eval()


def convert_rope_style(
    state_dict: dict[str, torch.Tensor], config: ModelConfig, style: RopeStyle
) -> dict[str, torch.Tensor]:
    """The same weights with W_q/W_k rows permuted for `style`; other tensors are shared."""
    if style == config.rope_style:
        return dict(state_dict)
    permute = interleaved_to_half if style == "half" else half_to_interleaved
    heads = {"wq": config.n_heads, "wk": config.n_kv_heads}
    out = {}
    for name, t in state_dict.items():
        parts = name.split(".")
        if len(parts) == 5 and parts[2] == "attention" and parts[3] in heads:
            t = permute(t, heads[parts[3]])
        out[name] = t
    return out


def export_state_dict(
    model: Transformer, style: RopeStyle, dtype: torch.dtype | None
) -> dict[str, torch.Tensor]:
    """The model's tensors as a writer stores them: detached, contiguous, q/k in `style`.

    A tied output head is left out (it is the embedding); writers say so in their config.
    """
    if any(isinstance(m, Int4Linear | Int8Linear) for m in model.modules()):
        raise LLMHoodError(
            "This model holds quantized weights (llmhood.speed.modes), which checkpoint formats do "
            "not store. Load it with dtype='float32' (or quantize=None) and export that."
        )
    state = {name: t.detach().to(dtype or t.dtype) for name, t in model.state_dict().items()}
    if model.output.weight is model.tok_embeddings.weight:
        state.pop("output.weight")
    return {
        name: t.contiguous() for name, t in convert_rope_style(state, model.config, style).items()
    }


# ---- files --------------------------------------------------------------------------------


def checkpoint_dir(path: str | Path, kind: str, marker: str) -> Path:
    """`path` as a directory that holds `marker`, or an error that says which is missing."""
    path = Path(path)
    if not path.exists():
        raise LLMHoodError(f"The {kind} directory {path} does not exist. Check the path.")
    if not path.is_dir():
        raise LLMHoodError(
            f"{path} is a file, but a {kind} checkpoint is a directory holding {marker} and the "
            "weight files. Pass the directory."
        )
    if not (path / marker).is_file():
        raise LLMHoodError(
            f"{path} has no {marker}, so it is not a {kind} checkpoint directory (or the download "
            "is incomplete). Pass the directory that holds it."
        )
    return path


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise LLMHoodError(f"{path} does not exist; the checkpoint is incomplete.") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LLMHoodError(
            f"{path} is not valid JSON ({e}). The file is damaged: download or export it again."
        ) from e


def write_json(path: Path, data: Any, indent: int | None = 2) -> None:
    """Indented for people to read; `indent=None` for big files (json's C encoder is 10x faster)."""
    path.write_text(json.dumps(data, indent=indent, ensure_ascii=False) + "\n", encoding="utf-8")


def load_torch_file(path: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict, memory-mapped and with pickle limited to tensors.

    `weights_only` refuses to run code hidden in a downloaded pickle; `mmap` leaves the
    tensors on disk until they are used. Files in the zip format (every torch.save since
    PyTorch 1.6) can be mapped; older ones are read whole.
    """
    try:
        mmap = zipfile.is_zipfile(path)
        state = torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except Exception as e:  # a damaged pickle fails in many ways, all of them the file's fault
        reason = (str(e).splitlines() or [""])[0]
        raise LLMHoodError(
            f"{path} could not be read as a PyTorch checkpoint ({type(e).__name__}: {reason}). "
            "It is probably truncated or damaged: download or export it again."
        ) from e
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise LLMHoodError(f"{path} does not hold a state dict of tensors; it is not a checkpoint.")
    return state


def output_dir(path: str | Path) -> Path:
    """A new or empty directory to write a checkpoint into.

    Writing over an existing checkpoint could leave a stale weight shard next to the new
    ones, and readers would then load a mix of two models; so a non-empty directory is
    refused rather than cleaned.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LLMHoodError(f"{path} is a file; give a directory to write the checkpoint into.")
    if path.is_dir() and any(path.iterdir()):
        raise LLMHoodError(
            f"{path} is not empty. Write the checkpoint into a new or empty directory, so that no "
            "file of another model is left beside it."
        )
    path.mkdir(parents=True, exist_ok=True)
    return path
