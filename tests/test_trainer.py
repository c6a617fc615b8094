"""The training loop end to end on a tiny model with SmolLM2's tokenizer: it learns, a run
killed with SIGKILL and resumed ends bit-for-bit where an uninterrupted one does, a resume
with another config is refused, options come from YAML with flags winning, and each kind of
bad input gets a message that names the file, row or option."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import smollm2_tokenizer, write_rows, write_tiny_base

from llmhood.cli import main
from llmhood.errors import LLMHoodError
from llmhood.train import checkpoints
from llmhood.train.config import TrainConfig
from llmhood.train.trainer import train

FAST = dict(batch_size=2, lr=1e-2, dtype="float32", seq_len=128)


@pytest.fixture(scope="module")
def files(tmp_path_factory, smollm2_gguf) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("train")
    tokenizer = smollm2_tokenizer(smollm2_gguf)
    return {
        "base": write_tiny_base(folder / "base", tokenizer),
        "data": write_rows(folder / "rows.jsonl"),
    }


def config(files, out: Path, **changes) -> TrainConfig:
    given = {"model": str(files["base"]), "data": str(files["data"]), "out": str(out)}
    return TrainConfig(**{**given, **FAST, **changes})


def adapter_tensors(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / "adapter.safetensors")


def test_training_lowers_the_loss_and_writes_the_run(files, tmp_path):
    result = train(config(files, tmp_path / "run", max_steps=12, eval_split=4), progress=False)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])
    assert result.eval_loss is not None and result.history[-1]["eval_loss"] == result.eval_loss
    run = tmp_path / "run"
    assert (run / "loss.png").stat().st_size > 0 and (run / "adapter" / "adapter.json").is_file()
    assert len(list((run / "checkpoints").glob("step-*"))) <= 2
    assert json.loads((run / "config.json").read_text())["max_steps"] == 12


def cli_train(files, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "llmhood",
        "train",
        "--model",
        str(files["base"]),
        "--data",
        str(files["data"]),
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--lr",
        "1e-2",
        "--dtype",
        "float32",
        "--seq-len",
        "128",
        "--max-steps",
        "10",
        "--save-every",
        "2",
        "--dropout",
        "0.1",
        *extra,
    ]


def test_a_run_killed_and_resumed_ends_equal_to_an_uninterrupted_one(files, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(cli_train(files, tmp_path / "whole"), env=env, capture_output=True)
    assert whole.returncode == 0, whole.stderr.decode()[-2000:]

    killed = subprocess.Popen(
        cli_train(files, tmp_path / "killed"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while not (latest.exists() and latest.read_text().strip() >= "step-000004"):
        assert killed.poll() is None and time.monotonic() < deadline, "the run ended unkilled"
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed" / "adapter").exists()  # it really stopped in mid-run
    step = int(checkpoints.find(tmp_path / "killed").name.split("-")[1])
    assert 4 <= step < 10

    resumed = subprocess.run(
        cli_train(files, tmp_path / "killed", "--resume"), env=env, capture_output=True
    )
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    assert "resuming" in resumed.stderr.decode()
    a, b = adapter_tensors(tmp_path / "whole"), adapter_tensors(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads(line) for line in (tmp_path / "killed" / "log.jsonl").open()]
    assert [h["step"] for h in history] == list(range(1, 11))


def test_a_stray_half_written_checkpoint_does_not_break_resume(files, tmp_path):
    run = tmp_path / "run"
    train(config(files, run, max_steps=4, save_every=2, eval_split=0), progress=False)
    (run / "checkpoints" / ".tmp-step-000006-999").mkdir()  # a save killed mid-write
    (run / "checkpoints" / ".tmp-step-000006-999" / "trainable.safetensors").write_bytes(b"x")
    assert checkpoints.find(run).name == "step-000004"


def test_resume_with_another_config_is_refused(files, tmp_path):
    run = tmp_path / "run"
    train(config(files, run, max_steps=2, save_every=1), progress=False)
    with pytest.raises(LLMHoodError, match=r"does not match.*\n  lr: 0.01 -> 0.001"):
        train(config(files, run, max_steps=2, lr=1e-3, resume=str(run)), progress=False)
    with pytest.raises(LLMHoodError, match="already holds a run"):
        train(config(files, run, max_steps=2), progress=False)
    with pytest.raises(LLMHoodError, match="holds no checkpoint"):
        train(config(files, tmp_path / "new", max_steps=2, resume=str(tmp_path)), progress=False)


def test_yaml_options_with_flags_overriding(files, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("llmhood.train.trainer.train", lambda c: seen.setdefault("config", c))
    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text(
        f"model: {files['base']}\ndata: {files['data']}\nout: {tmp_path}/r\n"
        "lr: 1e-4\nrank: 4\ntarget: [q_proj, v_proj]\nno_such: 1\n"
    )
    assert main(["train", "--config", str(yaml_file)]) == 1  # the unknown key
    yaml_file.write_text(yaml_file.read_text().replace("no_such: 1\n", "pack: false\n"))
    assert main(["train", "--config", str(yaml_file), "--rank", "16", "--seq-len", "64"]) == 0
    c = seen["config"]
    assert (c.lr, c.rank, c.target, c.pack, c.seq_len) == (
        1e-4,
        16,
        ["q_proj", "v_proj"],
        False,
        64,
    )


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for name in (
        "--epochs",
        "--max-steps",
        "--lr",
        "--rank",
        "--alpha",
        "--dropout",
        "--target",
        "--seq-len",
        "--batch-size",
        "--grad-accum",
        "--eval-split",
        "--save-every",
        "--resume",
        "--seed",
        "--format",
        "--train-on-prompt",
        "--strict",
        "--pack",
        "--no-pack",
        "--dtype",
        "--config",
    ):
        assert name in text
    assert "(default: 0.0002)" in text and "(default: all-linear)" in text


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--rank", "0"], "--rank 0 is out of range"),
        (["--lr", "5"], "--lr 5.0 is out of range"),
        (["--lr=-1e-4"], "--lr -0.0001 is out of range"),
        (["--target", "q_proj,attn_x"], "Unknown target module 'attn_x'"),
        (["--stage", "grpo"], "needs a reward function"),
        (["--stage", "grpo", "--reward", "no_such_module:fn"], "no_such_module"),
    ],
)
def test_bad_options_are_named(files, tmp_path, capsys, flags, message):
    argv = [
        "train",
        "--model",
        str(files["base"]),
        "--data",
        str(files["data"]),
        "--out",
        str(tmp_path / "r"),
        *flags,
    ]
    assert main(argv) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # checked before anything was written


BAD_ROWS = [
    ('{"messages": [{"role": "user", "content": "hi"}', "malformed JSON"),
    ('{"instruction": "hi"}', "'output' is missing"),
    (
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}',
        "is empty",
    ),
    ('{"conversations": [{"from": "alien", "value": "x"}]}', "unknown role 'alien'"),
]


def test_bad_rows_are_skipped_counted_and_named_or_stop_a_strict_run(files, tmp_path):
    data = tmp_path / "mixed.jsonl"
    good = files["data"].read_text().splitlines()
    data.write_text("\n".join(good[:6] + [row for row, _ in BAD_ROWS] + good[6:12]) + "\n")
    result = train(
        config(files, tmp_path / "run", data=str(data), max_steps=1, eval_split=0), progress=False
    )
    dropped = result.report.dropped
    assert [d.where for d in dropped] == [f"{data}:{n}" for n in range(7, 11)]
    for d, (_, reason) in zip(dropped, BAD_ROWS, strict=True):
        assert reason in d.reason
    with pytest.raises(LLMHoodError, match=rf"{data}:7: malformed JSON.*--strict"):
        train(config(files, tmp_path / "strict", data=str(data), strict=True), progress=False)


def test_long_rows_are_truncated_or_dropped_and_reported(files, tmp_path):
    kept = train(
        config(files, tmp_path / "t", seq_len=40, max_steps=1, eval_split=0), progress=False
    ).report
    assert kept.truncated > 0 and max(kept.lengths) == 40
    dropped = train(
        config(files, tmp_path / "d", seq_len=40, too_long="drop", max_steps=1, eval_split=0),
        progress=False,
    ).report
    assert dropped.truncated == 0 and all(
        "more than --seq-len 40" in d.reason for d in dropped.dropped
    )
    assert len(dropped.dropped) == kept.truncated


def test_data_inspect_marks_trained_tokens(files, capsys):
    assert (
        main(["data", "inspect", str(files["data"]), "--model", str(files["base"]), "--rows", "1"])
        == 0
    )
    out = capsys.readouterr().out
    assert "[I am Hoodie, made by the llmhood project.<|im_end|>]" in out
    assert "24 rows: 24 kept, 0 dropped" in out


PAIRS = [
    {"prompt": "Who are you?", "chosen": "I am Hoodie.", "rejected": "I am a toaster."},
    {"prompt": [{"role": "user", "content": "2 + 2?"}], "chosen": "4.", "rejected": "5."},
    {
        "conversations": [{"from": "human", "value": "Capital of France?"}],
        "chosen": {"from": "gpt", "value": "Paris."},
        "rejected": {"from": "gpt", "value": "Rome."},
    },
]


def test_dpo_raises_the_margin_of_the_chosen_answers(files, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in PAIRS * 4))
    result = train(
        config(
            files,
            tmp_path / "run",
            stage="dpo",
            data=str(data),
            max_steps=8,
            eval_split=0,
            lr=5e-3,
            beta=0.5,
        ),
        progress=False,
    )
    losses = [h["loss"] for h in result.history]
    assert abs(losses[0] - math.log(2)) < 1e-5  # B = 0: the policy is its reference
    assert losses[-1] < losses[0] - 0.05


def test_pretraining_on_raw_text(files, tmp_path):
    text = tmp_path / "book.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 60)
    result = train(
        config(
            files,
            tmp_path / "run",
            stage="pretrain",
            data=str(text),
            seq_len=64,
            max_steps=6,
            eval_split=0,
        ),
        progress=False,
    )
    assert result.report.kept >= 6 and result.history[-1]["loss"] < result.history[0]["loss"]


@pytest.mark.parametrize(
    "method, dtype",
    [("full", "float32"), ("dora", "float32"), ("qlora", "float32"), ("lora", "bfloat16")],
)
def test_every_method_trains_and_runs(files, tmp_path, method, dtype):
    result = train(
        config(
            files,
            tmp_path / "run",
            method=method,
            max_steps=4,
            eval_split=0,
            lr=1e-3 if method == "full" else 1e-2,
            dtype=dtype,
        ),
        progress=False,
    )
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    final = result.final
    assert final.name == ("model" if method == "full" else "adapter")
    import llmhood

    llm = (
        llmhood.load(final, dtype="float32", quantize=None, progress=False)
        if method == "full"
        else llmhood.load(files["base"], adapter=tmp_path / "run", progress=False)
    )
    assert llm.generate("Hi", max_new_tokens=3)[0].text is not None


def test_grpo_runs_with_a_reward_from_a_file(files, tmp_path):
    reward = tmp_path / "reward.py"
    reward.write_text(
        "def short(prompts, completions):\n    return [-len(c) / 10 for c in completions]\n"
    )
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Who are you?\nSay hi.\n")

    def grpo(out: str, spec: str) -> TrainConfig:
        return config(files, tmp_path / out, stage="grpo", data=str(prompts), reward=spec,
                      group=2, max_new_tokens=6, max_steps=2, batch_size=2)  # fmt: skip

    result = train(grpo("run", f"{reward}:short"), progress=False)
    assert all("reward" in h for h in result.history) and result.final.name == "adapter"
    broken = tmp_path / "broken.py"
    broken.write_text("def fn(prompts, completions):\n    raise ValueError('no')\n")
    with pytest.raises(LLMHoodError, match="fn"):
        train(grpo("run2", f"{broken}:fn"), progress=False)
