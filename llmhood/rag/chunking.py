"""Recursive chunking: a document's text into overlapping spans that each fit the embedder.

    sections (markdown headings) -> paragraphs (blank lines) -> sentences -> lines
      -> words (whitespace) -> break points inside a word -> grapheme clusters
    a piece that fits is a unit and is not split further; units merge greedily into chunks

A chunk is a span, `text[start:end]`: nothing is rewritten or dropped, so a hit can be shown
and cited where it stands in its source. Guarantees of `chunk_text`, for a `count_tokens`
that counts a text's tokens:

- Every chunk is non-empty and stripped (it neither starts nor ends with whitespace), and
  the chunks together cover every non-whitespace character. Chunks are in order: starts
  and ends both strictly increase.
- `count_tokens(chunk) <= max_tokens`, checked by counting each final chunk. The one
  exception is a single grapheme cluster (a character with its combining marks, an emoji
  sequence) whose tokens alone exceed max_tokens; no real tokenizer has one.
- A chunk never contains a heading line except at its start (a section is never merged
  with another), apart from a heading with no text of its own, which stays with the
  section under it. A section that fits into max_tokens is exactly one chunk.
- No chunk boundary falls inside a grapheme cluster (so never between a character and its
  combining marks, nor inside `\\r\\n`), inside a word (a run of letters and digits of an
  alphabetic script: code points below U+2E80, where the CJK blocks begin; CJK characters
  are words of their own), before closing punctuation (a closing bracket or quote, `.,;:!?`
  and their CJK forms, `。！？；…`) or after an opening bracket or quote. The only
  exception is a run without such a break point whose tokens alone exceed the budget,
  which is cut between clusters.
- Overlap: the first chunk of a section has none. Each later chunk of the section starts
  with a suffix of the previous chunk: the longest one that begins at a sentence start and
  has at most overlap_tokens tokens; if even the previous chunk's last sentence is larger,
  the longest one that begins at a break point inside that sentence. Longest is found by
  exponential and binary search, so it is the longest when counts grow with the length of
  a suffix. There is no overlap when overlap_tokens is 0, when no suffix fits, or when a
  non-additive counter makes the chunk too large with it. So with overlap 0, chunks are
  disjoint, and consecutive chunks of a section share exactly `text[next.start:prev.end]`.

Design choices. Descending only where a piece is too big keeps structure wherever the budget
allows, and makes the counter see each character once per level, not once per prefix. Units
are cut to fit max_tokens - overlap_tokens, so any unit fits after any overlap. A chunk's
count is estimated as the sum of its units' counts, which is exact for WordPiece (it splits
at whitespace, punctuation and CJK ideographs, which is where units meet), and then
verified; a chunk that turns out too big gives up its last units until it fits. Sentence
ends are found with regular expressions (in C), so 1 MB of text chunks in well under a
second with a fast counter. Each level's splitting rule is written for the failures seen in
other splitters: a CJK full stop stays at the end of its sentence (never the start of the
next), spaces are never deleted, and words are never cut.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import regex

from llmhood.errors import LLMHoodError

MIN_TOKENS = 8


@dataclass(frozen=True)
class Span:
    """A chunk of a text: `text[start:end]`."""

    start: int
    end: int


@dataclass(frozen=True)
class ChunkConfig:
    max_tokens: int = 200  # per chunk, measured with the embedder's own tokenizer
    overlap_tokens: int = 32  # how much of the previous chunk's end a chunk repeats

    def check(self, ceiling: int | None = None) -> None:
        """Raise LLMHoodError unless MIN_TOKENS <= max_tokens <= ceiling (the embedder's
        max_text_tokens) and 0 <= overlap_tokens < max_tokens / 2."""
        if self.max_tokens < MIN_TOKENS or (ceiling is not None and self.max_tokens > ceiling):
            allowed = (
                f"{MIN_TOKENS} to {ceiling}, the most the embedder reads"
                if ceiling is not None
                else f"at least {MIN_TOKENS}"
            )
            raise LLMHoodError(
                f"A chunk size of {self.max_tokens} tokens is out of range; use {allowed}."
            )
        if not 0 <= self.overlap_tokens < self.max_tokens / 2:
            raise LLMHoodError(
                f"An overlap of {self.overlap_tokens} tokens is out of range for chunks of "
                f"{self.max_tokens}; use 0 to {(self.max_tokens - 1) // 2} (less than half)."
            )


# A sentence ends at a Latin terminator followed by whitespace, a CJK terminator (no space
# needed), or a blank line; closing brackets and quotes after the terminator stay with it.
_CLOSERS = "\"')\\]}»’”」』）》〉】〕〗〙〛"
_SENTENCE_END = re.compile(
    rf"(?P<latin>[.!?]+)[{_CLOSERS}]*(?=\s)|[。！？；…．｡]+[{_CLOSERS}]*|\n[^\S\n]*\n"
)
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "cf", "al", "fig", "eq"}
    | {"vol", "approx", "inc", "ltd", "dept"}
)
_INITIALS = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")  # e.g, i.e, U.S, J (as in "J. Smith")
_LAST_WORD = re.compile(r"[^\s(\[{\"'“‘«]+$")
_WHITESPACE = re.compile(r"\s*")
_NON_WHITESPACE = re.compile(r"\S+")
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")
_LINE_BREAK = re.compile(r"\n")
_HEADING_OR_FENCE = re.compile(r"^(?:#{1,6}[ \t]| {0,3}(`{3,}|~{3,}))", re.MULTILINE)
_CLUSTER = regex.compile(r"\X")  # an extended grapheme cluster (Unicode UAX #29)
_NO_BREAK_BEFORE = frozenset(",.;:!?、。，．！？；：｡…‥ー々ゝゞヽヾ")


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[Span]:
    """The sentences of `text[start:end]`, in order. A sentence starts at a non-whitespace
    character and runs up to the next one's start, so it keeps its terminator, closing
    quotes and brackets, and trailing whitespace; the spans tile the region from its first
    non-whitespace character (none for a blank region).

    A sentence ends after `.`, `!` or `?` followed by whitespace (not before a lowercase
    letter, and a full stop not after an abbreviation such as "e.g.", "Dr." or "etc." or an
    initial; "3.14" has no whitespace after its point), after
    `。！？；…` or the fullwidth `．！？；` with no whitespace needed, and at a blank line.
    """
    end = len(text) if end is None else end
    begin = _WHITESPACE.match(text, start, end).end()
    spans = []
    for match in _SENTENCE_END.finditer(text, begin, end):
        stop = _WHITESPACE.match(text, match.end(), end).end()
        latin = match.group("latin")
        if latin and _continues(text, begin, match.start(), stop, latin == "."):
            continue
        if begin < stop < end:
            spans.append(Span(begin, stop))
            begin = stop
    if begin < end:
        spans.append(Span(begin, end))
    return spans


def _continues(text: str, begin: int, mark: int, after: int, full_stop: bool) -> bool:
    """Whether the sentence goes on after the Latin terminator at `mark`: the next word is
    lowercase ('"Why?" she asked'), or a full stop ends an abbreviation or an initial."""
    if after < len(text) and text[after].islower():
        return True
    if not full_stop:
        return False
    word = _LAST_WORD.search(text, max(begin, mark - 40), mark)
    if word is None:
        return False
    word = word.group()
    return word.lower() in _ABBREVIATIONS or _INITIALS.fullmatch(word) is not None


def chunk_text(text: str, count_tokens: Callable[[str], int], config: ChunkConfig) -> list[Span]:
    """The chunks of `text`, with the guarantees in this module's docstring; none for a blank
    text. `count_tokens` is the embedder's tokenizer."""
    config.check()
    return _Chunker(text, count_tokens, config).chunks()


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int


class _Chunker:
    def __init__(self, text: str, count: Callable[[str], int], config: ChunkConfig) -> None:
        self.text, self.count = text, count
        self.max, self.overlap = config.max_tokens, config.overlap_tokens
        self.budget = config.max_tokens - config.overlap_tokens  # of a unit
        self.levels = (_paragraphs, _sentences, _lines, _words)

    def chunks(self) -> list[Span]:
        spans = []
        for start, end in _sections(self.text):
            spans += self._merge(list(self._units(start, end, 0)))
        return spans

    def _units(
        self, start: int, end: int, level: int, tokens: int | None = None
    ) -> Iterator[_Unit]:
        """The units of the stripped region [start, end): itself if it fits, else those of
        its parts one level down."""
        if tokens is None:
            tokens = self.count(self.text[start:end])
        if tokens <= self.budget:
            yield _Unit(start, end, tokens)
        elif level == len(self.levels):
            yield from self._pack(start, end, _break_points(self.text, start, end), fallback=True)
        else:
            parts = self.levels[level](self.text, start, end)
            if len(parts) == 1:  # nothing to split at this level: the same region, one down
                yield from self._units(start, end, level + 1, tokens)
            else:
                for part_start, part_end in parts:
                    yield from self._units(part_start, part_end, level + 1)

    def _pack(self, start: int, end: int, cuts: list[int], fallback: bool) -> Iterator[_Unit]:
        """Cut [start, end) at `cuts` (positions inside it) into the longest pieces that fit;
        a stretch between two cuts that does not fit is cut between clusters (`fallback`),
        and a single cluster that does not fit is a unit of its own."""
        cuts = [*cuts, end]
        i = 0
        while i < len(cuts):
            found = self._longest_prefix(start, cuts, i)
            if found is not None:
                i, tokens = found
                yield _Unit(start, _rstrip(self.text, start, cuts[i]), tokens)
            elif fallback:
                clusters = _cluster_starts(self.text, start, cuts[i])
                yield from self._pack(start, cuts[i], clusters, fallback=False)
            else:
                stop = _rstrip(self.text, start, cuts[i])
                yield _Unit(start, stop, self.count(self.text[start:stop]))
            start = cuts[i]
            i += 1

    def _longest_prefix(self, start: int, cuts: list[int], i: int) -> tuple[int, int] | None:
        """The last j >= i with text[start:cuts[j]] within the unit budget, and its count."""

        def fits(j: int) -> int | None:
            tokens = self.count(self.text[start : _rstrip(self.text, start, cuts[j])])
            return tokens if tokens <= self.budget else None

        return _furthest(fits, i, len(cuts))

    def _merge(self, units: list[_Unit]) -> list[Span]:
        """Greedy: each chunk takes the previous chunk's overlap, then units while they fit."""
        spans: list[Span] = []
        i = 0
        while i < len(units):
            first = units[i]
            lead = self._overlap(spans[-1]) if spans and self.overlap else None
            start, total = lead if lead is not None else (first.start, 0)
            j = i
            while j < len(units) and total + units[j].tokens <= self.max:
                total += units[j].tokens
                j += 1
            while self.count(self.text[start : units[j - 1].end]) > self.max:
                if j > i + 1:
                    j -= 1
                elif start != first.start:
                    start = first.start
                else:
                    break  # a single cluster larger than the budget
            spans.append(Span(start, units[j - 1].end))
            i = j
        return spans

    def _overlap(self, previous: Span) -> tuple[int, int] | None:
        """Where the next chunk's overlap starts in `previous`, and its count; or None."""
        sentences = split_sentences(self.text, previous.start, previous.end)
        starts = [span.start for span in sentences[1:]]
        found = self._longest_suffix(starts, previous.end)
        if found is None:
            last = sentences[-1].start
            found = self._longest_suffix(_break_points(self.text, last, previous.end), previous.end)
        return found

    def _longest_suffix(self, starts: list[int], end: int) -> tuple[int, int] | None:
        """The first of `starts` whose suffix text[start:end] has at most overlap tokens."""

        def fits(k: int) -> int | None:
            tokens = self.count(self.text[starts[k] : end])
            return tokens if tokens <= self.overlap else None

        found = _furthest(fits, len(starts) - 1, -1) if starts else None
        return (starts[found[0]], found[1]) if found is not None else None


def _furthest(fits: Callable[[int], int | None], first: int, limit: int) -> tuple[int, int] | None:
    """The index furthest from `first` towards `limit` (exclusive) at which `fits` still gives
    a count, with that count; None if `first` does not fit. Exponential search, then
    bisection: a few counts instead of one per index, valid because a longer text never has
    fewer tokens, so once a piece stops fitting every longer one does too."""
    tokens = fits(first)
    if tokens is None:
        return None
    way = 1 if limit > first else -1
    good, bad, step = first, limit, 1
    while (good + way * step - limit) * way < 0:
        probe = fits(good + way * step)
        if probe is None:
            bad = good + way * step
            break
        good, tokens, step = good + way * step, probe, step * 2
    while abs(bad - good) > 1:
        middle = (good + bad) // 2
        probe = fits(middle)
        if probe is None:
            bad = middle
        else:
            good, tokens = middle, probe
    return good, tokens


def _sections(text: str) -> list[tuple[int, int]]:
    """Stripped regions that each start at a heading (or hold the text before the first).
    A heading line starts with 1-6 '#' and a space or tab, outside fenced code blocks; a
    section with nothing but its heading joins the section after it."""
    headings = set(_heading_starts(text))
    bounds = sorted({0, *headings, len(text)})
    sections: list[list] = []  # [start, end, has only its heading line]
    for start, end in itertools.pairwise(bounds):
        region = _strip(text, start, end)
        if region is None:
            continue
        newline = text.find("\n", start, end)
        bare = start in headings and (newline < 0 or not text[newline:end].strip())
        if sections and sections[-1][2]:
            sections[-1][1:] = [region[1], bare]
        else:
            sections.append([*region, bare])
    return [(start, end) for start, end, _ in sections]


def _heading_starts(text: str) -> list[int]:
    starts, fence = [], None
    for match in _HEADING_OR_FENCE.finditer(text):
        mark = match.group(1)
        if mark is None:
            if fence is None:
                starts.append(match.start())
        elif fence is None:
            fence = mark[0]
        elif mark[0] == fence:
            fence = None
    return starts


def _strip(text: str, start: int, end: int) -> tuple[int, int] | None:
    start = _WHITESPACE.match(text, start, end).end()
    return (start, _rstrip(text, start, end)) if start < end else None


def _rstrip(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1].isspace():
        end -= 1
    return end


def _split_at(pattern: re.Pattern, text: str, start: int, end: int) -> list[tuple[int, int]]:
    parts, begin = [], start
    for match in pattern.finditer(text, start, end):
        parts.append(_strip(text, begin, match.start()))
        begin = match.end()
    parts.append(_strip(text, begin, end))
    return [part for part in parts if part is not None]


def _paragraphs(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return _split_at(_PARAGRAPH_BREAK, text, start, end)


def _lines(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return _split_at(_LINE_BREAK, text, start, end)


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return [(s.start, _rstrip(text, s.start, s.end)) for s in split_sentences(text, start, end)]


def _words(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Runs between whitespace; a run that may not start a chunk (a stray "。", a combining
    mark) stays with the run before it."""
    words: list[tuple[int, int]] = []
    for match in _NON_WHITESPACE.finditer(text, start, end):
        if words and not _may_follow(" ", text[match.start()]):
            words[-1] = (words[-1][0], match.end())
        else:
            words.append(match.span())
    return words


def _break_points(text: str, start: int, end: int) -> list[int]:
    """Positions inside (start, end) where a chunk may start: see the module docstring."""
    points, before = [], None
    for match in _CLUSTER.finditer(text, start, end):
        cluster = match.group()
        if before is not None and _may_follow(before, cluster[0]):
            points.append(match.start())
        before = cluster[0]
    return points


def _cluster_starts(text: str, start: int, end: int) -> list[int]:
    """Cluster starts inside (start, end), except at whitespace (a chunk starts stripped)."""
    return [
        match.start()
        for match in _CLUSTER.finditer(text, start, end)
        if match.start() > start and not match.group().isspace()
    ]


def _may_follow(before: str, after: str) -> bool:
    """Whether a chunk may start at a cluster `after` that follows one whose first character
    (its base) is `before`."""
    if after.isspace() or after in _NO_BREAK_BEFORE or unicodedata.category(after)[0] == "M":
        return False
    if unicodedata.category(after) in ("Pe", "Pf") or unicodedata.category(before) in ("Ps", "Pi"):
        return False
    return not (_is_word_char(before) and _is_word_char(after))


def _is_word_char(c: str) -> bool:
    return c.isalnum() and ord(c) < 0x2E80
