"""The Berkeley Function Calling Leaderboard's non-live questions, scored by BFCL's own checker.

BFCL (Patil et al., "The Berkeley Function Calling Leaderboard", ICML 2025) asks a model one
question with a few function descriptions and checks the calls it makes against a list of
acceptable values per argument, by comparing syntax trees (the "AST" checker), never by
running anything. The PyPI package `bfcl-eval` ships the questions, the possible answers and
that checker; this module reads the first two from the installed package (located with
importlib, so any install layout works) and scores with the third, so that a score here means
what a score on the leaderboard means.

Importing the checker without BFCL's API clients. `bfcl_eval.eval_checker.ast_eval.ast_checker`
imports only the standard library and BFCL's own constant tables, with one exception:
`bfcl_eval.constants.model_config`, which imports every model handler and with them openai,
anthropic, cohere, mistralai, google-genai and more. The checker uses that table for a single
thing: whether the model under test had dots in function names replaced by underscores (an
OpenAI naming rule). Our tools keep BFCL's names as they are, dots included, so the answer is
"no", and `checker()` runs the checker's source with a one-entry stand-in for that module
placed in `sys.modules` for the duration of the import and removed after it. The real
modules it imports (`bfcl_eval.constants.enums`, `bfcl_eval.constants.type_mappings`,
`bfcl_eval.eval_checker.ast_eval.type_convertor.java_type_converter` and `.js_type_converter`)
need nothing outside the standard library, so `bfcl-eval` is installed without its
dependencies. The loaded checker is kept private (not registered in `sys.modules`), so code
that later imports the real checker gets the real one.

BFCL's function descriptions use its own type names; `tool()` turns each into the OpenAI
function form with a JSON Schema (2020-12) that jsonschema and our constrained decoder read:

    BFCL       JSON Schema    why
    dict       object         its "properties", if any, are converted the same way
    float      number         the checker accepts an int where a float is declared
    tuple      array          the checker compares tuples as lists (JSON has no tuples)
    any        string         the checker's Python type for "any" is str
    integer, string, boolean, array: unchanged

This is BFCL's own table for models that take JSON Schema (`GORILLA_TO_OPENAPI`). Of the
other keys, "description", "enum", "items", "properties", "required", "default",
"maximum", "minItems" and "maxItems" mean in BFCL what they mean in JSON Schema and are kept;
"optional" is BFCL's own (the "required" list already says it) and is dropped; "format"
appears only as "date" and is written into the description instead, where the model reads
it, because a format constrains nothing a decoder can enforce. Every object with properties
gets "additionalProperties": false, as the checker rejects any argument the description does
not name; a "required" name a description never describes (a few do) is dropped, since
nothing can say what its value would be. As BFCL does for every Python category, each
function's description ends with "Note that the provided function is in Python 3 syntax."
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import importlib.resources
import importlib.util
import json
import sys
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from llmhood.errors import LLMHoodError

PINNED = "2026.3.23"  # the bfcl-eval release these categories and sizes are taken from
CATEGORIES = {  # the non-live categories scored here, with their sizes in that release
    "simple_python": 400,
    "multiple": 200,
    "parallel": 200,
    "parallel_multiple": 200,
    "irrelevance": 240,
}
INSTALL = f"pip install --no-deps bfcl-eval=={PINNED} (without its API clients, not needed here)"
TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": "string",
         "integer": "integer", "string": "string", "boolean": "boolean",
         "array": "array"}  # fmt: skip
KEPT = ("description", "enum", "default", "required", "maximum", "minItems", "maxItems")
PYTHON_HINT = " Note that the provided function is in Python 3 syntax."
CHECKER = "bfcl_eval.eval_checker.ast_eval.ast_checker"
MODEL_CONFIG = "bfcl_eval.constants.model_config"
MODEL_NAME = "llmhood"  # the checker's name for the model under test (only read for dots)


@dataclass(frozen=True)
class Question:
    """One BFCL question: what the model sees, and what the checker needs."""

    id: str
    category: str
    messages: list[dict[str, Any]]  # the user turn(s), OpenAI-style
    functions: list[dict[str, Any]]  # BFCL's own descriptions, which the checker reads
    tools: list[dict[str, Any]]  # the same functions as OpenAI tools with JSON Schemas
    answer: list[dict[str, Any]] | None  # [{name: {argument: [acceptable values]}}]; None
    # for irrelevance, where the right answer is no call


@dataclass(frozen=True)
class Verdict:
    """The checker's judgement of one question's calls."""

    correct: bool
    error: str = ""
    error_type: str = ""


def require_bfcl() -> None:
    """Fail early, with the command that fixes it, when bfcl-eval is not installed."""
    if importlib.util.find_spec("bfcl_eval") is None:
        raise LLMHoodError(
            f"llmhood bench agent scores with BFCL's own checker and questions, from the "
            f"bfcl-eval package, which is not installed: {INSTALL}."
        )


def bfcl_version() -> str:
    require_bfcl()
    return importlib.metadata.version("bfcl-eval")


def categories(names: Iterable[str] | None = None) -> list[str]:
    """The categories asked for, checked against the ones scored here (all when None)."""
    chosen = list(CATEGORIES) if names is None else list(names)
    unknown = [c for c in chosen if c not in CATEGORIES]
    if unknown or not chosen:
        what = f"Unknown BFCL categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}"
        raise LLMHoodError(
            f"{what if unknown else 'No BFCL category given'}: choose from {', '.join(CATEGORIES)}."
        )
    return chosen


def load(category: str, limit: int | None = None) -> list[Question]:
    """The first `limit` questions of a category (all when None), in BFCL's order."""
    (category,) = categories([category])
    if limit is not None and limit < 1:
        raise LLMHoodError(f"--limit {limit}: give a number of questions of at least 1.")
    entries = _read(f"BFCL_v4_{category}.json")[:limit]
    answers = {}
    if category != "irrelevance":
        answers = {
            a["id"]: a["ground_truth"] for a in _read(f"possible_answer/BFCL_v4_{category}.json")
        }
    return [
        Question(
            id=e["id"],
            category=category,
            messages=e["question"][0],  # non-live questions are single-turn
            functions=e["function"],
            tools=[tool(f) for f in e["function"]],
            answer=answers.get(e["id"]),
        )
        for e in entries
    ]


def _read(name: str) -> list[dict[str, Any]]:
    """One of BFCL's data files: a JSON object per line."""
    require_bfcl()
    path = importlib.resources.files("bfcl_eval") / "data" / name
    if not path.is_file():
        raise LLMHoodError(
            f"The installed bfcl-eval ({bfcl_version()}) has no data file {name}; the "
            f"questions scored here are those of bfcl-eval {PINNED}: {INSTALL}."
        )
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def tool(function: dict[str, Any]) -> dict[str, Any]:
    """A BFCL function description as an OpenAI tool whose parameters are JSON Schema."""
    where = function["name"]
    return {
        "type": "function",
        "function": {
            "name": function["name"],
            "description": function.get("description", "") + PYTHON_HINT,
            "parameters": {
                "type": "object",
                "properties": {
                    name: json_schema(spec, f"{where}.{name}")
                    for name, spec in function["parameters"].get("properties", {}).items()
                },
                "required": list(function["parameters"].get("required", [])),
                "additionalProperties": False,
            },
        },
    }


def json_schema(spec: dict[str, Any], where: str) -> dict[str, Any]:
    """One BFCL parameter description as JSON Schema (see the table in the module docstring)."""
    kind = spec.get("type", "string")
    if kind not in TYPES:
        raise LLMHoodError(
            f"BFCL parameter {where} has type {kind!r}, which has no JSON Schema mapping here "
            f"(known: {', '.join(TYPES)}); the mapping was written for bfcl-eval {PINNED}: "
            f"{INSTALL}."
        )
    schema: dict[str, Any] = {"type": TYPES[kind]}
    schema.update({key: copy.deepcopy(spec[key]) for key in KEPT if key in spec})
    if "format" in spec:
        schema["description"] = f"{spec.get('description', '')} Format: {spec['format']}.".strip()
    if "items" in spec:
        schema["items"] = json_schema(spec["items"], f"{where}[]")
    if "properties" in spec:
        schema["properties"] = {
            name: json_schema(sub, f"{where}.{name}") for name, sub in spec["properties"].items()
        }
        schema["additionalProperties"] = False
    if "required" in schema:  # a few descriptions require names they never describe
        known = schema.get("properties", {})
        schema["required"] = [name for name in schema["required"] if name in known]
    return schema


def as_calls(calls: Sequence[Any]) -> list[dict[str, Any]]:
    """Calls as [{"name", "arguments"}] dicts, from those or from objects with .name and
    .arguments (llmhood.agent.ToolCall)."""
    out = []
    for call in calls:
        if isinstance(call, dict):
            out.append({"name": call["name"], "arguments": call["arguments"]})
        else:
            out.append({"name": call.name, "arguments": call.arguments})
    return out


def bfcl_calls(calls: Sequence[Any]) -> list[dict[str, dict[str, Any]]]:
    """Calls in the form BFCL's checker takes for Python: [{function name: {argument: value}}]."""
    return [{c["name"]: copy.deepcopy(c["arguments"])} for c in as_calls(calls)]


def score(question: Question, calls: Sequence[Any]) -> Verdict:
    """BFCL's verdict on the calls made for `question`.

    For irrelevance, BFCL counts an answer correct when no call can be decoded from it, so
    here exactly when `calls` is empty. For the others, BFCL's `ast_checker` decides: the
    right number of calls (in any order for the parallel categories), each to the expected
    function, every required argument present, each value among the acceptable ones (strings
    compared without case, spaces and some punctuation), nothing unexpected. The checker was
    written for well-formed outputs; a call that makes it raise (an argument of a shape it
    never expected) is counted wrong, with the exception recorded as the error.
    """
    if question.answer is None:
        if calls:
            return Verdict(False, "Called a function when none fits the question.",
                           "irrelevance_error:decoder_success")  # fmt: skip
        return Verdict(True)
    module = checker()
    try:
        result = module.ast_checker(
            copy.deepcopy(question.functions),
            bfcl_calls(calls),
            copy.deepcopy(question.answer),
            module.Language.PYTHON,
            question.category,
            MODEL_NAME,
        )
    except Exception as e:  # see the docstring: a reply that crashes their checker is a miss
        return Verdict(False, f"BFCL's checker raised {type(e).__name__}: {e}", "checker_raised")
    if result["valid"]:
        return Verdict(True)
    return Verdict(False, json.dumps(result["error"], default=str), result["error_type"])


def schema_errors(question: Question, calls: Sequence[Any]) -> list[str]:
    """What keeps each call from naming one of the question's functions with arguments valid
    for its JSON Schema (jsonschema, 2020-12); [] when all are valid."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in question.tools}
    problems = []
    for call in as_calls(calls):
        if call["name"] not in schemas:
            problems.append(f"{call['name']!r} is not one of the functions given.")
            continue
        validator = jsonschema.Draft202012Validator(schemas[call["name"]])
        problems += [
            f"{call['name']}: {e.message}" for e in validator.iter_errors(call["arguments"])
        ]
    return problems


@functools.cache
def checker() -> types.ModuleType:
    """BFCL's ast_checker module, loaded without its API-client imports (module docstring)."""
    require_bfcl()
    spec = importlib.util.find_spec(CHECKER)
    if spec is None or spec.loader is None:
        raise LLMHoodError(
            f"The installed bfcl-eval ({bfcl_version()}) has no module {CHECKER}: {INSTALL}."
        )
    stand_in = types.ModuleType(MODEL_CONFIG)
    stand_in.MODEL_CONFIG_MAPPING = {MODEL_NAME: types.SimpleNamespace(underscore_to_dot=False)}
    saved = sys.modules.get(MODEL_CONFIG)
    sys.modules[MODEL_CONFIG] = stand_in
    try:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            del sys.modules[MODEL_CONFIG]
        else:
            sys.modules[MODEL_CONFIG] = saved
    return module
