"""`llmhood train`, `llmhood data inspect` and `llmhood export`: fine-tuning from the shell.

The train command's flags are made from llmhood.train.config.TrainConfig, field by field,
so `--help` lists every option with its default and a YAML `--config` file takes the same
names; flags given on the command line win over the file, the file over the defaults.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from llmhood.cli.common import comma_list
from llmhood.registry import DEFAULT_MODEL
from llmhood.train.config import TrainConfig, default, flag, read_yaml
from llmhood.train.data import FORMATS

RESUME_OUT = "<out>"  # `--resume` with no value: the run in --out


def add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", help="read options from a YAML file first")
    for f in fields(TrainConfig):
        value = default(f.name)
        shown = ",".join(value) if isinstance(value, list) else value
        text = f"{f.metadata['help']} (default: {shown if shown != '' else 'none'})"
        name = f"--{flag(f.name)}"
        if isinstance(value, bool):
            parser.add_argument(
                name, action=argparse.BooleanOptionalAction, default=None, help=text
            )
        elif isinstance(value, list):
            parser.add_argument(name, type=comma_list, default=None, help=text)
        elif f.name == "resume":
            parser.add_argument(
                name,
                nargs="?",
                const=RESUME_OUT,
                default=None,
                metavar="DIR",
                help=text + "; with no DIR, the run in --out",
            )
        else:
            parser.add_argument(
                name, type=type(value), default=None, choices=f.metadata.get("choices"), help=text
            )


def train_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the YAML file, then the flags given; validated."""
    options: dict[str, Any] = read_yaml(args.config) if args.config else {}
    for f in fields(TrainConfig):
        given = getattr(args, f.name)
        if given is not None:
            options[f.name] = given
    if options.get("resume") == RESUME_OUT:
        options["resume"] = options.get("out", "")
    config = TrainConfig(**options)
    config.validate()
    return config


def cmd_train(args: argparse.Namespace) -> None:
    from llmhood.train.trainer import train

    train(train_config(args))


def cmd_inspect(args: argparse.Namespace) -> None:
    from llmhood.train.inspect import inspect_data

    inspect_data(
        args.file,
        model=args.model,
        fmt=args.format,
        stage=args.stage,
        rows=args.rows,
        seq_len=args.seq_len,
        train_on_prompt=args.train_on_prompt,
        color=sys.stdout.isatty() if args.color == "auto" else args.color == "always",
    )


def cmd_export(args: argparse.Namespace) -> None:
    from llmhood.train.export import export

    path = export(
        args.run, args.out, fmt=args.format, merge=args.merge, gguf_type=args.type, model=args.model
    )
    print(f"llmhood: wrote {path}")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune: sft, dpo, grpo or pretrain; lora, dora, qlora or full",
        description="Fine-tune a model. Every option can also come from --config YAML (the same "
        "names, with - or _); flags override the file. Under torchrun, each process runs this "
        "same command (llmhood.train.distributed).",
    )
    add_train_options(p)
    p.set_defaults(func=cmd_train)

    data = sub.add_parser("data", help="look at training data before training on it")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    p = data_sub.add_parser(
        "inspect",
        help="which tokens of a few rows are trained, counts, lengths and dropped rows",
        description="Show a few rows as the trainer sees them: trained tokens coloured (or in "
        "[brackets] when not on a terminal), masked ones plain; then the counts, the length "
        "distribution and every dropped row with its reason.",
    )
    p.add_argument("file", help="a .jsonl/.json file of rows")
    p.add_argument("--format", default="auto", choices=["auto", *FORMATS])
    p.add_argument("--stage", default="sft", choices=["sft", "dpo", "pretrain"])
    p.add_argument("--model", default=DEFAULT_MODEL, help="whose tokenizer and chat template")
    p.add_argument("--rows", type=int, default=3, help="rows to show (default: 3)")
    p.add_argument("--seq-len", type=int, default=default("seq_len"))
    p.add_argument("--train-on-prompt", action="store_true")
    p.add_argument("--color", default="auto", choices=["auto", "always", "never"])
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "export",
        help="a trained run as a merged HF/GGUF model, or its adapter as peft/GGUF",
        description="--merge folds the adapter into the base and writes a whole model (--format "
        "hf or gguf); without it the adapter alone is written (--format peft or gguf, the "
        "latter a llama.cpp LoRA adapter).",
    )
    p.add_argument("run", help="a run directory (llmhood train --out), an adapter directory")
    p.add_argument("--out", required=True, help="directory (or .gguf file) to write")
    p.add_argument("--format", required=True, choices=["hf", "gguf", "peft"])
    p.add_argument("--merge", action="store_true", help="fold the adapter into the base")
    p.add_argument(
        "--type",
        default="f32",
        choices=["f32", "f16", "q8_0"],
        help="GGUF tensor type of a merged model (default: f32)",
    )
    p.add_argument("--model", default=None, help="the base, if not the one the run trained")
    p.set_defaults(func=cmd_export)
