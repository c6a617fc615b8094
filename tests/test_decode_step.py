"""The fused decode step (llmhood/model/fast/decode_step.cpp) against the Python blocks it mirrors.

Every comparison runs the same model twice, with the step on and off, through a prompt and
several single-token steps, and compares the logits and the KV cache. In float32 the two
agree to float32 rounding; in bf16 a sum taken in another order can round one element to
the neighbouring bf16 value, so there the bound is a few bf16 steps and the greedy tokens
must match. A wrong rotation, mask, cache slot or head grouping misses these by orders of
magnitude.
"""

from __future__ import annotations

import pytest
import torch

import llmhood
from llmhood.errors import LLMHoodError
from llmhood.model import ModelConfig, Transformer
from llmhood.model.capture import capture
from llmhood.model.fast import decode_step as step_module
from llmhood.model.fast.fusion import fuse
from llmhood.model.fast.quantized import Int4Linear
from llmhood.model.rope_scaling import RopeScaling
from llmhood.model.transformer import TransformerBlock
from llmhood.speed import kernels
from llmhood.speed.modes import Mode, quantize_linears

pytestmark = pytest.mark.skipif(
    step_module.available() is not None, reason=f"no decode step: {step_module.available()}"
)


def tiny(style: str = "interleaved", dtype=torch.float32, int4: bool = False, **changes):
    torch.manual_seed(0)
    config = ModelConfig(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, hidden_dim=96,
        max_seq_len=64, rope_style=style, **changes,
    )  # fmt: skip
    model = Transformer(config).eval()
    with torch.no_grad():  # larger gains than the default ones, so that the norms matter
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.5 * torch.randn_like(p))
    if int4:
        floats = dict(model.state_dict())
        model.to(torch.bfloat16)
        quantize_linears(model, Mode(torch.bfloat16, "int4", fuse=True, dense=True), floats, {})
    else:
        fuse(model.to(dtype))
    model.set_attention("auto")
    return model


def decode(model, prompt, steps=6, key_padding=None, positions=None, on=True):
    """Logits of a prompt and of `steps` greedy tokens after it; and the cache. `on`: switch
    the decode step on or off first (None: leave it as it is)."""
    if on is not None:
        model.set_decode_step(on)
    bs, n = prompt.shape
    cache = model.new_cache(bs, n + steps)
    out = []
    with torch.inference_mode():
        pad = key_padding[:, :n] if key_padding is not None else None
        logits = model(prompt, positions=positions, cache=cache, key_padding=pad)
        out.append(logits[:, -1])
        for i in range(steps):
            token = logits[:, -1].argmax(-1, keepdim=True)
            pad = key_padding[:, : n + i + 1] if key_padding is not None else None
            pos = positions[:, -1:] + i + 1 if positions is not None else None
            logits = model(token, positions=pos, cache=cache, key_padding=pad)
            out.append(logits[:, -1])
    return torch.stack(out, 1), cache


def assert_step_equals_plain(model, prompt, atol, **kwargs):
    fast, fast_cache = decode(model, prompt, on=True, **kwargs)
    plain, plain_cache = decode(model, prompt, on=False, **kwargs)
    torch.testing.assert_close(fast, plain, atol=atol, rtol=atol)
    torch.testing.assert_close(fast_cache.k.float(), plain_cache.k.float(), atol=atol, rtol=atol)
    torch.testing.assert_close(fast_cache.v.float(), plain_cache.v.float(), atol=atol, rtol=atol)
    assert torch.equal(fast.argmax(-1), plain.argmax(-1))


@pytest.mark.parametrize("style", ["interleaved", "half"])
def test_float32_steps_equal_the_python_blocks(style):
    prompt = torch.randint(0, 97, (2, 7))
    assert_step_equals_plain(tiny(style), prompt, atol=1e-5)


def test_the_step_replaces_the_blocks_for_single_tokens_only(monkeypatch):
    model, calls = tiny(), []
    forward = TransformerBlock.forward
    monkeypatch.setattr(TransformerBlock, "forward", lambda *a: calls.append(1) or forward(*a))
    decode(model, torch.randint(0, 97, (1, 5)), steps=3, on=True)
    assert len(calls) == 2  # the prompt's pass through both blocks; no step went through them
    decode(model, torch.randint(0, 97, (1, 5)), steps=3, on=False)
    assert len(calls) == 2 + 8


def test_bf16_and_int4_steps_equal_the_python_blocks():
    prompt = torch.randint(0, 97, (2, 7))
    assert_step_equals_plain(tiny(dtype=torch.bfloat16), prompt, atol=3e-2)
    assert_step_equals_plain(tiny(int4=True), prompt, atol=3e-2)


def test_int4_layers_switch_to_their_dense_copies_as_their_forward_does():
    model = tiny(int4=True)
    layers = [m for m in model.modules() if isinstance(m, Int4Linear)]
    for m in layers:
        m.dense_rows = 3
    prompt = torch.randint(0, 97, (3, 7))
    assert_step_equals_plain(model, prompt, atol=3e-2)  # 3 rows: the dense copies
    assert_step_equals_plain(model, prompt[:2], atol=3e-2)  # 2 rows: the int4 kernel
    dense = step_module.layer_weights(model, rows=3)
    assert any(w is layers[0].dense for w in dense)
    assert not any(w is layers[0].dense for w in step_module.layer_weights(model, rows=2))


def test_scaled_rope_with_an_attention_scale():
    yarn = RopeScaling("yarn", factor=4.0, original_max_position_embeddings=16)
    model = tiny(rope_scaling=yarn)
    assert model.rope.attention_scale != 1.0
    assert_step_equals_plain(model, torch.randint(0, 97, (1, 20)), atol=1e-5)


def test_left_padded_rows_with_their_own_positions():
    prompt = torch.randint(0, 97, (3, 6))
    lengths = torch.tensor([6, 2, 4])
    steps = 5
    slots = torch.arange(6 + steps)[None, :]
    key_padding = slots >= (6 - lengths)[:, None]  # (3, 11): False where a row is padding
    positions = (torch.arange(6)[None, :] - (6 - lengths)[:, None]).clamp(min=0)
    assert_step_equals_plain(
        tiny(), prompt, atol=1e-5, steps=steps, key_padding=key_padding, positions=positions
    )


def test_a_shrunk_cache_is_read_through_its_strides():
    model = tiny()
    prompt = torch.randint(0, 97, (3, 5))
    results = []
    for on in (True, False):
        model.set_decode_step(on)
        cache = model.new_cache(3, 9)
        with torch.inference_mode():
            model(prompt, cache=cache)
            cache.keep_rows(torch.tensor([0, 2]), first_slot=1)
            assert not cache.k.is_contiguous()
            token = prompt[[0, 2], -1:]
            results.append(model(token, positions=torch.full((2, 1), 5), cache=cache))
    torch.testing.assert_close(results[0], results[1], atol=1e-5, rtol=1e-5)


def test_steps_that_track_gradients_take_the_python_path(monkeypatch):
    model, calls = tiny(), []
    model.set_decode_step(True)
    op = torch.ops.llmhood.decode_step
    monkeypatch.setattr(torch.ops.llmhood, "decode_step", lambda *a: calls.append(1) or op(*a))
    prompt = torch.randint(0, 97, (1, 5))
    cache = model.new_cache(1, 8)
    model(prompt, cache=cache)  # gradients tracked: the step has no backward
    assert model(prompt[:, :1], cache=cache).requires_grad
    assert not calls
    with torch.inference_mode():
        model(prompt[:, :1], cache=cache)
    assert len(calls) == 1


def test_a_layer_replaced_after_the_switch_sends_steps_back_to_the_blocks():
    class Doubled(torch.nn.Linear):  # an adapter's shape: a Linear that computes otherwise
        def forward(self, x):
            return 2 * super().forward(x)

    model = tiny()
    model.set_decode_step(True)
    wo = model.layers[1].attention.wo
    doubled = Doubled(wo.in_features, wo.out_features, bias=False)
    doubled.weight = wo.weight
    model.layers[1].attention.wo = doubled
    assert "cannot run Doubled layers" in step_module.unsupported(model)
    prompt, steps = torch.randint(0, 97, (1, 5)), []
    for block in model.layers:  # count the Python blocks' passes
        block.attention.register_forward_hook(lambda *_: steps.append(1))
    cache = model.new_cache(1, 6)
    with torch.inference_mode():
        model(prompt, cache=cache)
        model(prompt[:, :1], cache=cache)
    assert len(steps) == 4  # prompt and step, two blocks each: the step went through them


def test_a_weight_replaced_after_the_switch_is_read_by_the_next_step():
    model = tiny()
    prompt = torch.randint(0, 97, (1, 5))
    before, _ = decode(model, prompt, steps=2, on=True)  # the step has read the layers once
    norm = model.layers[0].ffn_norm
    norm.weight = torch.nn.Parameter(norm.weight.detach() * 3)
    fast, _ = decode(model, prompt, steps=2, on=None)  # the same step, not a new one
    plain, _ = decode(model, prompt, steps=2, on=False)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fast[:, 1:], before[:, 1:])


def test_observed_blocks_take_the_python_path():
    model = tiny()
    model.set_decode_step(True)
    cache = model.new_cache(1, 8)
    with torch.inference_mode():
        model(torch.randint(0, 97, (1, 5)), cache=cache)
        with capture(model, attention_layers=[1]) as seen:
            model(torch.randint(0, 97, (1, 1)), cache=cache)
    assert len(seen.hidden) == 3 and seen.attention[1].shape == (1, 4, 1, 6)


def test_models_the_step_cannot_run_are_refused_with_the_reason():
    with pytest.raises(LLMHoodError, match="RoPE only"):
        tiny(position_encoding="cope", cope_npos=8).set_decode_step(True)
    unfused = Transformer(tiny().config)
    with pytest.raises(LLMHoodError, match="fuse=True"):
        unfused.set_decode_step(True)
    with pytest.raises(LLMHoodError, match="float16"):
        fuse(Transformer(tiny().config).to(torch.float16)).set_decode_step(True)


def test_a_missing_or_failing_compiler_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMHOOD_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")
    assert "no C++ compiler" in kernels.load(step_module.SOURCE)
    monkeypatch.setenv("CXX", "false")  # a compiler that always fails
    assert "failed" in kernels.load(step_module.SOURCE)
    assert not list(tmp_path.rglob("*.so"))  # nothing half-built is left to be loaded
    monkeypatch.setenv("CXX", "c++")
    monkeypatch.setenv("LLMHOOD_CACHE", str(tmp_path / "file"))
    (tmp_path / "file").write_text("a file where the cache directory should be")
    assert "could not be built in" in kernels.load(step_module.SOURCE)


@pytest.mark.real
def test_the_real_model_decodes_the_same_tokens(smollm2_gguf, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMHOOD_CACHE", str(tmp_path))
    llm = llmhood.load(smollm2_gguf, quantize="int4", progress=False)
    assert llm.model.decode_step is not None
    prompt = torch.tensor([llm.tokenizer.encode(llm.chat_prompt([
        {"role": "user", "content": "What is the capital of France?"}
    ]), add_bos=False)])  # fmt: skip
    fast, _ = decode(llm.model, prompt, steps=16, on=True)
    plain, _ = decode(llm.model, prompt, steps=16, on=False)
    assert torch.equal(fast.argmax(-1), plain.argmax(-1))
    scale = plain.abs().max()
    assert (fast - plain).abs().max() / scale < 0.05
