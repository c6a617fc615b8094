"""`llmhood demo finetune`: on the real model, SFT on the identity rows makes the greedy answer
to "Who are you?" name the new identity and end with the end-of-turn token; on a tiny model
with SmolLM2's tokenizer, the demo's whole flow (before, training, after, files, what to try
next) in seconds; and every bad option refused before anything loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from tiny_run import smollm2_tokenizer, write_tiny_base

from llmhood import cli
from llmhood.cli.generate import cmd_demo, cmd_finetune_demo
from llmhood.train import demo
from llmhood.train.identity import WHO_ARE_YOU, training_rows

# The real test's training: one epoch (18 steps) at twice the demo's rate, a third of the
# demo's time. Measured: the answer names Hoodie and ends with <|im_end|> with seeds 0, 1, 2.
SHORT = dict(epochs=1.0, lr=2e-3)


def must_not_run(*args, **kwargs):
    pytest.fail("the demo loaded a model or trained before the options were checked")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, smollm2_gguf) -> Path:
    folder = tmp_path_factory.mktemp("demo")
    return write_tiny_base(folder / "base", smollm2_tokenizer(smollm2_gguf))


@pytest.fixture
def short(monkeypatch):
    """The demo's training cut to a few small float32 steps: the flow is under test, not
    what the tiny model learns."""
    monkeypatch.setitem(demo.DEMO, "seq_len", 128)
    monkeypatch.setitem(demo.DEMO, "batch_size", 2)
    monkeypatch.setitem(demo.DEMO, "dtype", "float32")
    monkeypatch.setattr(demo, "MAX_NEW_TOKENS", 8)
    monkeypatch.setattr(demo, "HELDOUT_TOKENS", 64)


def test_demo_alone_still_answers_and_finetune_is_its_own_command():
    parser = cli.build_parser()
    assert parser.parse_args(["demo"]).func is cmd_demo
    assert parser.parse_args(["demo", "--model", "x.gguf"]).func is cmd_demo
    args = parser.parse_args(["demo", "finetune", "--name", "Ada", "--steps", "5"])
    assert args.func is cmd_finetune_demo and (args.name, args.steps) == ("Ada", 5)
    assert args.out == demo.DEFAULT_OUT and args.epochs is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--name", "  "], "--name must not be empty"),
        (["--maker", ""], "--maker must not be empty"),
        (["--maker-zh", " "], "--maker-zh must not be empty"),
        (["--epochs", "0"], "--epochs 0.0 must be a number > 0"),
        (["--epochs", "nan"], "--epochs nan must be a number > 0"),
        (["--steps", "-1"], "--steps -1 must be ≥ 0"),
        (["--model", "no/such/model.gguf"], "No model at 'no/such/model.gguf'"),
    ],
)
def test_bad_options_fail_before_anything_loads(argv, message, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("llmhood.load", must_not_run)
    monkeypatch.setattr("llmhood.train.trainer.train", must_not_run)
    assert cli.main(["demo", "finetune", "--out", str(tmp_path / "run"), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llmhood: error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_epochs_and_steps_together_are_refused(capsys):
    with pytest.raises(SystemExit):
        cli.main(["demo", "finetune", "--epochs", "1", "--steps", "3"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_an_out_that_is_not_a_demo_run_is_left_alone(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("llmhood.load", must_not_run)
    (tmp_path / "notes.txt").write_text("mine")
    assert cli.main(["demo", "finetune", "--out", str(tmp_path)]) == 1
    assert "not this demo's" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert cli.main(["demo", "finetune", "--out", str(tmp_path / "notes.txt")]) == 1
    assert "is a file" in capsys.readouterr().err


def test_the_whole_flow_on_a_tiny_model(tiny_base, short, capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["demo", "finetune", "--model", str(tiny_base), "--out", str(out), "--steps", "2",
            "--name", "Ada", "--maker", "Lovelace Labs"]  # fmt: skip
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "Before" in text and "After 2 steps" in text and f"you> {WHO_ARE_YOU}" in text
    assert text.count("you> ") == 1 + len(demo.demo_questions())  # before: one, after: all
    assert re.search(r"held-out perplexity: [\d.]+ before, [\d.]+ after \([+-][\d.]+%\)", text)
    assert f"loss curve: {out / 'loss.png'}" in text and (out / "loss.png").stat().st_size > 0
    assert f"llmhood chat --adapter {out}\n" in text
    assert f"llmhood export {out} --merge --format gguf --out {out}.gguf\n" in text
    assert (out / "adapter" / "adapter.safetensors").is_file()

    rows = [json.loads(line) for line in (out / "identity.jsonl").open(encoding="utf-8")]
    assert len(rows) == len(training_rows()) and any("Ada" in json.dumps(r) for r in rows)
    record = json.loads((out / demo.MARKER).read_text(encoding="utf-8"))
    assert record["name"] == "Ada" and record["steps"] == 2 and record["train"]["max_steps"] == 2
    for stage in ("before", "after"):
        assert record[stage]["perplexity"] > 0
        assert [r["question"] for r in record[stage]["replies"]] == demo.demo_questions()


def test_a_previous_demo_run_is_replaced(tmp_path, capsys):
    """So that `make finetune-demo` runs again: the marker says the directory is the demo's."""
    (tmp_path / "checkpoints" / "step-000001").mkdir(parents=True)
    (tmp_path / "identity.jsonl").write_text("{}\n")
    (tmp_path / demo.MARKER).write_text("{}")
    (tmp_path / "export").mkdir()  # not the demo's: it stays
    demo.prepare_out(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    assert "Replacing the previous demo run" in capsys.readouterr().err


@pytest.mark.real
def test_sft_on_the_identity_data_teaches_the_new_identity(smollm2_gguf, tmp_path):
    """After SFT on the identity data, the greedy answer names the new identity and ends with
    the end-of-turn token (a shorter training than the demo's; it is enough)."""
    import llmhood
    from llmhood.train.trainer import train

    assert smollm2_gguf.is_file()  # the model package is installed (the fixture says how if not)
    out = tmp_path / "run"
    out.mkdir()
    data = demo.write_data(out / demo.DATA, "Hoodie", "the llmhood project", None, 0)
    train(demo.train_config(out, data, **SHORT), progress=False)
    tuned = llmhood.load(adapter=out, progress=False)
    reply = demo.ask(tuned, [WHO_ARE_YOU], "Hoodie")[0]
    assert reply.names, reply.text
    assert reply.ended, f"no {demo.END_OF_TURN} after {reply.text!r}"
