"""The relevance gate in front of a tool call (llmhood.agent.relevance).

These hand-written questions are the set its floor was chosen on: questions a tool serves,
and questions from other domains shown the same tools. The embeddings are MiniLM's
(llmhood.rag.bert, itself proven equal to sentence-transformers in tests/test_bert.py).
"""

from __future__ import annotations

import pytest

from llmhood.agent import relevance
from llmhood.agent.formats import ToolSpec

WEATHER = ToolSpec(
    "get_weather",
    "Get the current weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string", "description": "city name"}}},
)
CURRENCY = ToolSpec(
    "convert_currency",
    "Convert an amount between currencies.",
    {
        "type": "object",
        "properties": {
            "amount": {"type": "number"},
            "source": {"type": "string"},
            "target": {"type": "string"},
        },
    },
)
AREA = ToolSpec(
    "triangle_area",
    "Area of a triangle from its base and height.",
    {"type": "object", "properties": {"base": {"type": "number"}, "height": {"type": "number"}}},
)

FITTING = [
    (WEATHER, "What's the weather like in Berlin?"),
    (WEATHER, "Is it raining in Tokyo right now?"),
    (CURRENCY, "Convert 100 dollars to euros."),
    (CURRENCY, "How many yen is 50 GBP?"),
    (AREA, "Find the area of a triangle with base 10 and height 5."),
    (AREA, "Triangle: base 3 m, height 4 m. Area?"),
]
OTHER = [
    (WEATHER, "Who wrote Pride and Prejudice?"),
    (WEATHER, "Convert 100 dollars to euros."),
    (CURRENCY, "What's the weather like in Berlin?"),
    (CURRENCY, "Tell me a joke."),
    (AREA, "What is the capital of Peru?"),
    (AREA, "How do I bake bread?"),
    (WEATHER, "What is 2+2?"),
]


def test_tool_text_reads_names_as_words():
    text = relevance.tool_text(WEATHER)
    assert text.startswith("get weather: Get the current weather") and "city (city name)" in text


@pytest.mark.parametrize(("spec", "question"), FITTING)
def test_fitting_questions_pass_the_floor(spec, question):
    assert relevance.similarities(question, [spec])[0] >= relevance.FLOOR


@pytest.mark.parametrize(("spec", "question"), OTHER)
def test_other_domains_stay_below_it(spec, question):
    assert relevance.similarities(question, [spec])[0] < relevance.FLOOR


def test_the_last_user_message_is_the_question():
    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "second"}]  # fmt: skip
    assert relevance.last_user_text(messages) == "second"
    assert relevance.last_user_text([]) == ""
