"""`llmhood bench` end to end on a tiny GGUF model, and its table. No timing is asserted:
the numbers are whatever this machine gives; what is checked is that they are measured,
reported, compared and labelled."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_gguf import write_tiny_gguf

from llmhood import cli
from llmhood.model.fast import decode_step
from llmhood.speed import bench, modes
from llmhood.speed.bench import Report, Result, Workload
from llmhood.speed.cpu import cpu


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, smollm2_gguf):
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", smollm2_gguf)


def test_bench_runs_end_to_end(tiny_gguf, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMHOOD_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bench, "llama_cpp_installed", lambda: False)
    out_json = tmp_path / "bench.json"
    argv = ["bench", "--model", str(tiny_gguf), "--quick", "--repeat", "1", "--json",
            str(out_json), "--engines", "llmhood,transformers bf16,llama.cpp"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "llama-cpp-python is not installed" in out
    assert "llmhood ÷ transformers bf16" in out and "decode tok/s, batch 1" in out
    # The automatic mode: the fastest candidate this CPU has, which the guard passes on the
    # tiny model (test_modes); its perplexity, and the CPU and kernels it ran on.
    auto_mode = modes.candidates()[0].name
    assert f"  {auto_mode}" in out and f"cpu: {cpu().describe()}" in out
    assert "kernels that ran:" in out and cpu().kernels in out
    assert "cold load" in out
    assert not (tmp_path / "cache").exists()  # the runs had a cache of their own
    data = json.loads(out_json.read_text())
    auto = data["medians"]["llmhood"]
    assert auto["decode_tok_s"] > 0 and auto["prefill_tok_s"] > 0 and auto["batch_tok_s"] > 0
    assert auto["decode_tokens"] == 8 and auto["load_s"] > 0 and auto["peak_rss_mb"] > 0
    assert data["medians"]["transformers bf16"]["decode_tok_s"] > 0
    assert {v["mode"] for v in data["quality"]} == {m.name for m in modes.candidates()}
    assert auto["mode"] == auto_mode and data["machine"]["cpu_flags"] == list(cpu().flags)
    assert data["skipped"] == {"llama.cpp": bench.LLAMA_CPP_MISSING}
    by_name = {t["target"]: t for t in data["targets"]}
    assert by_name["decode ≥ 1.0× llama.cpp"]["value"] is None  # not measured, not failed


def test_bench_profile_says_where_decode_time_goes(tiny_gguf, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMHOOD_CACHE", str(tmp_path / "cache"))
    assert cli.main(["bench", "--model", str(tiny_gguf), "--profile"]) == 0
    out = capsys.readouterr().out
    auto = modes.candidates()[0]  # the automatic mode on this CPU (see test_modes)
    assert f"decode steps of {auto.name}" in out
    groups = out.split("share of the profiled time")[1].split("the 12 operators")[0]
    rows = [line.rsplit(maxsplit=1) for line in groups.splitlines()[1:]]
    shares = {name.strip(): share for name, share in rows}
    matmuls = {"int4": "int4 matmuls", "int8": "int8 matmuls"}.get(auto.quantize, "float matmuls")
    assert {matmuls, "everything else"} <= shares.keys()
    assert 99 <= sum(float(v.rstrip("%")) for v in shares.values()) <= 101
    assert "through the Python blocks" in out  # and first through the decode step, if built
    if decode_step.available() is None and auto.dtype != torch.float32:
        assert "through the fused decode step" in out and "decode step loops" in out


def test_bench_refuses_what_it_cannot_run(tiny_gguf, tmp_path, capsys):
    assert cli.main(["bench", "--model", str(tmp_path)]) == 1
    assert "needs a .gguf file" in capsys.readouterr().err
    assert cli.main(["bench", "--model", str(tiny_gguf), "--engines", "vllm"]) == 1
    assert "Unknown engine 'vllm'" in capsys.readouterr().err
    assert cli.main(["bench", "--model", str(tiny_gguf), "--repeat", "0"]) == 1
    assert "--repeat 0 is invalid" in capsys.readouterr().err


def fake_report() -> Report:
    workload = Workload("m.gguf", [1] * 40, 128, [1] * 512, [[1] * 30] * 16, 64, [2], 2, 512)
    results = {
        "llmhood": Result("llmhood", "int4", decode_tok_s=120, prefill_tok_s=900, ttft_s=0.05,
                          batch_tok_s=780, load_s=1.1, peak_rss_mb=600, baseline_rss_mb=250,
                          weights_mb=350),
        "transformers bf16": Result("transformers bf16", "bfloat16", decode_tok_s=30,
                                    prefill_tok_s=500),
        "llama.cpp": Result("llama.cpp", "Q4_1", decode_tok_s=110, prefill_tok_s=300),
    }  # fmt: skip
    quality = [
        {"mode": "float32", "perplexity": 17.5, "reference": 17.5},
        {"mode": "broken", "perplexity": 19.0, "reference": 17.5},
    ]
    runs = {k: [v] for k, v in results.items()}
    return Report(workload, 3, results, runs, quality, machine=bench.machine())


def test_table_gives_ratios_targets_and_quality_labels():
    report = fake_report()
    text = bench.format_report(report)
    assert "4.00×" in text  # decode, llmhood ÷ transformers bf16
    assert "1.09×" in text  # decode, llmhood ÷ llama.cpp
    assert "broken                      19.000 (+8.57%, lossy)" in text
    targets = {name: (value, bench.met(name, value, goal)) for name, value, goal in
               bench.targets(report)}  # fmt: skip
    assert targets["decode ≥ 3× transformers bf16"] == (4.0, True)
    assert targets["prefill ≥ 2× llama.cpp"] == (3.0, True)
    assert targets["batch ≥ 6× own batch-1 decode"] == (6.5, True)
    assert targets["warm load ≤ 2 s"] == (1.1, True)
    assert targets["peak RSS ≤ 1.5× weights"][1] is False
    assert json.dumps(bench.to_json(report))  # serialisable


def test_medians_are_taken_per_metric():
    runs = [Result("x", decode_tok_s=v, load_s=1.0) for v in (90.0, 120.0, 100.0)]
    median = bench.median_result(runs)
    assert median.decode_tok_s == 100.0 and median.load_s == 1.0 and median.ttft_s is None
