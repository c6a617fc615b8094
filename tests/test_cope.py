"""CoPE: the module against the paper's formulas written as a per-(i, j) loop, causality,
the KV cache and padding, the config switch, and a small training run where counting is
the whole task."""

from __future__ import annotations

import math

import pytest
import torch

from llmhood.errors import LLMHoodError
from llmhood.experiments import cope_counting
from llmhood.model import ModelConfig, Transformer
from llmhood.model.attention import causal_mask, explicit_attention
from llmhood.model.cope import CoPE


def naive_cope_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos_emb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One query head, one key/value head, float64, every sum written out.

    q, k, v: (seqlen, head_dim); pos_emb: (npos, head_dim). Returns the attention output
    (seqlen, head_dim) and the CoPE logits (seqlen, seqlen), zero above the diagonal.
    """
    q, k, v, pos_emb = (t.double() for t in (q, k, v, pos_emb))
    seqlen, head_dim = q.shape
    npos = pos_emb.shape[0]
    cope = torch.zeros(seqlen, seqlen, dtype=torch.float64)
    out = torch.zeros(seqlen, head_dim, dtype=torch.float64)
    for i in range(seqlen):
        logits = []
        for j in range(i + 1):
            p = sum(
                1 / (1 + math.exp(-float(q[i] @ k[t]) / math.sqrt(head_dim)))
                for t in range(j, i + 1)
            )
            p = min(p, npos - 1)
            lo, hi = math.floor(p), math.ceil(p)
            embedding = pos_emb[lo] + (p - lo) * (pos_emb[hi] - pos_emb[lo])
            cope[i, j] = q[i] @ embedding
            logits.append(float(q[i] @ k[j]) / math.sqrt(head_dim) + cope[i, j])
        weights = torch.softmax(torch.tensor(logits, dtype=torch.float64), dim=0)
        out[i] = weights @ v[: i + 1]
    return out, cope


@pytest.mark.parametrize("npos", [4, 64], ids=["clamped", "unclamped"])
def test_module_matches_the_formulas_written_as_loops(npos):
    """GQA (4 query heads on 2 KV heads); npos=4 makes the clamp at npos - 1 bite."""
    torch.manual_seed(0)
    bs, n_heads, n_kv_heads, seqlen, head_dim = 2, 4, 2, 9, 8
    q = torch.randn(bs, n_heads, seqlen, head_dim)
    k = torch.randn(bs, n_kv_heads, seqlen, head_dim)
    v = torch.randn(bs, n_kv_heads, seqlen, head_dim)
    cope = CoPE(npos, head_dim)
    with torch.no_grad():
        cope.pos_emb.normal_()
        out, _ = explicit_attention(q, k, v, causal_mask(seqlen, seqlen), cope)
    group = n_heads // n_kv_heads
    for b in range(bs):
        for h in range(n_heads):
            kv = h // group
            expected, _ = naive_cope_attention(q[b, h], k[b, kv], v[b, kv], cope.pos_emb.data)
            torch.testing.assert_close(out[b, h].double(), expected, atol=1e-5, rtol=1e-5)

    scores = (q[0, :1] @ k[0, :1].transpose(-2, -1)) / math.sqrt(head_dim)
    scores = scores.masked_fill(~causal_mask(seqlen, seqlen)[0], float("-inf"))
    with torch.no_grad():
        logits = cope(q[0, :1], scores)[0]
    _, expected = naive_cope_attention(q[0, 0], k[0, 0], v[0, 0], cope.pos_emb.data)
    lower = torch.ones(seqlen, seqlen, dtype=torch.bool).tril()
    torch.testing.assert_close(logits[lower].double(), expected[lower], atol=1e-5, rtol=1e-5)


def test_gates_that_fire_on_markers_count_markers():
    """Scores of +30 on marker keys and -30 elsewhere make σ a 0/1 switch: p_ij becomes the
    number of markers from j to i, the quantity RoPE cannot see."""
    is_marker = torch.tensor([0, 1, 0, 0, 1, 1, 0, 1, 0, 0], dtype=torch.bool)
    n = len(is_marker)
    scores = torch.where(is_marker, 30.0, -30.0).expand(n, n)
    scores = scores.masked_fill(~causal_mask(n, n)[0, 0], float("-inf"))
    p = CoPE(npos=16, head_dim=4).positions(scores)
    for i in range(n):
        for j in range(i + 1):
            assert p[i, j].item() == pytest.approx(int(is_marker[j : i + 1].sum()), abs=1e-6)
    assert torch.all(p.triu(1) == 0)  # the future counts nothing
    assert CoPE(npos=3, head_dim=4).positions(scores).max() == 2  # clamped at npos - 1


def tiny_cope(**changes) -> Transformer:
    config = dict(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, hidden_dim=96,
        max_seq_len=64, position_encoding="cope", cope_npos=8,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**(config | changes)))
    with torch.no_grad():
        for layer in model.layers:
            if layer.attention.cope is not None:
                layer.attention.cope.pos_emb.normal_()  # zero at init; make it matter here
    return model.eval()


def test_changing_a_future_token_leaves_earlier_outputs_alone():
    model = tiny_cope()
    tokens = torch.randint(0, 97, (1, 16), generator=torch.Generator().manual_seed(1))
    changed = tokens.clone()
    changed[0, 10] = (tokens[0, 10] + 1) % 97
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], atol=1e-6, rtol=0)
    assert (a[:, 10:] - b[:, 10:]).abs().amax(-1).min() > 1e-4


def test_kv_cache_decoding_equals_full_recompute():
    model = tiny_cope()
    tokens = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(batch_size=2, max_len=20)
        steps = [model(tokens[:, :7], cache=cache)]
        steps += [model(tokens[:, t : t + 1], cache=cache) for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_padding_counts_for_nothing_and_both_attention_settings_agree():
    """Padding keys are masked, so their gates are 0: a left-padded row gives the logits of
    the same tokens unpadded. The "sdpa" setting routes CoPE layers through the explicit path."""
    model = tiny_cope()
    tokens = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(3))
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), tokens], dim=1)
    key_padding = torch.cat([torch.zeros(1, 5), torch.ones(1, 12)], dim=1).bool()
    with torch.no_grad():
        alone = model(tokens)
        model.set_attention("explicit")
        explicit = model(padded, key_padding=key_padding)
        model.set_attention("sdpa")
        fast = model(padded, key_padding=key_padding)
    torch.testing.assert_close(explicit[:, 5:], alone, atol=1e-5, rtol=1e-5)
    assert torch.equal(fast, explicit)


def test_position_encoding_switch():
    rope, cope, none = (tiny_cope(position_encoding=e) for e in ("rope", "cope", "none"))
    assert all(layer.attention.cope is None for layer in (*rope.layers, *none.layers))
    assert cope.num_parameters() == rope.num_parameters() + 2 * 8 * 16  # layers·npos·head_dim
    assert torch.all(Transformer(cope.config).layers[0].attention.cope.pos_emb == 0)
    tokens = torch.randint(0, 97, (1, 10), generator=torch.Generator().manual_seed(4))
    shuffled = torch.cat([tokens[:, :8].flip(1), tokens[:, 8:]], dim=1)
    # One layer without position encoding sees the past as a set: reordering it changes
    # nothing at the last token. (Stacked layers can recover order from the causal mask.)
    none, rope = (tiny_cope(position_encoding=e, n_layers=1) for e in ("none", "rope"))
    with torch.no_grad():
        torch.testing.assert_close(none(tokens)[:, -1], none(shuffled)[:, -1])
        assert (rope(tokens)[:, -1] - rope(shuffled)[:, -1]).abs().max() > 1e-4
    assert ModelConfig.from_meta(cope.config.to_meta()) == cope.config.replace(
        rope_style="interleaved"
    )
    with pytest.raises(LLMHoodError, match="position_encoding"):
        ModelConfig(position_encoding="alibi")
    with pytest.raises(LLMHoodError, match="cope_npos"):
        ModelConfig(position_encoding="cope", cope_npos=0)


def test_cope_learns_to_find_the_kth_last_marker():
    """`llmhood experiment cope-counting` at its defaults: 1 layer, 300 steps, seed 0, trained on
    32 tokens, held out at 32 and 64 tokens, chance 0.125. Measured (torch 2.13, CPU):

        encoding   acc@32  acc@64
        cope        1.000   0.997
        rope        0.618   0.379
        none        0.353   0.358

    With `--layers 2 --steps 1500` the experiment measured cope 1.000 / 1.000, rope 0.677 /
    0.387, none 0.605 / 0.574: more training does not close the gap here. Asserted is only
    the robust part: CoPE learns the task, keeps it at twice the length, and beats RoPE.
    """
    cope = cope_counting.train_and_evaluate("cope")
    rope = cope_counting.train_and_evaluate("rope")
    print("\n" + cope_counting.table([cope, rope]))
    assert cope.accuracy >= 0.9
    assert cope.accuracy_long >= 0.8
    assert cope.accuracy > rope.accuracy
