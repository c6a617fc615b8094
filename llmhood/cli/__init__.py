"""The `llmhood` command: one entry point, one module per command group.

Each module here holds one group's commands and adds them with `add_parsers`; a new
subsystem (training, RAG, agents, serving) adds a module and a line in GROUPS. Errors in
what the user asked for are printed as one paragraph and exit with status 1, checked
before the model loads wherever they can be; there is no traceback unless something is
truly broken.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from llmhood.cli import agent, bench, experiment, generate, info, plot, rag, train
from llmhood.errors import LLMHoodError

GROUPS = (info, generate, train, rag, agent, bench, plot, experiment)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmhood", description="A hand-written Llama you can open up and look inside."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except LLMHoodError as e:
        print(f"llmhood: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0
