"""Durable writes: what must reach the disk before a rename may point at it.

A rename is atomic, but without an fsync of the file and then of its directory, a crash can
leave the new name pointing at a file whose contents never reached the disk. Checkpoints
(llmhood.train.checkpoints) and knowledge-base versions (llmhood.rag.store) both use these.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """Flush one file or directory (a directory's fsync makes its entries durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(directory: Path) -> None:
    """Flush every file below `directory`, deepest first, then the directory itself."""
    for path in sorted(directory.rglob("*"), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            fsync_path(path)
    fsync_path(directory)
