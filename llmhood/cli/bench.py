"""`llmhood bench`: llmhood's speed against transformers and llama.cpp (llmhood.speed.bench)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llmhood.cli.common import comma_list
from llmhood.errors import LLMHoodError
from llmhood.registry import DEFAULT_MODEL, resolve
from llmhood.speed import bench  # light: transformers and llama.cpp are imported by its children


def cmd_bench(args: argparse.Namespace) -> None:
    path = resolve(args.model)
    if path.is_dir() or path.suffix != ".gguf":
        raise LLMHoodError(
            f"llmhood bench needs a .gguf file (all three engines read it); {path} is not one."
        )
    if args.profile:
        print(bench.profile_decode(path))
        return
    if args.json:
        writable(Path(args.json))
    engines = bench.ENGINES
    if args.engines:
        engines = tuple(comma_list(args.engines))
    report = bench.run(
        path, args.repeat, args.quick, engines, quality=not args.no_quality,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    print(bench.format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(bench.to_json(report), indent=2) + "\n")


def writable(path: Path) -> None:
    """Fail now, not after half an hour of benchmarks, if the results could not be saved."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LLMHoodError(f"--json {path}: cannot create {path.parent} ({e.strerror}).") from e
    if path.is_dir() or not os.access(path.parent, os.W_OK):
        raise LLMHoodError(f"--json {path}: not a file that can be written; give a file path.")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed against transformers and llama.cpp, side by side")
    p.add_argument("--model", default=DEFAULT_MODEL, help="a model name or a .gguf file")
    p.add_argument("--repeat", type=int, default=3, help="runs per engine; medians (default: 3)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--quick", action="store_true", help="tiny workloads: a smoke test, seconds")
    p.add_argument(
        "--engines", default=None, metavar="LIST",
        help=f"comma-separated subset of: {', '.join(bench.ENGINES)} (default: all)",
    )  # fmt: skip
    p.add_argument("--no-quality", action="store_true", help="skip the perplexity table")
    p.add_argument(
        "--profile", action="store_true",
        help="instead: where llmhood's decode steps spend their time (torch.profiler)",
    )  # fmt: skip
    p.set_defaults(func=cmd_bench)
