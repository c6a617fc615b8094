"""Choosing the next token from the model's logits.

The model gives a score (logit) per vocabulary entry; softmax turns them into a
probability distribution. Always taking the most likely token (greedy) is deterministic
but tends to loop; drawing from the full distribution gives variety but sometimes picks
one of the thousands of implausible tokens in the long tail. Each step below reshapes the
distribution before the draw, in the order transformers applies them:

1. repetition penalty — make tokens already in the text less likely (Keskar et al., 2019);
2. temperature — sharpen (< 1) or flatten (> 1) the distribution;
3. top-k — keep only the k most likely tokens;
4. top-p (nucleus) — keep the smallest set of tokens that holds probability p
   (Holtzman et al., 2019);
5. min-p — keep tokens at least min_p times as likely as the best one (Nguyen et al., 2024).

A removed token gets the logit -inf, i.e. probability 0 after softmax. Every filter keeps
at least the most likely token, so a distribution never becomes empty.

Reproducibility: each row of a batch draws from its own `torch.Generator`, seeded from
(seed, the row's index in the caller's prompt list). A row's random stream therefore does
not depend on which other prompts share its batch or on the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llmhood.errors import LLMHoodError


@dataclass
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy (always the most likely token)
    top_k: int | None = None  # None or 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off
    seed: int | None = None  # None = torch's global random state, not reproducible

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def validate(self) -> None:
        """Raise LLMHoodError for a value outside its range, naming the value and the range.

        Each check is written as "the value is valid", so NaN, which fails every
        comparison, is rejected too.
        """
        checks = [
            (
                "temperature",
                self.temperature >= 0,
                ">= 0",
                "0 picks the most likely token every time; higher values give more varied text",
            ),
            (
                "top_k",
                self.top_k is None or self.top_k >= 0,
                ">= 0 or None",
                "the number of most likely tokens kept for sampling; 0 or None keeps all",
            ),
            (
                "top_p",
                0 < self.top_p <= 1,
                "in (0, 1]",
                "the probability mass of the most likely tokens kept for sampling; 1 keeps all",
            ),
            (
                "min_p",
                0 <= self.min_p < 1,
                "in [0, 1)",
                "tokens less likely than min_p times the best token are dropped; 0 keeps all",
            ),
            (
                "repetition_penalty",
                self.repetition_penalty > 0,
                "> 0",
                "values above 1 make tokens already in the text less likely; 1 turns it off",
            ),
            (
                "seed",
                self.seed is None or self.seed >= 0,
                "a non-negative integer or None",
                "the same seed gives the same sampled text; None draws a fresh one each time",
            ),
        ]
        for name, ok, valid, meaning in checks:
            if not ok:
                raise LLMHoodError(
                    f"Sampling parameter {name}={getattr(self, name)!r} is invalid: it must be "
                    f"{valid} ({meaning})."
                )


def apply_repetition_penalty(
    logits: torch.Tensor, previous_ids: list[list[int]], penalty: float
) -> torch.Tensor:
    """Penalise every token that already occurs in a row's text (the CTRL rule).

    Dividing a logit by penalty > 1 only lowers a token's probability if the logit is
    positive; a negative logit would rise. So positive logits are divided and negative
    ones multiplied: either way the token moves toward "less likely". Each token counts
    once, however often it occurred.
    logits: (bs, V); previous_ids: one list of token ids per row.
    """
    seen = torch.zeros_like(logits, dtype=torch.bool)  # (bs, V)
    for row, ids in enumerate(previous_ids):
        seen[row, ids] = True
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide logits by T: softmax(z/T) is sharper for T < 1 and flatter for T > 1.

    Only the ratios between probabilities change, never their order, so T alone never
    changes which token greedy decoding would pick.
    """
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest logits per row (and any tied with the k-th), -inf elsewhere.

    A fixed k ignores the shape of the distribution: it cuts plausible tokens when many are
    plausible and keeps implausible ones when the model is sure. top-p and min-p adapt.
    logits: (bs, V).
    """
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (bs, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches p.

    Sorted from most to least likely, a token is kept while the mass of the tokens before
    it is still below p; so the token that crosses p is kept, and the top token (nothing
    before it) always is. When the model is sure, the set is one token; when it hesitates,
    it is large.

    p = 1 keeps every token, exactly: a float32 running sum over 49,152 probabilities
    reaches 1.0 thousands of tokens before the end (each addition rounds), which would cut
    a tail that p = 1 promises to keep. For p < 1 the sums run in float64, so where the cut
    falls does not depend on the order in which this CPU's kernels add.
    logits: (bs, V).
    """
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.double().softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # (bs, V), in sorted order
    remove_sorted = mass_before >= p
    remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens with probability >= min_p · p_max, the probability of the best token.

    The cut-off scales with the model's confidence: a sure model (p_max near 1) keeps
    almost nothing else, an unsure one keeps many candidates. The best token always passes.
    logits: (bs, V).
    """
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)  # (bs, 1)
    return logits.masked_fill(probs < threshold, float("-inf"))


def filter_logits(
    logits: torch.Tensor, params: SamplingParams, previous: list[list[int]]
) -> torch.Tensor:
    """All steps before the draw, in transformers' order; off steps are skipped. (bs, V)."""
    if params.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, previous, params.repetition_penalty)
    if params.greedy:
        return logits
    logits = apply_temperature(logits, params.temperature)
    if params.top_k:
        logits = top_k_filter(logits, params.top_k)
    if params.top_p < 1.0:
        logits = top_p_filter(logits, params.top_p)
    if params.min_p > 0.0:
        logits = min_p_filter(logits, params.min_p)
    return logits


def row_generators(
    seed: int | None, rows: int | Sequence[int], device: torch.device | str = "cpu"
) -> list[torch.Generator] | None:
    """One random generator per prompt, or None to use torch's global random state.

    rows: each row's index in the caller's prompt list, or a count n for rows 0 .. n-1.
    Row i's seed is derived from (seed, i) with numpy's SeedSequence, which is built to
    turn one user seed into many statistically independent streams; seed + i would make
    seed 1's row 0 replay seed 0's row 1.
    """
    if seed is None:
        return None
    indices = range(rows) if isinstance(rows, int) else rows
    generators = []
    for row in indices:
        row_seed = int(np.random.SeedSequence([seed, row]).generate_state(1, np.uint64)[0])
        generators.append(torch.Generator(device=device).manual_seed(row_seed))
    return generators


def sample(
    logits: torch.Tensor,
    params: SamplingParams,
    generators: list[torch.Generator] | None,
    previous: list[list[int]],
) -> torch.Tensor:
    """Pick one token per row: argmax when greedy, else a draw from the filtered softmax.

    logits: (bs, V) for the last position; generators: one per row (see `row_generators`)
    or None; previous: each row's token ids so far, for the repetition penalty.
    Returns (bs,) int64.
    """
    logits = filter_logits(logits.float(), params, previous)
    if params.greedy:
        return logits.argmax(dim=-1)
    probs = logits.softmax(dim=-1)  # (bs, V)
    # One draw per row with that row's own generator, so rows never share a random stream.
    draws = [
        torch.multinomial(probs[row], 1, generator=generators[row] if generators else None)
        for row in range(probs.shape[0])
    ]
    return torch.cat(draws)
