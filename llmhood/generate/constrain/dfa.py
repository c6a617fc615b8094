"""Deterministic automata over bytes, built from Thompson NFAs by subset construction.

A constraint asks one question per token and per state: where do these bytes lead? A DFA
answers it with one table lookup per byte (`transitions[state, byte]`), which is what the
token-trie walk in vocab.py needs. The DFA is built once per regex or schema:

1. **Byte classes.** The NFA's edges are byte ranges; their end points cut 0..255 into a few
   dozen intervals that no edge tells apart (all of `80-BF`, say). Subset construction then
   works per class, not per byte, and the table is expanded to 256 columns only at the end.
2. **Subset construction**, keeping in each DFA state only the NFA states that matter (those
   with byte edges, and the accepting one): two sets that differ only in epsilon-only states
   behave identically, so dropping those merges them.
3. **Pruning.** A state from which no accepting state can be reached is folded into the dead
   state 0, so a walk learns at the first wrong byte, not later, that a token is refused.
4. **Minimization** by Moore's partition refinement (states split by their acceptance, then by
   the blocks their transitions reach, until nothing splits): fewer states means fewer masks
   for a constraint to compute and cache. Within a work budget: see `_minimize`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

DEAD = 0
MINIMIZE_BUDGET = 150_000  # states times rounds of Moore's refinement: about 20 ms


@dataclass
class NFA:
    """A Thompson NFA over bytes: each state has epsilon edges and inclusive byte-range edges."""

    epsilon: list[list[int]] = field(default_factory=list)
    edges: list[list[tuple[int, int, int]]] = field(default_factory=list)  # (lo, hi, target)

    def add_state(self) -> int:
        self.epsilon.append([])
        self.edges.append([])
        return len(self.epsilon) - 1


@dataclass(frozen=True)
class DFA:
    """A complete DFA over bytes; state 0 is the dead state, whose every transition is to 0.

    Every other state can still reach an accepting state, so "not dead" means "this prefix can
    be completed".
    """

    transitions: np.ndarray  # (states, 256) int32
    accepting: np.ndarray  # (states,) bool
    start: int

    @property
    def states(self) -> int:
        return len(self.accepting)

    def step(self, state: int, data: bytes) -> int:
        """The state after `data`, or 0 as soon as a byte is refused."""
        table = self.transitions
        for byte in data:
            state = int(table[state, byte])
            if state == DEAD:
                return DEAD
        return state

    def matches(self, data: bytes) -> bool:
        """Whether all of `data` is in the language (a full match, not a prefix or a search)."""
        return bool(self.accepting[self.step(self.start, data)])

    def can_continue(self, state: int) -> bool:
        """Whether some byte leads on to a live state (False at a dead end: accept or die)."""
        return bool(self.transitions[state].any())


def determinize(nfa: NFA, start: int, accept: int) -> DFA:
    """The DFA of the NFA's language from `start` to its one accepting state `accept`.

    Pruned always, minimal within MINIMIZE_BUDGET; the start state is 1 unless the language
    is empty, when the DFA is the dead state alone (start 0).
    """
    byte_class = _byte_classes(nfa)
    table, accepting = _subsets(nfa, start, accept, byte_class)
    table, accepting = _prune(table, accepting)
    if not accepting.any():  # the empty language: only the dead state is left
        return DFA(np.zeros((1, 256), dtype=np.int32), np.zeros(1, dtype=bool), DEAD)
    table, accepting = _minimize(table, accepting)
    return DFA(
        transitions=np.ascontiguousarray(table[:, byte_class], dtype=np.int32),
        accepting=accepting,
        start=1,
    )


def _byte_classes(nfa: NFA) -> np.ndarray:
    """(256,) the class of each byte: bytes no edge tells apart share a class."""
    cuts = {0, 256}
    for edges in nfa.edges:
        for lo, hi, _ in edges:
            cuts.add(lo)
            cuts.add(hi + 1)
    bounds = sorted(cuts)
    byte_class = np.zeros(256, dtype=np.int64)
    for k in range(len(bounds) - 1):
        byte_class[bounds[k] : bounds[k + 1]] = k
    return byte_class


def _subsets(
    nfa: NFA, start: int, accept: int, byte_class: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Subset construction over byte classes; row 0 of the table is the dead state."""
    classes = int(byte_class[-1]) + 1
    # Each NFA state's byte edges as (class, target) pairs, precomputed once.
    first_class = byte_class.tolist()
    moves = [
        [(c, t) for lo, hi, t in e for c in range(first_class[lo], first_class[hi] + 1)]
        for e in nfa.edges
    ]
    closures: dict[int, frozenset[int]] = {}

    def closure(state: int) -> frozenset[int]:
        """The states with byte edges (or the accepting one) reachable by epsilon edges."""
        found = closures.get(state)
        if found is None:
            seen, stack, keep = {state}, [state], []
            while stack:
                s = stack.pop()
                if nfa.edges[s] or s == accept:
                    keep.append(s)
                for t in nfa.epsilon[s]:
                    if t not in seen:
                        seen.add(t)
                        stack.append(t)
            found = closures[state] = frozenset(keep)
        return found

    first = closure(start)
    index: dict[frozenset[int], int] = {first: 1}
    order = [first]
    rows: list[list[int]] = [[DEAD] * classes]
    by_targets: dict[frozenset[int], int] = {}
    i = 0
    while i < len(order):
        targets: dict[int, set[int]] = {}
        for s in order[i]:
            for c, t in moves[s]:
                if c in targets:
                    targets[c].add(t)
                else:
                    targets[c] = {t}
        row = [DEAD] * classes
        for c, raw in targets.items():
            key = frozenset(raw)
            state = by_targets.get(key)
            if state is None:
                subset = frozenset().union(*(closure(t) for t in raw))
                state = index.get(subset)
                if state is None:
                    state = index[subset] = len(order) + 1
                    order.append(subset)
                by_targets[key] = state
            row[c] = state
        rows.append(row)
        i += 1
    accepting = np.array([False] + [accept in s for s in order])
    return np.array(rows, dtype=np.int64).reshape(len(rows), classes), accepting


def _prune(table: np.ndarray, accepting: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold every state that cannot reach acceptance into the dead state 0, and drop it.

    A backward search from the accepting states, over each distinct (source, target) edge once.
    """
    states = len(table)
    edges = np.unique(table * states + np.arange(states)[:, None])  # target * states + source
    targets, sources = np.divmod(edges, states)
    bounds = np.searchsorted(targets, np.arange(states + 1))
    predecessors = sources.tolist()
    bounds = bounds.tolist()
    reached = accepting.tolist()
    reached[DEAD] = False
    stack = [s for s in range(states) if reached[s]]
    while stack:
        t = stack.pop()
        for s in predecessors[bounds[t] : bounds[t + 1]]:
            if not reached[s]:
                reached[s] = True
                stack.append(s)
    keep = np.array(reached)
    keep[DEAD] = True
    number = np.cumsum(keep) - 1  # the kept states, renumbered in order; dead stays 0
    table = np.where(keep[table], number[table], DEAD)
    table[DEAD] = DEAD
    return table[keep], accepting[keep]


def _minimize(table: np.ndarray, accepting: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Moore's refinement; the dead state keeps number 0 and the start state gets 1.

    Each round labels every state by its row (own block, blocks of its successors). A string
    of up to n characters is a chain that needs n rounds, so a round must be cheap: rows are
    grouped by a random linear hash, then checked equal within each group (exact; a collision
    would only cost one slower, dictionary-based round). Rounds times states is still
    quadratic for long chains, so past MINIMIZE_BUDGET the DFA is returned as built: correct,
    only not minimal, and the automata that large are long counted strings, which subset
    construction already builds minimal or nearly (a 50-character string: 654 states either way).
    """
    weights = np.random.default_rng(0).integers(1, 2**63, size=table.shape[1] + 1, dtype=np.uint64)
    block = accepting.astype(np.int64) + 1
    block[DEAD] = 0
    count = len(np.unique(block))
    rounds = 0
    while True:
        rounds += 1
        if rounds * len(block) > MINIMIZE_BUDGET:
            return table, accepting
        rows = np.concatenate([block[:, None], block[table]], axis=1)
        hashes = (rows.astype(np.uint64) * weights).sum(axis=1)
        _, first, refined = np.unique(hashes, return_index=True, return_inverse=True)
        refined = refined.reshape(-1)
        if not (rows == rows[first[refined]]).all():
            keys = [row.tobytes() for row in rows]
            ids: dict[bytes, int] = {}
            refined = np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)
        block = refined
        new_count = int(block.max()) + 1
        if new_count == count:
            break
        count = new_count
    # Number the blocks in order of their first state: dead 0, start 1.
    _, first_state = np.unique(block, return_index=True)
    order = np.argsort(first_state)
    rename = np.empty(count, dtype=np.int64)
    rename[order] = np.arange(count)
    first_state = first_state[order]
    return rename[block[table[first_state]]], accepting[first_state]
