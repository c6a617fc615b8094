"""A small MCP server for tests/test_agent_mcp.py, spoken to over stdio.

    python tests/mcp_server.py

Written with the `mcp` package's own server (MCPServer, FastMCP before mcp 2), so the client
in llmhood/agent/mcp.py meets the protocol as the official SDK speaks it. Three tools work
(add, echo, and pid, for checking that the process is gone after shutdown); each of the others
is one way a tool goes wrong: `fail` raises (the server answers isError), `sleep` outlasts a
timeout, `crash` kills the server in the middle of a call.
"""

from __future__ import annotations

import os

import anyio
from mcp.server.mcpserver import MCPServer

server = MCPServer("llmhood-test")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def fail() -> str:
    """Always raise, as a tool with a bug would."""
    raise ValueError("this tool always fails")


@server.tool()
async def sleep(seconds: float) -> str:
    """Wait a while: longer than a caller's timeout, in the tests."""
    await anyio.sleep(seconds)
    return "slept"


@server.tool()
def pid() -> int:
    """The server's process id, for a test to check that the process is gone after shutdown."""
    return os.getpid()


@server.tool()
def crash() -> str:
    """End the server's process without an answer, as a server that dies would."""
    os._exit(3)


if __name__ == "__main__":
    server.run("stdio")
