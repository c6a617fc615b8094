"""Stretching RoPE past the context a model was trained on: the RoPE scaling family.

RoPE turns channel pair i by the angle m·θ_i at position m. Its wavelength, λ_i = 2π/θ_i,
is how many tokens one full turn takes: from about 6 tokens for pair 0 up to roughly
2π·base tokens for the last pair. A model trained on L0 tokens has seen every angle of
the short-wavelength pairs many times over, but the long-wavelength pairs never made a
full turn: at position m > L0 they show angles the model has never seen, and attention
falls apart. Every scheme below changes the frequencies θ_i, never the weights, so that
positions up to s·L0 (s = `factor`) land on angles the model knows. They differ in which
pairs they slow down:

* `linear` (position interpolation, Chen et al. 2023): every pair by s. Nothing is out of
  range, but the short wavelengths get squeezed too, so neighbouring tokens become s times
  harder to tell apart; it needs fine-tuning to recover.
* `ntk` ("NTK-aware", bloc97 2023): a larger base, so the fastest pair is untouched and
  the slowest is slowed by exactly s, with a geometric blend in between.
* `dynamic_ntk`: `ntk` whose factor follows the current length, so that texts within L0
  run on the original frequencies.
* `yarn` (Peng et al. 2023): pairs that turn many times within L0 are left alone, pairs
  that turn less than once are interpolated by s, a linear ramp in between; plus an
  attention temperature that sharpens the softmax again.
* `llama3` (Meta's Llama 3.1): the same three bands as YaRN, cut by wavelength against
  L0 and blended by a smooth factor, without a temperature.

Each scheme is a pure function returning the new inverse frequencies, shape
(head_dim // 2,) float32, and an attention scale; `scaled_frequencies` dispatches on a
`RopeScaling`. The attention scale multiplies the rotation (cos and sin), so q·k grows by
its square: that is how YaRN's temperature is applied, as in the reference implementations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

import torch

from llmhood.errors import LLMHoodError

RopeScalingKind = Literal["linear", "ntk", "dynamic_ntk", "yarn", "llama3"]
KINDS: tuple[str, ...] = get_args(RopeScalingKind)
# Schemes that need to know the trained context length L0.
_NEEDS_ORIGINAL = ("dynamic_ntk", "yarn", "llama3")
# Hugging Face's `rope_type` for each of our kinds; `ntk` has none (see ModelConfig.to_hf).
_HF_TYPES = {"linear": "linear", "dynamic_ntk": "dynamic", "yarn": "yarn", "llama3": "llama3"}
# Llama 3.1's values, which Meta's params.json implies with `use_scaled_rope` alone.
META_LLAMA3 = {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


@dataclass(frozen=True)
class RopeScaling:
    """Which scaling scheme, and its knobs; the fields a scheme does not use are ignored."""

    kind: RopeScalingKind
    factor: float  # s: how many times longer than the trained context the text may be
    original_max_position_embeddings: int | None = None  # L0; dynamic_ntk, yarn, llama3
    low_freq_factor: float = 1.0  # llama3: wavelengths above L0 / this are slowed by s
    high_freq_factor: float = 4.0  # llama3: wavelengths below L0 / this are kept
    beta_fast: float = 32.0  # yarn: pairs turning more often than this within L0 are kept
    beta_slow: float = 1.0  # yarn: pairs turning less often than this are slowed by s
    attention_factor: float | None = None  # yarn: None means 0.1·ln(s) + 1
    truncate: bool = True  # yarn: round the ramp's ends to whole pairs, as implementations do

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise LLMHoodError(
                f"Unknown RoPE scaling kind {self.kind!r}; choose one of {', '.join(KINDS)}."
            )
        if not (isinstance(self.factor, (int, float)) and math.isfinite(self.factor)):
            raise LLMHoodError(f"RoPE scaling factor must be a number, not {self.factor!r}.")
        if self.factor < 1.0:
            raise LLMHoodError(
                f"RoPE scaling factor is {self.factor}, but it must be at least 1: it says how "
                "many times longer than the trained context the text may be."
            )
        original = self.original_max_position_embeddings
        if self.kind in _NEEDS_ORIGINAL and original is None:
            raise LLMHoodError(
                f"RoPE scaling {self.kind!r} needs original_max_position_embeddings, the context "
                "length the model was trained on (for example 8192 for Llama 3)."
            )
        if original is not None and (not isinstance(original, int) or original < 1):
            raise LLMHoodError(
                f"original_max_position_embeddings must be a positive integer, not {original!r}."
            )
        if self.kind == "llama3" and not 0 < self.low_freq_factor < self.high_freq_factor:
            raise LLMHoodError(
                f"llama3 RoPE scaling needs 0 < low_freq_factor < high_freq_factor; got "
                f"{self.low_freq_factor} and {self.high_freq_factor}."
            )
        if self.kind == "yarn" and not 0 < self.beta_slow < self.beta_fast:
            raise LLMHoodError(
                f"YaRN needs 0 < beta_slow < beta_fast; got beta_slow={self.beta_slow} and "
                f"beta_fast={self.beta_fast}."
            )
        if self.kind == "yarn" and self.attention_factor is not None and self.attention_factor <= 0:
            raise LLMHoodError(
                f"YaRN's attention_factor must be positive, not {self.attention_factor!r}."
            )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RopeScaling:
        """Our own field names, as `dataclasses.asdict` writes them into llmhood's params.json."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        missing = [name for name in ("kind", "factor") if name not in values]
        if unknown or missing:
            raise LLMHoodError(
                f"A rope_scaling entry has unknown keys {unknown} or lacks {missing}; it needs "
                f"'kind' and 'factor' and may also give {', '.join(sorted(names - {'kind'}))}."
            )
        return cls(**values)

    # ---- Hugging Face `rope_scaling` / `rope_parameters` ----------------------------------

    @classmethod
    def from_hf(cls, params: dict[str, Any], max_position_embeddings: int) -> RopeScaling | None:
        """Parse transformers' spelling; None for plain RoPE (rope_type "default").

        Missing L0 falls back to `max_position_embeddings`, as transformers does; for
        "dynamic" transformers always takes L0 from there, so we do too.
        """
        rope_type = params.get("rope_type") or params.get("type") or "default"
        if rope_type == "default":
            return None
        if rope_type not in _HF_TYPES.values():
            raise LLMHoodError(
                f"config.json asks for RoPE scaling type {rope_type!r}, which llmhood does not "
                f"implement; it supports {', '.join(_HF_TYPES.values())}."
            )
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            raise LLMHoodError(
                "config.json rotates only part of each head (partial_rotary_factor); llmhood's "
                "Llama rotates whole heads."
            )
        required = ["factor"]
        if rope_type == "llama3":
            required += ["low_freq_factor", "high_freq_factor"]
        missing = [key for key in required if params.get(key) is None]
        if missing:
            raise LLMHoodError(
                f"RoPE scaling {rope_type!r} in config.json lacks {', '.join(missing)}; the "
                "config is incomplete."
            )
        factor = float(params["factor"])
        original = params.get("original_max_position_embeddings") or max_position_embeddings
        if rope_type == "linear":
            return cls("linear", factor)
        if rope_type == "dynamic":
            return cls("dynamic_ntk", factor, max_position_embeddings)
        if rope_type == "llama3":
            return cls(
                "llama3",
                factor,
                int(original),
                low_freq_factor=float(params["low_freq_factor"]),
                high_freq_factor=float(params["high_freq_factor"]),
            )
        attention_factor = params.get("attention_factor")
        mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")
        if attention_factor is None and mscale and mscale_all_dim:
            # DeepSeek-style configs give the temperature as a ratio of two weighted log
            # terms; transformers folds that ratio into the same cos/sin scale.
            attention_factor = yarn_temperature(factor, mscale) / yarn_temperature(
                factor, mscale_all_dim
            )
        return cls(
            "yarn",
            factor,
            int(original),
            beta_fast=float(params.get("beta_fast") or 32.0),
            beta_slow=float(params.get("beta_slow") or 1.0),
            attention_factor=None if attention_factor is None else float(attention_factor),
            truncate=bool(params.get("truncate", True)),
        )

    def to_hf(self) -> dict[str, Any]:
        """transformers' `rope_scaling` dict. `ntk` has no rope_type there; see ModelConfig."""
        if self.kind == "ntk":
            raise LLMHoodError(
                "Static NTK scaling has no Hugging Face rope_type; write it as a larger rope_theta."
            )
        out: dict[str, Any] = {"rope_type": _HF_TYPES[self.kind], "factor": self.factor}
        if self.kind == "llama3":
            out["low_freq_factor"] = self.low_freq_factor
            out["high_freq_factor"] = self.high_freq_factor
        if self.kind in ("yarn", "llama3"):
            out["original_max_position_embeddings"] = self.original_max_position_embeddings
        if self.kind == "yarn":
            out["beta_fast"] = self.beta_fast
            out["beta_slow"] = self.beta_slow
            if self.attention_factor is not None:
                out["attention_factor"] = self.attention_factor
            if not self.truncate:
                out["truncate"] = False
        return out

    # ---- GGUF -------------------------------------------------------------------------------

    @classmethod
    def from_gguf(cls, metadata: dict[str, Any]) -> RopeScaling | None:
        """llama.cpp's `llama.rope.scaling.*` keys: "linear" and "yarn" map onto ours.

        Keys we do not know would change the frequencies in ways we cannot reproduce, so
        they are refused rather than ignored.
        """
        prefix = "llama.rope.scaling."
        keys = {k.removeprefix(prefix): v for k, v in metadata.items() if k.startswith(prefix)}
        legacy_linear = metadata.get("llama.rope.scale_linear")
        kind = keys.pop("type", "linear" if legacy_linear else "none")
        factor = float(keys.pop("factor", legacy_linear or 1.0))
        original = keys.pop("original_context_length", metadata.get("llama.context_length"))
        beta_fast = float(keys.pop("yarn_beta_fast", 32.0))
        beta_slow = float(keys.pop("yarn_beta_slow", 1.0))
        keys.pop("finetuned", None)  # a note about training, not about the frequencies
        if keys.get("attn_factor", 1.0) == 1.0:
            keys.pop("attn_factor", None)
        if keys:
            raise LLMHoodError(
                f"The GGUF metadata sets RoPE scaling keys llmhood cannot reproduce "
                f"({', '.join(prefix + k for k in keys)}); this file needs llama.cpp."
            )
        if kind == "none" or (kind == "linear" and factor == 1.0):
            return None
        if kind == "linear":
            return cls("linear", factor)
        if kind == "yarn":
            if original is None:
                raise LLMHoodError(
                    f"The GGUF metadata asks for YaRN but lacks '{prefix}original_context_length'."
                )
            return cls("yarn", factor, int(original), beta_fast=beta_fast, beta_slow=beta_slow)
        raise LLMHoodError(
            f"The GGUF metadata asks for RoPE scaling type {kind!r}; llmhood reads 'linear' and "
            "'yarn' from GGUF files."
        )


# ---- the schemes ------------------------------------------------------------------------


def inverse_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """θ_i = theta^(-2i/head_dim) for each channel pair i. Shape (head_dim // 2,), float32."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (theta**exponents)


def linear_frequencies(head_dim: int, theta: float, factor: float) -> tuple[torch.Tensor, float]:
    """Position interpolation: m·θ/s is (m/s)·θ, so positions up to s·L0 map into [0, L0).

    Every wavelength grows s-fold, including the short ones that needed no help.
    """
    return inverse_frequencies(head_dim, theta) / factor, 1.0


def ntk_base(head_dim: int, theta: float, factor: float) -> float:
    """The base whose slowest pair (i = d/2 - 1) turns exactly s times slower.

    θ'_i = θ_i · s^(-2i/(d-2)): pair 0 keeps its speed, the exponent reaches 1 at the last
    pair, so the scaling is spread geometrically, like the frequencies themselves.
    """
    return theta * factor ** (head_dim / (head_dim - 2))


def ntk_frequencies(head_dim: int, theta: float, factor: float) -> tuple[torch.Tensor, float]:
    """NTK-aware scaling: plain RoPE on `ntk_base`.

    Short wavelengths, which carry the fine order of nearby tokens, stay as trained; only
    the long ones are stretched, which is why it works tolerably even without fine-tuning.
    """
    return inverse_frequencies(head_dim, ntk_base(head_dim, theta, factor)), 1.0


def dynamic_ntk_frequencies(
    head_dim: int, theta: float, factor: float, original: int, seq_len: int
) -> tuple[torch.Tensor, float]:
    """NTK with a factor that follows the text: s' = s·L/L0 - (s - 1) for L > L0, else 1.

    Texts within the trained length keep the exact trained frequencies; longer ones get
    just as much stretching as their length needs (s' grows with L from 1 at L = L0).
    """
    if seq_len <= original:
        return inverse_frequencies(head_dim, theta), 1.0
    effective = factor * seq_len / original - (factor - 1)
    return inverse_frequencies(head_dim, ntk_base(head_dim, theta, effective)), 1.0


def yarn_temperature(factor: float, weight: float = 1.0) -> float:
    """YaRN's √(1/t) = 0.1·ln(s) + 1: longer contexts spread attention thinner, and scaling
    q and k each by this much sharpens the softmax back (1 for s <= 1)."""
    return 1.0 if factor <= 1 else 0.1 * weight * math.log(factor) + 1.0


def yarn_pair_index(rotations: float, head_dim: int, theta: float, original: int) -> float:
    """The (fractional) pair i that makes `rotations` full turns over L0 tokens.

    From L0/λ_i = r with λ_i = 2π·theta^(2i/d): i = d·ln(L0 / (2π·r)) / (2·ln theta).
    """
    return head_dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))


def yarn_frequencies(
    head_dim: int,
    theta: float,
    factor: float,
    original: int,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    attention_factor: float | None = None,
    truncate: bool = True,
) -> tuple[torch.Tensor, float]:
    """YaRN's "NTK-by-parts" frequencies and its attention temperature.

    A pair that turns more than beta_fast times within L0 (short wavelength) has seen all
    its angles and is kept; one that turns less than beta_slow times (longer than L0) is
    interpolated by s; in between a ramp blends the two. The paper writes the ramp in the
    number of turns r; the released code, and every implementation since, ramps linearly
    in the pair index between the pairs where r = beta_fast and r = beta_slow, with the
    ends rounded out to whole pairs (`truncate`). We follow the implementations, so that
    checkpoints tuned with them see the same angles.
    """
    inv_freq = inverse_frequencies(head_dim, theta)
    low = yarn_pair_index(beta_fast, head_dim, theta, original)
    high = yarn_pair_index(beta_slow, head_dim, theta, original)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # a step instead of a ramp; avoids 0/0
    pairs = torch.arange(head_dim // 2, dtype=torch.float32)
    interpolated = ((pairs - low) / (high - low)).clamp(0, 1)  # 0: keep, 1: slow by s
    inv_freq = inv_freq / factor * interpolated + inv_freq * (1 - interpolated)
    scale = yarn_temperature(factor) if attention_factor is None else attention_factor
    return inv_freq, scale


def llama3_frequencies(
    head_dim: int,
    theta: float,
    factor: float,
    original: int,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
) -> tuple[torch.Tensor, float]:
    """Llama 3.1's scaling: three wavelength bands measured against L0.

    Wavelengths shorter than L0/high_freq_factor turn several times within the trained
    context and are kept; those longer than L0/low_freq_factor are slowed by s; in
    between, the weight on the original frequency, (L0/λ - low) / (high - low), falls
    from 1 to 0 as the wavelength grows, so the frequencies stay continuous.
    """
    inv_freq = inverse_frequencies(head_dim, theta)
    wavelength = 2 * math.pi / inv_freq  # tokens per full turn of each pair
    keep_below = original / high_freq_factor
    slow_above = original / low_freq_factor
    keep = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = inv_freq / factor * (1 - keep) + inv_freq * keep
    out = torch.where(wavelength > slow_above, inv_freq / factor, inv_freq)
    medium = (wavelength >= keep_below) & (wavelength <= slow_above)
    return torch.where(medium, blended, out), 1.0


def scaled_frequencies(
    head_dim: int, theta: float, scaling: RopeScaling | None, seq_len: int | None = None
) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (head_dim // 2,) float32 and attention scale for any scheme.

    `seq_len`, the length of the text being run, matters only to `dynamic_ntk`; without
    it, that scheme gives its frequencies at the trained length, i.e. plain RoPE.
    """
    if scaling is None:
        return inverse_frequencies(head_dim, theta), 1.0
    s, original = scaling.factor, scaling.original_max_position_embeddings
    if scaling.kind == "linear":
        return linear_frequencies(head_dim, theta, s)
    if scaling.kind == "ntk":
        return ntk_frequencies(head_dim, theta, s)
    if scaling.kind == "dynamic_ntk":
        return dynamic_ntk_frequencies(head_dim, theta, s, original, seq_len or original)
    if scaling.kind == "yarn":
        return yarn_frequencies(
            head_dim,
            theta,
            s,
            original,
            scaling.beta_fast,
            scaling.beta_slow,
            scaling.attention_factor,
            scaling.truncate,
        )
    return llama3_frequencies(
        head_dim, theta, s, original, scaling.low_freq_factor, scaling.high_freq_factor
    )
