"""Synthetic tool-calling conversations, of our own making, to fine-tune a small model on.

SmolLM2-135M-Instruct knows the shape of a call but copies arguments badly and calls a tool
whether or not one fits. A LoRA adapter trained on conversations that show the right call
(or the right refusal) for many functions, phrasings and values teaches both. Every function,
question and answer here was written for this module: nothing comes from BFCL (its package
was never opened while writing it), so scoring the adapter on BFCL measures generalisation,
not recall.

Each row is one conversation in the `messages` form `llmhood train --format openai` reads,
rendered by `SMOLLM2.messages` exactly as the agent renders a live conversation: a system
prompt listing the offered functions, the user's question, and the assistant's reply
`<tool_call>[...]</tool_call>`, or `<tool_call>[\\n]</tool_call>` when no function serves it.
The kinds of rows, and their shares (`KIND_WEIGHTS`):

* single (40%): one call; the right function among 0 to 3 distractors, some of them from the
  same domain (the hard case: a circle's area asked, a triangle's offered too);
* parallel (20%): one question asking for several things, answered with several calls, to one
  function with different values or to different functions;
* multi_turn (12%): a call, the tool's result sent back in a `<tool_response>` user turn,
  then the assistant's answer in plain text;
* irrelevant (23%): the empty list, because no offered function serves the question (the
  function that would is left out), because the question lacks a value the right function
  requires ("What's the weather like?" with no city), or because it needs no tool at all;
* chinese (5%): single calls asked in Chinese.

Questions come from several templates per function with random values, numbers written as
digits, politely or tersely. Arguments are what the question says, copied ("in Lima" ->
"Lima") or converted to what the schema asks ("5 km" -> 5 and "km", "in euros" -> "EUR",
"4.5%" -> 0.045 where the rate is a fraction, "March 5, 2025" -> "2025-03-05"). An optional
parameter appears only when the question gives it, so the model learns to leave the rest out.
Rows are a function of the seed alone.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from llmhood.agent.formats import SMOLLM2, ToolCall, ToolSpec
from llmhood.durable import fsync_path
from llmhood.errors import LLMHoodError

KIND_WEIGHTS = {
    "single": 0.40,
    "parallel": 0.20,
    "multi_turn": 0.12,
    "irrelevant": 0.23,
    "chinese": 0.05,
}
IRRELEVANT_WEIGHTS = {"unoffered": 0.55, "missing_value": 0.25, "no_tool_needed": 0.20}
MAX_OFFERED = 4  # functions in one system prompt: BFCL-sized prompts, and a short sequence


@dataclass(frozen=True)
class Request:
    """A question and the arguments of the one call that answers it."""

    question: str
    arguments: dict[str, Any]


Ask = Callable[[random.Random], Request]
Answer = Callable[[dict[str, Any]], tuple[dict[str, Any], str]]  # -> (tool result, reply)


@dataclass(frozen=True, eq=False)
class Function:
    """One invented function: what the model is told, how it is asked for, and, for
    multi-turn rows, what it returns and how the assistant reports it."""

    spec: ToolSpec
    domain: str
    ask: Ask
    vague: tuple[str, ...]  # questions on its topic that lack a value it requires
    answer: Answer | None
    chinese: Ask | None


LIBRARY: list[Function] = []
OVERLAPS = {  # functions that could each serve the other's questions: never a distractor
    "get_current_weather": {"get_weather_forecast"},
    "get_weather_forecast": {"get_current_weather"},
}


# ---- JSON Schema in a few words ------------------------------------------------------------


def parameters(properties: dict[str, dict[str, Any]], required: Sequence[str]) -> dict[str, Any]:
    """An object schema that names every argument it accepts: the agent, like BFCL's
    checker, rejects arguments a function does not declare."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def number(description: str) -> dict[str, Any]:
    return {"type": "number", "description": description}


def integer(description: str, minimum: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "description": description}
    if minimum is not None:
        schema["minimum"] = minimum
    return schema


def boolean(description: str) -> dict[str, Any]:
    return {"type": "boolean", "description": description}


def choice(description: str, values: Sequence[str]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values), "description": description}


def array(description: str, items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items, "minItems": 1, "description": description}


def function(
    domain: str,
    name: str,
    description: str,
    schema: dict[str, Any],
    vague: Sequence[str] = (),
    answer: Answer | None = None,
) -> Callable[[Ask], Ask]:
    """Register the decorated question maker as `name` in LIBRARY."""

    def register(ask: Ask) -> Ask:
        spec = ToolSpec(name, description, schema)
        LIBRARY.append(Function(spec, domain, ask, tuple(vague), answer, None))
        return ask

    return register


def chinese(name: str) -> Callable[[Ask], Ask]:
    """Register the decorated maker of Chinese questions for the function `name`."""

    def register(ask: Ask) -> Ask:
        (i,) = [i for i, f in enumerate(LIBRARY) if f.spec.name == name]
        LIBRARY[i] = replace(LIBRARY[i], chinese=ask)
        return ask

    return register


# ---- values and phrasing -------------------------------------------------------------------

CITIES = ("Paris", "Tokyo", "Nairobi", "Lima", "Oslo", "Toronto", "Mumbai", "Sydney",
          "Cairo", "Denver", "Lisbon", "Seoul", "Reykjavik", "Santiago", "Hanoi",
          "Krakow", "Accra", "Vancouver", "Marrakesh", "Tallinn")  # fmt: skip
TEAMS = ("Harbor City Herons", "Northfield Foxes", "Red Valley Rams", "Lakeside Otters",
         "Iron Bay Pilots", "Summit Owls", "Westbrook Lynx", "Cedar Falls Comets")  # fmt: skip
PLAYERS = ("Mara Quell", "Tobias Renn", "Ines Valka", "Dario Moss", "Yuki Tanabe", "Lena Brask")
LEAGUES = ("Coastal Premier League", "Northern Basketball Union", "Metro Hockey Circuit")
CUISINES = ("Thai", "Italian", "Ethiopian", "Mexican", "Korean", "Lebanese", "vegan")
FOODS = ("banana", "oatmeal", "almonds", "brown rice", "salmon", "lentils", "avocado")
INGREDIENTS = ("chicken", "spinach", "tomatoes", "rice", "garlic", "chickpeas", "eggs",
               "tofu", "mushrooms", "basil", "potatoes", "lemon")  # fmt: skip
TICKERS = ("AAPL", "MSFT", "NVDA", "TSLA", "AMZN", "SAP", "TM")
PEOPLE = ("dana@example.com", "li.wei@example.org", "sam.okafor@example.net")
PHRASES = ("the quick brown fox", "a man a plan a canal panama", "hello world",
           "machine learning is fun", "never odd or even",
           "small models can call tools")  # fmt: skip
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")  # fmt: skip
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
GREETINGS = ("", "", "", "Hi! ", "Hello! ", "Quick question: ", "Hey there. ")
CLOSINGS = ("", "", "", " Thanks!", " Thank you.", " Thanks in advance.")


def ended(sentence: str) -> str:
    """The sentence with a full stop when it has no closing punctuation (terse questions)."""
    return sentence if sentence.endswith((".", "?", "!")) else sentence + "."


def polite(rng: random.Random, question: str) -> str:
    """The same question, sometimes with a greeting or thanks around it."""
    closing = rng.choice(CLOSINGS)
    return f"{rng.choice(GREETINGS)}{ended(question) if closing else question}{closing}"


def some_date(rng: random.Random) -> date:
    return date(2024, 1, 1) + timedelta(days=rng.randrange(4 * 365))


def spoken(day: date, rng: random.Random) -> str:
    """A date as people write it; the schema asks for ISO 8601 (YYYY-MM-DD)."""
    forms = (
        day.isoformat(),
        f"{MONTHS[day.month - 1]} {day.day}, {day.year}",
        f"{day.day} {MONTHS[day.month - 1]} {day.year}",
    )
    return rng.choice(forms)


def numbers_phrase(values: Sequence[float]) -> str:
    return ", ".join(str(v) for v in values[:-1]) + f" and {values[-1]}"


def decimal(rng: random.Random, low: float, high: float, places: int = 1) -> float:
    return round(rng.uniform(low, high), places)


# ---- weather -------------------------------------------------------------------------------

TEMPERATURE_UNITS = {"celsius": ("Celsius", "°C"), "fahrenheit": ("Fahrenheit", "°F")}


def report_weather(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    unit = arguments.get("unit", "celsius")
    degrees = 21 if unit == "celsius" else 70
    result = {
        "city": arguments["city"],
        "temperature": degrees,
        "unit": unit,
        "condition": "partly cloudy",
    }
    symbol = TEMPERATURE_UNITS[unit][1]
    return result, f"It is {degrees}{symbol} and partly cloudy in {arguments['city']} right now."


@function(
    "weather",
    "get_current_weather",
    "Report the weather in a city right now.",
    parameters(
        {
            "city": string("The city, e.g. Lisbon."),
            "unit": choice(
                "The temperature unit; celsius when not given.", list(TEMPERATURE_UNITS)
            ),
        },
        ["city"],
    ),
    vague=(
        "What's the weather like right now?",
        "Is it cold outside today?",
        "Tell me the current temperature.",
    ),
    answer=report_weather,
)
def ask_current_weather(rng: random.Random) -> Request:
    city = rng.choice(CITIES)
    arguments: dict[str, Any] = {"city": city}
    if rng.random() < 0.4:
        arguments["unit"] = rng.choice(list(TEMPERATURE_UNITS))
        name, symbol = TEMPERATURE_UNITS[arguments["unit"]]
        question = rng.choice(
            (
                f"What's the weather in {city} in {name}?",
                f"weather {city} {symbol}",
                f"How warm is it in {city} right now, in degrees {name}?",
            )
        )
    else:
        question = rng.choice(
            (
                f"What's the weather like in {city}?",
                f"weather {city}",
                f"Is it sunny in {city} at the moment?",
                f"Tell me the current weather for {city}.",
            )
        )
    return Request(question, arguments)


@chinese("get_current_weather")
def ask_current_weather_zh(rng: random.Random) -> Request:
    city = rng.choice(CITIES)
    return Request(
        rng.choice((f"{city}现在天气怎么样？", f"请告诉我{city}的天气。")), {"city": city}
    )


@function(
    "weather",
    "get_weather_forecast",
    "The weather forecast for a city over the coming days.",
    parameters(
        {
            "city": string("The city to forecast."),
            "days": integer("How many days ahead, 1 to 14.", minimum=1),
            "include_hourly": boolean("Whether to include an hour-by-hour breakdown."),
        },
        ["city", "days"],
    ),
    vague=("What will the weather be like this weekend?", "Give me the forecast for 5 days."),
)
def ask_forecast(rng: random.Random) -> Request:
    city, days = rng.choice(CITIES), rng.randint(2, 10)
    arguments: dict[str, Any] = {"city": city, "days": days}
    question = rng.choice(
        (
            f"What's the {days}-day forecast for {city}?",
            f"Forecast the weather in {city} for the next {days} days.",
            f"forecast {city} {days} days",
        )
    )
    if rng.random() < 0.3:
        arguments["include_hourly"] = True
        question = question.rstrip(".?") + ", with hourly detail."
    return Request(question, arguments)


@function(
    "weather",
    "get_air_quality",
    "The air quality index of a city, overall or for one pollutant.",
    parameters(
        {
            "city": string("The city."),
            "pollutant": choice(
                "One pollutant to report instead of the overall index.",
                ["pm2.5", "pm10", "ozone", "no2"],
            ),
        },
        ["city"],
    ),
    vague=("Is the air safe to breathe today?",),
)
def ask_air_quality(rng: random.Random) -> Request:
    city = rng.choice(CITIES)
    if rng.random() < 0.4:
        pollutant, said = rng.choice(
            (("pm2.5", "PM2.5"), ("ozone", "ozone"), ("no2", "NO2"), ("pm10", "PM10"))
        )
        return Request(
            f"What is the {said} level in {city} today?", {"city": city, "pollutant": pollutant}
        )
    question = rng.choice((f"How is the air quality in {city}?", f"air quality index {city}"))
    return Request(question, {"city": city})


# ---- conversions ---------------------------------------------------------------------------

LENGTHS = {
    "km": ("km", "kilometers", 1000.0),
    "m": ("m", "meters", 1.0),
    "mile": ("mi", "miles", 1609.344),
    "ft": ("ft", "feet", 0.3048),
    "inch": ("in", "inches", 0.0254),
}
WEIGHTS = {
    "kg": ("kg", "kilograms", 1.0),
    "lb": ("lb", "pounds", 0.45359237),
    "g": ("g", "grams", 0.001),
    "oz": ("oz", "ounces", 0.028349523125),
}
CURRENCIES = {
    "USD": ("US dollars", "$"),
    "EUR": ("euros", "€"),
    "GBP": ("British pounds", "£"),
    "JPY": ("Japanese yen", "¥"),
    "INR": ("Indian rupees", "₹"),
    "BRL": ("Brazilian reais", "R$"),
}
RATES_TO_USD = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27, "JPY": 0.0067, "INR": 0.012, "BRL": 0.2}


def said_unit(rng: random.Random, table: dict[str, tuple[str, str, float]], unit: str) -> str:
    return rng.choice(table[unit][:2])


def converted(table: dict[str, tuple[str, str, float]]) -> Answer:
    def answer(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
        source, target = table[arguments["from_unit"]], table[arguments["to_unit"]]
        value = round(arguments["value"] * source[2] / target[2], 3)
        reply = f"{arguments['value']} {source[1]} is about {value} {target[1]}."
        return {"value": value, "unit": arguments["to_unit"]}, reply

    return answer


@function(
    "conversion",
    "convert_length",
    "Convert a length from one unit to another.",
    parameters(
        {
            "value": number("The length to convert."),
            "from_unit": choice("The unit of the value.", list(LENGTHS)),
            "to_unit": choice("The unit to convert to.", list(LENGTHS)),
        },
        ["value", "from_unit", "to_unit"],
    ),
    vague=("How many feet is that?", "How many meters is that?"),
    answer=converted(LENGTHS),
)
def ask_length(rng: random.Random) -> Request:
    source, target = rng.sample(list(LENGTHS), 2)
    value = rng.choice((rng.randint(1, 500), decimal(rng, 0.5, 50)))
    a, b = said_unit(rng, LENGTHS, source), said_unit(rng, LENGTHS, target)
    question = rng.choice(
        (
            f"Convert {value} {a} to {b}.",
            f"How many {LENGTHS[target][1]} are in {value} {a}?",
            f"{value} {a} in {b}?",
        )
    )
    return Request(question, {"value": value, "from_unit": source, "to_unit": target})


@chinese("convert_length")
def ask_length_zh(rng: random.Random) -> Request:
    value = rng.randint(1, 300)
    source, target, said = rng.choice(
        (
            ("km", "mile", ("公里", "英里")),
            ("mile", "km", ("英里", "公里")),
            ("m", "ft", ("米", "英尺")),
        )
    )
    return Request(
        f"把{value}{said[0]}换算成{said[1]}。",
        {"value": value, "from_unit": source, "to_unit": target},
    )


@function(
    "conversion",
    "convert_weight",
    "Convert a mass between kilograms, pounds, grams and ounces.",
    parameters(
        {
            "value": number("The mass to convert."),
            "from_unit": choice("The unit of the value.", list(WEIGHTS)),
            "to_unit": choice("The unit to convert to.", list(WEIGHTS)),
        },
        ["value", "from_unit", "to_unit"],
    ),
    answer=converted(WEIGHTS),
)
def ask_weight(rng: random.Random) -> Request:
    source, target = rng.sample(list(WEIGHTS), 2)
    value = rng.choice((rng.randint(1, 200), decimal(rng, 0.2, 20)))
    a, b = said_unit(rng, WEIGHTS, source), WEIGHTS[target][1]
    question = rng.choice(
        (
            f"How many {b} is {value} {a}?",
            f"Convert {value} {a} into {b}.",
            f"{value}{WEIGHTS[source][0]} to {WEIGHTS[target][0]}",
        )
    )
    return Request(question, {"value": value, "from_unit": source, "to_unit": target})


def temperature_in(value: float, source: str, target: str) -> float:
    kelvin = {
        "celsius": value + 273.15,
        "fahrenheit": (value - 32) * 5 / 9 + 273.15,
        "kelvin": value,
    }[source]
    return {
        "celsius": kelvin - 273.15,
        "fahrenheit": (kelvin - 273.15) * 9 / 5 + 32,
        "kelvin": kelvin,
    }[target]


def report_temperature(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    value = round(
        temperature_in(arguments["value"], arguments["from_scale"], arguments["to_scale"]), 2
    )
    reply = (
        f"{arguments['value']} degrees {arguments['from_scale']} is {value} degrees "
        f"{arguments['to_scale']}."
    )
    return {"value": value, "scale": arguments["to_scale"]}, reply


@function(
    "conversion",
    "convert_temperature",
    "Convert a temperature between Celsius, Fahrenheit and Kelvin.",
    parameters(
        {
            "value": number("The temperature to convert."),
            "from_scale": choice("The scale of the value.", ["celsius", "fahrenheit", "kelvin"]),
            "to_scale": choice("The scale to convert to.", ["celsius", "fahrenheit", "kelvin"]),
        },
        ["value", "from_scale", "to_scale"],
    ),
    vague=("Convert the oven temperature to Fahrenheit.",),
    answer=report_temperature,
)
def ask_temperature(rng: random.Random) -> Request:
    source, target = rng.sample(["celsius", "fahrenheit", "kelvin"], 2)
    value = rng.randint(-30, 250) if source != "kelvin" else rng.randint(200, 500)
    said = {
        "celsius": ("°C", "degrees Celsius"),
        "fahrenheit": ("°F", "degrees Fahrenheit"),
        "kelvin": (" K", " kelvin"),
    }
    question = rng.choice(
        (
            f"What is {value}{said[source][0]} in {target.capitalize()}?",
            f"Convert {value} {said[source][1].strip()} to {target}.",
            f"{value}{said[source][0]} -> {said[target][0].strip()}",
        )
    )
    return Request(question, {"value": value, "from_scale": source, "to_scale": target})


@chinese("convert_temperature")
def ask_temperature_zh(rng: random.Random) -> Request:
    value = rng.randint(-20, 120)
    return Request(
        f"{value}摄氏度等于多少华氏度？",
        {"value": value, "from_scale": "celsius", "to_scale": "fahrenheit"},
    )


def report_currency(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    source, target = arguments["from_currency"], arguments["to_currency"]
    value = round(arguments["amount"] * RATES_TO_USD[source] / RATES_TO_USD[target], 2)
    reply = f"{arguments['amount']} {source} is about {value} {target} at today's rate."
    return {"amount": value, "currency": target}, reply


@function(
    "conversion",
    "convert_currency",
    "Convert an amount of money between currencies at today's exchange rate.",
    parameters(
        {
            "amount": number("The amount of money."),
            "from_currency": choice("ISO 4217 code of the amount's currency.", list(CURRENCIES)),
            "to_currency": choice("ISO 4217 code of the currency wanted.", list(CURRENCIES)),
        },
        ["amount", "from_currency", "to_currency"],
    ),
    vague=("How much is that in euros?", "Convert my salary to yen."),
    answer=report_currency,
)
def ask_currency(rng: random.Random) -> Request:
    source, target = rng.sample(list(CURRENCIES), 2)
    amount = rng.choice((rng.randint(5, 5000), decimal(rng, 1, 900, 2)))
    words, symbol = CURRENCIES[source]
    said = rng.choice((f"{amount} {words}", f"{amount} {source}", f"{symbol}{amount}"))
    question = rng.choice(
        (
            f"How much is {said} in {CURRENCIES[target][0]}?",
            f"Convert {said} to {target}.",
            f"{said} to {CURRENCIES[target][0]}, please",
        )
    )
    return Request(question, {"amount": amount, "from_currency": source, "to_currency": target})


@chinese("convert_currency")
def ask_currency_zh(rng: random.Random) -> Request:
    amount = rng.randint(10, 2000)
    source, target, said = rng.choice(
        (
            ("USD", "EUR", ("美元", "欧元")),
            ("EUR", "JPY", ("欧元", "日元")),
            ("GBP", "USD", ("英镑", "美元")),
        )
    )
    return Request(
        f"{amount}{said[0]}能换多少{said[1]}？",
        {"amount": amount, "from_currency": source, "to_currency": target},
    )


# ---- geometry ------------------------------------------------------------------------------


def report_circle(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    area = round(math.pi * arguments["radius"] ** 2, 2)
    return {"area": area}, f"A circle of radius {arguments['radius']} has an area of {area}."


@function(
    "geometry",
    "circle_area",
    "The area of a circle from its radius.",
    parameters(
        {"radius": number("The radius, in any unit; the area is in that unit squared.")}, ["radius"]
    ),
    vague=("What's the area of a circle?", "How big is my round table?"),
    answer=report_circle,
)
def ask_circle(rng: random.Random) -> Request:
    radius = rng.choice((rng.randint(1, 40), decimal(rng, 0.5, 12)))
    question = rng.choice(
        (
            f"What is the area of a circle with radius {radius}?",
            f"Area of a circle, r = {radius} cm.",
            f"A round pond has a radius of {radius} m. How much area does it cover?",
        )
    )
    return Request(question, {"radius": radius})


@chinese("circle_area")
def ask_circle_zh(rng: random.Random) -> Request:
    radius = rng.randint(1, 30)
    return Request(f"半径为{radius}厘米的圆面积是多少？", {"radius": radius})


@function(
    "geometry",
    "triangle_area",
    "The area of a triangle from its base and height.",
    parameters(
        {"base": number("Length of the base."), "height": number("Height over the base.")},
        ["base", "height"],
    ),
    vague=("Find the area of a triangle with base 6.",),
)
def ask_triangle(rng: random.Random) -> Request:
    base, height = rng.randint(2, 60), rng.choice((rng.randint(2, 40), decimal(rng, 1, 20)))
    question = rng.choice(
        (
            f"Find the area of a triangle with base {base} and height {height}.",
            f"triangle area base={base} height={height}",
            f"A triangle is {height} units tall on a {base}-unit base. What's its area?",
        )
    )
    return Request(question, {"base": base, "height": height})


@function(
    "geometry",
    "rectangle_perimeter",
    "The perimeter of a rectangle.",
    parameters(
        {"length": number("The longer side."), "width": number("The shorter side.")},
        ["length", "width"],
    ),
)
def ask_rectangle(rng: random.Random) -> Request:
    width = rng.randint(1, 30)
    length = width + rng.randint(1, 30)
    question = rng.choice(
        (
            f"What's the perimeter of a {length} by {width} rectangle?",
            f"How much fence do I need around a {length} m x {width} m yard?",
        )
    )
    return Request(question, {"length": length, "width": width})


@function(
    "geometry",
    "sphere_volume",
    "The volume of a sphere from its radius.",
    parameters({"radius": number("The radius of the sphere.")}, ["radius"]),
    vague=("What's the volume of a ball?",),
)
def ask_sphere(rng: random.Random) -> Request:
    radius = rng.choice((rng.randint(1, 25), decimal(rng, 0.1, 5, 2)))
    question = rng.choice(
        (f"What is the volume of a sphere of radius {radius}?", f"sphere volume r={radius}")
    )
    return Request(question, {"radius": radius})


POINT = {
    "type": "object",
    "description": "A point in the plane.",
    "properties": {"x": number("The x coordinate."), "y": number("The y coordinate.")},
    "required": ["x", "y"],
    "additionalProperties": False,
}


def report_distance(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    a, b = arguments["point_a"], arguments["point_b"]
    distance = round(math.hypot(a["x"] - b["x"], a["y"] - b["y"]), 3)
    return {"distance": distance}, f"The two points are {distance} apart."


@function(
    "geometry",
    "distance_between_points",
    "The straight-line distance between two points in the plane.",
    parameters({"point_a": POINT, "point_b": POINT}, ["point_a", "point_b"]),
    vague=("How far apart are these two points?",),
    answer=report_distance,
)
def ask_distance(rng: random.Random) -> Request:
    a = {"x": rng.randint(-10, 10), "y": rng.randint(-10, 10)}
    b = {"x": rng.randint(-10, 10), "y": rng.randint(-10, 10)}
    question = rng.choice(
        (
            f"How far is ({a['x']}, {a['y']}) from ({b['x']}, {b['y']})?",
            f"Distance between points ({a['x']},{a['y']}) and ({b['x']},{b['y']})",
        )
    )
    return Request(question, {"point_a": a, "point_b": b})


# ---- finance -------------------------------------------------------------------------------


def report_interest(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    n = arguments.get("compounds_per_year", 1)
    total = arguments["principal"] * (1 + arguments["rate"] / n) ** (n * arguments["years"])
    total = round(total, 2)
    return {"final_amount": total}, f"After {arguments['years']} years you would have {total}."


@function(
    "finance",
    "compound_interest",
    "The balance of a deposit after compound interest.",
    parameters(
        {
            "principal": number("The amount deposited."),
            "rate": number("The annual interest rate as a fraction: 0.05 for 5%."),
            "years": integer("How many years it grows.", minimum=1),
            "compounds_per_year": integer(
                "How often interest is added per year; once when not given.", minimum=1
            ),
        },
        ["principal", "rate", "years"],
    ),
    vague=("How much will my savings grow at 4% interest?",),
    answer=report_interest,
)
def ask_interest(rng: random.Random) -> Request:
    principal = rng.choice((1000, 2500, 5000, 12000, rng.randint(100, 9000)))
    years = rng.randint(1, 30)
    percent = rng.choice((rng.randint(1, 9), decimal(rng, 1, 8)))
    arguments: dict[str, Any] = {
        "principal": principal,
        "rate": round(percent / 100, 6),
        "years": years,
    }
    question = (
        f"If I invest ${principal} at {percent}% a year for {years} years, how much will I have"
    )
    if rng.random() < 0.35:
        arguments["compounds_per_year"], said = rng.choice(
            ((12, "monthly"), (4, "quarterly"), (365, "daily"))
        )
        question += f" with interest compounded {said}"
    return Request(question + "?", arguments)


def report_loan(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    r, n = arguments["annual_rate"] / 100 / 12, arguments["months"]
    payment = arguments["principal"] * r / (1 - (1 + r) ** -n) if r else arguments["principal"] / n
    payment = round(payment, 2)
    return {"monthly_payment": payment}, f"The monthly payment would be {payment}."


@function(
    "finance",
    "loan_payment",
    "The fixed monthly payment that repays a loan.",
    parameters(
        {
            "principal": number("The amount borrowed."),
            "annual_rate": number("The annual interest rate in percent: 6.5 for 6.5%."),
            "months": integer("The number of monthly payments.", minimum=1),
        },
        ["principal", "annual_rate", "months"],
    ),
    vague=("What would my monthly mortgage payment be?",),
    answer=report_loan,
)
def ask_loan(rng: random.Random) -> Request:
    principal, months = rng.choice((8000, 15000, 25000, 300000)), rng.choice((12, 36, 60, 360))
    rate = rng.choice((rng.randint(2, 12), decimal(rng, 2, 9)))
    question = rng.choice(
        (
            f"What is the monthly payment on a {principal} loan at {rate}% over {months} months?",
            f"loan {principal}, {rate}% APR, {months} months: monthly payment?",
        )
    )
    return Request(question, {"principal": principal, "annual_rate": rate, "months": months})


def report_stock(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    return (
        {"ticker": arguments["ticker"], "price": 187.42, "currency": "USD"},
        f"{arguments['ticker']} is trading at 187.42 USD.",
    )


@function(
    "finance",
    "get_stock_price",
    "The latest trading price of a stock.",
    parameters(
        {
            "ticker": string("The stock's ticker symbol, e.g. IBM."),
            "exchange": choice(
                "The exchange to quote; the primary listing when not given.",
                ["NASDAQ", "NYSE", "LSE", "TSE"],
            ),
        },
        ["ticker"],
    ),
    vague=("What's the stock price right now?", "How are my shares doing?"),
    answer=report_stock,
)
def ask_stock(rng: random.Random) -> Request:
    ticker = rng.choice(TICKERS)
    if rng.random() < 0.3:
        exchange = rng.choice(("NASDAQ", "NYSE", "LSE", "TSE"))
        return Request(
            f"What is {ticker} trading at on the {exchange}?",
            {"ticker": ticker, "exchange": exchange},
        )
    question = rng.choice(
        (
            f"What's the current price of {ticker}?",
            f"{ticker} stock price",
            f"How much is one share of {ticker} right now?",
        )
    )
    return Request(question, {"ticker": ticker})


@function(
    "finance",
    "split_bill",
    "Each person's share of a restaurant bill, tip included.",
    parameters(
        {
            "total": number("The bill before tip."),
            "tip_percent": number("The tip in percent of the bill: 15 for 15%."),
            "people": integer("How many people share the bill; 1 when not given.", minimum=1),
        },
        ["total", "tip_percent"],
    ),
    vague=("How much should I tip?",),
)
def ask_bill(rng: random.Random) -> Request:
    total = rng.choice((rng.randint(20, 400), decimal(rng, 10, 250, 2)))
    tip = rng.choice((10, 12, 15, 18, 20))
    arguments: dict[str, Any] = {"total": total, "tip_percent": tip}
    if rng.random() < 0.6:
        arguments["people"] = rng.randint(2, 8)
        question = (
            f"Our bill is ${total}. With a {tip}% tip, how much does each of the "
            f"{arguments['people']} of us pay?"
        )
    else:
        question = f"What do I pay in total for a ${total} bill with a {tip}% tip?"
    return Request(question, arguments)


# ---- statistics ----------------------------------------------------------------------------

SAMPLE = array("The data.", number("One observation."))


def some_numbers(rng: random.Random) -> list[float]:
    count = rng.randint(3, 8)
    if rng.random() < 0.5:
        return [rng.randint(0, 100) for _ in range(count)]
    return [decimal(rng, 0, 50) for _ in range(count)]


def report_mean(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    mean = round(sum(arguments["numbers"]) / len(arguments["numbers"]), 4)
    return {"mean": mean}, f"The mean is {mean}."


@function(
    "statistics",
    "mean",
    "The arithmetic mean of a list of numbers.",
    parameters({"numbers": SAMPLE}, ["numbers"]),
    vague=("What's the average of my test scores?",),
    answer=report_mean,
)
def ask_mean(rng: random.Random) -> Request:
    values = some_numbers(rng)
    question = rng.choice(
        (
            f"What is the average of {numbers_phrase(values)}?",
            f"mean of {', '.join(map(str, values))}",
            f"My scores were {numbers_phrase(values)}. What's my mean score?",
        )
    )
    return Request(question, {"numbers": values})


@chinese("mean")
def ask_mean_zh(rng: random.Random) -> Request:
    values = [rng.randint(1, 99) for _ in range(rng.randint(3, 6))]
    return Request(f"求{'、'.join(map(str, values))}的平均值。", {"numbers": values})


@function(
    "statistics",
    "standard_deviation",
    "The standard deviation of a list of numbers.",
    parameters(
        {
            "numbers": SAMPLE,
            "sample": boolean("True for the sample (n - 1) formula; the population one otherwise."),
        },
        ["numbers"],
    ),
)
def ask_deviation(rng: random.Random) -> Request:
    values = some_numbers(rng)
    arguments: dict[str, Any] = {"numbers": values}
    question = f"What is the standard deviation of {numbers_phrase(values)}"
    if rng.random() < 0.4:
        arguments["sample"] = rng.random() < 0.5
        question += ", as a sample" if arguments["sample"] else ", for the whole population"
    return Request(question + "?", arguments)


@function(
    "statistics",
    "percentile",
    "A percentile of a list of numbers.",
    parameters(
        {"numbers": SAMPLE, "percentile": number("Which percentile, 0 to 100.")},
        ["numbers", "percentile"],
    ),
    vague=("What's the 90th percentile?",),
)
def ask_percentile(rng: random.Random) -> Request:
    values, which = some_numbers(rng), rng.choice((10, 25, 50, 75, 90, 95, 99))
    question = rng.choice(
        (
            f"What is the {which}th percentile of {numbers_phrase(values)}?",
            f"p{which} of [{', '.join(map(str, values))}]",
        )
    )
    return Request(question, {"numbers": values, "percentile": which})


# ---- dates ---------------------------------------------------------------------------------

ISO_DATE = "A date in YYYY-MM-DD form."


def report_days(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    start = date.fromisoformat(arguments["start_date"])
    days = (date.fromisoformat(arguments["end_date"]) - start).days
    return {"days": days}, f"There are {days} days between the two dates."


@function(
    "dates",
    "days_between",
    "The number of days from one date to another.",
    parameters(
        {"start_date": string(ISO_DATE), "end_date": string(ISO_DATE)}, ["start_date", "end_date"]
    ),
    vague=("How many days until my birthday?", "How long ago was that?"),
    answer=report_days,
)
def ask_days_between(rng: random.Random) -> Request:
    start = some_date(rng)
    end = start + timedelta(days=rng.randint(1, 700))
    question = rng.choice(
        (
            f"How many days are there between {spoken(start, rng)} and {spoken(end, rng)}?",
            f"days from {spoken(start, rng)} to {spoken(end, rng)}",
        )
    )
    return Request(question, {"start_date": start.isoformat(), "end_date": end.isoformat()})


@function(
    "dates",
    "add_days",
    "The date a number of days after (or, when negative, before) a given date.",
    parameters(
        {"date": string(ISO_DATE), "days": integer("Days to add; negative to go back.")},
        ["date", "days"],
    ),
    vague=("What date is 90 days from now?",),
)
def ask_add_days(rng: random.Random) -> Request:
    day, days = some_date(rng), rng.randint(1, 400)
    if rng.random() < 0.3:
        question = f"What was the date {days} days before {spoken(day, rng)}?"
        return Request(question, {"date": day.isoformat(), "days": -days})
    question = rng.choice(
        (
            f"What date is {days} days after {spoken(day, rng)}?",
            f"{spoken(day, rng)} plus {days} days",
        )
    )
    return Request(question, {"date": day.isoformat(), "days": days})


def report_weekday(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    name = WEEKDAYS[date.fromisoformat(arguments["date"]).weekday()]
    return {"weekday": name}, f"{arguments['date']} is a {name}."


@function(
    "dates",
    "day_of_week",
    "The day of the week a date falls on.",
    parameters({"date": string(ISO_DATE)}, ["date"]),
    vague=("What day of the week is it?",),
    answer=report_weekday,
)
def ask_weekday(rng: random.Random) -> Request:
    day = some_date(rng)
    question = rng.choice(
        (f"What day of the week is {spoken(day, rng)}?", f"Which weekday was {spoken(day, rng)}?")
    )
    return Request(question, {"date": day.isoformat()})


# ---- strings -------------------------------------------------------------------------------


def report_words(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    count = len(arguments["text"].split())
    return {"words": count}, f"That text has {count} words."


@function(
    "strings",
    "count_words",
    "The number of words in a text.",
    parameters({"text": string("The text to count.")}, ["text"]),
    vague=("How many words is my essay?",),
    answer=report_words,
)
def ask_words(rng: random.Random) -> Request:
    text = rng.choice(PHRASES)
    question = rng.choice((f'How many words are in "{text}"?', f"Count the words: {text}"))
    return Request(question, {"text": text})


@function(
    "strings",
    "change_case",
    "Rewrite a text in upper, lower or title case.",
    parameters(
        {
            "text": string("The text."),
            "case": choice("The case wanted.", ["upper", "lower", "title"]),
        },
        ["text", "case"],
    ),
)
def ask_case(rng: random.Random) -> Request:
    text, case = rng.choice(PHRASES), rng.choice(("upper", "lower", "title"))
    said = {"upper": "uppercase", "lower": "lowercase", "title": "title case"}[case]
    return Request(f'Convert "{text}" to {said}.', {"text": text, "case": case})


@function(
    "strings",
    "is_palindrome",
    "Whether a text reads the same backwards, optionally ignoring spaces.",
    parameters(
        {
            "text": string("The text to check."),
            "ignore_spaces": boolean("Whether spaces are ignored."),
        },
        ["text"],
    ),
)
def ask_palindrome(rng: random.Random) -> Request:
    text = rng.choice(PHRASES)
    if rng.random() < 0.4:
        return Request(
            f'Ignoring spaces, is "{text}" a palindrome?', {"text": text, "ignore_spaces": True}
        )
    return Request(f'Is "{text}" a palindrome?', {"text": text})


# ---- travel --------------------------------------------------------------------------------


@function(
    "travel",
    "search_flights",
    "Search for flights between two cities on a date.",
    parameters(
        {
            "origin": string("The departure city."),
            "destination": string("The arrival city."),
            "date": string(ISO_DATE),
            "passengers": integer("How many travel; 1 when not given.", minimum=1),
            "cabin": choice(
                "The cabin class; economy when not given.",
                ["economy", "premium", "business", "first"],
            ),
        },
        ["origin", "destination", "date"],
    ),
    vague=("Find me a flight to Tokyo.", "Are there cheap flights next week?"),
)
def ask_flights(rng: random.Random) -> Request:
    origin, destination = rng.sample(CITIES, 2)
    day = some_date(rng)
    arguments: dict[str, Any] = {
        "origin": origin,
        "destination": destination,
        "date": day.isoformat(),
    }
    question = f"Find flights from {origin} to {destination} on {spoken(day, rng)}"
    if rng.random() < 0.4:
        arguments["passengers"] = rng.randint(2, 6)
        question += f" for {arguments['passengers']} people"
    if rng.random() < 0.3:
        arguments["cabin"] = rng.choice(("premium", "business", "first"))
        question += f" in {arguments['cabin']} class"
    return Request(question + ".", arguments)


@function(
    "travel",
    "book_hotel",
    "Book a hotel room in a city.",
    parameters(
        {
            "city": string("The city."),
            "check_in": string(ISO_DATE),
            "nights": integer("How many nights.", minimum=1),
            "guests": integer("How many guests; 1 when not given.", minimum=1),
        },
        ["city", "check_in", "nights"],
    ),
    vague=("Book me a hotel in Oslo.", "I need a room for 3 nights."),
)
def ask_hotel(rng: random.Random) -> Request:
    city, day, nights = rng.choice(CITIES), some_date(rng), rng.randint(1, 14)
    arguments: dict[str, Any] = {"city": city, "check_in": day.isoformat(), "nights": nights}
    question = f"Book a hotel in {city} from {spoken(day, rng)} for {nights} nights"
    if rng.random() < 0.4:
        arguments["guests"] = rng.randint(2, 5)
        question += f", {arguments['guests']} guests"
    return Request(question + ".", arguments)


@function(
    "travel",
    "find_restaurants",
    "Find restaurants in a city by cuisine.",
    parameters(
        {
            "city": string("The city."),
            "cuisine": string("The kind of food, e.g. Greek."),
            "price": choice("The price range.", ["cheap", "moderate", "expensive"]),
        },
        ["city", "cuisine"],
    ),
    vague=("Where should I eat tonight?",),
)
def ask_restaurants(rng: random.Random) -> Request:
    city, cuisine = rng.choice(CITIES), rng.choice(CUISINES)
    if rng.random() < 0.35:
        price = rng.choice(("cheap", "moderate", "expensive"))
        return Request(
            f"Find {price} {cuisine} restaurants in {city}.",
            {"city": city, "cuisine": cuisine, "price": price},
        )
    question = rng.choice(
        (f"Any good {cuisine} places to eat in {city}?", f"{cuisine} restaurants {city}")
    )
    return Request(question, {"city": city, "cuisine": cuisine})


def report_travel_time(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    hours = {"car": 5.5, "train": 4.0, "bus": 7.25, "walking": 60.0}[arguments["mode"]]
    reply = (
        f"By {arguments['mode']}, {arguments['origin']} to {arguments['destination']} "
        f"takes about {hours} hours."
    )
    return {"hours": hours}, reply


@function(
    "travel",
    "travel_time",
    "How long a trip between two places takes by a given means of transport.",
    parameters(
        {
            "origin": string("Where the trip starts."),
            "destination": string("Where it ends."),
            "mode": choice("How one travels.", ["car", "train", "bus", "walking"]),
        },
        ["origin", "destination", "mode"],
    ),
    vague=("How long will my commute take?",),
    answer=report_travel_time,
)
def ask_travel_time(rng: random.Random) -> Request:
    origin, destination = rng.sample(CITIES, 2)
    mode, said = rng.choice(
        (("car", "drive"), ("train", "take the train"), ("bus", "go by bus"), ("walking", "walk"))
    )
    return Request(
        f"How long does it take to {said} from {origin} to {destination}?",
        {"origin": origin, "destination": destination, "mode": mode},
    )


# ---- recipes -------------------------------------------------------------------------------


@function(
    "recipes",
    "find_recipes",
    "Find recipes that use the given ingredients.",
    parameters(
        {
            "ingredients": array("Ingredients the recipe must use.", string("An ingredient.")),
            "diet": choice(
                "A diet the recipe must suit.", ["vegetarian", "vegan", "gluten-free", "keto"]
            ),
            "max_minutes": integer("The longest total cooking time, in minutes.", minimum=1),
        },
        ["ingredients"],
    ),
    vague=("What should I cook for dinner?", "Give me a recipe."),
)
def ask_recipes(rng: random.Random) -> Request:
    ingredients = rng.sample(INGREDIENTS, rng.randint(1, 3))
    arguments: dict[str, Any] = {"ingredients": ingredients}
    question = f"Find me a recipe with {' and '.join(ingredients)}"
    if rng.random() < 0.35:
        arguments["diet"] = rng.choice(("vegetarian", "vegan", "gluten-free", "keto"))
        question = f"Find me a {arguments['diet']} recipe with {' and '.join(ingredients)}"
    if rng.random() < 0.35:
        arguments["max_minutes"] = rng.choice((15, 20, 30, 45, 60))
        question += f" that takes at most {arguments['max_minutes']} minutes"
    return Request(question + ".", arguments)


AMOUNT = {
    "type": "object",
    "description": "One ingredient and how much of it.",
    "properties": {
        "name": string("The ingredient."),
        "quantity": number("How much."),
        "unit": string("The unit of the quantity, e.g. g or cups."),
    },
    "required": ["name", "quantity", "unit"],
    "additionalProperties": False,
}


@function(
    "recipes",
    "scale_recipe",
    "Scale a recipe's ingredient amounts from one number of servings to another.",
    parameters(
        {
            "ingredients": array("The recipe's ingredients with their amounts.", AMOUNT),
            "servings": integer("The servings the recipe makes now.", minimum=1),
            "target_servings": integer("The servings wanted.", minimum=1),
        },
        ["ingredients", "servings", "target_servings"],
    ),
    vague=("Double my pancake recipe.",),
)
def ask_scale(rng: random.Random) -> Request:
    names = rng.sample(("flour", "sugar", "milk", "butter", "oats"), rng.randint(2, 3))
    units = {"flour": "g", "sugar": "g", "milk": "ml", "butter": "g", "oats": "cups"}
    amounts = [
        {
            "name": n,
            "quantity": rng.randint(1, 500) if units[n] != "cups" else rng.randint(1, 4),
            "unit": units[n],
        }
        for n in names
    ]
    listing = ", ".join(f"{a['quantity']} {a['unit']} {a['name']}" for a in amounts)
    servings, target = rng.sample((2, 4, 6, 8, 12), 2)
    question = f"My recipe for {servings} servings uses {listing}. Scale it to {target} servings."
    return Request(
        question, {"ingredients": amounts, "servings": servings, "target_servings": target}
    )


def report_nutrition(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    calories = round(arguments["grams"] * 1.3)
    return (
        {"food": arguments["food"], "calories": calories},
        f"{arguments['grams']} g of {arguments['food']} has about {calories} kcal.",
    )


@function(
    "recipes",
    "nutrition_facts",
    "Calories and macronutrients of a portion of a food.",
    parameters(
        {"food": string("The food."), "grams": number("The portion, in grams.")}, ["food", "grams"]
    ),
    vague=("How many calories did I eat today?",),
    answer=report_nutrition,
)
def ask_nutrition(rng: random.Random) -> Request:
    food, grams = rng.choice(FOODS), rng.choice((30, 50, 100, 150, 200, rng.randint(10, 400)))
    question = rng.choice(
        (
            f"How many calories are in {grams} g of {food}?",
            f"nutrition facts for {grams} grams of {food}",
        )
    )
    return Request(question, {"food": food, "grams": grams})


# ---- sports --------------------------------------------------------------------------------


def report_match(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    a, b = arguments["home_team"], arguments["away_team"]
    return ({"home_team": a, "away_team": b, "score": "2-1"}, f"The {a} beat the {b} 2-1.")


@function(
    "sports",
    "match_result",
    "The result of the latest match between two teams.",
    parameters(
        {
            "home_team": string("The home team."),
            "away_team": string("The visiting team."),
            "sport": choice(
                "The sport; football when not given.",
                ["football", "basketball", "hockey", "baseball"],
            ),
        },
        ["home_team", "away_team"],
    ),
    vague=("Who won the game last night?",),
    answer=report_match,
)
def ask_match(rng: random.Random) -> Request:
    home, away = rng.sample(TEAMS, 2)
    if rng.random() < 0.3:
        sport = rng.choice(("basketball", "hockey", "baseball"))
        return Request(
            f"Who won the {sport} game, {home} at home against {away}?",
            {"home_team": home, "away_team": away, "sport": sport},
        )
    question = rng.choice(
        (f"What was the score of {home} vs {away}?", f"Did the {home} beat the {away} at home?")
    )
    return Request(question, {"home_team": home, "away_team": away})


@function(
    "sports",
    "player_stats",
    "A player's statistics, for one season or the whole career.",
    parameters(
        {
            "player": string("The player's full name."),
            "season": integer("The season's starting year; the career when not given."),
        },
        ["player"],
    ),
    vague=("How many goals has he scored?",),
)
def ask_player(rng: random.Random) -> Request:
    player = rng.choice(PLAYERS)
    if rng.random() < 0.5:
        season = rng.randint(2015, 2025)
        return Request(
            f"Show me {player}'s stats for the {season} season.",
            {"player": player, "season": season},
        )
    return Request(f"What are {player}'s career statistics?", {"player": player})


@function(
    "sports",
    "league_standings",
    "The table of a league in a season.",
    parameters(
        {"league": string("The league's name."), "season": integer("The season's starting year.")},
        ["league", "season"],
    ),
    vague=("Who is top of the league?",),
)
def ask_standings(rng: random.Random) -> Request:
    league, season = rng.choice(LEAGUES), rng.randint(2010, 2025)
    question = rng.choice(
        (
            f"Show the {league} standings for {season}.",
            f"Who led the {league} in the {season} season?",
        )
    )
    return Request(question, {"league": league, "season": season})


# ---- physics -------------------------------------------------------------------------------


def report_energy(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    energy = round(0.5 * arguments["mass"] * arguments["velocity"] ** 2, 3)
    return {"joules": energy}, f"Its kinetic energy is {energy} J."


@function(
    "physics",
    "kinetic_energy",
    "The kinetic energy of a moving body.",
    parameters(
        {
            "mass": number("The mass in kilograms."),
            "velocity": number("The speed in meters per second."),
        },
        ["mass", "velocity"],
    ),
    vague=("How much energy does a moving car have?",),
    answer=report_energy,
)
def ask_energy(rng: random.Random) -> Request:
    mass, velocity = rng.choice((rng.randint(1, 2000), decimal(rng, 0.1, 80))), rng.randint(1, 60)
    question = rng.choice(
        (
            f"What is the kinetic energy of a {mass} kg object moving at {velocity} m/s?",
            f"KE for m={mass} kg, v={velocity} m/s",
        )
    )
    return Request(question, {"mass": mass, "velocity": velocity})


@chinese("kinetic_energy")
def ask_energy_zh(rng: random.Random) -> Request:
    mass, velocity = rng.randint(1, 500), rng.randint(1, 40)
    return Request(
        f"质量{mass}千克、速度{velocity}米每秒的物体动能是多少？",
        {"mass": mass, "velocity": velocity},
    )


@function(
    "physics",
    "projectile_range",
    "How far a projectile flies over flat ground, without air resistance.",
    parameters(
        {
            "speed": number("The launch speed in meters per second."),
            "angle": number("The launch angle in degrees above the horizontal."),
            "gravity": number("The gravitational acceleration in m/s²; 9.81 when not given."),
        },
        ["speed", "angle"],
    ),
)
def ask_projectile(rng: random.Random) -> Request:
    speed, angle = rng.randint(5, 120), rng.choice((15, 30, 45, 60, rng.randint(5, 85)))
    arguments: dict[str, Any] = {"speed": speed, "angle": angle}
    question = f"How far does a ball launched at {speed} m/s and {angle} degrees travel"
    if rng.random() < 0.3:
        arguments["gravity"] = rng.choice((1.62, 3.71, 24.79))
        question += f" where gravity is {arguments['gravity']} m/s²"
    return Request(question + "?", arguments)


@function(
    "physics",
    "electric_current",
    "The current through a resistor, by Ohm's law.",
    parameters(
        {
            "voltage": number("The voltage in volts."),
            "resistance": number("The resistance in ohms."),
        },
        ["voltage", "resistance"],
    ),
)
def ask_current(rng: random.Random) -> Request:
    voltage, resistance = (
        rng.choice((3.3, 5, 9, 12, 120, 230)),
        rng.choice((10, 47, 100, 220, 1000)),
    )
    question = rng.choice(
        (
            f"What current flows through a {resistance} ohm resistor at {voltage} V?",
            f"I = ? for V = {voltage} V, R = {resistance} Ω",
        )
    )
    return Request(question, {"voltage": voltage, "resistance": resistance})


# ---- chemistry -----------------------------------------------------------------------------

MOLAR_MASSES = {
    "H2O": 18.015,
    "CO2": 44.009,
    "NaCl": 58.44,
    "C6H12O6": 180.156,
    "NH3": 17.031,
    "CH4": 16.043,
    "H2SO4": 98.079,
}


def report_molar_mass(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    mass = MOLAR_MASSES[arguments["formula"]]
    return {"grams_per_mole": mass}, f"The molar mass of {arguments['formula']} is {mass} g/mol."


@function(
    "chemistry",
    "molar_mass",
    "The molar mass of a compound from its chemical formula.",
    parameters({"formula": string("The chemical formula, e.g. C2H6O.")}, ["formula"]),
    vague=("What is the molar mass of this compound?",),
    answer=report_molar_mass,
)
def ask_molar_mass(rng: random.Random) -> Request:
    formula = rng.choice(list(MOLAR_MASSES))
    question = rng.choice(
        (
            f"What is the molar mass of {formula}?",
            f"molar mass {formula}",
            f"How many grams does one mole of {formula} weigh?",
        )
    )
    return Request(question, {"formula": formula})


@function(
    "chemistry",
    "ph_from_concentration",
    "The pH of a solution from its hydrogen-ion concentration.",
    parameters({"concentration": number("The H+ concentration in mol/L.")}, ["concentration"]),
    vague=("Is my pool water acidic?",),
)
def ask_ph(rng: random.Random) -> Request:
    concentration = rng.choice((0.1, 0.01, 0.001, 0.0001, 0.005, 0.02))
    return Request(
        f"What is the pH of a solution with {concentration} mol/L of H+?",
        {"concentration": concentration},
    )


@function(
    "chemistry",
    "ideal_gas_pressure",
    "The pressure of an ideal gas, from PV = nRT.",
    parameters(
        {
            "moles": number("The amount of gas in moles."),
            "temperature": number("The temperature in kelvin."),
            "volume": number("The volume in liters."),
        },
        ["moles", "temperature", "volume"],
    ),
)
def ask_gas(rng: random.Random) -> Request:
    moles, temperature, volume = rng.randint(1, 10), rng.randint(250, 500), rng.randint(1, 50)
    question = (
        f"What's the pressure of {moles} mol of gas at {temperature} K in a {volume} L container?"
    )
    return Request(question, {"moles": moles, "temperature": temperature, "volume": volume})


# ---- arithmetic ----------------------------------------------------------------------------


def report_factorial(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    value = math.factorial(arguments["n"])
    return {"value": value}, f"{arguments['n']}! = {value}."


@function(
    "arithmetic",
    "factorial",
    "The factorial of a non-negative integer.",
    parameters({"n": integer("The number.", minimum=0)}, ["n"]),
    answer=report_factorial,
)
def ask_factorial(rng: random.Random) -> Request:
    n = rng.randint(0, 20)
    question = rng.choice((f"What is {n} factorial?", f"Compute {n}!", f"factorial of {n}"))
    return Request(question, {"n": n})


def report_gcd(arguments: dict[str, Any]) -> tuple[dict[str, Any], str]:
    value = math.gcd(arguments["a"], arguments["b"])
    return {"gcd": value}, f"The greatest common divisor is {value}."


@function(
    "arithmetic",
    "greatest_common_divisor",
    "The greatest common divisor of two integers.",
    parameters(
        {"a": integer("The first integer."), "b": integer("The second integer.")}, ["a", "b"]
    ),
    answer=report_gcd,
)
def ask_gcd(rng: random.Random) -> Request:
    a, b = rng.randint(2, 500), rng.randint(2, 500)
    question = rng.choice(
        (f"What is the GCD of {a} and {b}?", f"greatest common divisor of {a} and {b}")
    )
    return Request(question, {"a": a, "b": b})


@chinese("greatest_common_divisor")
def ask_gcd_zh(rng: random.Random) -> Request:
    a, b = rng.randint(2, 300), rng.randint(2, 300)
    return Request(f"{a}和{b}的最大公约数是多少？", {"a": a, "b": b})


# ---- messages ------------------------------------------------------------------------------


@function(
    "messages",
    "send_email",
    "Send an email.",
    parameters(
        {
            "to": string("The recipient's address."),
            "subject": string("The subject line."),
            "body": string("The message."),
            "cc": array("Addresses to copy.", string("An address.")),
        },
        ["to", "subject", "body"],
    ),
    vague=("Send an email to my landlord.", "Email the team about the meeting."),
)
def ask_email(rng: random.Random) -> Request:
    to, subject = rng.choice(PEOPLE), rng.choice(("Lunch", "Project update", "Invoice 42"))
    body = rng.choice(("See you at noon.", "The report is attached.", "Please pay by Friday."))
    arguments: dict[str, Any] = {"to": to, "subject": subject, "body": body}
    question = f'Email {to} with the subject "{subject}" saying "{body}"'
    if rng.random() < 0.3:
        arguments["cc"] = [c for c in PEOPLE if c != to][:1]
        question += f" and cc {arguments['cc'][0]}"
    return Request(question + ".", arguments)


@function(
    "messages",
    "set_reminder",
    "Set a reminder at a time of day.",
    parameters(
        {
            "message": string("What to be reminded of."),
            "time": string("The time of day, HH:MM on a 24-hour clock."),
            "repeat_daily": boolean("Whether the reminder repeats every day."),
        },
        ["message", "time"],
    ),
    vague=("Remind me to call mom.", "Set a reminder for 7:30."),
)
def ask_reminder(rng: random.Random) -> Request:
    message = rng.choice(("take my medicine", "water the plants", "call the dentist"))
    hour, minute = rng.randint(6, 22), rng.choice((0, 15, 30, 45))
    time = f"{hour:02d}:{minute:02d}"
    arguments: dict[str, Any] = {"message": message, "time": time}
    question = f"Remind me to {message} at {time}"
    if rng.random() < 0.3:
        arguments["repeat_daily"] = True
        question += " every day"
    return Request(question + ".", arguments)


# ---- rows ----------------------------------------------------------------------------------

NO_TOOL_NEEDED = ("Who wrote Pride and Prejudice?", "Tell me a joke about cats.",
                  "What is the capital of Canada?",
                  "Can you explain what photosynthesis is?",
                  "Write a haiku about autumn.", "What does 'serendipity' mean?",
                  "Who painted the Mona Lisa?", "How do I tie a bowline knot?",
                  "Why is the sky blue?", "Thanks, that's all for today.",
                  "What's your favourite colour?",
                  "Summarise the plot of Hamlet in one line.", "给我讲个笑话吧。", "长城有多长？",
                  "你好，你是谁？")  # fmt: skip
JOINS = (" ", " Also, ", "\n", " And one more thing: ", " Then: ")
SPEAKS_CHINESE = [f for f in LIBRARY if f.chinese]
ANSWERS = [f for f in LIBRARY if f.answer]
VAGUE = [f for f in LIBRARY if f.vague]


def distractors(rng: random.Random, needed: Sequence[Function], count: int) -> list[Function]:
    """`count` other functions, about half from the needed ones' domains (close but wrong),
    never one that could also serve the question."""
    taken = {f.spec.name for f in needed}
    taken |= {other for f in needed for other in OVERLAPS.get(f.spec.name, ())}
    pool = [f for f in LIBRARY if f.spec.name not in taken]
    near = [f for f in pool if f.domain in {n.domain for n in needed}]
    chosen: list[Function] = []
    while len(chosen) < count:
        candidate = rng.choice(near if near and rng.random() < 0.5 else pool)
        if candidate not in chosen:
            chosen.append(candidate)
    return chosen


def offered(rng: random.Random, needed: Sequence[Function]) -> list[ToolSpec]:
    """The needed functions and enough distractors for 1 to MAX_OFFERED in all, shuffled."""
    unique = list(dict.fromkeys(needed))
    functions = unique + distractors(rng, unique, rng.randint(0, MAX_OFFERED - len(unique)))
    rng.shuffle(functions)
    return [f.spec for f in functions]


def exchange(question: str, calls: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The question and the reply making `calls` (none: the empty list), in the OpenAI form
    `SMOLLM2.messages` renders. Ids are fixed so that rows depend on the seed alone."""
    if not calls:
        return [
            {"role": "user", "content": question},
            {"role": "assistant", "content": SMOLLM2.render_calls([])},
        ]
    tool_calls = [
        ToolCall(name, arguments, f"call_{i}") for i, (name, arguments) in enumerate(calls)
    ]
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": None, "tool_calls": tool_calls},
    ]


Row = tuple[list[ToolSpec], list[dict[str, Any]]]  # the offered tools, the conversation


def single_row(rng: random.Random) -> Row:
    f = rng.choice(LIBRARY)
    request = f.ask(rng)
    question = polite(rng, request.question)
    return offered(rng, [f]), exchange(question, [(f.spec.name, request.arguments)])


def chinese_row(rng: random.Random) -> Row:
    f = rng.choice(SPEAKS_CHINESE)
    request = f.chinese(rng)
    return offered(rng, [f]), exchange(request.question, [(f.spec.name, request.arguments)])


def parallel_row(rng: random.Random) -> Row:
    """Two to four requests in one question, each answered by its own call: one function
    asked for several values, or several functions."""
    count = rng.choice((2, 2, 2, 3, 3, 4))
    first = rng.choice(LIBRARY)
    if rng.random() < 0.5:
        needed = [first] * count
    else:
        needed = [first, *distractors(rng, [first], min(count, MAX_OFFERED - 1) - 1)]
        needed += [rng.choice(needed) for _ in range(count - len(needed))]
    requests = [f.ask(rng) for f in needed]
    if rng.random() < 0.3:
        listed = "".join(f"\n{i}. {r.question}" for i, r in enumerate(requests, 1))
        question = f"I have {count} questions:{listed}"
    else:
        question = ended(requests[0].question)
        question += "".join(rng.choice(JOINS) + ended(r.question) for r in requests[1:])
    calls = [(f.spec.name, r.arguments) for f, r in zip(needed, requests, strict=True)]
    return offered(rng, needed), exchange(polite(rng, question), calls)


def multi_turn_row(rng: random.Random) -> Row:
    """A call, its result in a `<tool_response>` turn, and the answer that reports it."""
    f = rng.choice(ANSWERS)
    request = f.ask(rng)
    messages = exchange(polite(rng, request.question), [(f.spec.name, request.arguments)])
    result, reply = f.answer(request.arguments)
    messages += [
        {"role": "tool", "content": json.dumps(result, ensure_ascii=False)},
        {"role": "assistant", "content": reply},
    ]
    return offered(rng, [f]), messages


def irrelevant_row(rng: random.Random) -> Row:
    """A question no offered function can answer, so the right reply is no call."""
    why = rng.choices(list(IRRELEVANT_WEIGHTS), weights=list(IRRELEVANT_WEIGHTS.values()))[0]
    if why == "missing_value":
        f = rng.choice(VAGUE)
        return offered(rng, [f]), exchange(polite(rng, rng.choice(f.vague)), [])
    if why == "unoffered":
        f = rng.choice(LIBRARY)
        others = distractors(rng, [f], rng.randint(1, MAX_OFFERED))
        return [o.spec for o in others], exchange(polite(rng, f.ask(rng).question), [])
    tools = [f.spec for f in rng.sample(LIBRARY, rng.randint(1, MAX_OFFERED))]
    return tools, exchange(rng.choice(NO_TOOL_NEEDED), [])


ROWS = {
    "single": single_row,
    "parallel": parallel_row,
    "multi_turn": multi_turn_row,
    "irrelevant": irrelevant_row,
    "chinese": chinese_row,
}


def generate_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """`n` training rows, {"messages": [...], "kind": ...}, the same for the same seed.

    `messages` is what `llmhood train --format openai` trains on (the assistant turns);
    `kind` (a key of KIND_WEIGHTS) is for looking at the data and is ignored by training.
    Each row's kind is drawn just before the row, so fewer rows from a seed are a prefix of
    more rows from it.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise LLMHoodError(f"Asked for {n!r} rows: give a whole number of rows, at least 1.")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        kind = rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
        tools, conversation = ROWS[kind](rng)
        rows.append({"messages": SMOLLM2.messages(conversation, tools), "kind": kind})
    return rows


def write_dataset(path: str | Path, n: int, seed: int = 0) -> Counter[str]:
    """Write `n` rows to `path` (JSON Lines; a JSON list when it ends in .json, as the
    trainer reads them) and return how many of each kind.

    The file appears whole or not at all: it is written beside its final name, flushed to the
    disk, then renamed over it, so a crash never leaves half a dataset for a training run.
    """
    path = Path(path)
    if path.is_dir():
        raise LLMHoodError(f"{path} is a directory: give the name of the file to write.")
    rows = generate_rows(n, seed)
    if path.suffix == ".json":
        text = json.dumps(rows, ensure_ascii=False) + "\n"
    else:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return Counter(row["kind"] for row in rows)
