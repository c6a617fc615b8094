"""How far past its training length can a model read? Perplexity by position, with RoPE scaling.

SmolLM2 was trained on 8192-token contexts. Past that, its RoPE rotations reach angles the
model has never seen and the next-token loss climbs. The RoPE scaling schemes
(llmhood.model.rope_scaling) change the frequencies, never the weights, to bring long
positions back into the trained range, each with its own trade-off inside it.

The measurement: one long real text (Python's own documentation, `pydoc_data.topics`,
which ships with CPython), tokenized and read once from the start, in chunks, through the
KV cache; every next-token negative log-likelihood (NLL) is kept and averaged over buckets
of positions. Perplexity is exp(mean NLL). Every scheme sees the same tokens, so the curves
differ only by the position encoding.

Cost, and the choices that keep it to minutes on 2 CPU cores: attention over T tokens costs
O(T²), so one pass over 16384 tokens is the bulk of the work; it is made once per scheme.
The default length is 16384 (2× the trained context), the scaling factor is
length / trained context (2), and chunks of 1024 tokens keep the attention scores of one
chunk (heads × 1024 × length) small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from llmhood.errors import LLMHoodError
from llmhood.llm import LLM
from llmhood.model import Transformer
from llmhood.model.rope_scaling import RopeScaling

SCHEMES = ("none", "linear", "ntk", "yarn")


def document_text() -> str:
    """Python's documentation topics, in a fixed order: a long text found on every machine."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def scaling_for(scheme: str, factor: float, trained: int) -> RopeScaling | None:
    if scheme == "none":
        return None
    if scheme not in SCHEMES:
        raise LLMHoodError(f"Unknown scheme '{scheme}'; choose from {', '.join(SCHEMES)}.")
    return RopeScaling(scheme, factor=factor, original_max_position_embeddings=trained)


def check(length: int, chunk: int, bucket: int, schemes: Sequence[str]) -> None:
    """The arguments of `run`, before any model is loaded."""
    if length < 2 or chunk < 1 or bucket < 1:
        raise LLMHoodError("length must be at least 2, and chunk and bucket at least 1.")
    if not schemes:
        raise LLMHoodError(f"No scheme was given; choose from {', '.join(SCHEMES)}.")
    for scheme in schemes:
        if scheme not in SCHEMES:
            raise LLMHoodError(f"Unknown scheme '{scheme}'; choose from {', '.join(SCHEMES)}.")


def nll_by_position(
    model: Transformer, tokens: torch.Tensor, chunk: int, progress: bool = True, desc: str = ""
) -> torch.Tensor:
    """Next-token NLL at every position, reading `tokens` (T,) in chunks through a KV cache.

    Returns (T - 1,) float32: entry t is -log p(tokens[t + 1] | tokens[: t + 1]).
    """
    total = tokens.numel()
    cache = model.new_cache(1, total)
    losses = []
    steps = range(0, total - 1, chunk)
    with torch.inference_mode():
        for start in tqdm(steps, desc=desc or "reading", disable=not progress, leave=False):
            end = min(start + chunk, total - 1)
            logits = model(tokens[None, start:end], cache=cache)[0]  # (end - start, vocab)
            losses.append(F.cross_entropy(logits, tokens[start + 1 : end + 1], reduction="none"))
    return torch.cat(losses)


@dataclass
class LongContextResult:
    rows: list[dict]  # one per (scheme, bucket): start, end, perplexity
    length: int
    trained: int
    factor: float

    def perplexity(self, scheme: str, start: int, end: int) -> float:
        """Perplexity of `scheme` over the buckets that lie inside positions [start, end)."""
        rows = [
            r
            for r in self.rows
            if r["scheme"] == scheme and start <= r["start"] and r["end"] <= end
        ]
        nll = sum(r["mean_nll"] * r["tokens"] for r in rows)
        return math.exp(nll / sum(r["tokens"] for r in rows))


def run(
    llm: LLM,
    length: int = 16384,
    chunk: int = 1024,
    bucket: int = 1024,
    schemes: Sequence[str] = SCHEMES,
    progress: bool = True,
) -> LongContextResult:
    """Perplexity by position bucket for each scheme, on the first `length` tokens of the text."""
    check(length, chunk, bucket, schemes)
    model = llm.model
    original = model.config
    trained = original.max_seq_len
    ids = llm.tokenizer.encode(document_text())
    if len(ids) < length:
        raise LLMHoodError(
            f"The text has {len(ids)} tokens, fewer than the {length} asked for; lower --length."
        )
    tokens = torch.tensor(ids[:length])
    factor = max(1.0, length / trained)
    scalings = [scaling_for(scheme, factor, trained) for scheme in schemes]  # names checked first
    rows = []
    try:
        for scheme, scaling in zip(schemes, scalings, strict=True):
            model.set_rope_scaling(scaling, max_seq_len=length)
            nll = nll_by_position(model, tokens, chunk, progress, desc=scheme)
            for start in range(0, nll.numel(), bucket):
                part = nll[start : start + bucket]
                rows.append(
                    {
                        "scheme": scheme,
                        "start": start + 1,  # position of the first predicted token
                        "end": start + 1 + part.numel(),
                        "tokens": part.numel(),
                        "mean_nll": part.mean().item(),
                        "perplexity": part.mean().exp().item(),
                    }
                )
    finally:
        model.set_rope_scaling(original.rope_scaling, max_seq_len=original.max_seq_len)
    return LongContextResult(rows, length, trained, factor)


def plot(result: LongContextResult, model_name: str):
    """Perplexity against position, one line per scheme, the trained length marked."""
    from llmhood.plot.figure import Plot, new_figure
    from llmhood.plot.table import Table

    figure = new_figure(10, 5.5)
    ax = figure.subplots()
    for scheme in dict.fromkeys(r["scheme"] for r in result.rows):
        rows = [r for r in result.rows if r["scheme"] == scheme]
        centers = [(r["start"] + r["end"]) / 2 for r in rows]
        label = scheme if scheme == "none" else f"{scheme} (factor {result.factor:g})"
        ax.plot(centers, [r["perplexity"] for r in rows], marker="o", ms=3, label=label)
    ax.axvline(result.trained, color="black", ls=":", lw=1)
    ax.text(result.trained, ax.get_ylim()[1], " trained context", va="top", fontsize=9)
    ax.set_yscale("log")
    ax.set_xlabel("token position")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title(f"{model_name}: perplexity by position on Python's documentation")
    ax.legend()
    ax.grid(alpha=0.3)
    return Plot(figure, Table(result.rows))


def summary(result: LongContextResult) -> str:
    """A table: perplexity inside the trained context, past it, and in the last bucket."""
    schemes = list(dict.fromkeys(r["scheme"] for r in result.rows))
    last = max(r["start"] for r in result.rows)
    spans = [
        (f"1-{result.trained}", 0, result.trained + 1),
        (f"{result.trained + 1}-{result.length}", result.trained, result.length + 1),
        (f"last bucket ({last}-{result.length - 1})", last, result.length + 1),
    ]
    lines = [f"{'scheme':<10}" + "".join(f"{name:>28}" for name, _, _ in spans)]
    for scheme in schemes:
        cells = "".join(f"{result.perplexity(scheme, a, b):>28.2f}" for _, a, b in spans)
        lines.append(f"{scheme:<10}{cells}")
    return "\n".join(lines)
