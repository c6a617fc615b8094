"""How large the residual stream grows, block by block.

Each block adds to the stream and nothing ever scales it down (the norms only rescale the
copies the sub-layers read), so its length ‖x‖ tends to grow with depth. The growth is not
even across tokens: the first token of a text often grows far larger than the others, the
same token that attention heads use as a resting place (the "attention sink" of the
attention plots).
"""

from __future__ import annotations

from typing import Any

import matplotlib
import torch

from llmhood.llm import LLM
from llmhood.plot.figure import Plot, new_figure, token_label
from llmhood.plot.forward import forward_pass
from llmhood.plot.table import Table


def residual_norms(llm: LLM, text: str) -> list[dict[str, Any]]:
    """‖x‖₂ of the residual stream per layer and position, and its mean over positions.

    Layer 0 is the embedding, layer ℓ the stream after block ℓ - 1 (no final norm).
    """
    seen = forward_pass(llm, text)
    rows = []
    for layer, hidden in enumerate(seen.seen.hidden):
        norms = torch.linalg.vector_norm(hidden[0].float(), dim=-1)  # (seqlen,)
        mean = norms.mean().item()
        for position, norm in enumerate(norms.tolist()):
            rows.append(
                {
                    "layer": layer,
                    "position": position,
                    "token": seen.tokens[position],
                    "norm": norm,
                    "layer_mean": mean,
                }
            )
    return rows


def plot_residual_norms(llm: LLM, text: str) -> Plot:
    """One line per position and the mean over positions, against the layer."""
    rows = residual_norms(llm, text)
    n = max(r["position"] for r in rows) + 1
    layers = sorted({r["layer"] for r in rows})
    figure = new_figure(11, 5.5)
    ax = figure.subplots()
    colors = matplotlib.colormaps["plasma"]
    for position in range(n):
        of_position = [r for r in rows if r["position"] == position]
        ax.plot(
            layers, [r["norm"] for r in of_position], color=colors(position / max(n - 1, 1) * 0.9),
            lw=1.2, label=f"{position}: {token_label(of_position[0]['token'])}",
        )  # fmt: skip
    means = [r["layer_mean"] for r in rows if r["position"] == 0]
    ax.plot(layers, means, color="black", lw=3, ls="--", label="mean over positions")
    ax.set_yscale("log")
    ax.set_xlabel("layer (0 = embedding, ℓ = after block ℓ - 1)")
    ax.set_ylabel("‖residual stream‖₂ (log scale)")
    ax.set_title("the residual stream's length after every block, one line per token")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return Plot(figure, Table(rows))
