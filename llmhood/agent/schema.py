"""JSON Schema from a Python function's type hints and docstring, and JSON back to its types.

    function_schema(get_weather)
    # {"name": "get_weather", "description": "The weather in a city.",
    #  "parameters": {"type": "object", "properties": {...}, "required": ["city"],
    #                 "additionalProperties": False}}

The form is OpenAI's function description, which SmolLM2's `<tools>` list, Llama 3.x's and
the OpenAI `tools` message all carry. The types, mapped to JSON Schema 2020-12:

    str int float bool None     string integer number boolean null
    X | None, Optional, Union   anyOf (Optional[X] is X or null)
    Literal["a", 1]             enum of those values
    Enum subclass               enum of its members' values
    list[X], Sequence[X]        array of X
    set[X], frozenset[X]        array of X with uniqueItems
    tuple[X, Y], tuple[X, ...]  array of exactly X, Y (prefixItems), or array of X
    dict[str, X], Mapping       object whose values are X (JSON keys are always strings)
    dataclass, TypedDict        object with its fields as properties, nested as deep as needed
    Annotated[X, "text"]        X, with "text" as its description

Descriptions come from the docstring (Google, NumPy or reST style, read by `docstring_parser`):
the function's is the docstring's summary line, each parameter's its entry. Required
parameters are those without defaults; defaults are recorded when JSON can hold them. Hints
are resolved by `typing.get_type_hints`, so under `from __future__ import annotations` the types
they name must be importable from the function's module (not local to another function).

Refused, with LLMHoodError naming the function, the parameter and the reason: a parameter
without a hint (TinyAgent calls those strings, and the model then passes strings to code that
wanted numbers), *args and **kwargs (no name a model could pass), `Any` and `object` (no shape
to describe or to constrain decoding to), bare `list`/`dict`/`tuple`/`set` (say what they
hold), dicts with non-string keys, arbitrary classes, and recursive dataclasses (every schema
here is written out inline, which a recursive one cannot be).
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping, MutableMapping, MutableSequence, Sequence
from typing import Any

import docstring_parser
import jsonschema

from llmhood.errors import LLMHoodError

SCALARS: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
SEQUENCES = (list, Sequence, MutableSequence)
SETS = (set, frozenset)
MAPPINGS = (dict, Mapping, MutableMapping)


class SchemaError(LLMHoodError):
    """A function whose signature cannot be described to a model."""


def function_schema(fn: Callable[..., Any], name: str | None = None) -> dict[str, Any]:
    """OpenAI's {"name", "description", "parameters"} for `fn`."""
    label = name or callable_name(fn)
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    notes = {p.arg_name: one_line(p.description) for p in doc.params}
    properties: dict[str, Any] = {}
    required = []
    for parameter, hint in parameter_hints(fn, label).items():
        schema = describe(hint, f"parameter '{parameter.name}' of {label}", ())
        if notes.get(parameter.name):
            schema = {**schema, "description": notes[parameter.name]}
        if parameter.default is inspect.Parameter.empty:
            required.append(parameter.name)
        elif (default := json_default(parameter.default)) is not None:
            schema = {**schema, "default": default[0]}
        properties[parameter.name] = schema
    parameters = {"type": "object", "properties": properties, "required": required,
                  "additionalProperties": False}  # fmt: skip
    return {"name": label, "description": doc.short_description or "", "parameters": parameters}


def one_line(text: str | None) -> str:
    """A docstring entry with its wrapping undone: a model reads the tool list as one prompt."""
    return " ".join((text or "").split())


def callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def parameter_hints(fn: Callable[..., Any], label: str) -> dict[inspect.Parameter, Any]:
    """Each parameter with its resolved hint (string annotations evaluated), in order."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"Cannot read the signature of {label}: {e}. Wrap it in a "
                          "function written in Python, with type hints.") from e  # fmt: skip
    target = fn if inspect.isroutine(fn) or inspect.isclass(fn) else type(fn).__call__
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception as e:
        raise SchemaError(f"Cannot resolve the type hints of {label}: {type(e).__name__}: {e}."
                          " Import every type its hints name.") from e  # fmt: skip
    resolved = {}
    for parameter in signature.parameters.values():
        where = f"parameter '{parameter.name}' of {label}"
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            star = "*" if parameter.kind is parameter.VAR_POSITIONAL else "**"
            raise SchemaError(f"Cannot describe {star}{parameter.name} of {label}: a model "
                              "passes arguments by name, so list each one as its own "
                              "parameter with a type hint.")  # fmt: skip
        if parameter.name not in hints:
            raise SchemaError(f"The {where} has no type hint, so the model would not know "
                              "what to pass. Annotate it, e.g. `city: str`.")  # fmt: skip
        resolved[parameter] = hints[parameter.name]
    return resolved


def describe(hint: Any, where: str, seen: tuple[type, ...]) -> dict[str, Any]:
    """The JSON Schema of one type hint; `seen` holds the dataclasses being described."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        texts = [a for a in hint.__metadata__ if isinstance(a, str)]
        schema = describe(args[0], where, seen)
        return {**schema, "description": texts[0]} if texts else schema
    if hint is None or hint is type(None):
        return {"type": "null"}
    if hint in SCALARS:
        return {"type": SCALARS[hint]}
    if origin is typing.Union or origin is types.UnionType:
        return {"anyOf": [describe(a, where, seen) for a in args]}
    if origin is typing.Literal:
        return enum_schema(list(args), where)
    if inspect.isclass(hint) and issubclass(hint, enum.Enum):
        return enum_schema([member.value for member in hint], where)
    if origin in SEQUENCES and args:
        return {"type": "array", "items": describe(args[0], where, seen)}
    if origin in SETS and args:
        return {"type": "array", "items": describe(args[0], where, seen), "uniqueItems": True}
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": describe(args[0], where, seen)}
        items = [describe(a, where, seen) for a in args]
        return {"type": "array", "prefixItems": items, "items": False,
                "minItems": len(items), "maxItems": len(items)}  # fmt: skip
    if origin in MAPPINGS and args:
        if args[0] is not str:
            raise SchemaError(f"Cannot describe the {where}: JSON object keys are strings, "
                              f"so use dict[str, ...] instead of {hint}.")  # fmt: skip
        return {"type": "object", "additionalProperties": describe(args[1], where, seen)}
    if dataclasses.is_dataclass(hint) or typing.is_typeddict(hint):
        return record_schema(hint, where, seen)
    raise SchemaError(f"Cannot describe the {where}: {refusal(hint)}")


def refusal(hint: Any) -> str:
    """Why a hint has no JSON Schema here, and what to write instead."""
    if hint is Any or hint is object:
        return (f"{hint} gives the model no shape to follow (and constrained decoding nothing "
                "to enforce). Name the type it takes, e.g. str or list[float].")  # fmt: skip
    if hint in (list, dict, tuple, set, frozenset, *SEQUENCES, *MAPPINGS):
        return f"a bare {hint} does not say what it holds. Write e.g. list[str] or dict[str, int]."
    return (f"{hint} is not a type JSON can carry. Use str, int, float, bool, None, Literal, an "
            "Enum, list/tuple/set/dict of those, a dataclass or a TypedDict.")  # fmt: skip


def enum_schema(values: list[Any], where: str) -> dict[str, Any]:
    if not all(v is None or isinstance(v, (str, int, float, bool)) for v in values):
        raise SchemaError(f"Cannot describe the {where}: its choices {values!r} must be JSON "
                          "strings, numbers, booleans or None.")  # fmt: skip
    kinds = {"null" if v is None else SCALARS[type(v)] for v in values}
    return {"type": kinds.pop(), "enum": values} if len(kinds) == 1 else {"enum": values}


def record_schema(hint: type, where: str, seen: tuple[type, ...]) -> dict[str, Any]:
    """A dataclass or TypedDict as an object; field descriptions from its docstring's
    `Attributes` (or `Args`/`Parameters`) entries."""
    if hint in seen:
        raise SchemaError(f"Cannot describe the {where}: {hint.__name__} contains itself, and "
                          "schemas here are written out inline. Flatten it.")  # fmt: skip
    fields = typing.get_type_hints(hint, include_extras=True)
    doc = docstring_parser.parse(own_doc(hint))
    notes = {p.arg_name: one_line(p.description) for p in doc.params}
    properties = {}
    for field, field_hint in fields.items():
        schema = describe(field_hint, f"{where}, field '{field}'", (*seen, hint))
        properties[field] = {**schema, "description": notes[field]} if notes.get(field) else schema
    if typing.is_typeddict(hint):
        required = [f for f in fields if f in hint.__required_keys__]
    else:
        required = [f.name for f in dataclasses.fields(hint) if not has_default(f)]
    schema = {"type": "object", "properties": properties, "required": required,
              "additionalProperties": False}  # fmt: skip
    return {**schema, "description": doc.short_description} if doc.short_description else schema


def own_doc(cls: type) -> str:
    """A class's docstring, unless it is the signature dataclasses writes when there is none."""
    doc = inspect.getdoc(cls) or ""
    return "" if doc.startswith(f"{cls.__name__}(") else doc


def has_default(field: dataclasses.Field) -> bool:
    return (
        field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    )


def json_default(value: Any) -> tuple[Any] | None:
    """(value as JSON,) or None where JSON cannot hold it; such a default is simply not shown."""
    if isinstance(value, enum.Enum):
        value = value.value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif isinstance(value, (tuple, set, frozenset)):
        value = list(value)
    try:
        return (json.loads(json.dumps(value, allow_nan=False)),)
    except (TypeError, ValueError):
        return None


def from_json(value: Any, hint: Any) -> Any:
    """`value` (already valid against describe(hint)) rebuilt into the hint's Python type:
    Enum members, dataclass instances, tuples, sets, and floats where a float was declared
    (JSON's 3 is an int, and 3.0 passes as an integer: both are converted, losing nothing)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return from_json(value, args[0])
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, float):
        return int(value)
    if origin is typing.Union or origin is types.UnionType:
        for member in args:
            if jsonschema.Draft202012Validator(describe(member, "", ())).is_valid(value):
                return from_json(value, member)
        return value
    if inspect.isclass(hint) and issubclass(hint, enum.Enum):
        return hint(value)
    if origin in (*SEQUENCES, *SETS) and args:
        items = [from_json(v, args[0]) for v in value]
        return items if origin in SEQUENCES else origin(items)
    if origin is tuple and args:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(v, args[0]) for v in value)
        return tuple(from_json(v, a) for v, a in zip(value, args, strict=True))
    if origin in MAPPINGS and args:
        return {k: from_json(v, args[1]) for k, v in value.items()}
    if dataclasses.is_dataclass(hint) or typing.is_typeddict(hint):
        fields = typing.get_type_hints(hint, include_extras=True)
        built = {k: from_json(v, fields[k]) for k, v in value.items()}
        return built if typing.is_typeddict(hint) else hint(**built)
    return value
