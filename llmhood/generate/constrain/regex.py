"""Regular expressions, parsed here and compiled to a DFA over the UTF-8 bytes of the text.

Only the language matters to a constraint: which texts match in full. So the syntax is
Python's `re` (the tests hold every pattern to `re.fullmatch`), minus what is not regular or
not about the language:

* supported: literals; escapes `\\n \\t \\r \\f \\v \\a \\0 \\xHH \\uXXXX \\UXXXXXXXX` and escaped
  punctuation; `\\d \\w \\s` and their negations `\\D \\W \\S`; classes `[...]` with ranges,
  negation and those escapes; `.` (any character but a newline, as `re` without DOTALL);
  groups `(...)`, `(?:...)`, `(?P<name>...)`; alternation; `* + ? {m} {m,} {,n} {m,n}`, lazy
  or not (laziness picks among matches, it does not change which texts match); `^` at the very
  start and `$` at the very end, which a full match makes no-ops.
* `\\d \\w \\s` are ASCII (`[0-9]`, `[A-Za-z0-9_]`, `[ \\t\\n\\r\\f\\v]`), as in ECMA-262,
  which JSON Schema patterns follow, and as in `re` with `re.ASCII`. Everything else is Unicode.
* refused with an LLMHoodError that names it: backreferences, lookaround, `\\b \\B \\A \\Z`,
  inline flags, possessive quantifiers and atomic groups, `\\p{...}`.

The text is Unicode but the automaton runs on bytes, so each character set becomes the UTF-8
byte sequences of utf8.py. A negated class such as `[^"]` therefore accepts only well-formed
UTF-8 of the characters it names: no surrogates, no overlong forms.

The compiler is Thompson's: each AST node becomes an NFA fragment with epsilon edges (Russ
Cox, "Regular Expression Matching Can Be Simple And Fast", 2007), then dfa.py determinizes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from llmhood.errors import LLMHoodError
from llmhood.generate.constrain import utf8
from llmhood.generate.constrain.dfa import DFA, NFA, determinize

# Counted repetition is unrolled into copies of its body, so a huge count is a huge automaton.
MAX_REPEAT = 1000

Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint, non-adjacent inclusive code point ranges


@dataclass(frozen=True)
class Chars:
    """One character from a set of code points."""

    ranges: Ranges


@dataclass(frozen=True)
class Concat:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Repeat:
    item: Node
    min: int
    max: int | None  # None: unbounded


Node = Chars | Concat | Alt | Repeat
EMPTY = Concat(())


def normalize(ranges: list[tuple[int, int]]) -> Ranges:
    """Sort and merge overlapping or adjacent ranges."""
    out: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return tuple((lo, hi) for lo, hi in out)


def complement(ranges: Ranges) -> Ranges:
    """Every code point (0..U+10FFFF) not in `ranges`."""
    out, nxt = [], 0
    for lo, hi in ranges:
        if lo > nxt:
            out.append((nxt, lo - 1))
        nxt = hi + 1
    if nxt <= utf8.MAX_CODE_POINT:
        out.append((nxt, utf8.MAX_CODE_POINT))
    return tuple(out)


def char(c: str) -> Chars:
    return Chars(((ord(c), ord(c)),))


DIGIT = normalize([(0x30, 0x39)])
WORD = normalize([(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)])
SPACE = normalize([(0x09, 0x0D), (0x20, 0x20)])
ANY = ((0, utf8.MAX_CODE_POINT),)
NOT_NEWLINE = complement(((0x0A, 0x0A),))

_SET_ESCAPES = {
    "d": DIGIT,
    "w": WORD,
    "s": SPACE,
    "D": complement(DIGIT),
    "W": complement(WORD),
    "S": complement(SPACE),
}
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
_UNSUPPORTED_ESCAPES = {
    "b": "the word boundary \\b",
    "B": "the non-boundary \\B",
    "A": "the anchor \\A",
    "Z": "the anchor \\Z",
    "z": "the anchor \\z",
    "G": "the anchor \\G",
    "p": "the Unicode property \\p{...}",
    "P": "the Unicode property \\P{...}",
    "k": "the named backreference \\k<...>",
    "N": "the named character \\N{...}",
}


@dataclass(frozen=True)
class Pattern:
    """A parsed regex: its tree, and whether it was anchored by a leading ^ / trailing $."""

    node: Node
    anchored_start: bool
    anchored_end: bool


def _unsupported(what: str, pattern: str, at: int) -> LLMHoodError:
    return LLMHoodError(
        f"{what} (at position {at} of the regex {pattern!r}) is not supported by the constrained "
        "decoder: it only compiles regular languages to an automaton. Rewrite the pattern "
        "without it."
    )


def _invalid(why: str, pattern: str, at: int) -> LLMHoodError:
    return LLMHoodError(f"invalid regex {pattern!r} at position {at}: {why}")


class _Parser:
    """Recursive descent over `alternation := concat ('|' concat)*`, `concat := quantified*`."""

    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.i = 0
        self.anchored_start = False
        self.anchored_end = False

    def parse(self) -> Pattern:
        node = self.alternation()
        if self.i < len(self.text):  # only an unmatched ')' stops an alternation early
            raise _invalid("unbalanced parenthesis", self.text, self.i)
        return Pattern(node, self.anchored_start, self.anchored_end)

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def alternation(self) -> Node:
        items = [self.concat()]
        while self.peek() == "|":
            self.i += 1
            items.append(self.concat())
        return items[0] if len(items) == 1 else Alt(tuple(items))

    def concat(self) -> Node:
        items: list[Node] = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.quantified(self.atom()))
        return items[0] if len(items) == 1 else Concat(tuple(items))

    def quantified(self, atom: Node | None) -> Node:
        at = self.i
        bounds = self.quantifier()
        if bounds is None:
            return EMPTY if atom is None else atom
        if atom is None:
            raise _invalid("nothing to repeat", self.text, at)
        if self.peek() == "?":
            self.i += 1  # lazy: the same language
        elif self.peek() == "+":
            raise _unsupported("a possessive quantifier", self.text, self.i)
        if self.quantifier() is not None:
            raise _invalid("multiple repeat", self.text, at)
        return Repeat(atom, *bounds)

    def quantifier(self) -> tuple[int, int | None] | None:
        c = self.peek()
        if c in ("*", "+", "?"):
            self.i += 1
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        if c != "{":
            return None
        close = self.text.find("}", self.i)
        body = self.text[self.i + 1 : close] if close > 0 else ""
        low, comma, high = body.partition(",")
        if (
            close < 0
            or not (low.isdigit() or (comma and not low))
            or not (high.isdigit() or not high)
        ):
            return None  # not a quantifier: `{` is a literal, as in `re`
        if not comma and not low:
            return None
        mn = int(low) if low else 0
        mx = (int(high) if high else None) if comma else mn
        if mx is not None and mx < mn:
            raise _invalid("min repeat greater than max repeat", self.text, self.i)
        if max(mn, mx or 0) > MAX_REPEAT:
            raise LLMHoodError(
                f"the repeat {{{body}}} in the regex {self.text!r} exceeds {MAX_REPEAT}: counted "
                "repeats are unrolled into the automaton. Use a smaller bound or * / +."
            )
        self.i = close + 1
        return mn, mx

    def atom(self) -> Node | None:
        """One item to quantify, or None for an anchor (which cannot be quantified)."""
        at, c = self.i, self.text[self.i]
        self.i += 1
        if c == "(":
            return self.group(at)
        if c == "[":
            return self.char_class()
        if c == ".":
            return Chars(NOT_NEWLINE)
        if c == "\\":
            return Chars(self.escape(in_class=False))
        if c == "^":
            if at != 0:
                raise _unsupported("'^' other than at the start", self.text, at)
            self.anchored_start = True
            return None
        if c == "$":
            if self.i != len(self.text):
                raise _unsupported("'$' other than at the end", self.text, at)
            self.anchored_end = True
            return None
        if c in "*+?" or (c == "{" and self.quantifier_at(at)):
            raise _invalid("nothing to repeat", self.text, at)
        return char(c)

    def quantifier_at(self, at: int) -> bool:
        saved, self.i = self.i, at
        try:
            return self.quantifier() is not None
        finally:
            self.i = saved

    def group(self, at: int) -> Node:
        if self.text.startswith("?", self.i):
            ahead = self.text[self.i : self.i + 3]
            if ahead.startswith("?:"):
                self.i += 2
            elif ahead.startswith("?P<"):
                close = self.text.find(">", self.i)
                if close < 0:
                    raise _invalid("unterminated group name", self.text, at)
                self.i = close + 1
            elif ahead.startswith("?P="):
                raise _unsupported("the backreference (?P=...)", self.text, at)
            elif ahead[:3] in ("?<=", "?<!") or ahead[:2] in ("?=", "?!"):
                raise _unsupported(f"the lookaround ({ahead[:3].rstrip()}...)", self.text, at)
            elif ahead.startswith("?>"):
                raise _unsupported("the atomic group (?>...)", self.text, at)
            else:
                raise _unsupported(f"the group syntax ({ahead}...)", self.text, at)
        node = self.alternation()
        if self.peek() != ")":
            raise _invalid("missing ), unterminated subpattern", self.text, at)
        self.i += 1
        return node

    def char_class(self) -> Chars:
        start = self.i - 1
        negate = self.peek() == "^"
        if negate:
            self.i += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            if self.i >= len(self.text):
                raise _invalid("unterminated character set", self.text, start)
            c = self.text[self.i]
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            low = self.class_item()
            if self.peek() == "-" and self.text[self.i + 1 : self.i + 2] not in ("]", ""):
                self.i += 1
                high = self.class_item()
                if len(low) != 1 or len(high) != 1 or low[0][0] != low[0][1]:
                    raise _invalid("bad character range", self.text, self.i)
                if high[0][0] != high[0][1] or high[0][0] < low[0][0]:
                    raise _invalid("bad character range", self.text, self.i)
                ranges.append((low[0][0], high[0][0]))
            else:
                ranges.extend(low)
        result = normalize(ranges)
        return Chars(complement(result) if negate else result)

    def class_item(self) -> Ranges:
        c = self.text[self.i]
        self.i += 1
        if c == "\\":
            return self.escape(in_class=True)
        return ((ord(c), ord(c)),)

    def escape(self, in_class: bool) -> Ranges:
        at = self.i - 1
        if self.i >= len(self.text):
            raise _invalid("bad escape (end of pattern)", self.text, at)
        c = self.text[self.i]
        self.i += 1
        if c in _SET_ESCAPES:
            return _SET_ESCAPES[c]
        if c == "b" and in_class:
            return ((8, 8),)  # backspace, inside a class only
        if c in _CHAR_ESCAPES:
            return ((ord(_CHAR_ESCAPES[c]),) * 2,)
        if c == "0":  # an octal escape: \0 and up to two more octal digits, as in `re`
            digits = "0"
            while len(digits) < 3 and self.peek() in tuple("01234567"):
                digits += self.text[self.i]
                self.i += 1
            return ((int(digits, 8),) * 2,)
        if c in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[c]
            digits = self.text[self.i : self.i + width]
            if len(digits) != width or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise _invalid(f"incomplete escape \\{c}{digits}", self.text, at)
            self.i += width
            value = int(digits, 16)
            if value > utf8.MAX_CODE_POINT:
                raise _invalid(f"bad escape \\{c}{digits}", self.text, at)
            return ((value, value),)
        if c in _UNSUPPORTED_ESCAPES:
            raise _unsupported(_UNSUPPORTED_ESCAPES[c], self.text, at)
        if c.isdigit():
            raise _unsupported(f"the backreference \\{c}", self.text, at)
        if c.isascii() and c.isalpha():
            raise _invalid(f"bad escape \\{c}", self.text, at)
        return ((ord(c), ord(c)),)


def parse(pattern: str) -> Pattern:
    """The syntax tree of `pattern`; LLMHoodError for what is invalid or not supported."""
    return _Parser(pattern).parse()


def to_pattern(node: Node) -> str:
    """A regex string for `node`, which `parse` reads back to an equivalent tree."""
    if isinstance(node, Chars):
        return _class_text(node.ranges)
    if isinstance(node, Alt):
        return "|".join(to_pattern(item) for item in node.items)
    if isinstance(node, Concat):
        return "".join(
            f"(?:{to_pattern(item)})" if isinstance(item, Alt) else to_pattern(item)
            for item in node.items
        )
    body = to_pattern(node.item)
    if not isinstance(node.item, Chars):
        body = f"(?:{body})"
    if (node.min, node.max) == (0, None):
        return body + "*"
    if (node.min, node.max) == (1, None):
        return body + "+"
    if (node.min, node.max) == (0, 1):
        return body + "?"
    if node.max is None:
        return f"{body}{{{node.min},}}"
    if node.max == node.min:
        return f"{body}{{{node.min}}}"
    return f"{body}{{{node.min},{node.max}}}"


def _code_point_text(cp: int) -> str:
    c = chr(cp)
    if c.isascii() and c.isalnum():
        return c
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def _class_text(ranges: Ranges) -> str:
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return _code_point_text(ranges[0][0])
    if not ranges:
        return "[^\\x00-\\U0010ffff]"  # no character at all
    body = "".join(
        _code_point_text(lo) if lo == hi else f"{_code_point_text(lo)}-{_code_point_text(hi)}"
        for lo, hi in ranges
    )
    return f"[{body}]"


def escape(text: str) -> str:
    """A regex that matches exactly `text`."""
    return "".join(c if c.isascii() and c.isalnum() else _code_point_text(ord(c)) for c in text)


@lru_cache(maxsize=128)
def compile_regex(pattern: str) -> DFA:
    """The DFA of the texts that `pattern` matches in full, over their UTF-8 bytes.

    Cached: constraints for the same pattern (a schema compiled for every row of a batch, the
    same tool schema question after question) share one immutable automaton.
    """
    nfa = NFA()
    start = nfa.add_state()
    accept = _Thompson(nfa).build(parse(pattern).node, start)
    return determinize(nfa, start, accept)


class _Thompson:
    """AST -> NFA fragments. `build(node, start)` adds edges out of `start` (never into it) and
    returns the fragment's end state; so alternatives can share one start state, and a loop
    back to a fragment's start cannot leak into a sibling."""

    def __init__(self, nfa: NFA) -> None:
        self.nfa = nfa
        self.byte_sequences: dict[Ranges, list[utf8.ByteRanges]] = {}

    def build(self, node: Node, start: int) -> int:
        nfa = self.nfa
        if isinstance(node, Chars):
            return self.chars(node.ranges, start)
        if isinstance(node, Concat):
            state = start
            for item in node.items:
                state = self.build(item, state)
            if state == start:  # the empty string: still a fresh end state
                state = nfa.add_state()
                nfa.epsilon[start].append(state)
            return state
        if isinstance(node, Alt):
            end = nfa.add_state()
            for item in node.items:
                nfa.epsilon[self.build(item, start)].append(end)
            return end
        return self.repeat(node, start)

    def repeat(self, node: Repeat, start: int) -> int:
        nfa = self.nfa
        state = start
        for _ in range(node.min):
            state = self.build(node.item, state)
        end = nfa.add_state()
        if node.max is None:
            loop = nfa.add_state()
            nfa.epsilon[state].append(loop)
            nfa.epsilon[self.build(node.item, loop)].append(loop)
            nfa.epsilon[loop].append(end)
            return end
        # x{0,k} as (x(x(...)?)?)?: every optional copy may end the run.
        for _ in range(node.max - node.min):
            nfa.epsilon[state].append(end)
            state = self.build(node.item, state)
        nfa.epsilon[state].append(end)
        return end

    def chars(self, ranges: Ranges, start: int) -> int:
        """One character of the set, as byte edges whose common suffixes share states."""
        nfa = self.nfa
        sequences = self.byte_sequences.get(ranges)
        if sequences is None:
            sequences = [seq for lo, hi in ranges for seq in utf8.sequences(lo, hi)]
            self.byte_sequences[ranges] = sequences
        end = nfa.add_state()
        after: dict[utf8.ByteRanges, int] = {(): end}  # the state before each byte suffix
        for seq in sequences:
            for k in range(len(seq) - 1, 0, -1):
                suffix = seq[k:]
                if suffix in after:
                    continue
                state = nfa.add_state()
                nfa.edges[state].append((*seq[k], after[seq[k + 1 :]]))
                after[suffix] = state
            nfa.edges[start].append((*seq[0], after[seq[1:]]))
        return end
