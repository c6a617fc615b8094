"""BFCL's questions, their JSON Schemas, and scoring through BFCL's own checker.

The references: BFCL's possible answers (a call built from them is correct by definition, and
a call that leaves them is not), BFCL's own type table (`GORILLA_TO_OPENAPI`), its documented
checking rules (parallel calls in any order, strings compared without case, an int accepted
for a float), jsonschema, and the category sizes the issue states. No model runs here: the
benchmark is driven by fake `call_tools` functions that answer right or wrong on purpose.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from llmhood.agent import bench, bfcl
from llmhood.errors import LLMHoodError

pytest.importorskip("bfcl_eval")

# The two questions whose only acceptable answers contradict the types their own function
# descriptions declare: parallel_multiple_21 wants the strings "data['sales']" (a variable
# name) for array parameters, parallel_multiple_94 wants fruit names in an array of integers.
# BFCL's checker accepts them; no schema-valid call (so no constrained decoder) can give them.
ANSWERS_AGAINST_THEIR_SCHEMA = {"parallel_multiple_21", "parallel_multiple_94"}
# What the issue says the constrained decoder accepts, plus the annotations it ignores.
DECODER_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "enum", "const", "pattern",
    "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "items", "minItems", "maxItems", "anyOf", "$ref", "$defs", "description", "default",
}  # fmt: skip


@pytest.fixture(scope="module")
def questions() -> dict[str, list[bfcl.Question]]:
    return {c: bfcl.load(c) for c in bfcl.CATEGORIES}


def pick(options: list[Any], required: bool = False) -> tuple[bool, Any]:
    """One acceptable value: (False, None) to leave the argument out where BFCL allows it
    (an "" among the options), else the first option, with nested possible answers resolved."""
    if "" in options and not required:
        return False, None
    return True, resolve(next(o for o in options if o != ""))


def resolve(value: Any) -> Any:
    """A dict (or list of dicts) parameter's possible answer holds options per key."""
    if isinstance(value, dict):
        return {k: v for k, opts in value.items() for ok, v in [pick(opts)] if ok}
    if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        return [resolve(x) for x in value]
    return value


def right_calls(q: bfcl.Question) -> list[dict[str, Any]]:
    """The possible answer of a question written as calls."""
    if q.answer is None:
        return []
    required = {f["name"]: set(f["parameters"].get("required", [])) for f in q.functions}
    calls = []
    for entry in q.answer:
        ((name, options),) = entry.items()
        arguments = {}
        for arg, values in options.items():
            keep, value = pick(values, arg in required[name])
            if keep:
                arguments[arg] = value
        calls.append({"name": name, "arguments": arguments})
    return calls


def sample(items: list[bfcl.Question], every: int = 7) -> list[bfcl.Question]:
    return items[::every]


# ---- the data --------------------------------------------------------------------------------


def test_category_sizes_are_the_issues(questions):
    assert {c: len(qs) for c, qs in questions.items()} == {
        "simple_python": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200,
        "irrelevance": 240,
    }  # fmt: skip
    for category, qs in questions.items():
        assert len({q.id for q in qs}) == len(qs)
        assert all(q.id.startswith(category + "_") for q in qs)
        assert all(q.messages and all(m["role"] == "user" for m in q.messages) for q in qs)
        assert all((q.answer is None) == (category == "irrelevance") for q in qs)


def test_limit_takes_the_first_questions(questions):
    first = bfcl.load("parallel", 3)
    assert [q.id for q in first] == [q.id for q in questions["parallel"][:3]]


def test_type_mapping_is_bfcls_own():
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI

    assert {k: GORILLA_TO_OPENAPI[k] for k in bfcl.TYPES} == bfcl.TYPES


def test_schemas_are_valid_json_schema_the_decoder_reads(questions):
    def keywords(schema: dict[str, Any]) -> set[str]:
        found = set(schema)
        for sub in schema.get("properties", {}).values():
            found |= keywords(sub)
        if isinstance(schema.get("items"), dict):
            found |= keywords(schema["items"])
        return found

    for qs in questions.values():
        for q in qs:
            assert len(q.tools) == len(q.functions)
            for tool, function in zip(q.tools, q.functions, strict=True):
                f = tool["function"]
                assert tool["type"] == "function" and f["name"] == function["name"]
                assert f["description"].endswith("Python 3 syntax.")
                jsonschema.Draft202012Validator.check_schema(f["parameters"])
                assert keywords(f["parameters"]) <= DECODER_KEYWORDS, q.id
                assert set(f["parameters"]["properties"]) == set(
                    function["parameters"]["properties"]
                )


def test_format_goes_into_the_description():
    schema = bfcl.json_schema({"type": "string", "description": "When.", "format": "date"}, "x")
    assert schema == {"type": "string", "description": "When. Format: date."}


# ---- scoring ---------------------------------------------------------------------------------


def test_possible_answers_score_correct_and_validate(questions):
    against_schema = set()
    for qs in questions.values():
        for q in qs:
            calls = right_calls(q)
            verdict = bfcl.score(q, calls)
            assert verdict.correct, (q.id, verdict)
            problems = bfcl.schema_errors(q, calls)
            if problems:
                assert all("is not of type" in p for p in problems), problems
                against_schema.add(q.id)
    assert against_schema == ANSWERS_AGAINST_THEIR_SCHEMA


def test_tool_call_objects_score_like_dicts(questions):
    class ToolCall:  # what llmhood.agent.call_tools returns: .name and .arguments
        def __init__(self, name: str, arguments: dict[str, Any]) -> None:
            self.name, self.arguments = name, arguments

    q = questions["simple_python"][0]
    assert bfcl.score(q, [ToolCall(c["name"], c["arguments"]) for c in right_calls(q)]).correct


def test_the_checker_does_not_change_its_inputs(questions):
    q = questions["parallel_multiple"][3]
    calls = right_calls(q)
    before = (copy.deepcopy(calls), copy.deepcopy(q.functions), copy.deepcopy(q.answer))
    bfcl.score(q, calls)
    assert (calls, q.functions, q.answer) == before


def perturbed(value: Any, options: list[Any]) -> Any:
    """A value of the same type that is not among the acceptable ones, or None."""
    if isinstance(value, bool):
        candidate: Any = not value
    elif isinstance(value, (int, float)):
        candidate = type(value)(value * 7 + 1013)
    elif isinstance(value, str):
        candidate = value + " qqq"
    else:
        return None
    strings = [str(o).lower().replace(" ", "") for o in options]
    return None if candidate in options or str(candidate).lower() in strings else candidate


@pytest.mark.parametrize("category", ["simple_python", "multiple", "parallel", "parallel_multiple"])
def test_wrong_calls_score_wrong(questions, category):
    perturbed_some = 0
    for q in sample(questions[category]):
        calls = right_calls(q)
        assert not bfcl.score(q, []).correct
        assert not bfcl.score(q, [*calls, calls[0]]).correct  # an extra call
        renamed = [{**calls[0], "name": calls[0]["name"] + "_v2"}, *calls[1:]]
        assert not bfcl.score(q, renamed).correct
        if len(calls) > 1:
            assert not bfcl.score(q, calls[:-1]).correct  # a call missing
        options = next(iter(q.answer[0].values()))
        for arg, value in calls[0]["arguments"].items():
            wrong = perturbed(value, options[arg])
            if wrong is not None:
                bad = copy.deepcopy(calls)
                bad[0]["arguments"][arg] = wrong
                verdict = bfcl.score(q, bad)
                assert not verdict.correct and verdict.error, (q.id, arg, wrong)
                perturbed_some += 1
                break
    assert perturbed_some >= len(sample(questions[category])) * 0.9  # nearly every question
    # has a scalar argument to perturb; the few that hold only lists and dicts are skipped


def test_parallel_calls_count_in_any_order(questions):
    reordered = 0
    for category in ("parallel", "parallel_multiple"):
        for q in sample(questions[category]):
            calls = right_calls(q)
            assert bfcl.score(q, calls[::-1]).correct, q.id
            reordered += len(calls) > 1
    assert reordered > 10


def test_strings_compare_without_case_and_ints_pass_for_floats(questions):
    q = questions["simple_python"][0]  # calculate_triangle_area(base=10, height=5)
    shouted = {"base": 10, "height": 5, "unit": "UNITS"}
    assert bfcl.score(q, [{"name": "calculate_triangle_area", "arguments": shouted}]).correct
    floats = next(q for q in questions["parallel_multiple"] if q.id == "parallel_multiple_1")
    as_ints = [{"name": c["name"], "arguments": {k: int(v) for k, v in c["arguments"].items()}}
               for c in right_calls(floats)]  # fmt: skip
    assert all(isinstance(v, float) for c in right_calls(floats) for v in c["arguments"].values())
    assert bfcl.score(floats, as_ints).correct


def test_irrelevance_is_right_only_without_a_call(questions):
    for q in sample(questions["irrelevance"]):
        assert bfcl.score(q, []).correct
        name = q.functions[0]["name"]
        verdict = bfcl.score(q, [{"name": name, "arguments": {}}])
        assert not verdict.correct and verdict.error


def test_a_checker_crash_is_a_miss(questions, monkeypatch):
    module = bfcl.checker()

    def crash(*args, **kwargs):
        raise AttributeError("'str' object has no attribute 'items'")

    monkeypatch.setattr(module, "ast_checker", crash)
    verdict = bfcl.score(questions["simple_python"][0], right_calls(questions["simple_python"][0]))
    assert not verdict.correct and verdict.error_type == "checker_raised"
    assert "AttributeError" in verdict.error


def test_schema_errors_name_the_problem(questions):
    q = questions["simple_python"][0]
    assert bfcl.schema_errors(q, right_calls(q)) == []
    assert "not one of the functions" in bfcl.schema_errors(q, [{"name": "x", "arguments": {}}])[0]
    arguments = {"base": "ten", "height": 5, "colour": 1}
    bad = bfcl.schema_errors(q, [{"name": "calculate_triangle_area", "arguments": arguments}])
    assert any("'ten' is not of type 'integer'" in p for p in bad)
    assert any("'colour' was unexpected" in p for p in bad)


def test_checker_loads_without_bfcls_api_clients():
    """In a fresh interpreter: loading the checker imports only BFCL's own modules and the
    standard library (read from their sources), never the model_config table that pulls in
    the API clients, and leaves no stand-in behind."""
    script = (
        "import importlib.util, json, sys\n"
        "import llmhood.agent.bfcl as b\n"
        "before = set(sys.modules)\n"
        "b.checker()\n"
        "new = sorted(set(sys.modules) - before)\n"
        "files = {m: sys.modules[m].__file__ for m in new if m.startswith('bfcl_eval')}\n"
        "files[b.CHECKER] = importlib.util.find_spec(b.CHECKER).origin\n"
        "print(json.dumps({'new': new, 'files': files, 'left': b.MODEL_CONFIG in sys.modules,"
        " 'registered': b.CHECKER in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert not found["left"] and not found["registered"]
    assert bfcl.MODEL_CONFIG not in found["new"]
    assert {m.split(".")[0] for m in found["new"]} <= {"bfcl_eval"} | set(sys.stdlib_module_names)
    imported = set()
    for path in found["files"].values():
        for node in ast.walk(ast.parse(Path(path).read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module)
    outside = {m for m in imported if m.split(".")[0] != "bfcl_eval"}
    assert {m.split(".")[0] for m in outside} <= set(sys.stdlib_module_names)
    assert bfcl.MODEL_CONFIG in imported  # the one import the stand-in answers


# ---- errors a user can cause -----------------------------------------------------------------


def test_unknown_category_names_the_choices():
    with pytest.raises(LLMHoodError, match="Unknown BFCL category simple_java: choose from"):
        bfcl.categories(["simple_python", "simple_java"])
    with pytest.raises(LLMHoodError, match="No BFCL category given: choose from simple_python"):
        bfcl.categories([])


def test_limit_below_one():
    with pytest.raises(LLMHoodError, match="--limit 0: give a number of questions of at least 1"):
        bfcl.load("simple_python", 0)


def test_missing_bfcl_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bfcl_eval" else real(name)
    )
    with pytest.raises(LLMHoodError, match=r"pip install --no-deps bfcl-eval==2026\.3\.23"):
        bfcl.load("simple_python", 1)


def test_missing_data_file_names_the_release():
    with pytest.raises(
        LLMHoodError, match=r"no data file BFCL_v4_gone\.json.*bfcl-eval 2026\.3\.23"
    ):
        bfcl._read("BFCL_v4_gone.json")


def test_unknown_bfcl_type_names_the_parameter():
    function = {"name": "f", "description": "", "parameters": {
        "type": "dict", "properties": {"when": {"type": "datetime"}}, "required": []}}  # fmt: skip
    with pytest.raises(LLMHoodError, match=r"parameter f\.when has type 'datetime'"):
        bfcl.tool(function)


# ---- the benchmark runner, with fake models --------------------------------------------------


def key(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> str:
    return json.dumps([messages, tools], sort_keys=True)


def fake_call_tools(questions: dict[str, list[bfcl.Question]], wrong: bool = False):
    """`call_tools` that knows the answers: right ones, or the first call renamed."""
    table = {key(q.messages, q.tools): right_calls(q) for qs in questions.values() for q in qs}

    def call_tools(llm, messages, tools, constrained=True):
        calls = table[key(messages, tools)]
        if wrong:
            return [{"name": "nothing_here", "arguments": {}}, *calls[1:]]
        return calls

    return call_tools


def args(**overrides: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args([f"--{k.replace('_', '-')}={v}" for k, v in overrides.items()])


def test_options_and_defaults():
    a = args()
    assert (a.categories, a.limit, a.constrained, a.adapter, a.json) == (
        ",".join(bfcl.CATEGORIES), None, "both", None, None)  # fmt: skip
    with pytest.raises(SystemExit):
        args(constrained="maybe")


def test_right_answers_score_full_marks(questions, tmp_path, capsys):
    out = tmp_path / "r" / "agent.json"
    answer = bench.from_call_tools(fake_call_tools(questions))
    assert bench.run(args(limit=4, json=out), answer) == 0
    report = json.loads(out.read_text())
    rows = {(r["category"], r["mode"]): r for r in report["rows"]}
    assert set(rows) == {(c, m) for c in bfcl.CATEGORIES for m in bench.MODES["both"]}
    for row in rows.values():
        assert row["questions"] == 4 and row["accuracy"] == 100.0
        assert row["parsed_and_valid"] == 100.0
        assert row["median_s"] >= 0 and row["mean_s"] >= 0
    assert all(t["met"] for t in report["targets"]), report["targets"]
    lines = [json.loads(line) for line in (tmp_path / "r" / "agent.questions.jsonl").open()]
    assert len(lines) == 4 * len(bfcl.CATEGORIES) * 2
    assert {"id", "calls", "correct", "error", "error_type", "mode"} <= set(lines[0])
    printed = capsys.readouterr().out
    assert "machine:" in printed and "targets (constrained" in printed
    assert "NOT met" not in printed


def test_wrong_answers_and_prose(questions, tmp_path):
    chosen = [q for c in ("simple_python", "irrelevance") for q in questions[c][:5]]
    wrong = bench.evaluate(chosen, bench.from_call_tools(fake_call_tools(questions, wrong=True)),
                           ["constrained"], progress=False)  # fmt: skip
    simple = [r for r in wrong if r["category"] == "simple_python"]
    assert not any(r["correct"] or r["parsed_and_valid"] for r in simple)
    assert all("nothing_here" in r["schema_errors"][0] for r in simple)
    prose = bench.evaluate(chosen, lambda m, t, c: bench.Reply(None, "I think it is 25."),
                           ["unconstrained"], progress=False)  # fmt: skip
    rows = {r["category"]: r for r in bench.summarize(prose)}
    assert rows["simple_python"]["accuracy"] == 0.0
    assert rows["irrelevance"]["accuracy"] == 100.0  # BFCL: no decodable call is right here
    assert all(r["parsed_and_valid"] == 0.0 for r in rows.values())
    targets = dict((name, value) for name, value, _ in bench.targets(bench.summarize(prose)))
    assert all(v is None for v in targets.values())  # no constrained row: not measured


def test_only_the_mode_asked_for(questions, tmp_path):
    seen = []

    def call_tools(llm, messages, tools, constrained=True):
        seen.append(constrained)
        return []

    bench.run(args(categories="irrelevance", limit=2, constrained="off"),
              bench.from_call_tools(call_tools))  # fmt: skip
    assert seen == [False, False]


def test_json_path_that_cannot_be_written(tmp_path):
    answer = bench.from_call_tools(lambda *a, **k: [])
    with pytest.raises(LLMHoodError, match="is a directory; give a file path"):
        bench.run(args(limit=1, json=tmp_path), answer)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LLMHoodError, match="cannot write the per-question results"):
        bench.run(args(limit=1, json=blocker / "out.json"), answer)


def test_the_cli_has_bench_agent(tmp_path):
    """`llmhood bench agent` is the command the README names; bad options fail before any
    model loads (the run takes under a few seconds, where a load would take longer)."""
    cli = [sys.executable, "-m", "llmhood"]
    shown = subprocess.run([*cli, "bench", "agent", "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--categories" in shown.stdout and "--adapter" in shown.stdout
    for bad, message in ((["--limit", "0"], "--limit 0: give a number of questions of at least"),
                         (["--categories", "nope"], "Unknown BFCL category nope"),
                         (["--json", str(tmp_path)], "give a file path")):  # fmt: skip
        done = subprocess.run([*cli, "bench", "agent", *bad], capture_output=True, text=True)
        assert done.returncode != 0 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
