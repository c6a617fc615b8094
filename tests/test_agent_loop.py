"""`agent.call_tools` and `agent.Agent`.

A tiny random model makes arbitrary choices, which is what tests constrained decoding best:
whatever it picks, every call must name a given tool and validate against that tool's schema
(checked with `jsonschema`, the reference), at greedy and at high-temperature sampling. The
loop's own logic (results going back, errors as observations, max_steps, the memory budget)
runs against a scripted model whose replies are known. The real SmolLM2 answers one task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Literal

import jsonschema
import pytest

from llmhood import agent, cli
from llmhood.agent.calculator import calculator
from llmhood.agent.formats import SMOLLM2, tool_spec
from llmhood.errors import LLMHoodError


class Unit(Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


def get_weather(city: str, unit: Unit = Unit.CELSIUS, days: int = 1) -> str:
    """The weather forecast for a city.

    Args:
        city: the city's name
        unit: the temperature scale
        days: how many days ahead, 1 to 7
    """
    return f"{city}: sunny, {days} day(s), in {unit.value}"


@dataclass
class Point:
    x: float
    y: float


def distance(a: Point, b: Point, metric: Literal["euclid", "manhattan"] = "euclid") -> float:
    """The distance between two points.

    Args:
        a: the first point
        b: the second point
        metric: which distance
    """
    if metric == "manhattan":
        return abs(a.x - b.x) + abs(a.y - b.y)
    return ((a.x - b.x) ** 2 + (a.y - b.y) ** 2) ** 0.5


def tags(words: list[str], limit: int | None = None) -> str:
    """Join words as tags.

    Args:
        words: the words
        limit: at most this many
    """
    return ",".join(words[:limit])


TOOLS = [get_weather, distance, tags]


@pytest.mark.parametrize("temperature", [0.0, 1.5])
def test_constrained_calls_always_validate(tiny_tool_llm, temperature):
    specs = {tool_spec(t).name: tool_spec(t) for t in TOOLS}
    questions = ["Weather in Oslo?", "How far is (1,2) from (4,6)?", "Tag these: a b c", "Hi"]
    for seed, question in enumerate(questions):
        turn = agent.decide(tiny_tool_llm, [{"role": "user", "content": question}], TOOLS,
                            temperature=temperature, seed=seed, max_new_tokens=200)  # fmt: skip
        if not turn.complete:
            continue  # a random model may ramble to the limit inside a string: reported, below
        assert turn.calls is not None, turn.raw
        for call in turn.calls:
            jsonschema.validate(call.arguments, specs[call.name].parameters)
        assert turn.errors == []


def test_a_cut_off_reply_is_reported_not_passed_off(tiny_tool_llm):
    turn = agent.decide(tiny_tool_llm, [{"role": "user", "content": "Tag these"}], [tags],
                        no_call_bias=-1e9, temperature=2.0, seed=3, max_new_tokens=3)  # fmt: skip
    assert not turn.complete and not turn.valid
    assert any("cut off" in e for e in turn.errors)


def test_call_tools_takes_openai_and_bare_tool_dicts(tiny_tool_llm):
    spec = tool_spec(get_weather).as_dict()
    for tools in ([{"type": "function", "function": spec}], [spec]):
        calls = agent.call_tools(tiny_tool_llm, [{"role": "user", "content": "Oslo?"}], tools)
        assert isinstance(calls, list)
        for call in calls:
            assert isinstance(call, agent.ToolCall) and call.name == "get_weather"
            jsonschema.validate(call.arguments, spec["parameters"])


def test_no_call_bias_decides_between_nothing_and_a_call(tiny_tool_llm):
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    assert agent.call_tools(tiny_tool_llm, messages, TOOLS, no_call_bias=1e9) == []
    turn = agent.decide(tiny_tool_llm, messages, TOOLS, no_call_bias=-1e9, max_new_tokens=40)
    assert turn.raw.startswith('<tool_call>[\n{"name": "')  # a call, cut off or not


def test_bad_tools_say_what_is_wrong(tiny_tool_llm):
    messages = [{"role": "user", "content": "x"}]
    with pytest.raises(LLMHoodError, match="at least one tool"):
        agent.call_tools(tiny_tool_llm, messages, [])
    with pytest.raises(LLMHoodError, match="share a name"):
        agent.call_tools(tiny_tool_llm, messages, [get_weather, get_weather])
    for option in ("json_schema", "regex", "grammar"):
        with pytest.raises(LLMHoodError, match=f"{option} cannot be given to a tool-calling"):
            agent.call_tools(tiny_tool_llm, messages, [get_weather], **{option: "x"})


@dataclass
class Generated:
    text: str
    prompt_tokens: int = 10
    token_ids: tuple = ()
    constraint_complete: bool | None = None


class ScriptedLLM:
    """Replies from a script, in order, whatever the prompt (unconstrained turns only)."""

    def __init__(self, tiny, replies):
        self.tokenizer = tiny.tokenizer
        self.chat_prompt = tiny.chat_prompt
        self.replies = list(replies)
        self.prompts = []

    def generate(self, prompt, **options):
        self.prompts.append(prompt)
        return [Generated(self.replies.pop(0))]

    def chat(self, messages, **options):
        self.prompts.append(self.chat_prompt(messages))
        return self.replies.pop(0)


def call_text(*calls):
    return SMOLLM2.render_calls([agent.ToolCall(n, a) for n, a in calls])


def test_the_loop_runs_calls_and_feeds_results_back(tiny_tool_llm, tmp_path):
    script = [
        call_text(("calculator", {"expression": "17.5% of 2,340"}), ("nope", {})),
        call_text(("calculator", {"expression": "1/0"})),
        "<tool_call>[]</tool_call>",
        "It is 409.5.",
    ]
    llm = ScriptedLLM(tiny_tool_llm, script)
    lines = []
    bot = agent.Agent(llm, tools=[calculator], constrained=False, trace=tmp_path / "t.jsonl",
                      transcript=lines.append)  # fmt: skip
    result = bot.run("What is 17.5% of 2,340?")
    assert result.text == "It is 409.5." and result.stopped == "answer"
    first, second = result.steps[0].results, result.steps[1].results
    assert first[0].output == "409.5" and first[0].ok
    assert not first[1].ok and "no tool named 'nope'" in first[1].output
    assert not second[0].ok  # division by zero: an error observation, the loop went on
    assert "<tool_response>\n409.5\n</tool_response>" in llm.prompts[1]
    records = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r.get("step") for r in records] == [1, 2, 3, None]
    assert records[0]["results"][0]["output"] == "409.5" and records[-1]["stopped"] == "answer"
    assert any("409.5" in line for line in lines)


def test_max_steps_is_reported(tiny_tool_llm):
    calls = [call_text(("calculator", {"expression": f"{i} + 1"})) for i in range(3)]
    llm = ScriptedLLM(tiny_tool_llm, [*calls, "I ran out of steps."])
    result = agent.Agent(llm, tools=[calculator], constrained=False, max_steps=3).run("count")
    assert result.stopped == "max_steps" and len(result.steps) == 3
    assert [r.output for r in result.steps[-1].results] == ["3"]


def test_a_repeated_call_ends_the_calling(tiny_tool_llm):
    same = call_text(("calculator", {"expression": "2 * 3"}))
    llm = ScriptedLLM(tiny_tool_llm, [same, same, "Six."])
    result = agent.Agent(llm, tools=[calculator], constrained=False).run("2 times 3?")
    assert result.stopped == "answer" and len(result.calls) == 1 and result.text == "Six."


def test_the_memory_budget_drops_old_messages_and_says_so(tiny_tool_llm):
    script = []
    for i in range(6):
        script.append(call_text(("calculator", {"expression": f"{i} * 1000"})))
    llm = ScriptedLLM(tiny_tool_llm, [*script, "[]", "Done."])
    bot = agent.Agent(llm, tools=[calculator], constrained=False, max_steps=8, memory_tokens=600)
    bot.system = "x " * 200  # a long system prompt fills the budget fast
    result = bot.run("multiply")
    assert result.dropped_messages > 0
    assert "were dropped to keep the conversation" in llm.prompts[-2]
    assert "multiply" in llm.prompts[-2]  # the task itself is never dropped


def test_agent_arguments_are_checked(tiny_tool_llm):
    with pytest.raises(LLMHoodError, match="max_steps"):
        agent.Agent(tiny_tool_llm, tools=[calculator], max_steps=0)
    with pytest.raises(LLMHoodError, match="at least one tool"):
        agent.Agent(tiny_tool_llm, tools=[])
    with pytest.raises(LLMHoodError, match="empty"):
        agent.Agent(tiny_tool_llm, tools=[calculator]).run("  ")


def test_cli_checks_tools_before_loading(tmp_path, capsys):
    assert cli.main(["agent", "run", "x", "--tools", str(tmp_path / "none.py")]) == 1
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x):\n    return x\n")
    assert cli.main(["agent", "run", "x", "--tools", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "'x'" in err and "f" in err  # names the parameter that has no type
    assert cli.main(["agent", "run", "x", "--builtins", "shell"]) == 1
    assert "Unknown built-in" in capsys.readouterr().err


@pytest.mark.real
def test_real_model_uses_the_calculator(smollm2, tmp_path):
    bot = agent.Agent(smollm2, tools=[calculator], trace=tmp_path / "t.jsonl")
    result = bot.run("What is 17.5% of 2,340?")
    assert result.calls and result.calls[0].name == "calculator"
    assert result.steps[0].results[0].output == "409.5"  # 0.175 × 2340, by the closed form
    assert "409.5" in result.text


def test_a_repeated_call_ends_the_list():
    """A small model that repeats a call repeats it to the token limit: the fill stops at the
    first call equal to an earlier one, drops it and closes the list, reading no further."""
    from llmhood.agent.call import CallReader, _fill

    head = '{"name": "play", "arguments": '
    pieces = ['{"artist": "A"}}', ", ", head, '{"artist": "B"}}', ",\n", head,
              '{"artist": "A"}}', ", ", head, '{"artist": "B"}}', "]"]  # fmt: skip
    read = []

    class Streams:
        def stream(self, prompt, **options):
            assert prompt.endswith(head) and options["regex"] == "R"
            for piece in pieces:
                read.append(piece)
                yield piece

    text, complete = _fill(Streams(), "<tool_call>[\n", head, "R", {})
    assert complete and len(read) == 7  # stopped once the third call was whole
    assert json.loads("[" + head + text) == [
        {"name": "play", "arguments": {"artist": "A"}},
        {"name": "play", "arguments": {"artist": "B"}},
    ]
    reader = CallReader()  # a call is read only when whole, and only once
    assert reader.repeat_at('[{"a": 1}, {"a"') is None and len(reader.calls) == 1
    assert reader.repeat_at('[{"a": 1}, {"a": 2}, {"a": 1}') == len('[{"a": 1}, {"a": 2}')
    pieces[:] = ['{"artist": "A"}}', ", ", head, '{"artist": "B', "BBBB"]  # cut off
    read.clear()
    text, complete = _fill(Streams(), "", head, "R", {})
    assert not complete and len(read) == len(pieces) and text == "".join(pieces)


def test_the_retry_bounds_every_value():
    """The retry after a reply ran to the token limit writes under `bounded(schema)` and
    BOUNDED_DIGITS: what was valid and short stays valid, and a long string, a long list, a
    big or deep free-form object and a long number are refused, by jsonschema (where a schema
    says it) and by the retry's own automaton."""
    from llmhood.agent.call import (
        BOUNDED_DIGITS,
        BOUNDED_ITEMS,
        BOUNDED_STRING,
        SEPARATORS,
        _rest_regex,
        bounded,
    )
    from llmhood.agent.formats import ToolSpec
    from llmhood.generate.constrain.regex import compile_regex

    schema = {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"enum": ["c", "f"]}, "n": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}}, "extra": {"type": "object"}},
        "required": ["city"]}  # fmt: skip
    short = bounded(schema)
    head = '{"name": "f", "arguments": '
    dfa = compile_regex(_rest_regex(head, [ToolSpec("f", "", schema)], short=True))

    def written(arguments):
        return (json.dumps(arguments, separators=SEPARATORS) + "}\n]").encode()

    long = "x" * (BOUNDED_STRING + 1)
    fine = {"city": "Oslo", "unit": "c", "n": -12.25, "tags": ["a"] * BOUNDED_ITEMS,
            "extra": {"k": 1.5}}  # fmt: skip
    too_much = [{"city": long}, {"city": "x", "tags": ["a"] * (BOUNDED_ITEMS + 1)},
                {"city": "x", "extra": {str(i): i for i in range(BOUNDED_ITEMS + 1)}},
                {"city": "x", "extra": {"k": {"deep": 1}}}, {"city": "x", "extra": {long: 1}},
                {"city": "x", "extra": {"k": long}}]  # fmt: skip
    jsonschema.validate(fine, short)
    assert dfa.matches(written(fine))
    for document in too_much:
        jsonschema.validate(document, schema)  # valid before, refused after
        assert not jsonschema.Draft202012Validator(short).is_valid(document), document
        assert not dfa.matches(written(document)), document
    assert not dfa.matches(written({"city": "x", "n": 10**BOUNDED_DIGITS}))
    assert not dfa.matches(b'{"city": "x", "n": 1e5}}\n]')  # no exponent
