"""Training rows: the dataset formats people use, turned into token ids and a loss mask.

Three shapes of supervised rows are read, detected from their keys or named:

* alpaca: `instruction`, `input` (optional, appended to the instruction), `output`, and
  optionally `system` and `history` ([[user, assistant], ...] turns before this one);
* sharegpt: `conversations: [{"from": ..., "value": ...}]` with human, gpt, system,
  function_call (an assistant turn) and observation (a tool's answer);
* openai: `messages: [{"role": ..., "content": ...}]`.

Each becomes a list of chat messages, rendered with the model's own chat template. Only the
assistant's tokens are trained, each turn's closing end-of-turn token included (a model
that never learns to stop talks on forever), unless the prompt is trained too. The mask
comes from token *positions*: the template is rendered up to each assistant turn and the
turn's tokens are those that rendering adds. Token ids cannot say which tokens are the
assistant's: SmolLM2's padding token is its end-of-turn token, and the same ids occur in
prompts and answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmhood.errors import LLMHoodError
from llmhood.llm import END_OF_TURN
from llmhood.tokenizer import BPETokenizer

FORMATS = ("alpaca", "sharegpt", "openai")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
}


class RowError(LLMHoodError):
    """A row that cannot be trained on, and why: reported and skipped unless strict."""


@dataclass
class Example:
    ids: list[int]
    mask: list[bool]  # True where the token is trained

    @property
    def trained(self) -> int:
        return sum(self.mask)


def detect_format(row: Mapping[str, Any]) -> str:
    if "messages" in row:
        return "openai"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row or "output" in row:
        return "alpaca"
    raise RowError(
        f"Cannot tell this row's format from its keys ({', '.join(sorted(row)) or 'none'}): "
        "expected messages (openai), conversations (sharegpt) or instruction/output (alpaca)."
    )


def _text(row: Mapping[str, Any], key: str, required: bool = True) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        what = "is missing" if value is None else f"is a {type(value).__name__}, not text"
        raise RowError(f"The field {key!r} {what}.")
    return value


def to_messages(row: Mapping[str, Any], fmt: str = "auto") -> list[dict[str, str]]:
    """The row as chat messages [{role, content}], checked: LLMHoodError (RowError) names
    what is wrong."""
    if not isinstance(row, Mapping):
        raise RowError(f"A row must be a JSON object, not a {type(row).__name__}.")
    fmt = detect_format(row) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise LLMHoodError(f"Unknown format {fmt!r}; choose auto or one of: {', '.join(FORMATS)}.")
    if fmt == "alpaca":
        messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        for i, turn in enumerate(row.get("history") or []):
            if not (isinstance(turn, Sequence) and len(turn) == 2):
                raise RowError(f"history[{i}] must be a [user, assistant] pair.")
            messages += [{"role": "user", "content": str(turn[0])},
                         {"role": "assistant", "content": str(turn[1])}]  # fmt: skip
        prompt = _text(row, "instruction")
        extra = _text(row, "input", required=False)
        prompt = f"{prompt}\n{extra}" if extra else prompt
        messages += [{"role": "user", "content": prompt},
                     {"role": "assistant", "content": _text(row, "output")}]  # fmt: skip
    else:
        key, role_key, content_key = (
            ("conversations", "from", "value") if fmt == "sharegpt"
            else ("messages", "role", "content")
        )  # fmt: skip
        turns = row.get(key)
        if not isinstance(turns, list) or not turns:
            raise RowError(f"The field {key!r} must be a non-empty list of turns.")
        messages = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, Mapping):
                raise RowError(
                    f"{key}[{i}] must be an object with {role_key!r} and {content_key!r}."
                )
            role = turn.get(role_key)
            if fmt == "sharegpt":
                if role not in SHAREGPT_ROLES:
                    raise RowError(f"{key}[{i}] has the unknown role {role!r}; known: "
                                   f"{', '.join(SHAREGPT_ROLES)}.")  # fmt: skip
                role = SHAREGPT_ROLES[role]
            if not isinstance(role, str):
                raise RowError(f"{key}[{i}] has no {role_key!r}.")
            messages.append({"role": role, "content": _text(turn, content_key)})
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and not m["content"].strip():
            raise RowError(f"Assistant turn {i} is empty: there is nothing to train on.")
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError("The row has no assistant turn: there is nothing to train on.")
    return messages


def encode_chat(
    tokenizer: BPETokenizer, messages: list[dict[str, str]], train_on_prompt: bool = False
) -> Example:
    """Token ids of the rendered conversation and which of them are trained.

    The conversation is tokenized once, whole. For each assistant turn, the template is
    rendered up to it (with the generation prompt) and through it; the turn's tokens are
    the positions between the two, trained up to and including the first end-of-turn token
    (the template's separator after it is not the model's to say)."""
    ids = tokenizer.encode(tokenizer.apply_chat_template(messages, False))
    stops = {tokenizer.token_to_id(t) for t in END_OF_TURN} | {tokenizer.eos_id}
    mask = [train_on_prompt] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = _prefix_length(tokenizer, messages[:i], True, ids)
        last = i == len(messages) - 1  # through the last turn is the whole conversation
        end = len(ids) if last else _prefix_length(tokenizer, messages[: i + 1], False, ids)
        for t in range(start, end):
            mask[t] = True
            if ids[t] in stops:
                break
    # No token predicts the first one; in a packed sequence the token before it would be
    # the previous row's last.
    mask[0] = False
    return Example(ids, mask)


def _prefix_length(
    tokenizer: BPETokenizer, messages: list[dict[str, str]], generation: bool, ids: list[int]
) -> int:
    """How many tokens of `ids` the rendering of `messages` covers; its tokens must be a
    prefix of the whole conversation's, as they are for templates that end each turn with
    a special token."""
    part = tokenizer.encode(tokenizer.apply_chat_template(messages, generation))
    if ids[: len(part)] != part:
        raise LLMHoodError(
            "This chat template renders a turn differently when more follow it, so the "
            "assistant's tokens cannot be located by position; llmhood cannot mask it."
        )
    return len(part)
