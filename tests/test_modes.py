"""Speed modes against the plain float32 path: fused, bf16, int4 and int8 models on a tiny
GGUF file, the automatic choice, and what it remembers between loads."""

from __future__ import annotations

import os

import pytest
import torch
from tiny_gguf import write_tiny_gguf

import llmhood
from llmhood.errors import LLMHoodError
from llmhood.model import ModelConfig, Transformer
from llmhood.model.attention import explicit_attention
from llmhood.model.fast import decode_step
from llmhood.model.fast.decode_step import DecodeStep
from llmhood.model.fast.fusion import fuse, unfuse
from llmhood.model.fast.quantized import (
    Int4Linear,
    Int8Linear,
    Int8Weight,
    int4_available,
    int4_kernel_only,
    int8_available,
)
from llmhood.perplexity import Verdict
from llmhood.speed import cpu, guard, modes, prepared
from llmhood.speed.modes import REFERENCE, Mode, build, requested

BF16 = Mode(torch.bfloat16, fuse=True)
INT4 = Mode(torch.bfloat16, "int4", fuse=True, dense=True)
INT8 = Mode(torch.bfloat16, "int8", fuse=True)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory, smollm2_gguf):
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", smollm2_gguf)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMHOOD_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def tokens():
    torch.manual_seed(0)
    return torch.randint(0, 49152, (2, 24))


def logits(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(tokens).float()


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


def test_fused_projections_equal_the_plain_ones():
    torch.manual_seed(0)
    config = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, hidden_dim=96)
    model = Transformer(config).eval()
    tokens = torch.randint(0, 97, (2, 9))
    plain, names = logits(model, tokens), list(model.state_dict())
    fuse(model)
    assert model.layers[0].attention.wqkv is not None
    torch.testing.assert_close(logits(model, tokens), plain, atol=1e-6, rtol=1e-6)
    # The parts are views of the stacked matrix: same names, same counts, no second copy.
    assert list(model.state_dict()) == names
    attn = model.layers[0].attention
    assert attn.wk.weight.data_ptr() == attn.wqkv.weight[64:].data_ptr()
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    unfuse(model)
    torch.testing.assert_close(logits(model, tokens), plain, atol=1e-6, rtol=1e-6)


def test_explicit_attention_of_a_bf16_model_is_computed_in_float32():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 16), torch.randn(2, 2, 7, 16), torch.randn(2, 2, 7, 16)
    mask = torch.ones(1, 1, 5, 7, dtype=torch.bool).tril(2)
    want, _ = explicit_attention(
        q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), mask
    )
    got, weights = explicit_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert got.dtype == torch.bfloat16 and weights.dtype == torch.float32
    torch.testing.assert_close(got.float(), want, atol=1e-2, rtol=1e-2)


def test_bf16_mode_is_close_to_float32(tiny_gguf, tokens):
    reference, _ = build(tiny_gguf, REFERENCE, progress=False)
    model, _ = build(tiny_gguf, BF16, progress=False)
    assert model.tok_embeddings.weight.dtype == torch.bfloat16
    assert relative_error(logits(model, tokens), logits(reference, tokens)) < 2e-2


@pytest.mark.parametrize("kernel_only", [True, False])
def test_int4_mode_equals_the_q4_1_reference(tiny_gguf, tokens, kernel_only):
    """Q4_1 repacks without loss, so the float32 model *is* the dequantized reference; only
    bf16 rounding separates them, on the int4 kernel path and on the dense one."""
    reference, _ = build(tiny_gguf, REFERENCE, progress=False)
    model, _ = build(tiny_gguf, INT4, progress=False)
    assert isinstance(model.layers[0].attention.wqkv, Int4Linear)
    assert isinstance(model.output, Int4Linear) and model.output.repeat_input == 2
    assert not hasattr(model.layers[0].attention, "wq")
    if kernel_only:
        with int4_kernel_only(model):
            got = logits(model, tokens)
    else:
        got = logits(model, tokens)
    assert relative_error(got, logits(reference, tokens)) < 2e-2


def test_int4_fused_equals_unfused(tiny_gguf, tokens):
    fused, _ = build(tiny_gguf, INT4, progress=False, keep=False)
    plain, _ = build(tiny_gguf, Mode(torch.bfloat16, "int4", dense=True), progress=False)
    assert isinstance(plain.layers[0].attention.wq, Int4Linear)
    with int4_kernel_only(fused), int4_kernel_only(plain):
        torch.testing.assert_close(logits(fused, tokens), logits(plain, tokens), atol=0.05, rtol=0)


def test_int8_mode_equals_its_dequantized_weights(tiny_gguf, tokens):
    model, _ = build(tiny_gguf, INT8, progress=False)
    assert isinstance(model.layers[1].feed_forward.w13, Int8Linear)
    reference, _ = build(tiny_gguf, REFERENCE, progress=False)
    for module in reference.modules():  # the float model with int8-rounded weights
        if isinstance(module, torch.nn.Linear) and module is not reference.output:
            module.weight.data = Int8Weight.quantize(module.weight.data).dequantize()
    head = reference.output.weight.data
    reference.output = torch.nn.Linear(64, 49152, bias=False)
    reference.output.weight.data = Int8Weight.quantize(head).dequantize()
    assert relative_error(logits(model, tokens), logits(reference, tokens)) < 2e-2


def test_requested_modes():
    assert requested("float32") == [REFERENCE]
    assert requested("bfloat16") == [BF16]
    assert requested(quantize="int4") == [INT4]
    assert requested(quantize="int4", dense=False, fuse=False) == [Mode(torch.bfloat16, "int4")]
    assert requested() == modes.candidates()
    assert requested(quantize=None) == [m for m in modes.candidates() if m.quantize is None]
    assert modes.candidates()[-1] == REFERENCE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantize": "int3"}, "Unknown quantize"),
        ({"dtype": "float8"}, "Unknown dtype"),
        ({"dtype": "float32", "quantize": "int4"}, "computes in bfloat16"),
        ({"dtype": "bfloat16", "dense": True}, "needs quantize='int4'"),
    ],
)
def test_bad_mode_arguments(kwargs, message):
    with pytest.raises(LLMHoodError, match=message):
        requested(**kwargs)


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16-cpu", "avx2-cpu"])
def test_candidates_follow_the_cpu(monkeypatch, bf16):
    """Fast modes compute in bf16, which pays only with bf16 instructions; without them
    float32 is all there is to choose (`llmhood bench` measured the order)."""
    monkeypatch.setattr(cpu, "bf16_supported", lambda: bf16)
    fast = [INT4] * int4_available() + [INT8] * int8_available() + [BF16]
    assert modes.candidates() == ([*fast, REFERENCE] if bf16 else [REFERENCE])


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16-cpu", "avx2-cpu"])
def test_auto_takes_the_fastest_mode_that_passes_and_remembers(tiny_gguf, monkeypatch, bf16):
    """Both kinds of CPU, on any machine: the quantized modes run (slowly) without bf16
    instructions too, so the choice itself is tested everywhere."""
    monkeypatch.setattr(cpu, "bf16_supported", lambda: bf16)
    evaluated = []
    real_evaluate = guard.evaluate

    def counting(*args, **kwargs):
        evaluated.append(args[1])
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(guard, "evaluate", counting)
    fastest = modes.candidates()[0]
    llm = llmhood.load(tiny_gguf, progress=False)
    assert llm.mode == fastest
    if fastest == REFERENCE:  # the only candidate: taken as is, nothing to measure
        assert evaluated == []
        return
    assert evaluated == [[fastest]]  # passed: the slower modes were not even measured
    assert llmhood.load(tiny_gguf, progress=False).mode == fastest
    assert len(evaluated) == 1  # the verdicts were remembered
    stat = tiny_gguf.stat()
    os.utime(tiny_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file "changed"
    llmhood.load(tiny_gguf, progress=False)
    assert len(evaluated) == 2  # and they were measured again


def test_llmhood_cpu_avx2_hides_what_an_avx2_cpu_lacks(monkeypatch):
    monkeypatch.setenv(cpu.ENV, "avx2")
    c = cpu.cpu()
    assert not c.bf16 and not cpu.bf16_supported() and c.limit == "avx2"
    assert not any(f.startswith(("avx512", "amx")) for f in c.flags)
    assert modes.candidates() == [REFERENCE]
    assert f"{cpu.ENV}=avx2" in c.describe()
    monkeypatch.setenv(cpu.ENV, "avx-512")
    with pytest.raises(LLMHoodError, match="LLMHOOD_CPU='avx-512' is not understood"):
        cpu.cpu()


def test_cpu_flags_are_read_from_the_machine():
    """The flags reported are the kernel's own list for this CPU, filtered to those that
    matter, not a guess from one machine."""
    from pathlib import Path

    c = cpu.cpu()
    if c.limit != "native" or not Path("/proc/cpuinfo").is_file():
        pytest.skip("needs Linux's /proc/cpuinfo and no LLMHOOD_CPU limit")
    line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    listed = set(line.split(":", 1)[1].split())
    assert set(c.flags) == listed & set(cpu.FLAGS)
    assert c.kernels == torch.backends.cpu.get_cpu_capability()


def test_auto_passes_over_a_lossy_mode(tiny_gguf, monkeypatch):
    def verdicts(path, modes, progress=True):
        return {
            INT4.name: Verdict(INT4.name, 30.0, 20.0),  # 50% worse: lossy
            INT8.name: Verdict(INT8.name, 20.2, 20.0),
            BF16.name: Verdict(BF16.name, 20.1, 20.0),
            REFERENCE.name: Verdict(REFERENCE.name, 20.0, 20.0),
        }

    monkeypatch.setattr(guard, "guard_verdicts", verdicts)
    assert guard.choose(tiny_gguf, [INT4, INT8, BF16, REFERENCE]) == INT8
    assert guard.choose(tiny_gguf, [INT4, REFERENCE]) == REFERENCE
    assert guard.choose(tiny_gguf, [REFERENCE]) == REFERENCE  # asked for: no guard


def test_prepared_weights_are_reused_until_the_source_changes(tiny_gguf, tokens, monkeypatch):
    first = llmhood.load(tiny_gguf, quantize="int4", progress=False)
    assert prepared.file_for(tiny_gguf, INT4.name).is_file()
    real_prepare = modes._prepare
    monkeypatch.setattr(modes, "_prepare", lambda *a: pytest.fail("prepared again"))
    second = llmhood.load(tiny_gguf, quantize="int4", progress=False)
    assert torch.equal(logits(second.model, tokens), logits(first.model, tokens))
    # The restored head shares the embedding's memory again, as the prepared one did.
    assert second.model.output.dense.data_ptr() == second.model.tok_embeddings.weight.data_ptr()
    stat = tiny_gguf.stat()
    os.utime(tiny_gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    calls = []
    monkeypatch.setattr(modes, "_prepare", lambda *a: calls.append(a) or real_prepare(*a))
    third = llmhood.load(tiny_gguf, quantize="int4", progress=False)
    assert len(calls) == 1  # stale: prepared again
    assert torch.equal(logits(third.model, tokens), logits(first.model, tokens))


def test_a_damaged_prepared_file_is_ignored(tiny_gguf, tokens):
    first = llmhood.load(tiny_gguf, quantize="int4", progress=False)
    prepared.file_for(tiny_gguf, INT4.name).write_bytes(b"not a torch file")
    again = llmhood.load(tiny_gguf, quantize="int4", progress=False)
    assert torch.equal(logits(again.model, tokens), logits(first.model, tokens))


def test_info_names_the_mode(tiny_gguf, capsys):
    from llmhood import cli

    assert cli.main(["info", "--model", str(tiny_gguf), "--quantize", "int4"]) == 0
    out = capsys.readouterr().out
    assert "mode         int4+bfloat16+fused+dense" in out
    # Counted on the architecture, whatever form the weights are held in.
    assert "parameters   3," in out and "attention q" in out
    assert "decoding     one C++ call per token" in out or "decode step is off" in err(capsys)
    assert cli.main(["info", "--model", str(tiny_gguf), "--no-decode-step"]) == 0
    assert "decoding     the Python blocks" in capsys.readouterr().out


def err(capsys) -> str:
    return capsys.readouterr().err


def test_the_decode_step_is_on_by_default_except_in_float32(tiny_gguf, capsys, monkeypatch):
    if decode_step.available() is not None:
        pytest.skip(f"no decode step on this machine: {decode_step.available()}")
    assert llmhood.load(tiny_gguf, quantize="int4", progress=False).model.decode_step
    assert llmhood.load(tiny_gguf, dtype="bfloat16", progress=False).model.decode_step
    assert not llmhood.load(tiny_gguf, dtype="float32", progress=False).model.decode_step
    off = llmhood.load(tiny_gguf, quantize="int4", progress=False, decode_step=False)
    assert off.model.decode_step is None
    # Where it cannot run, a load says so and decodes the plain way; asking for it is an error.
    monkeypatch.setattr(DecodeStep, "problem", lambda model: "no C++ compiler was found")
    llm = llmhood.load(tiny_gguf, quantize="int4")
    assert llm.model.decode_step is None
    assert "decode step is off (no C++ compiler was found)" in err(capsys)
    with pytest.raises(LLMHoodError, match="no C\\+\\+ compiler"):
        llmhood.load(tiny_gguf, quantize="int4", progress=False, decode_step=True)


@pytest.mark.real
def test_auto_mode_of_the_real_model_answers_like_the_reference(smollm2_gguf):
    llm = llmhood.load("smollm2-135m", progress=False)
    assert llm.mode.quantize is not None or not cpu.bf16_supported()
    answer = llm.chat([{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in answer


def test_a_quantized_model_is_not_exported(tiny_gguf, tmp_path):
    from llmhood.weights.hf import write_hf

    llm = llmhood.load(tiny_gguf, quantize="int4", progress=False)
    with pytest.raises(LLMHoodError, match="quantized weights"):
        write_hf(tmp_path / "out", llm.model, llm.tokenizer)


def test_auto_attention_takes_sdpa_for_prompts_and_explicit_for_steps():
    torch.manual_seed(0)
    config = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, hidden_dim=96)
    model = Transformer(config).eval()
    tokens = torch.randint(0, 97, (2, 9))

    def run(prompt_impl: str, step_impl: str) -> torch.Tensor:
        cache = model.new_cache(2, 10)
        with torch.inference_mode():
            model.set_attention(prompt_impl)
            prompt = model(tokens, cache=cache)
            model.set_attention(step_impl)
            step = model(tokens[:, :1], cache=cache)
        return torch.cat([prompt, step], dim=1)

    auto, split = run("auto", "auto"), run("sdpa", "explicit")
    assert torch.equal(auto, split)
    torch.testing.assert_close(auto, run("explicit", "explicit"), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "no/such/file.gguf"}, "No model at"),
        ({"dtype": "float8"}, "Unknown dtype"),
        ({"quantize": "int2"}, "Unknown quantize"),
        ({"dtype": "float16", "quantize": "int8"}, "computes in bfloat16"),
    ],
)
def test_load_checks_its_arguments_before_reading_the_model(
    tiny_gguf, monkeypatch, kwargs, message
):
    def must_not_run(*args, **kwargs):
        pytest.fail("the model was read before the arguments were checked")

    monkeypatch.setattr(guard, "choose", must_not_run)
    monkeypatch.setattr(modes, "build", must_not_run)
    monkeypatch.setattr("llmhood.llm.choose", must_not_run)
    with pytest.raises(LLMHoodError, match=message):
        llmhood.load(kwargs.pop("model", tiny_gguf), progress=False, **kwargs)


def test_asking_for_a_decode_step_that_cannot_build_fails_first(tiny_gguf, monkeypatch):
    monkeypatch.setattr(decode_step, "available", lambda: "no C++ compiler was found")
    monkeypatch.setattr("llmhood.llm.choose", lambda *a: pytest.fail("read the model first"))
    with pytest.raises(LLMHoodError, match="no C\\+\\+ compiler"):
        llmhood.load(tiny_gguf, quantize="int4", decode_step=True, progress=False)
