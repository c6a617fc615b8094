"""Perplexity and the quality guard, against cross-entropy of one full forward pass."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmhood.model import ModelConfig, Transformer
from llmhood.perplexity import (
    LOSSY_MARGIN,
    Perplexity,
    Verdict,
    document_text,
    guard_tokens,
    perplexity,
    token_nll,
)
from llmhood.tokenizer import BPETokenizer
from llmhood.weights.gguf import read_gguf


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=101, hidden_dim=64)
    return Transformer(config).eval()


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_token_nll_equals_cross_entropy_of_one_forward(model, chunk):
    tokens = torch.randint(0, 101, (40,), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = F.cross_entropy(model(tokens[None, :-1])[0], tokens[1:], reduction="none")
    got = token_nll(model, tokens, chunk=chunk)
    assert got.shape == (39,)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_perplexity_is_exp_of_the_mean_nll(model):
    tokens = torch.randint(0, 101, (30,), generator=torch.Generator().manual_seed(2))
    nll = token_nll(model, tokens)
    result = perplexity(model, tokens)
    assert result.tokens == 29
    assert result.value == pytest.approx(math.exp(nll.double().mean().item()))
    assert Perplexity.of(torch.tensor([0.0, 0.0])).value == 1.0


def test_a_deliberately_bad_mode_is_labelled_lossy(model):
    """Noise on every weight stands in for a broken speed mode."""
    tokens = torch.randint(0, 101, (64,), generator=torch.Generator().manual_seed(3))
    reference = perplexity(model, tokens).value
    noisy = Transformer(model.config).eval()
    noisy.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(torch.randn_like(p) * p.std() * 3)
    bad = Verdict("noisy", perplexity(noisy, tokens).value, reference)
    good = Verdict("same", perplexity(model, tokens).value, reference)
    assert bad.lossy and "lossy" in bad.label()
    assert not good.lossy and good.label().endswith("(+0.00%)")


def test_the_margin_is_two_percent():
    assert LOSSY_MARGIN == 0.02
    assert not Verdict("m", 10.19, 10.0).lossy
    assert Verdict("m", 10.21, 10.0).lossy
    assert Verdict("m", float("nan"), 10.0).lossy


def test_guard_text_is_fixed_and_long(smollm2_gguf):
    text = document_text()
    assert text == document_text() and len(text) > 100_000
    tokenizer = BPETokenizer.from_gguf(read_gguf(smollm2_gguf).metadata)
    tokens = guard_tokens(tokenizer, 300)
    assert tokens.shape == (300,) and tokens.tolist() == tokenizer.encode(text)[:300]
