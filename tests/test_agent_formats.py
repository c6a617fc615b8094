"""Tool-call formats: rendering a conversation with tools, and reading calls back with JSON.

The reference for SmolLM2's format is the format it was trained on, as its published
function-calling template writes it: tools as JSON inside <tools>…</tools> in the system turn,
calls as <tool_call>[{"name", "arguments"}]</tool_call>, results in a user turn inside
<tool_response>…</tool_response>. Parsing is checked against `json` itself.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from llmhood.agent.formats import (
    LLAMA3,
    SMOLLM2,
    ToolCall,
    calls_schema,
    from_openai_messages,
    get_format,
    parse_call_list,
    to_openai_message,
    tool_spec,
)
from llmhood.errors import LLMHoodError

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "celsius": {"type": "boolean"}},
            "required": ["city"],
        },
    },
}
ADD = {"name": "add", "description": "a + b", "parameters": {"type": "object", "properties": {
    "a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}  # fmt: skip


def test_tool_specs_from_openai_and_bare_dicts():
    assert tool_spec(WEATHER).name == "get_weather"
    assert tool_spec(ADD).parameters["required"] == ["a", "b"]
    with pytest.raises(LLMHoodError, match="name"):
        tool_spec({"type": "function", "function": {"description": "no name"}})
    with pytest.raises(LLMHoodError, match="must be a function"):
        tool_spec(42)


def test_smollm2_system_prompt_lists_the_tools_as_json():
    specs = [tool_spec(WEATHER), tool_spec(ADD)]
    prompt = SMOLLM2.system_prompt(specs)
    listing = re.search(r"<tools>(.*)</tools>", prompt, re.S).group(1)
    assert json.loads(listing) == [s.as_dict() for s in specs]
    assert "<tool_call>[]</tool_call>" in prompt  # the "no call" answer is taught


def test_conversation_with_calls_and_results_renders_in_smollm2_turns():
    call = ToolCall("add", {"a": 2, "b": 3.5}, id="call_1")
    messages = [
        {"role": "user", "content": "What is 2 + 3.5?"},
        to_openai_message([call]),
        {"role": "tool", "tool_call_id": "call_1", "content": "5.5"},
    ]
    out = SMOLLM2.messages(messages, [tool_spec(ADD)])
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[2]["content"].startswith("<tool_call>[") and out[2]["content"].endswith(
        "]</tool_call>"
    )
    assert SMOLLM2.parse(out[2]["content"])[0].arguments == {"a": 2, "b": 3.5}
    assert out[3]["content"] == "<tool_response>\n5.5\n</tool_response>"


def test_parallel_results_share_one_user_turn():
    calls = [ToolCall("add", {"a": 1, "b": 2}), ToolCall("add", {"a": 3, "b": 4})]
    messages = [{"role": "user", "content": "two sums"}, to_openai_message(calls),
                {"role": "tool", "content": "3"}, {"role": "tool", "content": "7"}]  # fmt: skip
    out = SMOLLM2.messages(messages, [tool_spec(ADD)])
    assert out[-1]["content"].count("<tool_response>") == 2
    assert len(SMOLLM2.parse(out[-2]["content"])) == 2


def test_parse_reads_json_not_python():
    calls = SMOLLM2.parse(
        '<tool_call>[{"name": "f", "arguments": {"x": true, "y": null}}]</tool_call>'
    )
    assert calls[0].arguments == {"x": True, "y": None}
    assert SMOLLM2.parse("<tool_call>[]</tool_call>") == []
    assert SMOLLM2.parse("The weather is nice.") is None  # prose is not a call
    assert SMOLLM2.parse('<tool_call>[{"name": "f", "arguments": {"x": 1}</tool_call>') is None
    # Code in the arguments stays a string: nothing is evaluated.
    calls = parse_call_list('[{"name": "f", "arguments": {"x": "__import__(\'os\').system(1)"}}]')
    assert calls[0].arguments["x"].startswith("__import__")


def test_llama3_single_call_form():
    call = ToolCall("add", {"a": 1, "b": 2})
    text = LLAMA3.render_calls([call])
    assert json.loads(text) == {"name": "add", "parameters": {"a": 1, "b": 2}}
    assert LLAMA3.parse(text)[0].arguments == {"a": 1, "b": 2}
    out = LLAMA3.messages([{"role": "user", "content": "x"}, {"role": "tool", "content": "3"}],
                          [tool_spec(ADD)])  # fmt: skip
    assert out[-1]["role"] == "ipython"


def test_openai_round_trip_and_bad_arguments():
    call = ToolCall("get_weather", {"city": "Paris"})
    message = to_openai_message([call])
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    back = from_openai_messages([message])[0]["tool_calls"][0]
    assert (back.name, back.arguments, back.id) == (call.name, call.arguments, call.id)
    broken = {"role": "assistant", "tool_calls": [{"id": "1", "type": "function",
              "function": {"name": "f", "arguments": "{not json"}}]}  # fmt: skip
    with pytest.raises(LLMHoodError, match="not JSON"):
        from_openai_messages([broken])
    with pytest.raises(LLMHoodError, match="role"):
        from_openai_messages(["hello"])
    with pytest.raises(LLMHoodError, match="Unknown tool-call format"):
        get_format("chatml")


def test_calls_schema_admits_exactly_valid_call_lists():
    schema = calls_schema([tool_spec(WEATHER), tool_spec(ADD)])
    valid = [[], [{"name": "add", "arguments": {"a": 1, "b": 2}}],
             [{"name": "get_weather", "arguments": {"city": "Oslo"}},
              {"name": "add", "arguments": {"a": 1, "b": 2}}]]  # fmt: skip
    for value in valid:
        jsonschema.validate(value, schema)
    invalid = [[{"name": "nope", "arguments": {}}], [{"name": "add", "arguments": {"a": 1}}],
               [{"name": "get_weather", "arguments": {"city": 3}}]]  # fmt: skip
    for value in invalid:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(value, schema)
