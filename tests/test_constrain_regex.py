"""Regexes compiled to byte DFAs, held to Python's `re` and to Python's own UTF-8 codec."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from llmhood.errors import LLMHoodError
from llmhood.generate.constrain import utf8
from llmhood.generate.constrain.dfa import DFA
from llmhood.generate.constrain.regex import compile_regex

# Code points where UTF-8 changes form: encoded lengths, the surrogate hole, the end.
BOUNDARIES = [0, 0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xD800, 0xDFFF, 0xE000, 0xFFFF, 0x10000]
BOUNDARIES += [0x3FFFF, 0x40000, 0xFFFFF, 0x100000, 0x10FFFF]


def near_boundaries(width: int = 3) -> list[int]:
    points = {b + d for b in BOUNDARIES for d in range(-width, width + 1)}
    points |= {b * 64 + d for b in range(1, 0x110000 // 64, 997) for d in (-1, 0, 1)}
    return sorted(p for p in points if 0 <= p <= utf8.MAX_CODE_POINT)


def is_scalar(cp: int) -> bool:
    return not (utf8.SURROGATES[0] <= cp <= utf8.SURROGATES[1])


def expand(seq: utf8.ByteRanges) -> list[bytes]:
    out = [b""]
    for lo, hi in seq:
        out = [prefix + bytes([b]) for prefix in out for b in range(lo, hi + 1)]
    return out


@pytest.mark.parametrize(
    "lo, hi",
    [(0, 0x7F), (0x70, 0x900), (0x7FF, 0x800), (0xD000, 0xE100), (0xFFF0, 0x10110), (0, 0x4FF)],
)
def test_utf8_sequences_encode_exactly_the_range(lo: int, hi: int) -> None:
    # Reference: Python's own encoder, code point by code point, surrogates having no encoding.
    expected = {chr(cp).encode("utf-8") for cp in range(lo, hi + 1) if is_scalar(cp)}
    produced = [b for seq in utf8.sequences(lo, hi) for b in expand(seq)]
    assert len(produced) == len(set(produced))  # the sequences are disjoint
    assert set(produced) == expected


def test_class_accepts_every_code_point_in_range_and_nothing_else() -> None:
    rng = random.Random(0)
    points = near_boundaries()
    for _ in range(30):
        lo, hi = sorted(rng.sample(points, 2))
        dfa = compile_regex(f"[\\U{lo:08x}-\\U{hi:08x}]")
        for cp in points:
            if is_scalar(cp):
                assert dfa.matches(chr(cp).encode()) == (lo <= cp <= hi), (hex(lo), hex(hi), cp)


INVALID_UTF8 = [
    b"\x80",  # a continuation byte alone
    b"\xc0\x80",  # overlong U+0000
    b"\xc1\xbf",  # overlong U+007F
    b"\xe0\x80\x80",  # overlong, three bytes
    b"\xe0\x9f\xbf",  # overlong U+07FF
    b"\xed\xa0\x80",  # the surrogate U+D800
    b"\xed\xbf\xbf",  # the surrogate U+DFFF
    b"\xf0\x8f\xbf\xbf",  # overlong U+FFFF
    b"\xf4\x90\x80\x80",  # U+110000, past Unicode
    b"\xf5\x80\x80\x80",
    b"\xff",
    b"\xc3",  # a truncated two-byte sequence
    b"\xe4\xb8",  # a truncated three-byte sequence
]


@pytest.mark.parametrize("pattern", [".", "[^a]", "\\W", "[\\x00-\\U0010ffff]"])
def test_invalid_utf8_is_rejected(pattern: str) -> None:
    dfa = compile_regex(pattern)
    for data in INVALID_UTF8:
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")  # the reference agrees these are not UTF-8
        assert not dfa.matches(data), data
    for cp in near_boundaries(1):
        if is_scalar(cp) and cp != 0x0A and not (pattern == "[^a]" and cp == 0x61):
            if pattern == "\\W" and re.fullmatch(r"\w", chr(cp), re.ASCII):
                continue
            assert dfa.matches(chr(cp).encode()), hex(cp)


PATTERNS = [
    "abc",
    "a|b|",
    "a*b+c?",
    "(ab|cd)*e",
    "(?:x|yz){2,4}",
    "a{3}",
    "a{2,}",
    "a{,2}b",
    "a{0}b",
    "[a-c-e]+",
    "[]a]*",
    "[^abc]+",
    "[\\d.]+",
    "\\d+(\\.\\d+)?",
    "\\w+@\\w+\\.com",
    "\\s*x\\s*",
    "\\D\\W\\S",
    ".*",
    ".{2,3}",
    "[^\\n]*\\n",
    "^ab$",
    "(a|)+b",
    "((ab)*c)*",
    "a+?b*?c??",
    "x{1,2",
    "a{",
    "{",
    "[\\u00e9-\\u00ff]+",
    "[\u4e00-\u9fff]{1,3}",
    "\u00e9+|\U0001f600",
    "[^\u00e9\\x00-\\x1f]",
    "[\\w\u00e9]*",
    "\\x41\\u0042\\U00000043",
    "\\.\\*\\+\\?\\(\\)\\[\\]\\{\\}\\|\\\\\\^\\$",
    "\\t\\n\\r\\f\\v",
    "\\0\\01a\\0123[\\011]",
    "[\\b]",
    "(?P<year>\\d{4})-(?P<month>0[1-9]|1[0-2])",
    '"(?:[^"\\\\]|\\\\.)*"',
    "(a|b)*a(a|b){3}",
    "",
]

ALPHABET = 'abcdexyz0159._-@ \t\n\u00e9\u00ff\u4e00\u9fff\U0001f600"\\{}[]^$*()|'


def random_walk(dfa: DFA, rng: random.Random, stop: float = 0.25, limit: int = 60) -> bytes:
    """Bytes from the start state to an accepting one, chosen at random among live transitions."""
    state, out = dfa.start, bytearray()
    while True:
        moves = np.flatnonzero(dfa.transitions[state])
        if dfa.accepting[state] and (not len(moves) or rng.random() < stop or len(out) > limit):
            return bytes(out)
        byte = int(moves[rng.randrange(len(moves))])
        out.append(byte)
        state = int(dfa.transitions[state, byte])


def mutate(text: str, rng: random.Random) -> str:
    i = rng.randrange(len(text) + 1)
    kind = rng.randrange(3)
    if kind == 0 and text:
        return text[: max(i - 1, 0)] + text[i:]
    c = rng.choice(ALPHABET)
    return text[:i] + c + text[i + (kind == 2) :]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_full_match_equals_python_re(pattern: str) -> None:
    # Reference: re.fullmatch on str. re.ASCII because \d \w \s are ASCII here (ECMA-262).
    dfa = compile_regex(pattern)
    reference = re.compile(pattern, re.ASCII)
    rng = random.Random(pattern)
    candidates = ["".join(rng.choices(ALPHABET, k=rng.randrange(8))) for _ in range(300)]
    if dfa.start:
        walks = [random_walk(dfa, rng).decode("utf-8") for _ in range(100)]
        candidates += walks + [mutate(w, rng) for w in walks for _ in range(3)]
        for w in walks:
            assert reference.fullmatch(w), (pattern, w)
    for text in candidates:
        assert dfa.matches(text.encode()) == bool(reference.fullmatch(text)), (pattern, text)


def test_dead_state_and_dead_ends() -> None:
    dfa = compile_regex("ab|c")
    assert (dfa.transitions[0] == 0).all()
    assert dfa.step(dfa.start, b"x") == 0
    after_a = dfa.step(dfa.start, b"a")
    assert after_a != 0 and dfa.can_continue(after_a) and not dfa.accepting[after_a]
    end = dfa.step(dfa.start, b"ab")
    assert dfa.accepting[end] and not dfa.can_continue(end)
    # No live state is a trap: from each one an accepting state is reachable.
    assert dfa.transitions.shape == (dfa.states, 256) and dfa.transitions.dtype.name == "int32"


def test_empty_language_is_only_the_dead_state() -> None:
    dfa = compile_regex("[^\\x00-\\U0010ffff]")
    assert dfa.start == 0 and not dfa.matches(b"")


@pytest.mark.parametrize(
    "pattern, named",
    [
        ("(a)\\1", "backreference \\1"),
        ("(?P<x>a)(?P=x)", "backreference (?P=...)"),
        ("a(?=b)", "lookaround (?="),
        ("a(?!b)", "lookaround (?!"),
        ("(?<=a)b", "lookaround (?<="),
        ("(?<!a)b", "lookaround (?<!"),
        ("\\bword\\b", "word boundary \\b"),
        ("a\\B", "\\B"),
        ("\\Aa", "\\A"),
        ("a\\Z", "\\Z"),
        ("(?i)abc", "group syntax (?i)"),
        ("a*+", "possessive"),
        ("(?>a)", "atomic group"),
        ("\\p{L}", "Unicode property"),
        ("\\N{EM DASH}", "named character"),
        ("a^b", "'^' other than at the start"),
        ("a$b", "'$' other than at the end"),
    ],
)
def test_unsupported_syntax_is_named(pattern: str, named: str) -> None:
    with pytest.raises(LLMHoodError, match=re.escape(named)) as info:
        compile_regex(pattern)
    assert "not supported" in str(info.value)


@pytest.mark.parametrize(
    "pattern, why",
    [
        ("(ab", "missing )"),
        ("ab)", "unbalanced parenthesis"),
        ("[ab", "unterminated character set"),
        ("a**", "multiple repeat"),
        ("*a", "nothing to repeat"),
        ("a{3,2}", "min repeat greater than max repeat"),
        ("[z-a]", "bad character range"),
        ("\\q", "bad escape \\q"),
        ("\\x4", "incomplete escape"),
        ("a\\", "bad escape"),
        ("a{2000}", "exceeds 1000"),
    ],
)
def test_invalid_regex_says_why(pattern: str, why: str) -> None:
    if why != "exceeds 1000":
        with pytest.raises(re.error):
            re.compile(pattern)  # the reference refuses it too
    with pytest.raises(LLMHoodError, match=re.escape(why)):
        compile_regex(pattern)


def reachable(dfa: DFA) -> tuple[set[int], set[int]]:
    """Live states reached from the start, and live states that can reach acceptance."""
    successors = [set(np.unique(row).tolist()) - {0} for row in dfa.transitions]
    predecessors: list[set[int]] = [set() for _ in successors]
    for s, targets in enumerate(successors):
        for t in targets:
            predecessors[t].add(s)

    def search(seeds: set[int], edges: list[set[int]]) -> set[int]:
        seen, stack = set(seeds), list(seeds)
        while stack:
            for t in edges[stack.pop()] - seen:
                seen.add(t)
                stack.append(t)
        return seen - {0}

    accepting = set(np.flatnonzero(dfa.accepting).tolist())
    return search({dfa.start}, successors), search(accepting, predecessors)


@pytest.mark.parametrize("pattern", ["abc|abd", "(a|b)*a(a|b){3}", ".{0,300}", "[^x]{5,400}y"])
def test_every_state_is_reachable_and_can_finish(pattern: str) -> None:
    # The last two are large enough to skip minimization: pruning alone must give this.
    dfa = compile_regex(pattern)
    forward, backward = reachable(dfa)
    assert forward == backward == set(range(1, dfa.states))
    reference = re.compile(pattern)
    rng = random.Random(pattern)
    for _ in range(50):
        walk = random_walk(dfa, rng, stop=0.02, limit=500).decode()
        assert reference.fullmatch(walk)
        text = mutate(walk, rng)
        assert dfa.matches(text.encode()) == bool(reference.fullmatch(text))


@pytest.mark.parametrize(
    "pattern, states",
    [
        ("abc", 1 + 4),  # dead, then one state per prefix
        ("(a|b)*a(a|b){3}", 1 + 2**4),  # the classic: the last 4 letters, 2**4 states
        ("a{2,5}", 1 + 6),
        # dead, start/accept, and the partial characters: 1 continuation left, 2, 3,
        # after E0 (A0-BF next), after ED (80-9F, no surrogates), after F0 (90-BF), after F4
        (".*", 1 + 8),
    ],
)
def test_minimal_state_counts(pattern: str, states: int) -> None:
    assert compile_regex(pattern).states == states
