"""RoPE scaling: each scheme against its closed form (float64, written here) and against
transformers' ROPE_INIT_FUNCTIONS and LlamaForCausalLM; the configs that carry it; the
KV cache with scaling on; and the default (no scaling) left exactly as it was."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from llmhood.errors import LLMHoodError
from llmhood.model import ModelConfig, Transformer
from llmhood.model.rope import RoPE, inverse_frequencies
from llmhood.model.rope_scaling import RopeScaling, scaled_frequencies

HEAD_DIM, THETA = 64, 10000.0
TRAINED = 16  # the tiny models' original context; test texts run to 3× that

SCALINGS = {
    "linear": RopeScaling("linear", 4.0),
    "ntk": RopeScaling("ntk", 4.0),
    "dynamic_ntk": RopeScaling("dynamic_ntk", 4.0, TRAINED),
    "yarn": RopeScaling("yarn", 4.0, TRAINED, beta_fast=8.0, beta_slow=0.5),
    "llama3": RopeScaling("llama3", 8.0, TRAINED, low_freq_factor=1.0, high_freq_factor=4.0),
}


def plain(d: int = HEAD_DIM, theta: float = THETA) -> np.ndarray:
    """θ_i = theta^(-2i/d) in float64."""
    return theta ** (-2.0 * np.arange(d // 2) / d)


def assert_frequencies(got: torch.Tensor, expected: np.ndarray) -> None:
    assert got.shape == expected.shape and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=2e-6, atol=0)


# ---- each scheme against its formula -----------------------------------------------------


@pytest.mark.parametrize("factor", [1.0, 2.0, 8.0])
def test_linear_divides_every_frequency(factor):
    inv, scale = scaled_frequencies(HEAD_DIM, THETA, RopeScaling("linear", factor))
    assert_frequencies(inv, plain() / factor)
    assert scale == 1.0


@pytest.mark.parametrize("factor", [2.0, 8.0])
def test_static_ntk_is_plain_rope_on_a_larger_base(factor):
    inv, scale = scaled_frequencies(HEAD_DIM, THETA, RopeScaling("ntk", factor))
    base = THETA * factor ** (HEAD_DIM / (HEAD_DIM - 2))
    assert_frequencies(inv, plain(theta=base))
    assert scale == 1.0
    assert inv[0] == 1.0  # the fastest pair keeps its speed ...
    assert float(inv[-1]) == pytest.approx(plain()[-1] / factor, rel=1e-5)  # the slowest: /s


@pytest.mark.parametrize("length", [1, TRAINED, TRAINED + 1, 3 * TRAINED, 1000])
def test_dynamic_ntk_follows_the_length(length):
    factor = 4.0
    scaling = RopeScaling("dynamic_ntk", factor, TRAINED)
    inv, scale = scaled_frequencies(HEAD_DIM, THETA, scaling, seq_len=length)
    if length <= TRAINED:
        assert torch.equal(inv, inverse_frequencies(HEAD_DIM, THETA))
    else:
        stretch = factor * length / TRAINED - (factor - 1)
        assert_frequencies(inv, plain(theta=THETA * stretch ** (HEAD_DIM / (HEAD_DIM - 2))))
    assert scale == 1.0


def yarn_closed_form(
    factor: float, original: int, beta_fast: float, beta_slow: float, truncate: bool
) -> np.ndarray:
    """Ramp from "keep" to "divide by s", linear in the pair index, between the pairs that
    make beta_fast and beta_slow turns over `original` tokens."""
    pairs = np.arange(HEAD_DIM // 2)
    inv = plain()

    def pair_making(turns: float) -> float:  # solve original·θ_i / 2π = turns for i
        return HEAD_DIM * math.log(original / (2 * math.pi * turns)) / (2 * math.log(THETA))

    lo, hi = pair_making(beta_fast), pair_making(beta_slow)
    if truncate:
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, HEAD_DIM - 1)
    ramp = np.clip((pairs - lo) / (hi - lo), 0, 1)
    return inv / factor * ramp + inv * (1 - ramp)


@pytest.mark.parametrize("truncate", [True, False])
@pytest.mark.parametrize(("factor", "original"), [(4.0, 2048), (16.0, 4096), (2.0, 64)])
def test_yarn_matches_its_formula_and_leaves_fast_pairs_alone(factor, original, truncate):
    scaling = RopeScaling("yarn", factor, original, truncate=truncate)
    inv, scale = scaled_frequencies(HEAD_DIM, THETA, scaling)
    assert_frequencies(inv, yarn_closed_form(factor, original, 32.0, 1.0, truncate))
    assert scale == pytest.approx(0.1 * math.log(factor) + 1)
    turns = original * plain() / (2 * math.pi)  # full turns of each pair within L0
    got, orig = inv.double().numpy(), plain()
    np.testing.assert_allclose(got[turns > 32], orig[turns > 32], rtol=2e-6)
    np.testing.assert_allclose(got[turns < 1], orig[turns < 1] / factor, rtol=2e-6)
    assert np.all(np.diff(got / orig) <= 1e-7)  # the stretch only grows towards slow pairs


def test_yarn_attention_factor_when_given_and_at_factor_one():
    given = RopeScaling("yarn", 8.0, 1024, attention_factor=0.7)
    assert scaled_frequencies(HEAD_DIM, THETA, given)[1] == 0.7
    assert scaled_frequencies(HEAD_DIM, THETA, RopeScaling("yarn", 1.0, 1024))[1] == 1.0


@pytest.mark.parametrize(("low", "high", "original"), [(1.0, 4.0, 8192), (2.0, 8.0, 256)])
def test_llama3_three_bands(low, high, original):
    factor = 8.0
    scaling = RopeScaling("llama3", factor, original, low_freq_factor=low, high_freq_factor=high)
    inv, scale = scaled_frequencies(HEAD_DIM, 500000.0, scaling)
    expected = []
    for theta_i in plain(theta=500000.0):
        wavelength = 2 * math.pi / theta_i
        if wavelength < original / high:
            expected.append(theta_i)
        elif wavelength > original / low:
            expected.append(theta_i / factor)
        else:
            keep = (original / wavelength - low) / (high - low)
            expected.append(keep * theta_i + (1 - keep) * theta_i / factor)
    assert_frequencies(inv, np.array(expected))
    assert scale == 1.0


# ---- against transformers ---------------------------------------------------------------


def hf_rope_config(params: dict, max_positions: int = 256) -> LlamaConfig:
    return LlamaConfig(
        hidden_size=2 * HEAD_DIM, num_attention_heads=2, head_dim=HEAD_DIM, intermediate_size=8,
        vocab_size=10, max_position_embeddings=max_positions,
        rope_parameters={"rope_theta": THETA, **params},
    )  # fmt: skip


HF_PARAMS = [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "dynamic", "factor": 4.0},
    {"rope_type": "dynamic", "factor": 2.5},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 32,
     "beta_fast": 16, "beta_slow": 2, "attention_factor": 0.9},
    {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 128,
     "truncate": False},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 64},
    {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 2.0, "high_freq_factor": 16.0,
     "original_max_position_embeddings": 128},
]  # fmt: skip


@pytest.mark.parametrize("params", HF_PARAMS, ids=lambda p: p["rope_type"])
@pytest.mark.parametrize("seq_len", [100, 1000])
def test_parsed_config_gives_transformers_frequencies(params, seq_len):
    """config.json -> ModelConfig.from_hf -> our frequencies, against transformers' own
    reading of the same config; dynamic is compared below and beyond the trained length."""
    hf = hf_rope_config(dict(params))
    config = ModelConfig.from_hf(hf.to_dict())
    ours, ours_scale = scaled_frequencies(HEAD_DIM, THETA, config.rope_scaling, seq_len)
    ref, ref_scale = ROPE_INIT_FUNCTIONS[params["rope_type"]](hf, None, seq_len=seq_len)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-6, atol=0)
    assert ours_scale == pytest.approx(ref_scale, rel=1e-12)


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our parameter names spelled as transformers' Llama spells them ("half" layout)."""
    globals_ = {"tok_embeddings": "model.embed_tokens", "norm": "model.norm", "output": "lm_head"}
    blocks = {
        "attention_norm": "input_layernorm", "attention.wq": "self_attn.q_proj",
        "attention.wk": "self_attn.k_proj", "attention.wv": "self_attn.v_proj",
        "attention.wo": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
        "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
        "feed_forward.w2": "mlp.down_proj",
    }  # fmt: skip
    out = {}
    for name, tensor in model.state_dict().items():
        module = name.removesuffix(".weight")
        if module in globals_:
            out[globals_[module] + ".weight"] = tensor
        else:
            _, layer, rest = module.split(".", 2)
            out[f"model.layers.{layer}.{blocks[rest]}.weight"] = tensor
    return out


def tiny_model(
    scaling: RopeScaling | None, style: str = "half", max_seq_len: int = TRAINED
) -> Transformer:
    """Small weights (std 0.05) so logits stay near 1 and 1e-5 is a tight tolerance."""
    config = ModelConfig(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=97, hidden_dim=96,
        max_seq_len=max_seq_len, rope_style=style, rope_scaling=scaling,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Transformer(config)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand_like(p) + 0.5 if p.ndim == 1 else torch.randn_like(p) * 0.05)
    return model.eval()


def transformers_twin(model: Transformer) -> LlamaForCausalLM:
    """transformers' Llama built from our `to_hf` config, holding our weights."""
    hf_config = LlamaConfig(
        **{k: v for k, v in model.config.to_hf().items() if k != "architectures"}
    )
    ref = LlamaForCausalLM._from_config(hf_config, attn_implementation="eager")
    missing, unexpected = ref.load_state_dict(hf_state_dict(model), strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    return ref.eval()


HF_SCHEMES = ["linear", "ntk", "dynamic_ntk", "yarn", "llama3"]


@pytest.mark.parametrize("kind", HF_SCHEMES)
def test_logits_equal_transformers_beyond_the_trained_length(kind):
    """The whole model, so YaRN's attention factor is checked where it acts: on q·k. Static
    NTK reaches transformers as the equivalent rope_theta (ModelConfig.to_hf)."""
    model = tiny_model(SCALINGS[kind])
    ref = transformers_twin(model)
    tokens = torch.randint(0, 97, (2, 3 * TRAINED), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(tokens), ref(tokens).logits
        plain_rope = tiny_model(None)(tokens)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert (ours - plain_rope).abs().max() > 1e-3  # the scaling did change the model


@pytest.mark.parametrize("style", ["interleaved", "half"])
@pytest.mark.parametrize("kind", ["linear", "ntk", "yarn", "llama3"])
def test_kv_cache_decoding_equals_full_recompute_with_scaling(kind, style):
    model = tiny_model(SCALINGS[kind], style)
    tokens = torch.randint(0, 97, (2, 3 * TRAINED), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(batch_size=2, max_len=3 * TRAINED)
        steps = [model(tokens[:, :10], cache=cache)]
        steps += [model(tokens[:, t : t + 1], cache=cache) for t in range(10, 3 * TRAINED)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_dynamic_ntk_with_a_kv_cache_keeps_each_key_as_it_was_rotated():
    """The documented behaviour (RoPE's docstring): each forward pass takes the text's
    length from its largest position. Decoding token t with the cache equals recomputing
    the whole text up to t while t is within the trained length; past it, cached keys keep
    their older, smaller base, so the two differ, and our cached decoding matches
    transformers' cached decoding step for step."""
    model = tiny_model(SCALINGS["dynamic_ntk"])
    ref = transformers_twin(model)
    length = 3 * TRAINED
    tokens = torch.randint(0, 97, (2, length), generator=torch.Generator().manual_seed(3))
    # transformers renamed `past_key_values` to `cache`; the cache object is the same.
    cache_arg = (
        "cache" if "cache" in inspect.signature(ref.forward).parameters else "past_key_values"
    )
    with torch.no_grad():
        cache = model.new_cache(batch_size=2, max_len=length)
        steps = [model(tokens[:, :10], cache=cache)]
        steps += [model(tokens[:, t : t + 1], cache=cache) for t in range(10, length)]
        cached = torch.cat(steps, dim=1)
        recomputed = torch.stack([model(tokens[:, : t + 1])[:, -1] for t in range(length)], 1)

        their_cache = DynamicCache()
        theirs = [ref(tokens[:, :10], use_cache=True, **{cache_arg: their_cache}).logits]
        for t in range(10, length):
            step = ref(tokens[:, t : t + 1], use_cache=True, **{cache_arg: their_cache})
            theirs.append(step.logits)
    torch.testing.assert_close(cached, torch.cat(theirs, dim=1), atol=1e-5, rtol=1e-5)
    inside, beyond = slice(0, TRAINED), slice(TRAINED, length)
    torch.testing.assert_close(cached[:, inside], recomputed[:, inside], atol=1e-5, rtol=1e-5)
    assert (cached[:, beyond] - recomputed[:, beyond]).abs().amax(-1).min() > 1e-4


# ---- the rotation table ------------------------------------------------------------------


@pytest.mark.parametrize("style", ["interleaved", "half"])
def test_default_table_is_exactly_plain_rope(style):
    """No scaling: the table is bit for bit what plain RoPE computed before scaling existed."""
    positions = torch.arange(50)[None] * 7
    rope = RoPE(HEAD_DIM, THETA, style)
    assert torch.equal(rope.inv_freq, inverse_frequencies(HEAD_DIM, THETA))
    angles = (positions.float()[..., None] * inverse_frequencies(HEAD_DIM, THETA))[:, :, None]
    if style == "interleaved":
        expected = (torch.polar(torch.ones_like(angles), angles),)
    else:
        angles = torch.cat((angles, angles), dim=-1)
        expected = (angles.cos(), angles.sin())
    got = rope.table(positions)
    assert len(got) == len(expected)
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))


@pytest.mark.parametrize("style", ["interleaved", "half"])
def test_attention_scale_multiplies_the_rotation_and_keeps_relative_positions(style):
    scaling = RopeScaling("yarn", 8.0, 32)
    scale = 0.1 * math.log(8.0) + 1
    rope = RoPE(HEAD_DIM, THETA, style, scaling)
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, HEAD_DIM), torch.randn(1, 1, 1, HEAD_DIM)

    def score(r: RoPE, m: int, n: int) -> float:
        qm = r.rotate(q, r.table(torch.tensor([[m]])))
        kn = r.rotate(k, r.table(torch.tensor([[n]])))
        return float((qm * kn).sum())

    rotated = rope.rotate(q, rope.table(torch.tensor([[123]])))
    torch.testing.assert_close(rotated.norm(), q.norm() * scale)
    assert score(rope, 300, 290) == pytest.approx(score(rope, 10, 0), abs=1e-3)
    unscaled = RoPE(HEAD_DIM, THETA, style)
    unscaled.inv_freq = rope.inv_freq  # the same angles, rotation of magnitude 1
    # q·k grows by scale²: YaRN's temperature
    assert score(rope, 300, 290) == pytest.approx(score(unscaled, 300, 290) * scale**2, rel=1e-5)


# ---- switching scaling on a loaded model --------------------------------------------------


def test_set_rope_scaling_switches_frequencies_without_touching_weights():
    model = tiny_model(None)
    tokens = torch.randint(0, 97, (1, 40), generator=torch.Generator().manual_seed(4))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(tokens)
        model.set_rope_scaling(SCALINGS["yarn"], max_seq_len=4 * TRAINED)
        scaled = model(tokens)
        assert model.config.rope_scaling == SCALINGS["yarn"]
        assert model.config.max_seq_len == 4 * TRAINED
        torch.testing.assert_close(scaled, tiny_model(SCALINGS["yarn"])(tokens))
        model.set_rope_scaling(None)
        after = model(tokens)
    assert (scaled - before).abs().max() > 1e-3
    assert torch.equal(after, before)  # back to bit-identical plain RoPE
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    assert model.config.rope_scaling is None and model.config.max_seq_len == 4 * TRAINED


def test_linear_factor_one_is_bit_identical_to_no_scaling():
    tokens = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(tiny_model(RopeScaling("linear", 1.0))(tokens), tiny_model(None)(tokens))


# ---- configs: Hugging Face, GGUF, Meta ---------------------------------------------------


def hf_json(**changes) -> dict:
    base = {
        "model_type": "llama", "hidden_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 2, "vocab_size": 10, "intermediate_size": 8,
        "max_position_embeddings": 2048, "rope_theta": 500000.0,
    }  # fmt: skip
    return base | changes


def test_from_hf_reads_every_spelling():
    llama31 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}  # fmt: skip
    expected = RopeScaling("llama3", 8.0, 8192, low_freq_factor=1.0, high_freq_factor=4.0)
    assert ModelConfig.from_hf(hf_json(rope_scaling=llama31)).rope_scaling == expected
    legacy = {"type": "linear", "factor": 2.0}  # transformers 4.3x wrote "type"
    parsed = ModelConfig.from_hf(hf_json(rope_scaling=legacy)).rope_scaling
    assert parsed == RopeScaling("linear", 2.0)
    v5 = hf_json(rope_parameters={"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0})
    del v5["rope_theta"]
    config = ModelConfig.from_hf(v5)
    assert config.rope_theta == 1e6
    assert config.rope_scaling == RopeScaling("yarn", 4.0, 2048)  # L0 from max positions
    assert "rope_parameters" not in config.extra
    default = hf_json(rope_parameters={"rope_type": "default", "rope_theta": 1e5})
    assert ModelConfig.from_hf(default).rope_scaling is None
    dynamic = {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 99}
    parsed = ModelConfig.from_hf(hf_json(rope_scaling=dynamic)).rope_scaling
    assert parsed == RopeScaling("dynamic_ntk", 2.0, 2048)  # transformers: L0 = max positions
    deepseek = {"rope_type": "yarn", "factor": 40.0, "mscale": 1.0, "mscale_all_dim": 0.5,
                "original_max_position_embeddings": 4096}  # fmt: skip
    hf = hf_rope_config(dict(deepseek), max_positions=163840)
    parsed = ModelConfig.from_hf(hf_json(rope_scaling=deepseek)).rope_scaling
    assert parsed.attention_factor == pytest.approx(ROPE_INIT_FUNCTIONS["yarn"](hf)[1])


@pytest.mark.parametrize(
    ("rope_scaling", "message"),
    [
        ({"rope_type": "longrope", "factor": 2.0}, "longrope"),
        ({"rope_type": "linear"}, "lacks factor"),
        ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}, "high_freq_factor"),
        ({"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5}, "partial"),
        ({"rope_type": "linear", "factor": 0.5}, "at least 1"),
    ],
)
def test_from_hf_refuses_what_it_cannot_run(rope_scaling, message):
    with pytest.raises(LLMHoodError, match=message):
        ModelConfig.from_hf(hf_json(rope_scaling=rope_scaling))


@pytest.mark.parametrize("kind", ["linear", "dynamic_ntk", "yarn", "llama3"])
def test_to_hf_round_trips(kind):
    scaling = SCALINGS[kind]
    config = tiny_model(scaling).config
    written = config.to_hf()
    assert "rope_scaling" in written
    assert ModelConfig.from_hf(written).rope_scaling == scaling
    assert "rope_scaling" not in tiny_model(None).config.to_hf()  # unchanged without scaling


def test_to_hf_writes_static_ntk_as_its_base_and_refuses_what_it_cannot_say():
    config = tiny_model(SCALINGS["ntk"]).config
    written = config.to_hf()
    assert "rope_scaling" not in written
    reread = ModelConfig.from_hf(written)
    assert reread.rope_scaling is None
    assert torch.equal(
        scaled_frequencies(16, reread.rope_theta, None)[0],
        scaled_frequencies(16, config.rope_theta, config.rope_scaling)[0],
    )
    longer = config.replace(rope_scaling=RopeScaling("dynamic_ntk", 2.0, 8))
    with pytest.raises(LLMHoodError, match="max_position_embeddings"):
        longer.to_hf()
    with pytest.raises(LLMHoodError, match="transformers"):
        config.replace(rope_scaling=None, position_encoding="cope").to_hf()


def gguf_metadata(**rope: object) -> dict:
    base = {
        "general.architecture": "llama", "llama.embedding_length": 64, "llama.block_count": 2,
        "llama.attention.head_count": 4, "llama.feed_forward_length": 96,
        "llama.vocab_size": 97, "llama.context_length": 4096,
    }  # fmt: skip
    return base | {f"llama.rope.{k.replace('__', '.')}": v for k, v in rope.items()}


def test_from_gguf_reads_linear_and_yarn():
    def scaling(**rope: object) -> RopeScaling | None:
        return ModelConfig.from_gguf(gguf_metadata(**rope), has_output_tensor=False).rope_scaling

    assert scaling() is None
    assert scaling(scaling__type="none") is None
    assert scaling(scaling__type="linear", scaling__factor=4.0) == RopeScaling("linear", 4.0)
    assert scaling(scale_linear=2.0) == RopeScaling("linear", 2.0)  # the old key
    assert scaling(
        scaling__type="yarn", scaling__factor=4.0, scaling__original_context_length=1024,
        scaling__finetuned=True,
    ) == RopeScaling("yarn", 4.0, 1024)  # fmt: skip
    assert scaling(scaling__type="yarn", scaling__factor=2.0) == RopeScaling("yarn", 2.0, 4096)


@pytest.mark.parametrize(
    ("rope", "message"),
    [
        ({"scaling__type": "longrope", "scaling__factor": 2.0}, "longrope"),
        ({"scaling__type": "yarn", "scaling__factor": 4.0, "scaling__attn_factor": 0.5},
         "attn_factor"),
        ({"scaling__type": "yarn", "scaling__factor": 4.0, "scaling__yarn_log_multiplier": 0.1},
         "yarn_log_multiplier"),
    ],
)  # fmt: skip
def test_from_gguf_refuses_what_it_cannot_represent(rope, message):
    with pytest.raises(LLMHoodError, match=message):
        ModelConfig.from_gguf(gguf_metadata(**rope), has_output_tensor=False)


def test_meta_use_scaled_rope_is_llama31_and_to_meta_round_trips():
    params = {"dim": 64, "n_layers": 2, "n_heads": 4, "vocab_size": 97, "use_scaled_rope": True}
    config = ModelConfig.from_meta(params)
    assert config.rope_scaling == RopeScaling(
        "llama3", 8.0, 8192, low_freq_factor=1.0, high_freq_factor=4.0
    )
    written = config.to_meta()
    assert written["use_scaled_rope"] is True and "rope_scaling" not in written
    for scaling in [*SCALINGS.values(), None]:
        config = tiny_model(scaling).config
        assert ModelConfig.from_meta(config.to_meta()) == config.replace(rope_style="interleaved")
    assert "use_scaled_rope" not in tiny_model(None).config.to_meta()
    with pytest.raises(LLMHoodError, match="unknown keys"):
        ModelConfig.from_meta(params | {"rope_scaling": {"kind": "linear", "factr": 2.0}})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"kind": "sideways", "factor": 2.0}, "Unknown RoPE scaling kind"),
        ({"kind": "linear", "factor": 0.5}, "at least 1"),
        ({"kind": "linear", "factor": float("nan")}, "must be a number"),
        ({"kind": "yarn", "factor": 2.0}, "original_max_position_embeddings"),
        ({"kind": "llama3", "factor": 2.0, "original_max_position_embeddings": 0}, "positive"),
        ({"kind": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192,
          "low_freq_factor": 4.0, "high_freq_factor": 1.0}, "low_freq_factor"),
        ({"kind": "yarn", "factor": 2.0, "original_max_position_embeddings": 64,
          "beta_fast": 1.0, "beta_slow": 32.0}, "beta_slow"),
        ({"kind": "yarn", "factor": 2.0, "original_max_position_embeddings": 64,
          "attention_factor": 0.0}, "attention_factor"),
    ],
)  # fmt: skip
def test_bad_scaling_is_rejected_with_a_reason(fields, message):
    with pytest.raises(LLMHoodError, match=message):
        RopeScaling(**fields)


def test_scaling_needs_rope_and_a_real_scaling_object():
    with pytest.raises(LLMHoodError, match="position_encoding='rope'"):
        ModelConfig(position_encoding="cope", rope_scaling=RopeScaling("linear", 2.0))
    with pytest.raises(LLMHoodError, match="RopeScaling"):
        ModelConfig(rope_scaling={"kind": "linear", "factor": 2.0})
    model = Transformer(ModelConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=2, vocab_size=11,
                                    hidden_dim=32, position_encoding="none"))  # fmt: skip
    with pytest.raises(LLMHoodError, match="position_encoding"):
        model.set_rope_scaling(RopeScaling("linear", 2.0))


def test_a_loaded_checkpoint_keeps_its_scaling():
    """build_model rebuilds the RoPE table off the meta device: the scaling must survive."""
    from llmhood.weights.checkpoint import Checkpoint, build_model

    scaling = RopeScaling("linear", factor=4.0, original_max_position_embeddings=64)
    config = ModelConfig(
        dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=100, hidden_dim=128,
        max_seq_len=256, rope_scaling=scaling,
    )  # fmt: skip
    model = Transformer(config)
    loaded = build_model(Checkpoint(config, model.state_dict(), None, "test"), torch.float32)
    tokens = torch.randint(0, 100, (1, 80))
    assert torch.equal(loaded.rope.inv_freq, model.rope.inv_freq)
    assert torch.equal(loaded(tokens), model(tokens))
