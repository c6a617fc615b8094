"""JSON Schema -> a regular expression of the JSON documents it allows -> a DFA over bytes.

A constrained decoder must never let the model write a document the schema refuses, and must
let it finish. So every schema here becomes a regex whose language is a *subset* of the valid
documents, equal to all of them where that is possible, and a keyword that cannot be honoured
raises UnsupportedSchema instead of being ignored. Choices, keyword by keyword:

* **Layout.** Tokens are separated by `separators` (`(item, key)`, as in `json.dumps`), with up
  to `max_whitespace` of `[ \\n\\r\\t]` on both sides of each separator and inside each bracket;
  none before or after the document. Whitespace is bounded because a model stuck on a
  newline would otherwise loop until the token limit.
* **Objects** list their `properties` in schema order. Required ones are always there, optional
  ones may be skipped, and commas are right either way. No other keys are written, whatever
  `additionalProperties` says: with listed properties, `true` or a schema only *allows* more
  keys, and writing only the listed ones is valid. An object with no `properties` and no
  `additionalProperties: false` is a map from any key to `additionalProperties` (any value by
  default); a map honours `maxProperties` and `propertyNames` (a string schema for its keys).
  Beside listed properties, `maxProperties` must allow them all, and `propertyNames` is
  refused.
* **Strings**: any character, escaped where JSON requires it; `minLength`/`maxLength` count
  characters, an escape being one. `pattern` is a search (unanchored unless it starts with `^`
  or ends with `$`), matched against the *decoded* string: each character the pattern allows
  is written raw or, where JSON requires, escaped (`\\"`, `\\\\`, `\\n`..., `\\u00XX`). Python's
  regex syntax (regex.py). `format`: date, time, date-time (RFC 3339, any day 01-31 the month
  can have, February up to 29), email (a dot-atom local part and domain) and uuid.
* **Integers** with bounds are exact decimal ranges, negative ones too, never `-0`. **Numbers**
  with bounds need integer-valued bounds, and are then exact for numbers written without an
  exponent: `k` or `k.000` for an allowed integer, `k.f` when the open interval (k, k+1) is
  inside the bounds. Unbounded numbers are JSON's whole grammar.
* **enum/const**: the values as `json.dumps` writes them with `separators`, non-ASCII kept as is.
* **anyOf** is alternation; **oneOf** too, but only when its branches cannot produce the same
  value (their JSON types are disjoint), else the document could match two branches.
  **allOf** with one member is that member.
* **$ref** to `#`, `#/$defs/...`, `#/definitions/...` (any local JSON pointer). A recursive
  reference is unrolled RECURSION_DEPTH times; deeper, that branch is impossible, so optional
  properties and alternatives stop the recursion there.
* A schema that allows any value (`{}`, `true`, `"type": "object"` or `"array"` alone) allows
  JSON nested ANY_DEPTH deep, since a regular language cannot nest without bound. Without
  `type`, the types are those the keywords present imply (`properties`: object, ...).
* Beside `enum`/`const` only `type` is honoured (it filters the values), and beside `anyOf`,
  `oneOf`, `allOf` or `$ref` nothing is: other keywords there raise UnsupportedSchema rather
  than being dropped. Annotations (description, title, default, examples, ...) are ignored.

**Equivalence with xgrammar 0.2.9**: `compile_json_schema(s, max_whitespace=n, separators=p)`
has the language of `xgrammar.Grammar.from_json_schema(s, **xgrammar_options(n, p))` (the
same keywords for `GrammarCompiler.compile_json_schema`): `strict_mode=True`, `separators=p`,
and `any_whitespace=False` for n = 0, else `any_whitespace=True, max_whitespace_cnt=n`. So the
defaults are `XGRAMMAR_EQUIVALENT`: `any_whitespace=False`, separators `", "` and `": "`
(xgrammar's own default separators then). The languages are the same for: null, boolean,
integer (with or without bounds), number without bounds, string without length/pattern/format,
objects with properties (required and optional), arrays with items/prefixItems/minItems/
maxItems, enum/const of scalars, anyOf and type lists, nested objects. They differ where
xgrammar differs from JSON: its `minLength`/`maxLength` strings allow raw control characters
(invalid JSON) and no escapes; its bounded numbers allow at most 6 decimals; its object or
array consts are compact; its "any value" nests without bound; its formats and patterns have
their own regexes.
"""

from __future__ import annotations

import json
import math
from typing import Any

from llmhood.errors import LLMHoodError
from llmhood.generate.constrain import regex as rx
from llmhood.generate.constrain.dfa import DFA

RECURSION_DEPTH = 3  # times a $ref may appear inside itself
ANY_DEPTH = 2  # levels of arrays/objects inside a value of unknown type

ANNOTATIONS = frozenset(
    {
        "description",
        "title",
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$defs",
        "definitions",
    }
)
_KEYWORDS_BY_TYPE = {
    "string": {"pattern", "minLength", "maxLength", "format"},
    "integer": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"},
    "object": {"properties", "required", "additionalProperties", "maxProperties", "propertyNames"},
    "array": {"items", "prefixItems", "minItems", "maxItems"},
}
_COMBINATORS = {"anyOf", "oneOf", "allOf", "$ref"}
SUPPORTED = (
    frozenset(k for ks in _KEYWORDS_BY_TYPE.values() for k in ks)
    | _COMBINATORS
    | {"type", "enum", "const"}
)
JSON_TYPES = ("null", "boolean", "object", "array", "number", "string", "integer")

NOTHING = "[^\\x00-\\U0010ffff]"  # a regex with no match: a branch that cannot be taken
# One character inside a JSON string (RFC 8259 section 7): anything but a quote, a backslash
# or a control character, or an escape.
JSON_CHAR = r'(?:[^"\\\x00-\x1f]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))'
STRING = f'"{JSON_CHAR}*"'
INTEGER = "(?:0|-?[1-9][0-9]*)"
NUMBER = r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"
_FRACTION = r"\.[0-9]*[1-9][0-9]*"  # a fraction that is not zero

_DATE = (
    "[0-9]{4}-(?:"
    "(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-9]))"
)
_TIME = (
    r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?"
    "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
FORMATS = {
    "date": _DATE,
    "time": _TIME,
    "date-time": f"{_DATE}T{_TIME}",
    "email": r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+",
    "uuid": "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
}


def xgrammar_options(
    max_whitespace: int = 0, separators: tuple[str, str] = (", ", ": ")
) -> dict[str, Any]:
    """xgrammar's `from_json_schema` keywords for the language of the same layout here."""
    options: dict[str, Any] = {"strict_mode": True, "separators": tuple(separators)}
    if max_whitespace == 0:
        return {**options, "any_whitespace": False}
    return {**options, "any_whitespace": True, "max_whitespace_cnt": max_whitespace}


XGRAMMAR_EQUIVALENT = xgrammar_options()


class UnsupportedSchema(LLMHoodError):
    """A schema keyword (or value) the constrained decoder cannot turn into an automaton."""


def _unsupported(keyword: str, path: str, why: str = "") -> UnsupportedSchema:
    detail = f" ({why})" if why else ""
    return UnsupportedSchema(
        f"{keyword!r} at {path} is not supported by the constrained decoder{detail}; remove it "
        "or rewrite the schema with the supported keywords (type, enum, const, properties, "
        "required, items, prefixItems, minItems, maxItems, pattern, minLength, maxLength, "
        "format, minimum, maximum, exclusiveMinimum, exclusiveMaximum, anyOf, oneOf, allOf, "
        "$ref)."
    )


def _impossible(keyword: str, path: str, why: str) -> UnsupportedSchema:
    return UnsupportedSchema(
        f"{keyword!r} at {path} leaves no value to write ({why}); fix the schema"
    )


def schema_to_regex(
    schema: dict | bool,
    *,
    max_whitespace: int = 0,
    separators: tuple[str, str] = (",", ":"),
    max_digits: int | None = None,
) -> str:
    """A regex (regex.py syntax) whose full matches are the documents allowed for `schema`.

    `max_digits` D: numbers lie within ±(10**D - 1) (and the schema's bounds), with at most D
    decimals and no exponent, so that no number can run on (None: JSON's number grammar)."""
    if (
        isinstance(max_whitespace, bool)
        or not isinstance(max_whitespace, int)
        or max_whitespace < 0
    ):
        raise LLMHoodError(
            f"max_whitespace must be a whole number, 0 or more, not {max_whitespace!r}"
        )
    if max_digits is not None and (
        isinstance(max_digits, bool) or not isinstance(max_digits, int) or max_digits < 1
    ):
        raise LLMHoodError(f"max_digits must be a whole number, 1 or more, not {max_digits!r}")
    if len(separators) != 2 or not all(isinstance(s, str) and s for s in separators):
        raise LLMHoodError(
            f"separators must be two non-empty strings (item, key) like (', ', ': '), not "
            f"{separators!r}"
        )
    return _Converter(schema, max_whitespace, separators, max_digits).convert(schema, "#", ())


def compile_json_schema(
    schema: dict | str | bool,
    *,
    max_whitespace: int = 0,
    separators: tuple[str, str] = (", ", ": "),
) -> DFA:
    """The byte DFA of the documents allowed for `schema` (a dict, its JSON text, or a bool).

    The default layout is `json.dumps`'s (`", "` and `": "`, no other whitespace), which is
    also xgrammar's with `any_whitespace=False`.
    """
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as e:
            raise LLMHoodError(f"the JSON schema is not valid JSON: {e}") from None
    if not isinstance(schema, dict | bool):
        raise LLMHoodError(f"a JSON schema is an object or a boolean, not {type(schema).__name__}")
    dfa = rx.compile_regex(
        schema_to_regex(schema, max_whitespace=max_whitespace, separators=separators)
    )
    if dfa.start == 0:
        raise UnsupportedSchema(
            "the schema allows no document the constrained decoder can write (is a required "
            "property recursive, or are the bounds contradictory?); check the schema"
        )
    return dfa


def _alt(parts: list[str]) -> str:
    """Alternation of the parts that can match anything, without repeats."""
    unique = list(dict.fromkeys(p for p in parts if p != NOTHING))
    if not unique:
        return NOTHING
    return unique[0] if len(unique) == 1 else "(?:" + "|".join(unique) + ")"


def _repeat(body: str, low: int, high: int | None) -> str:
    """`body` low to high times (high None: unbounded)."""
    if high is not None and high == low:
        return f"(?:{body}){{{low}}}" if low != 1 else body
    return f"(?:{body}){{{low},{'' if high is None else high}}}"


class _Converter:
    """One schema's conversion: the layout's regex pieces, and the root `$ref`s resolve in."""

    def __init__(
        self,
        root: Any,
        max_whitespace: int,
        separators: tuple[str, str],
        max_digits: int | None = None,
    ) -> None:
        self.root = root
        self.max_digits = max_digits
        self.separators = separators
        self.ws = f"[ \\n\\r\\t]{{0,{max_whitespace}}}" if max_whitespace else ""
        self.item_sep = self.ws + rx.escape(separators[0]) + self.ws
        self.key_sep = self.ws + rx.escape(separators[1]) + self.ws
        self.any_cache: dict[int, str] = {}

    def literal(self, value: Any) -> str:
        return rx.escape(json.dumps(value, separators=self.separators, ensure_ascii=False))

    def convert(self, schema: Any, path: str, refs: tuple[str, ...]) -> str:
        if schema is True:
            return self.any_value(ANY_DEPTH)
        if schema is False:
            return NOTHING
        if not isinstance(schema, dict):
            raise UnsupportedSchema(
                f"the schema at {path} is a {type(schema).__name__}, not an object"
            )
        for key in schema:
            if key not in SUPPORTED and key not in ANNOTATIONS:
                raise _unsupported(key, path)
        constraints = [k for k in schema if k not in ANNOTATIONS]
        combinators = [k for k in constraints if k in _COMBINATORS]
        if combinators:
            if len(constraints) > 1:
                others = ", ".join(repr(k) for k in constraints if k != combinators[0])
                raise _unsupported(combinators[0], path, f"beside {others}")
            return self.combinator(combinators[0], schema, path, refs)
        if "enum" in schema or "const" in schema:
            return self.values(schema, path)
        types = self.types(schema, path)
        return _alt([self.typed(schema, t, path, refs) for t in types])

    def types(self, schema: dict, path: str) -> list[str]:
        """The declared types, or those implied by the keywords present (else every type)."""
        declared = schema.get("type")
        if declared is None:
            implied = [t for t, ks in _KEYWORDS_BY_TYPE.items() if ks & schema.keys()]
            if "integer" in implied and "number" in implied:
                implied.remove("integer")
            return implied or ["any"]
        names = declared if isinstance(declared, list) else [declared]
        for name in names:
            if name not in JSON_TYPES:
                raise UnsupportedSchema(
                    f"'type' at {path} is {name!r}, which is not a JSON Schema type; use one of "
                    f"{', '.join(JSON_TYPES)}"
                )
        return names

    def typed(self, schema: dict, type_: str, path: str, refs: tuple[str, ...]) -> str:
        if type_ == "null":
            return "null"
        if type_ == "boolean":
            return "(?:true|false)"
        if type_ == "string":
            return self.string(schema, path)
        if type_ in ("integer", "number"):
            return self.numeric(schema, type_, path)
        if type_ == "object":
            return self.object(schema, path, refs)
        if type_ == "array":
            return self.array(schema, path, refs)
        return self.any_value(ANY_DEPTH)

    def values(self, schema: dict, path: str) -> str:
        """enum/const, filtered by `type` if given; other constraints beside them are refused."""
        extra = [k for k in schema if k not in ANNOTATIONS | {"enum", "const", "type"}]
        if extra:
            raise _unsupported(extra[0], path, "beside 'enum' or 'const'")
        if "const" in schema:
            values = [schema["const"]]
        elif isinstance(schema["enum"], list) and schema["enum"]:
            values = schema["enum"]
        else:
            raise UnsupportedSchema(f"'enum' at {path} must be a non-empty list of values")
        if "type" in schema:
            allowed = set(self.types(schema, path))
            values = [v for v in values if _json_types(v) & allowed]
        return _alt([self.literal(v) for v in values])

    def combinator(self, keyword: str, schema: dict, path: str, refs: tuple[str, ...]) -> str:
        if keyword == "$ref":
            return self.ref(schema["$ref"], path, refs)
        branches = schema[keyword]
        if not isinstance(branches, list) or not branches:
            raise UnsupportedSchema(f"{keyword!r} at {path} must be a non-empty list of schemas")
        if keyword == "allOf":
            if len(branches) != 1:
                raise _unsupported("allOf", path, "only one member can be compiled")
            return self.convert(branches[0], f"{path}/allOf/0", refs)
        if keyword == "oneOf":
            kinds = [self.value_types(b, 0) for b in branches]
            for i in range(len(kinds)):
                for j in range(i):
                    if kinds[i] & kinds[j]:
                        raise _unsupported(
                            "oneOf", path, f"branches {j} and {i} may both match one value"
                        )
        return _alt(
            [self.convert(b, f"{path}/{keyword}/{i}", refs) for i, b in enumerate(branches)]
        )

    def value_types(self, schema: Any, depth: int) -> set[str]:
        """The JSON types a schema's values can have (integer counted as number)."""
        everything = {"null", "boolean", "object", "array", "number", "string"}
        if not isinstance(schema, dict) or depth > RECURSION_DEPTH:
            return set() if schema is False else everything
        if "$ref" in schema:
            return self.value_types(self.resolve(schema["$ref"], "#"), depth + 1)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema and isinstance(schema[keyword], list):
                return set().union(*(self.value_types(b, depth + 1) for b in schema[keyword]))
        if "const" in schema:
            return _json_types(schema["const"]) - {"integer"}
        if isinstance(schema.get("enum"), list):
            return set().union(*(_json_types(v) for v in schema["enum"])) - {"integer"}
        if "type" in schema:
            names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            return {"number" if n == "integer" else n for n in names}
        return everything

    def resolve(self, ref: Any, path: str) -> Any:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise _unsupported(
                "$ref", path, f"only local references like '#/$defs/Name', not {ref!r}"
            )
        target = self.root
        for part in ref[1:].lstrip("/").split("/") if ref not in ("#", "#/") else []:
            key = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and key in target:
                target = target[key]
            elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
                target = target[int(key)]
            else:
                raise UnsupportedSchema(
                    f"'$ref' at {path}: {ref!r} points to nothing in the schema"
                )
        return target

    def ref(self, ref: Any, path: str, refs: tuple[str, ...]) -> str:
        target = self.resolve(ref, path)
        if refs.count(ref) >= RECURSION_DEPTH:
            return NOTHING
        return self.convert(target, ref, (*refs, ref))

    def string(self, schema: dict, path: str) -> str:
        present = [k for k in ("pattern", "format", "minLength", "maxLength") if k in schema]
        if "format" in schema:
            if len(present) > 1:
                raise _unsupported(present[1], path, "beside 'format'")
            fmt = schema["format"]
            if fmt not in FORMATS:
                raise _unsupported(
                    "format", path, f"{fmt!r}; the supported formats are {', '.join(FORMATS)}"
                )
            return f'"{FORMATS[fmt]}"'
        if "pattern" in schema:
            if len(present) > 1:
                raise _unsupported(present[1], path, "beside 'pattern'")
            return self.pattern(schema["pattern"], f"{path}/pattern")
        low = _count(schema, "minLength", path, 0)
        high = _count(schema, "maxLength", path, None)
        if (low, high) == (0, None):
            return STRING
        if high is not None and high < low:
            raise _impossible("maxLength", path, f"{high} is below minLength {low}")
        if max(low, high or 0) > rx.MAX_REPEAT:
            raise _unsupported(
                "maxLength" if (high or 0) > rx.MAX_REPEAT else "minLength",
                path,
                f"lengths above {rx.MAX_REPEAT} make the automaton too large",
            )
        return f'"{_repeat(JSON_CHAR, low, high)}"'

    def pattern(self, pattern: Any, path: str) -> str:
        if not isinstance(pattern, str):
            raise UnsupportedSchema(f"'pattern' at {path} must be a string")
        try:
            parsed = rx.parse(pattern)
        except LLMHoodError as e:
            raise UnsupportedSchema(f"'pattern' at {path}: {e}") from None
        body = rx.to_pattern(_encode_in_json(parsed.node))
        prefix = "" if parsed.anchored_start else f"{JSON_CHAR}*"
        suffix = "" if parsed.anchored_end else f"{JSON_CHAR}*"
        return f'"{prefix}(?:{body}){suffix}"'

    def numeric(self, schema: dict, type_: str, path: str) -> str:
        bounds = {k: schema[k] for k in _KEYWORDS_BY_TYPE["number"] if k in schema}
        for key, value in bounds.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _unsupported(key, path, f"{value!r} is not a number")
            if not math.isfinite(value):
                raise _unsupported(key, path, f"{value!r} is not finite")
            if type_ == "number" and value != int(value):
                raise _unsupported(key, path, "number bounds must be whole numbers")
        if not bounds and self.max_digits is None:
            return INTEGER if type_ == "integer" else NUMBER
        # The allowed integers [low, high], and the reals' integer-valued bounds.
        low = high = real_low = real_high = None
        fraction, zeros = _FRACTION, "(?:\\.0+)?"
        if self.max_digits is not None:  # bounds of max_digits digits, fractions as long
            cap, d = 10**self.max_digits - 1, self.max_digits
            bounds = {"minimum": -cap, "maximum": cap, **bounds}
            fraction, zeros = f"\\.[0-9]{{0,{d - 1}}}[1-9]", f"(?:\\.0{{1,{d}}})?"
        if "minimum" in bounds:
            low, real_low = math.ceil(bounds["minimum"]), bounds["minimum"]
        if "exclusiveMinimum" in bounds:
            e = math.floor(bounds["exclusiveMinimum"]) + 1
            low = e if low is None else max(low, e)
            m = bounds["exclusiveMinimum"]
            real_low = m if real_low is None else max(real_low, m)
        if "maximum" in bounds:
            high, real_high = math.floor(bounds["maximum"]), bounds["maximum"]
        if "exclusiveMaximum" in bounds:
            e = math.ceil(bounds["exclusiveMaximum"]) - 1
            high = e if high is None else min(high, e)
            m = bounds["exclusiveMaximum"]
            real_high = m if real_high is None else min(real_high, m)
        whole = _integer_range(low, high)
        if type_ == "integer":
            if whole == NOTHING:
                raise _impossible("minimum", path, "no integer lies within the bounds")
            return whole
        # Non-integers: the open interval (k, k+1) for each k with real_low <= k, k+1 <= real_high.
        k_low = None if real_low is None else int(real_low)
        k_high = None if real_high is None else int(real_high) - 1
        parts = [whole if whole == NOTHING else f"{whole}{zeros}"]
        nonneg = _natural_range(max(k_low or 0, 0), k_high)
        if nonneg != NOTHING:
            parts.append(f"{nonneg}{fraction}")
        if k_low is None or k_low < 0:
            # k < 0: the number is -(m + f) with m = -k-1 >= 0.
            m_low = 0 if k_high is None or k_high >= -1 else -k_high - 1
            negative = _natural_range(m_low, None if k_low is None else -k_low - 1)
            if negative != NOTHING:
                parts.append(f"-{negative}{fraction}")
        result = _alt(parts)
        if result == NOTHING:
            raise _impossible("minimum", path, "no number lies within the bounds")
        return result

    def object(self, schema: dict, path: str, refs: tuple[str, ...]) -> str:
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise UnsupportedSchema(f"'properties' at {path} must be an object")
        required = schema.get("required", [])
        if not isinstance(required, list):
            raise UnsupportedSchema(f"'required' at {path} must be a list of property names")
        for name in required:
            if name not in properties:
                raise _unsupported(
                    "required", path, f"{name!r} is required but not listed in 'properties'"
                )
        extra = schema.get("additionalProperties")
        empty = "\\{" + self.ws + "\\}"
        most = _count(schema, "maxProperties", path, None)
        if most is not None and most > rx.MAX_REPEAT and not properties:
            raise _unsupported(
                "maxProperties", path, f"counts above {rx.MAX_REPEAT} make the automaton too large"
            )
        if not properties and extra is not False:
            value = self.convert(
                True if extra is None else extra, f"{path}/additionalProperties", refs
            )
            return self.map(value, self.property_names(schema, path), most)
        if "propertyNames" in schema:
            raise _unsupported("propertyNames", path, "beside listed properties")
        if most is not None and most < len(properties):
            raise _unsupported(
                "maxProperties", path, f"{most} is below the {len(properties)} listed properties"
            )
        members = []
        for name, sub in properties.items():
            value = self.convert(sub, f"{path}/properties/{_pointer(name)}", refs)
            if value == NOTHING:  # a recursion cut short: leave the property out, if allowed
                if name in required:
                    return NOTHING
                continue
            members.append((self.literal(name) + self.key_sep + value, name in required))
        # After the first member, each one is ", member" (optional ones may be left out).
        rest = [""] * (len(members) + 1)
        for i in range(len(members) - 1, -1, -1):
            member, req = members[i]
            step = f"{self.item_sep}{member}"
            rest[i] = (step if req else f"(?:{step})?") + rest[i + 1]
        # The first member written is any optional one before the first required, or that one.
        firsts = []
        for i, (member, req) in enumerate(members):
            firsts.append(member + rest[i + 1])
            if req:
                break
        body = "\\{" + self.ws + _alt(firsts) + self.ws + "\\}"
        if any(req for _, req in members):
            return body
        return _alt([body, empty]) if members else empty

    def property_names(self, schema: dict, path: str) -> str:
        """The keys a map may have: any string, or those of its `propertyNames` schema."""
        names = schema.get("propertyNames")
        if names is None:
            return STRING
        where = f"{path}/propertyNames"
        if not isinstance(names, dict) or names.get("type", "string") != "string":
            raise UnsupportedSchema(f"'propertyNames' at {path} must be a string schema")
        other = sorted(set(names) - _KEYWORDS_BY_TYPE["string"] - {"type"} - ANNOTATIONS)
        if other:
            raise _unsupported(other[0], where, "in propertyNames")
        return self.string(names, where)

    def map(self, value: str, key: str = STRING, most: int | None = None) -> str:
        """An object of any keys matching `key`, each to a value matching `value`, at most
        `most` of them (None: any number)."""
        empty = "\\{" + self.ws + "\\}"
        if most == 0:
            return empty
        member = key + self.key_sep + value
        more = "*" if most is None else f"{{0,{most - 1}}}"
        return _alt(
            ["\\{" + self.ws + member + f"(?:{self.item_sep}{member}){more}" + self.ws + "\\}",
             empty]
        )  # fmt: skip

    def array(self, schema: dict, path: str, refs: tuple[str, ...]) -> str:
        prefix = schema.get("prefixItems", [])
        if not isinstance(prefix, list):
            raise UnsupportedSchema(f"'prefixItems' at {path} must be a list of schemas")
        if isinstance(schema.get("items"), list):
            raise _unsupported("items", path, "a list of schemas; use 'prefixItems'")
        low = _count(schema, "minItems", path, 0)
        high = _count(schema, "maxItems", path, None)
        items = [self.convert(s, f"{path}/prefixItems/{i}", refs) for i, s in enumerate(prefix)]
        if "items" in schema:
            rest = self.convert(schema["items"], f"{path}/items", refs)
        else:
            rest = NOTHING if prefix else self.any_value(ANY_DEPTH)
        if rest == NOTHING:
            high = len(items) if high is None else min(high, len(items))
        if high is not None and high < low:
            raise _impossible("maxItems", path, f"no array has between {low} and {high} items")
        if max(low, high or 0) > rx.MAX_REPEAT:
            raise _unsupported("maxItems", path, f"counts above {rx.MAX_REPEAT} are too large")
        empty = "\\[" + self.ws + "\\]"
        if high == 0:
            return empty

        def element(i: int) -> str:
            return items[i] if i < len(items) else rest

        def tail(i: int, need: int, room: int | None) -> str:
            """Elements from index i on, each after a separator: at least need, at most room."""
            if room == 0:
                return ""
            if i >= len(items):
                return _repeat(self.item_sep + rest, max(need, 0), room)
            step = (
                self.item_sep
                + element(i)
                + tail(i + 1, need - 1, None if room is None else room - 1)
            )
            return step if need > 0 else f"(?:{step})?"

        first = element(0)
        if first == NOTHING:
            if low > 0:
                raise _impossible("minItems", path, "the first item allows no value")
            return empty
        body = (
            "\\["
            + self.ws
            + first
            + tail(1, low - 1, None if high is None else high - 1)
            + self.ws
            + "\\]"
        )
        return body if low > 0 else _alt([body, empty])

    def any_value(self, depth: int) -> str:
        """Any JSON value with at most `depth` levels of arrays and objects."""
        found = self.any_cache.get(depth)
        if found is None:
            number = NUMBER if self.max_digits is None else self.numeric({}, "number", "#")
            parts = ["null", "true", "false", number, STRING]
            if depth > 0:
                inner = self.any_value(depth - 1)
                parts.append(
                    "\\[" + self.ws + inner + f"(?:{self.item_sep}{inner})*" + self.ws + "\\]"
                )
                parts.append("\\[" + self.ws + "\\]")
                parts.append(self.map(inner))
            found = self.any_cache[depth] = _alt(parts)
        return found


def _pointer(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _count(schema: dict, key: str, path: str, default: int | None) -> int | None:
    value = schema.get(key, default)
    if value is default:
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise UnsupportedSchema(f"{key!r} at {path} must be a whole number, not {value!r}")
    if value < 0:
        raise UnsupportedSchema(f"{key!r} at {path} must be 0 or more, not {value!r}")
    return int(value)


def _json_types(value: Any) -> set[str]:
    if value is None:
        return {"null"}
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, int):
        return {"integer", "number"}
    if isinstance(value, float):
        return {"integer", "number"} if value == int(value) else {"number"}
    if isinstance(value, str):
        return {"string"}
    if isinstance(value, list):
        return {"array"}
    return {"object"}


def _integer_range(low: int | None, high: int | None) -> str:
    """Exactly the decimal integers in [low, high] (None: unbounded), without `-0`."""
    if low is None and high is None:
        return INTEGER
    parts = []
    if high is None or high >= 0:
        parts.append(_natural_range(max(low if low is not None else 0, 0), high))
    if low is None or low < 0:
        magnitudes = _natural_range(
            max(1, -high if high is not None else 1), None if low is None else -low
        )
        if magnitudes != NOTHING:
            parts.append("-" + magnitudes)
    return _alt(parts)


def _natural_range(low: int, high: int | None) -> str:
    """The integers in [low, high] written without leading zeros; high None is unbounded."""
    if high is not None and high < low:
        return NOTHING
    if high is None:
        digits = len(str(low))
        return _alt([_natural_range(low, 10**digits - 1), f"[1-9][0-9]{{{digits},}}"])
    parts = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        a = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        b = min(high, 10**digits - 1)
        parts.append(_same_length(str(a), str(b)))
    return _alt(parts)


def _same_length(a: str, b: str) -> str:
    """The digit strings of len(a) == len(b) from a to b, leading zeros allowed."""
    if a == b:
        return a
    n = len(a) - 1
    if n == 0:
        return f"[{a}-{b}]"
    if a[0] == b[0]:
        return a[0] + _same_length(a[1:], b[1:])
    parts = []
    first = int(a[0])
    if a[1:] != "0" * n:
        parts.append(a[0] + _same_length(a[1:], "9" * n))
        first += 1
    last = int(b[0])
    tail = None
    if b[1:] != "9" * n:
        tail = b[0] + _same_length("0" * n, b[1:])
        last -= 1
    if first <= last:
        digit = str(first) if first == last else f"[{first}-{last}]"
        parts.append(f"{digit}[0-9]{{{n}}}")
    if tail is not None:
        parts.append(tail)
    return _alt(parts)


_SHORT_ESCAPES = {
    0x22: '\\"',
    0x5C: "\\\\",
    0x08: "\\b",
    0x0C: "\\f",
    0x0A: "\\n",
    0x0D: "\\r",
    0x09: "\\t",
}
_HEX = rx.Chars(rx.normalize([(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)]))
_MUST_ESCAPE = rx.normalize([(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)])


def _encode_in_json(node: rx.Node) -> rx.Node:
    """The tree of the JSON-encoded texts of the strings that `node` matches.

    Each character the pattern allows is written raw unless JSON forbids that: a quote,
    backslash or control character becomes its short escape or `\\u00XX` (either case).
    """
    if isinstance(node, rx.Chars):
        return _encode_chars(node.ranges)
    if isinstance(node, rx.Concat):
        return rx.Concat(tuple(_encode_in_json(n) for n in node.items))
    if isinstance(node, rx.Alt):
        return rx.Alt(tuple(_encode_in_json(n) for n in node.items))
    return rx.Repeat(_encode_in_json(node.item), node.min, node.max)


def _encode_chars(ranges: rx.Ranges) -> rx.Node:
    raw = _subtract(ranges, _MUST_ESCAPE)
    options: list[rx.Node] = [rx.Chars(raw)] if raw else []
    for lo, hi in ranges:
        for cp in range(max(lo, 0), min(hi, 0x5C) + 1):
            if not (cp < 0x20 or cp in _SHORT_ESCAPES):
                continue
            if cp in _SHORT_ESCAPES:
                options.append(rx.Concat(tuple(rx.char(c) for c in _SHORT_ESCAPES[cp])))
            if cp < 0x20:
                hex_digits = f"{cp:04x}"
                options.append(
                    rx.Concat(
                        (
                            *(rx.char(c) for c in "\\u00"),
                            *(_hex_digit(d) for d in hex_digits[2:]),
                        )
                    )
                )
    if not options:
        return rx.Chars(())
    return options[0] if len(options) == 1 else rx.Alt(tuple(options))


def _hex_digit(d: str) -> rx.Chars:
    if d.isdigit():
        return rx.char(d)
    return rx.Chars(rx.normalize([(ord(d.lower()),) * 2, (ord(d.upper()),) * 2]))


def _subtract(ranges: rx.Ranges, remove: rx.Ranges) -> rx.Ranges:
    """`ranges` minus `remove`, both normalized."""
    keep = rx.complement(remove)
    out = []
    for lo, hi in ranges:
        for k_lo, k_hi in keep:
            a, b = max(lo, k_lo), min(hi, k_hi)
            if a <= b:
                out.append((a, b))
    return rx.normalize(out)
