"""The model's parts against closed-form math and transformers' Llama modules."""

import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama import modeling_llama as hf

from llmhood.errors import LLMHoodError
from llmhood.model import ModelConfig, Transformer
from llmhood.model.attention import causal_mask, explicit_attention
from llmhood.model.norm import RMSNorm
from llmhood.model.rope import (
    RoPE,
    half_to_interleaved,
    interleaved_to_half,
    inverse_frequencies,
)
from llmhood.model.swiglu import SwiGLU


def tiny(**changes) -> ModelConfig:
    base = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, hidden_dim=96)
    base.update(changes)
    return ModelConfig(**base, max_seq_len=64)


def hf_config(c: ModelConfig) -> LlamaConfig:
    return LlamaConfig(**{k: v for k, v in c.to_hf().items() if k != "architectures"})


def test_rmsnorm_matches_formula_and_transformers():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 64)
    norm = RMSNorm(64, eps=1e-5)
    norm.weight.data.uniform_(0.5, 1.5)
    x64 = x.double()
    expected = x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight.double()
    torch.testing.assert_close(norm(x).double(), expected, atol=1e-6, rtol=1e-6)
    ref = hf.LlamaRMSNorm(64, eps=1e-5)
    ref.weight.data.copy_(norm.weight.data)
    assert torch.equal(norm(x), ref(x))


def test_swiglu_matches_transformers_mlp():
    torch.manual_seed(0)
    c = tiny()
    ffn = SwiGLU(c.dim, c.hidden_dim)
    ref = hf.LlamaMLP(hf_config(c))
    ref.gate_proj.weight.data.copy_(ffn.w1.weight.data)
    ref.up_proj.weight.data.copy_(ffn.w3.weight.data)
    ref.down_proj.weight.data.copy_(ffn.w2.weight.data)
    x = torch.randn(2, 7, c.dim)
    torch.testing.assert_close(ffn(x), ref(x), atol=1e-6, rtol=1e-6)


def test_inverse_frequencies_closed_form():
    inv = inverse_frequencies(64, 100000.0)
    expected = [100000.0 ** (-2 * i / 64) for i in range(32)]
    torch.testing.assert_close(inv.double(), torch.tensor(expected, dtype=torch.float64))
    assert inv[0] == 1.0 and torch.all(inv[1:] < inv[:-1])  # pair 0 turns fastest


def rotation_by_matrices(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Closed form: every interleaved pair times its own 2×2 rotation matrix, in float64."""
    x = x.double()
    out = torch.empty_like(x)
    head_dim = x.shape[-1]
    for i in range(head_dim // 2):
        for t, m in enumerate(positions.tolist()):
            angle = m * theta ** (-2 * i / head_dim)
            rot = torch.tensor(
                [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                dtype=torch.float64,
            )
            out[:, t, :, 2 * i : 2 * i + 2] = x[:, t, :, 2 * i : 2 * i + 2] @ rot.T
    return out


def test_complex_form_is_a_rotation_of_interleaved_pairs():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 2, 8)
    positions = torch.tensor([0, 1, 2, 7, 100, 4000])
    rope = RoPE(8, 10000.0, "interleaved")
    got = rope.rotate(x, rope.table(positions[None]))
    expected = rotation_by_matrices(x, positions, 10000.0)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-5)


def test_real_form_matches_transformers():
    torch.manual_seed(0)
    c = tiny(rope_style="half", rope_theta=100000.0)
    positions = torch.arange(20)[None]
    q = torch.randn(1, 20, c.n_heads, c.head_dim)
    k = torch.randn(1, 20, c.n_kv_heads, c.head_dim)
    rope = RoPE(c.head_dim, c.rope_theta, "half")
    table = rope.table(positions)
    cos, sin = hf.LlamaRotaryEmbedding(hf_config(c))(q, positions)
    ref_q, ref_k = hf.apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=2)
    torch.testing.assert_close(rope.rotate(q, table), ref_q, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(rope.rotate(k, table), ref_k, atol=1e-6, rtol=1e-6)


def test_both_forms_give_equal_scores_once_weights_are_permuted():
    """The same model in Meta/GGUF layout (complex form) and HF layout (real form)."""
    torch.manual_seed(0)
    n_heads, head_dim, dim, seqlen = 3, 16, 24, 11
    wq = torch.randn(n_heads * head_dim, dim)
    wk = torch.randn(n_heads * head_dim, dim)
    x = torch.randn(1, seqlen, dim)
    positions = torch.arange(seqlen)[None]

    def scores(style: str, wq: torch.Tensor, wk: torch.Tensor) -> torch.Tensor:
        rope = RoPE(head_dim, 10000.0, style)
        table = rope.table(positions)
        q = rope.rotate((x @ wq.T).view(1, seqlen, n_heads, head_dim), table).transpose(1, 2)
        k = rope.rotate((x @ wk.T).view(1, seqlen, n_heads, head_dim), table).transpose(1, 2)
        return q @ k.transpose(-2, -1)

    interleaved = scores("interleaved", wq, wk)
    half = scores("half", interleaved_to_half(wq, n_heads), interleaved_to_half(wk, n_heads))
    torch.testing.assert_close(interleaved, half, atol=1e-4, rtol=1e-5)
    assert not torch.allclose(interleaved, scores("half", wq, wk), atol=1e-2)  # layout matters
    assert torch.equal(half_to_interleaved(interleaved_to_half(wq, n_heads), n_heads), wq)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)
    for style in ("interleaved", "half"):
        rope = RoPE(32, 10000.0, style)

        def score(m: int, n: int, rope: RoPE = rope) -> float:
            qm = rope.rotate(q, rope.table(torch.tensor([[m]])))
            kn = rope.rotate(k, rope.table(torch.tensor([[n]])))
            return float((qm * kn).sum())

        assert score(5, 2) == pytest.approx(score(105, 102), abs=1e-4)
        assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)


def test_causal_mask_shape_and_content():
    mask = causal_mask(3, 5)
    assert mask.shape == (1, 1, 3, 5)
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask[0, 0], expected)
    padded = causal_mask(3, 3, torch.tensor([[False, True, True]]))
    assert torch.equal(
        padded[0, 0], torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 1]], dtype=torch.bool)
    )
    # Built where the padding lives (a GPU in use; the meta device here), not on the CPU.
    assert causal_mask(3, 3, torch.ones(1, 3, dtype=torch.bool, device="meta")).is_meta


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1], ids=["MHA", "GQA", "MQA"])
def test_explicit_and_sdpa_attention_agree(n_kv_heads):
    torch.manual_seed(0)
    model = Transformer(tiny(n_kv_heads=n_kv_heads))
    tokens = torch.randint(0, 97, (2, 12))
    padding = torch.ones(2, 12, dtype=torch.bool)
    padding[1, :4] = False
    for key_padding in (None, padding):
        model.set_attention("sdpa")
        fast = model(tokens, key_padding=key_padding)
        model.set_attention("explicit")
        slow = model(tokens, key_padding=key_padding)
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1], ids=["MHA", "GQA", "MQA"])
def test_explicit_attention_matches_transformers_eager(n_kv_heads):
    """Our grouped matmul against transformers' repeat_kv + eager attention."""
    torch.manual_seed(0)
    bs, n_heads, seqlen, head_dim = 2, 4, 9, 8
    q = torch.randn(bs, n_heads, seqlen, head_dim)
    k = torch.randn(bs, n_kv_heads, seqlen, head_dim)
    v = torch.randn(bs, n_kv_heads, seqlen, head_dim)
    mask = causal_mask(seqlen, seqlen)
    out, weights = explicit_attention(q, k, v, mask)

    class Module(torch.nn.Module):
        num_key_value_groups = n_heads // n_kv_heads
        training = False

    additive = torch.zeros(1, 1, seqlen, seqlen).masked_fill(~mask, float("-inf"))
    ref_out, ref_weights = hf.eager_attention_forward(
        Module(), q, k, v, additive, scaling=head_dim**-0.5
    )
    torch.testing.assert_close(out.transpose(1, 2), ref_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=1e-5)
    assert torch.all(weights.triu(1) == 0)  # causal: nothing above the diagonal
    torch.testing.assert_close(weights.sum(-1), torch.ones(bs, n_heads, seqlen))


def test_attention_weights_are_captured_on_request():
    model = Transformer(tiny())
    attention = model.layers[1].attention
    attention.capture_weights = True
    model(torch.randint(0, 97, (1, 5)))
    assert attention.last_weights.shape == (1, 4, 5, 5)
    assert model.layers[0].attention.last_weights is None


@pytest.mark.parametrize("style", ["interleaved", "half"])
def test_kv_cache_decoding_equals_full_recompute(style):
    torch.manual_seed(0)
    model = Transformer(tiny(rope_style=style))
    tokens = torch.randint(0, 97, (2, 16))
    full = model(tokens)
    cache = model.new_cache(batch_size=2, max_len=16)
    steps = [model(tokens[:, :9], cache=cache)]
    steps += [model(tokens[:, t : t + 1], cache=cache) for t in range(9, 16)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 16


def test_tied_head_shares_the_embedding():
    tied = Transformer(tiny())
    assert tied.output.weight is tied.tok_embeddings.weight
    untied = Transformer(tiny(tie_embeddings=False))
    assert untied.num_parameters() == tied.num_parameters() + 97 * 64


def test_bad_configs_are_rejected_with_a_reason():
    with pytest.raises(LLMHoodError, match="n_kv_heads"):
        tiny(n_kv_heads=3)
    with pytest.raises(LLMHoodError, match="rope_style"):
        tiny(rope_style="sideways")
