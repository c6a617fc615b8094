"""Context-free grammars (llmhood.generate.constrain.grammar, pda) against xgrammar 0.2.9.

The reference is xgrammar's own GBNF parser and matcher, given the same grammar text and the
same token bytes (a RAW vocabulary: each token exactly its bytes). Sentences come from random
derivations of the grammar; xgrammar must accept each whole sentence, which checks the
derivation independently of our parser. Along every sentence, cut into tokens at random, the
tokens each side allows next must be the same set, and the end of sequence must be allowed
by xgrammar exactly when we say the text is complete. Every comparison is exact (sets of
tokens, booleans): there is nothing to round, so there is no tolerance.

The small vocabulary holds every single byte (so "some byte may follow" is "some token is
allowed") and tokens chosen to be awkward: several terminals in one token, pieces of a
multi-byte character, a character and a half.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from llmhood.errors import LLMHoodError
from llmhood.generate.constrain.grammar import (
    CharClass,
    Choice,
    Expr,
    Grammar,
    GrammarMatcher,
    GrammarSyntaxError,
    Literal,
    Repeat,
    RuleRef,
    Sequence,
    compile_grammar,
    parse_grammar,
)
from llmhood.generate.constrain.pda import BytePDA
from llmhood.generate.constrain.vocab import TokenVocab

xgrammar = pytest.importorskip("xgrammar")
from xgrammar.testing import _is_grammar_accept_string, bitmask_to_bool_mask  # noqa: E402

ARITHMETIC = r"""
# recursion through parentheses
root   ::= expr
expr   ::= term (("+" | "-") term)*
term   ::= factor (("*" | "/") factor)*
factor ::= number | "(" expr ")" | "-" factor
number ::= [0-9]+ ("." [0-9]+)?
"""

JSON = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null")
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt/] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,15})? ws
ws     ::= [ \t\n]{0,3}
"""

BOUNDED_LIST = r"""
root ::= "[" item ("," " "? item){2,4} "]"
item ::= [a-z]{1,3} | "x"{2} | "y"{3,} | ("z" "!"?){0,2} "."
"""

UNICODE = r"""
root ::= word (" " word)* [0-9]?
word ::= ([α-ω] | [\u4e00-\u9fff] | [^\x00-\x7f] | "\U0001F600")+
"""

CHINESE = r"""
root     ::= greeting ("，" greeting){0,3} "。"?
greeting ::= "你好" | "中文" | "世界" | "你" "们"?
"""

GRAMMARS = {
    "arithmetic": ARITHMETIC,
    "json": JSON,
    "bounded_list": BOUNDED_LIST,
    "unicode": UNICODE,
    "chinese": CHINESE,
}

STOP = b"<|im_end|>"
TRICKY = [
    # several terminals in one token
    '",', '":', '{"', '"}', '"]', "},", "],", ": [", ', "', "(1", "+(", "))", ")*", "1+", ".5",
    "true", "tr", "null,", "abc", "xx", "yyy", "z!", ", a", "[a", "\\n", '\\"', "\\u00",
    # whole characters, several characters, a character and a half
    "中", "文", "中文", "你好", "，", "你们", "α", "αβ", "😀",
]  # fmt: skip
TRICKY_BYTES = [
    "中".encode()[:1], "中".encode()[:2], "中".encode()[1:], "中".encode()[2:],
    "中文".encode()[:4], "😀".encode()[:2], "😀".encode()[2:], "文".encode() + "你".encode()[:1],
    b"a" + "α".encode()[:1], "α".encode()[1:] + b" ",
]  # fmt: skip


def small_vocab() -> list[bytes]:
    tokens = [STOP] + [bytes([b]) for b in range(256)]
    tokens += [t.encode() for t in TRICKY] + TRICKY_BYTES
    return list(dict.fromkeys(tokens))


class Reference:
    """xgrammar over the same bytes; its masks as (V,) bool tensors."""

    def __init__(self, tokens: list[bytes], stop: int = 0):
        self.info = xgrammar.TokenizerInfo(tokens, xgrammar.VocabType.RAW, stop_token_ids=[stop])
        self.compiler = xgrammar.GrammarCompiler(self.info, cache_enabled=False)
        self.size = len(tokens)
        self.stop = stop

    def matcher(self, text: str):
        return xgrammar.GrammarMatcher(self.compiler.compile_grammar(text))

    def mask(self, matcher) -> torch.Tensor:
        bitmask = xgrammar.allocate_token_bitmask(1, self.info.vocab_size)
        matcher.fill_next_token_bitmask(bitmask)
        return unpack(bitmask[0], self.size)


def unpack(bitmask: torch.Tensor, size: int) -> torch.Tensor:
    """(words,) int32 -> (size,) bool: token i is bit i % 32 of word i // 32, as
    xgrammar.testing.bitmask_to_bool_mask reads it (that one loops over the tokens in Python,
    seconds per mask for 49152 of them)."""
    data = bitmask.numpy().astype("<i4").view(np.uint8)
    return torch.from_numpy(np.unpackbits(data, bitorder="little")[:size].astype(bool))


def min_heights(grammar: Grammar) -> dict[str, float]:
    """The fewest nested rule expansions each rule needs to finish: where a derivation
    deeper than its budget goes, so that random derivations end."""
    heights = dict.fromkeys(grammar.rules, float("inf"))
    while True:
        new = {name: 1 + _height(body, heights) for name, body in grammar.rules.items()}
        if new == heights:
            return heights
        heights = new


def _height(expr: Expr, heights: dict[str, float]) -> float:
    if isinstance(expr, RuleRef):
        return heights[expr.name]
    if isinstance(expr, Sequence):
        return max((_height(item, heights) for item in expr.items), default=0)
    if isinstance(expr, Choice):
        return min(_height(option, heights) for option in expr.options)
    if isinstance(expr, Repeat):
        return 0 if expr.low == 0 else _height(expr.item, heights)
    return 0


def derive(grammar: Grammar, rng: random.Random, budget: int = 6) -> str:
    """A random sentence of the grammar: random choices, counts and characters, the
    shallowest option once `budget` nested rules are open."""
    heights = min_heights(grammar)
    out: list[str] = []

    def emit(expr: Expr, depth: int) -> None:
        if isinstance(expr, Literal):
            out.append(expr.data.decode())
        elif isinstance(expr, CharClass):
            low, high = rng.choice(expr.ranges)
            code = rng.randint(low, high if rng.random() < 0.3 else min(high, low + 300))
            out.append(chr(code if not 0xD800 <= code <= 0xDFFF else 0xE000))
        elif isinstance(expr, RuleRef):
            emit(grammar.rules[expr.name], depth + 1)
        elif isinstance(expr, Sequence):
            for item in expr.items:
                emit(item, depth)
        elif isinstance(expr, Choice):
            options = list(expr.options)
            if depth >= budget:
                options = [min(options, key=lambda o: _height(o, heights))]
            emit(rng.choice(options), depth)
        else:
            top = expr.low + 3 if expr.high is None else expr.high
            count = expr.low if depth >= budget else rng.randint(expr.low, top)
            for _ in range(count):
                emit(expr.item, depth)

    emit(grammar.rules[grammar.root], 0)
    return "".join(out)


def tokenize_randomly(data: bytes, tokens: list[bytes], rng: random.Random) -> list[int]:
    """`data` cut into tokens of the vocabulary, each chosen at random among those that
    start the rest (single bytes are all there, so one always does)."""
    ids, at = [], 0
    while at < len(data):
        fits = [i for i, t in enumerate(tokens) if t and i and data.startswith(t, at)]
        choice = rng.choice(fits)
        ids.append(choice)
        at += len(tokens[choice])
    return ids


def assert_same_masks_along(
    compiled, reference: Reference, text: str, ids: list[int], check_continue: bool = True
) -> None:
    """Step both matchers through `ids`, comparing before every token and at the end: the
    text tokens allowed, end of sequence allowed, and (with every single byte a token)
    whether anything may follow."""
    ours, theirs = compiled.matcher(), reference.matcher(text)
    specials = [i for i, t in enumerate(compiled.vocab.token_bytes) if not t]
    for step, token in enumerate([*ids, None]):
        expected = reference.mask(theirs)
        accepting, expected[specials] = bool(expected[reference.stop]), False
        got = ours.allowed()
        if not torch.equal(got, expected):
            differ = torch.nonzero(got != expected).flatten().tolist()
            tokens = [compiled.vocab.token_bytes[i] for i in differ[:8]]
            pytest.fail(f"{text!r} after {step} tokens: the masks differ at {tokens}")
        assert ours.accepting == accepting, step
        if check_continue:
            assert ours.can_continue == bool(expected.any()), step
        if token is not None:
            ours.advance(token)
            assert theirs.accept_token(token), step
    assert ours.accepting
    assert theirs.accept_token(reference.stop) and theirs.is_terminated()


def test_unpacking_reads_bitmasks_as_xgrammar_does():
    bitmask = torch.randint(-(2**31), 2**31 - 1, (1, 4), dtype=torch.int32)
    assert torch.equal(unpack(bitmask[0], 120), bitmask_to_bool_mask(bitmask, 120)[0])


@pytest.fixture(scope="module")
def tokens() -> list[bytes]:
    return small_vocab()


@pytest.fixture(scope="module")
def vocab(tokens) -> TokenVocab:
    return TokenVocab.from_bytes([b"" if i == 0 else t for i, t in enumerate(tokens)])


@pytest.fixture(scope="module")
def reference(tokens) -> Reference:
    return Reference(tokens)


@pytest.mark.parametrize("name", sorted(GRAMMARS))
def test_masks_equal_xgrammar_along_random_sentences(name, vocab, tokens, reference):
    text = GRAMMARS[name]
    grammar = parse_grammar(text)
    compiled = compile_grammar(grammar, vocab)
    rng = random.Random(name)
    for _ in range(12):
        sentence = derive(grammar, rng)
        assert _is_grammar_accept_string(text, sentence), sentence
        ids = tokenize_randomly(sentence.encode(), tokens, rng)
        assert_same_masks_along(compiled, reference, text, ids, check_continue=True)


@pytest.mark.parametrize("name", sorted(GRAMMARS))
def test_whole_strings_accepted_as_xgrammar_does(name):
    """Sentences, and near misses made from them (cut short, a character dropped, doubled
    or replaced), are sentences here exactly when xgrammar says so."""
    text = GRAMMARS[name]
    grammar = parse_grammar(text)
    pda = BytePDA(grammar)
    rng = random.Random(name)
    for _ in range(25):
        sentence = derive(grammar, rng)
        k = rng.randrange(len(sentence) + 1)
        other = rng.choice('a1(")[]{},.中α \\')
        for candidate in (
            sentence,
            sentence[:k],
            sentence[:k] + sentence[k + 1 :],
            sentence[:k] + sentence[k : k + 1] * 2 + sentence[k + 1 :],
            sentence[:k] + other + sentence[k + 1 :],
        ):
            expected = _is_grammar_accept_string(text, candidate)
            assert pda.matches(candidate.encode()) == expected, repr(candidate)


def test_dot_is_any_character_as_xgrammars_empty_negated_class(vocab, tokens, reference):
    """xgrammar 0.2.9 has no `.`; its `[^]` is any character, which is what `.` means."""
    ours = 'root ::= "<" .{0,3} ">" .?'
    theirs = ours.replace(".", "[^]")
    compiled = compile_grammar(parse_grammar(ours), vocab)
    rng = random.Random(0)
    for _ in range(10):
        sentence = derive(parse_grammar(theirs), rng)
        ids = tokenize_randomly(sentence.encode(), tokens, rng)
        assert_same_masks_along(compiled, reference, theirs, ids, check_continue=True)


def test_grammar_with_no_continuation_ends_and_refuses_more(vocab, reference):
    """After a whole sentence that nothing may extend: accepting, and no text token (as
    xgrammar, which allows only the stop token)."""
    matcher = GrammarMatcher(parse_grammar('root ::= "ab"'), vocab)
    matcher.advance(vocab.token_bytes.index(b"a"))
    assert not matcher.accepting and matcher.can_continue
    matcher.advance(vocab.token_bytes.index(b"b"))
    assert matcher.accepting and not matcher.can_continue
    assert not matcher.allowed().any()
    with pytest.raises(LLMHoodError, match="cannot follow"):
        matcher.advance(vocab.token_bytes.index(b"b"))


def test_special_tokens_never_allowed_nor_advanced(vocab):
    matcher = GrammarMatcher(parse_grammar("root ::= [^]*"), vocab)
    assert not matcher.allowed()[0]
    with pytest.raises(LLMHoodError, match="cannot follow"):
        matcher.advance(0)


def test_nullable_loops_and_nested_repeats_terminate():
    """Repeating something that may be empty, and empty alternatives nested in repeats,
    must not loop while expanding; the language is the reference's."""
    text = 'root ::= (a | "")* "x" ("y"?)* ()\na ::= "a"? "b"*'
    pda = BytePDA(parse_grammar(text))
    for candidate in ["x", "ax", "abbax", "xyy", "bbx", "", "xa", "yx"]:
        assert pda.matches(candidate.encode()) == _is_grammar_accept_string(text, candidate)


def test_syntax_error_says_line_and_column():
    with pytest.raises(
        GrammarSyntaxError, match=r"line 3, column 14: expected '\)' to close the group"
    ):
        parse_grammar('root ::= a\n# comment\na    ::= "x" ( "y"')
    with pytest.raises(GrammarSyntaxError, match=r"line 1, column 11: unknown escape \\q"):
        parse_grammar('root ::= "\\q"')
    with pytest.raises(GrammarSyntaxError, match="line 2, column 8: expected an element"):
        parse_grammar('root ::= "a"\n| "b" |')
    with pytest.raises(GrammarSyntaxError, match="line 1, column 13: a '\\)' without its '\\('"):
        parse_grammar('root ::= "a")')
    with pytest.raises(GrammarSyntaxError, match="line 1, column 1: expected a rule name"):
        parse_grammar('"a" ::= root')
    with pytest.raises(GrammarSyntaxError, match=r"line 1, column 13: .* lower bound 3 exceeds"):
        parse_grammar('root ::= "a"{3,2}')
    with pytest.raises(GrammarSyntaxError, match=r"line 1, column 10: the class .* not closed"):
        parse_grammar("root ::= [a-z")
    with pytest.raises(GrammarSyntaxError, match="line 2, column 1: the rule 'a' is defined twice"):
        parse_grammar('a ::= "x"\na ::= "y"\nroot ::= a')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('root = "a"', "line 1, column 6: expected '::=' after the rule name 'root'"),
        ('root ::= "abc', "line 1, column 10: the string opened here is not closed"),
        ('root ::= "\\x4"', r"line 1, column 11: \\x needs 2 hex digits"),
        ('root ::= "\\U00110000"', r"line 1, column 11: .* beyond the last code point"),
        ("root ::= [z-a]", "line 1, column 10: the range 'z'-'a' is backwards"),
        ('root ::= "a" @', "line 1, column 14: unexpected character '@'"),
        ('root ::= "a"{x}', "line 1, column 14: expected a number"),
        ('root ::= "a"{2', "line 1, column 15: expected '}'"),
    ],
)
def test_more_syntax_errors_say_where(text, message):
    with pytest.raises(GrammarSyntaxError, match=message):
        parse_grammar(text)


def test_surrogates_in_a_string_are_refused():
    with pytest.raises(LLMHoodError, match="surrogate code point"):
        parse_grammar('root ::= "\\ud83d\\ude00"')
    assert BytePDA(parse_grammar('root ::= "\\U0001F600"')).matches("😀".encode())


def test_undefined_rule_is_named_with_its_place():
    with pytest.raises(LLMHoodError, match="Line 2, column 15: the rule 'valeu' is used"):
        parse_grammar('root ::= value\nvalue ::= "[" valeu "]"')


def test_missing_root_says_what_to_add():
    with pytest.raises(LLMHoodError, match=r"no rule named 'root'.*Add `root ::= \.\.\.`"):
        parse_grammar('start ::= "x"')
    assert parse_grammar('start ::= "x"', root="start").root == "start"


def test_left_recursion_is_refused_with_its_cycle():
    with pytest.raises(LLMHoodError, match="left-recursive: expr -> expr"):
        parse_grammar('root ::= expr\nexpr ::= expr "+" "1" | "1"')
    with pytest.raises(LLMHoodError, match="left-recursive: a -> b -> a"):
        parse_grammar('root ::= a\na ::= "x"? b\nb ::= c? a "y" | "z"\nc ::= "c"?')
    right = parse_grammar('root ::= "(" root ")" | ""')
    assert BytePDA(right).matches(b"((()))")


def test_matcher_from_grammar_needs_vocab():
    with pytest.raises(LLMHoodError, match="needs the vocabulary"):
        GrammarMatcher(parse_grammar('root ::= "x"'))


@pytest.fixture(scope="module")
def real_vocab(smollm2_gguf):
    from llmhood.train.inspect import read_tokenizer

    tokenizer = read_tokenizer(smollm2_gguf)
    return tokenizer, TokenVocab.from_tokenizer(tokenizer)


@pytest.mark.real
@pytest.mark.parametrize("name", ["json", "arithmetic", "chinese"])
def test_masks_equal_xgrammar_on_the_real_vocabulary(name, real_vocab):
    """SmolLM2's 49152 tokens, along sentences cut as its tokenizer cuts them and at random.
    Special tokens have no bytes here; xgrammar gets the same empty entries and the stop
    token, and only text tokens are compared."""
    tokenizer, vocab = real_vocab
    text = GRAMMARS[name]
    grammar = parse_grammar(text)
    compiled = compile_grammar(grammar, vocab)
    reference = Reference(vocab.token_bytes, stop=tokenizer.eos_id)
    rng = random.Random(name)
    checked = 0
    for _ in range(6):
        sentence = derive(grammar, rng)
        cuts = sorted(rng.sample(range(1, len(sentence)), min(4, len(sentence) - 1)))
        pieces = [sentence[a:b] for a, b in zip([0, *cuts], [*cuts, len(sentence)], strict=True)]
        for ids in (tokenizer.encode(sentence), [i for p in pieces for i in tokenizer.encode(p)]):
            if tokenizer.decode_bytes(ids) != sentence.encode():
                continue  # SmolLM2 has no token holding bytes 0xF1, 0xF2 (U+40000..U+BFFFF)
            assert_same_masks_along(compiled, reference, text, ids, check_continue=False)
            checked += 1
    assert checked >= 6
