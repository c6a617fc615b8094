"""A context-free grammar run as a pushdown automaton over bytes, determinised as it goes.

Each rule becomes a small automaton over byte positions (Thompson's construction): an edge
consumes one byte out of a range, calls another rule, or is empty. A character class becomes
the UTF-8 byte sequences of its code points, so a token may end inside a character and the
next one continue it; a literal becomes its bytes.

A parse in progress is a stack of positions: the top is where the current rule has got to,
and below it the positions to return to when each calling rule's callee finishes. Grammars
are ambiguous and a prefix may be several parses at once, so a *parser state* is the set of
all stacks that read the text so far, as in llama.cpp's grammar sampler. Stacks share their
tails, so each is one interned node `(position, parent node)`, and a state is a set of node
numbers: only stacks whose top can consume a byte are kept, the others are expanded first
(calls pushed, finished rules popped). A state also records whether the whole root rule may
be finished (`accepting`).

The same set of stacks is the same state, so states are interned and numbered, and the
automaton becomes a DFA built lazily: `table[state, byte]` is the next state, filled on first
use (-1 until then, 0 the dead state). A grammar's generations revisit the same few states
(inside a string, after a comma at the same depth), and from the second visit on a step is
one table lookup, as cheap as for a regex's DFA. Recursion deeper than any seen before makes
new states: the table grows with the text's nesting, not with its length.

Expanding calls before any byte is consumed would never end for a left-recursive rule; the
grammar refuses those when it is parsed (grammar.py).
"""

from __future__ import annotations

import numpy as np

from llmhood.generate.constrain import utf8
from llmhood.generate.constrain.grammar import (
    CharClass,
    Choice,
    Expr,
    Grammar,
    Literal,
    Repeat,
    RuleRef,
    Sequence,
)

DEAD = 0
UNKNOWN = -1


class BytePDA:
    """A grammar's pushdown automaton, with its lazily built table of states.

    States are numbers: 0 is dead (no stack left, not accepting), `start` the empty text.
    """

    def __init__(self, grammar: Grammar):
        self.edges: list[list[tuple[int, int, int]]] = []  # per position: (low, high, target)
        self.empty: list[list[int]] = []  # per position: targets of empty edges
        self.calls: list[list[tuple[int, int]]] = []  # per position: (callee start, return to)
        self.returns: list[bool] = []  # per position: the end of its rule
        starts = {name: self._position() for name in grammar.rules}
        for name, body in grammar.rules.items():
            end = self._position()
            self.returns[end] = True
            self._build(body, starts[name], end, starts)

        self.nodes: list[tuple[int, int]] = []  # stack node -> (position, parent node or -1)
        self._node_ids: dict[tuple[int, int], int] = {}
        self._closures: dict[tuple[int, int], tuple[frozenset[int], bool]] = {}
        self.states: list[tuple[int, ...]] = []  # state -> its stacks, sorted
        self.accepting: list[bool] = []
        self._state_ids: dict[tuple[frozenset[int], bool], int] = {}
        self.table = np.full((64, 256), UNKNOWN, dtype=np.int32)  # grows as states appear
        self._live: dict[int, bool] = {}
        self._intern(frozenset(), False)
        self.table[DEAD] = DEAD
        self.start = self._intern(*self._closure(starts[grammar.root], -1))

    @property
    def state_count(self) -> int:
        return len(self.states)

    def step(self, state: int, byte: int) -> int:
        """The state after one more byte (DEAD when the grammar refuses it)."""
        known = int(self.table[state, byte])
        if known != UNKNOWN:
            return known
        stacks: set[int] = set()
        accepting = False
        for node in self.states[state]:
            position, parent = self.nodes[node]
            for low, high, target in self.edges[position]:
                if low <= byte <= high:
                    more, done = self._closure(target, parent)
                    stacks |= more
                    accepting |= done
        following = self._intern(frozenset(stacks), accepting)
        self.table[state, byte] = following
        return following

    def walk(self, state: int, data: bytes) -> int:
        for byte in data:
            state = self.step(state, byte)
            if state == DEAD:
                break
        return state

    def matches(self, data: bytes) -> bool:
        """`data` is a whole sentence of the grammar."""
        return self.accepting[self.walk(self.start, data)]

    def can_continue(self, state: int) -> bool:
        """Some byte may follow: a state may keep stacks that lead nowhere (an empty class)."""
        live = self._live.get(state)
        if live is None:
            live = any(self.step(state, byte) != DEAD for byte in range(256))
            self._live[state] = live
        return live

    def _position(self) -> int:
        self.edges.append([])
        self.empty.append([])
        self.calls.append([])
        self.returns.append(False)
        return len(self.edges) - 1

    def _build(self, expr: Expr, start: int, end: int, rules: dict[str, int]) -> None:
        """Edges from `start` to `end` that read exactly `expr`."""
        if isinstance(expr, Literal):
            for byte in expr.data[:-1]:
                following = self._position()
                self.edges[start].append((byte, byte, following))
                start = following
            if expr.data:
                self.edges[start].append((expr.data[-1], expr.data[-1], end))
            else:
                self.empty[start].append(end)
        elif isinstance(expr, CharClass):
            for low, high in expr.ranges:
                for ranges in utf8.sequences(low, high):
                    here = start
                    for byte_low, byte_high in ranges[:-1]:
                        following = self._position()
                        self.edges[here].append((byte_low, byte_high, following))
                        here = following
                    self.edges[here].append((*ranges[-1], end))
        elif isinstance(expr, RuleRef):
            self.calls[start].append((rules[expr.name], end))
        elif isinstance(expr, Sequence):
            for item in expr.items[:-1]:
                following = self._position()
                self._build(item, start, following, rules)
                start = following
            if expr.items:
                self._build(expr.items[-1], start, end, rules)
            else:
                self.empty[start].append(end)
        elif isinstance(expr, Choice):
            for option in expr.options:
                self._build(option, start, end, rules)
        else:
            self._build_repeat(expr, start, end, rules)

    def _build_repeat(self, expr: Repeat, start: int, end: int, rules: dict[str, int]) -> None:
        """`low` copies in a row, then either a loop (no upper bound) or `high - low` optional
        copies, each of which may end the repetition."""
        for _ in range(expr.low):
            following = self._position()
            self._build(expr.item, start, following, rules)
            start = following
        if expr.high is None:
            self._build(expr.item, start, start, rules)
        else:
            for _ in range(expr.high - expr.low):
                self.empty[start].append(end)
                following = self._position()
                self._build(expr.item, start, following, rules)
                start = following
        self.empty[start].append(end)

    def _node(self, position: int, parent: int) -> int:
        key = (position, parent)
        node = self._node_ids.get(key)
        if node is None:
            node = len(self.nodes)
            self.nodes.append(key)
            self._node_ids[key] = node
        return node

    def _closure(self, position: int, parent: int) -> tuple[frozenset[int], bool]:
        """The stacks reached from `position` over `parent` without consuming a byte: those
        whose top has a byte edge, and whether the root rule may be finished."""
        key = (position, parent)
        cached = self._closures.get(key)
        if cached is not None:
            return cached
        stacks: set[int] = set()
        accepting = False
        seen: set[tuple[int, int]] = set()
        todo = [key]
        while todo:
            item = todo.pop()
            if item in seen:
                continue
            seen.add(item)
            here, below = item
            if self.edges[here]:
                stacks.add(self._node(here, below))
            todo += [(target, below) for target in self.empty[here]]
            todo += [(callee, self._node(back, below)) for callee, back in self.calls[here]]
            if self.returns[here]:
                if below < 0:
                    accepting = True
                else:
                    todo.append(self.nodes[below])
        result = (frozenset(stacks), accepting)
        self._closures[key] = result
        return result

    def _intern(self, stacks: frozenset[int], accepting: bool) -> int:
        key = (stacks, accepting)
        state = self._state_ids.get(key)
        if state is None:
            state = len(self.states)
            self.states.append(tuple(sorted(stacks)))
            self.accepting.append(accepting)
            self._state_ids[key] = state
            if state == len(self.table):
                grown = np.full((2 * len(self.table), 256), UNKNOWN, dtype=np.int32)
                grown[:state] = self.table
                self.table = grown
        return state
