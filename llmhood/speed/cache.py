"""What llmhood remembers about a model file between runs.

Some answers cost seconds and depend only on the file and the software that computed them:
the quality guard's perplexities (llmhood.speed.guard) are one. They are kept as small JSON
entries under `~/.cache/llmhood` (or `$LLMHOOD_CACHE`), one per model path and kind.

An entry records the *fingerprint* of what it was computed from: the file's resolved
path, size and modification time, the torch and llmhood versions, and the instruction
sets in use (llmhood.speed.cpu): the kernels, and so the numbers, differ between them.
An entry whose fingerprint no longer matches is stale: it is ignored and overwritten, so
replacing or editing a model file invalidates what was remembered about it. Size and
mtime, not a hash, because hashing a large model file would take longer than what the cache saves.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from llmhood.speed import cpu

CACHE_ENV = "LLMHOOD_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "llmhood")


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def fingerprint(path: str | Path) -> dict[str, Any]:
    """What an entry about `path` depends on; a directory counts every file inside it."""
    from llmhood import __version__

    path = Path(path).resolve()
    stats = [p.stat() for p in _files(path)]
    return {
        "path": str(path),
        "size": sum(s.st_size for s in stats),
        "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
        "files": len(stats),
        "torch": str(torch.__version__),
        "llmhood": __version__,
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "bf16": cpu.bf16_supported(),
    }


def entry_path(path: str | Path, kind: str) -> Path:
    key = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:24]
    return cache_dir() / kind / f"{key}.json"


def read(path: str | Path, kind: str) -> dict[str, Any] | None:
    """The entry of this kind for `path`, or None when there is none or it is stale."""
    try:
        entry = json.loads(entry_path(path, kind).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("fingerprint") != fingerprint(path):
        return None
    return entry.get("data")


def write(path: str | Path, kind: str, data: dict[str, Any]) -> None:
    """Store `data` for `path`, replacing any earlier entry. A cache that cannot be written
    (read-only home, full disk) only costs the recomputation next time."""
    target = entry_path(path, kind)
    entry = {"fingerprint": fingerprint(path), "data": data}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entry, indent=1), encoding="utf-8")
        tmp.replace(target)  # atomic: a concurrent reader sees the old entry or the new one
    except OSError:
        return
