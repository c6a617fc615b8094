"""WordPiece: BERT's tokenizer, text to the vocabulary ids its encoder was trained on.

    text -> special tokens kept whole -> clean (drop control chars, whitespace to " ")
         -> one token per CJK ideograph -> strip accents (NFD, drop Mn) -> lowercase
         -> split at whitespace and punctuation -> greedy longest-match WordPiece ("##...")

The rules are those of the `tokenizers` library's BertNormalizer, BertPreTokenizer and
WordPiece model, which is what sentence-transformers runs, so that our ids are the
reference's: accents are stripped before lowercasing, lowercasing maps each character on
its own (no final-sigma rule), and the CJK ideograph ranges are `tokenizers`' (its
extension-E range starts at U+2B920, not BERT's U+2B820). The special tokens ([CLS],
[MASK], ...) are matched in the raw text, as `tokenizers` matches its added tokens.
Character classes are Unicode 8.0's, as the reference's tables are: Python's
`unicodedata` (Unicode 14.0 in Python 3.11) less the marks, punctuation and format
characters assigned since, which the reference treats as unassigned (letters). A Python
with a newer Unicode than 14.0 may class its newest characters differently.

Speed in pure Python comes from caching: the text is cut at whitespace (a regex, in C),
and each whitespace-free chunk's ids are computed once per process and then looked up.
Documents repeat their chunks ("the", "of", "value,") so most chunks are lookups.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from llmhood.errors import LLMHoodError

UNK, CLS, SEP, PAD, MASK = "[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"
SPECIALS = (PAD, UNK, CLS, SEP, MASK)
MAX_WORD_CHARS = 100  # a longer word is one [UNK] (BERT's max_input_chars_per_word)
CACHE_LIMIT = 1 << 18  # chunks remembered before the cache starts over (~50 MB at most)

# The separators of words: whitespace that is not a control character (\t, \n and \r
# count as whitespace; other control characters are dropped, not split at).
_SEPARATORS = "\t\n\r" + "".join(
    c for c in map(chr, range(0x10000)) if unicodedata.category(c) in ("Zs", "Zl", "Zp")
)
_CHUNK = re.compile(f"[^{re.escape(_SEPARATORS)}]+")
_SPECIAL = re.compile("(" + "|".join(map(re.escape, SPECIALS)) + ")")
_ASCII_CONTROL = dict.fromkeys(c for c in range(0x80) if chr(c) not in _SEPARATORS and
                               unicodedata.category(chr(c)) == "Cc")  # fmt: skip
_CONTROL = ("Cc", "Cf", "Co", "Cs")  # dropped; unassigned code points (Cn) are not
_ASCII_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_ASCII_WORDS = re.compile(f"[{re.escape(_ASCII_PUNCTUATION)}]|[^{re.escape(_ASCII_PUNCTUATION)}]+")
# CJK ideograph blocks (not kana or hangul, which are written with spaces and stay words).
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))  # fmt: skip


# Marks, punctuation and format characters Unicode 8.0 did not have (9.0 to 14.0).
_SINCE_UNICODE_8 = """
061D 07FD 0890-0891 0898-089F 08CA-08E2 09FD-09FE 0A76 0AFA-0AFF 0B55 0C04 0C3C 0C77
0C84 0D00 0D3B-0D3C 0D81 0EBA 180F 1885-1886 1ABF-1ACE 1B7D-1B7E 1DF6-1DFB 2E43-2E4F
2E52-2E5D A82C A8C5 A8FF A9BD 10D24-10D27 10EAB-10EAD 10F46-10F50 10F55-10F59
10F82-10F89 11070 11073-11074 110C2 110CD 111CF 1123E 1133B 11438-1143F
11442-11444 11446 1144B-1144F 1145A-1145B 1145D-1145E 11660-1166C 116B9 1182F-11837
11839-1183B 1193B-1193C 1193E 11943-11946 119D4-119D7 119DA-119DB 119E0 119E2
11A01-11A0A 11A33-11A38 11A3B-11A47 11A51-11A56 11A59-11A5B 11A8A-11A96 11A98-11A9C
11A9E-11AA2 11C30-11C36 11C38-11C3D 11C3F 11C41-11C45 11C70-11C71 11C92-11CA7
11CAA-11CB0 11CB2-11CB3 11CB5-11CB6 11D31-11D36 11D3A 11D3C-11D3D 11D3F-11D45 11D47
11D90-11D91 11D95 11D97 11EF3-11EF4 11EF7-11EF8 11FFF 12FF1-12FF2 13430-13438
16E97-16E9A 16F4F 16FE2 16FE4 1CF00-1CF2D 1CF30-1CF46 1E000-1E006 1E008-1E018
1E01B-1E021 1E023-1E024 1E026-1E02A 1E130-1E136 1E2AE 1E2EC-1E2EF 1E944-1E94A
1E95E-1E95F
"""


def _unicode_8() -> dict[str, str]:
    """The categories Unicode 8.0 gives where Python's differ: unassigned (Cn) for what
    came later, and the three characters whose category changed since."""
    categories = {"\u166d": "Po", "\u1734": "Mn", "\U000111c9": "Po"}
    for item in _SINCE_UNICODE_8.split():
        low, _, high = item.partition("-")
        for code in range(int(low, 16), int(high or low, 16) + 1):
            categories[chr(code)] = "Cn"
    return categories


_UNICODE_8 = _unicode_8()


def _category(c: str) -> str:
    return _UNICODE_8.get(c) or unicodedata.category(c)


def _is_cjk(c: str) -> bool:
    code = ord(c)
    return any(low <= code <= high for low, high in _CJK)


def _is_punctuation(c: str) -> bool:
    return c in _ASCII_PUNCTUATION or _category(c).startswith("P")


def _words(chunk: str) -> list[str]:
    """The words of a whitespace-free chunk of raw text, normalised as BertNormalizer does
    and split at punctuation as BertPreTokenizer does."""
    if chunk.isascii():
        chunk = chunk.translate(_ASCII_CONTROL).lower()
        return _ASCII_WORDS.findall(chunk)
    kept = []
    for c in chunk:
        if _category(c) in _CONTROL or c == "\ufffd":
            continue
        kept.append(f" {c} " if _is_cjk(c) else c)
    text = unicodedata.normalize("NFD", "".join(kept))
    text = "".join(c for c in text if _category(c) != "Mn")
    text = text.replace("Σ", "σ").lower()  # per character: Python's lower() knows final sigma
    words = []
    for piece in text.split():
        start = 0
        for i, c in enumerate(piece):
            if _is_punctuation(c):
                words += [piece[start:i], c] if i > start else [c]
                start = i + 1
        if start < len(piece):
            words.append(piece[start:])
    return words


class WordPiece:
    """BERT's tokenizer over one vocabulary (vocab.txt: one token a line, id = line number)."""

    def __init__(self, vocab: dict[str, int]) -> None:
        missing = [s for s in SPECIALS if s not in vocab]
        if missing:
            raise LLMHoodError(f"The WordPiece vocabulary lacks {missing}; is it a BERT vocab.txt?")
        self.vocab = vocab
        self.tokens = {i: token for token, i in vocab.items()}
        self.unk_id, self.cls_id, self.sep_id = vocab[UNK], vocab[CLS], vocab[SEP]
        self.pad_id, self.mask_id = vocab[PAD], vocab[MASK]
        self._chunks: dict[str, list[int]] = {}
        self._longest = max(map(len, vocab))

    @classmethod
    def from_vocab(cls, path: str | Path) -> WordPiece:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise LLMHoodError(f"Cannot read the WordPiece vocabulary {path}: {error}.") from None
        return cls({token: i for i, token in enumerate(lines)})

    def encode(self, text: str) -> list[int]:
        """The content ids of `text`: no [CLS] or [SEP] around them."""
        if not isinstance(text, str):
            raise LLMHoodError(f"WordPiece.encode() needs a str, got {type(text).__name__}.")
        ids: list[int] = []
        for i, part in enumerate(_SPECIAL.split(text) if "[" in text else [text]):
            if i % 2:  # the split's odd parts are the special tokens themselves
                ids.append(self.vocab[part])
                continue
            for chunk in _CHUNK.findall(part):
                found = self._chunks.get(chunk)
                if found is None:
                    found = self._encode_chunk(chunk)
                ids += found
        return ids

    def tokenize(self, text: str) -> list[str]:
        return [self.tokens[i] for i in self.encode(text)]

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def _encode_chunk(self, chunk: str) -> list[int]:
        if len(self._chunks) >= CACHE_LIMIT:
            self._chunks.clear()
        ids = [i for word in _words(chunk) for i in self._word_ids(word)]
        self._chunks[chunk] = ids
        return ids

    def _word_ids(self, word: str) -> list[int]:
        """Greedy longest-match-first: the longest vocabulary entry that starts the rest of
        the word, "##"-prefixed after the first; a word with an unmatchable rest is [UNK]."""
        if len(word) > MAX_WORD_CHARS:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            prefix = "##" if start else ""
            end = min(len(word), start + self._longest)
            while end > start and prefix + word[start:end] not in self.vocab:
                end -= 1
            if end == start:
                return [self.unk_id]
            ids.append(self.vocab[prefix + word[start:end]])
            start = end
        return ids
