"""Which tokens a DFA state accepts whole: the token mask of one decoding step.

A token may come next when every one of its bytes can be consumed from the automaton's
state, i.e. when stepping the DFA through its bytes never reaches the dead state 0. The
tokens are walked as a trie (vocab.py), so a prefix shared by many tokens is stepped once.

Two ways to walk it, held equal by tests/test_constrain_mask.py:

* **C++** (mask.cpp, the default where it builds): the preorder walk, one node after the
  other, jumping over the subtree of every refused prefix. A JSON structural state refuses
  almost every first byte, so the walk touches a few hundred of SmolLM2's nodes; inside a
  string it touches most of them, about a hundred thousand steps, in about 0.4 ms.
* **numpy** (LLMHOOD_FAST_MASK=0, or where no compiler is found): every node's state at
  once, one depth at a time, stepping all nodes of depth d from their parents' states. It
  does not skip, since the dead state steps to itself, but each depth is one vectorized
  lookup: about 1.5 ms for the whole of SmolLM2's vocabulary.

A mask depends on the state alone, so `StateMasks` computes each state's mask once and
keeps it: the compiled constraint owns it, and every row and every generation that uses the
constraint shares it. A JSON schema's generations visit a few hundred states, at one byte
per token of the vocabulary each (49 KB for SmolLM2).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

from llmhood.generate.constrain.vocab import TokenVocab
from llmhood.speed import kernels

SOURCE = Path(__file__).with_name("mask.cpp")
FAST_ENV = "LLMHOOD_FAST_MASK"  # "0" keeps the numpy walk


@cache
def available() -> str | None:
    """None when the C++ walk is ready in this process, else why not (llmhood.speed.kernels)."""
    if hasattr(torch.ops.llmhood_constrain, "token_mask"):
        return None
    return kernels.load(SOURCE)


def fast_default() -> bool:
    """The C++ walk unless LLMHOOD_FAST_MASK=0 asks for numpy or it cannot be built."""
    return os.environ.get(FAST_ENV, "1") != "0" and available() is None


@dataclass(frozen=True)
class TrieWalk:
    """A vocabulary's trie in the forms both walks read; built once per tokenizer."""

    vocab_size: int
    # For the C++ walk: the trie's arrays as tensors (vocab.py says what each holds).
    byte: torch.Tensor  # (nodes,) uint8
    depth: torch.Tensor  # (nodes,) int32
    subtree_end: torch.Tensor  # (nodes,) int32
    token_start: torch.Tensor  # (nodes + 1,) int32
    token_ids: torch.Tensor  # (tokens with bytes,) int32
    max_depth: int
    # For the numpy walk: per depth d >= 1, its nodes and their parents.
    levels: list[tuple[np.ndarray, np.ndarray]]
    bytes_np: np.ndarray  # (nodes,) int64, the byte of each node, as an index
    token_node: np.ndarray  # (tokens with bytes,) the node each token of token_ids ends at

    @classmethod
    def build(cls, vocab: TokenVocab) -> TrieWalk:
        trie = vocab.trie
        depth = trie.depth.astype(np.int64)
        # In preorder, a node's parent is the last node before it that is one level higher.
        parent = np.zeros(trie.nodes, dtype=np.int64)
        last = np.zeros(int(depth.max()) + 1, dtype=np.int64)
        for n in range(1, trie.nodes):
            parent[n] = last[depth[n] - 1]
            last[depth[n]] = n
        levels = []
        for d in range(1, int(depth.max()) + 1):
            nodes = np.flatnonzero(depth == d)
            levels.append((nodes, parent[nodes]))
        counts = np.diff(trie.token_start)
        return cls(
            vocab_size=vocab.size,
            byte=torch.from_numpy(trie.byte.copy()),
            depth=torch.from_numpy(trie.depth.copy()),
            subtree_end=torch.from_numpy(trie.subtree_end.copy()),
            token_start=torch.from_numpy(trie.token_start.copy()),
            token_ids=torch.from_numpy(trie.token_ids.copy()),
            max_depth=int(depth.max()),
            levels=levels,
            bytes_np=trie.byte.astype(np.int64),
            token_node=np.repeat(np.arange(trie.nodes), counts),
        )

    def numpy_mask(self, transitions: np.ndarray, state: int) -> torch.Tensor:
        """(V,) bool: the tokens all of whose bytes `state` consumes; level by level."""
        states = np.zeros(len(self.bytes_np), dtype=np.int64)
        states[0] = state
        for nodes, parents in self.levels:
            states[nodes] = transitions[states[parents], self.bytes_np[nodes]]
        allowed = np.zeros(self.vocab_size, dtype=bool)
        allowed[self.token_ids.numpy()] = states[self.token_node] != 0
        return torch.from_numpy(allowed)

    def fast_mask(self, transitions: torch.Tensor, state: int) -> torch.Tensor:
        """`numpy_mask` through mask.cpp; `transitions` (states, 256) int32, contiguous."""
        out = torch.empty(self.vocab_size, dtype=torch.bool)
        torch.ops.llmhood_constrain.token_mask(
            transitions, self.byte, self.depth, self.subtree_end, self.token_start,
            self.token_ids, self.max_depth, state, out,
        )  # fmt: skip
        return out


class StateMasks:
    """Each DFA state's token mask, computed on first use and kept.

    transitions: the DFA's (states, 256) table, state 0 dead. `fast`: the C++ walk (True),
    numpy (False), or the default of `fast_default` (None).
    """

    def __init__(self, walk: TrieWalk, transitions: np.ndarray, fast: bool | None = None):
        self.walk = walk
        self.transitions = np.ascontiguousarray(transitions, dtype=np.int32)
        self.fast = fast_default() if fast is None else fast
        if self.fast and available() is not None:
            raise RuntimeError(f"the C++ token mask cannot run here: {available()}")
        self._table = torch.from_numpy(self.transitions)
        self._masks: dict[int, torch.Tensor] = {}

    def __call__(self, state: int) -> torch.Tensor:
        """(V,) bool; the same tensor every time for a state: callers must not write to it."""
        mask = self._masks.get(state)
        if mask is None:
            if self.fast:
                mask = self.walk.fast_mask(self._table, state)
            else:
                mask = self.walk.numpy_mask(self.transitions, state)
            self._masks[state] = mask
        return mask

    def precompute(self, states: Iterable[int]) -> None:
        """These states' masks now, so that decoding only looks them up."""
        for state in states:
            self(state)

    def __len__(self) -> int:
        return len(self._masks)
