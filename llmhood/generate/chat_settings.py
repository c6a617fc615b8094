"""The sampling settings a chat starts from: the model's own, or ones measured to loop least.

Greedy decoding suits a prompt to be continued, and fails a small chat model: the likeliest
continuation of a phrase it has just written is often the phrase again, until the token
limit. Many checkpoints say how they are meant to be sampled (a Hugging Face
`generation_config.json`, a GGUF's `general.sampling.*` keys); where one does, a chat
uses exactly that. Where it does not, as SmolLM2-135M-Instruct's GGUF does not, a chat
uses `MEASURED`: of the settings `llmhood experiment chat-loops` compares, the one whose
replies looped least without getting facts wrong more often than greedy decoding (the
README has the table). Every setting can still be overridden
per call, and greedy is `temperature=0`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from llmhood.errors import LLMHoodError
from llmhood.generate.sampling import SamplingParams

# The sampling fields a checkpoint may recommend (SamplingParams' names), as people read them.
LABELS = {
    "temperature": "temperature",
    "top_k": "top-k",
    "top_p": "top-p",
    "min_p": "min-p",
    "repetition_penalty": "repetition penalty",
}
FIELDS = tuple(LABELS)
# Of the settings `llmhood experiment chat-loops` compares, the one that looped least among
# those that got the factual answers at least as often as greedy decoding (README, "Chat").
MEASURED: dict[str, float] = {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1}
MEASURED_SOURCE = "llmhood's defaults, measured to loop least by `llmhood experiment chat-loops`"


@dataclass(frozen=True)
class ChatSettings:
    """Sampling options for chat, and where they come from (for `--help` and `info`)."""

    options: dict[str, float] = field(default_factory=lambda: dict(MEASURED))
    source: str = MEASURED_SOURCE

    def describe(self) -> str:
        shown = ", ".join(f"{LABELS[k]} {v:g}" for k, v in self.options.items())
        return f"{shown or 'greedy'} ({self.source})"


def chat_settings(recommended: Mapping[str, float], source: str) -> ChatSettings:
    """The checkpoint's recommended settings (`source` names the file) when it has any that
    are valid, else MEASURED. A recommendation is taken whole, never mixed with MEASURED:
    its author chose those values together."""
    options = {k: recommended[k] for k in FIELDS if recommended.get(k) is not None}
    if not options:
        return ChatSettings()
    try:
        SamplingParams(**options).validate()
    except LLMHoodError:
        return ChatSettings(source=f"{MEASURED_SOURCE}; {source} recommends invalid values")
    return ChatSettings(options, f"recommended by {source}")
