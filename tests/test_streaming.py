"""The incremental detokenizer, one byte per token: Python's UTF-8 codec is the reference."""

import pytest
from fake_tokenizer import SPECIALS, FakeByteTokenizer

from llmhood.generate import StreamDecoder

TEXTS = [
    "你好，世界！",
    "Emoji: 🙂👍🏽🇫🇷 and a family 👨‍👩‍👧",
    "mixed café Ωμέγα 日本語 ok",
]


def stream(decoder: StreamDecoder, ids: list[int]) -> list[str]:
    """Every piece the decoder hands out, the final flush included."""
    return [decoder.push(i) for i in ids] + [decoder.flush()]


@pytest.mark.parametrize("text", TEXTS)
def test_split_characters_reassemble_exactly(text):
    tok = FakeByteTokenizer()
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8"))  # one token per byte: characters are split
    pieces = stream(StreamDecoder(tok), ids)
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)
    # Nothing is held longer than needed: each character comes out with its last byte.
    assert [p for p in pieces if p] == list(text)


def test_special_tokens_are_not_shown():
    tok = FakeByteTokenizer()
    ids = tok.encode("<|im_start|>assistant\n你好<|im_end|><|endoftext|>")
    assert SPECIALS["<|im_end|>"] in ids
    assert "".join(stream(StreamDecoder(tok), ids)) == "assistant\n你好"


def test_flush_replaces_an_unfinished_character():
    tok = FakeByteTokenizer()
    truncated = "a你".encode()[:-1]  # "a" and two of the three bytes of 你
    decoder = StreamDecoder(tok)
    assert [decoder.push(b) for b in truncated] == ["a", "", ""]
    assert decoder.flush() == truncated[1:].decode("utf-8", errors="replace")


def test_invalid_bytes_are_replaced_as_the_codec_does():
    tok = FakeByteTokenizer()
    data = b"ok\xff\xfe\xc3(end"  # two never-valid bytes, then a lead byte without its tail
    assert "".join(stream(StreamDecoder(tok), list(data))) == data.decode(errors="replace")


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("Hello there\nUser: what?", ["\nUser:"], "Hello there"),
        ("你好世界！", ["世界"], "你好"),
        ("xxcdb then", ["b", "cd"], "xx"),  # the earliest stop string wins
        ("aaab", ["ab"], "aa"),  # overlapping start: the held "a" was not the stop string
    ],
)
def test_stop_string_cuts_the_stream_and_never_leaks(text, stops, expected):
    assert expected == text[: min(text.find(s) for s in stops if s in text)]
    tok = FakeByteTokenizer()
    decoder = StreamDecoder(tok, stops)
    shown = ""
    for token in tok.encode(text):
        shown += decoder.push(token)
        assert expected.startswith(shown)  # no part of the stop string reached the screen
    shown += decoder.flush()
    assert shown == expected
    assert decoder.stopped


def test_held_text_is_released_when_no_stop_string_follows():
    tok = FakeByteTokenizer()
    decoder = StreamDecoder(tok, ["\nUser:"])
    pieces = [decoder.push(t) for t in tok.encode("a\nUs")]
    assert "".join(pieces) == "a"  # "\nUs" might still become "\nUser:"
    assert decoder.push(tok.encode("e")[0]) == ""
    assert decoder.push(tok.encode("!")[0]) == "\nUse!"
    assert decoder.push(tok.encode("\n")[0]) == ""
    assert decoder.flush() == "\n"  # the end of the text: nothing can follow any more
    assert not decoder.stopped


def test_after_a_stop_string_nothing_more_is_shown():
    tok = FakeByteTokenizer()
    decoder = StreamDecoder(tok, ["END"])
    assert "".join(decoder.push(t) for t in tok.encode("ab END cd")) == "ab "
    assert decoder.push(tok.encode("x")[0]) == ""
    assert decoder.flush() == ""
