"""Perplexity on a fixed real text: the yardstick every speed mode is held to.

A faster mode changes the numbers the model computes (bf16 rounding, 4-bit weights), and
the question is whether it changes what the model *predicts*. Perplexity, exp(mean
next-token negative log-likelihood), answers it on real text: a mode whose perplexity
stays within a small margin of the float32 reference predicts as well.

The text is CPython's own documentation (`pydoc_data.topics`), which ships with every
Python, so every machine measures on the same tokens without a download. `token_nll`
returns the loss at every position, not only the mean, for experiments that ask *where*
a model gets worse (long contexts).

A `Verdict` applies the quality guard, the rule `llmhood bench` and `llmhood.load` share:
a mode whose perplexity is more than `LOSSY_MARGIN` (2%) above the reference's is lossy,
and the automatic mode choice never picks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from llmhood.model import Transformer
from llmhood.tokenizer import BPETokenizer

LOSSY_MARGIN = 0.02  # a mode is lossy when its perplexity exceeds the reference's by more
GUARD_TOKENS = 512  # tokens of the text the guard reads: seconds on 2 cores, stable to ~0.1%


def document_text() -> str:
    """Python's documentation topics, in a fixed order: a long text found on every machine."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def token_nll(
    model: Transformer, tokens: torch.Tensor, chunk: int = 512, progress: bool = False
) -> torch.Tensor:
    """Next-token NLL at every position, reading `tokens` (T,) in chunks through a KV cache.

    Returns (T - 1,) float32: entry t is -log p(tokens[t + 1] | tokens[: t + 1]). Chunking
    changes nothing but memory: every position sees all tokens before it.
    """
    total = tokens.numel()
    cache = model.new_cache(1, total)
    losses = []
    with torch.inference_mode():
        for start in tqdm(range(0, total - 1, chunk), disable=not progress, leave=False):
            end = min(start + chunk, total - 1)
            logits = model(tokens[None, start:end], cache=cache)[0]  # (end - start, vocab)
            losses.append(F.cross_entropy(logits, tokens[start + 1 : end + 1], reduction="none"))
    return torch.cat(losses)


@dataclass(frozen=True)
class Perplexity:
    value: float
    tokens: int  # predicted tokens it averages over

    @classmethod
    def of(cls, nll: torch.Tensor) -> Perplexity:
        return cls(math.exp(nll.double().mean().item()), nll.numel())


def perplexity(model: Transformer, tokens: torch.Tensor, chunk: int = 512) -> Perplexity:
    return Perplexity.of(token_nll(model, tokens, chunk))


def guard_tokens(tokenizer: BPETokenizer, n: int = GUARD_TOKENS) -> torch.Tensor:
    """The first `n` tokens of the document text, (n,) int64, with BOS where the model wants
    one. Only a prefix of the text is encoded: a token is rarely longer than 16 characters."""
    text = document_text()
    ids = tokenizer.encode(text[: 16 * n], add_bos=tokenizer.add_bos)
    if len(ids) < n:
        ids = tokenizer.encode(text, add_bos=tokenizer.add_bos)
    return torch.tensor(ids[:n])


@dataclass(frozen=True)
class Verdict:
    mode: str
    perplexity: float
    reference: float  # the float32 reference's perplexity on the same tokens

    @property
    def ratio(self) -> float:
        return self.perplexity / self.reference

    @property
    def lossy(self) -> bool:
        return not self.ratio <= 1 + LOSSY_MARGIN  # a NaN perplexity is lossy too

    def label(self) -> str:
        """e.g. "17.587 (+0.27%)" or "19.400 (+10.61%, lossy)"."""
        lossy = ", lossy" if self.lossy else ""
        return f"{self.perplexity:.3f} ({100 * (self.ratio - 1):+.2f}%{lossy})"
