"""`llmhood bench`: llmhood's speed against transformers and llama.cpp (llmhood.speed.bench);
`llmhood bench train`: its fine-tuning speed against peft and trl (llmhood.train.bench);
`llmhood bench rag`: retrieval against bm25s, rank_bm25, sentence-transformers and faiss
(llmhood.rag.bench); `llmhood bench constrain`: constrained decoding against xgrammar
(llmhood.generate.constrain.bench); `llmhood bench agent`: tool calling on BFCL, scored by
BFCL's own checker (llmhood.agent.bench)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from llmhood.agent import bench as agent_bench
from llmhood.cli.common import comma_list
from llmhood.errors import LLMHoodError
from llmhood.registry import DEFAULT_MODEL, resolve
from llmhood.speed import bench  # light: transformers and llama.cpp are imported by its children
from llmhood.train import bench as train_bench  # light too: peft and trl run in its children


def gguf_file(model: str, command: str) -> Path:
    """The model as a GGUF file, the one format every engine of a benchmark reads."""
    path = resolve(model)
    if path.is_dir() or path.suffix != ".gguf":
        raise LLMHoodError(
            f"{command} needs a .gguf file (every engine reads it); {path} is not one."
        )
    return path


def save_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2) + "\n")


def cmd_bench(args: argparse.Namespace) -> None:
    path = gguf_file(args.model, "llmhood bench")
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
    save_json(args.json, bench.to_json(report))


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
    # `llmhood bench` alone stays the inference benchmark; `train` is an optional subcommand
    # with options of its own (given after it).
    what = p.add_subparsers(dest="bench", metavar="{train,rag,constrain,agent}", required=False)
    t = what.add_parser("train", help="LoRA fine-tuning speed against peft and trl, side by side")
    t.add_argument("--model", default=DEFAULT_MODEL, help="a model name or a .gguf file")
    t.add_argument("--steps", type=int, default=5, help="timed steps per run (default: 5)")
    t.add_argument("--warmup", type=int, default=1, help="untimed steps before them (default: 1)")
    t.add_argument("--seq-len", type=int, default=512, help="tokens per sequence (default: 512)")
    t.add_argument(
        "--batch-size", type=int, default=4,
        help="packed sequences per step; padded batches get as many rows (default: 4)",
    )  # fmt: skip
    t.add_argument("--repeat", type=int, default=3, help="runs per engine; medians (default: 3)")
    t.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    t.add_argument(
        "--threads", type=int, default=None,
        help="torch threads of every engine (default: torch's, one per core)",
    )  # fmt: skip
    t.add_argument(
        "--engines", default=None, metavar="LIST",
        help="comma-separated subset of: "
        f"{', '.join(train_bench.ENGINES)} (default: all)",
    )  # fmt: skip
    t.set_defaults(func=cmd_bench_train)
    r = what.add_parser(
        "rag", help="retrieval against bm25s, rank_bm25, sentence-transformers and faiss"
    )
    r.add_argument("--repeat", type=int, default=3, help="throughput runs; the best (default: 3)")
    r.add_argument("--quick", action="store_true", help="fewer chunks, no 1,000-file tree")
    r.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    r.set_defaults(func=cmd_bench_rag)
    c = what.add_parser(
        "constrain", help="JSON-schema constrained decoding: compile, mask and decode speed "
        "against xgrammar",
    )  # fmt: skip
    c.add_argument("--model", default=DEFAULT_MODEL, help="a model name or a checkpoint")
    c.add_argument(
        "--repeat", type=int, default=5, help="runs per measurement; medians (default: 5)"
    )
    c.add_argument("--tokens", type=int, default=64,
                   help="max new tokens per decoding run (default: 64)")  # fmt: skip
    c.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    c.set_defaults(func=cmd_bench_constrain)
    a = what.add_parser(
        "agent", help="tool calling on BFCL's non-live categories, constrained and not, scored "
        "by BFCL's own checker",
    )  # fmt: skip
    agent_bench.add_arguments(a)
    # agent_bench.run checks --limit, --categories and --json before any model loads.
    a.set_defaults(func=agent_bench.run)


def cmd_bench_train(args: argparse.Namespace) -> None:
    path = gguf_file(args.model, "llmhood bench train")
    if args.json:
        writable(Path(args.json))
    engines = tuple(comma_list(args.engines)) if args.engines else train_bench.ENGINES
    report = train_bench.run(
        path, steps=args.steps, warmup=args.warmup, seq_len=args.seq_len,
        batch_size=args.batch_size, repeat=args.repeat, engines=engines, threads=args.threads,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    print(train_bench.format_report(report))
    save_json(args.json, train_bench.to_json(report))


def cmd_bench_rag(args: argparse.Namespace) -> None:
    if args.json:
        writable(Path(args.json))
    missing = [m for m in ("bm25s", "rank_bm25", "sentence_transformers", "faiss")
               if importlib.util.find_spec(m) is None]  # fmt: skip
    if missing:
        raise LLMHoodError(
            f"llmhood bench rag compares with {', '.join(missing)}, which are not installed: "
            "pip install 'llmhood[bench-rag]' (`make bench-rag` does this)."
        )
    from llmhood.rag import bench as rag_bench

    report = rag_bench.run(args.quick, args.repeat, log=lambda line: print(line, file=sys.stderr))
    print(rag_bench.format_report(report))
    save_json(args.json, report)


def cmd_bench_constrain(args: argparse.Namespace) -> None:
    if args.json:
        writable(Path(args.json))
    if args.repeat < 1 or args.tokens < 1:
        raise LLMHoodError("--repeat and --tokens must be at least 1.")
    if importlib.util.find_spec("xgrammar") is None:
        raise LLMHoodError(
            "llmhood bench constrain compares with xgrammar, which is not installed: "
            "pip install xgrammar==0.2.9."
        )
    import llmhood
    from llmhood.generate.constrain import bench as constrain_bench

    llm = llmhood.load(args.model, progress=True)
    report = constrain_bench.run(
        llm, repeat=args.repeat, tokens=args.tokens,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    print(constrain_bench.format_report(report))
    save_json(args.json, report)
