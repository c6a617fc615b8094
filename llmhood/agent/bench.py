"""`llmhood bench agent`: tool calling on BFCL's non-live categories, with and without
constrained decoding, scored by BFCL's own checker (llmhood.agent.bfcl).

Each question is one model turn (`llmhood.agent.call.decide`, what `call_tools` runs), greedy,
with the question's functions as the tools. Measured per category and mode:

* accuracy: the share of questions BFCL's checker counts correct;
* parse+valid: the share of replies that are a list of calls (the empty list included) in
  which every call names one of the question's functions with arguments that validate
  against its JSON Schema (jsonschema). Prose and broken JSON count as not parsing. This is
  the guarantee constrained decoding makes, checked from outside it;
* seconds per question, median and mean (prompt, generation and parsing; not scoring).

Replies that are not a call list count as "no call" for the checker, as BFCL counts a reply
it cannot decode: right for irrelevance, wrong elsewhere. Every question's result (its id,
the raw reply, the calls, the verdict and the checker's error) goes to a JSONL file next to
the --json output, one line as soon as the question is done, so failures can be read even
from an interrupted run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from llmhood.agent import bfcl
from llmhood.errors import LLMHoodError
from llmhood.registry import DEFAULT_MODEL
from llmhood.speed.bench import Target, load_average, machine, target_lines, targets_json

MODES = {"on": ("constrained",), "off": ("unconstrained",),
         "both": ("constrained", "unconstrained")}  # fmt: skip
TARGETS = (  # (name, category, goal in %): the goals for SmolLM2-135M-Instruct, constrained
    ("simple_python accuracy ≥ 50%", "simple_python", 50.0),
    ("multiple accuracy ≥ 45%", "multiple", 45.0),
    ("irrelevance accuracy ≥ 50%", "irrelevance", 50.0),
    ("  while simple_python ≥ 45%", "simple_python", 45.0),
)


@dataclass(frozen=True)
class Reply:
    """One model turn as the benchmark sees it."""

    calls: list[dict[str, Any]] | None  # [{"name", "arguments"}]; None: not a call list
    raw: str = ""  # the reply as generated


Answer = Callable[[list[dict[str, Any]], list[dict[str, Any]], bool], Reply]
"""(messages, tools, constrained) -> Reply: the model under test."""


def model_answer(llm: Any) -> Answer:
    """The model's turn, through the agent's own decision step (the one `call_tools` takes),
    which also says whether the reply parsed at all."""
    from llmhood.agent.call import decide

    def answer(messages: list[dict[str, Any]], tools: list[dict[str, Any]], constrained: bool):
        turn = decide(llm, messages, tools, constrained=constrained)
        return Reply(None if turn.calls is None else bfcl.as_calls(turn.calls), turn.raw)

    return answer


def from_call_tools(call_tools: Callable[..., Sequence[Any]], llm: Any = None) -> Answer:
    """An Answer from any function with `llmhood.agent.call_tools`'s signature, which returns
    calls only (so every reply counts as parsed)."""

    def answer(messages: list[dict[str, Any]], tools: list[dict[str, Any]], constrained: bool):
        return Reply(bfcl.as_calls(call_tools(llm, messages, tools, constrained=constrained)))

    return answer


def evaluate(
    questions: Sequence[bfcl.Question],
    answer: Answer,
    modes: Iterable[str] = MODES["both"],
    progress: bool = True,
    sink: IO[str] | None = None,
) -> list[dict[str, Any]]:
    """One record per question and mode, in that order; each also written to `sink` as a
    JSON line as soon as it is done."""
    modes = list(modes)
    records = []
    bar = tqdm(total=len(questions) * len(modes), desc="bfcl", unit="question",
               file=sys.stderr, disable=not progress)  # fmt: skip
    for mode in modes:
        for question in questions:
            bar.set_postfix_str(f"{question.category}, {mode}", refresh=False)
            record = judge(question, mode, answer)
            records.append(record)
            if sink is not None:
                sink.write(json.dumps(record, default=str) + "\n")
                sink.flush()
            bar.update()
    bar.close()
    return records


def judge(question: bfcl.Question, mode: str, answer: Answer) -> dict[str, Any]:
    """Ask, time, validate and score one question."""
    started = time.perf_counter()
    reply = answer(question.messages, question.tools, mode == "constrained")
    seconds = time.perf_counter() - started
    calls = reply.calls or []
    problems = ["The reply is not a list of calls."] if reply.calls is None else []
    problems += bfcl.schema_errors(question, calls)
    verdict = bfcl.score(question, calls)
    return {
        "id": question.id,
        "category": question.category,
        "mode": mode,
        "correct": verdict.correct,
        "error": verdict.error,
        "error_type": verdict.error_type,
        "parsed_and_valid": not problems,
        "schema_errors": problems,
        "calls": reply.calls,
        "raw": reply.raw,
        "seconds": seconds,
    }


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (category, mode) in the order first met: shares in % and seconds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["category"], r["mode"]), []).append(r)
    rows = []
    for (category, mode), group in groups.items():
        seconds = [r["seconds"] for r in group]
        rows.append({
            "category": category,
            "mode": mode,
            "questions": len(group),
            "accuracy": 100 * sum(r["correct"] for r in group) / len(group),
            "parsed_and_valid": 100 * sum(r["parsed_and_valid"] for r in group) / len(group),
            "median_s": statistics.median(seconds),
            "mean_s": statistics.fmean(seconds),
        })  # fmt: skip
    return rows


def targets(rows: Sequence[dict[str, Any]]) -> list[Target]:
    """The issue's goals, all on the constrained rows; None where a category was not run."""
    constrained = {r["category"]: r for r in rows if r["mode"] == "constrained"}
    valid = [(r["parsed_and_valid"], r["questions"]) for r in constrained.values()]
    overall = sum(v * n for v, n in valid) / sum(n for _, n in valid) if valid else None
    out: list[Target] = [("outputs that parse and validate ≥ 100%", overall, 100.0)]
    for name, category, goal in TARGETS:
        row = constrained.get(category)
        out.append((name, row["accuracy"] if row else None, goal))
    return out


def format_report(report: dict[str, Any]) -> str:
    m = report["machine"]
    limit = f"the first {report['limit']} questions" if report["limit"] else "all questions"
    lines = [
        f"llmhood bench agent: BFCL non-live categories (bfcl-eval {report['bfcl_eval']}), "
        "scored by BFCL's AST checker",
        f"model: {report['model']}",
        f"machine: {m['cpu']}, {m['cores']} cores ({m['isa']}), torch {m['torch']}, "
        f"Python {m['python']}, {m['date']}",
        f"load average before/after: {m.get('load_average_before')} / "
        f"{m.get('load_average_after')}",
        f"greedy, one model turn per question; {limit} of each category",
        "",
    ]
    header = ["category", "mode", "questions", "accuracy", "parse+valid", "s/q median", "mean"]
    table = [header] + [
        [r["category"], r["mode"], str(r["questions"]), f"{r['accuracy']:.1f}%",
         f"{r['parsed_and_valid']:.1f}%", f"{r['median_s']:.2f}", f"{r['mean_s']:.2f}"]
        for r in report["rows"]
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = [c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    lines += ["", "targets (constrained, in %):"]
    lines += target_lines(targets(report["rows"]), 40)
    if report.get("questions_file"):
        lines += ["", f"per-question results: {report['questions_file']}"]
    return "\n".join(lines)


def questions_file(json_path: str) -> Path:
    """Where the per-question results go: beside the --json file (out.json: out.questions.jsonl)."""
    return Path(json_path).with_suffix(".questions.jsonl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `llmhood bench agent`."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a model name or file")
    parser.add_argument(
        "--categories", default=",".join(bfcl.CATEGORIES), metavar="LIST",
        help=f"comma-separated subset of: {', '.join(bfcl.CATEGORIES)} (default: all)",
    )  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="the first N questions of each category (default: all)")  # fmt: skip
    parser.add_argument(
        "--constrained", choices=tuple(MODES), default="both",
        help="constrained decoding on, off, or each in turn (default: both)",
    )  # fmt: skip
    parser.add_argument("--adapter", default=None, metavar="PATH",
                        help="a LoRA adapter to run on the model (from llmhood train)")  # fmt: skip
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="write the results as JSON, and each question's beside it as "
                        "PATH's stem + .questions.jsonl")  # fmt: skip


def run(args: argparse.Namespace, answer: Answer | None = None) -> int:
    """`llmhood bench agent`: load the model once, run every category in each mode, print
    the report. `answer` replaces the model (tests); it is loaded only when none is given."""
    chosen = bfcl.categories(c.strip() for c in args.categories.split(",") if c.strip())
    questions = [q for c in chosen for q in bfcl.load(c, args.limit)]
    sink_path = questions_file(args.json) if args.json else None
    sink = open_sink(Path(args.json), sink_path) if sink_path else None
    report: dict[str, Any] = {"bfcl_eval": bfcl.bfcl_version(), "model": args.model,
                              "adapter": args.adapter, "limit": args.limit,
                              "machine": machine()}  # fmt: skip
    try:
        if answer is None:
            import llmhood

            llm = llmhood.load(args.model, adapter=args.adapter)
            report["model"] = llm.source
            answer = model_answer(llm)
        report["machine"]["load_average_before"] = load_average()
        records = evaluate(questions, answer, MODES[args.constrained], sink=sink)
    finally:
        if sink is not None:
            sink.close()
    report["machine"]["load_average_after"] = load_average()
    report["rows"] = summarize(records)
    report["targets"] = targets_json(targets(report["rows"]))
    report["questions_file"] = str(sink_path) if sink_path else None
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def open_sink(json_path: Path, path: Path) -> IO[str]:
    """The per-question file, opened before any model runs: a path that cannot be written
    fails now, not after an hour of questions."""
    if json_path.is_dir():
        raise LLMHoodError(f"--json {json_path} is a directory; give a file path.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("w", encoding="utf-8")
    except OSError as e:
        raise LLMHoodError(
            f"--json: cannot write the per-question results to {path} ({e.strerror}); give a "
            "--json path in a directory you can write to."
        ) from e
