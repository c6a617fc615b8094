"""File tools: read files and list directories under one allowed root, and nothing else.

    files = Files("docs/")
    tools = [files.read_file, files.list_directory]     # Tool.from_function on each

A path is joined to the root and resolved (`..`, symlinks) before it is used, and refused
unless what it resolves to is inside the root: a link inside pointing outside is refused like
`../../etc/passwd`. (A link swapped between the check and the read would slip through: the
root is meant to hold files the agent may see, not files an adversary can change.)

Text comes back as UTF-8. A file with NUL bytes is called binary and refused; any other bytes
that are not UTF-8 show as U+FFFD, with a note saying how many, so a Latin-1 file stays
readable. Reads stop at `max_bytes`, saying where to continue with `offset`, since a model
cannot use more text than its context holds.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from llmhood.errors import LLMHoodError

MAX_BYTES = 16 << 10  # bytes per read: about 4,000 tokens of English, half SmolLM2's context
MAX_ENTRIES = 200  # entries per listing


class FileToolError(LLMHoodError):
    """A path or file the file tools refuse; the message says what to do instead."""


class Files:
    def __init__(self, root: str | Path, max_bytes: int = MAX_BYTES):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise LLMHoodError(f"The allowed directory {root} is not a directory; give the "
                               "folder whose files the agent may read.")  # fmt: skip
        if max_bytes < 4:
            raise LLMHoodError(f"max_bytes must be at least 4 (the longest UTF-8 character), "
                               f"not {max_bytes}.")  # fmt: skip
        self.max_bytes = max_bytes

    def resolve(self, path: str) -> Path:
        """`path` (relative to the root, or absolute inside it) resolved, or refused."""
        resolved = (self.root / path).resolve()
        if not resolved.is_relative_to(self.root):
            raise FileToolError(f"{path!r} is outside the allowed directory. Paths are relative"
                                " to it: list_directory('.') shows what is there.")  # fmt: skip
        if not resolved.exists():
            raise FileToolError(f"{path!r} does not exist. list_directory('.') shows the files "
                                "that do.")  # fmt: skip
        return resolved

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() or "."

    def read_file(self, path: str, offset: int = 0) -> str:
        """Read a text file from the allowed directory.

        Args:
            path: The file's path, relative to the allowed directory.
            offset: The byte to start reading at, to continue a file that was cut short.
        """
        file = self.resolve(path)
        if file.is_dir():
            raise FileToolError(f"{path!r} is a directory; list_directory({path!r}) lists it.")
        size = file.stat().st_size
        if not 0 <= offset <= size:
            raise FileToolError(f"offset {offset} is outside {path!r}, which has {size} bytes.")
        with file.open("rb") as handle:
            handle.seek(offset)
            data = handle.read(self.max_bytes)
        if b"\0" in data:
            raise FileToolError(f"{path!r} is a binary file (it holds NUL bytes), not text.")
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        end = offset + len(data)
        text = decoder.decode(data, final=end == size)
        end -= len(decoder.getstate()[0])  # a character cut at the end is read next time
        notes = []
        if (bad := text.count("\ufffd")) > 0:
            notes.append(f"{bad} byte sequences were not UTF-8 and show as \ufffd")
        if end < size:
            notes.append(f"cut at byte {end} of {size}: read_file({path!r}, offset={end}) "
                         "continues")  # fmt: skip
        return text + "".join(f"\n[{note}]" for note in notes)

    def list_directory(self, path: str = ".") -> str:
        """List the files and folders in a directory of the allowed directory.

        Args:
            path: The directory, relative to the allowed directory; "." is its top.
        """
        folder = self.resolve(path)
        if not folder.is_dir():
            raise FileToolError(f"{path!r} is a file; read_file({path!r}) reads it.")
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
        lines = [f"{entry.name}/" if entry.is_dir() else f"{entry.name} ({size_of(entry)})"
                 for entry in entries[:MAX_ENTRIES]]  # fmt: skip
        if len(entries) > MAX_ENTRIES:
            lines.append(f"[{len(entries) - MAX_ENTRIES} more entries not shown]")
        return f"{self.relative(folder)}:\n" + ("\n".join(lines) or "(empty)")


def size_of(path: Path) -> str:
    try:
        return f"{path.stat().st_size} bytes"
    except OSError:
        return "unreadable"
