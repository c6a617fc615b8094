"""function_schema against JSON Schema itself: every schema passes jsonschema's metaschema
check, accepts the values its Python type holds and rejects others (jsonschema is the
reference validator), and the docstring styles all give the same descriptions."""

from __future__ import annotations

import dataclasses
import enum
from typing import Annotated, Any, Literal, Optional, TypedDict, get_type_hints

import jsonschema
import pytest

from llmhood.agent.schema import SchemaError, from_json, function_schema

VALIDATOR = jsonschema.Draft202012Validator


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


@dataclasses.dataclass
class Point:
    """A point on the map.

    Attributes:
        lat: Latitude in degrees.
        lon: Longitude in degrees.
    """

    lat: float
    lon: float = 0.0


class Address(TypedDict):
    street: str
    number: int


def weather(
    city: str,
    days: int = 3,
    unit: Unit = Unit.CELSIUS,
    detail: Literal["short", "long"] = "short",
    at: Optional[Point] = None,  # noqa: UP045 - the typing spelling is what is under test
    tags: list[str] | None = None,
    span: tuple[int, int] = (0, 24),
    seen: set[str] = frozenset(),
    weights: dict[str, float] | None = None,
    address: Address | None = None,
    rain: Annotated[bool, "Whether to include rain."] = False,
) -> str:
    """The weather forecast for a city.

    Longer text that is not the summary.

    Args:
        city: The city's name.
        days: How many days ahead.
    """
    return city


def schema_of(fn: Any) -> dict[str, Any]:
    spec = function_schema(fn)
    VALIDATOR.check_schema(spec["parameters"])
    return spec


def test_openai_form_required_defaults_and_descriptions():
    spec = schema_of(weather)
    assert set(spec) == {"name", "description", "parameters"}
    assert spec["name"] == "weather" and spec["description"] == "The weather forecast for a city."
    parameters = spec["parameters"]
    assert parameters["type"] == "object" and parameters["required"] == ["city"]
    assert parameters["additionalProperties"] is False
    properties = parameters["properties"]
    assert properties["city"] == {"type": "string", "description": "The city's name."}
    assert properties["days"] == {"type": "integer", "description": "How many days ahead.",
                                  "default": 3}  # fmt: skip
    assert properties["unit"] == {"type": "string", "enum": ["celsius", "fahrenheit"],
                                  "default": "celsius"}  # fmt: skip
    assert properties["detail"]["enum"] == ["short", "long"]
    assert properties["span"]["default"] == [0, 24] and properties["seen"]["default"] == []
    assert properties["rain"]["description"] == "Whether to include rain."


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("days", [0, -5, 3.0], [1.5, "3", True, None]),  # 3.0 is an integer in JSON Schema
        ("unit", ["celsius"], ["kelvin", "CELSIUS"]),
        ("detail", ["long"], ["medium"]),
        ("at", [None, {"lat": 1.5}, {"lat": 1, "lon": 2}], [{"lon": 2}, {"lat": 1, "x": 0}]),
        ("tags", [None, [], ["a", "b"]], [["a", 1], "a"]),
        ("span", [[1, 2]], [[1], [1, 2, 3], [1, "2"]]),
        ("seen", [[], ["a", "b"]], [["a", "a"]]),
        ("weights", [{"a": 1.5, "b": 2}], [{"a": "x"}, [1.0]]),
        ("address", [{"street": "Main", "number": 5}], [{"street": "Main"}]),
        ("rain", [True, False], [0, "true"]),
    ],
)
def test_schemas_accept_their_types_values_and_reject_others(name, good, bad):
    schema = schema_of(weather)["parameters"]["properties"][name]
    validator = VALIDATOR(schema)
    for value in good:
        assert validator.is_valid(value), (name, value)
    for value in bad:
        assert not validator.is_valid(value), (name, value)


@dataclasses.dataclass
class Trip:
    start: Point
    stops: list[Point]


def plan(trip: Trip) -> None:
    """Plan a trip."""


def test_dataclass_fields_take_their_descriptions_and_nest():
    schema = schema_of(plan)["parameters"]["properties"]["trip"]
    point = schema["properties"]["start"]
    assert point["description"] == "A point on the map."
    assert point["properties"]["lat"] == {"type": "number", "description": "Latitude in degrees."}
    assert point["required"] == ["lat"] and schema["required"] == ["start", "stops"]
    assert schema["properties"]["stops"]["items"] == point


GOOGLE = """Add two numbers.

    Args:
        a: The first number.
        b: The second number.
    """
NUMPY = """Add two numbers.

    Parameters
    ----------
    a : int
        The first number.
    b : int
        The second number.
    """
REST = """Add two numbers.

    :param a: The first number.
    :param b: The second number.
    """


@pytest.mark.parametrize("doc", [GOOGLE, NUMPY, REST], ids=["google", "numpy", "rest"])
def test_docstring_styles_give_the_same_descriptions(doc):
    def add(a: int, b: int) -> int:
        return a + b

    add.__doc__ = doc
    spec = schema_of(add)
    assert spec["description"] == "Add two numbers."
    properties = spec["parameters"]["properties"]
    assert properties["a"]["description"] == "The first number."
    assert properties["b"]["description"] == "The second number."


def test_methods_skip_self_and_a_function_without_docstring_has_empty_description():
    class Shop:
        def buy(self, item: str, count: int = 1) -> str:
            return item

    spec = schema_of(Shop().buy)
    assert list(spec["parameters"]["properties"]) == ["item", "count"]
    assert spec["description"] == ""


def test_from_json_rebuilds_python_types():
    properties = function_schema(weather)["parameters"]["properties"]
    cases = {"days": 3.0, "unit": "fahrenheit", "at": {"lat": 1}, "span": [1, 2],
             "seen": ["a"], "tags": None}  # fmt: skip
    for name, value in cases.items():
        assert VALIDATOR(properties[name]).is_valid(value)
    hints = get_type_hints(weather, include_extras=True)
    assert from_json(3.0, hints["days"]) == 3 and type(from_json(3.0, hints["days"])) is int
    assert from_json("fahrenheit", hints["unit"]) is Unit.FAHRENHEIT
    assert from_json({"lat": 1}, hints["at"]) == Point(1, 0.0)
    assert type(from_json({"lat": 1}, hints["at"]).lat) is float  # JSON 1 -> declared float
    assert from_json([1, 2], hints["span"]) == (1, 2)
    assert from_json(["a"], hints["seen"]) == {"a"}
    assert from_json(None, hints["tags"]) is None


def no_hint(city, days: int):  # type: ignore[no-untyped-def]
    return city


def star_args(*cities: str):
    return cities


def star_kwargs(**options: str):
    return options


def any_value(value: Any):
    return value


def bare_object(value: object):
    return value


def bare_list(values: list):
    return values


def int_keys(table: dict[int, str]):
    return table


class Opaque:
    pass


def opaque(thing: Opaque):
    return thing


@dataclasses.dataclass
class Node:
    value: int
    children: list[Node]


def recursive(tree: Node):
    return tree


def unresolved(x: NoSuchType):  # type: ignore[name-defined]  # noqa: F821
    return x


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (no_hint, ["'city'", "no_hint", "no type hint"]),
        (star_args, ["*cities", "star_args", "by name"]),
        (star_kwargs, ["**options", "star_kwargs"]),
        (any_value, ["'value'", "any_value", "no shape"]),
        (bare_object, ["'value'", "bare_object", "no shape"]),
        (bare_list, ["'values'", "does not say what it holds"]),
        (int_keys, ["'table'", "keys are strings"]),
        (opaque, ["'thing'", "Opaque", "not a type JSON can carry"]),
        (recursive, ["'tree'", "Node contains itself"]),
        (unresolved, ["unresolved", "NoSuchType"]),
    ],
)
def test_undescribable_signatures_name_the_parameter_and_why(fn, words):
    with pytest.raises(SchemaError) as error:
        function_schema(fn)
    for word in words:
        assert word in str(error.value), (word, str(error.value))
