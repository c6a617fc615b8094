"""Does any tool fit the question? A gate in front of the model's own choice.

Shown a list of tools, SmolLM2-135M calls one whether or not it fits: the log-odds of its
first token, "no call" against "a call", barely differ between questions a tool serves and
questions it does not (measured on our own questions: -5.9 to -7.3 for fitting ones, -4.4 to
-6.9 for the others). The question's meaning against each tool's description separates them
far better, so the decision to call starts with a sentence-embedding similarity: the RAG
issue's MiniLM encoder (llmhood.rag.bert), cosine between the question and each tool's name,
description and parameter descriptions. Below `floor` for every tool, the turn is "no call"
without asking the model. The floor was set on hand-written questions of our own
(tests/test_agent_relevance.py), never on a benchmark's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llmhood.agent.formats import ToolSpec

FLOOR = 0.2  # cosine below which no tool is taken to fit (see the module docstring)


def tool_text(spec: ToolSpec) -> str:
    """What a tool is about, in words: `get_weather` reads as "get weather"."""
    properties = spec.parameters.get("properties", {}) if isinstance(spec.parameters, dict) else {}
    arguments = ", ".join(
        f"{name} ({value.get('description', '')})" if isinstance(value, dict) else name
        for name, value in properties.items()
    )
    return f"{spec.name.replace('_', ' ')}: {spec.description} {arguments}".strip()


def similarities(question: str, specs: Sequence[ToolSpec], embedder: Any = None) -> np.ndarray:
    """(tools,) cosine between the question and each tool's text."""
    if embedder is None:
        from llmhood.rag.embedder import load_embedder

        embedder = load_embedder("minilm")
    vectors = embedder.embed([question, *(tool_text(s) for s in specs)])  # (1 + tools, dim)
    return vectors[1:] @ vectors[0]  # normalised already: dot products are cosines


def last_user_text(messages: Sequence[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""
