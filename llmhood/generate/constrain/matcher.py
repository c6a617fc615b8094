"""A constraint as one row's logits processor: mask the logits, follow the sampled token.

Three layers, each shared as widely as it can be:

* `Constraints` — one per tokenizer: the vocabulary as a trie (vocab.py, mask.py), and the
  compiled constraints, each compiled once per distinct schema, regex or grammar and kept
  (least recently used first out);
* a compiled constraint (`CompiledDFA`, or a grammar's) — the automaton and its masks per
  state, shared by every row and every generation that uses it;
* a `Matcher` — one per row: where that row's text has got to.

`Constraint` wraps a row's matcher as the logits processor generation calls
(llmhood.generate.generate): before each draw it sets the logit of every token the matcher
refuses to -inf, so every sampling setting (greedy, temperature, top-k/p, min-p, repetition
penalty) chooses among allowed tokens only; after the draw it advances the matcher.

End of sequence: stop tokens are control tokens with no bytes (vocab.py), so a matcher never
allows them as text; `Constraint` allows them exactly when the matcher is accepting. When
the text is complete and no byte can follow, the matcher allows no text token and only the
stop tokens remain: the row ends there instead of running to the token limit.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Literal, Protocol

import numpy as np
import torch

from llmhood.errors import LLMHoodError
from llmhood.generate.constrain.mask import StateMasks, TrieWalk
from llmhood.generate.constrain.vocab import TokenVocab

Kind = Literal["json_schema", "regex", "grammar"]
KINDS: tuple[Kind, ...] = ("json_schema", "regex", "grammar")
CACHE_SIZE = 64  # compiled constraints kept per tokenizer
PRECOMPUTE_STATES = 2048  # DFAs up to this size get all their masks at compile time


class Matcher(Protocol):
    """One row's position in a constrained language, over the bytes of its tokens."""

    def allowed(self) -> torch.Tensor:
        """(V,) bool: the tokens all of whose bytes can be consumed now. Never a special
        token (no bytes). Callers must not write to it: it may be a cached tensor."""
        ...

    def advance(self, token: int) -> None:
        """Consume a token's bytes; LLMHoodError if `allowed()` refuses it."""
        ...

    @property
    def accepting(self) -> bool:
        """The text so far is complete: end of sequence may come now."""
        ...

    @property
    def can_continue(self) -> bool:
        """Some byte may still follow."""
        ...


class Compiled(Protocol):
    """A compiled constraint: what all rows using it share. `matcher()` starts a row."""

    def matcher(self) -> Matcher: ...


class CompiledDFA:
    """A DFA over bytes (dfa.py: state 0 dead) with the vocabulary, and its masks per state.

    A DFA of at most `precompute` states has every state's mask computed here, at compile
    time, as xgrammar does: a function call's schema has 60 to 200 states, all of them
    together cost a few milliseconds, and decoding then only looks masks up. A larger one
    computes each state's mask when a row first reaches it, since a generation visits few of
    its states."""

    def __init__(
        self,
        dfa: Any,
        vocab: TokenVocab,
        walk: TrieWalk,
        fast: bool | None = None,
        precompute: int = PRECOMPUTE_STATES,
    ):
        self.dfa = dfa
        self.vocab = vocab
        self.masks = StateMasks(walk, dfa.transitions, fast)
        self.live = (self.masks.transitions != 0).any(axis=1)  # (states,) some byte may follow
        self.accepting = np.asarray(dfa.accepting, dtype=bool)  # (states,)
        if len(self.live) <= precompute:
            self.masks.precompute(np.flatnonzero(self.live).tolist())  # never the dead state 0

    def matcher(self) -> DFAMatcher:
        return DFAMatcher(self)


class DFAMatcher:
    """A row's DFA state."""

    def __init__(self, compiled: CompiledDFA):
        self.compiled = compiled
        self.state = int(compiled.dfa.start)

    def allowed(self) -> torch.Tensor:
        return self.compiled.masks(self.state)

    def advance(self, token: int) -> None:
        vocab = self.compiled.vocab
        data = vocab.token_bytes[token] if 0 <= token < vocab.size else b""
        state = self.state
        table = self.compiled.masks.transitions
        for byte in data:
            state = int(table[state, byte])
            if state == 0:
                break
        if not data or state == 0:
            raise LLMHoodError(
                f"Token {token} ({data!r}) cannot follow here: the constraint refuses it. "
                "Advance only with tokens that allowed() allows."
            )
        self.state = state

    @property
    def accepting(self) -> bool:
        return bool(self.compiled.accepting[self.state])

    @property
    def can_continue(self) -> bool:
        return bool(self.compiled.live[self.state])


class Constraint:
    """A row's logits processor (llmhood.generate.generate.LogitsProcessor) from a matcher."""

    def __init__(self, matcher: Matcher):
        self.matcher = matcher

    def process(self, logits: torch.Tensor, stop_ids: torch.Tensor) -> torch.Tensor:
        """logits (V,) -> (V,), -inf for every refused token; stop_ids (k,) int64."""
        allowed = self.matcher.allowed().to(logits.device)
        accepting = self.matcher.accepting and len(stop_ids) > 0
        if not accepting and (not self.matcher.can_continue or not bool(allowed.any())):
            raise LLMHoodError(
                "The constrained text cannot be completed: no token of the vocabulary "
                "continues it"
                + (" and there is no end-of-sequence token." if self.matcher.accepting else ".")
                + " Check that the tokenizer can spell what the constraint asks for."
            )
        masked = torch.where(allowed, logits, float("-inf"))
        if accepting:
            masked[stop_ids] = logits[stop_ids]
        return masked

    def advance(self, token: int) -> None:
        self.matcher.advance(token)

    @property
    def complete(self) -> bool:
        """The text is a full sentence of the constraint (it may end here)."""
        return self.matcher.accepting


def load_schema(schema: dict | bool | str) -> dict | bool:
    """A schema given as a dict, a bool (true: any JSON) or JSON text, as a Python value."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise LLMHoodError(
                f"The JSON schema is not valid JSON: {e.msg} at line {e.lineno}, column "
                f"{e.colno}. Give a schema as a dict or as JSON text."
            ) from e
    if not isinstance(schema, dict | bool):
        raise LLMHoodError(
            f"A JSON schema is an object (or true/false), not {type(schema).__name__}."
        )
    return schema


def compile_dfa(kind: Kind, source: Any) -> Any:
    """The DFA of a JSON schema or a regex, without a vocabulary: all that can be checked
    before a model loads (UnsupportedSchema, an unsupported regex) is checked here."""
    if kind == "json_schema":
        from llmhood.generate.constrain.json_schema import compile_json_schema

        return compile_json_schema(load_schema(source))
    if not isinstance(source, str):
        raise LLMHoodError(f"A regex is a string, not {type(source).__name__}.")
    from llmhood.generate.constrain.regex import compile_regex

    return compile_regex(source)


def parse_grammar(text: Any) -> Any:
    """A grammar's text, parsed and checked (llmhood.generate.constrain.grammar)."""
    if not isinstance(text, str):
        raise LLMHoodError(f"A grammar is a string, not {type(text).__name__}.")
    from llmhood.generate.constrain import grammar

    return grammar.parse_grammar(text)


def cache_key(kind: Kind, source: Any) -> str:
    """The same constraint however it was written out. Schemas keep their key order:
    properties are generated in schema order, so two orders are two constraints."""
    if kind == "json_schema":
        return json.dumps(load_schema(source), separators=(",", ":"), ensure_ascii=False)
    return source


class Constraints:
    """One tokenizer's compiled constraints, each compiled once and shared.

    vocab: the tokenizer's tokens as bytes, sized as the model's output (vocab.py).
    """

    def __init__(self, vocab: TokenVocab, fast: bool | None = None, size: int = CACHE_SIZE):
        self.vocab = vocab
        self.walk = TrieWalk.build(vocab)
        self.fast = fast
        self.size = size
        self._compiled: OrderedDict[tuple[Kind, str], Compiled] = OrderedDict()

    def compile(self, kind: Kind, source: Any) -> Compiled:
        """The compiled constraint of a JSON schema (dict, bool or JSON text), a regex or a
        grammar, from the cache when it was compiled before."""
        if kind not in KINDS:
            raise LLMHoodError(f"Unknown constraint {kind!r}: use one of {', '.join(KINDS)}.")
        key = (kind, cache_key(kind, source))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._build(kind, source)
            self._compiled[key] = compiled
            if len(self._compiled) > self.size:
                self._compiled.popitem(last=False)
        self._compiled.move_to_end(key)
        return compiled

    def _build(self, kind: Kind, source: Any) -> Compiled:
        if kind == "grammar":
            from llmhood.generate.constrain import grammar

            return grammar.compile_grammar(parse_grammar(source), self.vocab, self.walk)
        return CompiledDFA(compile_dfa(kind, source), self.vocab, self.walk, self.fast)

    def constraint(self, kind: Kind, source: Any) -> Constraint:
        """A fresh row's logits processor for the constraint."""
        return Constraint(self.compile(kind, source).matcher())
