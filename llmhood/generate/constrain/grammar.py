"""Context-free grammars in GBNF, the notation of llama.cpp that xgrammar also reads.

    # a comment, to the end of the line
    root   ::= "(" list? ")"
    list   ::= item ("," item){0,9}    # rules may span lines
    item   ::= [a-z_] [a-z0-9_]* | "\\"" [^"\\\\]* "\\""

A rule is `name ::= alternatives`; an alternative is a sequence of elements, each a string
literal, a character class (`[a-z]`, negated `[^"]`), `.` (any character), a rule's name or a
group in parentheses, optionally followed by `*`, `+`, `?`, `{m}`, `{m,}` or `{m,n}`. Escapes,
in literals and classes alike, are those xgrammar 0.2.9 reads: `\\n \\t \\r \\" \\\\ \\' \\/
\\0 \\a \\b \\f \\v \\e`, `\\xHH`, `\\uXXXX`, `\\UXXXXXXXX`, and `\\[ \\] \\- \\^` in classes.
`\\xHH` is a character (U+00HH), not a byte, as in llama.cpp. A rule ends where the next
`name ::=` begins, so newlines are only spacing. This module parses the text into `Grammar` and
checks it; pda.py runs it, and `compile_grammar` pairs it with a vocabulary for decoding.

Differences from xgrammar 0.2.9, each deliberate:

* `.` is any character (llama.cpp's meaning); xgrammar has no `.` and reads it as an undefined
  rule, its spelling of the same thing is `[^]`.
* Left recursion (`expr ::= expr "+" term`) is refused with the rule's cycle named: the
  automaton expands calls eagerly (as llama.cpp's grammar sampler does), which left recursion
  would never finish. xgrammar's Earley parser accepts it; a repetition says the same thing
  (`expr ::= term ("+" term)*`).
* Characters are matched as valid UTF-8 only: the surrogates U+D800..U+DFFF, which no UTF-8
  text contains, are not characters here, while xgrammar lets `[^"]` match their three-byte
  patterns. No SmolLM2 token contains one.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from llmhood.errors import LLMHoodError
from llmhood.generate.constrain.mask import TrieWalk
from llmhood.generate.constrain.vocab import TokenVocab

if TYPE_CHECKING:
    from llmhood.generate.constrain.pda import BytePDA

MAX_CODE_POINT = 0x10FFFF
MASK_CACHE_SIZE = 1024  # masks kept per compiled grammar: 49 KB each for SmolLM2


@dataclass(frozen=True)
class Literal:
    """A fixed string, as its UTF-8 bytes."""

    data: bytes


@dataclass(frozen=True)
class CharClass:
    """One character out of sorted, disjoint, inclusive code point ranges."""

    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class RuleRef:
    name: str
    line: int
    column: int


@dataclass(frozen=True)
class Sequence:
    items: tuple[Expr, ...]  # () is the empty string


@dataclass(frozen=True)
class Choice:
    options: tuple[Expr, ...]


@dataclass(frozen=True)
class Repeat:
    item: Expr
    low: int
    high: int | None  # None: unbounded


Expr = Literal | CharClass | RuleRef | Sequence | Choice | Repeat


@dataclass(frozen=True)
class Grammar:
    """Rules by name, in the order written, all references defined, no left recursion."""

    rules: dict[str, Expr]
    root: str


class GrammarSyntaxError(LLMHoodError):
    """The grammar's text is not GBNF; the message says where."""


def parse_grammar(text: str, root: str = "root") -> Grammar:
    """The grammar written in `text`, checked, starting from the rule named `root`."""
    rules = _Parser(text).rules()
    if root not in rules:
        defined = ", ".join(rules) or "none"
        raise LLMHoodError(
            f"The grammar has no rule named {root!r} to start from (rules defined: {defined}). "
            f"Add `{root} ::= ...` for the whole text the model should write."
        )
    grammar = Grammar(rules, root)
    for expr in rules.values():
        for ref in _refs(expr):
            if ref.name not in rules:
                raise LLMHoodError(
                    f"Line {ref.line}, column {ref.column}: the rule {ref.name!r} is used but "
                    "never defined. Define it with `" + ref.name + " ::= ...` or fix the name."
                )
    _check_left_recursion(grammar)
    return grammar


def nullable_rules(grammar: Grammar) -> set[str]:
    """The rules that can match the empty string (a fixpoint: a rule is nullable when its
    body is, given the rules already known to be)."""
    found: set[str] = set()
    while True:
        more = {name for name, body in grammar.rules.items() if _nullable(body, found)}
        if more == found:
            return found
        found = more


def _nullable(expr: Expr, nullable: set[str]) -> bool:
    if isinstance(expr, Literal):
        return not expr.data
    if isinstance(expr, CharClass):
        return False
    if isinstance(expr, RuleRef):
        return expr.name in nullable
    if isinstance(expr, Sequence):
        return all(_nullable(item, nullable) for item in expr.items)
    if isinstance(expr, Choice):
        return any(_nullable(option, nullable) for option in expr.options)
    return expr.low == 0 or _nullable(expr.item, nullable)


def _refs(expr: Expr) -> list[RuleRef]:
    if isinstance(expr, RuleRef):
        return [expr]
    if isinstance(expr, Sequence):
        return [ref for item in expr.items for ref in _refs(item)]
    if isinstance(expr, Choice):
        return [ref for option in expr.options for ref in _refs(option)]
    if isinstance(expr, Repeat):
        return _refs(expr.item)
    return []


def _leading_refs(expr: Expr, nullable: set[str]) -> list[RuleRef]:
    """The rules `expr` may call before it has consumed a byte."""
    if isinstance(expr, RuleRef):
        return [expr]
    if isinstance(expr, Sequence):
        found = []
        for item in expr.items:
            found += _leading_refs(item, nullable)
            if not _nullable(item, nullable):
                break
        return found
    if isinstance(expr, Choice):
        return [ref for option in expr.options for ref in _leading_refs(option, nullable)]
    if isinstance(expr, Repeat) and expr.high != 0:
        return _leading_refs(expr.item, nullable)
    return []


def _check_left_recursion(grammar: Grammar) -> None:
    """Refuse a rule that can call itself before consuming a byte, directly or through
    others (also hidden behind nullable rules: `a ::= b? a "x"`)."""
    nullable = nullable_rules(grammar)
    calls = {
        name: [ref.name for ref in _leading_refs(body, nullable)]
        for name, body in grammar.rules.items()
    }
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = " -> ".join([*path[path.index(name) :], name])
            raise LLMHoodError(
                f"The grammar is left-recursive: {cycle} calls itself before matching any "
                "text, which this matcher cannot run. Write the recursion as a repetition, "
                'e.g. `expr ::= term ("+" term)*` instead of `expr ::= expr "+" term | term`.'
            )
        if name in done:
            return
        for callee in calls[name]:
            visit(callee, [*path, name])
        done.add(name)

    for name in grammar.rules:
        visit(name, [])


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
INTEGER = re.compile(r"\d+")
DEFINES = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\s*::=")
SIMPLE_ESCAPES = {
    "n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'", "/": "/",
    "0": "\0", "a": "\a", "b": "\b", "f": "\f", "v": "\v", "e": "\x1b",
}  # fmt: skip
HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
CLASS_ESCAPES = {"[": "[", "]": "]", "-": "-", "^": "^"}


class _Parser:
    """Recursive descent over the text, one character at a time, positions kept for errors."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def error(self, message: str, pos: int | None = None) -> GrammarSyntaxError:
        at = self.pos if pos is None else pos
        line = self.text.count("\n", 0, at) + 1
        column = at - (self.text.rfind("\n", 0, at) + 1) + 1
        return GrammarSyntaxError(
            f"Grammar syntax error at line {line}, column {column}: {message}"
        )

    def skip_space(self) -> None:
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            elif char.isspace():
                self.pos += 1
            else:
                return

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def rules(self) -> dict[str, Expr]:
        rules: dict[str, Expr] = {}
        self.skip_space()
        while self.pos < len(self.text):
            start = self.pos
            match = NAME.match(self.text, self.pos)
            if match is None:
                raise self.error(f"expected a rule name, got {self.peek()!r}")
            name = match.group()
            self.pos = match.end()
            self.skip_space()
            if not self.text.startswith("::=", self.pos):
                raise self.error(f"expected '::=' after the rule name {name!r}")
            self.pos += 3
            if name in rules:
                raise self.error(f"the rule {name!r} is defined twice; merge them with |", start)
            rules[name] = self.choice()
            self.skip_space()
            if self.peek() == ")":
                raise self.error("a ')' without its '(' before it")
        return rules

    def choice(self) -> Expr:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else Choice(tuple(options))

    def sequence(self) -> Expr:
        items = []
        while True:
            self.skip_space()
            if self.peek() in ("", "|", ")") or DEFINES.match(self.text, self.pos):
                break
            items.append(self.quantified(self.element()))
        if not items:
            got = repr(self.peek()) if self.peek() else "the end of the text"
            raise self.error(f"expected an element (a string, a [class], a rule, ...), got {got}")
        return items[0] if len(items) == 1 else Sequence(tuple(items))

    def element(self) -> Expr:
        start, char = self.pos, self.peek()
        if char == '"':
            return self.literal()
        if char == "[":
            return self.char_class()
        if char == ".":
            self.pos += 1
            return CharClass(((0, MAX_CODE_POINT),))
        if char == "(":
            self.pos += 1
            self.skip_space()
            if self.peek() == ")":
                self.pos += 1
                return Sequence(())
            inner = self.choice()
            self.skip_space()
            if self.peek() != ")":
                raise self.error("expected ')' to close the group opened here", start)
            self.pos += 1
            return inner
        match = NAME.match(self.text, self.pos)
        if match is None:
            raise self.error(f"unexpected character {char!r}")
        line = self.text.count("\n", 0, start) + 1
        column = start - (self.text.rfind("\n", 0, start) + 1) + 1
        self.pos = match.end()
        return RuleRef(match.group(), line, column)

    def quantified(self, item: Expr) -> Expr:
        while True:
            self.skip_space()
            char = self.peek()
            if char and char in "*+?":
                self.pos += 1
                low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
            elif char == "{":
                low, high = self.bounds()
            else:
                return item
            item = Repeat(item, low, high)

    def bounds(self) -> tuple[int, int | None]:
        start = self.pos
        self.pos += 1
        low = self.integer()
        high: int | None = low
        self.skip_space()
        if self.peek() == ",":
            self.pos += 1
            self.skip_space()
            high = None if self.peek() == "}" else self.integer()
        self.skip_space()
        if self.peek() != "}":
            raise self.error("expected '}' to close the repetition {m,n}")
        self.pos += 1
        if high is not None and high < low:
            raise self.error(f"the repetition's lower bound {low} exceeds its upper {high}", start)
        return low, high

    def integer(self) -> int:
        self.skip_space()
        match = INTEGER.match(self.text, self.pos)
        if match is None:
            raise self.error("expected a number in the repetition {m,n}")
        self.pos = match.end()
        return int(match.group())

    def char(self, escapes: dict[str, str]) -> int:
        """One character of a literal or class, escapes decoded, as its code point."""
        start, char = self.pos, self.peek()
        if char == "":
            raise self.error("the text ends inside a string or class")
        self.pos += 1
        if char != "\\":
            return ord(char)
        code = self.peek()
        self.pos += 1
        if code in escapes:
            return ord(escapes[code])
        if code in HEX_ESCAPES:
            digits = self.text[self.pos : self.pos + HEX_ESCAPES[code]]
            if len(digits) != HEX_ESCAPES[code] or not all(
                c in "0123456789abcdefABCDEF" for c in digits
            ):
                raise self.error(f"\\{code} needs {HEX_ESCAPES[code]} hex digits", start)
            self.pos += len(digits)
            value = int(digits, 16)
            if value > MAX_CODE_POINT:
                raise self.error(f"\\{code}{digits} is beyond the last code point U+10FFFF", start)
            return value
        known = " ".join("\\" + c for c in [*escapes, *HEX_ESCAPES])
        raise self.error(f"unknown escape \\{code}; the escapes here are {known}", start)

    def literal(self) -> Literal:
        start = self.pos
        self.pos += 1
        chars = []
        while self.peek() != '"':
            if self.peek() in ("", "\n"):
                raise self.error("the string opened here is not closed with '\"'", start)
            chars.append(self.char(SIMPLE_ESCAPES))
        self.pos += 1
        return Literal(_encode(chars))

    def char_class(self) -> CharClass:
        start = self.pos
        self.pos += 1
        negated = self.peek() == "^"
        self.pos += negated
        escapes = SIMPLE_ESCAPES | CLASS_ESCAPES
        ranges = []
        while self.peek() != "]":
            if self.peek() in ("", "\n"):
                raise self.error("the class opened here is not closed with ']'", start)
            low = self.char(escapes)
            high = low
            if self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                high = self.char(escapes)
                if high < low:
                    raise self.error(f"the range {chr(low)!r}-{chr(high)!r} is backwards", start)
            ranges.append((low, high))
        self.pos += 1
        merged = _merge(ranges)
        return CharClass(_complement(merged) if negated else merged)


def _encode(code_points: list[int]) -> bytes:
    try:
        return "".join(map(chr, code_points)).encode("utf-8")
    except UnicodeEncodeError as e:
        raise LLMHoodError(
            "A string in the grammar holds a surrogate code point (U+D800..U+DFFF), which "
            "UTF-8 text cannot contain; write the character itself, or its \\U escape for one "
            "beyond U+FFFF instead of a pair of \\u surrogates."
        ) from e


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return tuple(merged)


def _complement(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    out, next_low = [], 0
    for low, high in ranges:
        if low > next_low:
            out.append((next_low, low - 1))
        next_low = high + 1
    if next_low <= MAX_CODE_POINT:
        out.append((next_low, MAX_CODE_POINT))
    return tuple(out)


def compile_grammar(
    grammar: Grammar, vocab: TokenVocab, walk: TrieWalk | None = None
) -> CompiledGrammar:
    """The grammar ready to constrain decoding with `vocab`; `walk`: the vocabulary's trie
    levels when the caller already has them (mask.py builds them once per tokenizer)."""
    from llmhood.generate.constrain.pda import BytePDA  # pda.py reads this module's rules

    return CompiledGrammar(BytePDA(grammar), vocab, walk or TrieWalk.build(vocab))


class CompiledGrammar:
    """What every row decoding with one grammar shares: the automaton, whose states and
    table grow as rows visit them, and each state's token mask, computed once."""

    def __init__(self, pda: BytePDA, vocab: TokenVocab, walk: TrieWalk):
        self.pda = pda
        self.vocab = vocab
        self.walk = walk
        self._masks: OrderedDict[int, torch.Tensor] = OrderedDict()

    def matcher(self) -> GrammarMatcher:
        return GrammarMatcher(self)

    def mask(self, state: int) -> torch.Tensor:
        """(V,) bool: the tokens all of whose bytes `state` consumes. The same tensor for the
        same state (callers must not write to it); the least recently used go first."""
        mask = self._masks.get(state)
        if mask is None:
            mask = self._walk(state)
            self._masks[state] = mask
            if len(self._masks) > MASK_CACHE_SIZE:
                self._masks.popitem(last=False)
        self._masks.move_to_end(state)
        return mask

    def _walk(self, state: int) -> torch.Tensor:
        """Every trie node's state at once, one depth at a time (mask.py's numpy walk), with
        the table's unknown entries filled as the walk meets them: the dead state steps to
        itself, so a refused prefix's subtree stays dead at no cost, and only pairs (state,
        byte) that some live prefix needs are ever computed."""
        pda, walk = self.pda, self.walk
        states = np.zeros(len(walk.bytes_np), dtype=np.int64)
        states[0] = state
        for nodes, parents in walk.levels:
            from_states, data = states[parents], walk.bytes_np[nodes]
            following = pda.table[from_states, data]
            unknown = np.flatnonzero(following < 0)
            if len(unknown):
                for pair in np.unique(from_states[unknown] * 256 + data[unknown]).tolist():
                    pda.step(pair // 256, pair % 256)
                following = pda.table[from_states, data]
            states[nodes] = following
        allowed = np.zeros(self.vocab.size, dtype=bool)
        allowed[walk.token_ids.numpy()] = states[walk.token_node] != 0
        return torch.from_numpy(allowed)


class GrammarMatcher:
    """One row's parser state in a grammar: the Matcher of matcher.py.

    Built from a `CompiledGrammar` (rows share it), or from a `Grammar` and a vocabulary
    (compiled here, for this matcher alone).
    """

    def __init__(self, grammar: CompiledGrammar | Grammar, vocab: TokenVocab | None = None):
        if isinstance(grammar, Grammar):
            if vocab is None:
                raise LLMHoodError("A GrammarMatcher from a Grammar needs the vocabulary too.")
            grammar = compile_grammar(grammar, vocab)
        self.compiled = grammar
        self.state = grammar.pda.start

    def allowed(self) -> torch.Tensor:
        """(V,) bool: tokens whose bytes can all be consumed now; never a special token."""
        return self.compiled.mask(self.state)

    def advance(self, token: int) -> None:
        vocab = self.compiled.vocab
        data = vocab.token_bytes[token] if 0 <= token < vocab.size else b""
        state = self.compiled.pda.walk(self.state, data)
        if not data or state == 0:
            raise LLMHoodError(
                f"Token {token} ({data!r}) cannot follow here: the grammar refuses it. "
                "Advance only with tokens that allowed() allows."
            )
        self.state = state

    @property
    def accepting(self) -> bool:
        """The text so far is a whole sentence of the grammar: it may end now."""
        return self.compiled.pda.accepting[self.state]

    @property
    def can_continue(self) -> bool:
        return self.compiled.pda.can_continue(self.state)
