"""Rank fusion (llmhood.rag.fusion) against sums worked out by hand."""

from __future__ import annotations

from itertools import pairwise

import pytest

from llmhood.errors import LLMHoodError
from llmhood.rag.fusion import dense_weight, reciprocal_rank, weighted_scores

# The fused scores are short sums of floats; the hand sums below add the same terms, so
# only the last bit can differ.
EXACT = 1e-12


def assert_fused(fused: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [item for item, _ in fused] == [item for item, _ in expected]
    assert [score for _, score in fused] == pytest.approx([s for _, s in expected], rel=EXACT)


def test_reciprocal_rank_by_hand() -> None:
    fused = reciprocal_rank([[1, 2, 3], [3, 1]], k=60)
    assert_fused(fused, [(1, 1 / 61 + 1 / 62), (3, 1 / 63 + 1 / 61), (2, 1 / 62)])


def test_reciprocal_rank_weights_and_k() -> None:
    fused = reciprocal_rank([[1, 2], [2]], k=1, weights=[1.0, 0.25])
    # 1: 1/(1+1) = 0.5; 2: 1/(1+2) + 0.25/(1+1) = 0.4583...
    assert_fused(fused, [(1, 0.5), (2, 1 / 3 + 0.125)])
    assert reciprocal_rank([[1], [2]], weights=[1.0, 3.0])[0][0] == 2
    assert reciprocal_rank([[1, 2], [2, 1]], weights=[0.0, 1.0])[0][0] == 2


def test_reciprocal_rank_ties_go_to_the_lower_id() -> None:
    assert [i for i, _ in reciprocal_rank([[5, 9], [9, 5]])] == [5, 9]
    assert [i for i, _ in reciprocal_rank([[8], [4], [6]])] == [4, 6, 8]


def test_reciprocal_rank_counts_a_repeated_id_at_its_best_place() -> None:
    assert_fused(reciprocal_rank([[7, 3, 7]]), [(7, 1 / 61), (3, 1 / 62)])


def test_reciprocal_rank_empty_runs() -> None:
    assert reciprocal_rank([]) == []
    assert reciprocal_rank([[], []]) == []
    assert_fused(reciprocal_rank([[], [7]]), [(7, 1 / 61)])


def test_weighted_scores_by_hand() -> None:
    runs = [([1, 2, 3], [10.0, 5.0, 0.0]), ([3, 4], [0.9, 0.1])]
    fused = weighted_scores(runs, [1.0, 0.5])
    # run 1 normalised: 1 -> 1, 2 -> 0.5, 3 -> 0; run 2: 3 -> 1, 4 -> 0.
    # 1: 1; 2: 0.5; 3: 0 + 0.5 * 1 = 0.5 (tie with 2: lower id first); 4: 0.
    assert_fused(fused, [(1, 1.0), (2, 0.5), (3, 0.5), (4, 0.0)])


def test_weighted_scores_single_hit_and_equal_scores_are_one() -> None:
    assert weighted_scores([([4], [0.2])], [2.0]) == [(4, 2.0)]
    assert weighted_scores([([6, 5], [3.0, 3.0])], [1.0]) == [(5, 1.0), (6, 1.0)]


def test_weighted_scores_empty_run_and_missing_ids() -> None:
    fused = weighted_scores([([], []), ([2, 1], [1.0, 0.0])], [1.0, 1.0])
    assert fused == [(2, 1.0), (1, 0.0)]
    assert weighted_scores([], []) == []


def test_fusion_refuses_mismatched_inputs() -> None:
    with pytest.raises(LLMHoodError, match="2 weights for 1"):
        reciprocal_rank([[1]], weights=[1.0, 1.0])
    with pytest.raises(LLMHoodError, match=">= 0"):
        weighted_scores([([1], [1.0])], [-1.0])
    with pytest.raises(LLMHoodError, match="2 ids but 1 scores"):
        weighted_scores([([1, 2], [1.0])], [1.0])


def test_dense_weight() -> None:
    assert dense_weight(0.0) == 1.0
    assert dense_weight(1.0) == 0.0
    assert dense_weight(0.5) == 0.25
    assert dense_weight(0.1) == pytest.approx(0.81, rel=EXACT)
    shares = [i / 20 for i in range(21)]
    weights = [dense_weight(f) for f in shares]
    assert all(a > b for a, b in pairwise(weights))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dense_weight(1.5)
