"""How a conversation with tools is written for a model, and how its calls are read back.

A model calls tools in the format it was trained on, and nothing else works as well. Three
formats are written here:

* **SmolLM2** (`SMOLLM2`, the default). SmolLM2-Instruct was trained to read the tools as JSON
  inside `<tools>…</tools>` in the system prompt and to answer with
  `<tool_call>[{"name": …, "arguments": {…}}, …]</tool_call>`, or `[]` when no tool fits;
  results come back in a user turn wrapped in `<tool_response>…</tool_response>`. Its GGUF's
  chat template knows nothing of tools, so the system prompt and turns are rendered here and
  then through the model's own template, which adds the `<|im_start|>` framing.
* **Llama 3.x** (`LLAMA3`): the tools as JSON in the system prompt, a call as one JSON object
  `{"name": …, "parameters": {…}}` ending the turn, results in an `ipython` turn.
* **OpenAI messages** (`to_openai_message`, `from_openai_messages`): the `tool_calls` /
  `role: "tool"` form of the chat-completions API, which callers (and the server) speak; it is
  translated into the model's format before rendering.

Calls are read with a real JSON parser, never `eval`: `true`, `null` and nested objects mean
what JSON says, and text that is not a call is simply not a call.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llmhood.errors import LLMHoodError

SEPARATORS = (", ", ": ")  # json.dumps's layout, which the model's own calls follow


def new_call_id() -> str:
    """An id for a call, as OpenAI's API gives each one, so results can name their call."""
    return f"call_{uuid.uuid4().hex[:12]}"


@dataclass
class ToolCall:
    """One call the model asked for: a tool's name and its arguments, as parsed JSON."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_call_id)


@dataclass(frozen=True)
class ToolSpec:
    """What the model is told about a tool: OpenAI's function object."""

    name: str
    description: str
    parameters: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


def tool_spec(tool: Any) -> ToolSpec:
    """What the model is told about `tool`: an OpenAI tool dict ({"type": "function",
    "function": {...}}), a bare function dict, a Python function or a llmhood Tool."""
    if isinstance(tool, ToolSpec):
        return tool
    from llmhood.agent.tools import Tool

    described = Tool.of(tool)
    return ToolSpec(described.name, described.description, described.parameters)


def calls_schema(tools: Sequence[ToolSpec]) -> dict[str, Any]:
    """The JSON Schema of a list of calls: each names one of `tools` and carries arguments
    valid for it; the empty list, "no tool fits", is always allowed."""
    choices = [
        {
            "type": "object",
            "properties": {"name": {"const": spec.name}, "arguments": spec.parameters},
            "required": ["name", "arguments"],
        }
        for spec in tools
    ]
    items = choices[0] if len(choices) == 1 else {"anyOf": choices}
    return {"type": "array", "items": items}


def parse_call_list(text: str) -> list[ToolCall] | None:
    """Calls from a JSON list of {"name", "arguments"} objects; None when `text` is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        return None
    calls = []
    for item in data:
        if not (isinstance(item, dict) and isinstance(item.get("name"), str)):
            return None
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):  # some models write the arguments as a JSON string
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return None
        if not isinstance(arguments, dict):
            return None
        calls.append(ToolCall(item["name"], arguments))
    return calls


@dataclass(frozen=True)
class ToolFormat:
    """One model family's way of writing tools, calls and results.

    `messages` turns an OpenAI-style conversation (tool_calls, role "tool") into plain
    role/content messages the model's chat template renders; `call_prefix` is what the
    assistant's reply starts with when it calls (constrained decoding writes it into the
    prompt and generates the rest); `parse` reads a reply back.
    """

    name: str
    call_prefix: str  # what a call reply starts with
    call_suffix: str  # what closes it
    tool_role: str  # the role tool results are sent back in
    result_open: str
    result_close: str
    instructions: str  # the system prompt around the tool list: {tools} marks where it goes

    def system_prompt(self, tools: Sequence[Any], system: str | None = None) -> str:
        listing = json.dumps([tool_spec(t).as_dict() for t in tools], ensure_ascii=False)
        prompt = self.instructions.replace("{tools}", listing)
        return prompt if not system else f"{system}\n\n{prompt}"

    def render_calls(self, calls: Sequence[ToolCall]) -> str:
        if self is LLAMA3 and len(calls) == 1:
            call = calls[0]
            return json.dumps({"name": call.name, "parameters": call.arguments})
        body = ", ".join(
            json.dumps({"name": c.name, "arguments": c.arguments}, ensure_ascii=False)
            for c in calls
        )
        return f"{self.call_prefix}{body}{self.call_suffix}"

    def messages(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[ToolSpec]
    ) -> list[dict[str, str]]:
        """The conversation as role/content messages, with the tools in the system prompt."""
        conversation = from_openai_messages(messages)
        system = None
        if conversation and conversation[0]["role"] == "system":
            system = conversation.pop(0)["content"]
        out = [{"role": "system", "content": self.system_prompt(tools, system)}] if tools else []
        if not tools and system:
            out.append({"role": "system", "content": system})
        for message in conversation:
            if message["role"] == "assistant" and message.get("tool_calls"):
                text = self.render_calls(message["tool_calls"])
                out.append({"role": "assistant", "content": text})
            elif message["role"] == "tool":
                content = f"{self.result_open}{message['content']}{self.result_close}"
                if out and out[-1]["role"] == self.tool_role and self.tool_role == "user":
                    out[-1]["content"] += "\n" + content  # parallel results in one turn
                else:
                    out.append({"role": self.tool_role, "content": content})
            else:
                out.append({"role": message["role"], "content": message["content"]})
        return out

    def parse(self, reply: str) -> list[ToolCall] | None:
        """The calls in a reply, [] for an explicit "no call", None for prose (not a call)."""
        text = reply.strip()
        if self.call_prefix.strip() and text.startswith(self.call_prefix.strip()):
            start = len(self.call_prefix.strip()) - 1  # keep the "[" the prefix ends with
            end = text.find(self.call_suffix.strip(), start)
            body = text[start:] if end < 0 else text[start : end + 1]
            return parse_call_list(body)
        if text.startswith(("[", "{")):
            return parse_call_list(text)
        return None


SMOLLM2 = ToolFormat(
    name="smollm2",
    call_prefix="<tool_call>[\n",  # the newline is SmolLM2's own habit (79% of its weight)
    call_suffix="]</tool_call>",
    tool_role="user",
    result_open="<tool_response>\n",
    result_close="\n</tool_response>",
    instructions=(
        "You compose function calls. Given a question and a set of functions, answer with "
        "one or more calls that achieve the goal. If no function fits the question, or the "
        "question does not give the values a function needs, make no call.\n"
        "The available tools:\n<tools>{tools}</tools>\n"
        "Reply with the calls only, in exactly this form, with arguments of the right types:\n"
        '<tool_call>[\n{"name": "function_name", "arguments": {"argument": "value"}}\n'
        "]</tool_call>\n"
        "If no call is needed, reply with the empty list: <tool_call>[]</tool_call>"
    ),
)

LLAMA3 = ToolFormat(
    name="llama3",
    call_prefix="[",
    call_suffix="]",
    tool_role="ipython",
    result_open="",
    result_close="",
    instructions=(
        "You have access to the following functions. To call one, reply with only a JSON "
        'object of the form {"name": function name, "parameters": {argument: value}}; '
        "answer in plain text when no function is needed.\n\n{tools}"
    ),
)

FORMATS = {f.name: f for f in (SMOLLM2, LLAMA3)}


def get_format(name: str) -> ToolFormat:
    if name not in FORMATS:
        raise LLMHoodError(
            f"Unknown tool-call format {name!r}: choose one of {', '.join(sorted(FORMATS))}."
        )
    return FORMATS[name]


def to_openai_message(calls: Sequence[ToolCall], content: str | None = None) -> dict[str, Any]:
    """An assistant message in the chat-completions form, arguments as a JSON string."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in calls
        ]
    return message


def from_openai_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with `tool_calls` turned into ToolCall lists; everything else as it was.

    Accepts OpenAI's form (function.arguments a JSON string) and ToolCall objects alike, and
    checks what a model cannot render: a role, and content that is text.
    """
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise LLMHoodError(
                f"Message {i} is {message!r}: each message is a dict with a 'role' and "
                "'content', as in OpenAI's chat API."
            )
        calls = []
        for raw in message.get("tool_calls") or []:
            if isinstance(raw, ToolCall):
                calls.append(raw)
                continue
            function = raw.get("function", raw)
            arguments = function.get("arguments", {})
            if isinstance(arguments, str):
                try:
                    arguments = json.loads(arguments) if arguments.strip() else {}
                except json.JSONDecodeError as e:
                    raise LLMHoodError(
                        f"Message {i} has a tool call to {function.get('name')!r} whose "
                        f"arguments are not JSON ({e}): write them as a JSON object."
                    ) from None
            calls.append(ToolCall(function["name"], arguments, raw.get("id") or new_call_id()))
        content = message.get("content")
        if isinstance(content, list):  # OpenAI's content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if content is not None and not isinstance(content, str):
            content = json.dumps(content, ensure_ascii=False)
        entry: dict[str, Any] = {"role": message["role"], "content": content or ""}
        if calls:
            entry["tool_calls"] = calls
        out.append(entry)
    return out
