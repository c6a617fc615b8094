"""Checkpoint formats: GGUF files, Hugging Face directories and Meta directories.

Every reader returns a `Checkpoint` (config, state dict in llmhood's names, tokenizer);
`read_checkpoint` picks the reader from what the path holds.
"""

from __future__ import annotations

from pathlib import Path

from llmhood.errors import LLMHoodError
from llmhood.weights.checkpoint import Checkpoint
from llmhood.weights.gguf_llama import read_gguf_checkpoint
from llmhood.weights.hf import read_hf
from llmhood.weights.meta import read_meta

GGUF_MAGIC = b"GGUF"


def detect_format(path: Path) -> str:
    """The format name ("gguf", "hf" or "meta") from a file's magic or a directory's marker."""
    if path.is_file():
        with path.open("rb") as f:
            head = f.read(4)
        if head == GGUF_MAGIC or path.suffix == ".gguf":
            return "gguf"
        raise LLMHoodError(
            f"{path} is not a format llmhood reads (its first bytes are {head!r}, not a GGUF "
            "header). Supported: a .gguf file, a Hugging Face model directory with config.json "
            "and *.safetensors, or a Meta checkpoint directory with params.json and "
            "consolidated.*.pth."
        )
    if (path / "config.json").is_file():
        return "hf"
    if (path / "params.json").is_file():
        return "meta"
    raise LLMHoodError(
        f"The directory {path} holds neither config.json (a Hugging Face model) nor params.json "
        "(a Meta checkpoint), so llmhood cannot tell what model it is."
    )


def read_checkpoint(path: str | Path, progress: bool = True) -> Checkpoint:
    path = Path(path)
    fmt = detect_format(path)
    readers = {"gguf": read_gguf_checkpoint, "hf": read_hf, "meta": read_meta}
    return readers[fmt](path, progress)


__all__ = ["Checkpoint", "detect_format", "read_checkpoint"]
