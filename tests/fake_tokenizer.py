"""A byte-level stand-in for llmhood.tokenizer.BPETokenizer, for generation tests.

Ids 0-255 are the single bytes, so any text can be split one byte per token (the worst
case for a streaming decoder); three special tokens follow; every further id up to
`vocab_size` is a two-letter merge ("aa", "bb", ...), so a random model's output mixes
one- and two-byte tokens.
"""

from __future__ import annotations

import re

SPECIALS = {"<|endoftext|>": 256, "<|im_start|>": 257, "<|im_end|>": 258}


class FakeByteTokenizer:
    def __init__(self, vocab_size: int = 300, eos_id: int = 256) -> None:
        self.pieces = [bytes([i]) for i in range(256)] + [s.encode() for s in SPECIALS]
        self.pieces += [bytes([97 + i % 26]) * 2 for i in range(vocab_size - len(self.pieces))]
        self.eos_id = eos_id
        self.special_ids = {*SPECIALS.values(), eos_id}

    def encode(self, text: str, add_bos: bool = False, allow_special: bool = True) -> list[int]:
        ids = [SPECIALS["<|im_start|>"]] if add_bos else []
        pattern = "(" + "|".join(map(re.escape, SPECIALS)) + ")" if allow_special else "(?!)"
        for part in re.split(pattern, text):
            ids += [SPECIALS[part]] if part in SPECIALS else list(part.encode())
        return ids

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self.pieces[i] for i in ids)

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        kept = [i for i in ids if not (skip_special and i in self.special_ids)]
        return self.decode_bytes(kept).decode("utf-8", errors="replace")

    def token_to_id(self, piece: str) -> int | None:
        return SPECIALS.get(piece, piece.encode()[0] if len(piece.encode()) == 1 else None)
