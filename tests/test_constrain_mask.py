"""Token masks of constrained decoding (llmhood/generate/constrain/mask.py, matcher.py).

A token is allowed in a DFA state when all of its bytes can be consumed from it. Three
checks, each against something that is not the walk under test:

* the C++ walk (mask.cpp) and the numpy walk against each other and against the definition,
  each token's bytes stepped through the DFA one by one, on random DFAs;
* the allowed next tokens, stop tokens included, against xgrammar 0.2.9 for the same
  language, on a small vocabulary of tricky tokens and on SmolLM2's 49,152 tokens, after
  many random valid prefixes: for hand-built DFAs, for our regexes and for our JSON schemas;
* the constraint's rules: stop tokens only in accepting states, only stop tokens when the
  text is complete and nothing can follow.

Masks are sets of token ids, so every comparison is exact.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from llmhood.errors import LLMHoodError
from llmhood.generate.constrain import mask as mask_module
from llmhood.generate.constrain.mask import StateMasks, TrieWalk
from llmhood.generate.constrain.matcher import CompiledDFA, Constraint, Constraints
from llmhood.generate.constrain.vocab import TokenVocab

xgrammar = pytest.importorskip("xgrammar")

needs_cpp = pytest.mark.skipif(
    mask_module.available() is not None, reason=f"no C++ mask: {mask_module.available()}"
)

EOS = 1
# Every single byte, so that any text can be spelled; multi-byte tokens that cross JSON
# punctuation and quotes; pieces of UTF-8 characters (é is C3 A9, 世 is E4 B8 96); and two
# special tokens (no bytes), of which id 1 is the end of sequence.
TRICKY = [b'",', b'":', b'":"', b'"}', b"{\"", b"}}", b"],", b"12", b"3.", b".5", b"-1",
          b"true", b"tr", b"ue", b"null", b"ab", b"abc", b"\\n", b"\\\"", b"\xc3", b"\xa9",
          b"\xc3\xa9", b"\xe4\xb8", b"\x96", b"\xe4\xb8\x96", b"  ", b"\n  ", b"a\xc3"]  # fmt: skip
SMALL_VOCAB = [b"", b""] + [bytes([i]) for i in range(256)] + TRICKY


@dataclass(frozen=True)
class HandDFA:
    """The DFA interface of llmhood.generate.constrain.dfa, for DFAs written out here."""

    transitions: np.ndarray
    accepting: np.ndarray
    start: int


def hand_dfa(edges: dict[int, list[tuple[bytes, int]]], accepting: set[int], start=1):
    """A DFA from {state: [(bytes each stepping to target, target)]}; state 0 dead."""
    states = max(max(edges), *(t for out in edges.values() for _, t in out)) + 1
    table = np.zeros((states, 256), dtype=np.int32)
    for state, out in edges.items():
        for chars, target in out:
            table[state, list(chars)] = target
    return HandDFA(table, np.isin(np.arange(states), list(accepting)), start)


DIGITS = b"0123456789"
# [0-9]+(\.[0-9]+)?
NUMBER = (
    r"[0-9]+(\.[0-9]+)?",
    hand_dfa(
        {1: [(DIGITS, 2)], 2: [(DIGITS, 2), (b".", 3)], 3: [(DIGITS, 4)], 4: [(DIGITS, 4)]}, {2, 4}
    ),
)
# "[a-c]*" with the quotes: accepting after the closing quote, where nothing may follow.
QUOTED = (r'"[a-c]*"', hand_dfa({1: [(b'"', 2)], 2: [(b"abc", 2), (b'"', 3)]}, {3}))


def random_dfa(rng: np.random.Generator, states: int, live: float) -> HandDFA:
    """A random DFA in which each transition survives with probability `live`."""
    table = rng.integers(1, states, size=(states, 256), dtype=np.int32)
    table[rng.random((states, 256)) > live] = 0
    table[0] = 0
    return HandDFA(table, rng.random(states) < 0.3, 1)


def by_definition(vocab: TokenVocab, table: np.ndarray, state: int) -> np.ndarray:
    """Each token's bytes through the DFA one by one: the mask as the issue defines it."""
    allowed = np.zeros(vocab.size, dtype=bool)
    for token, data in enumerate(vocab.token_bytes):
        s = state
        for byte in data:
            s = table[s, byte]
            if s == 0:
                break
        allowed[token] = bool(data) and s != 0
    return allowed


@pytest.fixture(scope="module")
def small_vocab() -> TokenVocab:
    return TokenVocab.from_bytes(SMALL_VOCAB)


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_gguf):
    from llmhood.tokenizer import BPETokenizer
    from llmhood.weights.gguf import read_gguf

    return BPETokenizer.from_gguf(read_gguf(smollm2_gguf).metadata)


@pytest.fixture(scope="module")
def smollm2_vocab(smollm2_tokenizer) -> TokenVocab:
    return TokenVocab.from_tokenizer(smollm2_tokenizer)


# --- the walks against the definition and each other ---------------------------------


@needs_cpp
@pytest.mark.parametrize("live", [0.05, 0.5, 0.98])
def test_cpp_and_numpy_walks_equal_the_definition(small_vocab, live):
    walk = TrieWalk.build(small_vocab)
    rng = np.random.default_rng(int(live * 100))
    for _ in range(5):
        dfa = random_dfa(rng, 12, live)
        fast, plain = (
            StateMasks(walk, dfa.transitions, True),
            StateMasks(walk, dfa.transitions, False),
        )
        for state in range(12):
            expected = by_definition(small_vocab, dfa.transitions, state)
            assert np.array_equal(fast(state).numpy(), expected)
            assert np.array_equal(plain(state).numpy(), expected)


@needs_cpp
@pytest.mark.real
def test_cpp_and_numpy_walks_agree_on_smollm2(smollm2_vocab):
    walk = TrieWalk.build(smollm2_vocab)
    rng = np.random.default_rng(0)
    for live in (0.02, 0.6, 0.99):
        dfa = random_dfa(rng, 6, live)
        fast, plain = (
            StateMasks(walk, dfa.transitions, True),
            StateMasks(walk, dfa.transitions, False),
        )
        for state in range(6):
            assert torch.equal(fast(state), plain(state))
    state = 2  # and one state against the definition, which takes a second in Python
    assert np.array_equal(
        plain(state).numpy(), by_definition(smollm2_vocab, dfa.transitions, state)
    )


def test_masks_are_computed_once_per_state(small_vocab):
    masks = StateMasks(TrieWalk.build(small_vocab), NUMBER[1].transitions)
    assert masks(2) is masks(2) and len(masks) == 1


def test_small_dfas_get_every_mask_at_compile_time(small_vocab):
    """At most PRECOMPUTE_STATES states: every live state's mask is there before decoding,
    equal to the one computed on first visit; above it, none is."""
    walk = TrieWalk.build(small_vocab)
    dfa = NUMBER[1]
    eager = CompiledDFA(dfa, small_vocab, walk)
    live = {s for s in range(1, len(dfa.transitions)) if dfa.transitions[s].any()}
    assert len(eager.masks) == len(live) >= 2
    lazy = CompiledDFA(dfa, small_vocab, walk, precompute=len(dfa.transitions) - 1)
    assert len(lazy.masks) == 0
    for state in live:
        assert torch.equal(lazy.masks(state), eager.masks(state))
    assert len(lazy.masks) == len(live)


def test_switch_to_numpy_by_environment(monkeypatch, small_vocab):
    monkeypatch.setenv(mask_module.FAST_ENV, "0")
    assert StateMasks(TrieWalk.build(small_vocab), NUMBER[1].transitions).fast is False


# --- against xgrammar -----------------------------------------------------------------


def xgrammar_info(vocab: TokenVocab, stop_ids: list[int]):
    """xgrammar reading the same vocabulary: raw bytes per id, b"" for special tokens (which
    xgrammar then never allows), the same stop tokens."""
    return xgrammar.TokenizerInfo(
        vocab.token_bytes, vocab_type=xgrammar.VocabType.RAW, stop_token_ids=stop_ids
    )


def xgrammar_allowed(matcher, vocab_size: int) -> np.ndarray:
    """Token i is bit i % 32 of the bitmask's int32 word i // 32 (xgrammar.testing's
    bitmask_to_bool_mask reads it so too, but one bit at a time in Python)."""
    bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)
    matcher.fill_next_token_bitmask(bitmask)
    words = bitmask[0].numpy().astype("<i4").view(np.uint8)
    return np.unpackbits(words, bitorder="little")[:vocab_size].astype(bool)


def ours_allowed(constraint: Constraint, vocab_size: int, stop_ids: list[int]) -> np.ndarray:
    logits = constraint.process(torch.zeros(vocab_size), torch.tensor(stop_ids))
    return torch.isfinite(logits).numpy()


def random_prefixes(rng: random.Random, ids: list[int], count: int) -> list[list[int]]:
    """Random token prefixes of a document's tokens, the empty and the full one included."""
    cuts = {0, len(ids)} | {rng.randint(0, len(ids)) for _ in range(count)}
    return [ids[:cut] for cut in sorted(cuts)]


def compare_with_xgrammar(compiled_ours, compiled_xgrammar, vocab_size, documents, stop_ids,
                          rng, prefixes=6):  # fmt: skip
    """After every random prefix of every document, the allowed tokens are xgrammar's."""
    checked = 0
    for ids in documents:
        for prefix in random_prefixes(rng, ids, prefixes):
            constraint = Constraint(compiled_ours.matcher())
            reference = xgrammar.GrammarMatcher(compiled_xgrammar)
            for token in prefix:
                constraint.advance(token)
                assert reference.accept_token(token), f"xgrammar refuses {prefix}"
            expected = xgrammar_allowed(reference, vocab_size)
            got = ours_allowed(constraint, vocab_size, stop_ids)
            assert np.array_equal(got, expected), (
                f"after {prefix}: only ours {np.flatnonzero(got & ~expected)[:10]}, "
                f"only xgrammar's {np.flatnonzero(expected & ~got)[:10]}"
            )
            checked += 1
    return checked


def spell_greedy(vocab: TokenVocab, text: bytes) -> list[int]:
    """Token ids spelling `text`, longest token first: prefixes then end inside tokens that
    cross punctuation and inside UTF-8 characters."""
    by_bytes = {data: i for i, data in enumerate(vocab.token_bytes) if data}
    longest = max(map(len, by_bytes))
    ids, at = [], 0
    while at < len(text):
        for n in range(min(longest, len(text) - at), 0, -1):
            if text[at : at + n] in by_bytes:
                ids.append(by_bytes[text[at : at + n]])
                at += n
                break
    return ids


HAND_DOCUMENTS = {
    NUMBER[0]: [b"7", b"123.45", b"12.5", b"3.14159"],
    QUOTED[0]: [b'""', b'"abcabc"', b'"ccc"'],
}


@pytest.mark.parametrize("case", [NUMBER, QUOTED], ids=["number", "quoted"])
def test_hand_built_dfas_allow_what_xgrammar_allows(small_vocab, case):
    pattern, dfa = case
    compiler = xgrammar.GrammarCompiler(xgrammar_info(small_vocab, [EOS]))
    documents = [spell_greedy(small_vocab, d) for d in HAND_DOCUMENTS[pattern]]
    documents += [[b + 2 for b in d] for d in HAND_DOCUMENTS[pattern]]  # a byte per token
    ours = CompiledDFA(dfa, small_vocab, TrieWalk.build(small_vocab))
    checked = compare_with_xgrammar(ours, compiler.compile_regex(pattern), small_vocab.size,
                                    documents, [EOS], random.Random(0))  # fmt: skip
    assert checked >= 10


# Regexes through our compiler (llmhood.generate.constrain.regex), against xgrammar's.
REGEXES = {
    r"[0-9]{3}-[0-9]{4}": ["555-1234", "000-0000"],
    r"(yes|no|maybe)": ["yes", "no", "maybe"],
    r"[a-z]+@[a-z]+\.(com|org)": ["bob@example.com", "a@b.org"],
    r"\"[^\"\\]*\"": ['"hello, world"', '"é 世界"', '""'],
    r"-?(0|[1-9][0-9]*)(\.[0-9]+)?": ["-12.5", "0", "3.14159"],
    r"(ab|c)*d": ["ababcd", "d", "cccd"],
    r"[\u00e0-\u00ff]{1,3}x": ["éx", "àéüx"],
    r"\{\"a\": \[(1|2)(, (1|2))*\]\}": ['{"a": [1, 2, 1]}', '{"a": [2]}'],
}


def regex_dfa(pattern: str):
    regex = pytest.importorskip("llmhood.generate.constrain.regex")
    return regex.compile_regex(pattern)


def check_regexes(vocab: TokenVocab, encode, stop_ids: list[int], prefixes: int) -> int:
    compiler = xgrammar.GrammarCompiler(xgrammar_info(vocab, stop_ids))
    walk, rng, checked = TrieWalk.build(vocab), random.Random(1), 0
    for pattern, texts in REGEXES.items():
        ours = CompiledDFA(regex_dfa(pattern), vocab, walk)
        documents = [encode(t) for t in texts]
        checked += compare_with_xgrammar(ours, compiler.compile_regex(pattern), vocab.size,
                                         documents, stop_ids, rng, prefixes)  # fmt: skip
    return checked


def test_regex_masks_equal_xgrammar_on_tricky_tokens(small_vocab):
    assert check_regexes(small_vocab, lambda t: spell_greedy(small_vocab, t.encode()), [EOS], 6)


@pytest.mark.real
def test_regex_masks_equal_xgrammar_on_smollm2(smollm2_tokenizer, smollm2_vocab):
    stops = [smollm2_tokenizer.eos_id]
    assert check_regexes(smollm2_vocab, smollm2_tokenizer.encode, stops, 4)


# JSON schemas through our compiler, against xgrammar's compile_json_schema configured to
# the same language (see XGRAMMAR_JSON below).
SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
     "required": ["name", "age"]},
    {"type": "object", "properties": {"city": {"type": "string", "description": "The city"},
     "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]},
    {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "number"},
     "minItems": 1, "maxItems": 3}, "ok": {"type": "boolean"}}, "required": ["xs", "ok"]},
    {"type": "object", "properties": {"p": {"type": "object", "properties": {
     "x": {"type": "integer", "minimum": -5, "maximum": 20}}, "required": ["x"]},
     "tag": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
     "required": ["p", "tag"]},
]  # fmt: skip
INSTANCES = [
    [{"name": "Ada", "age": 36}, {"name": 'é"\\世', "age": -7}],
    [{"city": "Paris"}, {"city": "Rome", "unit": "celsius"}],
    [{"xs": [1.5, -2, 3e5], "ok": True}, {"xs": [0], "ok": False}],
    [{"p": {"x": -5}, "tag": "ab"}, {"p": {"x": 20}, "tag": None}],
]


def xgrammar_json_options():
    """The xgrammar call that gives our default JSON language (json_schema.py documents it)."""
    json_schema = pytest.importorskip("llmhood.generate.constrain.json_schema")
    return json_schema, json_schema.XGRAMMAR_EQUIVALENT


def check_schemas(vocab: TokenVocab, encode, stop_ids: list[int], prefixes: int) -> int:
    json_schema, options = xgrammar_json_options()
    compiler = xgrammar.GrammarCompiler(xgrammar_info(vocab, stop_ids))
    walk, rng, checked = TrieWalk.build(vocab), random.Random(2), 0
    separators = options.get("separators") or (",", ":")
    for schema, instances in zip(SCHEMAS, INSTANCES, strict=True):
        ours = CompiledDFA(json_schema.compile_json_schema(schema), vocab, walk)
        reference = compiler.compile_json_schema(json.dumps(schema), **options)
        texts = [json.dumps(i, separators=separators, ensure_ascii=False) for i in instances]
        checked += compare_with_xgrammar(ours, reference, vocab.size, [encode(t) for t in texts],
                                         stop_ids, rng, prefixes)  # fmt: skip
    return checked


def test_json_schema_masks_equal_xgrammar_on_tricky_tokens(small_vocab):
    assert check_schemas(small_vocab, lambda t: spell_greedy(small_vocab, t.encode()), [EOS], 8)


@pytest.mark.real
def test_json_schema_masks_equal_xgrammar_on_smollm2(smollm2_tokenizer, smollm2_vocab):
    stops = [smollm2_tokenizer.eos_id]
    assert check_schemas(smollm2_vocab, smollm2_tokenizer.encode, stops, 5)


# --- the constraint's rules -----------------------------------------------------------


def test_stop_tokens_only_when_accepting_and_alone_when_nothing_can_follow(small_vocab):
    constraint = Constraint(
        CompiledDFA(QUOTED[1], small_vocab, TrieWalk.build(small_vocab)).matcher()
    )
    stops = [EOS]
    assert not ours_allowed(constraint, small_vocab.size, stops)[EOS]  # nothing written yet
    constraint.advance(ord('"') + 2)  # the byte tokens follow the two special tokens
    assert not ours_allowed(constraint, small_vocab.size, stops)[EOS]  # inside the string
    assert not constraint.complete
    constraint.advance(ord('"') + 2)
    allowed = ours_allowed(constraint, small_vocab.size, stops)
    assert constraint.complete and np.flatnonzero(allowed).tolist() == [EOS]


def test_number_may_stop_or_go_on(small_vocab):
    constraint = Constraint(
        CompiledDFA(NUMBER[1], small_vocab, TrieWalk.build(small_vocab)).matcher()
    )
    constraint.advance(SMALL_VOCAB.index(b"12"))
    allowed = ours_allowed(constraint, small_vocab.size, [EOS])
    assert allowed[EOS] and allowed[SMALL_VOCAB.index(b"3.")] and allowed[ord("5") + 2]
    assert allowed[SMALL_VOCAB.index(b".5")] and not allowed[SMALL_VOCAB.index(b"-1")]


def test_a_refused_token_is_an_error(small_vocab):
    matcher = CompiledDFA(NUMBER[1], small_vocab, TrieWalk.build(small_vocab)).matcher()
    with pytest.raises(LLMHoodError, match="cannot follow here"):
        matcher.advance(ord("x") + 2)
    with pytest.raises(LLMHoodError, match="cannot follow here"):
        matcher.advance(EOS)  # a special token is never text


def test_a_dead_end_says_so(small_vocab):
    # The text must start with the byte 0xFF, which no token of this vocabulary holds.
    vocab = TokenVocab.from_bytes([b"", b"", b"a"])
    dfa = hand_dfa({1: [(b"\xff", 2)]}, {2})
    constraint = Constraint(CompiledDFA(dfa, vocab, TrieWalk.build(vocab)).matcher())
    with pytest.raises(LLMHoodError, match="cannot be completed"):
        constraint.process(torch.zeros(3), torch.tensor([EOS]))


def test_constraints_are_compiled_once_per_schema_and_keep_key_order(small_vocab):
    json_schema = pytest.importorskip("llmhood.generate.constrain.json_schema")
    assert json_schema is not None
    cache = Constraints(small_vocab)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "null"}}}
    first = cache.compile("json_schema", schema)
    assert cache.compile("json_schema", json.dumps(schema, indent=2)) is first
    reordered = {"type": "object", "properties": {"b": {"type": "null"}, "a": {"type": "integer"}}}
    assert cache.compile("json_schema", reordered) is not first


def test_bad_schema_text_and_unknown_kind_are_refused(small_vocab):
    cache = Constraints(small_vocab)
    with pytest.raises(LLMHoodError, match="not valid JSON"):
        cache.compile("json_schema", "{'type': 'object'}")
    with pytest.raises(LLMHoodError, match="not list"):
        cache.compile("json_schema", "[1, 2]")
    with pytest.raises(LLMHoodError, match="Unknown constraint"):
        cache.compile("xml", "<a/>")
