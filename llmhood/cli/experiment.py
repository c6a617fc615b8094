"""`llmhood experiment NAME`: runnable experiments that measure an idea (llmhood.experiments)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from llmhood.cli import common
from llmhood.cli.common import (
    add_model_options,
    add_picture_options,
    comma_list,
    picture_path,
)
from llmhood.errors import LLMHoodError


def cmd_long_context(args: argparse.Namespace) -> None:
    from llmhood.experiments import long_context

    schemes = comma_list(args.schemes)
    long_context.check(args.length, args.chunk, args.bucket, schemes)
    path = picture_path(args, "long-context")
    llm = common.load_for(args)
    print(
        f"Reading {args.length} tokens of Python's documentation per scheme ({', '.join(schemes)}),"
        f" {args.chunk} at a time; trained context {llm.config.max_seq_len}.",
        file=sys.stderr,
    )
    result = long_context.run(llm, args.length, args.chunk, args.bucket, schemes)
    print(long_context.summary(result))
    figure = long_context.plot(result, Path(args.model).name)
    print(figure.save(path))
    if args.csv:
        figure.table.to_csv(args.csv)


def cmd_cope_counting(args: argparse.Namespace) -> None:
    from llmhood.experiments import cope_counting

    if args.steps < 1 or args.layers < 1 or args.seed < 0:
        raise LLMHoodError("--steps and --layers must be at least 1, and --seed at least 0.")
    results = cope_counting.run(args.steps, args.layers, args.seed)
    print(f"k-th last marker, {args.layers} layer(s), {args.steps} steps, chance 0.125")
    print(cope_counting.table(results))


def cmd_chat_loops(args: argparse.Namespace) -> None:
    from llmhood.experiments import chat_loops

    try:
        seeds = [int(s) for s in comma_list(args.seeds)]
    except ValueError as e:
        raise LLMHoodError(f"--seeds {args.seeds!r} must be integers separated by commas.") from e
    settings = comma_list(args.settings) if args.settings else list(chat_loops.SETTINGS)
    chat_loops.check(args.max_new_tokens, seeds, settings)
    llm = common.load_for(args)
    replies = chat_loops.run(llm, args.max_new_tokens, seeds, settings)
    rows = chat_loops.summary(replies)
    if args.json:
        print(json.dumps({"summary": rows, "replies": [asdict(r) for r in replies]},
                         ensure_ascii=False, indent=1))  # fmt: skip
        return
    print(chat_loops.table(rows, args.max_new_tokens))


def cmd_rag_vs_long_context(args: argparse.Namespace) -> None:
    from llmhood.experiments import rag_vs_long_context as experiment

    try:
        ns = [int(n) for n in comma_list(args.facts)]
    except ValueError as e:
        raise LLMHoodError(f"--facts {args.facts!r} must be integers separated by commas.") from e
    if args.quick:
        ns, args.questions = ns[:2], min(args.questions, 3)
    experiment.check(ns, args.questions, args.k)
    path = picture_path(args, "rag-vs-long-context")
    llm = common.load_for(args)
    print(f"N facts in distractor text, {args.questions} questions each: the whole text in the "
          f"prompt, or the top {args.k} passages retrieved.", file=sys.stderr)  # fmt: skip
    rows = experiment.run(llm, ns, args.questions, args.k, args.seed)
    print(experiment.summary(rows))
    figure = experiment.plot(rows, Path(args.model).name)
    print(figure.save(path))
    if args.csv:
        figure.table.to_csv(args.csv)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("experiment", help="runnable experiments that measure an idea")
    names = p.add_subparsers(dest="name", required=True, metavar="NAME")

    e = names.add_parser(
        "long-context",
        help="perplexity by position past the trained context, with RoPE scaling schemes",
        description="Perplexity by position on Python's documentation (pydoc_data.topics), "
        "read past the trained context with no scaling, PI (linear), NTK and YaRN.",
    )
    add_model_options(e)
    e.add_argument("--length", type=int, default=16384, help="tokens to read (default: 16384)")
    e.add_argument("--chunk", type=int, default=1024, help="tokens per forward (default: 1024)")
    e.add_argument("--bucket", type=int, default=1024, help="positions per point (default: 1024)")
    e.add_argument(
        "--schemes", default="none,linear,ntk,yarn", help="comma-separated (default: all four)"
    )
    add_picture_options(e, "plots/long-context.png")
    e.set_defaults(func=cmd_long_context)

    e = names.add_parser(
        "cope-counting",
        help="CoPE vs RoPE vs no position encoding on finding the k-th last marker",
        description="Train tiny models from scratch with CoPE, RoPE and no position "
        "encoding, and score them on a counting task at 1× and 2× the training length.",
    )
    e.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    e.add_argument("--layers", type=int, default=1, help="layers (default: 1)")
    e.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    e.set_defaults(func=cmd_cope_counting)

    e = names.add_parser(
        "chat-loops",
        help="how often chat replies loop, greedy against sampling settings",
        description="Reply to 30 fixed chat prompts (English and Chinese) under several "
        "sampling settings and count the replies that hit the token limit while repeating "
        "themselves (llmhood.experiments.chat_loops).",
    )
    add_model_options(e)
    e.add_argument("--max-new-tokens", type=int, default=256, help="default: 256")
    e.add_argument(
        "--seeds", default="0,1,2", help="seeds of the sampled settings (default: 0,1,2)"
    )
    e.add_argument("--settings", default=None, help="comma-separated names (default: all)")
    e.add_argument("--json", action="store_true", help="every reply and the summary as JSON")
    e.set_defaults(func=cmd_chat_loops)

    e = names.add_parser(
        "rag-vs-long-context",
        help="RAG or a long context? accuracy and seconds against the number of facts",
        description="Plant N facts in distractor text, then answer questions about them with "
        "all of the text in the prompt, or with the top passages retrieved from a knowledge "
        "base of the same text (llmhood.experiments.rag_vs_long_context).",
    )
    add_model_options(e)
    e.add_argument("--facts", default="1,4,16,32,64", help="values of N (default: 1,4,16,32,64)")
    e.add_argument("--questions", type=int, default=4, help="questions per N (default: 4)")
    e.add_argument("--k", type=int, default=3, help="passages retrieved (default: 3)")
    e.add_argument("--seed", type=int, default=0, help="which facts and texts (default: 0)")
    e.add_argument("--quick", action="store_true", help="the first two N, 3 questions each")
    add_picture_options(e, "plots/rag-vs-long-context.png")
    e.set_defaults(func=cmd_rag_vs_long_context)
