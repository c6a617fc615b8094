"""Where an agent's tools come from: Python functions, a tools file, the built-in tools, a
knowledge base and MCP servers, all turned into `Tool`s (llmhood.agent.tools) up front, so
that a tool that cannot be described fails before any model loads."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmhood.agent.tools import Tool, Toolbox
from llmhood.errors import LLMHoodError


def as_tools(tools: Sequence[Any], kb: Any = None) -> Toolbox:
    """Tools from functions, Tools or dicts, plus a search tool over `kb` when given, by name
    (Toolbox refuses two tools of one name: the model calls a tool by its name)."""
    out = list(tools)
    if kb is not None:
        from llmhood.agent.kb_search import KnowledgeBaseSearch

        out.append(Tool.from_function(KnowledgeBaseSearch(kb).search_knowledge_base))
    return Toolbox(out)


def builtin_tools(names: Sequence[str], root: str | Path = ".") -> list[Tool]:
    """The built-in tools by name: calculator, python (a sandboxed subprocess), read_file
    (and list_directory) under `root`."""
    from llmhood.agent.calculator import calculator

    tools = []
    for name in names:
        if name == "calculator":
            tools.append(Tool.from_function(calculator))
        elif name == "python":
            from llmhood.agent.sandbox import Sandbox

            tools.append(Tool.from_function(Sandbox().python, name="python"))
        elif name == "read_file":
            from llmhood.agent.files import Files

            files = Files(root)
            tools += [Tool.from_function(files.read_file), Tool.from_function(files.list_directory)]
        else:
            raise LLMHoodError(f"There is no built-in tool {name!r}.")
    return tools


def tools_from_file(path: str | Path) -> list[Tool]:
    """The tools a Python file defines: its `TOOLS` list if it has one, else every public
    function defined in the file itself (not the ones it imports)."""
    path = Path(path)
    if not path.is_file():
        raise LLMHoodError(f"The tools file {path} does not exist: give a Python file.")
    spec = importlib.util.spec_from_file_location(f"llmhood_tools_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise LLMHoodError(f"{path} cannot be loaded as Python: give a .py file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and string annotations look the module up
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's file: its error is theirs to fix, not a crash of ours
        raise LLMHoodError(f"The tools file {path} failed to load: {type(e).__name__}: {e}") from e
    found = getattr(module, "TOOLS", None)
    if found is None:
        found = [
            value
            for name, value in vars(module).items()
            if inspect.isfunction(value) and not name.startswith("_")
            and value.__module__ == module.__name__
        ]  # fmt: skip
    if not found:
        raise LLMHoodError(f"{path} defines no public function and no TOOLS list: no tools.")
    return [Tool.of(tool) for tool in found]


def mcp_tools(spec: str) -> list[Tool]:
    """The tools of the MCP servers `spec` names (a command line, or a JSON config with
    mcpServers: llmhood.agent.mcp.load_servers); the servers stay up until the process ends."""
    try:
        from llmhood.agent.mcp import McpServer, load_servers
    except ModuleNotFoundError as e:
        raise LLMHoodError(
            f"MCP needs the `mcp` package ({e.name} is missing): pip install 'llmhood[mcp]'."
        ) from None
    return [tool for config in load_servers(spec) for tool in McpServer(config).tools()]
