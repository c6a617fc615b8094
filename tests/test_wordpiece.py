"""Our WordPiece against the `tokenizers` library's BERT tokenizer (what sentence-transformers
runs) on the same vocabulary: the ids must be equal, text by text."""

from __future__ import annotations

import random
import unicodedata
from pydoc_data.topics import topics

import pytest

from llmhood.rag.embedder import minilm_dir
from llmhood.rag.wordpiece import WordPiece

CASES = [
    "",
    " \t\n ",
    "The quick brown fox jumps over the lazy dog.",
    "Retrieval-augmented generation (RAG) combines search with an LLM; it's 2024!",
    "naïve café résumé Ångström straße Ñandú ÉCOLE Øre İstanbul",
    "ΑΣ ΟΔΟΣ Σίσυφος and final sigma",
    "Emoji: 😀 🥰 👍🏽 🇫🇷 ❤️ text🙂text",
    "自然语言处理是人工智能的一个分支。",
    "東京は日本の首都です。カタカナとひらがなも。",
    "한국어 텍스트를 토큰화합니다.",
    "Привет, мир! Γειά σου κόσμε. مرحبا بالعالم",
    "x" * 101,
    "y" * 100,
    "supercalifragilistic" * 6,
    "a\x00b\x01c\x0bd\x1ce\x7ff\u200bg\ufffdh\x85i",
    "tabs\tand\nnew\r\nlines\u00a0no-break\u2028line\u3000ideographic",
    "Mixed --- punctuation!!! (nested [brackets] {braces}) «quotes» „this“ ¿qué? ¡sí! …",
    "$100.00 + 25% = 1,234.5e-6 ~ #hash @at ^caret `tick` |pipe| <tag/> \\back_slash",
    "3.14159 2,718 0x1F 1e10 ½ ² ① ٣",
    "hello [MASK] world [SEP][CLS] [mask] [UNK]x [PAD",
    "\u0301\u0308 combining marks alone e\u0301 a\u0308",
    "https://example.com/path?query=1&b=2#frag user@example.org",
]

# Code points to draw random strings from: several scripts, their punctuation, combining
# marks, whitespace and control characters, and the special tokens' brackets.
BLOCKS = [
    (0x20, 0x7E), (0x00, 0x1F), (0xA0, 0x17F), (0x300, 0x36F), (0x370, 0x3FF),
    (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F), (0x2000, 0x206F),
    (0x3000, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0xFF00, 0xFFEF),
    (0x1F300, 0x1F64F), (0x20000, 0x20100), (0x2B800, 0x2B9FF),
]  # fmt: skip


@pytest.fixture(scope="module")
def ours() -> WordPiece:
    return WordPiece.from_vocab(minilm_dir() / "vocab.txt")


@pytest.fixture(scope="module")
def reference():
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.no_padding()  # the shipped file pads and truncates to 128 tokens
    tokenizer.no_truncation()
    return tokenizer


def reference_ids(reference, text: str) -> list[int]:
    return reference.encode(text, add_special_tokens=False).ids


def random_text(rng: random.Random) -> str:
    chars = []
    while len(chars) < rng.randint(1, 60):
        low, high = rng.choice(BLOCKS)
        c = chr(rng.randint(low, high))
        # Unassigned in Python's Unicode version, perhaps assigned in the reference's newer
        # one: a character the two cannot agree on by construction (see wordpiece.py).
        if unicodedata.category(c) != "Cn":
            chars.append(c)
        if rng.random() < 0.15:
            chars.append(rng.choice([" ", "[MASK]", "##", "\t"]))
    return "".join(chars)


def test_cases_match_the_reference(ours, reference):
    for text in CASES:
        assert ours.encode(text) == reference_ids(reference, text), repr(text)
    # The cases reach every path: unknown words, continuations, the special tokens.
    every = {i for text in CASES for i in reference_ids(reference, text)}
    assert {ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id} <= every
    assert any(ours.tokens[i].startswith("##") for i in every)


def test_random_unicode_matches_the_reference(ours, reference):
    rng = random.Random(20241)
    texts = [random_text(rng) for _ in range(400)]
    for text in texts:
        assert ours.encode(text) == reference_ids(reference, text), repr(text)
    assert sum(ours.encode(text).count(ours.unk_id) for text in texts) > 0


def test_pydoc_topics_match_the_reference(ours, reference):
    assert len(topics) > 50
    for name, text in topics.items():
        assert ours.encode(text) == reference_ids(reference, text), name


def test_tokens_count_and_special_ids(ours, reference):
    text = "Tokenization of unaffable words"
    assert ours.tokenize(text) == reference.encode(text, add_special_tokens=False).tokens
    assert ours.count(text) == len(reference_ids(reference, text))
    for name in ("[CLS]", "[SEP]", "[PAD]", "[UNK]"):
        attribute = name.strip("[]").lower() + "_id"
        assert getattr(ours, attribute) == reference.token_to_id(name)


def test_a_word_over_100_characters_is_one_unknown(ours):
    assert ours.encode("ab" * 51) == [ours.unk_id]
    assert ours.unk_id not in ours.encode("ab" * 50)


def test_single_characters_match_the_reference(ours, reference):
    """Each character inside a word, before a letter and alone: every mark, punctuation and
    control character of the Basic Multilingual Plane, and every 61st code point of all."""
    classes = ("M", "P", "C", "Z")
    codes = [c for c in range(0x10000) if unicodedata.category(chr(c))[0] in classes]
    codes += range(0, 0x110000, 61)
    texts = [f"a{c}a Q{c} {c}" for c in map(chr, codes) if unicodedata.category(c) != "Cs"]
    expected = reference.encode_batch(texts, add_special_tokens=False)
    for text, want in zip(texts, expected, strict=True):
        assert ours.encode(text) == want.ids, repr(text)
