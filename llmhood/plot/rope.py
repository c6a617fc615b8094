"""RoPE's rotation angles: what a position looks like to each channel pair, and how the
scaling schemes slow the pairs down.

At position m, pair i of every query and key is turned by the angle m·θ_i, with
θ_i = base^(-2i/head_dim). Pair 0 turns by one radian per token, so at m = 100 its angle
has gone round 16 times and cos/sin look like noise from one pair to the next; the last
pairs turn so slowly that at m = 100 they have hardly moved (cos ≈ 1, sin ≈ 0). Fast
pairs tell neighbours apart, slow pairs tell near from far: the angles read like the hands
of a clock. The scaling schemes of `llmhood.model.rope_scaling` change θ_i, each pair by
its own factor; on a log scale one sees which pairs each scheme leaves alone.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from llmhood.errors import LLMHoodError
from llmhood.model import ModelConfig
from llmhood.model.rope_scaling import RopeScaling, scaled_frequencies
from llmhood.plot.figure import Plot, new_figure
from llmhood.plot.table import Table

# Colour and line style per scheme; yarn and llama3 nearly coincide, so they differ in style.
SCHEME_STYLES = {
    "plain": ("black", "-"), "linear": ("#1f78b4", "--"), "ntk": ("#33a02c", "-."),
    "yarn": ("#e31a1c", "--"), "llama3": ("#ff7f00", ":"),
}  # fmt: skip


def model_frequencies(config: ModelConfig) -> torch.Tensor:
    """θ_i as the model runs them, its own RoPE scaling (if any) included. (head_dim // 2,)"""
    return scaled_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)[0]


def trained_context(config: ModelConfig) -> int:
    """L0, the context the model was trained on: with RoPE scaling already applied,
    `max_seq_len` is the stretched length and the scaling records the original."""
    scaling = config.rope_scaling
    return (scaling and scaling.original_max_position_embeddings) or config.max_seq_len


def scaling_schemes(config: ModelConfig, factor: float = 4.0) -> dict[str, torch.Tensor]:
    """Plain RoPE and each scaling scheme stretching the trained context `factor`-fold,
    name -> inverse frequencies (head_dim // 2,)."""
    original = trained_context(config)
    schemes: dict[str, RopeScaling | None] = {
        "plain": None,
        "linear": RopeScaling("linear", factor),
        "ntk": RopeScaling("ntk", factor),
        "yarn": RopeScaling("yarn", factor, original),
        "llama3": RopeScaling("llama3", factor, original),
    }
    return {
        name: scaled_frequencies(config.head_dim, config.rope_theta, scaling)[0]
        for name, scaling in schemes.items()
    }


def rope_rows(
    inv_freq: torch.Tensor, position: int, schemes: dict[str, torch.Tensor]
) -> list[dict[str, Any]]:
    """Per pair i: θ_i, its wavelength 2π/θ_i in tokens, the angle m·θ_i (float32, as the
    model computes it), its cos and sin, and θ_i under each scheme."""
    angles = position * inv_freq  # (head_dim // 2,) float32, the model's own arithmetic
    return [
        {
            "pair": i,
            "inv_freq": inv_freq[i].item(),
            "wavelength": 2 * math.pi / inv_freq[i].item(),
            "position": position,
            "angle": angles[i].item(),
            "cos": angles[i].cos().item(),
            "sin": angles[i].sin().item(),
            **{f"inv_freq_{name}": freq[i].item() for name, freq in schemes.items()},
        }
        for i in range(len(inv_freq))
    ]


def plot_rope(
    config: ModelConfig,
    position: int = 100,
    max_position: int | None = None,
    schemes: dict[str, torch.Tensor] | None = None,
    factor: float = 4.0,
) -> Plot:
    """cos/sin of m·θ_i at `position` against the pair i; cos(m·θ_i) for every position up
    to `max_position` (default: 128, or a quarter past `position`); and θ_i under each
    scheme in `schemes` (name -> inverse frequencies; default `scaling_schemes(config,
    factor)`). The table holds the first and the last panel's numbers."""
    if max_position is None:
        max_position = max(128, position + position // 4)
    if position < 0 or max_position < 1:
        raise LLMHoodError(
            f"Positions start at 0: got position {position} and max_position {max_position}."
        )
    schemes = scaling_schemes(config, factor) if schemes is None else schemes
    inv_freq = model_frequencies(config)
    rows = rope_rows(inv_freq, position, schemes)
    pairs = [row["pair"] for row in rows]

    figure = new_figure(15, 4.8)
    figure.suptitle(
        f"RoPE: head_dim {config.head_dim}, base θ = {config.rope_theta:g}, "
        f"{len(pairs)} channel pairs turned by m·θ_i, θ_i = base^(-2i/{config.head_dim})",
        fontsize=12,
    )
    ax_angle, ax_map, ax_scaling = figure.subplots(1, 3, width_ratios=[1.1, 1, 1.1])

    ax_angle.plot(pairs, [r["cos"] for r in rows], "o-", ms=3, label=f"cos({position}·θ_i)")
    ax_angle.plot(pairs, [r["sin"] for r in rows], "s-", ms=3, label=f"sin({position}·θ_i)")
    ax_angle.axhline(0, color="grey", lw=0.5)
    ax_angle.set_xlabel("pair i (small i: fast, large i: slow)")
    ax_angle.set_title(f"the rotation of each pair at position m = {position}")
    ax_angle.legend(loc="lower right", fontsize=9)

    positions = torch.arange(max_position + 1, dtype=torch.float32)
    cos = (positions[:, None] * inv_freq).cos()  # (positions, pairs)
    image = ax_map.imshow(
        cos.numpy(), aspect="auto", origin="lower", cmap="RdBu_r", vmin=-1, vmax=1,
        interpolation="nearest",
    )  # fmt: skip
    if position <= max_position:
        ax_map.axhline(position, color="black", lw=1, ls="--")
        ax_map.text(len(pairs) - 1, position, f" m = {position}", va="bottom", ha="right")
    ax_map.set_xlabel("pair i")
    ax_map.set_ylabel("position m")
    ax_map.set_title("cos(m·θ_i) for every position")
    figure.colorbar(image, ax=ax_map, shrink=0.8)

    for name, freq in schemes.items():
        color, style = SCHEME_STYLES.get(name, (None, "-"))
        width = 2.5 if name in ("plain", "llama3") else 1.5
        ax_scaling.plot(pairs, freq.numpy(), label=name, color=color, ls=style, lw=width)
    original = trained_context(config)
    ax_scaling.axhline(2 * math.pi / original, color="grey", lw=0.8, ls=":")
    ax_scaling.text(0, 2 * math.pi / original, f"one turn in {original} tokens", va="bottom")
    ax_scaling.set_yscale("log")
    ax_scaling.set_xlabel("pair i")
    ax_scaling.set_ylabel("θ_i (radians per token)")
    ax_scaling.set_title(f"θ_i under each scaling scheme, context ×{factor:g}")
    ax_scaling.legend(fontsize=9, loc="lower left")
    return Plot(figure, Table(rows))
