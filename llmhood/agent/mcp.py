"""Tools from Model Context Protocol servers, used like local ones.

    [config] = load_servers("python server.py")     # or a Claude Desktop JSON config
    with McpServer(config) as server:
        server.list_tools()                          # McpTool: name, description, parameters
        server.call("add", {"a": 2, "b": 3})         # "5"
        Toolbox(server.tools())                      # as llmhood.agent.tools.Tool

An MCP server over stdio (https://modelcontextprotocol.io/specification) is a subprocess that
reads JSON-RPC requests on its stdin and answers on its stdout, one message a line. It lists
its tools, each a name, a description and a JSON Schema (`inputSchema`) for its arguments,
and runs one on `tools/call`, answering content blocks (text, images, resources) and an
`isError` flag. The official `mcp` package speaks the protocol, spawns the process and shuts it
down; this module makes that usable from the agent's synchronous loop.

The `mcp` client is async (anyio) and the agent loop is not. So each server gets one thread
running its own asyncio event loop, where one task owns the connection from the handshake to
the shutdown: anyio's task groups and cancel scopes must be entered and left by the same task,
so the connection cannot be opened by one call and closed by another. Calls from the agent are
submitted to that loop and waited for. Closing cancels the owning task's scope, and the SDK's
shutdown then follows the spec: close the server's stdin, wait, then terminate and kill the
server's whole process group, every wait bounded. `close()` runs at interpreter exit too.

Who hears about a failure depends on whose it is:
* a server that cannot be spawned, or does not complete the handshake, is the configuration's
  fault: `LLMHoodError`, naming the command and quoting the end of the server's stderr (kept in
  a temporary file for this, and not printed otherwise, so servers' logs do not interleave
  with the agent's transcript);
* after that, a tool's `isError` result, an unknown tool, a timeout or a server that died is
  something the model must hear about and work around: `McpToolError`, which `McpTool.run`
  and the `Tool` observation turn into text for it, and the loop goes on.

As the SDK has it, a server inherits only HOME, LOGNAME, PATH, SHELL, TERM and
USER from the agent's environment, plus the `env` it is configured with: a secret in the
agent's environment reaches a third-party server only when asked for by name.

This module is named for the protocol, like the package it uses: `import mcp` inside it is
the installed package, since Python 3 imports are absolute unless written with a dot.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import json
import os
import shlex
import tempfile
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import mcp
from mcp import types
from mcp.client.stdio import StdioServerParameters, stdio_client

from llmhood.agent.tools import Tool
from llmhood.errors import LLMHoodError

TIMEOUT = 30.0  # seconds a tool call may take by default, as llmhood.agent.tools allows
START_TIMEOUT = 60.0  # seconds to spawn and handshake: `npx` and `uvx` servers download first
SHUTDOWN_TIMEOUT = 10.0  # the SDK's own bounded shutdown takes 6.5 s at worst
GRACE = 5.0  # seconds past the protocol's own timeout before a call is given up on here
STDERR_TAIL = 2000  # characters of a server's stderr quoted in an error
MAX_PAGES = 100  # pages of a tool listing; a server repeating its cursor would loop forever
CONFIG_KEYS = {"type", "command", "args", "env", "cwd"}

T = TypeVar("T")


class McpToolError(Exception):
    """A tool call that gave no result; the message is written for the model to read."""


@dataclass(frozen=True)
class ServerConfig:
    """How to start one stdio server: what Claude Desktop's config holds for each."""

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    name: str = ""

    @property
    def command_line(self) -> str:
        return shlex.join([self.command, *self.args])

    @property
    def label(self) -> str:
        """How errors name the server: by its command, which is what the user wrote."""
        named = f" '{self.name}'" if self.name else ""
        return f"MCP server{named} (`{self.command_line}`)"


class McpServer:
    """A running stdio MCP server and the client session to it; started on construction."""

    def __init__(
        self, config: ServerConfig, timeout: float = TIMEOUT, start_timeout: float = START_TIMEOUT
    ):
        self.config = config
        self.timeout = timeout
        # Open as long as the server runs, so not in a `with`. Appending: the server's writes
        # land at the end wherever this side seeks to read.
        self._stderr = tempfile.TemporaryFile("a+b")  # noqa: SIM115
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=config.label, daemon=True
        )
        self._scope: anyio.CancelScope | None = None
        self._client: mcp.Client | None = None
        self._closed = False
        self._thread.start()
        atexit.register(self.close)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._connection = asyncio.run_coroutine_threadsafe(self._connect(ready), self._loop)
        try:
            ready.result(start_timeout)
        except concurrent.futures.TimeoutError:
            message = (f"{config.label} did not complete the MCP handshake within "
                       f"{start_timeout:g} seconds. Check that the command starts an MCP server "
                       f"on stdio.{self._tail()}")  # fmt: skip
            self.close()
            raise LLMHoodError(message) from None
        except Exception as e:
            message = start_failure(config, e) + self._tail()
            self.close()
            raise LLMHoodError(message) from e

    async def _connect(self, ready: concurrent.futures.Future[None]) -> None:
        """The connection's whole life, in the one task allowed to open and close it."""
        parameters = StdioServerParameters(
            command=self.config.command,
            args=list(self.config.args),
            env=dict(self.config.env),
            cwd=self.config.cwd,
        )
        self._scope = anyio.CancelScope()
        if self._closed:  # closed before this task first ran, so close() found no scope
            self._scope.cancel()
        try:
            with self._scope:
                async with mcp.Client(stdio_client(parameters, errlog=self._stderr)) as client:
                    self._client = client
                    ready.set_result(None)
                    await anyio.sleep_forever()
        except Exception as e:
            if ready.done():
                raise
            ready.set_exception(e)

    def list_tools(self) -> list[McpTool]:
        """The server's tools, every page of the listing."""
        listed: list[types.Tool] = []
        cursor: str | None = None
        try:
            for _ in range(MAX_PAGES):
                page = self._submit(
                    functools.partial(self._connected().list_tools, cursor=cursor),
                    self.timeout,
                    "listing its tools",
                )
                listed += page.tools
                cursor = page.next_cursor
                if cursor is None:
                    break
            else:
                raise McpToolError(f"{self.config.label} listed more than {MAX_PAGES} pages of "
                                   "tools; it is probably repeating its cursor.")  # fmt: skip
        except McpToolError as e:
            raise LLMHoodError(str(e)) from e
        return [McpTool(t.name, t.description or "", t.input_schema, self) for t in listed]

    def tools(self) -> list[Tool]:
        """The server's tools as the agent's own, validated against their schemas locally."""
        return [tool.tool() for tool in self.list_tools()]

    def call(self, name: str, arguments: Mapping[str, Any], timeout: float | None = None) -> str:
        """The tool's text content, joined; raises McpToolError when there is none to give."""
        limit = self.timeout if timeout is None else timeout
        call = functools.partial(
            self._connected().call_tool, name, dict(arguments), read_timeout_seconds=limit
        )
        result = self._submit(call, limit, f"running tool '{name}'")
        text = result_text(result)
        if result.is_error:
            raise McpToolError(f"Tool '{name}' of {self.config.label} failed: {text}")
        return text

    def _connected(self) -> mcp.Client:
        if self._closed or self._client is None:
            raise McpToolError(f"{self.config.label} is closed: its tools can no longer be "
                               "called. Answer without them.")  # fmt: skip
        return self._client

    def _submit(self, request: Callable[[], Awaitable[T]], limit: float, doing: str) -> T:
        """Run one request on the connection's loop and wait for it, every failure becoming
        an McpToolError that says which server, doing what."""
        if self._connection.done():
            raise McpToolError(f"{self.config.label} has stopped.{self._tail()}")
        start = self._stderr_size()

        async def run() -> T:
            return await request()

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return future.result(limit + GRACE)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise McpToolError(self._timed_out(doing, limit)) from None
        except mcp.MCPError as e:
            if e.code == types.REQUEST_TIMEOUT:
                raise McpToolError(self._timed_out(doing, limit)) from None
            if e.code == types.CONNECTION_CLOSED:
                raise McpToolError(
                    f"{self.config.label} closed the connection while {doing}: "
                    f"it has probably exited.{self._tail(start)}"
                ) from None
            raise McpToolError(f"{self.config.label} answered an error while {doing}: "
                               f"{e.message}") from None  # fmt: skip
        except Exception as e:
            raise McpToolError(f"{self.config.label} failed while {doing}: "
                               f"{type(e).__name__}: {e}{self._tail(start)}") from None  # fmt: skip

    def _timed_out(self, doing: str, limit: float) -> str:
        return (f"{self.config.label} did not finish {doing} within {limit:g} seconds. Try "
                "simpler arguments, or answer without it.")  # fmt: skip

    def _stderr_size(self) -> int:
        return self._stderr.seek(0, os.SEEK_END)

    def _tail(self, since: int = 0) -> str:
        """The end of what the server wrote to stderr from offset `since` on: where a server
        says why it failed, without an older, unrelated traceback."""
        self._stderr.seek(since)
        text = self._stderr.read().decode("utf-8", "replace")[-STDERR_TAIL:].strip()
        return f" Its stderr ends with:\n{text}" if text else ""

    def close(self) -> None:
        """Shut the server down and wait until its process is gone; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._loop.call_soon_threadsafe(self._cancel)
        # A start that failed was reported already; a stop has nothing left to say.
        with contextlib.suppress(Exception):
            self._connection.result(SHUTDOWN_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(SHUTDOWN_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()
        self._stderr.close()

    def _cancel(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def __enter__(self) -> McpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class McpTool:
    """One tool of a server, as it listed it; `parameters` is its `inputSchema`."""

    name: str
    description: str
    parameters: dict[str, Any]
    server: McpServer = field(repr=False, compare=False)

    def run(self, arguments: Mapping[str, Any], timeout: float | None = None) -> str:
        """The result's text, or the reason there is none, starting "Error:"; never raises,
        so an agent loop can hand either to the model."""
        if not isinstance(arguments, Mapping):
            return (f"Error: the arguments of tool '{self.name}' must be a JSON object, not "
                    f"{json.dumps(arguments, default=str)}.")  # fmt: skip
        try:
            return self.server.call(self.name, arguments, timeout)
        except McpToolError as e:
            return f"Error: {e}"

    def __call__(self, **arguments: Any) -> str:
        """The call a local Tool makes with its validated arguments; raises McpToolError,
        which the Tool reports to the model as the tool's exception."""
        return self.server.call(self.name, arguments)

    def tool(self) -> Tool:
        """This tool as the agent's own. Its timeout is the server's plus a grace, so that the
        MCP timeout, which also tells the server to cancel, is the one that fires."""
        spec = {"name": self.name, "description": self.description, "parameters": self.parameters}
        try:
            tool = Tool.from_dict(spec, function=self)
        except LLMHoodError as e:
            raise LLMHoodError(f"{self.server.config.label}: {e}") from e
        tool.timeout = self.server.timeout + 2 * GRACE
        return tool


def start_failure(config: ServerConfig, error: Exception) -> str:
    while len(getattr(error, "exceptions", ())) == 1:  # anyio's task groups wrap what they raise
        error = error.exceptions[0]
    if isinstance(error, OSError):
        return (f"Could not start {config.label}: {error}. Check that `{config.command}` is "
                "installed and on PATH, or give its full path.")  # fmt: skip
    if isinstance(error, mcp.MCPError):
        reason = error.message
    else:
        reason = f"{type(error).__name__}: {error}"
    return (f"{config.label} started but did not complete the MCP handshake ({reason}). "
            "Check that the command runs an MCP server on stdio.")  # fmt: skip


def result_text(result: types.CallToolResult) -> str:
    """Text blocks joined by newlines, as the model reads them. Only structured content, with
    no text beside it, is written as JSON; the spec asks servers to send both."""
    if not result.content and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(map(block_text, result.content))


def block_text(block: types.ContentBlock) -> str:
    """A text model cannot see an image or hear audio: it is told there is one."""
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, types.TextResourceContents):
            return resource.text
        return f"[binary resource {resource.uri} ({resource.mime_type or 'unknown type'})]"
    if isinstance(block, types.ResourceLink):
        return f"[resource {block.uri}: {block.name}]"
    return f"[{block.type} ({block.mime_type}), not shown]"


def load_servers(spec: str) -> list[ServerConfig]:
    """The servers the CLI's `--mcp` names: a command line ("python server.py", split as a
    POSIX shell would), a JSON config file (`.json`), or the same JSON inline. The JSON is
    Claude Desktop's {"mcpServers": {name: {"command", "args", "env"}}}, so a config written for
    it works unchanged; `cwd` and `"type": "stdio"` are accepted too."""
    text = spec.strip()
    if not text:
        raise LLMHoodError("--mcp is empty: give a server's command line, such as "
                           "'python server.py', or a JSON config file.")  # fmt: skip
    if text.startswith("{"):
        return parse_config(text, "the --mcp JSON")
    path = Path(text).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            raise LLMHoodError(f"There is no MCP config file {path}: check the path.")
        return parse_config(path.read_text(encoding="utf-8"), str(path))
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise LLMHoodError(f"Cannot split the MCP command line {text!r}: {e}. Quote it as "
                           "you would in a shell.") from e  # fmt: skip
    return [ServerConfig(words[0], tuple(words[1:]))]


def parse_config(text: str, source: str) -> list[ServerConfig]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LLMHoodError(f"{source} is not valid JSON: {e}.") from e
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict) or not servers:
        raise LLMHoodError(f'{source} has no servers: write {{"mcpServers": {{"name": '
                           '{"command": "...", "args": ["..."], "env": {"KEY": "value"}}}}, '
                           "as in Claude Desktop's config.")  # fmt: skip
    return [server_config(name, entry, source) for name, entry in servers.items()]


def server_config(name: str, entry: Any, source: str) -> ServerConfig:
    where = f"MCP server '{name}' in {source}"
    if not isinstance(entry, dict):
        raise LLMHoodError(f'{where} must be an object with a "command".')
    if "url" in entry or entry.get("type", "stdio") != "stdio":
        raise LLMHoodError(f"{where} is not a stdio server: only servers started as a command "
                           'are supported. Give a "command" (and "args") instead.')  # fmt: skip
    unknown = sorted(set(entry) - CONFIG_KEYS)
    if unknown:
        raise LLMHoodError(f"{where} has unknown keys {unknown}: the keys are "
                           f"{sorted(CONFIG_KEYS)}.")  # fmt: skip
    command, args = entry.get("command"), entry.get("args", [])
    env, cwd = entry.get("env", {}), entry.get("cwd")
    if not isinstance(command, str) or not command.strip():
        raise LLMHoodError(f'{where} needs a "command": the program to run, as a string.')
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise LLMHoodError(f'{where}: "args" must be a list of strings.')
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise LLMHoodError(f'{where}: "env" must map names to string values.')
    if cwd is not None and not isinstance(cwd, str):
        raise LLMHoodError(f'{where}: "cwd" must be a directory, as a string.')
    return ServerConfig(command, tuple(args), env, cwd, name)
