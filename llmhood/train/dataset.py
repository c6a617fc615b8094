"""Training files into examples: every row read, checked, and either kept or reported.

A long run must not die on row 80,000 for a typo, nor train on a broken row in silence. So
each row that cannot be used (malformed JSON, missing fields, an empty answer, nothing
left to train after truncation) becomes a `Dropped` entry naming the file, the line and
the reason, and the run goes on; `strict` turns the first one into an error. Rows longer
than the sequence length are truncated or dropped, as configured, and counted either way.

What a stage reads:
* sft: chat rows (llmhood.train.data) from JSONL or a JSON list;
* dpo: `prompt` (text or messages), `chosen`, `rejected` (text or messages); or the
  sharegpt preference form, `conversations` plus `chosen`/`rejected` turns;
* pretrain and grpo prompts: raw text files, or JSONL with `text` (pretrain) or
  `prompt` / `messages` (grpo).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmhood.errors import LLMHoodError
from llmhood.tokenizer import BPETokenizer
from llmhood.train.data import SHAREGPT_ROLES, Example, RowError, encode_chat, to_messages

TEXT_SUFFIXES = (".txt", ".md", ".text")


@dataclass
class Dropped:
    where: str  # "file:line"
    reason: str


@dataclass
class DataReport:
    """What became of a file's rows."""

    rows: int = 0
    dropped: list[Dropped] = field(default_factory=list)
    truncated: int = 0
    lengths: list[int] = field(default_factory=list)  # tokens of each kept example
    trained: int = 0  # trained tokens of all kept examples

    @property
    def kept(self) -> int:
        return len(self.lengths)

    def drop(self, where: str, reason: str, strict: bool) -> None:
        if strict:
            raise LLMHoodError(f"{where}: {reason} (--strict stops at the first bad row).")
        self.dropped.append(Dropped(where, reason))

    def summary(self) -> str:
        # Prompts for GRPO train no token of their own: their completions are sampled.
        trained = f"; {self.trained} trained tokens" if self.trained else ""
        lines = [
            f"{self.rows} rows: {self.kept} kept, {len(self.dropped)} dropped, "
            f"{self.truncated} truncated{trained}"
        ]
        if self.lengths:
            q = statistics.quantiles(self.lengths, n=10) if len(self.lengths) > 1 else self.lengths
            lines.append(
                f"tokens per example: min {min(self.lengths)}, median "
                f"{statistics.median(self.lengths):g}, p90 {q[-1]:g}, max {max(self.lengths)}"
            )
        return "\n".join(lines)


def fingerprint(path: str | Path) -> str:
    """A hash of the data's bytes: a resumed run must see the same data."""
    digest = hashlib.sha256()
    for p in data_files(path):
        digest.update(p.name.encode())
        digest.update(p.read_bytes())
    return digest.hexdigest()[:16]


def data_files(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise LLMHoodError(f"The data directory {path} holds no files.")
        return files
    if not path.is_file():
        raise LLMHoodError(f"The data file {path} does not exist.")
    return [path]


def read_rows(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(where, row) for each row of a JSONL file or a JSON list; a line that is not JSON
    gives (where, RowError) so the caller can count it and go on."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise LLMHoodError(f"{path} is not UTF-8 text ({e}).") from e
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise LLMHoodError(
                f"{path} is not valid JSON: {e}. (JSON Lines files end in .jsonl.)"
            ) from e
        if not isinstance(rows, list):
            raise LLMHoodError(
                f"{path} must hold a JSON list of rows, not a {type(rows).__name__}."
            )
        for i, row in enumerate(rows):
            yield f"{path}:row {i + 1}", row
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", json.loads(line)
        except json.JSONDecodeError as e:
            yield f"{path}:{number}", RowError(f"malformed JSON ({e.msg} at column {e.colno})")


def _each_row(
    path: str | Path, report: DataReport, strict: bool, use: Callable[[Any], None]
) -> None:
    """Give each row of the data to `use`; a row it (or JSON) rejects with RowError is
    reported by file and line, and the rest go on."""
    for file in data_files(path):
        for where, row in read_rows(file):
            report.rows += 1
            try:
                if isinstance(row, RowError):
                    raise row
                use(row)
            except RowError as e:
                report.drop(where, str(e), strict)


def _fit(example: Example, seq_len: int, too_long: str, report: DataReport) -> Example:
    """The example cut to seq_len tokens, or a RowError when it is to be dropped."""
    if len(example.ids) <= seq_len:
        return example
    if too_long == "drop":
        raise RowError(
            f"{len(example.ids)} tokens, more than --seq-len {seq_len} (--too-long drop)"
        )
    report.truncated += 1
    cut = Example(example.ids[:seq_len], example.mask[:seq_len])
    if not cut.trained:
        raise RowError(
            f"{len(example.ids)} tokens; cut to --seq-len {seq_len}, none of its trained "
            "tokens is left"
        )
    return cut


def _keep(report: DataReport, example: Example) -> Example:
    report.lengths.append(len(example.ids))
    report.trained += example.trained
    return example


def sft_examples(
    path: str | Path,
    tokenizer: BPETokenizer,
    *,
    fmt: str = "auto",
    seq_len: int = 512,
    too_long: str = "truncate",
    train_on_prompt: bool = False,
    strict: bool = False,
) -> tuple[list[Example], DataReport]:
    report = DataReport()
    examples = []

    def use(row: Any) -> None:
        example = encode_chat(tokenizer, to_messages(row, fmt), train_on_prompt)
        examples.append(_keep(report, _fit(example, seq_len, too_long, report)))

    _each_row(path, report, strict, use)
    return examples, report


# ---- pretraining ---------------------------------------------------------------------------


def pretrain_examples(
    path: str | Path, tokenizer: BPETokenizer, *, seq_len: int = 512, strict: bool = False
) -> tuple[list[Example], DataReport]:
    """Documents end to end, each closed by EOS, cut into blocks of seq_len + 1 tokens that
    overlap by one (every token but a block's first is predicted). The last short block is
    kept when it has anything to train."""
    report = DataReport()
    stream: list[int] = []
    for file in data_files(path):
        if file.suffix in TEXT_SUFFIXES:
            docs = [(str(file), file.read_text(encoding="utf-8", errors="replace"))]
        else:
            docs = []
            for where, row in read_rows(file):
                report.rows += 1
                text = row.get("text") if isinstance(row, Mapping) else None
                if isinstance(row, RowError):
                    report.drop(where, str(row), strict)
                elif not isinstance(text, str) or not text.strip():
                    report.drop(where, "no non-empty 'text' field", strict)
                else:
                    docs.append((where, text))
        for _, text in docs:
            report.rows += file.suffix in TEXT_SUFFIXES
            stream += [*tokenizer.encode(text, add_bos=tokenizer.add_bos), tokenizer.eos_id]
    examples = []
    for start in range(0, max(1, len(stream) - 1), seq_len):
        block = stream[start : start + seq_len + 1]
        if len(block) > 1:
            examples.append(_keep(report, Example(block, [False] + [True] * (len(block) - 1))))
    if not examples:
        raise LLMHoodError(f"{path} holds no text to pretrain on.")
    return examples, report


# ---- preferences ---------------------------------------------------------------------------


@dataclass
class Pair:
    """A DPO row: the same prompt with the preferred and the rejected answer."""

    chosen: Example
    rejected: Example


def _turns(value: Any, key: str) -> list[dict[str, str]]:
    """A DPO field as chat messages: text, one message, or a list of messages."""
    if isinstance(value, str):
        return [{"role": "user" if key == "prompt" else "assistant", "content": value}]
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RowError(f"The field {key!r} is missing or empty: text or messages are needed.")
    messages = []
    for i, turn in enumerate(value):
        if not isinstance(turn, Mapping):
            raise RowError(f"{key}[{i}] must be a message object.")
        if "from" in turn:  # sharegpt
            role = SHAREGPT_ROLES.get(turn.get("from"))
            content = turn.get("value")
        else:
            role, content = turn.get("role"), turn.get("content")
        if role is None or not isinstance(content, str):
            raise RowError(f"{key}[{i}] needs a role and text content.")
        messages.append({"role": role, "content": content})
    return messages


def preference_messages(row: Any) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen, rejected) messages of a DPO row in either form."""
    if not isinstance(row, Mapping):
        raise RowError(f"A row must be a JSON object, not a {type(row).__name__}.")
    prompt_key = "conversations" if "conversations" in row else "prompt"
    missing = [k for k in (prompt_key, "chosen", "rejected") if k not in row]
    if missing:
        raise RowError(
            "a DPO row needs prompt (or conversations), chosen and rejected; missing: "
            + ", ".join(missing)
        )
    prompt = _turns(row[prompt_key], "prompt")
    chosen, rejected = _turns(row["chosen"], "chosen"), _turns(row["rejected"], "rejected")
    for key, answer in (("chosen", chosen), ("rejected", rejected)):
        if not any(m["role"] == "assistant" and m["content"].strip() for m in answer):
            raise RowError(f"The {key} answer is empty: there is nothing to compare.")
    return prompt, chosen, rejected


def _answer_only(tokenizer: BPETokenizer, prompt: list[dict], answer: list[dict]) -> Example:
    """The conversation with only the answer's tokens trained: DPO compares the answers'
    likelihoods, and assistant turns inside the prompt are context, not the preference."""
    example = encode_chat(tokenizer, prompt + answer)
    start = len(tokenizer.encode(tokenizer.apply_chat_template(prompt, True)))
    mask = [trained and t >= start for t, trained in enumerate(example.mask)]
    return Example(example.ids, mask)


def dpo_pairs(
    path: str | Path,
    tokenizer: BPETokenizer,
    *,
    seq_len: int = 512,
    too_long: str = "truncate",
    strict: bool = False,
) -> tuple[list[Pair], DataReport]:
    report = DataReport()
    pairs = []

    def use(row: Any) -> None:
        prompt, chosen, rejected = preference_messages(row)
        both = [
            _fit(_answer_only(tokenizer, prompt, answer), seq_len, too_long, report)
            for answer in (chosen, rejected)
        ]
        pairs.append(Pair(*(_keep(report, e) for e in both)))

    _each_row(path, report, strict, use)
    return pairs, report


def prompts(
    path: str | Path, tokenizer: BPETokenizer, strict: bool = False
) -> tuple[list[str], DataReport]:
    """GRPO's prompts, rendered with the chat template: JSONL rows with `prompt` (text or
    messages) or `messages`, or a text file with one prompt per line."""
    report = DataReport()
    rendered = []
    for file in data_files(path):
        if file.suffix in TEXT_SUFFIXES:
            rows = [
                (f"{file}:{i}", {"prompt": line})
                for i, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1)
                if line.strip()
            ]
        else:
            rows = list(read_rows(file))
        for where, row in rows:
            report.rows += 1
            try:
                if isinstance(row, RowError):
                    raise row
                if not isinstance(row, Mapping) or not ({"prompt", "messages"} & row.keys()):
                    raise RowError("a GRPO row needs a 'prompt' (text or messages) or 'messages'")
                messages = _turns(row.get("prompt", row.get("messages")), "prompt")
                text = tokenizer.apply_chat_template(messages, True)
                rendered.append(text)
                report.lengths.append(len(tokenizer.encode(text)))
            except RowError as e:
                report.drop(where, str(e), strict)
    return rendered, report
