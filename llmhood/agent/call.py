"""One model turn that may call tools: `call_tools`, and `decide`, which also says how it went.

Small models asked for a call write prose, broken JSON or tools that do not exist. With
`constrained=True` (the default) a turn has two parts:

1. **Choose.** After the call format's opening (`<tool_call>[` and the newline SmolLM2 writes
   there, llmhood.agent.formats), the candidates are "no call" (`]`) and a call to each tool
   (`{"name": "<tool>"`). Each is scored by the model's log-probability of its whole text, from
   one prefill of the prompt. Token by token, the choice of a name would fall to its first token
   alone: SmolLM2 asked about the weather puts its weight on `weather`, which no tool name
   starts with, and the rest is spread over `get` and `calc` nearly at random. Whole names do
   not have this problem. The first token barely tells fitting questions from others, so a
   question that fits no tool by meaning is "no call" before the model is asked
   (llmhood.agent.relevance); `no_call_bias`, added to the log-probability of "no call", is a
   further knob (default 0).
2. **Fill.** The chosen call's arguments, and any further calls (parallel calls), are generated
   under a regular expression built from the schemas (llmhood.generate.constrain), so every
   reply parses and validates by construction. A small model sometimes repeats itself inside
   a string, or calls the same tool again and again, until the token limit; the turn is then
   written once more with every string, list and the number of calls bounded, so that it ends.
3. **Copy.** Each free-text string argument is chosen again, whole, among the value written
   and the question's spans, by the model's own likelihood (llmhood.agent.copying): greedy
   decoding picks each token well and a copied name badly.

Unconstrained, the reply is generated freely and parsed with a JSON parser; prose and broken
JSON are "not a call".
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import jsonschema

from llmhood.agent import copying, relevance
from llmhood.agent.formats import (
    SEPARATORS,
    SMOLLM2,
    ToolCall,
    ToolFormat,
    ToolSpec,
    calls_schema,
    parse_call_list,
    tool_spec,
)
from llmhood.agent.likelihood import continuation_logprobs
from llmhood.errors import LLMHoodError
from llmhood.generate.constrain.json_schema import schema_to_regex
from llmhood.llm import IncompleteConstraint

# Added to the log-probability of "no call" when choosing (see the module docstring).
NO_CALL_BIAS = 0.0
MAX_CALL_TOKENS = 384  # a reply holding a few calls with their arguments
BOUNDED_STRING = 32  # the retry's bound on a string's characters (`bounded`)
BOUNDED_ITEMS = 4  # and on a list's or a map's items, and the calls of one turn
BOUNDED_DIGITS = 12  # and numbers: within ±(10**12 - 1), 12 decimals at most


@dataclass
class Turn:
    """What one model turn produced, for the loop, the trace and the benchmark."""

    raw: str  # the reply as generated (with the call format's opening when constrained)
    calls: list[ToolCall] | None  # None: the reply was not a call (prose or broken JSON)
    errors: list[str] = field(default_factory=list)  # calls that name no tool or fail validation
    prompt_tokens: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    complete: bool = True  # False: the token limit cut the reply short

    @property
    def valid(self) -> bool:
        """The reply parsed, and every call named a tool with arguments valid for it."""
        return self.calls is not None and not self.errors


def check_calls(calls: Sequence[ToolCall], tools: Sequence[ToolSpec]) -> list[str]:
    """What is wrong with each call, in words a model can act on; [] when all are valid."""
    by_name = {spec.name: spec for spec in tools}
    problems = []
    for call in calls:
        spec = by_name.get(call.name)
        if spec is None:
            problems.append(
                f"There is no tool named {call.name!r}; the tools are: {', '.join(by_name)}."
            )
            continue
        try:
            jsonschema.validate(call.arguments, spec.parameters)
        except jsonschema.ValidationError as e:
            where = "/".join(str(p) for p in e.absolute_path) or "the arguments"
            problems.append(f"Invalid arguments for {call.name}: at {where}, {e.message}.")
    return problems


def prompt_for(
    llm, messages: Sequence[dict[str, Any]], tools: Sequence[ToolSpec], fmt: ToolFormat
) -> str:
    """The rendered prompt: the conversation in the format, through the model's template."""
    return llm.chat_prompt(fmt.messages(messages, tools))


def decide(
    llm,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[Any],
    *,
    constrained: bool = True,
    fmt: ToolFormat = SMOLLM2,
    max_new_tokens: int = MAX_CALL_TOKENS,
    no_call_bias: float = NO_CALL_BIAS,
    relevance_floor: float | None = relevance.FLOOR,
    copy: bool = True,
    **sampling: Any,
) -> Turn:
    """One model turn: the reply, the calls in it, and whether they are valid.

    Constrained, a turn whose last user message fits no tool (cosine below
    `relevance_floor`, llmhood.agent.relevance; None turns the gate off) is "no call" at once;
    only the first turn of a task is gated, since later ones answer tool results. `copy`:
    free-text string arguments are chosen again among their value and the spans of the last
    user message, by the model's whole-value likelihood (llmhood.agent.copying)."""
    specs = [tool_spec(t) for t in tools]
    if not specs:
        raise LLMHoodError("No tools were given: a tool call needs at least one tool.")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise LLMHoodError(f"Two tools share a name in {names}: each tool needs its own name.")
    prompt = prompt_for(llm, messages, specs, fmt)
    options: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": 0.0, **sampling}
    taken = sorted({"json_schema", "regex", "grammar"} & set(sampling))
    if taken:
        raise LLMHoodError(
            f"{', '.join(taken)} cannot be given to a tool-calling turn: its output is already "
            "constrained to the tools' call format. Leave it out, or use llm.generate for it."
        )
    started = time.perf_counter()
    if constrained:
        opening = fmt.call_prefix
        gated = relevance_floor is not None and messages and messages[-1].get("role") == "user"
        question = relevance.last_user_text(messages)
        fits = not gated or relevance.fits(question, specs, relevance_floor)
        head = _choose(llm, prompt + opening, specs, no_call_bias) if fits else None
        head, text = head or "", ""
        if head:
            text, complete = _fill(llm, prompt + opening, head, _rest_regex(head, specs), options)
            if not complete:
                # A value ran on to the token limit (a small model repeats itself inside a
                # string or a number): once more, with every value bounded.
                regex = _rest_regex(head, specs, short=True)
                text, complete = _fill(llm, prompt + opening, head, regex, options)
            if copy and complete:
                schemas = {s.name: s.parameters for s in specs}
                written = copying.copy_values(llm, prompt + opening, head + text, schemas, question)
                text = written[len(head) :]  # names are never changed
        raw, body = opening + (head + text or "]"), "[" + (head + text or "]")
    else:
        generation = llm.generate(prompt, add_bos=False, **options)[0]
        raw = body = text = generation.text
    seconds = time.perf_counter() - started
    calls = parse_call_list(body) if constrained else fmt.parse(body)
    complete = not constrained or calls is not None
    errors = [] if calls is None else check_calls(calls, specs)
    if not complete:
        errors.append(f"The reply was cut off by the limit of {max_new_tokens} tokens.")
    return Turn(
        raw=raw,
        calls=calls,
        errors=errors,
        prompt_tokens=len(llm.tokenizer.encode(prompt)),
        new_tokens=len(llm.tokenizer.encode(text)),
        seconds=seconds,
        complete=complete,
    )


def _fill(llm, prompt: str, head: str, regex: str, options: dict[str, Any]) -> tuple[str, bool]:
    """The reply after `head` under `regex`, and whether it is a whole list of calls.

    Streamed, so that it can stop at the first call that repeats an earlier one: the same
    call twice in one turn gives the same result twice, and a small model that repeats a call
    goes on repeating it to the token limit. The repeat is dropped and the list closed."""
    text, reader = "", CallReader()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteConstraint)  # the return value tells it
        for piece in llm.stream(prompt + head, add_bos=False, regex=regex, **options):
            text += piece
            cut = reader.repeat_at("[" + head + text)
            if cut is not None:
                return text[: cut - 1 - len(head)] + "\n]", True
    return text, parse_call_list("[" + head + text) is not None


class CallReader:
    """Reads a growing call list (`[{...}, {...}`) and finds the first call equal to an
    earlier one."""

    def __init__(self) -> None:
        self.position = 1  # where the next call starts, after "[" and what follows it
        self.calls: list[Any] = []
        self.decoder = json.JSONDecoder()

    def repeat_at(self, text: str) -> int | None:
        """Where in `text` a complete call repeating an earlier one starts (the separator
        before it included), or None."""
        while True:
            begin = self.position
            while begin < len(text) and text[begin] in ", \n":
                begin += 1
            if begin >= len(text) or text[begin] != "{":
                return None
            try:
                call, end = self.decoder.raw_decode(text, begin)
            except json.JSONDecodeError:
                return None  # not complete yet
            if call in self.calls:
                return self.position
            self.calls.append(call)
            self.position = end


def _choose(llm, prompt: str, specs: Sequence[ToolSpec], no_call_bias: float) -> str | None:
    """The start of the reply: None for "no call", else `{"name": "<tool>", "arguments": `
    for the tool whose name the model finds likeliest.

    Whether to call is the first token's choice, `]` against the `{` every call starts with;
    which tool is the rest of the call's opening, its name, scored whole."""
    heads = [f'{{"name": "{spec.name}", "arguments": ' for spec in specs]
    scored = continuation_logprobs(llm, prompt, ["]", *(h[: h.index('", "a') + 1] for h in heads)])
    best = max(range(len(heads)), key=lambda i: sum(scored[i + 1][1:]))
    call = max(tokens[0] for tokens in scored[1:])
    return None if scored[0][0] + no_call_bias > call else heads[best]


def bounded(schema: Any) -> Any:
    """`schema` with a length bound on every string and list that has none, so that a reply
    written under it ends well within the token limit."""
    if isinstance(schema, list):
        return [bounded(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: bounded(value) for key, value in schema.items() if key not in ("enum", "const")}
    out.update({key: schema[key] for key in ("enum", "const") if key in schema})
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "string" in kinds and not any(k in schema for k in ("maxLength", "enum", "const", "format")):
        out["maxLength"] = BOUNDED_STRING
    if "array" in kinds and "maxItems" not in schema:
        out["maxItems"] = BOUNDED_ITEMS
    if (
        "object" in kinds
        and not schema.get("properties")
        and out.get("additionalProperties") is not False
    ):
        # A free-form object: bounded keys, at most BOUNDED_ITEMS of them, scalar values.
        out.setdefault("maxProperties", BOUNDED_ITEMS)
        out.setdefault("propertyNames", {"maxLength": BOUNDED_STRING})
        if out.get("additionalProperties", True) is True:
            out["additionalProperties"] = {"anyOf": [
                {"type": "string", "maxLength": BOUNDED_STRING}, {"type": "number"},
                {"type": "boolean"}, {"type": "null"}]}  # fmt: skip
    return out


def _rest_regex(head: str, specs: Sequence[ToolSpec], short: bool = False) -> str:
    """After `head`: the chosen tool's arguments, then more calls to any tool, then `]`.
    Between calls and before `]`, the line break SmolLM2 was trained to write there is
    allowed too. `short`: every string, list, map and number bounded (`bounded`,
    BOUNDED_DIGITS), and at most BOUNDED_ITEMS calls, so that the reply must end."""
    if short:
        specs = [replace(s, parameters=bounded(s.parameters)) for s in specs]
    chosen = next(s for s in specs if head.startswith(f'{{"name": "{s.name}"'))
    layout = {"separators": SEPARATORS, "max_digits": BOUNDED_DIGITS if short else None}
    arguments = schema_to_regex(chosen.parameters, **layout)
    call = schema_to_regex(calls_schema(specs)["items"], **layout)
    repeat = f"{{0,{BOUNDED_ITEMS - 1}}}" if short else "*"
    return f"{arguments}\\}}(,[ \\n]{call}){repeat}\\n?\\]"


def call_tools(
    llm,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[Any],
    constrained: bool = True,
    **options: Any,
) -> list[ToolCall]:
    """The calls the model makes in one turn; [] when it calls nothing.

    `messages` are OpenAI-style ({"role", "content"}, assistant `tool_calls`, role "tool");
    `tools` are OpenAI tool dicts, bare function dicts or llmhood Tools. Unconstrained, a reply
    that is prose, broken JSON, or names an unknown tool, counts as no call.
    """
    turn = decide(llm, messages, tools, constrained=constrained, **options)
    if turn.calls is None:
        return []
    known = {tool_spec(t).name for t in tools}
    return [call for call in turn.calls if call.name in known]
