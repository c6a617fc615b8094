"""llmhood.agent.mcp against a real MCP server: tests/mcp_server.py, written with the `mcp`
package's own server and started as a subprocess over stdio, as a user's server would be.

What the server declares is read a second way, in-process through the SDK's own client
(no subprocess, no stdio, none of our code); results are checked against closed-form facts
(2 + 3 = 5), argument validity against `jsonschema`, and a process's end against the OS.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import anyio
import jsonschema
import mcp
import pytest
from mcp import types

from llmhood.agent.mcp import (
    McpServer,
    McpTool,
    McpToolError,
    ServerConfig,
    load_servers,
    result_text,
)
from llmhood.agent.tools import Toolbox
from llmhood.errors import LLMHoodError
from tests.mcp_server import server as declared

SERVER = Path(__file__).with_name("mcp_server.py")
COMMAND = f"{shlex.quote(sys.executable)} {shlex.quote(str(SERVER))}"
# Waits are bounded by the timeout waited for plus SLACK seconds: an MCP round trip here takes
# about 10 ms, and the rest is room for a loaded 2-core machine's scheduling.
SLACK = 2.5


@pytest.fixture(scope="module")
def server():
    [config] = load_servers(COMMAND)
    with McpServer(config, timeout=10) as connected:
        yield connected


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (a zombie has exited; only its
    parent's bookkeeping remains, and in a container nobody may ever collect it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_lists_the_tools_the_server_declares(server):
    async def reference() -> list[types.Tool]:
        async with mcp.Client(declared) as client:
            return (await client.list_tools()).tools

    expected = {t.name: (t.description, t.input_schema) for t in anyio.run(reference)}
    listed = server.list_tools()
    assert {t.name: (t.description, t.parameters) for t in listed} == expected
    assert all(isinstance(t, McpTool) for t in listed)


def test_calls_return_the_tools_results(server):
    tools = {t.name: t for t in server.list_tools()}
    assert server.call("add", {"a": 2, "b": 3}) == "5"
    assert tools["add"].run({"a": -7, "b": 10**12}) == str(10**12 - 7)
    text = 'héllo, "wörld"\n\t{json: true}'
    assert tools["echo"].run({"text": text}) == text


def test_a_raising_tool_comes_back_as_an_error(server):
    async def reference() -> types.CallToolResult:
        async with mcp.Client(declared) as client:
            return await client.call_tool("fail", {})

    expected = anyio.run(reference)
    assert expected.is_error
    [said] = [block.text for block in expected.content]
    with pytest.raises(McpToolError, match="'fail'"):
        server.call("fail", {})
    answer = {t.name: t for t in server.list_tools()}["fail"].run({})
    assert answer.startswith("Error:") and said in answer


def test_an_unknown_tool_comes_back_as_an_error(server):
    with pytest.raises(McpToolError, match="nope"):
        server.call("nope", {})
    ghost = McpTool("nope", "", {"type": "object", "properties": {}}, server)
    assert ghost.run({}).startswith("Error:")
    assert server.call("echo", {"text": "still here"}) == "still here"


def test_arguments_that_are_not_an_object_come_back_as_an_error(server):
    tool = {t.name: t for t in server.list_tools()}["echo"]
    answer = tool.run(["not", "an", "object"])
    assert answer.startswith("Error:") and "JSON object" in answer


def test_a_call_past_its_timeout_comes_back_as_an_error(server):
    tool = {t.name: t for t in server.list_tools()}["sleep"]
    start = time.perf_counter()
    answer = tool.run({"seconds": 30}, timeout=0.5)
    seconds = time.perf_counter() - start
    assert answer.startswith("Error:") and "0.5 seconds" in answer
    # The protocol's own timeout fires at 0.5 s; the rest is a loaded machine's scheduling.
    assert 0.5 <= seconds < 0.5 + SLACK
    assert server.call("echo", {"text": "after"}) == "after"


def test_as_local_tools_arguments_are_validated_before_the_server_sees_them(server):
    box = Toolbox(server.tools())
    assert {t.name for t in box} == {t.name for t in server.list_tools()}
    observation = box.run("add", {"a": 2, "b": 3})
    assert observation.ok and observation.content == "5"
    for arguments in ({"a": 2}, {"a": "2", "b": 3}, {"a": 2, "b": 3.5}):
        assert not jsonschema.Draft202012Validator(box["add"].parameters).is_valid(arguments)
        assert box.run("add", arguments).error == "invalid_arguments"
    failed = box.run("fail", {})
    assert failed.error == "exception" and "'fail'" in failed.content
    assert box.run("nope", {}).error == "unknown_tool"


def test_a_server_that_dies_gives_errors_naming_its_command():
    with McpServer(ServerConfig(sys.executable, (str(SERVER),)), timeout=10) as server:
        tools = {t.name: t for t in server.list_tools()}
        for answer in (tools["crash"].run({}), tools["echo"].run({"text": "anyone?"})):
            assert answer.startswith("Error:") and str(SERVER) in answer


def test_close_leaves_no_server_process_and_no_thread():
    threads = set(map(id, threading.enumerate()))
    server = McpServer(ServerConfig(sys.executable, (str(SERVER),)))
    pid = int(server.call("pid", {}))
    assert pid != os.getpid() and running(pid)
    server.close()
    assert not running(pid)
    assert set(map(id, threading.enumerate())) <= threads
    server.close()
    with pytest.raises(McpToolError, match="closed"):
        server.call("echo", {"text": "x"})


def test_interpreter_exit_closes_a_server_left_open():
    script = textwrap.dedent(f"""
        import sys
        from llmhood.agent.mcp import McpServer, ServerConfig
        server = McpServer(ServerConfig(sys.executable, ({str(SERVER)!r},)))
        print(server.call("pid", {{}}), flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parents[1])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not running(int(done.stdout))


def test_a_command_that_does_not_exist_is_a_clear_error():
    with pytest.raises(LLMHoodError, match=r"no-such-mcp-server.*installed and on PATH"):
        McpServer(ServerConfig("no-such-mcp-server", ("--stdio",)))


def test_a_command_that_is_not_a_server_is_a_clear_error():
    not_a_server = ServerConfig(sys.executable, ("-c", "raise SystemExit('no server here')"))
    with pytest.raises(LLMHoodError) as caught:
        McpServer(not_a_server)
    message = str(caught.value)
    assert "did not complete the MCP handshake" in message
    assert "-c" in message and "no server here" in message  # its command, and its stderr


def test_a_server_that_never_answers_times_out_at_start():
    silent = ServerConfig(sys.executable, ("-c", "import sys; sys.stdin.read()"))
    start = time.perf_counter()
    with pytest.raises(LLMHoodError, match=r"within 0\.5 seconds"):
        McpServer(silent, start_timeout=0.5)
    # 0.5 s to wait, then shutdown closes stdin, which ends the read and the process at once.
    assert time.perf_counter() - start < 0.5 + SLACK


def test_result_text_joins_text_and_names_what_a_text_model_cannot_read():
    result = types.CallToolResult(
        content=[
            types.TextContent(text="first"),
            types.ImageContent(data="aGk=", mime_type="image/png"),
            types.EmbeddedResource(
                resource=types.TextResourceContents(uri="file:///a.txt", text="embedded")
            ),
            types.ResourceLink(uri="file:///b.bin", name="b"),
        ]
    )
    assert result_text(result).split("\n") == [
        "first",
        "[image (image/png), not shown]",
        "embedded",
        "[resource file:///b.bin: b]",
    ]
    structured = types.CallToolResult(content=[], structured_content={"result": [1, 2]})
    assert json.loads(result_text(structured)) == {"result": [1, 2]}


def test_load_servers_reads_a_command_line():
    assert load_servers("  python server.py --name 'a b' ") == [
        ServerConfig("python", ("server.py", "--name", "a b"))
    ]


CLAUDE_CONFIG = {
    "mcpServers": {
        "files": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
        },
        "local": {"type": "stdio", "command": "python", "env": {"KEY": "v"}, "cwd": "/srv"},
    }
}
CLAUDE_SERVERS = [
    ServerConfig("npx", ("-y", "@modelcontextprotocol/server-filesystem", "/tmp"), name="files"),
    ServerConfig("python", (), {"KEY": "v"}, "/srv", "local"),
]


def test_load_servers_reads_claude_desktop_config_inline_and_from_a_file(tmp_path):
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(json.dumps(CLAUDE_CONFIG))
    assert load_servers(json.dumps(CLAUDE_CONFIG)) == CLAUDE_SERVERS
    assert load_servers(str(path)) == CLAUDE_SERVERS


def test_load_servers_config_runs():
    config = {"mcpServers": {"test": {"command": sys.executable, "args": [str(SERVER)]}}}
    [loaded] = load_servers(json.dumps(config))
    with McpServer(loaded) as server:
        assert server.call("add", {"a": 40, "b": 2}) == "42"


def entry(**fields: object) -> str:
    return json.dumps({"mcpServers": {"s": fields}})


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("python 'unclosed", "Cannot split"),
        ("no/such/config.json", "no MCP config file"),
        ("{not json", "not valid JSON"),
        ('{"servers": {}}', "has no servers"),
        ('{"mcpServers": {}}', "has no servers"),
        ('{"mcpServers": {"s": "python server.py"}}', "must be an object"),
        (entry(url="http://localhost:8000/mcp"), "not a stdio server"),
        (entry(type="sse", command="x"), "not a stdio server"),
        (entry(command="x", arg=["y"]), r"unknown keys \['arg'\]"),
        (entry(args=["server.py"]), 'needs a "command"'),
        (entry(command=" "), 'needs a "command"'),
        (entry(command="x", args="server.py"), '"args" must be a list of strings'),
        (entry(command="x", env={"PORT": 8080}), '"env" must map names to string values'),
        (entry(command="x", cwd=["/srv"]), '"cwd" must be a directory'),
    ],
)
def test_load_servers_rejects_bad_specs_saying_what_is_wrong(spec, message):
    with pytest.raises(LLMHoodError, match=message):
        load_servers(spec)
