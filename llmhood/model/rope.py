"""Rotary position embedding (RoPE), in its two equivalent forms.

RoPE (Su et al., 2021) encodes position m by rotating each pair of query/key channels by
the angle m·θ_i, with θ_i = base^(-2i/head_dim) for pair i = 0 .. head_dim/2 - 1. Because
a rotation by m·θ dotted with a rotation by n·θ depends only on (m - n)·θ, the attention
score q_m·k_n sees relative position without any extra parameters. Small i rotates fast
(fine position), large i slowly (coarse position).

The only question is *which* channels form a pair, and the two big code bases disagree:

* **interleaved** (Meta's reference code, and GGUF files from llama.cpp): pairs are
  (0,1), (2,3), ... Viewing each pair as one complex number, the rotation is a single
  complex multiplication by e^{i·m·θ} — the *complex form* below (`torch.polar`,
  `view_as_complex`).
* **half** (Hugging Face checkpoints): pairs are (i, i + head_dim/2). The rotation is
  written with real numbers, x·cos + rotate_half(x)·sin — the *real form* below.

The two are the same model once the rows of W_q and W_k are permuted inside each head
(`interleaved_to_half` / `half_to_interleaved`); Hugging Face's Llama conversion script
applies exactly this permutation to Meta's weights, and llama.cpp applies the inverse
when it writes GGUF. A model loaded from GGUF or a Meta checkpoint therefore runs the
complex form on its weights as stored, and one loaded from Hugging Face runs the real form.

Which frequencies θ_i to use is a separate question, answered in rope_scaling.py: plain
RoPE, or one of the schemes that stretch them for contexts longer than the trained one.
A scheme may also scale the rotation's magnitude (YaRN's temperature); both forms carry
that scale in their table, so every rotated q and k is multiplied by it.
"""

from __future__ import annotations

import torch
from torch import nn

from llmhood.model.config import ModelConfig, RopeStyle
from llmhood.model.rope_scaling import RopeScaling, scaled_frequencies
from llmhood.model.rope_scaling import inverse_frequencies as inverse_frequencies


def rotate_complex(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """Interleaved pairs as complex numbers, multiplied by e^{i·m·θ}.

    x: (bs, seqlen, n_heads, head_dim); freqs_cis: (bs, seqlen, 1, head_dim // 2) complex64.
    """
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs_cis).flatten(-2).type_as(x)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves: a 90° turn of every (i, i + d/2) pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotate_real(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half-split pairs rotated with real arithmetic: x·cos + rotate_half(x)·sin.

    x: (bs, seqlen, n_heads, head_dim); cos, sin: (bs, seqlen, 1, head_dim), each angle
    repeated for both halves.
    """
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).type_as(x)


def interleaved_to_half(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Permute W_q/W_k rows of each head from pairs (2i, 2i+1) to pairs (i, i + d/2).

    w: (n_heads * head_dim, in_features). Channel 2i goes to i, channel 2i+1 to i + d/2.
    """
    out_features, in_features = w.shape
    head_dim = out_features // n_heads
    return (
        w.reshape(n_heads, head_dim // 2, 2, in_features)
        .transpose(1, 2)
        .reshape(out_features, in_features)
    )


def half_to_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of `interleaved_to_half`."""
    out_features, in_features = w.shape
    head_dim = out_features // n_heads
    return (
        w.reshape(n_heads, 2, head_dim // 2, in_features)
        .transpose(1, 2)
        .reshape(out_features, in_features)
    )


class RoPE(nn.Module):
    """Builds the rotation table once per forward pass and applies it in every layer.

    Positions come per row, (bs, seqlen), so that rows of a left-padded batch can each
    start at position 0.

    With dynamic NTK scaling the frequencies depend on the length of the text, taken as
    the largest position in this forward pass plus one, and are recomputed each pass, as
    transformers does. Keys already in a KV cache keep the rotation they were stored with:
    while the text stays within the trained length nothing changes and cached decoding
    equals a full recompute; past it, every new token's query is rotated with a larger
    base than the older cached keys, so cached decoding differs from recomputing the whole
    text at its final length (transformers' cache behaves the same way).
    """

    def __init__(
        self, head_dim: int, theta: float, style: RopeStyle, scaling: RopeScaling | None = None
    ) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.style = style
        self.set_scaling(scaling)

    @classmethod
    def from_config(cls, config: ModelConfig) -> RoPE:
        return cls(config.head_dim, config.rope_theta, config.rope_style, config.rope_scaling)

    def set_scaling(self, scaling: RopeScaling | None) -> None:
        """Recompute the frequencies for `scaling` (None: plain RoPE), on the device of the
        old ones, or the default device when there are none.

        A model built on the meta device, to have its weights assigned afterwards
        (weights/checkpoint.py), still gets real frequencies on the CPU: they are computed,
        not loaded, and nothing else would fill them in. (Computing them on the meta device
        would also import sympy, 60 MB, for a shape.)
        """
        old = getattr(self, "inv_freq", None)
        device = old.device if old is not None else torch.get_default_device()
        with torch.device("cpu"):
            inv_freq, self.attention_scale = scaled_frequencies(self.head_dim, self.theta, scaling)
        if device.type != "meta":
            inv_freq = inv_freq.to(device)
        self.scaling = scaling
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def frequencies(self, positions: torch.Tensor) -> torch.Tensor:
        """θ_i in effect for this pass: (head_dim // 2,) float32."""
        if self.scaling is None or self.scaling.kind != "dynamic_ntk":
            return self.inv_freq
        length = int(positions.max()) + 1
        inv_freq, _ = scaled_frequencies(self.head_dim, self.theta, self.scaling, length)
        return inv_freq.to(self.inv_freq.device)

    def angles(self, positions: torch.Tensor) -> torch.Tensor:
        """m·θ_i for every position: (bs, seqlen) -> (bs, seqlen, head_dim // 2), float32."""
        return positions.float()[..., None] * self.frequencies(positions)

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos(m·θ_i) and sin(m·θ_i), times the scheme's attention scale: (bs, seqlen,
        head_dim // 2) each, one per pair whichever channels the pair joins."""
        angles = self.angles(positions)
        return angles.cos() * self.attention_scale, angles.sin() * self.attention_scale

    def table(self, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.style == "interleaved":
            angles = self.angles(positions)[:, :, None, :]  # (bs, seqlen, 1, head_dim // 2)
            return (torch.polar(torch.full_like(angles, self.attention_scale), angles),)
        cos, sin = (t[:, :, None, :] for t in self.cos_sin(positions))
        # (bs, seqlen, 1, head_dim): each angle serves channel i and channel i + d/2
        return torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)

    def rotate(self, x: torch.Tensor, table: tuple[torch.Tensor, ...]) -> torch.Tensor:
        if self.style == "interleaved":
            return rotate_complex(x, *table)
        return rotate_real(x, *table)
