"""`llmhood generate`, `llmhood chat` and `llmhood demo`: the model writing text (and, with
`llmhood demo finetune`, learning a new identity: llmhood.train.demo)."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from llmhood.cli import common
from llmhood.cli.common import (
    add_adapter_option,
    add_model_options,
    add_sampling_options,
    print_stream,
    sampling_options,
)
from llmhood.errors import LLMHoodError
from llmhood.generate import DEFAULT_BATCH_SIZE, check_batch_size
from llmhood.generate.constrain.matcher import compile_dfa, load_schema, parse_grammar
from llmhood.generate.prompt_file import EXAMPLE, FilePrompt, read_prompts
from llmhood.llm import IncompleteConstraint

DEMO_QUESTION = "What is the capital of France?"


def generate_prompts(args: argparse.Namespace) -> list[FilePrompt]:
    """The prompt argument or the --prompts-file, checked before the model loads."""
    if (args.prompt is None) == (args.prompts_file is None):
        raise LLMHoodError(
            "Give one prompt, or --prompts-file PATH (one prompt per line, or a .jsonl file "
            f"with one object such as {EXAMPLE} per line); this command had "
            + ("both." if args.prompt is not None else "neither.")
        )
    check_batch_size(args.batch_size)
    if args.prompts_file is None:
        return [FilePrompt(0, args.prompt)]
    return read_prompts(args.prompts_file)


def read_text(path: str, option: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise LLMHoodError(f"{option} {path}: no such file.") from e
    except (OSError, UnicodeDecodeError) as e:
        raise LLMHoodError(f"{option} {path}: cannot be read as UTF-8 text ({e}).") from e


def constraint_options(args: argparse.Namespace) -> dict:
    """--json-schema, --regex or --grammar, read and compiled once before the model loads,
    so that a missing file, bad JSON or an unsupported schema is reported at once."""
    if args.json_schema is not None:
        text = read_text(args.json_schema, "--json-schema")
        try:
            schema = load_schema(text)
            compile_dfa("json_schema", schema)
        except LLMHoodError as e:
            raise LLMHoodError(f"--json-schema {args.json_schema}: {e}") from e
        return {"json_schema": schema}
    if args.regex is not None:
        compile_dfa("regex", args.regex)
        return {"regex": args.regex}
    if args.grammar is not None:
        text = read_text(args.grammar, "--grammar")
        try:
            parse_grammar(text)
        except LLMHoodError as e:
            raise LLMHoodError(f"--grammar {args.grammar}: {e}") from e
        return {"grammar": text}
    return {}


def warn_incomplete(which: str) -> None:
    print(
        f"llmhood: warning: {which} stopped at --max-new-tokens before its constrained text was "
        "complete, so it does not match the constraint; raise --max-new-tokens.",
        file=sys.stderr,
    )


def stream_constrained(pieces: Iterator[str]) -> None:
    """Print a stream, and a warning on stderr if its constraint was left incomplete."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IncompleteConstraint)
        print_stream(pieces)
    if any(issubclass(w.category, IncompleteConstraint) for w in caught):
        warn_incomplete("the text")


def cmd_generate(args: argparse.Namespace) -> None:
    prompts = generate_prompts(args)
    options = sampling_options(args)
    options.update(constraint_options(args))
    llm = common.load_for(args)
    texts = [p.text for p in prompts]
    chat = args.chat
    if chat is None:  # an adapter fine-tuned on conversations expects its chat template
        chat = llm.adapter is not None and llm.adapter.chat
    if chat:
        texts = [llm.chat_prompt([{"role": "user", "content": text}]) for text in texts]
        options["add_bos"] = False
    if args.prompts_file is None and not args.json:
        if args.no_stream:
            result = llm.generate(texts[0], **options)[0]
            print(result.text)
            if result.constraint_complete is False:
                warn_incomplete("the text")
        else:
            stream_constrained(llm.stream(texts[0], **options))
        return
    results = llm.generate(texts, batch_size=args.batch_size, **options)
    for i, (prompt, result) in enumerate(zip(prompts, results, strict=True)):
        if result.constraint_complete is False:
            warn_incomplete(f"prompt {i}")
        if args.json:
            where = {} if args.prompts_file is None else {"line": prompt.line}
            record = {"index": i, **where, "prompt": prompt.text, **asdict(result)}
            print(json.dumps(record, ensure_ascii=False))
            continue
        # Prompts count from 0, as in error messages; blank lines of the file are skipped.
        preview = prompt.text if len(prompt.text) <= 60 else prompt.text[:59] + "…"
        if i:
            print()
        print(f"### prompt {i} (line {prompt.line}): {preview!r}")
        print(result.text)


def cmd_chat(args: argparse.Namespace) -> None:
    options = sampling_options(args)
    llm = common.load_for(args)
    system = [{"role": "system", "content": args.system}] if args.system else []
    history = list(system)
    print("Chatting with", llm.source, "- /reset clears the history, /exit or Ctrl-D quits.")
    try:
        while True:
            try:
                line = input("you> ")
            except EOFError:
                print()
                return
            if line.strip() == "/exit":
                return
            if line.strip() == "/reset":
                history = list(system)
                print("(history cleared)")
                continue
            if not line.strip():
                continue
            history.append({"role": "user", "content": line})
            print("bot> ", end="", flush=True)
            reply = print_stream(llm.stream_chat(history, **options))
            history.append({"role": "assistant", "content": reply})
    except KeyboardInterrupt:
        print()


def cmd_demo(args: argparse.Namespace) -> None:
    llm = common.load_for(args)
    c = llm.config
    print(
        f"Loaded {llm.source} in {llm.load_seconds:.1f} s: {llm.model.num_parameters():,} "
        f"parameters, {c.n_layers} layers, {c.n_heads} query / {c.n_kv_heads} KV heads."
    )
    print(f"\nyou> {DEMO_QUESTION}\nbot> ", end="", flush=True)
    messages = [{"role": "user", "content": DEMO_QUESTION}]
    print_stream(llm.stream_chat(messages, max_new_tokens=64))
    print(
        "\nWhat to try next:\n"
        "  .venv/bin/llmhood chat                       talk to the model\n"
        "  .venv/bin/llmhood info                       its architecture and parameter counts\n"
        "  .venv/bin/llmhood tokenize 'Hello, 世界!'     see the byte-level BPE at work\n"
        "  .venv/bin/llmhood generate 'Once upon a time' --temperature 0.8 --top-p 0.9\n"
        "  make test                                    the proof against transformers"
    )


def cmd_finetune_demo(args: argparse.Namespace) -> None:
    from llmhood.train.demo import run_demo

    run_demo(name=args.name, maker=args.maker, maker_zh=args.maker_zh, out=args.out,
             model=args.model, epochs=args.epochs, steps=args.steps, seed=args.seed)  # fmt: skip


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="continue a prompt (streams by default), or many")
    p.add_argument("prompt", nargs="?", default=None, help="the text to continue")
    add_model_options(p)
    add_sampling_options(p)
    add_adapter_option(p)
    p.add_argument(
        "--chat", action=argparse.BooleanOptionalAction, default=None,
        help="wrap the prompt in the chat template (default: only with an adapter trained on "
        "conversations)",
    )  # fmt: skip
    p.add_argument("--no-stream", action="store_true", help="print the text when done")
    p.add_argument(
        "--prompts-file", default=None, metavar="PATH",
        help='many prompts: one per line, or JSON Lines with a "prompt" field (.jsonl); '
        "results are printed per prompt when all are done",
    )  # fmt: skip
    p.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
        help=f"prompts that run together (default: {DEFAULT_BATCH_SIZE})",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON object per prompt and line")
    constrain = p.add_mutually_exclusive_group()
    constrain.add_argument(
        "--json-schema", default=None, metavar="FILE",
        help="constrain the output to JSON that validates against the JSON Schema in FILE",
    )  # fmt: skip
    constrain.add_argument(
        "--regex", default=None, metavar="RE", help="constrain the output to match RE in full"
    )
    constrain.add_argument(
        "--grammar", default=None, metavar="FILE",
        help="constrain the output to the grammar in FILE (GBNF notation, root rule `root`)",
    )  # fmt: skip
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "chat", help="interactive chat with history",
        description="Chat with the model; /reset clears the history, /exit or Ctrl-D quits.",
    )  # fmt: skip
    add_model_options(p)
    add_sampling_options(p, chat=True)
    add_adapter_option(p)
    p.add_argument("--system", default=None, help="system prompt")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser(
        "demo", help="load the default model and answer one question; `demo finetune`: teach it "
        "a new identity",
        description="Load the model and answer one question. `llmhood demo finetune` teaches "
        "SmolLM2 a new name with LoRA, on a CPU, in a few minutes.",
    )  # fmt: skip
    add_model_options(p)
    p.set_defaults(func=cmd_demo)
    demos = p.add_subparsers(dest="demo", metavar="[finetune]")  # optional: plain `demo` answers
    add_finetune_parser(demos)


def add_finetune_parser(sub: argparse._SubParsersAction) -> None:
    """`llmhood demo finetune`: its options are the demo's own, few on purpose (the training's
    hyperparameters are tuned and fixed, see llmhood.train.demo); `llmhood train` has them all."""
    from llmhood.registry import DEFAULT_MODEL
    from llmhood.train.demo import DEFAULT_OUT, DEMO
    from llmhood.train.identity import DEFAULT_MAKER, DEFAULT_NAME

    p = sub.add_parser(
        "finetune", help="teach the model a new name and maker with LoRA, before/after shown",
        description="Teach SmolLM2-135M-Instruct a new identity with LoRA on the CPU: it writes "
        "the identity rows (English and Chinese, with a little general chat) to OUT, asks "
        '"Who are you?" before and after, asks paraphrases it never trained on, measures the '
        "perplexity on a held-out text (Python's docs) before and after, and saves the loss "
        "curve. Replies are greedy, so a run is reproducible.",
    )  # fmt: skip
    p.add_argument("--name", default=DEFAULT_NAME, help=f"the new name (default: {DEFAULT_NAME})")
    p.add_argument("--maker", default=DEFAULT_MAKER, help=f"who made it (default: {DEFAULT_MAKER})")
    p.add_argument(
        "--maker-zh", default=None, metavar="MAKER",
        help="the maker in the Chinese answers (default: its Chinese rendering for the default "
        "maker, else --maker)",
    )  # fmt: skip
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"the run's directory (default: {DEFAULT_OUT}); a previous demo run "
                   "there is replaced")  # fmt: skip
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, default=None,
                        help=f"passes over the rows (default: {DEMO['epochs']:g})")  # fmt: skip
    length.add_argument("--steps", type=int, default=0,
                        help="optimiser steps instead of --epochs (a quick look: 10)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="data order and initialisation (default: 0)")
    p.add_argument(
        "--model", default=DEFAULT_MODEL,
        help=f"the base (default: {DEFAULT_MODEL}; the hyperparameters are tuned for it)",
    )  # fmt: skip
    p.set_defaults(func=cmd_finetune_demo)
