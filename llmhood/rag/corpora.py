"""Labelled evaluation corpora: documents shipped or found offline, and the questions they answer.

A retrieval score means something only against questions whose answers are known, so llmhood
carries two such sets, neither of which needs a download:

- **pydoc**: CPython's own documentation, the help() topics of `pydoc_data.topics`, one file
  per topic (`naming.txt`, `atom-identifiers.txt`, ...), with English questions. The texts come
  with the running Python, not with llmhood, so they change between Python versions; the labels
  were made on Python 3.11 (`LABELLED_PYTHON`), and writing the corpus under another version
  warns that recall may then be measured against moved or reworded answers.
- **zh**: Chinese explanations of the concepts llmhood implements (RMSNorm, RoPE, GQA, the KV
  cache, BPE, sampling, LoRA, GGUF, BM25, ...), written for this project and shipped as package
  data (`llmhood/rag/data/zh/*.md`), with Chinese questions.

A question file is JSON Lines, one question a line:

    {"id": "py-001", "question": "...", "relevant": ["assert.txt"], "evidence": ["..."]}

`relevant` lists the source paths, relative to the corpus directory, of every file that answers
the question; a retrieved passage counts as relevant when its file is listed. `evidence` quotes
the answering passage (or passages, when a question has two kinds of answer) as it stands in the
text, whitespace aside: the labels are exactly the files that contain a quote, which is what
`tests/test_corpora.py` checks, so a label cannot silently drift from the text it names.

The questions are phrased the way a user asks (paraphrases, synonyms, short keyword queries
and long ones), not copied sentences, so that keyword matching alone does not solve them.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from llmhood.errors import LLMHoodError

LABELLED_PYTHON = (3, 11)  # the Python whose pydoc topics the English labels were made on
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a topic name usable as a file name as it is


def version_note(running: tuple[int, int]) -> str | None:
    """Why the pydoc labels may not fit Python `running` (major, minor); None on 3.11."""
    if tuple(running) == LABELLED_PYTHON:
        return None
    made, here = ".".join(map(str, LABELLED_PYTHON)), ".".join(map(str, running))
    return (
        f"The pydoc questions were labelled on Python {made}'s help topics, and this is Python "
        f"{here}, whose topics may be worded or split differently: recall measured on them is "
        f"not comparable to the figures reported for {made}. Run it with Python {made} for those."
    )


def write_pydoc_corpus(directory: Path) -> list[Path]:
    """Write each of the running Python's help() topics to `directory` as `<topic>.txt`.

    Returns the written paths, sorted. Other files already in `directory` are left alone (and
    would be ingested with the corpus), so give it a directory of its own. Warns when the running
    Python is not the one the questions were labelled on (see `version_note`).
    """
    from pydoc_data.topics import topics

    note = version_note(sys.version_info[:2])
    if note:
        warnings.warn(note, stacklevel=2)
    unsafe = sorted(name for name in topics if not _SAFE_NAME.fullmatch(name))
    if unsafe:
        raise LLMHoodError(
            f"This Python's help topics {unsafe} are not usable as file names; "
            f"write the pydoc corpus with Python {'.'.join(map(str, LABELLED_PYTHON))}."
        )
    return _write(directory, {f"{name}.txt": text for name, text in topics.items()})


def write_zh_corpus(directory: Path) -> list[Path]:
    """Copy the shipped Chinese documents (`data/zh/*.md`) to `directory`; the sorted paths."""
    shipped = files("llmhood.rag") / "data" / "zh"
    texts = {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in shipped.iterdir()
        if entry.name.endswith(".md")
    }
    return _write(directory, texts)


CORPORA: dict[str, Callable[[Path], list[Path]]] = {
    "pydoc": write_pydoc_corpus,
    "zh": write_zh_corpus,
}


def questions(name: str) -> Path:
    """The path of the shipped question file of corpus `name` ("pydoc" or "zh")."""
    _check(name)
    return Path(str(files("llmhood.rag") / "data" / f"{name}_qa.jsonl"))


def write_corpus(name: str, directory: Path) -> list[Path]:
    """Write corpus `name` to `directory` (see `CORPORA`); the sorted paths written."""
    _check(name)
    return CORPORA[name](directory)


def _check(name: str) -> None:
    if name not in CORPORA:
        raise LLMHoodError(
            f"There is no labelled corpus named {name!r}; the corpora are: {', '.join(CORPORA)}."
        )


def _write(directory: Path, texts: dict[str, str]) -> list[Path]:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in sorted(texts.items()):
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
