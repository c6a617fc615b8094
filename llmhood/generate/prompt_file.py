"""Many prompts from one file, for `llmhood generate --prompts-file`.

Two formats, told apart without a flag:

* plain text — one prompt per line;
* JSON Lines — one object per line with the prompt in its "prompt" field, for prompts that
  span several lines (a newline inside a JSON string is written `\\n`).

A file is read as JSON Lines when its name ends in `.jsonl`, or when every one of its
lines parses as a JSON object: a file of objects without "prompt" fields was almost
certainly meant as JSON Lines, and generating from its raw text would only hide the
mistake. Blank lines are skipped in both formats; every prompt keeps its line number, so
that errors and results can point at it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llmhood.errors import LLMHoodError

EXAMPLE = '{"prompt": "Once upon a time"}'


@dataclass
class FilePrompt:
    line: int  # 1-based line number in the file
    text: str


def read_prompts(path: str | Path) -> list[FilePrompt]:
    """The prompts of a text or JSON Lines file, in file order; LLMHoodError if there are none."""
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8-sig")  # -sig: drop a byte-order mark
    except FileNotFoundError:
        raise LLMHoodError(
            f"The prompts file {path} does not exist. Give the path of a text file with one "
            f"prompt per line, or of a .jsonl file with one object such as {EXAMPLE} per line."
        ) from None
    except UnicodeDecodeError as e:
        raise LLMHoodError(
            f"The prompts file {path} is not UTF-8 text (byte {e.start} cannot be decoded). "
            "Save it as UTF-8."
        ) from None
    except OSError as e:
        raise LLMHoodError(f"Cannot read the prompts file {path}: {e.strerror}.") from None
    lines = [
        (number, line.removesuffix("\r"))
        for number, line in enumerate(content.split("\n"), start=1)
        if line.strip()
    ]
    if not lines:
        raise LLMHoodError(
            f"The prompts file {path} holds no prompts. Write one prompt per line, or, in a "
            f".jsonl file, one object such as {EXAMPLE} per line."
        )
    if path.suffix.lower() == ".jsonl" or all(_is_json_object(line) for _, line in lines):
        return [FilePrompt(number, _json_prompt(path, number, line)) for number, line in lines]
    return [FilePrompt(number, line) for number, line in lines]


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _json_prompt(path: Path, number: int, line: str) -> str:
    """The "prompt" string of one JSON Lines line, or an LLMHoodError naming the line."""
    where = f"Line {number} of the prompts file {path}"
    fix = f"Each line of a JSON Lines prompts file must be one object such as {EXAMPLE}."
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise LLMHoodError(
            f"{where} is not valid JSON ({e.msg}, at column {e.colno}). {fix}"
        ) from None
    if not isinstance(record, dict):
        raise LLMHoodError(f"{where} is a JSON {_json_type(record)}, not an object. {fix}")
    if "prompt" not in record:
        raise LLMHoodError(f'{where} has no "prompt" field. {fix}')
    if not isinstance(record["prompt"], str):
        kind = _json_type(record["prompt"])
        raise LLMHoodError(f'{where} has a "prompt" that is a {kind}, not a string. {fix}')
    return record["prompt"]


def _json_type(value: object) -> str:
    """JSON's name for the type of a parsed value: "array", not Python's "list"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {list: "array", dict: "object", str: "string", int: "number", float: "number"}
    return names[type(value)]
