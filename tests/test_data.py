"""Training rows: the three formats into chat messages, and the loss mask on SmolLM2's own
chat template, checked by decoding exactly the trained tokens."""

from __future__ import annotations

import pytest

from llmhood.errors import LLMHoodError
from llmhood.train.data import Example, detect_format, encode_chat, to_messages

TURNS = [("user", "Hi"), ("assistant", "Hello!"), ("user", "2+3?"), ("assistant", "5")]
SHAREGPT_ROLE = {"user": "human", "assistant": "gpt"}
ALPACA = {
    "instruction": "Add the numbers.",
    "input": "2 and 3",
    "output": "5",
    "system": "You are terse.",
    "history": [["Hi", "Hello!"]],
}
SHAREGPT = {"conversations": [{"from": SHAREGPT_ROLE[r], "value": c} for r, c in TURNS]}
OPENAI = {"messages": [{"role": r, "content": c} for r, c in TURNS]}


def test_the_formats_are_detected_and_read():
    assert [detect_format(r) for r in (ALPACA, SHAREGPT, OPENAI)] == [
        "alpaca",
        "sharegpt",
        "openai",
    ]
    assert to_messages(SHAREGPT) == to_messages(OPENAI) == OPENAI["messages"]
    assert to_messages(ALPACA) == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Add the numbers.\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]  # fmt: skip


def trained_text(tokenizer, example: Example) -> list[str]:
    """The trained tokens, decoded run by run."""
    runs, current = [], []
    for token, trained in zip(example.ids, example.mask, strict=True):
        if trained:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


@pytest.mark.real
def test_only_the_assistant_turns_and_their_end_tokens_are_trained(smollm2):
    tok = smollm2.tokenizer
    example = encode_chat(tok, to_messages(OPENAI))
    assert trained_text(tok, example) == ["Hello!<|im_end|>", "5<|im_end|>"]
    assert example.ids == tok.encode(tok.apply_chat_template(OPENAI["messages"], False))
    assert example.ids[:2] != [tok.bos_id] * 2  # the template's own start, no second BOS
    everything = encode_chat(tok, to_messages(OPENAI), train_on_prompt=True)
    # Every token but the first, which no token before it predicts.
    assert not everything.mask[0] and all(everything.mask[1:]) and everything.ids == example.ids


@pytest.mark.real
def test_the_mask_comes_from_positions_not_ids(smollm2):
    """A user turn that writes the assistant's very words is still not trained."""
    tok = smollm2.tokenizer
    messages = [
        {"role": "user", "content": "Say Hello!"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert trained_text(tok, encode_chat(tok, messages)) == ["Hello!<|im_end|>"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"instruction": "x"}, "'output' is missing"),
        ({"instruction": "x", "output": 3}, "is a int, not text"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
        ({"messages": [{"role": "user", "content": "hi"},
                       {"role": "assistant", "content": "  "}]}, "Assistant turn 1 is empty"),
        ({"conversations": [{"from": "robot", "value": "x"}]}, "unknown role 'robot'"),
        ({"text": "raw"}, "Cannot tell this row's format"),
        (["not", "an", "object"], "must be a JSON object"),
    ],
)  # fmt: skip
def test_bad_rows_say_what_is_wrong(row, message):
    with pytest.raises(LLMHoodError, match=message):
        to_messages(row)
