"""A text as the plots that read a forward pass see it: its token texts, and what the
model computed on them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from llmhood.errors import LLMHoodError
from llmhood.llm import LLM
from llmhood.model.capture import Captured, capture

# Beyond this many tokens, a heatmap with one labelled row and column per token is unreadable.
MAX_TOKENS = 64


@dataclass
class Pass:
    """One forward pass over a text."""

    tokens: list[str]  # each token decoded on its own, leading space included
    seen: Captured  # batch dimension kept, as the model gives it


def forward_pass(llm: LLM, text: str, attention_layers: Iterable[int] = ()) -> Pass:
    """Run `text` (with BOS where the model wants one) and capture its insides."""
    ids = llm.encode_prompts([text])[0]
    if not ids:
        raise LLMHoodError("The text is empty; give a few words to look at.")
    if len(ids) > MAX_TOKENS:
        raise LLMHoodError(
            f"The text is {len(ids)} tokens long; these plots draw one row per token and "
            f"stay readable up to {MAX_TOKENS}. Use a shorter text."
        )
    tokens = [llm.tokenizer.decode([i]) for i in ids]
    device = llm.model.tok_embeddings.weight.device
    # The plots read the captured insides; of the output head, one position is enough.
    with capture(llm.model, attention_layers) as seen, torch.inference_mode():
        llm.model(torch.tensor([ids], device=device), last_only=True)
    return Pass(tokens, seen)
