"""The long-context experiment's measurement, on a tiny model with the real tokenizer."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmhood import cli
from llmhood.errors import LLMHoodError
from llmhood.experiments import long_context
from llmhood.llm import LLM
from llmhood.model import ModelConfig, Transformer


@pytest.fixture(scope="module")
def tiny_llm(smollm2_gguf) -> LLM:
    """A 2-layer random model that speaks SmolLM2's tokenizer, trained context 64."""
    from llmhood.tokenizer import BPETokenizer
    from llmhood.weights.gguf import read_gguf

    torch.manual_seed(0)
    config = ModelConfig(
        dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=49152, hidden_dim=64,
        max_seq_len=64, tie_embeddings=False,
    )  # fmt: skip
    tokenizer = BPETokenizer.from_gguf(read_gguf(smollm2_gguf).metadata)
    return LLM(Transformer(config).eval(), tokenizer, "tiny")


def test_chunked_reading_equals_one_full_forward(tiny_llm):
    tokens = torch.tensor(tiny_llm.tokenizer.encode(long_context.document_text()[:2000])[:150])
    chunked = long_context.nll_by_position(tiny_llm.model, tokens, chunk=32, progress=False)
    with torch.inference_mode():
        logits = tiny_llm.model(tokens[None, :-1])[0]
    expected = F.cross_entropy(logits, tokens[1:], reduction="none")
    assert chunked.shape == (149,)
    torch.testing.assert_close(chunked, expected, atol=1e-4, rtol=1e-4)


def test_run_measures_each_scheme_and_restores_the_model(tiny_llm):
    before = tiny_llm.model.config
    result = long_context.run(tiny_llm, length=160, chunk=48, bucket=40, progress=False)
    assert tiny_llm.model.config == before and tiny_llm.model.config.rope_scaling is None
    assert result.factor == 160 / 64
    assert [r["scheme"] for r in result.rows[::4]] == list(long_context.SCHEMES)
    for row in result.rows:
        assert row["perplexity"] == pytest.approx(math.exp(row["mean_nll"]))
    # The schemes change the model: the curves are not all the same.
    assert len({round(r["mean_nll"], 6) for r in result.rows if r["start"] == 121}) == 4
    # The span perplexity is the token-weighted mean NLL of its buckets.
    rows = [r for r in result.rows if r["scheme"] == "yarn"]
    nll = sum(r["mean_nll"] * r["tokens"] for r in rows) / sum(r["tokens"] for r in rows)
    assert result.perplexity("yarn", 0, 161) == pytest.approx(math.exp(nll))
    assert "linear" in long_context.summary(result)


def test_plain_rope_is_unchanged_by_the_experiment_machinery(tiny_llm):
    tokens = torch.tensor(tiny_llm.tokenizer.encode("def f(x):\n    return x + 1\n" * 4))
    with torch.inference_mode():
        direct = tiny_llm.model(tokens[None, :-1])[0]
    nll = long_context.nll_by_position(tiny_llm.model, tokens, chunk=7, progress=False)
    torch.testing.assert_close(nll, F.cross_entropy(direct, tokens[1:], reduction="none"))


def test_bad_requests_are_reported(tiny_llm, monkeypatch):
    with pytest.raises(LLMHoodError, match="fewer than"):
        long_context.run(tiny_llm, length=10_000_000, progress=False)
    with pytest.raises(LLMHoodError, match="Unknown scheme"):
        long_context.run(tiny_llm, length=100, schemes=["rope-ish"], progress=False)
    # A bad name after good ones is refused before any of them has been read.
    monkeypatch.setattr(long_context, "nll_by_position", lambda *a, **k: pytest.fail("ran"))
    with pytest.raises(LLMHoodError, match="Unknown scheme"):
        long_context.run(tiny_llm, length=100, schemes=["none", "rope-ish"], progress=False)


def test_cli_prints_the_table_and_the_picture(tiny_llm, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli.common, "load_for", lambda args: tiny_llm)
    out = tmp_path / "lc.png"
    argv = ["experiment", "long-context", "--length", "130", "--chunk", "64", "--bucket", "32"]
    code = cli.main([*argv, "--out", str(out), "--csv", str(tmp_path / "lc.csv")])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file() and str(out) in printed
    assert "ntk" in printed and (tmp_path / "lc.csv").read_text().startswith("scheme,")
