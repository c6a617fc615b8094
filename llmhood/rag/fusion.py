"""Rank fusion: one ranking of row ids out of the keyword (BM25) and the dense rankings.

Two ways, both over ids that either ranking found:

- `reciprocal_rank` (RRF, Cormack et al. 2009): Σ_i w_i / (k + rank_i), rank from 1, a
  ranking that misses an id adds nothing. It reads only ranks, so the two rankings' scores
  (a BM25 sum of idfs, a cosine) never need to share a scale; k = 60 is the paper's value,
  which keeps the first few places from dominating.
- `weighted_scores`: each run's scores min-max normalised to [0, 1], missing as 0, then a
  weighted sum. It keeps how far apart the scores were, and pays for it with one outlier
  squashing the rest of its run.

Ties are broken by the lower id, so a fused ranking is the same on every run.

`dense_weight` is how far to trust the dense ranking of one query. all-MiniLM-L6-v2's
vocabulary has a few hundred Han characters, so most Chinese becomes [UNK] and its
ranking of a Chinese query is close to blind, while BM25 with jieba reads it well. The
weight is (1 − f)², f the share of [UNK] tokens: 1 for a query the embedder fully reads,
still 0.81 for one unknown word in ten (a name), but 0.25 at half unknown, where a dense
first place (0.25 / 61 in RRF) already counts less than a BM25 fortieth (1 / 100), and
0 for a query it cannot read at all. A smooth curve rather than a cut-off, so a query
one token past a threshold does not flip its whole ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmhood.errors import LLMHoodError

RRF_K = 60


def reciprocal_rank(
    rankings: Sequence[Sequence[int]], k: int = RRF_K, weights: Sequence[float] | None = None
) -> list[tuple[int, float]]:
    """(id, Σ_i w_i / (k + rank_i)) best first; an id repeated in one ranking counts at its best."""
    weights = _weights(weights if weights is not None else [1.0] * len(rankings), len(rankings))
    fused: dict[int, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        seen: set[int] = set()
        for rank, item in enumerate(ranking, start=1):
            if item not in seen:
                seen.add(item)
                fused[item] = fused.get(item, 0.0) + weight / (k + rank)
    return _best_first(fused)


def weighted_scores(
    runs: Sequence[tuple[Sequence[int], Sequence[float]]], weights: Sequence[float]
) -> list[tuple[int, float]]:
    """(id, Σ_i w_i · minmax_i(score)) best first; a run whose scores are all equal gives 1."""
    weights = _weights(weights, len(runs))
    fused: dict[int, float] = {}
    for (ids, scores), weight in zip(runs, weights, strict=True):
        if len(ids) != len(scores):
            raise LLMHoodError(f"A run has {len(ids)} ids but {len(scores)} scores.")
        if not ids:
            continue
        low, high = min(scores), max(scores)
        for item, score in zip(ids, scores, strict=True):
            share = (score - low) / (high - low) if high > low else 1.0
            fused[item] = fused.get(item, 0.0) + weight * share
    return _best_first(fused)


def dense_weight(unknown_fraction: float) -> float:
    """Trust in a query's dense ranking: (1 − f)², f the share of its tokens that are [UNK]."""
    if not 0.0 <= unknown_fraction <= 1.0:
        raise ValueError(f"unknown_fraction is a share in [0, 1], got {unknown_fraction}")
    return (1.0 - unknown_fraction) ** 2


def _weights(weights: Sequence[float], runs: int) -> Sequence[float]:
    if len(weights) != runs:
        raise LLMHoodError(f"Fusion got {len(weights)} weights for {runs} rankings; give one each.")
    if any(w < 0 for w in weights):
        raise LLMHoodError(f"Fusion weights must be >= 0, got {list(weights)}.")
    return weights


def _best_first(fused: dict[int, float]) -> list[tuple[int, float]]:
    return sorted(fused.items(), key=lambda pair: (-pair[1], pair[0]))
