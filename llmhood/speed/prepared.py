"""Prepared weights: a quantized model saved as it runs, so that later loads skip preparing it.

Preparing an int4 model means reading every Q4_1 block, packing the codes into torch's
kernel layout and dequantizing a bf16 copy for the dense path: a second or more of
arithmetic on 2 cores, and much more while another process competes for them. The result
depends only on the model file, the mode and the software, so it is saved once, under
llmhood.speed.cache's directory with the source's fingerprint, and memory-mapped by later loads:
their cost is reading the file's header and tokenizer.

A stale file (the source changed, or torch, llmhood or the CPU did) is ignored and
rewritten; a file that cannot be read is treated as absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmhood.model import Transformer
from llmhood.model.fast.fusion import GROUPS
from llmhood.model.fast.quantized import Int4Linear, Int8Linear
from llmhood.speed import cache
from llmhood.weights import detect_format, read_checkpoint
from llmhood.weights.checkpoint import Checkpoint, build_model
from llmhood.weights.gguf_llama import read_gguf_checkpoint

KIND = "prepared"
FORMAT = 2  # bump when the saved layout changes


class _EveryName:
    """A container that holds every tensor name: read a GGUF header without its tensors."""

    def __contains__(self, name: object) -> bool:
        return True


def file_for(path: Path, mode_name: str) -> Path:
    entry = cache.entry_path(path, KIND)
    return entry.with_name(f"{entry.stem}-{mode_name}.pt")


def _skeleton_checkpoint(path: Path, progress: bool) -> Checkpoint:
    """Config, tokenizer and tensor shapes of the source; GGUF tensors are not even read."""
    if detect_format(path) == "gguf":  # nothing to dequantize, so no progress bar either
        return read_gguf_checkpoint(path, progress=False, raw=_EveryName())
    return read_checkpoint(path, progress)


def _module_record(module: nn.Module, embedding: torch.Tensor) -> tuple[dict, dict]:
    if isinstance(module, Int4Linear):
        tied = module.dense is not None and module.dense.data_ptr() == embedding.data_ptr()
        spec = {
            "kind": "int4",
            "repeat_input": module.repeat_input,
            "dense": "embedding" if tied else "own",
        }
        tensors = {"packed": module.packed, "scale_zero": module.scale_zero}
        if module.dense is not None and not tied:
            tensors["dense"] = module.dense
        return spec, tensors
    return {"kind": "int8"}, {"codes": module.codes, "scale": module.scale}


def save(path: Path, mode_name: str, model: Transformer) -> None:
    """Write `model` (a quantized mode's) for later `restore`; failures only cost time."""
    embedding = model.tok_embeddings.weight
    modules, buffers = {}, {}
    for name, module in model.named_modules():
        if isinstance(module, Int4Linear | Int8Linear):
            modules[name], buffers[name] = _module_record(module, embedding)
    removed = [
        f"layers.{i}.{part}.{name}"
        for i, layer in enumerate(model.layers)
        for part, groups in GROUPS.items()
        for names in groups.values()
        for name in names
        if not hasattr(getattr(layer, part), name)
    ]
    entry = {
        "format": FORMAT,
        "fingerprint": cache.fingerprint(path),
        "floats": {name: p.detach() for name, p in model.named_parameters()},
        "modules": modules,
        "buffers": buffers,
        "removed": removed,
    }
    target = file_for(path, mode_name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        torch.save(entry, tmp)
        tmp.replace(target)
    except OSError:
        return


def _load(path: Path, mode_name: str) -> dict[str, Any] | None:
    target = file_for(path, mode_name)
    if not target.is_file():
        return None
    try:
        entry = torch.load(target, map_location="cpu", mmap=True, weights_only=True)
    except Exception:  # a damaged or foreign file is no better than none
        return None
    if entry.get("format") != FORMAT or entry.get("fingerprint") != cache.fingerprint(path):
        return None
    return entry


def restore(
    path: Path, mode_name: str, dtype: torch.dtype, progress: bool = True
) -> tuple[Transformer, Checkpoint] | None:
    """The model saved for `path` in this mode, or None when there is no valid save."""
    entry = _load(path, mode_name)
    if entry is None:
        return None
    skeleton = _skeleton_checkpoint(path, progress)
    state = {name: torch.empty(t.shape, device="meta") for name, t in skeleton.state_dict.items()}
    state.update(entry["floats"])
    ckpt = Checkpoint(
        skeleton.config, state, skeleton.tokenizer, skeleton.source, skeleton.sampling
    )
    model = build_model(ckpt, dtype)
    for name in entry["removed"]:
        parent, _, leaf = name.rpartition(".")
        delattr(model.get_submodule(parent), leaf)
    for name, spec in entry["modules"].items():
        tensors = entry["buffers"][name]
        if spec["kind"] == "int8":
            module: nn.Module = Int8Linear(tensors["codes"], tensors["scale"])
        else:
            dense = tensors.get("dense")
            if spec["dense"] == "embedding":
                dense = model.tok_embeddings.weight.detach()
            packed, scale_zero = tensors["packed"], tensors["scale_zero"]
            module = Int4Linear(packed, scale_zero, spec["repeat_input"], dense)
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, module)
    return model, ckpt
