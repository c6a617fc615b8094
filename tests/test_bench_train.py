"""`llmhood bench train` end to end on a tiny GGUF model, and its table. No timing is asserted:
speed is measured in benchmarks, not timed tests. What is checked is that every engine
trains the same rows with the same settings, and that its numbers are measured, compared
with llmhood's and labelled against the targets."""

from __future__ import annotations

import importlib.util
import json

import pytest
from tiny_gguf import write_tiny_gguf

from llmhood import cli
from llmhood.speed import bench as speed_bench
from llmhood.train import bench, identity
from llmhood.train.bench import EngineResult, TrainReport, TrainWorkload


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, smollm2_gguf):
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", smollm2_gguf)


def installed(engine: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in bench.NEEDS.get(engine, ()))


def test_bench_train_runs_end_to_end(tiny_gguf, tmp_path, monkeypatch, capsys):
    rows = identity.training_rows()
    # A few rows of each kind keep the children quick; the real run takes them all.
    monkeypatch.setattr(identity, "training_rows", lambda seed=None: rows[:6] + rows[-6:])
    out_json = tmp_path / "train.json"
    argv = ["bench", "train", "--model", str(tiny_gguf), "--steps", "1", "--warmup", "1",
            "--seq-len", "64", "--batch-size", "2", "--repeat", "1",
            "--json", str(out_json)]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "llmhood bench train: tiny.gguf" in out and "trained tokens/s" in out
    assert "targets:" in out and "QLoRA base weights ≤ 0.3× their bf16 size" in out
    data = json.loads(out_json.read_text())
    work = data["workload"]
    assert work["steps"] == 1 and work["seq_len"] == 64 and work["batch_size"] == 2
    assert "ids" not in work and work["rows"] >= 12
    medians = data["medians"]
    for engine in bench.ENGINES:
        if not installed(engine):
            assert "not installed" in data["skipped"][engine]
            continue
        m = medians[engine]
        assert m["supervised_tok_s"] > 0 and m["real_tok_s"] >= m["supervised_tok_s"]
        assert m["peak_rss_mb"] >= m["baseline_rss_mb"] > 0 and m["load_s"] > 0
        assert len(m["losses"]) == 2 and m["loss"] == m["losses"][-1] > 0
        assert m["positions_per_step"] >= m["real_per_step"] >= m["supervised_per_step"] > 0
        assert m["trainable"] == medians["llmhood"]["trainable"]  # the same adapters
    lora, qlora = medians["llmhood"], medians["llmhood qlora"]
    # The frozen base as held: bf16 where the CPU has bf16 instructions, else float32.
    width = 2 if work["dtype"] == "bfloat16" else 4
    assert lora["base_mb"] == pytest.approx(lora["base_bf16_mb"] * width / 2)
    assert qlora["base_mb"] < lora["base_mb"]
    # Packed steps hold `batch_size` sequences of `seq_len` positions.
    assert lora["positions_per_step"] == 2 * 64
    if installed("trl"):
        assert medians["trl"]["supervised_per_step"] == lora["supervised_per_step"]
    by_name = {t["target"]: t for t in data["targets"]}
    assert by_name["QLoRA base weights ≤ 0.3× their bf16 size"]["value"] == pytest.approx(
        qlora["base_mb"] / qlora["base_bf16_mb"]
    )
    if not installed("peft"):
        assert by_name["trained tok/s ≥ 1.5× peft + transformers"]["value"] is None


def test_bench_train_refuses_what_it_cannot_run(tiny_gguf, tmp_path, capsys):
    assert cli.main(["bench", "train", "--model", str(tmp_path)]) == 1
    assert "needs a .gguf file" in capsys.readouterr().err
    assert cli.main(["bench", "train", "--model", str(tiny_gguf), "--engines", "unsloth"]) == 1
    assert "Unknown engine 'unsloth'" in capsys.readouterr().err
    assert cli.main(["bench", "train", "--model", str(tiny_gguf), "--repeat", "0"]) == 1
    assert "--repeat 0 is invalid" in capsys.readouterr().err
    assert cli.main(["bench", "train", "--model", str(tiny_gguf), "--steps", "0"]) == 1
    assert "--steps 0 is invalid" in capsys.readouterr().err
    assert cli.main(["bench", "train", "--json", str(tmp_path)]) == 1
    assert "--json" in capsys.readouterr().err


def fake_report() -> TrainReport:
    workload = TrainWorkload("m.gguf", "hf", "rows.jsonl", [[1] * 60] * 260,
                             [[False] * 30 + [True] * 30] * 260, 512, 4, 29, 5, 1)  # fmt: skip
    common = dict(base_bf16_mb=256.0, trainable=4_884_480, loss=1.5)
    results = {
        "llmhood": EngineResult("llmhood", supervised_tok_s=300, real_tok_s=700, base_mb=256.0,
                               peak_rss_mb=1000, **common),
        "llmhood qlora": EngineResult("llmhood qlora", supervised_tok_s=200, base_mb=106.0,
                                     peak_rss_mb=900, **common),
        "peft": EngineResult("peft", supervised_tok_s=150, real_tok_s=400, base_mb=256.0,
                            peak_rss_mb=2000, **common),
        "trl": EngineResult("trl", supervised_tok_s=250, base_mb=256.0, peak_rss_mb=1500,
                           **common),
    }  # fmt: skip
    runs = {k: [v] for k, v in results.items()}
    return TrainReport(workload, 3, results, runs, machine=bench.machine())


def test_table_gives_ratios_and_targets():
    report = fake_report()
    text = bench.format_report(report)
    assert "llmhood ÷ peft" in text and "llmhood ÷ trl" in text
    assert "2.00×" in text and "1.20×" in text  # trained tok/s against peft, trl
    targets = {name: (value, speed_bench.met(name, value, goal)) for name, value, goal in
               bench.targets(report)}  # fmt: skip
    assert targets["trained tok/s ≥ 1.5× peft + transformers"] == (2.0, True)
    assert targets["peak RSS ≤ 0.6× peft + transformers"] == (0.5, True)
    assert targets["trained tok/s ≥ 1.15× trl SFTTrainer (packed)"] == (1.2, True)
    assert targets["QLoRA base weights ≤ 0.3× their bf16 size"][1] is False  # 0.41
    assert targets["QLoRA peak RSS < LoRA's"] == (0.9, True)
    assert json.dumps(bench.to_json(report))  # serialisable


def test_medians_are_taken_per_metric():
    runs = [EngineResult("x", supervised_tok_s=v, load_s=1.0) for v in (90.0, 120.0, 100.0)]
    median = bench.median_result(runs)
    assert median.supervised_tok_s == 100.0 and median.load_s == 1.0 and median.step_s is None
