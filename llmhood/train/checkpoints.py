"""Training checkpoints that a kill at any moment cannot break.

A checkpoint is a directory, `checkpoints/step-000120/`, written in full under a temporary
name and then renamed: a rename within one file system is atomic, so the directory either
exists whole or not at all. The file `checkpoints/latest` names the newest one and is
replaced atomically the same way, after the directory is in place. A process killed in
mid-write leaves at worst a stray temporary directory, which the next save removes, and
`latest` still names a complete checkpoint.

Each holds what an exact resume needs: the trainable tensors, the optimiser's and the
scheduler's state, every random generator's state and the step reached (which fixes the
position in the data: llmhood.train.batches).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from llmhood.durable import fsync_path
from llmhood.errors import LLMHoodError

LATEST = "latest"
TENSORS = "trainable.safetensors"


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """A temporary directory beside `final` to fill; renamed to `final` when the block ends
    without error, removed otherwise."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.iterdir():
            with f.open("rb") as handle:
                os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_path(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save(
    root: Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    trainer_state: dict[str, Any],
    info: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint `step` under root/checkpoints and point `latest` at it; keep the
    newest `keep` (at least this one)."""
    checkpoints = root / "checkpoints"
    final = checkpoints / f"step-{step:06d}"
    for stray in checkpoints.glob(".tmp-*"):  # left by a process killed mid-write
        shutil.rmtree(stray, ignore_errors=True) if stray.is_dir() else stray.unlink()
    with atomic_dir(final) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp / TENSORS)
        torch.save({**trainer_state, "rng": rng_state()}, tmp / "trainer.pt")
        (tmp / "info.json").write_text(json.dumps({"step": step, **info}, indent=2) + "\n")
    atomic_write_text(checkpoints / LATEST, final.name + "\n")
    for old in sorted(checkpoints.glob("step-*"))[: -max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def find(path: str | Path) -> Path:
    """The checkpoint to resume from: `path` itself, or the one a run directory's
    `checkpoints/latest` names."""
    path = Path(path)
    if (path / TENSORS).is_file():
        return path
    pointer = path / "checkpoints" / LATEST
    if pointer.is_file():
        chosen = path / "checkpoints" / pointer.read_text().strip()
        if (chosen / TENSORS).is_file():
            return chosen
    raise LLMHoodError(
        f"{path} holds no checkpoint to resume from: give a run directory (its --out) with "
        "checkpoints/latest, or a checkpoint directory checkpoints/step-N."
    )


def load(checkpoint: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(trainable tensors, trainer state with `rng`, info) of a checkpoint directory."""
    try:
        tensors = load_file(checkpoint / TENSORS)
        state = torch.load(checkpoint / "trainer.pt", weights_only=False)
        info = json.loads((checkpoint / "info.json").read_text())
    except (OSError, RuntimeError, ValueError) as e:
        raise LLMHoodError(f"The checkpoint {checkpoint} cannot be read ({e}).") from e
    return tensors, state, info
