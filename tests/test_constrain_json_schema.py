"""JSON Schemas compiled to byte DFAs, held to `json`, `jsonschema` and xgrammar.

Every document the DFA accepts must parse and validate (that is what makes constrained
decoding safe), documents the schema refuses must be refused, and the documented xgrammar
settings must give xgrammar's language exactly.
"""

from __future__ import annotations

import datetime
import json
import random
import re
from decimal import Decimal
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Any

import jsonschema
import numpy as np
import pytest

from llmhood.errors import LLMHoodError
from llmhood.generate.constrain.dfa import DFA
from llmhood.generate.constrain.json_schema import (
    RECURSION_DEPTH,
    UnsupportedSchema,
    compile_json_schema,
    schema_to_regex,
    xgrammar_options,
)
from llmhood.generate.constrain.regex import compile_regex

WEATHER = {  # the shape of a BFCL "simple" function's parameters
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "The city and state, e.g. Boston, MA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        "days": {"type": "integer", "minimum": 1, "maximum": 14, "description": "Forecast days"},
        "hourly": {"type": "boolean", "description": "Include hourly data"},
        "coordinates": {"type": "array", "items": {"type": "number"}, "maxItems": 2},
        "filters": {
            "type": "object",
            "properties": {"min_temp": {"type": "number"}, "max_temp": {"type": "number"}},
            "required": ["min_temp"],
        },
    },
    "required": ["location", "unit"],
}
FLIGHTS = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "book_flight",
    "type": "object",
    "properties": {
        "origin": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "IATA code"},
        "destination": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "date": {"type": "string", "format": "date"},
        "passengers": {
            "type": "array",
            "minItems": 1,
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 20},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                },
                "required": ["name"],
            },
        },
        "class": {"enum": ["economy", "business", "first"]},
    },
    "required": ["origin", "destination", "date", "passengers"],
}
DEFS = {
    "$defs": {
        "point": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
            "required": ["x", "y"],
        }
    },
    "definitions": {"flag": {"type": "boolean"}},
    "type": "object",
    "properties": {
        "a": {"$ref": "#/$defs/point"},
        "b": {"$ref": "#/definitions/flag"},
        "c": {"allOf": [{"$ref": "#/$defs/point"}]},
    },
    "required": ["a"],
}
LINKED = {
    "type": "object",
    "properties": {"value": {"type": "integer"}, "next": {"$ref": "#"}},
    "required": ["value"],
}

# (schema, valid instances, invalid instances). Valid ones list properties in schema order,
# as the decoder writes them; jsonschema decides validity in the test itself.
CASES: dict[str, tuple[Any, list[Any], list[Any]]] = {
    "bounded map": (
        {
            "type": "object",
            "maxProperties": 2,
            "additionalProperties": {"type": "integer"},
            "propertyNames": {"maxLength": 3},
        },
        [{}, {"ab": 1}, {"abc": -2, "": 0}, {"\u00e9\u00e9": 7}],
        [{"a": 1, "b": 2, "c": 3}, {"abcd": 1}, {"a": "x"}],
    ),
    "weather": (
        WEATHER,
        [
            {"location": "Boston, MA", "unit": "celsius"},
            {"location": 'Z\u00fcrich "old" town\\', "unit": "fahrenheit", "days": 14},
            {
                "location": "",
                "unit": "celsius",
                "days": 1,
                "hourly": False,
                "coordinates": [],
                "filters": {"min_temp": -3.5e2, "max_temp": 10},
            },
            {"location": "\u6771\u4eac\n", "unit": "celsius", "coordinates": [1.5, -2]},
        ],
        [
            {"location": "Boston"},
            {"location": "Boston", "unit": "kelvin"},
            {"location": "Boston", "unit": "celsius", "days": 0},
            {"location": "Boston", "unit": "celsius", "days": 15},
            {"location": "Boston", "unit": "celsius", "days": 2.5},
            {"location": "Boston", "unit": "celsius", "coordinates": [1, 2, 3]},
            {"location": "Boston", "unit": "celsius", "filters": {}},
            {"location": 5, "unit": "celsius"},
        ],
    ),
    "flights": (
        FLIGHTS,
        [
            {
                "origin": "SFO",
                "destination": "JFK",
                "date": "2024-02-29",
                "passengers": [{"name": "Ann", "age": 0}, {"name": "\u00c9lo\u00efse"}],
            },
            {
                "origin": "LHR",
                "destination": "CDG",
                "date": "1999-12-31",
                "passengers": [{"name": "B"}],
                "class": "first",
            },
        ],
        [
            {
                "origin": "sfo",
                "destination": "JFK",
                "date": "2024-01-01",
                "passengers": [{"name": "A"}],
            },
            {"origin": "SFO", "destination": "JFK", "date": "2024-01-01", "passengers": []},
            {
                "origin": "SFO",
                "destination": "JFK",
                "date": "2024-01-01",
                "passengers": [{"name": "A", "age": 121}],
            },
            {
                "origin": "SFO",
                "destination": "JFK",
                "date": "2024-01-01",
                "passengers": [{"name": ""}],
            },
            {
                "origin": "SFO",
                "destination": "JFK",
                "date": "2024-01-01",
                "passengers": [{"name": "A"}],
                "class": "coach",
            },
        ],
    ),
    "integer_negative_range": (
        {"type": "integer", "minimum": -120, "maximum": -7},
        [-120, -7, -99, -100, -10],
        [-121, -6, 0, 7, 120, -1000],
    ),
    "integer_exclusive": (
        {"type": "integer", "exclusiveMinimum": -3, "exclusiveMaximum": 1000},
        [-2, 0, 999, 10, 100],
        [-3, 1000, -4, 1001],
    ),
    "integer_lower_only": (
        {"type": "integer", "minimum": 17},
        [17, 18, 99, 100, 123456789],
        [16, 0, -17],
    ),
    "integer_upper_only": ({"type": "integer", "maximum": -5}, [-5, -6, -1000000], [-4, 0, 5]),
    "integer": ({"type": "integer"}, [0, -1, 7, 12345678901234567890], [1.5, "1", None]),
    "number_bounded": (
        {"type": "number", "minimum": -2, "exclusiveMaximum": 3},
        [-2, -1.5, 0, 0.25, 2.999, -0.5, 2],
        [3, 3.0, -2.01, 3.5, 100],
    ),
    "number_exclusive_both": (
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        [0.5, 1, 0.001],
        [0, -0.5, 1.01],
    ),
    "number": ({"type": "number"}, [0, -1.25, 3e-7, 1e300, 42], ["x", True]),
    "string_length": (
        {"type": "string", "minLength": 2, "maxLength": 4},
        ["ab", 'a"', "\u00e9\u4e2d\u6587", "\\\n\t\u0001", "abcd"],
        ["a", "", "abcde", 5],
    ),
    "pattern_anchored": (
        {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
        ["AB-123", "ZZ-000"],
        ["ab-123", "AB-12", "AB-1234", "xAB-123"],
    ),
    "pattern_search": (
        {"type": "string", "pattern": "ab+c"},
        ["abc", "xx abbbc yy", '"abc"\n', "\u00e9abc\\"],
        ["ac", "abx", ""],
    ),
    "pattern_escapes": (
        {"type": "string", "pattern": '^["\\\\\\n\\t\\x01/]+$'},
        ['"', "\\", "\n\t", "\u0001/", '"\\\n'],
        ["", "a", "\u0002"],
    ),
    "format_date": (
        {"type": "string", "format": "date"},
        ["2024-01-31", "0001-11-30"],
        ["2024-13-01", "2024-04-31", "24-01-01"],
    ),
    "format_time": (
        {"type": "string", "format": "time"},
        ["23:59:59Z", "00:00:00.123+05:30"],
        ["24:00:00Z", "12:00", "12:00:00"],
    ),
    "format_date_time": (
        {"type": "string", "format": "date-time"},
        ["2024-06-01T12:30:00Z", "2024-06-01T12:30:00.5-07:00"],
        ["2024-06-01 12:30:00Z"],
    ),
    "format_email": (
        {"type": "string", "format": "email"},
        ["ann@example.com", "a.b+c@x-y.org"],
        ["ann", "@x.org"],
    ),
    "format_uuid": (
        {"type": "string", "format": "uuid"},
        ["123e4567-e89b-12d3-a456-426614174000"],
        ["123e4567e89b12d3a456426614174000"],
    ),
    "enum_mixed": (
        {"enum": ["red", 'gr"een', 3, 2.5, None, True, {"a": [1, 2]}, ["x"]]},
        ["red", 'gr"een', 3, 2.5, None, True, {"a": [1, 2]}, ["x"]],
        ["blue", 4, False, {"a": [1]}, [], "gr"],
    ),
    "enum_with_type": ({"type": "string", "enum": ["a", 1, "b"]}, ["a", "b"], [1, "c"]),
    "const": (
        {"const": {"k": "v", "n": [None, False]}},
        [{"k": "v", "n": [None, False]}],
        [{"k": "v"}, "v"],
    ),
    "array_bounds": (
        {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
        [[1], [1, -2], [0, 0, 0]],
        [[], [1, 2, 3, 4], ["1"], [1.5]],
    ),
    "array_exact": (
        {"type": "array", "items": {"type": "boolean"}, "minItems": 2, "maxItems": 2},
        [[True, False]],
        [[True], [True, True, True]],
    ),
    "prefix_items": (
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "minItems": 1},
        [["a"], ["a", 1]],
        [[], [1], ["a", "b"], ["a", "1"]],
    ),
    "prefix_then_items": (
        {
            "type": "array",
            "prefixItems": [{"type": "boolean"}],
            "items": {"type": "null"},
            "maxItems": 3,
        },
        [[], [True], [False, None], [True, None, None]],
        [[None], [True, True], [True, None, None, None]],
    ),
    "nested": (
        {
            "type": "object",
            "properties": {
                "user": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                    },
                    "required": ["id", "tags"],
                },
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"q": {"type": "integer", "minimum": 1}},
                        "required": ["q"],
                    },
                },
            },
            "required": ["user", "items"],
        },
        [{"user": {"id": 1, "tags": []}, "items": [{"q": 1}, {"q": 20}]}],
        [{"user": {"id": 1}, "items": []}, {"user": {"id": 1, "tags": []}, "items": [{"q": 0}]}],
    ),
    "all_optional": (
        {
            "type": "object",
            "properties": {
                "a": {"type": "integer"},
                "b": {"type": "boolean"},
                "c": {"type": "null"},
            },
        },
        [
            {},
            {"a": 1},
            {"b": True},
            {"c": None},
            {"a": 1, "c": None},
            {"a": 2, "b": False, "c": None},
        ],
        [{"a": "x"}, {"a": 1, "b": 2}, []],
    ),
    "optional_then_required": (
        {
            "type": "object",
            "properties": {
                "a": {"type": "integer"},
                "b": {"type": "string"},
                "c": {"type": "integer"},
            },
            "required": ["b"],
        },
        [{"b": ""}, {"a": 1, "b": "x"}, {"b": "x", "c": 3}, {"a": 1, "b": "x", "c": 3}],
        [{}, {"a": 1}, {"a": 1, "c": 3}],
    ),
    "weird_keys": (
        {
            "type": "object",
            "properties": {
                'we"ird/key': {"type": "null"},
                "\u043a\u043b\u044e\u0447": {"type": "integer"},
            },
            "required": ['we"ird/key', "\u043a\u043b\u044e\u0447"],
        },
        [{'we"ird/key': None, "\u043a\u043b\u044e\u0447": 5}],
        [{'we"ird/key': None}],
    ),
    "map": (
        {"type": "object", "additionalProperties": {"type": "integer"}},
        [{}, {"x": 1}, {"x": 1, "y": -2, "\u00e9": 3}],
        [{"x": "1"}, {"x": None}],
    ),
    "listed_only_with_additional_true": (
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "required": ["a"],
            "additionalProperties": True,
        },
        [{"a": 1}],
        [{}, {"a": "x"}],
    ),
    "any_of": (
        {
            "anyOf": [
                {"type": "integer", "maximum": 5},
                {"type": "string", "maxLength": 3},
                {"type": "null"},
            ]
        },
        [5, -3, "abc", "", None],
        [6, "abcd", True, 1.5],
    ),
    "one_of_disjoint": (
        {
            "oneOf": [
                {"type": "null"},
                {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]},
            ]
        },
        [None, {"x": 1.5}],
        [{}, 1],
    ),
    "type_list": ({"type": ["string", "null"], "maxLength": 2}, ["", "ab", None], ["abc", 1]),
    "refs": (
        DEFS,
        [{"a": {"x": 1, "y": 2}}, {"a": {"x": 0, "y": -1.5}, "b": True, "c": {"x": 1, "y": 1}}],
        [{"a": {"x": 1}}, {"b": True}, {"a": {"x": 1, "y": 2}, "b": 1}],
    ),
    "recursive": (
        LINKED,
        [{"value": 1}, {"value": 1, "next": {"value": 2, "next": {"value": 3}}}],
        [{"value": 1, "next": {}}, {"next": {"value": 1}}],
    ),
    "any": ({}, [1, "s", None, [1, [2, "x"]], {"a": {"b": True}}], []),
    "any_true": (True, [0, [], {}], []),
    "object_any": ({"type": "object"}, [{}, {"a": 1, "b": [None]}], [[], 1]),
    "boolean": (
        {"type": "boolean", "title": "t", "$comment": "c", "examples": [True]},
        [True, False],
        [0, None],
    ),
    "null": ({"type": "null"}, [None], [0, False, ""]),
}

# Schemas whose language xgrammar 0.2.9 shares exactly (json_schema.py's docstring lists why).
XGRAMMAR_SAME = [
    "weather",
    "integer_negative_range",
    "integer_exclusive",
    "integer_lower_only",
    "integer_upper_only",
    "integer",
    "number",
    "array_bounds",
    "array_exact",
    "prefix_then_items",
    "nested",
    "all_optional",
    "optional_then_required",
    "type_list_plain",
    "any_of_plain",
    "enum_scalars",
    "boolean",
    "null",
]
EXTRA_XGRAMMAR = {
    "type_list_plain": {"type": ["integer", "null", "boolean"]},
    "any_of_plain": {
        "anyOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string"},
            {"type": "array", "items": {"type": "null"}},
        ]
    },
    "enum_scalars": {"enum": ["a", 'b"c', 1, 2.5, None, True]},
}

# (max_whitespace, separators): the layouts under test, each against xgrammar_options(...)
LAYOUTS = [(0, (", ", ": ")), (0, (",", ":")), (2, (",", ":")), (1, (", ", ": "))]


def _date_anyyear(value: object) -> bool:
    """ISO dates, judged in a leap year: the regex checks month lengths, not leap years."""
    if not isinstance(value, str):
        return True
    return bool(datetime.date.fromisoformat("2000" + value[4:]) if len(value) == 10 else False)


def _time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    text = value.replace("Z", "+00:00")
    main, _, rest = text.partition(".")
    if rest:  # fromisoformat takes at most 6 decimals; RFC 3339 takes any number
        digits = re.match(r"[0-9]+", rest).group()
        text = main + "." + (digits + "000000")[:6] + rest[len(digits) :]
    return datetime.time.fromisoformat(text).tzinfo is not None  # RFC 3339 requires the offset


def _email(value: object) -> bool:
    """RFC 5322 addr-spec as Python's email package parses it (jsonschema only looks for @)."""
    if not isinstance(value, str):
        return True
    address = Address(addr_spec=value)
    return bool(address.username) and bool(address.domain)


FORMATS = jsonschema.FormatChecker()
FORMATS.checks("email", raises=(ValueError, IndexError, HeaderParseError))(_email)
FORMATS.checks("date", raises=ValueError)(_date_anyyear)
FORMATS.checks("time", raises=ValueError)(_time)
FORMATS.checks("date-time", raises=ValueError)(
    lambda v: not isinstance(v, str) or (_date_anyyear(v[:10]) and v[10] == "T" and _time(v[11:]))
)


def is_valid(schema: Any, instance: Any) -> bool:
    validator = jsonschema.Draft202012Validator(schema, format_checker=FORMATS)
    return validator.is_valid(instance)


def distances(dfa: DFA) -> np.ndarray:
    """(states,) bytes still needed to reach acceptance, by backward breadth-first search."""
    dist = np.where(dfa.accepting, 0, 1 << 30)
    while True:
        better = np.minimum(dist, dist[dfa.transitions].min(axis=1) + 1)
        better[0] = 1 << 30
        if (better == dist).all():
            return dist
        dist = better


def random_document(dfa: DFA, dist: np.ndarray, rng: random.Random, budget: int = 80) -> bytes:
    """A random accepted document; past `budget` bytes it heads for the nearest accept."""
    state, out = dfa.start, bytearray()
    while True:
        moves = np.flatnonzero(dfa.transitions[state])
        if dfa.accepting[state] and (not len(moves) or rng.random() < 0.3 or len(out) > budget):
            return bytes(out)
        if len(out) > budget or rng.random() < 0.2:
            nxt = dfa.transitions[state, moves]
            moves = moves[dist[nxt] == dist[nxt].min()]
        byte = int(moves[rng.randrange(len(moves))])
        out.append(byte)
        state = int(dfa.transitions[state, byte])


def dumps(value: Any, separators: tuple[str, str]) -> str:
    return json.dumps(value, separators=separators, ensure_ascii=False)


@pytest.mark.parametrize("name", list(CASES))
def test_generated_documents_validate(name: str) -> None:
    schema = CASES[name][0]
    for max_whitespace, separators in LAYOUTS:
        dfa = compile_json_schema(schema, max_whitespace=max_whitespace, separators=separators)
        dist = distances(dfa)
        rng = random.Random(name)
        for _ in range(40):
            text = random_document(dfa, dist, rng).decode("utf-8")
            instance = json.loads(text)  # strict: raw control characters would fail here
            assert is_valid(schema, instance), (name, text)


@pytest.mark.parametrize("name", list(CASES))
def test_valid_instances_accepted_and_invalid_rejected(name: str) -> None:
    schema, valid, invalid = CASES[name]
    for separators in [(", ", ": "), (",", ":")]:
        dfa = compile_json_schema(schema, separators=separators)
        for instance in valid:
            assert is_valid(schema, instance), instance  # the reference agrees it is valid
            assert dfa.matches(dumps(instance, separators).encode()), (name, instance)
        for instance in invalid:
            assert not is_valid(schema, instance), instance
            assert not dfa.matches(dumps(instance, separators).encode()), (name, instance)


def test_whitespace_is_bounded() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "array", "items": {"type": "integer"}}},
    }
    dfa = compile_json_schema(schema, max_whitespace=2, separators=(",", ":"))
    assert dfa.matches(b'{ \n"a"\t:  [ 1 ,\r\n2\n\n]  }')
    assert not dfa.matches(b'{   "a":[]}')  # three spaces
    assert not dfa.matches(b' {"a":[]}')  # none around the document
    assert not compile_json_schema(schema).matches(b'{"a":  [1]}')


def test_recursion_is_unrolled_to_the_documented_depth() -> None:
    dfa = compile_json_schema(LINKED, separators=(",", ":"))

    def chain(n: int) -> dict:
        return {"value": n} if n == 0 else {"value": n, "next": chain(n - 1)}

    for links in range(RECURSION_DEPTH + 3):
        assert dfa.matches(dumps(chain(links), (",", ":")).encode()) == (links <= RECURSION_DEPTH)


def candidates(name: str, schema: Any, dfa: DFA, separators: tuple[str, str]) -> list[str]:
    rng = random.Random(name)
    dist = distances(dfa)
    docs = [random_document(dfa, dist, rng, budget=40).decode() for _ in range(25)]
    valid, invalid = CASES[name][1:] if name in CASES else ([], [])
    docs += [dumps(v, s) for v in valid + invalid for s in [separators, (", ", ": "), (",", ":")]]
    mutated = []
    for doc in docs:
        for _ in range(3):
            i = rng.randrange(len(doc) + 1)
            c = rng.choice(' \n,:"[]{}0-1.eE5\\u' + doc)
            mutated.append(doc[:i] + c + doc[i + rng.randrange(2) :])
    return docs + mutated + ["", "{}", "[]", "null", "0", "-0", "01", '""']


@pytest.mark.parametrize("name", XGRAMMAR_SAME)
def test_language_equals_xgrammar(name: str) -> None:
    xgrammar = pytest.importorskip("xgrammar")
    from xgrammar.testing import _is_grammar_accept_string

    schema = EXTRA_XGRAMMAR[name] if name in EXTRA_XGRAMMAR else CASES[name][0]
    for max_whitespace, separators in LAYOUTS:
        dfa = compile_json_schema(schema, max_whitespace=max_whitespace, separators=separators)
        options = xgrammar_options(max_whitespace, separators)
        grammar = xgrammar.Grammar.from_json_schema(schema, **options)
        for text in candidates(name, schema, dfa, separators):
            expected = _is_grammar_accept_string(grammar, text)
            assert dfa.matches(text.encode()) == expected, (name, options, text)


def test_integer_ranges_are_exact() -> None:
    # Reference: the comparison itself, over every integer near the bounds.
    rng = random.Random(1)
    for _ in range(40):
        low, high = sorted(
            rng.choice([rng.randrange(-2000, 2000), rng.randrange(-9, 10)]) for _ in range(2)
        )
        dfa = compile_json_schema({"type": "integer", "minimum": low, "maximum": high})
        for n in range(low - 150, high + 150):
            assert dfa.matches(str(n).encode()) == (low <= n <= high), (low, high, n)
        assert not dfa.matches(b"-0") and not dfa.matches(f"0{abs(high)}".encode())
    for low, high in [
        (0, 10**12),
        (-(10**9), 123456789),
        (99999, 100001),
        (-5000, None),
        (None, 70),
    ]:
        schema: dict[str, Any] = {"type": "integer"}
        if low is not None:
            schema["minimum"] = low
        if high is not None:
            schema["maximum"] = high
        dfa = compile_json_schema(schema)
        edges = [b for b in (low, high) if b is not None] + [0]
        near = {e + d for e in edges for d in range(-30, 31)}
        near |= {sign * 10**k + d for k in range(14) for sign in (1, -1) for d in (-1, 0, 1)}
        for n in near:
            inside = (low is None or n >= low) and (high is None or n <= high)
            assert dfa.matches(str(n).encode()) == inside, (low, high, n)


def test_number_ranges_are_exact_without_exponents() -> None:
    # Reference: Decimal comparison of the written number.
    rng = random.Random(2)
    texts = [f"{n}" for n in range(-12, 13)] + [
        f"{n}.{f}" for n in range(-12, 13) for f in ("0", "00", "5", "05", "999", "001")
    ]
    texts += ["-0.5", "-0.0", "-0"]
    for _ in range(30):
        low, high = sorted(rng.sample(range(-10, 11), 2))
        lo_key = rng.choice(["minimum", "exclusiveMinimum"])
        hi_key = rng.choice(["maximum", "exclusiveMaximum"])
        schema = {"type": "number", lo_key: low, hi_key: high}
        try:
            dfa = compile_json_schema(schema)
        except UnsupportedSchema:
            assert (lo_key, hi_key) != ("minimum", "maximum")
            continue
        for text in texts:
            value = Decimal(text)
            inside = (value >= low if lo_key == "minimum" else value > low) and (
                value <= high if hi_key == "maximum" else value < high
            )
            if text in ("-0", "-0.0"):  # never written: JSON's negative zero is left out
                inside = False
            assert dfa.matches(text.encode()) == inside, (schema, text)


def test_string_length_counts_characters_and_escapes_as_one() -> None:
    dfa = compile_json_schema({"type": "string", "minLength": 3, "maxLength": 3})
    for text in ["abc", "\u00e9\u00e9\u00e9", "\U0001f600ab", 'a"b', "\\\\\\"]:
        assert dfa.matches(dumps(text, (",", ":")).encode()) == (len(text) == 3)
    assert dfa.matches(b'"\\u0041bc"') and not dfa.matches(b'"\\u00bc"')


def test_schema_given_as_json_text() -> None:
    assert compile_json_schema('{"type": "integer", "maximum": 3}').matches(b"3")


@pytest.mark.parametrize(
    "schema, named",
    [
        ({"type": "object", "patternProperties": {"^a": {}}}, "'patternProperties' at #"),
        ({"properties": {"x": {"type": "string", "format": "ipv4"}}}, "'format' at #/properties/x"),
        ({"type": "string", "pattern": "(a)\\1"}, "'pattern' at #/pattern"),
        ({"type": "string", "pattern": "a(?=b)"}, "lookaround"),
        ({"type": "string", "pattern": "a", "maxLength": 3}, "'maxLength' at #"),
        ({"type": "string", "maxLength": 5000}, "'maxLength' at #"),
        ({"type": "number", "minimum": 0.5}, "'minimum' at #"),
        ({"type": "integer", "multipleOf": 2}, "'multipleOf' at #"),
        ({"type": "array", "uniqueItems": True}, "'uniqueItems' at #"),
        ({"type": "array", "items": [{"type": "integer"}]}, "'items' at #"),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "'oneOf' at #"),
        ({"allOf": [{"type": "integer"}, {"minimum": 0}]}, "'allOf' at #"),
        ({"$ref": "https://example.com/s.json"}, "'$ref' at #"),
        ({"$ref": "#/$defs/missing"}, "points to nothing"),
        ({"type": "object", "properties": {"a": {}}, "required": ["b"]}, "'required' at #"),
        ({"anyOf": [{"type": "null"}], "type": "object"}, "'anyOf' at # is not supported"),
        ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer lies within"),
        ({"type": "foo"}, "not a JSON Schema type"),
        ({"enum": []}, "non-empty list"),
        ({"type": "array", "minItems": 3, "maxItems": 2}, "'maxItems' at #"),
        ({"properties": {"a": {}, "b": {}}, "maxProperties": 1}, "'maxProperties' at #"),
        ({"properties": {"a": {}}, "propertyNames": {"maxLength": 1}}, "'propertyNames' at #"),
        ({"type": "object", "propertyNames": {"type": "integer"}}, "'propertyNames' at #"),
        ({"type": "object", "propertyNames": {"enum": ["a"]}}, "'enum' at #/propertyNames"),
        ({"type": "object", "maxProperties": 5000}, "'maxProperties' at #"),
        ({"type": "string", "minLength": -1}, "'minLength' at #"),
        ({"properties": {"a": {"not": {}}}, "required": ["a"]}, "'not' at #/properties/a"),
        ({"type": "object", "properties": {"n": LINKED}, "required": ["n"], "$defs": {}}, None),
    ],
)
def test_unsupported_schema_names_keyword_and_path(schema: Any, named: str | None) -> None:
    if named is None:  # a recursive schema nested under a property still compiles
        compile_json_schema(schema)
        return
    with pytest.raises(UnsupportedSchema, match=re.escape(named)):
        compile_json_schema(schema)


def test_schemas_with_no_document_or_bad_input_are_user_errors() -> None:
    forever = {"type": "object", "properties": {"self": {"$ref": "#"}}, "required": ["self"]}
    with pytest.raises(UnsupportedSchema, match="allows no document"):
        compile_json_schema(forever)
    with pytest.raises(LLMHoodError, match="not valid JSON"):
        compile_json_schema("{type: integer}")
    with pytest.raises(LLMHoodError, match="object or a boolean"):
        compile_json_schema(["integer"])  # type: ignore[arg-type]
    with pytest.raises(LLMHoodError, match="max_whitespace"):
        compile_json_schema({}, max_whitespace=-1)
    with pytest.raises(LLMHoodError, match="separators"):
        compile_json_schema({}, separators=(",", ""))


def test_regex_form_compiles_to_the_same_language() -> None:
    text = schema_to_regex(WEATHER, separators=(", ", ": "))
    dfa = compile_regex(text)
    assert dfa.matches(dumps({"location": "x", "unit": "celsius"}, (", ", ": ")).encode())
    # The regex is also valid Python syntax with the same full matches (re is the reference).
    doc = dumps({"location": "x", "unit": "celsius", "days": 3}, (", ", ": "))
    assert re.fullmatch(text, doc)


def test_max_digits_bounds_every_number() -> None:
    """With max_digits D, numbers lie within ±(10**D - 1), with at most D decimals and no
    exponent: a document's numbers cannot run on. The values allowed are a subset of the
    schema's, checked against jsonschema, and a DFA of bounded numbers only is acyclic (its
    language is finite)."""
    schema = {"type": "object", "properties": {
        "n": {"type": "number"}, "i": {"type": "integer"},
        "low": {"type": "integer", "minimum": -5}, "r": {"type": "number", "maximum": 2}},
        "required": ["n", "i", "low", "r"]}  # fmt: skip
    dfa = compile_regex(schema_to_regex(schema, separators=(",", ":"), max_digits=3))
    good = [{"n": 998.999, "i": -999, "low": -5, "r": 1.5}, {"n": 0, "i": 0, "low": 999, "r": -2}]
    bad = [{"n": 1000, "i": 0, "low": 0, "r": 0}, {"n": 1.2345, "i": 0, "low": 0, "r": 0},
           {"n": 1e5, "i": 0, "low": 0, "r": 0}, {"n": 0, "i": 1234, "low": 0, "r": 0},
           {"n": 0, "i": 0, "low": -6, "r": 0}, {"n": 0, "i": 0, "low": 0, "r": 2.5}]  # fmt: skip
    for document in good:
        assert is_valid(schema, document)
        assert dfa.matches(json.dumps(document, separators=(",", ":")).encode()), document
    for document in bad:
        assert not dfa.matches(json.dumps(document, separators=(",", ":")).encode()), document
    assert not dfa.matches(b'{"n":1.50,"i":0,"low":0,"r":0}')  # a subset: no trailing zeros
    assert dfa.matches(b'{"n":1.5,"i":0,"low":0,"r":0.0}')
    dist = distances(dfa)
    rng = random.Random(0)
    for _ in range(50):
        assert is_valid(schema, json.loads(random_document(dfa, dist, rng, budget=200)))
    live = [s for s in range(1, len(dfa.transitions)) if dist[s] < 1 << 30]
    graph = {s: {int(t) for t in dfa.transitions[s] if t and dist[t] < 1 << 30} for s in live}
    done: set[int] = set()

    def acyclic(state: int, path: frozenset[int]) -> bool:
        if state in path:
            return False
        if state in done:
            return True
        ok = all(acyclic(t, path | {state}) for t in graph[state])
        done.add(state)
        return ok

    assert acyclic(dfa.start, frozenset())
    with pytest.raises(LLMHoodError, match="max_digits must be a whole number"):
        schema_to_regex(schema, max_digits=0)
