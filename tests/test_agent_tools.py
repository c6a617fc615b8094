"""Tools: validation against jsonschema (the reference validator), coercion, error observations
a model can act on, timeouts; the calculator against Python's own arithmetic; file reading
confined to its root; the knowledge base as a search tool."""

from __future__ import annotations

import dataclasses
import enum
import math
import time
from pathlib import Path

import jsonschema
import pytest

from llmhood.agent.calculator import CalculationError, calculate, calculator
from llmhood.agent.files import Files, FileToolError
from llmhood.agent.tools import InvalidArguments, Tool, Toolbox
from llmhood.errors import LLMHoodError


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


@dataclasses.dataclass
class Place:
    city: str
    country: str = "FR"


def forecast(place: Place, days: int, unit: Unit = Unit.CELSIUS, scale: float = 1.0) -> dict:
    """A forecast.

    Args:
        place: Where.
        days: How many days.
    """
    return {"place": place, "days": days, "unit": unit, "scale": scale}


def fail(reason: str) -> str:
    """Always raises."""
    raise ValueError(reason)


def hang(seconds: float) -> str:
    """Sleeps."""
    time.sleep(seconds)
    return "woke"


def test_validate_rebuilds_types_and_coerces_only_losslessly():
    tool = Tool.from_function(forecast)
    checked = tool.validate({"place": {"city": "Paris"}, "days": 2.0, "unit": "fahrenheit",
                             "scale": 2})  # fmt: skip
    assert checked == {"place": Place("Paris"), "days": 2, "unit": Unit.FAHRENHEIT, "scale": 2.0}
    assert type(checked["days"]) is int and type(checked["scale"]) is float
    with pytest.raises(InvalidArguments) as error:
        tool.validate({"place": {"city": "Paris"}, "days": "2"})  # strings are never numbers
    assert "days: '2' is not of type 'integer'" in str(error.value)


def test_invalid_arguments_list_every_problem_and_match_jsonschema():
    tool = Tool.from_function(forecast)
    arguments = {"place": {"country": 5}, "unit": "kelvin", "extra": 1}
    reference = list(jsonschema.Draft202012Validator(tool.parameters).iter_errors(arguments))
    observation = tool.run(arguments)
    assert observation.error == "invalid_arguments" and not observation.ok
    for problem in reference:  # each error the reference finds is reported to the model
        assert problem.message in observation.content
    assert "'days' is a required property" in observation.content
    assert "unit: 'kelvin' is not one of ['celsius', 'fahrenheit']" in observation.content
    assert "place.country: 5 is not of type 'string'" in observation.content
    assert '"required":["place","days"]' in observation.content  # the schema, to correct from
    assert Tool.from_function(forecast).run([1]).error == "invalid_arguments"


def test_run_returns_the_value_and_renders_it_as_json():
    observation = Tool.from_function(forecast).run({"place": {"city": "Oslo"}, "days": 1})
    assert observation.ok and observation.value["place"] == Place("Oslo")
    assert observation.content == ('{"place": {"city": "Oslo", "country": "FR"}, "days": 1, '
                                   '"unit": "celsius", "scale": 1.0}')  # fmt: skip


def test_exceptions_and_hangs_become_error_observations():
    raised = Tool.from_function(fail).run({"reason": "no such city"})
    assert raised.error == "exception"
    assert "ValueError: no such city" in raised.content
    start = time.perf_counter()
    hung = Tool.from_function(hang).run({"seconds": 30}, timeout=0.2)
    assert hung.error == "timeout" and "0.2 seconds" in hung.content
    assert time.perf_counter() - start < 2  # 0.2 s plus thread start, far below the hang


def test_toolbox_unknown_names_say_which_tools_exist():
    box = Toolbox([forecast, fail, calculator])
    observation = box.run("get_weather", {"city": "Paris"})
    assert observation.error == "unknown_tool"
    assert "forecast, fail, calculator" in observation.content
    assert box.run("calculator", {"expression": "2 + 3 * 4"}).value == 2 + 3 * 4
    with pytest.raises(LLMHoodError, match="Two tools are named 'fail'"):
        Toolbox([fail, Tool.from_function(hang, name="fail")])


def test_tools_from_openai_and_bare_dicts():
    spec = {"name": "lookup", "description": "Find a word.",
            "parameters": {"type": "object", "properties": {"word": {"type": "string"}},
                           "required": ["word"]}}  # fmt: skip
    bare, wrapped = Tool.from_dict(spec), Tool.of({"type": "function", "function": spec})
    assert bare.spec() == wrapped.spec() == spec
    assert wrapped.openai() == {"type": "function", "function": spec}
    assert bare.validate({"word": "x"}) == {"word": "x"}
    with pytest.raises(InvalidArguments):
        bare.validate({})
    with pytest.raises(LLMHoodError, match="schema without a Python function"):
        bare.run({"word": "x"})


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"description": "x"}, "has no name"),
        ({"name": "f", "parameters": {"type": "dict"}}, "not a valid JSON Schema"),
        ({"name": "f", "parameters": {"type": "string"}}, '"type": "object"'),
        ("f", "must be a function, a dict or a Tool"),
    ],
)
def test_bad_tool_dicts_are_refused(spec, words):
    with pytest.raises(LLMHoodError, match=words.replace('"', ".")):
        Tool.of(spec)


def test_positional_only_parameters_are_passed_by_position():
    def power(base: float, exponent: float = 2.0, /) -> float:
        return base**exponent

    assert Tool.from_function(power).run({"base": 3}).value == 9.0


# The calculator, with Python's own arithmetic as the reference.
@pytest.mark.parametrize(
    ("expression", "reference"),
    [
        ("2 + 3 * 4", 2 + 3 * 4),
        ("(2 + 3) * 4 - 7 // 2", (2 + 3) * 4 - 7 // 2),
        ("7 % 3", 7 % 3),
        ("7%3", 7 % 3),
        ("10 % -3", 10 % -3),
        ("2 ** 10", 2**10),
        ("2^10", 2**10),
        ("-2^2", -(2**2)),
        ("2^3*2", 2**3 * 2),
        ("17.5% of 2,340", 17.5 / 100 * 2340),
        ("17.5% * 2340", 17.5 / 100 * 2340),
        ("200 + 10%", 200 + 10 / 100),
        ("1,234,567.5 + 0.5", 1234567.5 + 0.5),
        ("max(1,234)", max(1, 234)),
        ("min(3, max(1,2), 2_000)", min(3, max(1, 2), 2000)),
        ("sqrt(2) / 2", math.sqrt(2) / 2),
        ("round(pi, 3)", round(math.pi, 3)),
        ("log(8, 2) + ln(e) + log10(1000)", math.log(8, 2) + 1 + 3),
        ("factorial(20)", math.factorial(20)),
        ("6 × 7 ÷ 2", 6 * 7 / 2),
        ("0.1 + 0.2", 0.3),
    ],
)
def test_calculator_matches_python_arithmetic(expression, reference):
    value = calculate(expression)
    # 15 significant digits is the calculator's stated precision (DBL_DIG), so floats agree
    # to one part in 1e-14; integers exactly.
    if isinstance(reference, int):
        assert value == reference and type(value) is int
    else:
        assert math.isclose(value, reference, rel_tol=1e-14), (value, reference)


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("9**9**9", "digits; the limit is 1000"),
        ("10**2000", "digits; the limit is 1000"),
        ("10.0**400", "too large"),
        ("1/0", "divides by zero"),
        ("__import__('os').system('true')", "is not arithmetic"),
        ("__import__('os')", "no function '__import__'"),
        ("open('x')", "no function 'open'"),
        ("x + 1", "'x' is not a number"),
        ("(1).real", "is not arithmetic"),
        ("'a' * 3", "is not arithmetic"),
        ("lambda: 1", "is not arithmetic"),
        ("1,23", "is not arithmetic"),
        ("sqrt(-1)", "math domain error"),
        ("(-8) ** 0.5", "not a real number"),
        ("factorial(5000)", "limit is 1000"),
        ("round(x=1)", "by position"),
        ("2 +", "not arithmetic the calculator can read"),
        ("", "Give an arithmetic expression"),
        ("1+" * 300 + "1", "limit is 500"),
        ("-" * 400 + "1", None),  # deep but within limits: evaluates
    ],
)
def test_calculator_refuses_with_a_reason(expression, words):
    if words is None:
        assert calculate(expression) == 1
        return
    start = time.perf_counter()
    with pytest.raises(CalculationError, match=words):
        calculate(expression)
    assert time.perf_counter() - start < 1  # refused before any huge computation


# The file tools.
@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "notes").mkdir(parents=True)
    (tmp_path / "root" / "notes" / "a.txt").write_text("héllo wörld\n", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("do not read", encoding="utf-8")
    return tmp_path / "root"


def test_files_read_and_list_inside_the_root(root: Path):
    files = Files(root)
    assert files.read_file("notes/a.txt") == "héllo wörld\n"
    assert files.read_file(str(root / "notes" / "a.txt")) == "héllo wörld\n"  # absolute inside
    assert files.list_directory() == ".:\nnotes/"
    size = len("héllo wörld\n".encode())
    assert files.list_directory("notes") == f"notes:\na.txt ({size} bytes)"


def test_files_refuse_paths_outside_the_root(root: Path):
    files = Files(root)
    (root / "link.txt").symlink_to(root.parent / "secret.txt")
    (root / "up").symlink_to(root.parent)
    for path in ("../secret.txt", "notes/../../secret.txt", str(root.parent / "secret.txt"),
                 "link.txt", "up/secret.txt", "/etc/passwd"):  # fmt: skip
        with pytest.raises(FileToolError, match="outside the allowed directory"):
            files.read_file(path)
    with pytest.raises(FileToolError, match="outside the allowed directory"):
        files.list_directory("..")
    observation = Tool.from_function(files.read_file).run({"path": "../secret.txt"})
    assert observation.error == "exception" and "do not read" not in observation.content


def test_files_cap_size_and_handle_bytes_that_are_not_text(root: Path):
    text = "ab€" * 5000  # € is 3 bytes in UTF-8: the cap falls inside a character
    (root / "long.txt").write_text(text, encoding="utf-8")
    files = Files(root, max_bytes=1000)
    read, offset = "", 0
    while True:
        part = files.read_file("long.txt", offset)
        body, _, note = part.partition("\n[cut at byte ")
        read += body
        if not note:
            break
        offset = int(note.split(" ")[0])
    assert read == text  # paging reassembles the file exactly, no character split or lost
    (root / "latin1.txt").write_bytes("café".encode("latin-1"))
    assert files.read_file("latin1.txt").startswith("caf\ufffd\n[1 byte sequences")
    (root / "blob.bin").write_bytes(b"\x89PNG\0\0")
    with pytest.raises(FileToolError, match="binary"):
        files.read_file("blob.bin")
    for path, words in (("missing.txt", "does not exist"), ("notes", "is a directory")):
        with pytest.raises(FileToolError, match=words):
            files.read_file(path)
    with pytest.raises(FileToolError, match="is a file"):
        files.list_directory("long.txt")
    with pytest.raises(FileToolError, match="offset 99999"):
        files.read_file("long.txt", 99999)
    with pytest.raises(LLMHoodError, match="is not a directory"):
        Files(root / "nothing")
    with pytest.raises(LLMHoodError, match="at least 4"):
        Files(root, max_bytes=2)


def test_knowledge_base_search_returns_passages_with_sources(tmp_path: Path):
    from llmhood.agent.kb_search import KnowledgeBaseSearch
    from llmhood.rag import KnowledgeBase
    from tests.rag_docs import DOCS, write_docs

    docs = {name: DOCS[name] for name in ("bread.txt", "astronomy/mars.md")}
    kb = KnowledgeBase.build(write_docs(tmp_path / "docs", docs), tmp_path / "kb", progress=False)
    search = KnowledgeBaseSearch(kb, k=2, mode="bm25")
    tool = Tool.from_function(search.search_knowledge_base)
    result = tool.run({"query": "How many moons does Mars have?"}).content
    first = result.split("\n\n[2]")[0]
    assert first.startswith("[1] source: astronomy/mars.md#") and "Phobos" in first
    reference = kb.search("How many moons does Mars have?", k=2, mode="bm25")
    assert [line.split("source: ")[1] for line in result.splitlines() if " source: " in line] == [
        hit.id for hit in reference
    ]
    assert tool.run({"query": " "}).error == "exception"
    with pytest.raises(LLMHoodError, match="Unknown search mode"):
        KnowledgeBaseSearch(kb, mode="fuzzy")
    with pytest.raises(LLMHoodError, match="at least 1"):
        KnowledgeBaseSearch(kb, k=0)
