"""Sampling filters against transformers' logits processors, and the draw itself."""

import math

import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from llmhood.errors import LLMHoodError
from llmhood.generate import SamplingParams
from llmhood.generate.sampling import (
    apply_repetition_penalty,
    apply_temperature,
    filter_logits,
    min_p_filter,
    row_generators,
    sample,
    top_k_filter,
    top_p_filter,
)

VOCAB = 50


def random_logits(seed: int = 0, rows: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, VOCAB, generator=g) * 3  # (bs, V), spread enough to filter


def assert_same_filtering(ours: torch.Tensor, ref: torch.Tensor) -> None:
    """Same removed (-inf) positions, and the same values everywhere else."""
    assert torch.equal(torch.isneginf(ours), torch.isneginf(ref))
    assert torch.equal(ours, ref)


PREVIOUS = [[1, 2, 3, 3], [], [49, 0, 7], [5], [10, 11, 12, 13, 14], [2, 2, 2]]


def previous_as_tensor() -> torch.Tensor:
    """transformers takes (bs, len) input ids: pad short rows with a row's own first token
    (repeats do not change which tokens are penalised) or, for an empty row, with nothing
    we can repeat, so that row is checked separately."""
    width = max(map(len, PREVIOUS))
    return torch.tensor([ids + ids[:1] * (width - len(ids)) for ids in PREVIOUS if ids])


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_matches_transformers(penalty):
    logits = random_logits()
    ours = apply_repetition_penalty(logits, PREVIOUS, penalty)
    rows = [i for i, ids in enumerate(PREVIOUS) if ids]
    ref = RepetitionPenaltyLogitsProcessor(penalty)(previous_as_tensor(), logits[rows].clone())
    assert_same_filtering(ours[rows], ref)
    assert torch.equal(ours[1], logits[1])  # no previous tokens: untouched


@pytest.mark.parametrize("temperature", [0.3, 1.0, 1.7])
def test_temperature_matches_transformers(temperature):
    logits = random_logits()
    ref = TemperatureLogitsWarper(temperature)(None, logits)
    assert_same_filtering(apply_temperature(logits, temperature), ref)


@pytest.mark.parametrize("k", [1, 5, 49, 50, 80])
def test_top_k_matches_transformers(k):
    logits = random_logits()
    assert_same_filtering(top_k_filter(logits, k), TopKLogitsWarper(k)(None, logits))


def test_top_k_keeps_ties_like_transformers():
    logits = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0]])
    ours = top_k_filter(logits, 2)
    assert_same_filtering(ours, TopKLogitsWarper(2)(None, logits))
    assert torch.isfinite(ours).sum() == 3


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.999, 1.0])
def test_top_p_matches_transformers(p):
    logits = random_logits(seed=1)
    assert_same_filtering(top_p_filter(logits, p), TopPLogitsWarper(p)(None, logits))


def test_top_p_of_one_keeps_every_token_of_a_real_vocabulary():
    """A float32 running sum of 49,152 probabilities reaches 1.0 early; p = 1 must still
    keep the whole tail, on every CPU."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 49152, generator=g) * 3
    logits[:, :5] += 12  # a few likely tokens and a long tail, as a model gives
    probs = logits.sort(descending=True).values.softmax(-1)
    assert (probs.cumsum(-1) >= 1).any()  # the rounding that used to cut the tail
    assert torch.equal(top_p_filter(logits, 1.0), logits)


def test_top_p_cut_does_not_depend_on_float32_summation():
    """Below 1, the kept set is the one an exact (float64) sum of the probabilities gives."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 49152, generator=g) * 3
    logits[:, :5] += 12
    for p in (0.9, 0.999, 0.9999):
        probs = logits.double().softmax(-1)
        sorted_probs, order = probs.sort(descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs
        want = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, order, before < p)
        assert torch.equal(torch.isfinite(top_p_filter(logits, p)), want)


def test_top_p_keeps_the_token_that_crosses_p():
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    kept = torch.isfinite(top_p_filter(logits, 0.6))
    assert kept.tolist() == [[True, True, False]]  # 0.5 < 0.6, 0.5 + 0.3 reaches it


@pytest.mark.parametrize("min_p", [0.0, 0.05, 0.2, 0.5, 0.99])
def test_min_p_matches_transformers(min_p):
    logits = random_logits(seed=2)
    assert_same_filtering(min_p_filter(logits, min_p), MinPLogitsWarper(min_p)(None, logits))


def test_whole_pipeline_matches_transformers():
    """All filters at once, in transformers' order (repetition penalty first)."""
    params = SamplingParams(
        temperature=0.7, top_k=20, top_p=0.8, min_p=0.05, repetition_penalty=1.2
    )
    logits = random_logits(seed=3)
    rows = [i for i, ids in enumerate(PREVIOUS) if ids]
    ref = LogitsProcessorList(
        [
            RepetitionPenaltyLogitsProcessor(1.2),
            TemperatureLogitsWarper(0.7),
            TopKLogitsWarper(20),
            TopPLogitsWarper(0.8),
            MinPLogitsWarper(0.05),
        ]
    )(previous_as_tensor(), logits[rows].clone())
    assert_same_filtering(filter_logits(logits, params, PREVIOUS)[rows], ref)


def test_greedy_is_argmax_after_repetition_penalty():
    logits = random_logits()
    best = logits.argmax(-1)  # (bs,)
    assert torch.equal(sample(logits, SamplingParams(), None, PREVIOUS), best)
    previous = [[int(t)] for t in best]  # every row has already used its favourite token
    ref = RepetitionPenaltyLogitsProcessor(10.0)(best[:, None], logits.clone()).argmax(-1)
    ours = sample(logits, SamplingParams(repetition_penalty=10.0), None, previous)
    assert torch.equal(ours, ref)
    assert not torch.equal(ours, best)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("temperature", -0.1, ">= 0"),
        ("temperature", math.nan, ">= 0"),
        ("top_p", 0.0, "(0, 1]"),
        ("top_p", 1.5, "(0, 1]"),
        ("top_p", math.nan, "(0, 1]"),
        ("top_k", -1, ">= 0"),
        ("min_p", 1.0, "[0, 1)"),
        ("min_p", -0.1, "[0, 1)"),
        ("min_p", math.nan, "[0, 1)"),
        ("repetition_penalty", 0.0, "> 0"),
        ("repetition_penalty", math.nan, "> 0"),
        ("seed", -3, "non-negative"),
    ],
)
def test_validate_rejects_bad_values(field, value, expected):
    with pytest.raises(LLMHoodError) as err:
        SamplingParams(**{field: value}).validate()
    message = str(err.value)
    assert f"{field}={value!r}" in message
    assert expected in message


def test_validate_accepts_edges():
    SamplingParams(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, seed=0).validate()
    SamplingParams(temperature=2.0, top_k=None, top_p=1e-9, min_p=0.999).validate()


def test_seeded_draws_reproduce_and_each_row_has_its_own_stream():
    params = SamplingParams(temperature=1.0)
    logits = torch.zeros(1, VOCAB)  # uniform: every draw is pure randomness

    def draws(generator: torch.Generator, n: int = 20) -> list[int]:
        return [sample(logits, params, [generator], [[]]).item() for _ in range(n)]

    assert draws(row_generators(7, 1)[0]) == draws(row_generators(7, 1)[0])
    two, three = row_generators(7, 2), row_generators(7, 3)
    assert draws(two[1]) == draws(three[1])  # a row's stream ignores the batch size
    assert draws(row_generators(7, 2)[0]) != draws(row_generators(7, 2)[1])
    assert draws(row_generators(7, 1)[0]) != draws(row_generators(8, 1)[0])
    # seed + row would make seed 8's row 0 replay seed 7's row 1
    assert draws(row_generators(7, 2)[1]) != draws(row_generators(8, 1)[0])
    assert row_generators(None, 3) is None


def test_batched_draw_equals_row_alone():
    """A row drawn inside a batch gets the token it gets alone with the same generator."""
    params = SamplingParams(temperature=1.0, top_p=0.9)
    logits = random_logits(seed=4)
    batch = sample(logits, params, row_generators(5, 6), [[]] * 6)
    alone = [sample(logits[[i]], params, [row_generators(5, 6)[i]], [[]]).item() for i in range(6)]
    assert batch.tolist() == alone


def test_sample_frequencies_follow_the_filtered_distribution():
    """Draw many times and compare counts with transformers' filtered softmax (chi-square)."""
    params = SamplingParams(temperature=0.8, top_k=8, top_p=0.9, seed=0)
    logits = random_logits(seed=5, rows=1) / 3
    probs = LogitsProcessorList(
        [TemperatureLogitsWarper(0.8), TopKLogitsWarper(8), TopPLogitsWarper(0.9)]
    )(None, logits.clone()).softmax(-1)[0]
    n = 20_000
    generator = row_generators(0, 1)[0]
    draws = sample(logits.expand(n, -1), params, [generator] * n, [[]] * n)
    counts = torch.bincount(draws, minlength=VOCAB).double()
    kept = probs > 0
    assert counts[~kept].sum() == 0  # never a filtered token
    expected = probs[kept].double() * n
    chi2 = ((counts[kept] - expected) ** 2 / expected).sum().item()
    dof = int(kept.sum()) - 1
    assert 1 < dof < 8
    # The 99.9% quantile of chi-square is below 3·dof + 10 for these degrees of freedom.
    assert chi2 < 3 * dof + 10, (chi2, dof)
