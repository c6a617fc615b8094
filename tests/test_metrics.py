"""Retrieval metrics (llmhood.rag.metrics) against hand computations and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmhood.errors import LLMHoodError
from llmhood.rag.metrics import dedupe, ndcg_at, recall_at, reciprocal_rank_at

RANKED = ["a", "b", "c", "d", "e"]


def test_recall_at() -> None:
    assert recall_at(RANKED, {"c"}, 2) == 0.0
    assert recall_at(RANKED, {"c"}, 3) == 1.0  # one relevant source: hit@k
    assert recall_at(RANKED, {"b", "e", "z"}, 5) == 2 / 3
    assert recall_at(["b", "b", "b"], {"b", "c"}, 3) == 0.5


def test_reciprocal_rank_at() -> None:
    assert reciprocal_rank_at(RANKED, {"c", "e"}) == 1 / 3
    assert reciprocal_rank_at(RANKED, {"e"}, k=4) == 0.0
    assert reciprocal_rank_at(RANKED, {"a"}, k=1) == 1.0
    assert reciprocal_rank_at([], {"a"}) == 0.0


def test_ndcg_at_by_hand() -> None:
    # Relevant b (place 2) and d (place 4), plus z never retrieved; ideal: 3 hits first.
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at(RANKED, {"b", "d", "z"}, k=5) == pytest.approx(dcg / ideal, rel=1e-12)
    # With k = 2 only b counts, and the ideal has min(k, 3) = 2 hits.
    assert ndcg_at(RANKED, {"b", "d", "z"}, k=2) == pytest.approx(
        (1 / math.log2(3)) / (1 + 1 / math.log2(3)), rel=1e-12
    )
    assert ndcg_at(RANKED, {"a", "b"}, k=10) == 1.0
    assert ndcg_at(RANKED, {"z"}) == 0.0


def test_ndcg_counts_a_repeated_source_once() -> None:
    assert ndcg_at(["a", "a", "b"], {"a"}, k=3) == 1.0
    assert ndcg_at(["x", "a", "a"], {"a", "b"}, k=3) < ndcg_at(["x", "a", "b"], {"a", "b"}, k=3)


def test_ndcg_equals_scikit_learn() -> None:
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    sources = [f"s{i}" for i in range(30)]
    for _ in range(50):
        ranked = list(rng.permutation(sources)[: rng.integers(5, 20)])
        relevant = set(rng.choice(sources, size=rng.integers(1, 8), replace=False))
        k = int(rng.integers(1, len(ranked) + 1))
        # sklearn ranks every labelled item by score: the ranked ones first, in order, then
        # the relevant ones never retrieved (they fall past k, since k <= len(ranked)).
        items = ranked + sorted(relevant - set(ranked))
        y_true = np.array([[float(s in relevant) for s in items]])
        y_score = np.array([np.arange(len(items), 0, -1, dtype=float)])
        expected = sklearn_metrics.ndcg_score(y_true, y_score, k=k)
        assert ndcg_at(ranked, relevant, k) == pytest.approx(expected, rel=1e-12)


def test_dedupe_keeps_first_occurrences_in_order() -> None:
    assert dedupe(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
    assert dedupe([]) == []


@pytest.mark.parametrize("metric", [recall_at, reciprocal_rank_at, ndcg_at])
def test_metrics_refuse_unlabelled_queries_and_bad_k(metric) -> None:
    with pytest.raises(LLMHoodError, match="no relevant"):
        metric(RANKED, set(), 3)
    with pytest.raises(LLMHoodError, match="at least 1"):
        metric(RANKED, {"a"}, 0)
