"""The plots' numbers against independent references, and the `llmhood plot` command.

Hidden states and attention weights are checked against transformers' LlamaForCausalLM
(eager attention) reading a tiny random model we export; parameter counts against the
closed-form shapes; RoPE against cos/sin computed in float64; KV-cache sizes against the
formula. Two cheap checks run on the real SmolLM2 model.
"""

from __future__ import annotations

import csv
import io
import math
import re

import numpy as np
import pytest
import torch
from fake_tokenizer import FakeByteTokenizer
from matplotlib.figure import Figure
from test_hf_checkpoint import tiny_model
from transformers import LlamaForCausalLM

from llmhood import cli
from llmhood.errors import LLMHoodError
from llmhood.llm import LLM
from llmhood.model import ModelConfig
from llmhood.model.capture import capture
from llmhood.model.rope_scaling import RopeScaling
from llmhood.plot import (
    Table,
    attention_weights,
    kv_cache_bytes,
    logit_lens,
    parameter_rows,
    plot_attention,
    plot_kv_cache,
    plot_logit_lens,
    plot_params,
    plot_residual_norms,
    plot_rope,
    synthetic_untied,
    top_keys,
)
from llmhood.plot.figure import token_label
from llmhood.plot.params import totals
from llmhood.plot.rope import trained_context
from llmhood.weights.hf import write_hf

TEXT = "a cab, a bad cab"  # 16 one-byte tokens with the fake tokenizer
SMOLLM2 = ModelConfig()  # the defaults are SmolLM2-135M's shape
PROMPT = "The boy didn't cross the street because he was too "


class ByteTokenizer(FakeByteTokenizer):
    add_bos = False


@pytest.fixture(scope="module")
def tiny() -> LLM:
    return LLM(tiny_model("interleaved"), ByteTokenizer(), "tiny")


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """transformers' Llama on the same weights, with hidden states and attention weights."""
    folder = tmp_path_factory.mktemp("hf")
    write_hf(folder, tiny.model, None)
    model = LlamaForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ids = torch.tensor([tiny.tokenizer.encode(TEXT)])
    with torch.no_grad():
        return model(ids, output_hidden_states=True, output_attentions=True)


# ---- capture --------------------------------------------------------------------------------


def test_capture_equals_transformers_and_leaves_the_model_as_it_was(tiny, reference):
    model = tiny.model
    with capture(model, attention_layers=[1]) as seen, torch.no_grad():
        logits = model(torch.tensor([tiny.tokenizer.encode(TEXT)]))
    n = model.config.n_layers
    assert len(seen.hidden) == n + 1
    for i in range(n):  # transformers' last hidden state has the final norm applied
        torch.testing.assert_close(seen.hidden[i], reference.hidden_states[i], atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(
            model.norm(seen.hidden[n]), reference.hidden_states[n], atol=1e-5, rtol=0
        )
    torch.testing.assert_close(logits, reference.logits, atol=1e-5, rtol=0)
    assert list(seen.attention) == [1]
    torch.testing.assert_close(seen.attention[1], reference.attentions[1], atol=1e-6, rtol=0)
    for block in model.layers:
        assert not block._forward_hooks and not block.attention._forward_hooks
        assert block.attention.capture_weights is False and block.attention.last_weights is None
    assert not model.tok_embeddings._forward_hooks


def test_capture_rejects_a_layer_that_does_not_exist(tiny):
    with pytest.raises(LLMHoodError, match="has 2 layers"), capture(tiny.model, [2]):
        pass


# ---- attention ------------------------------------------------------------------------------


def test_attention_weights_equal_transformers(tiny, reference):
    tokens, weights = attention_weights(tiny, TEXT, 0)
    assert "".join(tokens) == TEXT
    torch.testing.assert_close(weights, reference.attentions[0][0], atol=1e-6, rtol=0)


def test_attention_table_rows_sum_to_one_and_are_zero_in_the_future(tiny, reference):
    figure, table = plot_attention(tiny, TEXT, layer=1)
    n, heads = len(TEXT), tiny.config.n_heads
    assert isinstance(figure, Figure) and len(table) == heads * n * n
    expected = reference.attentions[1][0]
    for h in range(heads):
        for q in range(n):
            row = table.where(head=h, query_position=q)
            assert sum(r["weight"] for r in row) == pytest.approx(1.0, abs=1e-5)
            for r in row:
                assert r["masked"] == (r["key_position"] > q)
                if r["masked"]:
                    assert r["weight"] == 0.0
                else:
                    assert r["weight"] == pytest.approx(
                        expected[h, q, r["key_position"]].item(), abs=1e-6
                    )
    images = [ax.images[0] for ax in figure.axes if ax.images]
    assert len(images) == heads
    # The masked triangle is drawn as "bad" (NaN) cells and hatched, not as weight 0.
    drawn = np.asarray(images[0].get_array().filled(np.nan))
    assert np.isnan(drawn[np.triu_indices(n, 1)]).all() and not np.isnan(np.tril(drawn)).any()
    assert sum(1 for p in images[0].axes.patches if p.get_hatch()) == n - 1


def test_one_head_and_the_keys_a_token_attends_to_most(tiny):
    figure, table = plot_attention(tiny, TEXT, layer=0, head=3)
    assert {r["head"] for r in table.rows} == {3} and len(figure.axes) == 2  # map and colorbar
    found = top_keys(table, "b", k=2)
    positions = [i for i, ch in enumerate(TEXT) if ch == "b"]
    assert [f["query_position"] for f in found] == positions
    for f in found:
        row = sorted(table.where(query_position=f["query_position"]), key=lambda r: -r["weight"])
        assert [w for _, _, w in f["keys"]] == [r["weight"] for r in row[:2]]
    with pytest.raises(LLMHoodError, match="No token of the text reads 'zzz'"):
        top_keys(table, "zzz")


@pytest.mark.parametrize(("layer", "head", "message"), [(2, None, "Layer 2"), (0, 4, "Head 4")])
def test_attention_rejects_missing_layers_and_heads(tiny, layer, head, message):
    with pytest.raises(LLMHoodError, match=message):
        plot_attention(tiny, TEXT, layer, head)


def test_texts_too_short_or_too_long_are_refused(tiny):
    with pytest.raises(LLMHoodError, match="empty"):
        plot_logit_lens(tiny, "")
    with pytest.raises(LLMHoodError, match="65 tokens"):
        plot_attention(tiny, "x" * 65, 0)


# ---- parameters -----------------------------------------------------------------------------


def closed_form(c: ModelConfig) -> dict[str, int]:
    per_layers = {
        "attention q": c.dim * c.n_heads * c.head_dim,
        "attention k": c.dim * c.n_kv_heads * c.head_dim,
        "attention v": c.dim * c.n_kv_heads * c.head_dim,
        "attention o": c.n_heads * c.head_dim * c.dim,
        "ffn gate": c.dim * c.hidden_dim,
        "ffn up": c.dim * c.hidden_dim,
        "ffn down": c.hidden_dim * c.dim,
    }
    out = {"embedding": c.vocab_size * c.dim, **{k: c.n_layers * n for k, n in per_layers.items()}}
    out["norms"] = (2 * c.n_layers + 1) * c.dim
    if not c.tie_embeddings:
        out["output head"] = c.vocab_size * c.dim
    return out


def test_parameter_counts_equal_the_shapes_and_a_tied_head_counts_once(tiny):
    figure, table = plot_params(tiny.model, "tiny")
    assert sum(table.column("parameters")) == tiny.model.num_parameters()
    assert totals(table.rows, "kind") == closed_form(tiny.config)
    [embedding] = table.where(kind="embedding")
    assert embedding["tied"] and embedding["shape"] == "300×64"
    texts = [t.get_text() for ax in figure.axes for t in ax.texts]
    assert any("tied" in t for t in texts)
    assert all(totals(table.rows, "layer")[i] == totals(table.rows, "layer")[0] for i in (0, 1))
    assert len([ax for ax in figure.axes if ax.get_yscale() == "log"]) == 9  # the histograms


def test_untied_model_has_two_equal_largest_matrices():
    model = tiny_model("interleaved", tie=False)
    rows = parameter_rows(model)
    assert sum(r["parameters"] for r in rows) == model.num_parameters()
    assert totals(rows, "kind") == closed_form(model.config)


def test_synthetic_untied_smollm2_embedding_and_head_are_the_two_largest():
    model = synthetic_untied(SMOLLM2)
    figure, table = plot_params(model, "synthetic")
    by_kind = totals(table.rows, "kind")
    assert by_kind == closed_form(SMOLLM2.replace(tie_embeddings=False))
    largest = sorted(by_kind, key=by_kind.get)[-2:]
    assert set(largest) == {"embedding", "output head"}
    assert by_kind["embedding"] == by_kind["output head"] == 49152 * 576
    assert sum(by_kind.values()) == 134_515_008 + 49152 * 576
    assert "untied" in figure.get_suptitle() and len(figure.axes) == 2  # no values, no histograms
    assert table.rows[0]["rms"] is None


@pytest.mark.real
def test_real_model_parameter_table(smollm2):
    rows = parameter_rows(smollm2.model)
    assert sum(r["parameters"] for r in rows) == smollm2.model.num_parameters() == 134_515_008
    assert totals(rows, "kind") == closed_form(smollm2.config)


# ---- RoPE -----------------------------------------------------------------------------------


def test_rope_table_equals_closed_form_cos_and_sin():
    figure, table = plot_rope(SMOLLM2, position=100)
    d, theta = SMOLLM2.head_dim, SMOLLM2.rope_theta
    assert len(table) == d // 2
    for row in table.rows:
        angle = 100 * theta ** (-2 * row["pair"] / d)
        assert row["cos"] == pytest.approx(math.cos(angle), abs=2e-5)
        assert row["sin"] == pytest.approx(math.sin(angle), abs=2e-5)
        assert row["inv_freq_plain"] == pytest.approx(theta ** (-2 * row["pair"] / d), rel=1e-6)
        assert row["inv_freq_linear"] == pytest.approx(row["inv_freq_plain"] / 4, rel=1e-6)
    heatmap = np.asarray(figure.axes[1].images[0].get_array())
    m, i = np.meshgrid(np.arange(heatmap.shape[0]), np.arange(d // 2), indexing="ij")
    np.testing.assert_allclose(heatmap, np.cos(m * theta ** (-2 * i / d)), atol=1e-4)
    assert heatmap.shape == (129, d // 2)


def test_rope_scaling_panel_draws_the_schemes_it_is_given():
    schemes = {"plain": torch.ones(32), "halved": torch.full((32,), 0.5)}
    figure, table = plot_rope(SMOLLM2, position=3, schemes=schemes)
    assert table.rows[0]["inv_freq_halved"] == 0.5
    labels = [line.get_label() for line in figure.axes[2].get_lines()]  # 3rd panel
    assert labels[:2] == ["plain", "halved"]
    with pytest.raises(LLMHoodError, match="Positions start at 0"):
        plot_rope(SMOLLM2, position=-1)


def test_rope_of_a_scaled_model_starts_from_its_trained_context():
    scaled = SMOLLM2.replace(max_seq_len=32768, rope_scaling=RopeScaling("llama3", 4.0, 8192))
    assert trained_context(scaled) == 8192 and trained_context(SMOLLM2) == 8192
    _, table = plot_rope(scaled, position=5)
    assert table.column("inv_freq") == table.column("inv_freq_llama3")  # what the model runs
    assert table.column("inv_freq") != table.column("inv_freq_plain")


# ---- logit lens and residual stream ---------------------------------------------------------


def test_logit_lens_top_layer_is_the_models_own_prediction(tiny):
    figure, table = plot_logit_lens(tiny, TEXT)
    n, layers = len(TEXT), tiny.config.n_layers + 1
    assert len(table) == n * layers
    with torch.no_grad():
        probs = tiny.model(torch.tensor([tiny.tokenizer.encode(TEXT)]))[0].softmax(-1)
    top = table.where(layer=layers - 1)
    assert [r["top_id"] for r in top] == probs.argmax(-1).tolist()
    assert [r["probability"] for r in top] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-6)
    assert [r["top_token"] for r in top] == [tiny.tokenizer.decode([r["top_id"]]) for r in top]
    assert figure.axes[0].images[0].get_array().shape == (layers, n)


def test_residual_norms_equal_transformers_hidden_states(tiny, reference):
    figure, table = plot_residual_norms(tiny, TEXT)
    for layer in range(tiny.config.n_layers):  # transformers' last state is normed
        norms = reference.hidden_states[layer][0].norm(dim=-1)
        rows = table.where(layer=layer)
        assert [r["norm"] for r in rows] == pytest.approx(norms.tolist(), rel=1e-5)
        assert rows[0]["layer_mean"] == pytest.approx(norms.mean().item(), rel=1e-5)
    assert len(figure.axes[0].get_lines()) == len(TEXT) + 1  # one per token, and the mean


@pytest.mark.real
def test_real_model_logit_lens_and_the_head_that_finds_the_boy(smollm2):
    text = "The capital of France is"  # short: the lens runs the output head 31 times
    rows = logit_lens(smollm2, text)
    with torch.no_grad():
        logits = smollm2.model(torch.tensor([smollm2.tokenizer.encode(text)]))[0]
    top = [r["top_id"] for r in rows if r["layer"] == smollm2.config.n_layers]
    assert top == logits.argmax(-1).tolist()
    # docs/inside.md describes this head: "he" sends most of its attention to "boy".
    tokens, weights = attention_weights(smollm2, PROMPT, 13)
    he, boy = tokens.index(" he"), tokens.index(" boy")
    assert weights[8, he].argmax().item() == boy and weights[8, he, boy] > 0.5


# ---- KV cache -------------------------------------------------------------------------------


def test_kv_cache_bytes_follow_the_formula():
    assert kv_cache_bytes(SMOLLM2, 8192, 3, 4) == 2 * 30 * 3 * 64 * 4 * 8192 == 377_487_360
    _, table = plot_kv_cache(SMOLLM2, bytes_per_element=2, weight_bytes=10)
    assert sorted({r["n_kv_heads"] for r in table.rows}) == [1, 3, 9]
    for r in table.rows:
        assert r["bytes"] == 2 * 30 * r["n_kv_heads"] * 64 * 2 * r["context"]
        assert r["this_model"] == (r["n_kv_heads"] == 3)
        assert r["attention"] == {9: "MHA", 3: "GQA", 1: "MQA"}[r["n_kv_heads"]]
    assert max(table.column("context")) == 8192


def test_kv_cache_of_an_mha_model_still_shows_a_gqa_line():
    _, table = plot_kv_cache(SMOLLM2.replace(dim=512, n_heads=8, n_kv_heads=8), 2, 100)
    assert sorted({(r["attention"], r["n_kv_heads"]) for r in table.rows}) == [
        ("GQA", 2), ("MHA", 8), ("MQA", 1),
    ]  # fmt: skip


# ---- tables and files -----------------------------------------------------------------------


def test_token_labels_show_what_is_invisible():
    assert token_label(" he\n\t\x13é") == "␣he↵→\\x13é"


def test_table_csv_round_trip(tmp_path):
    table = Table([{"token": " he", "weight": 0.25}, {"token": 'say "hi"', "weight": 1.0}])
    text = table.to_csv(tmp_path / "deep" / "t.csv")
    assert (tmp_path / "deep" / "t.csv").read_text(encoding="utf-8") == text
    assert list(csv.DictReader(io.StringIO(text))) == [
        {"token": " he", "weight": "0.25"}, {"token": 'say "hi"', "weight": "1.0"},
    ]  # fmt: skip


# ---- the command ----------------------------------------------------------------------------


@pytest.fixture
def run(tiny, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(cli.common, "load_for", lambda args: tiny)
    monkeypatch.chdir(tmp_path)

    def invoke(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_cli_writes_png_svg_and_csv(run, tmp_path):
    code, out, _ = run("plot", "residual", TEXT)
    assert code == 0 and out == "plots/residual.png\n"
    assert (tmp_path / "plots" / "residual.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code, out, _ = run("plot", "kv-cache", "--format", "svg", "--out", "plots", "--csv", "kv.csv")
    assert code == 0 and out == "plots/kv-cache.svg\n"
    assert b"<svg" in (tmp_path / "plots" / "kv-cache.svg").read_bytes()[:500]
    assert (tmp_path / "kv.csv").read_text().startswith("attention,n_kv_heads,context,bytes")

    for argv, path in [
        (["params", "--out", "p.svg"], "p.svg"),
        (["params", "--out", "new/"], "new/params.png"),
        (["params", "--synthetic-untied", "--out", "untied"], "untied.png"),
        (["rope", "--position", "7"], "plots/rope.png"),
        (["logit-lens", TEXT], "plots/logit-lens.png"),
    ]:
        code, out, _ = run("plot", *argv)
        assert code == 0 and out == f"{path}\n" and (tmp_path / path).stat().st_size > 1000


def test_cli_attention_prints_where_a_token_looks(run, tmp_path, tiny):
    code, out, _ = run("plot", "attention", TEXT, "--layer", "1", "--row", "b", "--csv", "a.csv")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "plots/attention-layer1.png"
    _, weights = attention_weights(tiny, TEXT, 1)
    for head in range(tiny.config.n_heads):
        line = next(x for x in lines if x.startswith(f"  b (position 4) head {head}: "))
        printed = [float(w) for w in re.findall(r" (\d\.\d\d)(?=,|$)", line)]
        assert printed == pytest.approx(weights[head, 4].topk(3).values.tolist(), abs=0.006)
    rows = list(csv.DictReader((tmp_path / "a.csv").open()))
    assert len(rows) == tiny.config.n_heads * len(TEXT) ** 2


@pytest.mark.parametrize(
    "kind", ["params", "rope", "attention", "logit-lens", "residual", "kv-cache"]
)
def test_every_plot_kind_has_help(kind, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["plot", kind, "--help"])
    assert exit.value.code == 0 and "--model" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["attention", TEXT, "--layer", "9"], "Layer 9 does not exist"),
        (["attention", TEXT, "--layer", "0", "--row", "zzz"], "No token of the text reads"),
        (["params", "--out", "x.png", "--format", "svg"], "--format asks for svg"),
        (["params", "--out", "x.jpg"], "must end in .png or .svg"),
        (["rope", "--position", "-3"], "Positions start at 0"),
    ],
)
def test_cli_bad_input_is_one_clear_error_and_writes_nothing(run, tmp_path, argv, message):
    code, out, err = run("plot", *argv)
    assert code == 1 and out == "" and message in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("*.svg"))
