"""Answering: citations checked against the passages shown, the relevance gate, the
OpenAI-compatible client against a local server, and the real model end to end."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from llmhood.errors import LLMHoodError
from llmhood.rag import KnowledgeBase, OpenAIChat
from llmhood.rag.answer import NOT_FOUND, SYSTEM, check_citations
from tests.rag_docs import write_docs


@pytest.fixture(scope="module")
def kb(tmp_path_factory) -> KnowledgeBase:
    root = tmp_path_factory.mktemp("answer")
    return KnowledgeBase.build(write_docs(root / "docs"), root / "kb", progress=False)


def test_check_citations():
    assert check_citations("Two moons [1]. Red dust [2, 3].", 3) == (
        "Two moons [1]. Red dust [2, 3].", [1, 2, 3], []
    )  # fmt: skip
    assert check_citations("Mars [2, 9] has moons [7].", 5) == ("Mars [2] has moons.", [2], [7, 9])
    assert check_citations("[0] nothing [12]", 3) == ("nothing", [], [0, 12])
    assert check_citations("No citations at all.", 3) == ("No citations at all.", [], [])
    assert check_citations("绿茶 [1]。 [4]", 2) == ("绿茶 [1]。", [1], [4])


def test_invented_citations_are_removed_and_reported(kb: KnowledgeBase):
    seen = []

    def model(messages: list[dict]) -> str:
        seen.append(messages)
        return "Mars has two moons [1], Phobos and Deimos [6]."

    answer = kb.ask("How many moons does Mars have?", model, k=3)
    assert answer.found and answer.removed == [6]
    assert answer.text == "Mars has two moons [1], Phobos and Deimos."
    assert answer.citations == [answer.passages[0]]
    assert answer.passages[0].source == "astronomy/mars.md"
    system, user = seen[0]
    assert system == {"role": "system", "content": SYSTEM}
    assert "[1] (astronomy/mars.md)" in user["content"] and "[3] (" in user["content"]
    assert user["content"].endswith("Question: How many moons does Mars have?")


def test_nothing_relevant_is_said_and_the_model_not_asked(kb: KnowledgeBase):
    def model(messages: list[dict]) -> str:
        raise AssertionError("the model must not be asked")

    for question in ("Who won the football world cup in 1998?", "股票市场今天怎么样？"):
        answer = kb.ask(question, model)
        assert not answer.found and answer.text == NOT_FOUND and answer.citations == []
    assert kb.ask("冲泡绿茶的水温是多少？", lambda m: "八十度 [1]。").found


class _Endpoint(http.server.BaseHTTPRequestHandler):
    requests: ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Endpoint.requests.append((self.path, dict(self.headers), body))
        reply = {"id": "x", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Phobos [1] [9]"},
             "finish_reason": "stop"}]}  # fmt: skip
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_compatible_endpoint(kb: KnowledgeBase, monkeypatch):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        llm = OpenAIChat(f"http://127.0.0.1:{server.server_port}/v1", "big-model")
        answer = kb.ask("Which moon of Mars is closest?", llm, k=2)
    finally:
        server.shutdown()
    path, headers, body = _Endpoint.requests[-1]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "big-model" and body["messages"][0]["role"] == "system"
    assert answer.text == "Phobos [1]" and answer.removed == [9]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LLMHoodError, match="did not answer"):
        OpenAIChat(f"http://127.0.0.1:{port}/v1", "m", timeout=5).complete([])


@pytest.mark.real
def test_the_local_model_answers_with_checked_citations(kb: KnowledgeBase, smollm2):
    answer = kb.ask("How many moons does Mars have?", smollm2, k=3, max_new_tokens=48)
    assert answer.found and answer.text
    assert all(hit in answer.passages for hit in answer.citations)
    assert "[" not in answer.text or answer.citations  # a bracket left is a real citation


def test_cli_ask_json_with_an_endpoint_and_bad_flags(kb: KnowledgeBase, capsys, tmp_path: Path):
    from llmhood.cli import main

    assert main(["rag", "ask", "moons", "--kb", str(kb.root), "--llm-url", "http://x"]) == 1
    assert "go together" in capsys.readouterr().err
    assert main(["rag", "ask", "football 1998 winner", "--kb", str(kb.root), "--json",
                 "--llm-url", "http://127.0.0.1:9/v1", "--llm-model", "m"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["found"] is False and out["answer"] == NOT_FOUND and out["passages"]
