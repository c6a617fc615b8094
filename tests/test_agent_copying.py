"""Choosing string arguments among what the question spells (llmhood.agent.copying),
by whole-value likelihoods (llmhood.agent.likelihood).

The likelihoods are checked against the plain reference: one forward pass over the prompt
and the continuation together, without a cache, and its log-softmax read at each
continuation token. The choice is then checked to be the argmax of those reference scores,
so it is what "the value the model finds likeliest" means, on a tiny random model whose
preferences are arbitrary. The real SmolLM2 shows the effect the module exists for.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from llmhood import agent
from llmhood.agent import bfcl, copying
from llmhood.agent.call import prompt_for
from llmhood.agent.formats import SMOLLM2, tool_spec
from llmhood.agent.likelihood import continuation_logprobs

# float32 logits from a cached, batched forward against one full forward: the same sums in
# another order, well under 1e-3 nats on a 2-layer model.
NATS = 1e-3


def reference_logprobs(llm, prompt: str, continuation: str) -> list[float]:
    """log P of each continuation token, from one uncached forward over prompt + continuation."""
    prompt_ids = llm.tokenizer.encode(prompt)
    tail = llm.tokenizer.encode(continuation)
    with torch.inference_mode():
        logits = llm.model(torch.tensor([prompt_ids + tail]))[0].log_softmax(-1)
    return [float(logits[len(prompt_ids) - 1 + j, t]) for j, t in enumerate(tail)]


def test_spans_are_runs_of_words_without_stopword_ends():
    found = copying.spans("Find the price of a used Gibson Les Paul, in Chicago.")
    assert {"Gibson Les Paul", "Chicago", "price", "used Gibson", "Find"} <= set(found)
    assert not [s for s in found if s.split()[0].lower() in copying.STOPWORDS]
    assert not [s for s in found if s.split()[-1].lower() in copying.STOPWORDS]
    assert "Paul," not in found and "Chicago." not in found  # punctuation trimmed off the ends
    assert all(len(s.split()) <= copying.MAX_WORDS for s in found)
    assert len(found) == len(set(found))


def test_choices_follow_the_schema():
    texts = ["Oslo", "ab"]
    assert copying.choices("Lima", {"type": "string"}, texts) == ["Oslo", "ab"]
    assert copying.choices("Lima", {"type": "string", "minLength": 3}, texts) == ["Oslo"]
    for schema in ({"enum": ["Oslo"]}, {"type": "string", "pattern": "^O"},
                   {"type": "string", "format": "date"}, {"type": "integer"}, None):  # fmt: skip
        assert copying.choices("Lima", schema, texts) == []
    assert copying.choices(3, {"type": "integer"}, texts) == []


def test_continuation_logprobs_equal_one_full_forward(tiny_tool_llm):
    prompt = "The weather in Oslo is"
    continuations = [" cold", " sunny and warm today", "!", " 12 degrees"]
    scores = continuation_logprobs(tiny_tool_llm, prompt, continuations)
    for got, continuation in zip(scores, continuations, strict=True):
        want = reference_logprobs(tiny_tool_llm, prompt, continuation)
        assert got == pytest.approx(want, abs=NATS)
    short = continuation_logprobs(tiny_tool_llm, prompt, continuations, shortlist=2)
    firsts = [s[0] for s in scores]
    kept = sorted(range(4), key=lambda k: -firsts[k])[:2]
    for k in range(4):
        if k in kept:
            assert short[k] == pytest.approx(scores[k], abs=NATS)
        else:
            assert short[k] is None
    last = min(range(4), key=lambda k: firsts[k])  # the least likely start, asked for anyway
    forced = continuation_logprobs(tiny_tool_llm, prompt, continuations, shortlist=1, always=[last])
    assert forced[last] == pytest.approx(scores[last], abs=NATS)
    assert sum(s is not None for s in forced) == 2


def test_best_value_is_the_likeliest_whole_value(tiny_tool_llm):
    prefix = '[\n{"name": "get_weather", "arguments": {"city": '
    options = ["Lima", "Oslo", "New York", "Reykjavik"]
    choice = copying.best_value(tiny_tool_llm, prefix, options[0], options[1:])
    totals = [sum(reference_logprobs(tiny_tool_llm, prefix + '"', o + '"')) for o in options]
    assert choice == options[max(range(4), key=totals.__getitem__)]


def test_copy_values_rewrites_only_free_values_and_keeps_the_layout(tiny_tool_llm):
    schema = {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"enum": ["c", "f"]}, "days": {"type": "integer"},
        "rain": {"type": "boolean"}}, "required": ["city"]}  # fmt: skip
    question = "Weather in Bergen or Tromso for 3 days, in c?"
    calls = [{"name": "w", "arguments": {"city": "Lima", "unit": "f", "days": 9, "rain": True}},
             {"name": "w", "arguments": {"city": "Oslo"}}]  # fmt: skip
    text = ",\n".join(copying.dumps(c) for c in calls) + "\n]"
    out = copying.copy_values(tiny_tool_llm, "<tool_call>[\n", text, {"w": schema}, question)
    got = json.loads("[" + out)
    assert out.endswith("\n]") and len(got) == 2
    for before, after in zip(calls, got, strict=True):
        jsonschema.validate(after["arguments"], schema)
        for key, value in after["arguments"].items():
            if key == "city":
                assert value in [before["arguments"][key], *copying.spans(question)]
            else:
                assert value == before["arguments"][key]  # numbers are left as written
    # A reply not in the regex's layout is left as it is.
    odd = '{"name": "w",  "arguments": {"city": "Lima"}}\n]'
    assert copying.copy_values(tiny_tool_llm, "", odd, {"w": schema}, question) == odd


def test_smollm2_copies_the_name_it_would_misspell(smollm2):
    """The case in the module docstring: token by token, the quantized model writes
    "Lionelino DiCaprio"; whole, the model finds the question's spelling far likelier."""
    question = next(q for q in bfcl.load("simple_python") if q.id == "simple_python_92")
    calls = agent.call_tools(smollm2, question.messages, question.tools)
    assert calls[0].arguments["actor_name"] == "Leonardo DiCaprio"
    specs = [tool_spec(t) for t in question.tools]
    prefix = prompt_for(smollm2, question.messages, specs, SMOLLM2) + SMOLLM2.call_prefix
    prefix += f'{{"name": "{specs[0].name}", "arguments": {{"actor_name": "'
    right, wrong = continuation_logprobs(
        smollm2, prefix, ['Leonardo DiCaprio", ', 'Lionelino DiCaprio", ']
    )
    assert sum(right) > sum(wrong) + 1.0  # measured: about 3 nats apart
