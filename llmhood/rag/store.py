"""A knowledge base on disk: whole versions, switched atomically.

    kb/mydocs/
      CURRENT          the name of the version in use ("v000004"), replaced atomically
      v000004/         config.json  manifest.json  chunks.jsonl  vectors.npy  bm25/  (index files)
      .lock            held while an ingest runs

An ingest never edits the version in use. It writes a complete new version into a
temporary directory, syncs it, renames it into place and only then points CURRENT at it
(`os.replace` of a one-line file is atomic on POSIX and Windows). A kill at any moment
leaves CURRENT naming a complete version: the previous one until the switch, the new one
after it. Leftovers of a killed ingest (`.tmp-*` directories) are removed by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmhood.durable import fsync_path, fsync_tree
from llmhood.errors import LLMHoodError

POINTER = "CURRENT"
LOCK = ".lock"
PARTIAL = ".tmp-"


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


class Store:
    """The versions of one knowledge base directory."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def exists(self) -> bool:
        return (self.root / POINTER).is_file()

    def current(self) -> Path:
        """The version in use, or a clear error for a directory that holds none."""
        pointer = self.root / POINTER
        if not pointer.is_file():
            if not self.root.exists():
                raise LLMHoodError(
                    f"There is no knowledge base at {self.root}. Build one with "
                    f"`llmhood rag ingest DOCS_DIR --kb {self.root}`."
                )
            raise LLMHoodError(
                f"{self.root} is not a knowledge base (it has no {POINTER} file). Build one "
                f"there with `llmhood rag ingest DOCS_DIR --kb {self.root}`, or pass the "
                "directory of an existing one."
            )
        version = self.root / pointer.read_text(encoding="utf-8").strip()
        if not (version / "config.json").is_file():
            raise LLMHoodError(
                f"The knowledge base at {self.root} points at {version.name}, which is "
                "missing or incomplete; rebuild it with `llmhood rag ingest DOCS_DIR --kb "
                f"{self.root} --rebuild`."
            )
        return version

    def check_target(self) -> None:
        """Refuse to build inside a directory of someone else's files."""
        if self.root.exists() and not self.root.is_dir():
            raise LLMHoodError(f"--kb {self.root} is a file, not a directory.")
        if self.root.is_dir() and not self.exists():
            foreign = [p.name for p in self.root.iterdir() if p.name != LOCK]
            if foreign:
                raise LLMHoodError(
                    f"{self.root} already holds files that are not a knowledge base "
                    f"({', '.join(sorted(foreign)[:3])}...). Choose an empty or new directory "
                    "for --kb: ingest would not mix its files with yours."
                )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One ingest at a time; a second one fails at once instead of racing the first."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LLMHoodError(
                    f"Another ingest is writing {self.root} right now; wait for it to finish."
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def remove_partial(self) -> list[str]:
        """Leftovers of a killed ingest; call with the lock held."""
        removed = []
        for path in self.root.glob(PARTIAL + "*"):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path.name)
        return removed

    def next_name(self) -> str:
        numbers = [int(p.name[1:]) for p in self.root.glob("v*") if p.name[1:].isdigit()]
        return f"v{max(numbers, default=0) + 1:06d}"

    def partial(self, name: str) -> Path:
        path = self.root / f"{PARTIAL}{name}-{os.getpid()}"
        path.mkdir(parents=True)
        return path

    def commit(self, partial: Path, name: str) -> tuple[Path, Path | None]:
        """Make a finished partial version the current one. Returns (new, previous)."""
        previous = self.current() if self.exists() else None
        fsync_tree(partial)
        final = self.root / name
        os.replace(partial, final)
        pointer_tmp = self.root / f"{PARTIAL}{POINTER}-{os.getpid()}"
        pointer_tmp.write_text(name + "\n", encoding="utf-8")
        with open(pointer_tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(pointer_tmp, self.root / POINTER)
        fsync_path(self.root)
        return final, previous

    def prune(self, keep: Path) -> None:
        """Delete every version but `keep` (after a switch: nothing points at them)."""
        for path in self.root.glob("v*"):
            if path.is_dir() and path != keep and path.name[1:].isdigit():
                shutil.rmtree(path, ignore_errors=True)
