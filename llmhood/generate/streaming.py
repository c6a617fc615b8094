"""Turning a stream of token ids into a stream of text, one safe piece at a time.

Decoding each token on its own and printing it goes wrong in two ways:

* A byte-level BPE token is a run of *bytes*, not characters. A Chinese character is 3
  UTF-8 bytes and an emoji 4, and the tokenizer may split them over several tokens;
  decoding such a fragment alone gives the replacement character U+FFFD. So the bytes
  go through an incremental UTF-8 decoder, which keeps an incomplete character's bytes
  until the rest arrives.
* A stop string ("\\nUser:") is usually several tokens long. By the time it is complete,
  its first half would already be on the screen. So text that could be the beginning
  of a stop string is held back until the next tokens show whether it is.

Special tokens (<|im_start|>, <|endoftext|>, ...) are control signals, not text, and
are not shown.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Protocol


class ByteTokenizer(Protocol):
    """What the stream decoder needs from a tokenizer (llmhood.tokenizer.BPETokenizer)."""

    special_ids: set[int]

    def decode_bytes(self, ids: list[int]) -> bytes: ...


class StreamDecoder:
    """Incremental detokenizer for one sequence: `push` token ids, get back final text.

    After a stop string appears, `stopped` is True, the text before it has been returned,
    and everything from the stop string on is dropped.
    """

    def __init__(self, tokenizer: ByteTokenizer, stop_strings: Sequence[str] = ()):
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in stop_strings if s]
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""  # decoded text that may be the start of a stop string
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now final (often "", never a partial char)."""
        if self.stopped or token_id in self.tokenizer.special_ids:
            return ""
        return self._release(self._utf8.decode(self.tokenizer.decode_bytes([token_id])))

    def flush(self) -> str:
        """End of the sequence: return everything still held back.

        Bytes of a character that never completed are decoded with U+FFFD, and text held
        back as a possible stop-string start turned out not to be one, so both are shown.
        """
        if self.stopped:
            return ""
        text = self._release(self._utf8.decode(b"", final=True))
        text, self._held = text + self._held, ""  # _held is "" if a stop string just appeared
        return text

    def _release(self, new_text: str) -> str:
        """Return what of held + new text is safe to show; keep the rest in `_held`."""
        text = self._held + new_text
        hits = [i for i in (text.find(s) for s in self.stop_strings) if i >= 0]
        if hits:
            self.stopped, self._held = True, ""
            return text[: min(hits)]
        keep = _longest_stop_prefix_suffix(text, self.stop_strings)
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep]


def _longest_stop_prefix_suffix(text: str, stop_strings: list[str]) -> int:
    """Length of the longest end of `text` that is a proper beginning of a stop string.

    Holding back the *longest* such end guarantees that a stop string completed by later
    text starts inside the held part, so none of it has been shown yet.
    """
    longest = 0
    for stop in stop_strings:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest
