"""SmolLM2-135M-Instruct, ours against transformers, on the same GGUF weights in float32.

How close two float32 implementations can be is set by float32 rounding, which depends on
the CPU: its kernels add the terms of each dot product in an order of their own (AVX-512
and AVX2 builds differ), so no fixed number of ulps holds on every machine. The logits are
therefore held to a bound derived from the rounding itself:

* A dot product of K terms rounds K times, by at most u = 2^-24 of its size each; errors of
  independent signs grow like √K, and through the model's n_layers blocks like √n_layers.
  So float32 logits carry an error of about u·√(n_layers·hidden_dim)·max|logit|: 215 u of
  the largest logit for SmolLM2 (30 layers, FFN width 1536), 5e-4 for logits of ~40.
* Ours and transformers' are each measured against transformers in float64 (the exact
  answer, as far as float32 rounding goes). Both must lie within that bound, and ours
  within twice transformers' own error: as accurate as the reference, whatever the CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.real

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "床前明月光，疑是地上霜。举头望明月，",
    "1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597",
    "Once upon a time, in a small village at the edge of a great forest, there lived an old "
    "clockmaker who had never once left the valley. Every morning he opened his shop, wound "
    "the hundred clocks on its walls, and waited for customers who rarely came. One winter "
    "night, a stranger knocked on his door carrying a broken pocket watch that ticked",
    "Emoji test 🎉🎉 and  multiple   spaces\n\n\tplus tabs",
]


@pytest.fixture(scope="module")
def encoded(smollm2) -> list[torch.Tensor]:
    return [torch.tensor([smollm2.tokenizer.encode(p)]) for p in PROMPTS]


def float32_bound(config, logits: torch.Tensor) -> float:
    """The float32 rounding error expected in a model's logits (the module docstring)."""
    u = torch.finfo(torch.float32).eps / 2
    return u * math.sqrt(config.n_layers * config.hidden_dim) * logits.abs().max().item()


@pytest.mark.parametrize("index", range(len(PROMPTS)))
def test_logits_equal_transformers(smollm2, hf_smollm2, hf_smollm2_float64, encoded, index):
    ids = encoded[index]
    with torch.inference_mode():
        ours = smollm2.model(ids)
        ref = hf_smollm2(ids).logits
        exact = hf_smollm2_float64(ids).logits
    assert ours.shape == ref.shape == (1, ids.shape[1], 49152)
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))
    bound = float32_bound(smollm2.config, exact)
    ours_error = (ours.double() - exact).abs().max().item()
    ref_error = (ref.double() - exact).abs().max().item()
    assert ref_error <= bound  # the reference is what float32 rounding predicts
    assert ours_error <= bound and ours_error <= 2 * ref_error, (ours_error, ref_error, bound)


def test_explicit_attention_path_on_the_real_model(smollm2, encoded):
    ids = encoded[5]
    with torch.inference_mode():
        fast = smollm2.model(ids)
        smollm2.model.set_attention("explicit")
        try:
            slow = smollm2.model(ids)
        finally:
            smollm2.model.set_attention("sdpa")
    assert (fast - slow).abs().max().item() <= float32_bound(smollm2.config, slow)


@pytest.mark.parametrize("index", [0, 2, 5])
def test_greedy_64_tokens_equal_transformers(smollm2, hf_smollm2, encoded, index):
    ids = encoded[index]
    ours = smollm2.generate(PROMPTS[index], max_new_tokens=64, temperature=0.0)[0]
    with torch.inference_mode():
        ref = hf_smollm2.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=64,
            do_sample=False,
            eos_token_id=sorted(smollm2.stop_token_ids),
            pad_token_id=smollm2.tokenizer.pad_id,
        )[0, ids.shape[1] :].tolist()
    ref = [t for t in ref if t not in smollm2.stop_token_ids]
    assert len(ours.token_ids) == 64 or ours.finish_reason == "eos"
    assert ours.token_ids == ref


def test_kv_cache_decoding_equals_recompute_on_the_real_model(smollm2, encoded):
    ids = encoded[2]
    model = smollm2.model
    with torch.inference_mode():
        full = model(ids)
        cache = model.new_cache(1, ids.shape[1])
        steps = [model(ids[:, :5], cache=cache)]
        steps += [model(ids[:, t : t + 1], cache=cache) for t in range(5, ids.shape[1])]
    assert (torch.cat(steps, 1) - full).abs().max().item() <= float32_bound(model.config, full)


def test_chat_answers_paris(smollm2):
    reply = smollm2.chat(
        [{"role": "user", "content": "What is the capital of France?"}], max_new_tokens=48
    )
    assert "Paris" in reply
