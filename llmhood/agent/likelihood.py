"""How likely the model finds each of several continuations of one prompt, from one prefill.

The agent makes its discrete choices by whole-text likelihood rather than token by token:
which tool to call (llmhood.agent.call) and which span of the question a string argument
copies (llmhood.agent.copying). Both score a handful of short continuations of one long
prompt, so the prompt is read once and its keys and values copied into one row per
continuation; the continuations then run as one right-padded batch. Padding after a
continuation's last token cannot change its earlier positions under the causal mask, so no
mask is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def continuation_logprobs(
    llm,
    prompt: str,
    continuations: Sequence[str],
    shortlist: int | None = None,
    always: Sequence[int] = (),
) -> list[list[float] | None]:
    """Each continuation's tokens' log-probabilities given the prompt and the tokens before
    them. `shortlist`: only that many continuations, those whose first token is likeliest,
    are scored past their first token, and the others get None (a beam's first step: a
    continuation the model would not start is not read to its end); the continuations at the
    indices `always` are scored in full whatever their first token."""
    model = llm.model
    prompt_ids = llm.tokenizer.encode(prompt)
    tails = [llm.tokenizer.encode(c) for c in continuations]
    device = model.tok_embeddings.weight.device
    with torch.inference_mode():
        alone = model.new_cache(1, len(prompt_ids))
        first = model(torch.tensor([prompt_ids], device=device), cache=alone, last_only=True)
        first = first[0, -1].log_softmax(-1)  # (V,)
        likeliest = sorted(range(len(tails)), key=lambda k: -float(first[tails[k][0]]))
        kept = sorted(set(likeliest[:shortlist]) | set(always))
        width = max(len(tails[k]) for k in kept)
        cache = model.new_cache(len(kept), len(prompt_ids) + width)
        for row in range(len(kept)):
            cache.fill_row(row, alone, end=len(prompt_ids))
        cache.advance(len(prompt_ids))
        rows = [tails[k] + [tails[k][-1]] * (width - len(tails[k])) for k in kept]
        logprobs = model(torch.tensor(rows, device=device), cache=cache).log_softmax(-1)
    scores: list[list[float] | None] = [None] * len(tails)  # logprobs: (kept, width, V)
    for row, k in enumerate(kept):
        tail = tails[k]
        scores[k] = [float(first[tail[0]])] + [
            float(logprobs[row, j - 1, tail[j]]) for j in range(1, len(tail))
        ]
    return scores
