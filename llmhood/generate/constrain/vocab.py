"""The vocabulary as bytes, arranged as a trie, so that a grammar can judge all tokens at once.

A constraint decides which tokens may come next by feeding each token's bytes to an automaton.
Tokens share prefixes (`"`, `",`, `",\\n`), and a prefix the automaton rejects rules out every
token that starts with it. So the tokens form a trie whose nodes are the distinct byte prefixes,
and a walk through it feeds each prefix's bytes once, skipping a whole subtree at the first
byte the automaton refuses.

The nodes are numbered in depth-first preorder (the prefixes sorted as byte strings), so a
walk is one loop over node numbers: `depth[n]` says which earlier state to step from, and
`subtree_end[n]` is where the loop jumps when node `n` is refused. No recursion, no pointers:
the same loop runs in Python and in C++ (mask.cpp).

Bytes, not text: SmolLM2 has 313 tokens that are not valid UTF-8 on their own (pieces of a
multi-byte character) and 72 that join a quote with JSON punctuation, so an automaton must step
inside tokens and across partial characters. Special tokens (`<|im_end|>`) are control
signals, not text: they have no bytes here and are never allowed as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TokenTrie:
    """Distinct byte prefixes of the tokens; node 0 is the root (the empty prefix)."""

    byte: np.ndarray  # (nodes,) uint8: the last byte of the node's prefix (0 for the root)
    depth: np.ndarray  # (nodes,) int32: the prefix's length
    subtree_end: np.ndarray  # (nodes,) int32: one past the last node below n
    token_start: (
        np.ndarray
    )  # (nodes + 1,) int32: tokens ending at n are token_ids[start[n]:start[n+1]]
    token_ids: np.ndarray  # (tokens with bytes,) int32

    @property
    def nodes(self) -> int:
        return len(self.byte)

    @classmethod
    def build(cls, token_bytes: Sequence[bytes]) -> TokenTrie:
        """The trie of every non-empty entry of `token_bytes`, indexed by token id."""
        order = sorted((data, i) for i, data in enumerate(token_bytes) if data)
        byte, depth, ends = [0], [0], [[]]
        stack = [b""]  # the prefixes on the path from the root to the last node added
        parents = [0]  # their node numbers
        subtree_end = [0]
        for data, token in order:
            # Climb to the longest prefix of `data` already on the path, then add the rest.
            while not data.startswith(stack[-1]):
                subtree_end[parents.pop()] = len(byte)
                stack.pop()
            for k in range(len(stack[-1]), len(data)):
                byte.append(data[k])
                depth.append(k + 1)
                ends.append([])
                subtree_end.append(0)
                stack.append(data[: k + 1])
                parents.append(len(byte) - 1)
            ends[parents[-1]].append(token)
        for node in parents:
            subtree_end[node] = len(byte)
        counts = np.array([len(e) for e in ends], dtype=np.int64)
        token_start = np.zeros(len(ends) + 1, dtype=np.int32)
        np.cumsum(counts, out=token_start[1:])
        flat = [t for e in ends for t in e]
        return cls(
            byte=np.array(byte, dtype=np.uint8),
            depth=np.array(depth, dtype=np.int32),
            subtree_end=np.array(subtree_end, dtype=np.int32),
            token_start=token_start,
            token_ids=np.array(flat, dtype=np.int32),
        )


@dataclass(frozen=True)
class TokenVocab:
    """Every token id's bytes, and their trie."""

    token_bytes: list[bytes]  # per id; b"" for special tokens, which are never text
    trie: TokenTrie

    @property
    def size(self) -> int:
        return len(self.token_bytes)

    @classmethod
    def from_bytes(cls, token_bytes: Sequence[bytes]) -> TokenVocab:
        return cls(list(token_bytes), TokenTrie.build(token_bytes))

    @classmethod
    def from_tokenizer(cls, tokenizer, size: int | None = None) -> TokenVocab:
        """From a tokenizer with `decode_bytes` and `special_ids` (llmhood.tokenizer.BPETokenizer).

        `size` is the model's vocabulary size, when its output layer has more rows than the
        tokenizer has tokens (padding rows are never text either).
        """
        count = tokenizer.vocab_size if size is None else size
        known = tokenizer.vocab_size
        data = [
            b"" if i >= known or i in tokenizer.special_ids else tokenizer.decode_bytes([i])
            for i in range(count)
        ]
        return cls.from_bytes(data)
