"""The calculator tool: arithmetic parsed by `ast` and evaluated from a whitelist, never `eval`.

    calculate("17.5% of 2,340")      # 409.5
    calculate("sqrt(2) * max(3, 4)") # 5.65685424949238

Accepted: numbers (`2_340` too), + - * / // % **, unary + and -, parentheses, the functions
in FUNCTIONS with positional arguments, and the constants pi, e and tau. Anything else (names,
attributes, strings, comparisons, lambdas) is refused by node type before anything runs.

Written the way people and models write questions:
* `^` is a power, as on calculators (Python's XOR means nothing here), and × ÷ are * /;
* `17.5%` is a percentage (0.175) when the `%` follows a number directly and no number, name
  or parenthesis comes next: `17.5% * 2340`, `17.5% of 2340` ("of" multiplies), `200 + 10%`
  is 200.1, not 220. With an operand after it (`7 % 3`, `7%3`) it is Python's remainder;
* commas in `2,340` and `1,234,567.5` are thousands separators outside a function's
  parentheses; inside them a comma separates arguments (`max(1,234)` is 234).

Limits, so that no input can hang or exhaust the process: 500 characters, integers of at most
MAX_DIGITS digits (checked before a power is computed: `9**9**9` would take hours), floats
that overflow are refused, and factorial stops at 1000. Float results are rounded to 15
significant digits, the most a double always carries through decimal (DBL_DIG), which drops
binary noise such as 0.1 + 0.2 = 0.30000000000000004.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from llmhood.errors import LLMHoodError

MAX_LENGTH = 500  # characters
MAX_DIGITS = 1000  # digits of any integer, operand or result
MAX_FACTORIAL = 1000

Number = int | float


class CalculationError(LLMHoodError):
    """An expression the calculator refuses or cannot evaluate; the message says why."""


def factorial(n: Number) -> int:
    if not float(n).is_integer() or n < 0:
        raise CalculationError(f"factorial needs a whole number ≥ 0, not {n}.")
    if n > MAX_FACTORIAL:
        raise CalculationError(f"factorial({n:g}) is too large; the limit is {MAX_FACTORIAL}.")
    return math.factorial(int(n))


def log(x: Number, base: Number = math.e) -> float:
    return math.log(x, base)


FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max,
    "floor": math.floor, "ceil": math.ceil, "exp": math.exp, "log": log,
    "ln": math.log, "log10": math.log10, "log2": math.log2, "factorial": factorial,
    "sin": math.sin, "cos": math.cos, "tan": math.tan,
    "asin": math.asin, "acos": math.acos, "atan": math.atan,
}  # fmt: skip
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
BINARY: dict[type, Callable[[Any, Any], Number]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}  # fmt: skip
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}

NUMBER = r"\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?"
PERCENT_OF = re.compile(rf"(?<![\w.])({NUMBER})%\s*of\b")
PERCENT = re.compile(rf"(?<![\w.])({NUMBER})%(?!\s*[\w(.])")
GROUPED = re.compile(r"(?<![\w.])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])")


def calculator(expression: str) -> Number:
    """Evaluate an arithmetic expression and return the number.

    Args:
        expression: Arithmetic such as "17.5% of 2340", "(3 + 4) * 2 ** 10" or
            "sqrt(2) / 2". Numbers, + - * / // % ** ^, parentheses, percentages, pi, e,
            and sqrt abs round min max floor ceil exp log ln log10 log2 factorial sin cos
            tan asin acos atan.
    """
    return calculate(expression)


def calculate(expression: str) -> Number:
    if not isinstance(expression, str) or not expression.strip():
        raise CalculationError("Give an arithmetic expression, such as 2 * (3 + 4).")
    if len(expression) > MAX_LENGTH:
        raise CalculationError(f"The expression is {len(expression)} characters long; the "
                               f"limit is {MAX_LENGTH}. Split the calculation.")  # fmt: skip
    text = normalise(expression)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise CalculationError(f"{expression!r} is not arithmetic the calculator can read "
                               f"({e.msg}). Write it like 2 * (3 + 4) / 5.") from e  # fmt: skip
    try:
        value = evaluate(tree.body)
    except ZeroDivisionError as e:
        raise CalculationError(f"{expression!r} divides by zero.") from e
    except OverflowError as e:
        raise CalculationError(f"{expression!r} is too large for a float ({e}).") from e
    except (ValueError, TypeError) as e:
        raise CalculationError(f"{expression!r} cannot be evaluated: {e}.") from e
    except RecursionError as e:
        raise CalculationError(f"{expression!r} is nested too deeply.") from e
    return float(f"{value:.15g}") if isinstance(value, float) else value


def normalise(expression: str) -> str:
    """The written forms above turned into Python syntax."""
    text = expression.replace("×", "*").replace("÷", "/").replace("^", "**")
    text = ungroup(text)
    text = PERCENT_OF.sub(r"(\1/100)*", text)
    return PERCENT.sub(r"(\1/100)", text)


def ungroup(text: str) -> str:
    """Thousands separators removed where a comma cannot be separating arguments."""
    out, calls, i = [], [], 0
    while i < len(text):
        grouped = GROUPED.match(text, i)
        if grouped and not (calls and calls[-1]):
            out.append(grouped.group().replace(",", ""))
            i = grouped.end()
            continue
        char = text[i]
        if char == "(":
            calls.append(bool(re.search(r"[A-Za-z_]\w*\s*$", "".join(out))))
        elif char == ")" and calls:
            calls.pop()
        out.append(char)
        i += 1
    return "".join(out)


def evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return checked(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = evaluate(node.left), evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            check_power(left, right)
        return checked(BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](evaluate(node.operand))
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id not in FUNCTIONS:
            raise CalculationError(f"The calculator has no function {node.func.id!r}; it has "
                                   f"{', '.join(FUNCTIONS)}.")  # fmt: skip
        if node.keywords:
            raise CalculationError(f"Pass {node.func.id}'s arguments by position.")
        return checked(FUNCTIONS[node.func.id](*map(evaluate, node.args)))
    if isinstance(node, ast.Name):
        raise CalculationError(f"{node.id!r} is not a number or a known constant "
                               f"({', '.join(CONSTANTS)}).")  # fmt: skip
    raise CalculationError(f"{ast.unparse(node)!r} is not arithmetic: the calculator takes "
                           "numbers, + - * / // % **, parentheses and its functions.")  # fmt: skip


def check_power(base: Number, exponent: Number) -> None:
    """Refuse an integer power whose result would exceed MAX_DIGITS, before computing it."""
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        digits = exponent * math.log10(abs(base))
        if digits > MAX_DIGITS:
            raise CalculationError(f"{base} ** {exponent} has about {digits:.3g} digits; the "
                                   f"limit is {MAX_DIGITS}.")  # fmt: skip


def checked(value: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CalculationError(f"The result {value!r} is not a real number.")
    if isinstance(value, int) and value.bit_length() > MAX_DIGITS * math.log2(10):
        raise CalculationError(f"The result has more than {MAX_DIGITS} digits.")
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculationError("The result is not a finite number.")
    return value
