"""A tool: a name, a description and a JSON Schema for its arguments, and usually a function.

    tool = Tool.from_function(get_weather)            # schema from hints and docstring
    tool = Tool.from_dict({"type": "function", "function": {...}})   # a schema alone
    tool.validate({"city": "Paris"})                  # checked, coerced, rebuilt: or raises
    tool.run({"city": "Paris"}, timeout=10)           # an Observation; never raises
    Toolbox([get_weather, calculator]).run("get_weather", {...})   # unknown names too

Whatever a model gets wrong comes back to it as an error Observation written for a small model
to read and correct (which tool names exist, which argument was wrong and what the schema
wants), and the loop goes on. Only mistakes in the caller's own code raise LLMHoodError.

Coercion is limited to what loses nothing: an integer where a float is declared becomes a
float, an integral float where an integer is (JSON Schema counts 3.0 as an integer) an int,
and arrays and objects become the declared tuple, set, Enum or dataclass. A string is never
read as a number: "3" for an integer means the model confused its fields, and saying so lets
it fix the call, where a silent conversion would hide it (and constrained decoding never
writes one).

A call runs in a daemon thread and is waited for `timeout` seconds. Python cannot stop a
thread, so a hung call is abandoned, not killed: it keeps its thread until it returns, and
being a daemon it does not hold up the interpreter's exit. Code that may truly never return,
or must not run in this process at all, belongs in the `python` sandbox (llmhood.agent.sandbox),
which runs in a separate process and is killed.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from llmhood.agent.schema import callable_name, from_json, function_schema, parameter_hints
from llmhood.errors import LLMHoodError

TIMEOUT = 30.0  # seconds a call may take by default
MAX_CONTENT = 8000  # characters of a result shown to the model: SmolLM2 reads 8192 tokens
VALIDATOR = jsonschema.Draft202012Validator


class InvalidArguments(LLMHoodError):
    """Arguments that do not match a tool's schema; the message is written for the model."""


@dataclass(frozen=True)
class Observation:
    """What a tool call gave back. `content` is the text the model reads; `value` the Python
    result (None on error); `error` None on success, else one of "unknown_tool",
    "invalid_arguments", "exception" or "timeout"."""

    tool: str
    arguments: Any
    content: str
    value: Any = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Tool:
    """A tool as a model sees it (name, description, parameters) and, where it can run, the
    function that runs it."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any] | None = None
    timeout: float = TIMEOUT
    types: dict[str, Any] = field(default_factory=dict, repr=False)  # parameter -> hint
    positional: tuple[str, ...] = ()  # positional-only parameters, passed by position

    @classmethod
    def from_function(
        cls, fn: Callable[..., Any], name: str | None = None, timeout: float = TIMEOUT
    ) -> Tool:
        spec = function_schema(fn, name)
        hints = parameter_hints(fn, spec["name"])
        positional = tuple(p.name for p in hints if p.kind is p.POSITIONAL_ONLY)
        types = {p.name: hint for p, hint in hints.items()}
        return cls(spec["name"], spec["description"], spec["parameters"], fn, timeout, types,
                   positional)  # fmt: skip

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], function: Callable[..., Any] | None = None) -> Tool:
        """From OpenAI's {"type": "function", "function": {...}} or a bare {"name",
        "description", "parameters"}; the schema is checked against JSON Schema's own."""
        if not isinstance(spec, Mapping):
            raise LLMHoodError(f"A tool must be a function or a dict, not {type(spec).__name__}.")
        inner = spec.get("function", spec) if spec.get("type") == "function" else spec
        name = inner.get("name")
        if not isinstance(name, str) or not name.strip():
            raise LLMHoodError(f"The tool {dict(spec)!r} has no name: give it a non-empty "
                               '"name" (inside "function" in the OpenAI form).')  # fmt: skip
        parameters = inner.get("parameters", {"type": "object", "properties": {}})
        try:
            VALIDATOR.check_schema(parameters)
        except jsonschema.SchemaError as e:
            raise LLMHoodError(f"The parameters of tool '{name}' are not a valid JSON Schema: "
                               f"{e.message} (at {path_of(e.path)}).") from e  # fmt: skip
        if parameters.get("type") != "object":
            raise LLMHoodError(f"The parameters of tool '{name}' must be a JSON Schema with "
                               '"type": "object" (arguments are passed by name).')  # fmt: skip
        description = inner.get("description") or ""
        return cls(name, description, dict(parameters), function)

    @classmethod
    def of(cls, tool: Tool | Callable[..., Any] | Mapping[str, Any]) -> Tool:
        """Whatever a user passes as a tool: a Tool, a function, or a dict."""
        if isinstance(tool, Tool):
            return tool
        if isinstance(tool, Mapping):
            return cls.from_dict(tool)
        if callable(tool):
            return cls.from_function(tool)
        raise LLMHoodError(f"A tool must be a function, a dict or a Tool, not {tool!r}.")

    def spec(self) -> dict[str, Any]:
        """The bare {"name", "description", "parameters"} form."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def openai(self) -> dict[str, Any]:
        return {"type": "function", "function": self.spec()}

    def validate(self, arguments: Any) -> dict[str, Any]:
        """The arguments checked against the schema and rebuilt into the parameters' Python
        types; InvalidArguments lists every problem, each at its path, then the schema."""
        problems = sorted(
            VALIDATOR(self.parameters).iter_errors(arguments), key=lambda e: list(map(str, e.path))
        )
        if problems:
            listed = "; ".join(f"{path_of(e.absolute_path)}: {e.message}" for e in problems)
            raise InvalidArguments(f"Invalid arguments for tool '{self.name}': {listed}. Call "
                                   f"it again with arguments matching its parameters: "
                                   f"{compact(self.parameters)}")  # fmt: skip
        return {k: from_json(v, self.types[k]) if k in self.types else v
                for k, v in arguments.items()}  # fmt: skip

    def run(self, arguments: Any, timeout: float | None = None) -> Observation:
        """Validate, call and report. A tool given as a schema alone cannot run: that is the
        caller's mistake, not the model's, so it raises."""
        if self.function is None:
            raise LLMHoodError(f"Tool '{self.name}' is a schema without a Python function, so it"
                               " can be offered to a model but not run. Build it with "
                               "Tool.from_function, or pass function= to from_dict.")  # fmt: skip
        start = time.perf_counter()
        try:
            checked = self.validate(arguments)
        except InvalidArguments as e:
            return Observation(self.name, arguments, str(e), error="invalid_arguments")
        limit = self.timeout if timeout is None else timeout
        done, outcome = call_in_thread(self.function, self.call_arguments(checked), limit)
        seconds = time.perf_counter() - start
        if not done:
            return Observation(self.name, arguments, f"Error: tool '{self.name}' did not finish "
                               f"within {limit:g} seconds and was abandoned. Try simpler "
                               "arguments, or answer without it.", error="timeout",
                               seconds=seconds)  # fmt: skip
        if isinstance(outcome, BaseException):
            return Observation(self.name, arguments, f"Error: tool '{self.name}' raised "
                               f"{type(outcome).__name__}: {outcome}", error="exception",
                               seconds=seconds)  # fmt: skip
        return Observation(self.name, arguments, render(outcome), outcome, seconds=seconds)

    def call_arguments(self, checked: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """(positional, keyword): positional-only parameters by position, up to the last one
        given; one left out before it takes its default."""
        given = [i for i, name in enumerate(self.positional) if name in checked]
        count = given[-1] + 1 if given else 0
        defaults = inspect.signature(self.function).parameters
        args = [checked.pop(name) if name in checked else defaults[name].default
                for name in self.positional[:count]]  # fmt: skip
        return args, checked


class Toolbox:
    """Tools by name: what a model's call is looked up in. Names are unique."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any] | Mapping[str, Any]]):
        self.tools: dict[str, Tool] = {}
        for tool in map(Tool.of, tools):
            if tool.name in self.tools:
                raise LLMHoodError(
                    f"Two tools are named '{tool.name}': a model could not tell "
                    "them apart. Rename one (Tool.from_function(fn, name=...))."
                )
            self.tools[tool.name] = tool

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.tools.values())

    def __len__(self) -> int:
        return len(self.tools)

    def __contains__(self, name: object) -> bool:
        return name in self.tools

    def __getitem__(self, name: str) -> Tool:
        return self.tools[name]

    def run(self, name: str, arguments: Any, timeout: float | None = None) -> Observation:
        if name not in self.tools:
            names = ", ".join(self.tools) or "none"
            return Observation(str(name), arguments, f"Error: there is no tool named {name!r}. "
                               f"The tools are: {names}. Call one of them, or answer "
                               "without a tool.", error="unknown_tool")  # fmt: skip
        return self.tools[name].run(arguments, timeout)


def call_in_thread(
    fn: Callable[..., Any], call: tuple[list[Any], dict[str, Any]], timeout: float
) -> tuple[bool, Any]:
    """(finished in time, result or the exception it raised)."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(fn(*call[0], **call[1]))
        except BaseException as e:  # the model must see even SystemExit, not lose the loop
            outcome.append(e)

    thread = threading.Thread(target=target, name=f"tool-{callable_name(fn)}", daemon=True)
    thread.start()
    thread.join(timeout)
    return (bool(outcome), outcome[0] if outcome else None)


def render(value: Any, limit: int = MAX_CONTENT) -> str:
    """A result as the model reads it: text as is, anything else as JSON, cut at `limit`."""
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, default=jsonable)
    if len(value) <= limit:
        return value
    return f"{value[:limit]}\n[cut: {len(value) - limit} more characters not shown]"


def jsonable(value: Any) -> Any:
    """What JSON writes for a value it has no form for, at any depth; str() as a last resort."""
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def path_of(path: Iterable[Any]) -> str:
    """A JSON location as a model would write it: city, dates[2].day; the arguments
    themselves are 'arguments'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "arguments"


def compact(schema: dict[str, Any]) -> str:
    return json.dumps(schema, ensure_ascii=False, separators=(",", ":"))
