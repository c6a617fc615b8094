"""Who looks at whom: one layer's attention weights as heatmaps, one per head.

Row q of a head's map is the softmax over the keys that query q may see: it sums to 1,
and everything right of the diagonal is the causal mask, future tokens the query must not
see. Those cells are drawn hatched grey rather than as a weight of 0, because they are
not a learned "no": they were never candidates. With grouped-query attention the heads of
one group share a key/value head, so their maps differ only through their queries.

Weights come from the explicit attention path (`capture_weights`), the same softmax the
model's output is computed with.
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib
import torch
from matplotlib.axes import Axes
from matplotlib.colors import PowerNorm
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from llmhood.errors import LLMHoodError
from llmhood.llm import LLM
from llmhood.model.capture import check_layer
from llmhood.plot.figure import Plot, new_figure, token_label
from llmhood.plot.forward import forward_pass
from llmhood.plot.table import Table

# Masked cells take the colormap's "bad" colour, a light grey.
CMAP = matplotlib.colormaps["viridis"].with_extremes(bad="#d9d9d9")
# Cells get their weight written in them up to this many tokens.
ANNOTATE_UP_TO = 16


def check_layer_head(llm: LLM, layer: int, head: int | None) -> None:
    c = llm.config
    check_layer(llm.model, layer)
    if head is not None and not 0 <= head < c.n_heads:
        raise LLMHoodError(
            f"Head {head} does not exist: this model has {c.n_heads} query heads per layer, "
            f"0 to {c.n_heads - 1}."
        )


def attention_weights(llm: LLM, text: str, layer: int) -> tuple[list[str], torch.Tensor]:
    """The tokens of `text` and layer `layer`'s weights, (n_heads, q_len, kv_len) float32."""
    check_layer(llm.model, layer)  # before the forward pass, which also checks it
    seen = forward_pass(llm, text, [layer])
    return seen.tokens, seen.seen.attention[layer][0].float()


def attention_rows(
    tokens: list[str], weights: torch.Tensor, layer: int, heads: list[int]
) -> list[dict[str, Any]]:
    """One row per (head, query, key), masked cells included with weight 0."""
    n = len(tokens)
    return [
        {
            "layer": layer,
            "head": h,
            "query_position": q,
            "query_token": tokens[q],
            "key_position": k,
            "key_token": tokens[k],
            "weight": weights[h, q, k].item(),
            "masked": k > q,
        }
        for h in heads
        for q in range(n)
        for k in range(n)
    ]


def plot_attention(llm: LLM, text: str, layer: int, head: int | None = None) -> Plot:
    """Layer `layer`'s attention over `text`: one head's map, or a grid of every head."""
    check_layer_head(llm, layer, head)
    tokens, weights = attention_weights(llm, text, layer)
    c = llm.config
    heads = list(range(c.n_heads)) if head is None else [head]
    labels = [token_label(t) for t in tokens]
    n = len(tokens)
    if head is None:
        cols = math.ceil(math.sqrt(len(heads)))
        rows = math.ceil(len(heads) / cols)
        side = 2.2 + 0.22 * n
        figure = new_figure(cols * side + 1, rows * side + 0.5)
        axes = figure.subplots(rows, cols, squeeze=False).flatten()
    else:
        side = 3 + 0.45 * n
        figure = new_figure(side + 1.5, side)
        axes = [figure.subplots()]
    group = c.n_heads // c.n_kv_heads
    for ax, h in zip(axes, heads, strict=False):
        image = _heatmap(ax, weights[h], labels, annotate=head is not None and n <= ANNOTATE_UP_TO)
        ax.set_title(f"head {h} (KV head {h // group})", fontsize=10)
        ax.label_outer()  # in a grid, token labels only along the left and bottom edges
    for ax in axes[len(heads) :]:
        ax.set_visible(False)
    figure.colorbar(image, ax=axes, shrink=0.6, label="attention weight (square-root scale)")
    which = f"head {head}" if head is not None else f"all {c.n_heads} heads"
    figure.suptitle(
        f"layer {layer}, {which}: each row is where that token looks (rows sum to 1; "
        "hatched = future, masked)",
        fontsize=11,
    )
    return Plot(figure, Table(attention_rows(tokens, weights, layer, heads)))


def _heatmap(ax: Axes, weights: torch.Tensor, labels: list[str], annotate: bool) -> AxesImage:
    """(q_len, kv_len) weights with the masked upper triangle greyed and hatched."""
    n = len(labels)
    masked = torch.ones(n, n, dtype=torch.bool).triu(1)
    values = weights.masked_fill(masked, float("nan")).numpy()  # NaN cells take the "bad" colour
    # A square-root colour scale: in many heads the first token soaks up most of the
    # weight (an "attention sink"), and a linear scale would paint the rest black.
    norm = PowerNorm(gamma=0.5, vmin=0.0, vmax=1.0)
    image = ax.imshow(values, cmap=CMAP, norm=norm, interpolation="nearest")
    for q in range(n - 1):  # one hatched strip per row, right of the diagonal
        ax.add_patch(
            Rectangle((q + 0.5, q - 0.5), n - q - 1, 1, fill=False, hatch="///", lw=0, ec="#9e9e9e")
        )
    if annotate:
        for q in range(n):
            for k in range(q + 1):
                w = weights[q, k].item()
                ax.text(k, q, f"{w:.2f}"[1:] if w < 1 else "1", ha="center", va="center",
                        fontsize=7, color="black" if w > 0.3 else "white")  # fmt: skip
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("key (looked at)", fontsize=8)
    ax.set_ylabel("query (looking)", fontsize=8)
    return image


def top_keys(table: Table, query: str, k: int = 3) -> list[dict[str, Any]]:
    """For each head in `table` and each position whose token is `query` (spaces ignored),
    the `k` keys it attends to most: dicts of head, query_position and keys, a list of
    (key_position, key_token, weight)."""
    wanted = query.strip()
    positions = sorted(
        {r["query_position"] for r in table.rows if r["query_token"].strip() == wanted}
    )
    if not positions:
        tokens = sorted({r["query_position"]: r["query_token"] for r in table.rows}.items())
        raise LLMHoodError(
            f"No token of the text reads {query!r}; its tokens are "
            f"{', '.join(repr(t) for _, t in tokens)}."
        )
    out = []
    for head in sorted({r["head"] for r in table.rows}):
        for q in positions:
            row = table.where(head=head, query_position=q)
            strongest = sorted(row, key=lambda r: -r["weight"])[:k]
            keys = [(r["key_position"], r["key_token"], r["weight"]) for r in strongest]
            out.append({"head": head, "query_position": q, "keys": keys})
    return out
