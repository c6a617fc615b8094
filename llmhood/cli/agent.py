"""`llmhood agent run|chat`: a tool-using agent from the shell (llmhood.agent).

Tools come from a Python file (`--tools mytools.py`: its public functions, or the list in its
`TOOLS`), the built-in ones (`--builtins`), a knowledge base (`--kb`) and MCP servers
(`--mcp`). All of them are loaded and described before the model loads, so a tool that cannot
be described, a missing file or a bad option says so at once.
"""

from __future__ import annotations

import argparse
import sys

from llmhood.cli import common
from llmhood.cli.common import comma_list
from llmhood.errors import LLMHoodError

BUILTINS = ("calculator", "python", "read_file")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("agent", help="a tool-using agent (run a task, or chat)")
    commands = group.add_subparsers(dest="agent_command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="work on one task, then print the answer")
    run.add_argument("task", help='what to do, e.g. "What is 17.5%% of 2,340?"')
    _add_options(run)
    run.set_defaults(func=cmd_run)
    chat = commands.add_parser("chat", help="an interactive conversation with tools")
    _add_options(chat)
    chat.set_defaults(func=cmd_chat)
    data = commands.add_parser(
        "data", help="write synthetic tool-calling training rows (our own, never BFCL's)"
    )
    data.add_argument("--out", required=True, help="a .jsonl (or .json) file to write")
    data.add_argument("--rows", type=int, default=6000, help="how many rows (default 6000)")
    data.add_argument("--seed", type=int, default=0, help="the same seed, the same rows")
    data.set_defaults(func=cmd_data)


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tools", action="append", default=[], metavar="FILE",
                        help="a Python file whose public functions (or TOOLS list) are tools; "
                        "repeatable")  # fmt: skip
    parser.add_argument("--builtins", type=comma_list, default=["calculator"],
                        help=f"built-in tools, comma-separated, from {', '.join(BUILTINS)} "
                        "(default: calculator; 'none' for none)")  # fmt: skip
    parser.add_argument(
        "--root", default=".", help="the directory read_file may read (default: the current one)"
    )
    parser.add_argument(
        "--kb",
        default=None,
        metavar="DIR",
        help="a knowledge base (llmhood rag ingest) to search as a tool",
    )
    parser.add_argument("--mcp", action="append", default=[], metavar="SPEC",
                        help="an MCP server over stdio: a command line, or a JSON config "
                        "file with mcpServers; repeatable")  # fmt: skip
    parser.add_argument(
        "--no-constrain",
        action="store_true",
        help="let the model write calls freely (no constrained decoding)",
    )
    parser.add_argument("--max-steps", type=int, default=5, help="tool-calling steps (default 5)")
    parser.add_argument(
        "--memory-tokens",
        type=int,
        default=2048,
        help="the conversation's token budget (default 2048)",
    )
    parser.add_argument(
        "--tool-timeout", type=float, default=30.0, help="seconds a tool may run (default 30)"
    )
    parser.add_argument(
        "--trace", default=None, metavar="FILE", help="append every step to this JSONL file"
    )
    parser.add_argument("--quiet", action="store_true", help="no transcript, only the answer")
    common.add_model_options(parser)
    common.add_adapter_option(parser)


def _tools(args: argparse.Namespace) -> list:
    from llmhood.agent.toolbox import builtin_tools, tools_from_file

    names = [n for n in args.builtins if n != "none"]
    unknown = sorted(set(names) - set(BUILTINS))
    if unknown:
        raise LLMHoodError(
            f"Unknown built-in tool(s) {', '.join(unknown)}: choose from {', '.join(BUILTINS)}."
        )
    tools = builtin_tools(names, root=args.root)
    for path in args.tools:
        tools.extend(tools_from_file(path))
    for spec in args.mcp:
        from llmhood.agent.toolbox import mcp_tools

        tools.extend(mcp_tools(spec))
    return tools


def _agent(args: argparse.Namespace):
    from llmhood.agent import Agent

    if args.max_steps < 1:
        raise LLMHoodError(f"--max-steps {args.max_steps} is invalid: give at least 1.")
    if args.tool_timeout <= 0:
        raise LLMHoodError(f"--tool-timeout {args.tool_timeout} is invalid: give seconds > 0.")
    tools = _tools(args)
    kb = None
    if args.kb:
        from llmhood.rag import KnowledgeBase

        kb = KnowledgeBase.open(args.kb)
    if not tools and kb is None:
        raise LLMHoodError("No tools: give --tools, --builtins, --kb or --mcp.")
    options = common.mode_options(args)
    llm = common.load(**options)
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
    return Agent(llm, tools, kb=kb, constrained=not args.no_constrain, max_steps=args.max_steps,
                 memory_tokens=args.memory_tokens, tool_timeout=args.tool_timeout,
                 trace=args.trace, transcript=say)  # fmt: skip


def cmd_run(args: argparse.Namespace) -> None:
    if not args.task.strip():
        raise LLMHoodError("The task is empty: say what the agent should do.")
    bot = _agent(args)
    result = bot.run(args.task)
    print(result.text)
    if result.stopped == "max_steps":
        print(f"llmhood: note: stopped after --max-steps {args.max_steps} steps.", file=sys.stderr)


def cmd_chat(args: argparse.Namespace) -> None:
    bot = _agent(args)
    print("Chat with tools. An empty line or Ctrl-D ends it.", file=sys.stderr)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print(file=sys.stderr)
            return
        if not line.strip():
            return
        print(f"agent> {bot.chat(line).text}")


def cmd_data(args: argparse.Namespace) -> None:
    from llmhood.agent.data import write_dataset

    counts = write_dataset(args.out, args.rows, args.seed)
    print(f"wrote {sum(counts.values())} rows to {args.out}: "
          + ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())))  # fmt: skip
