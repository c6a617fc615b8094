"""BM25: the keyword ranking of a knowledge base, as an inverted index written here.

The score of document d for query q is Lucene's BM25,

    score(q, d) = Σ_{t in q} idf(t) · tf(t, d) / (tf(t, d) + k1 · (1 − b + b · |d| / avgdl))
    idf(t) = ln(1 + (N − df(t) + 0.5) / (df(t) + 0.5))

with N documents, df(t) of them containing t, |d| the number of terms of d and avgdl the
mean of |d|. Two choices follow Lucene rather than the textbook Okapi form:

- The idf has the `1 +` inside the log, so it is positive for every term. Okapi's
  ln((N − df + 0.5) / (df + 0.5)) is zero for a term in half the documents and negative
  beyond; rank_bm25's BM25Okapi then scores such a term 0, or replaces a negative idf by
  a floor of ε·mean(idf), so in a small knowledge base (where the topic word of the
  question is in half the chunks) the words that matter most are ignored.
- The constant factor (k1 + 1) of the textbook numerator is left out: it scales every
  score alike and changes no ranking, and without it a term adds at most idf(t).

A query term repeated in the query counts once per occurrence, as in Lucene (a query
that says a word twice asks for it more). Nothing in a posting's weight depends on the
query, so the whole fraction above is computed at build time and stored per posting in
CSR arrays (term → doc ids, weights); a query gathers the posting slices of its terms and
adds them into a dense float32 score vector with `np.bincount`, then selects the top k
with `np.argpartition`. Ties are broken by the lower row id, so a ranking never depends on
the order numpy happens to return.

On disk an index is three .npy arrays, memory-mapped on load (a query touches only its
terms' postings), and a small JSON file with the vocabulary, the parameters and the
analyzer's name, which `load` checks so an index is never queried through an analyzer
that produced different terms.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmhood.errors import LLMHoodError
from llmhood.rag.analyzer import Analyzer

_ARRAYS = ("indptr", "doc_ids", "weights")
_META = "bm25.json"


@dataclass(frozen=True, eq=False)
class BM25Index:
    """An immutable BM25 inverted index over `n_docs` texts (row ids 0 … n_docs − 1)."""

    analyzer: Analyzer
    n_docs: int
    k1: float
    b: float
    vocab: dict[str, int]  # term -> term id
    indptr: np.ndarray  # int64 [n_terms + 1]: postings of term t are [indptr[t], indptr[t + 1])
    doc_ids: np.ndarray  # int32 [n_postings], ascending within a term
    weights: np.ndarray  # float32 [n_postings]: the BM25 score of that term in that document

    @classmethod
    def build(
        cls, texts: Sequence[str], analyzer: Analyzer, k1: float = 1.5, b: float = 0.75
    ) -> BM25Index:
        """Index `texts`; row id i is texts[i]."""
        if k1 < 0 or not 0 <= b <= 1:
            raise LLMHoodError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}.")
        vocab: dict[str, int] = {}
        term_ids: list[int] = []
        doc_ids: list[int] = []
        tfs: list[int] = []
        lengths = np.zeros(len(texts), dtype=np.float64)
        for doc, text in enumerate(texts):
            terms = analyzer.terms(text)
            lengths[doc] = len(terms)
            for term, tf in Counter(terms).items():
                term_ids.append(vocab.setdefault(term, len(vocab)))
                doc_ids.append(doc)
                tfs.append(tf)

        terms_of = np.asarray(term_ids, dtype=np.int64)
        order = np.argsort(terms_of, kind="stable")  # by term, documents stay ascending
        terms_of = terms_of[order]
        docs = np.asarray(doc_ids, dtype=np.int32)[order]
        tf = np.asarray(tfs, dtype=np.float64)[order]

        df = np.bincount(terms_of, minlength=len(vocab))  # [n_terms]
        n = len(texts)
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        avgdl = lengths.mean() if lengths.any() else 1.0
        norm = k1 * (1 - b + b * lengths[docs] / avgdl)
        weights = (idf[terms_of] * tf / (tf + norm)).astype(np.float32)
        indptr = np.concatenate([[0], np.cumsum(df)]).astype(np.int64)
        return cls(analyzer, n, k1, b, vocab, indptr, docs, weights)

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every document for `query`: float32 [n_docs], 0 where no term hits."""
        counts = Counter(t for t in self.analyzer.terms(query) if t in self.vocab)
        if not counts:
            return np.zeros(self.n_docs, dtype=np.float32)
        spans = [(self.indptr[self.vocab[t]], self.indptr[self.vocab[t] + 1]) for t in counts]
        docs = np.concatenate([self.doc_ids[s:e] for s, e in spans])
        weights = np.concatenate(
            [
                self.weights[s:e] * count
                for (s, e), count in zip(spans, counts.values(), strict=True)
            ]
        )
        return np.bincount(docs, weights=weights, minlength=self.n_docs).astype(np.float32)

    def idf(self, term: str) -> float:
        """The term's smoothed IDF here; a term no document has gets the largest, df = 0."""
        at = self.vocab.get(term)
        df = 0 if at is None else int(self.indptr[at + 1] - self.indptr[at])
        return float(np.log1p((self.n_docs - df + 0.5) / (df + 0.5)))

    def search(
        self, query: str, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best k rows for `query` with a score > 0, best first: (row ids int64, scores).

        `allowed` (bool [n_docs], or None for all) keeps only the rows a metadata filter let
        through; fewer than k rows come back when fewer match.
        """
        scores = self.scores(query)
        if allowed is not None:
            if allowed.shape != (self.n_docs,) or allowed.dtype != np.bool_:
                raise ValueError(f"allowed must be bool [{self.n_docs}], got {allowed.dtype}")
            scores[~allowed] = 0
        hits = _top(scores, k)
        return hits, scores[hits]

    def save(self, directory: Path) -> None:
        """Write the index into `directory` (created if missing); the caller makes it atomic."""
        directory.mkdir(parents=True, exist_ok=True)
        for name in _ARRAYS:
            np.save(directory / f"{name}.npy", getattr(self, name))
        terms = sorted(self.vocab, key=self.vocab.__getitem__)
        analyzer = {
            "name": self.analyzer.name,
            "stem": self.analyzer.stem,
            "stopwords": self.analyzer.stopwords,
        }
        meta = {"analyzer": analyzer, "n_docs": self.n_docs, "k1": self.k1, "b": self.b}
        meta["terms"] = terms
        (directory / _META).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> BM25Index:
        """Read an index written by `save`, its postings memory-mapped."""
        try:
            meta = json.loads((directory / _META).read_text(encoding="utf-8"))
            arrays = {n: np.load(directory / f"{n}.npy", mmap_mode="r") for n in _ARRAYS}
        except (OSError, ValueError) as error:
            raise LLMHoodError(
                f"The BM25 index in {directory} is missing or damaged ({error}); "
                "ingest the documents again to rebuild it."
            ) from error
        settings = meta["analyzer"]
        analyzer = Analyzer(stem=settings["stem"], stopwords=settings["stopwords"])
        if analyzer.name != settings["name"]:
            raise LLMHoodError(
                f"The BM25 index in {directory} was built by analyzer {settings['name']!r}, "
                f"which this version of llmhood does not have (it has {analyzer.name!r}); "
                "ingest the documents again to rebuild it."
            )
        vocab = {term: i for i, term in enumerate(meta["terms"])}
        return cls(analyzer, meta["n_docs"], meta["k1"], meta["b"], vocab, **arrays)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Row ids (int64) of the k best scores above 0, best first, ties to the lower id."""
    hits = np.flatnonzero(scores > 0)  # ascending row ids
    if len(hits) > k:
        if k < 1:
            return hits[:0]
        # The k-th best score; of the rows tied with it, the lowest ids take the last places.
        cut = np.partition(scores[hits], len(hits) - k)[len(hits) - k]
        above = hits[scores[hits] > cut]
        tied = hits[scores[hits] == cut][: k - len(above)]
        hits = np.concatenate([above, tied])
    return hits[np.lexsort((hits, -scores[hits]))].astype(np.int64)
