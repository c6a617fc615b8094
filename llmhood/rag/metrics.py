"""Retrieval metrics: how well one ranked list of source ids answers one labelled query.

A query is labelled with the set of sources that answer it; the metrics read only the
first k places of the ranking:

- recall@k: the share of the relevant sources in the top k. With one relevant source per
  query (the usual hand-written set) it is hit@k: 1 if it was found, else 0.
- reciprocal rank@k: 1 / the place of the first relevant source, 0 past k; its mean over
  queries is MRR.
- nDCG@k: binary gains discounted by log2(place + 1), divided by the best possible DCG,
  which puts min(k, |relevant|) relevant sources first (Järvelin & Kekäläinen 2002).

A retriever returns chunks, and several chunks of one file carry the same source id;
`dedupe` keeps the first of each, which is what a person reading the list sees. The
metrics themselves stay correct without it: a source repeated in the list takes a place
but earns nothing the second time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from llmhood.errors import LLMHoodError


def recall_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    """|relevant ∩ top k| / |relevant|; hit@k when one source is relevant."""
    _check(relevant, k)
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def reciprocal_rank_at(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    """1 / the place (from 1) of the first relevant source within the top k, else 0."""
    _check(relevant, k)
    return next((1.0 / place for place, s in enumerate(ranked[:k], 1) if s in relevant), 0.0)


def ndcg_at(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    """DCG of the top k with binary gains over the ideal DCG of min(k, |relevant|) hits."""
    _check(relevant, k)
    found: set[str] = set()
    dcg = 0.0
    for place, source in enumerate(ranked[:k], start=1):
        if source in relevant and source not in found:
            found.add(source)
            dcg += 1.0 / math.log2(place + 1)
    ideal = sum(1.0 / math.log2(place + 1) for place in range(1, min(k, len(relevant)) + 1))
    return dcg / ideal


def dedupe(ranked: Sequence[str]) -> list[str]:
    """The ids in order of first appearance: several chunks of one file count once."""
    return list(dict.fromkeys(ranked))


def _check(relevant: set[str], k: int) -> None:
    if not relevant:
        raise LLMHoodError("A query has no relevant sources, so it cannot be scored; label one.")
    if k < 1:
        raise LLMHoodError(f"A metric's cut-off k must be at least 1, got {k}.")
