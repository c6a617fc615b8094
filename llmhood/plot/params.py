"""Where a Llama's parameters are: by kind of module, by layer, and what their values are.

Parameters are counted per tensor, and a tensor two modules share is counted once. With
tied embeddings the output head *is* the embedding matrix (`output.weight is
tok_embeddings.weight`): one 49152 × 576 matrix turns token ids into vectors on the way in
and scores vectors against every token on the way out. In SmolLM2-135M that one matrix is
21% of the model, more than any other kind of module summed over all 30 layers. Untie it
and a second matrix of the same size appears: the embedding and the output head become the
two largest entries, equal to the parameter. `synthetic_untied` builds such a model, shapes
only, to show it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.figure import SubFigure
from matplotlib.ticker import FuncFormatter

from llmhood.model import ModelConfig, Transformer
from llmhood.model.parameters import is_tied, kind_of, layer_of
from llmhood.plot.figure import Plot, new_figure
from llmhood.plot.table import Table

ORDER = [
    "embedding", "output head", "attention q", "attention k", "attention v", "attention o",
    "ffn gate", "ffn up", "ffn down", "norms",
]  # fmt: skip
COLORS = {
    "embedding": "#6a3d9a", "output head": "#cab2d6",
    "attention q": "#08519c", "attention k": "#3182bd", "attention v": "#6baed6",
    "attention o": "#bdd7e7", "ffn gate": "#a63603", "ffn up": "#e6550d",
    "ffn down": "#fd8d3c", "norms": "#31a354",
}  # fmt: skip
BINS = 80


def parameter_rows(model: Transformer) -> list[dict[str, Any]]:
    """One row per unique parameter tensor; a tied output head appears once, as the embedding.

    rms and abs_max describe the values; they are None for a model on the meta device.
    """
    tied = is_tied(model)
    rows = []
    # named_parameters() yields a shared tensor once, under the first name that holds it.
    for name, p in model.named_parameters():
        kind = kind_of(name)
        rms = abs_max = None
        if not p.is_meta:
            values = p.detach().float()  # one pass each, no copies of float32 weights
            rms = torch.linalg.vector_norm(values).item() / math.sqrt(p.numel())
            low, high = torch.aminmax(values)
            abs_max = max(-low.item(), high.item())
        rows.append(
            {
                "name": name,
                "kind": kind,
                "layer": layer_of(name),
                "shape": "×".join(map(str, p.shape)),
                "parameters": p.numel(),
                "tied": tied and kind == "embedding",
                "rms": rms,
                "abs_max": abs_max,
            }
        )
    return rows


def millions(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"


def totals(rows: list[dict[str, Any]], key: str) -> dict[Any, int]:
    """Parameters summed by `key` ('kind' or 'layer'), in table order."""
    out: dict[Any, int] = defaultdict(int)
    for row in rows:
        out[row[key]] += row["parameters"]
    return dict(out)


def synthetic_untied(config: ModelConfig) -> Transformer:
    """A Llama of `config`'s shape with its own output head, built on the meta device:
    every tensor has its shape and no values, so it costs no memory and no time."""
    return Transformer.shapes_only(config.replace(tie_embeddings=False))


def plot_params(model: Transformer, name: str = "model") -> Plot:
    """Bars of parameters by kind and by layer, and (when the model has values) histograms
    of the weights of each kind. `name` heads the title, e.g. which model this is."""
    rows = parameter_rows(model)
    tied = is_tied(model)
    has_values = rows[0]["rms"] is not None
    figure = new_figure(15, 10 if has_values else 5)
    total = sum(row["parameters"] for row in rows)
    head = "tied to the embedding, counted once" if tied else "untied: a matrix of its own"
    figure.suptitle(f"{name}: {total:,} parameters; output head {head}", fontsize=13)
    top, bottom = figure.subfigures(2, 1, height_ratios=[1, 1.1]) if has_values else (figure, None)
    ax_kind, ax_layer = top.subplots(1, 2, width_ratios=[1, 1.4])
    _bars_by_kind(ax_kind, rows, tied, total)
    _bars_by_layer(ax_layer, rows)
    if bottom is not None:
        _histograms(bottom, model, rows, tied)
    return Plot(figure, Table(rows))


def _bars_by_kind(ax: Axes, rows: list[dict[str, Any]], tied: bool, total: int) -> None:
    by_kind = totals(rows, "kind")
    kinds = [k for k in ORDER if k in by_kind or k == "output head"]
    kinds += [k for k in by_kind if k not in ORDER]
    counts = [by_kind.get(k, 0) for k in kinds]
    labels = ["embedding\n(= output head)" if k == "embedding" and tied else k for k in kinds]
    ys = range(len(kinds))
    ax.barh(ys, counts, color=[COLORS.get(k, "grey") for k in kinds])
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()
    for y, kind, n in zip(ys, kinds, counts, strict=True):
        text = f" {millions(n)}  ({100 * n / total:.{1 if n >= total / 1000 else 3}f}%)"
        if kind == "output head" and tied:
            text = " 0: tied, its weights are the embedding's"
        ax.text(n, y, text, va="center", fontsize=9)
    ax.set_xlim(0, max(counts) * 1.45)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e6:g}M"))
    ax.set_xlabel("parameters (all layers together)")
    ax.set_title("by kind of module")


def _ordered_kinds(rows: list[dict[str, Any]]) -> list[str]:
    """The kinds present in `rows`: those of ORDER first, in its order, then others sorted."""
    present = {row["kind"] for row in rows}
    return [k for k in ORDER if k in present] + sorted(present - set(ORDER))


def _bars_by_layer(ax: Axes, rows: list[dict[str, Any]]) -> None:
    in_blocks = [row for row in rows if row["layer"] is not None]
    layers = sorted({row["layer"] for row in in_blocks})
    kinds = _ordered_kinds(in_blocks)
    bottom = [0] * len(layers)
    for kind in kinds:
        per_layer = totals([row for row in in_blocks if row["kind"] == kind], "layer")
        counts = [per_layer.get(layer, 0) for layer in layers]
        ax.bar(layers, counts, bottom=bottom, color=COLORS.get(kind, "grey"), label=kind)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    by_layer = totals(in_blocks, "layer")
    per_block = by_layer[layers[0]]
    same = all(n == per_block for n in by_layer.values())
    ax.set_title(f"by layer: {per_block:,} in every block" if same else "by layer")
    ax.set_xlabel("layer")
    ax.set_ylabel("parameters")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e6:g}M"))
    ax.set_ylim(0, max(bottom) * 1.3)
    ax.legend(fontsize=8, ncols=4, loc="upper center")


def _histograms(fig: SubFigure, model: Transformer, rows: list[dict[str, Any]], tied: bool) -> None:
    """Weight values per kind, pooled over the layers, log scale so that the tails show."""
    by_name = dict(model.named_parameters())
    kinds = _ordered_kinds(rows)
    axes = fig.subplots(2, (len(kinds) + 1) // 2).flatten()
    for ax, kind in zip(axes, kinds, strict=False):
        of_kind = [r for r in rows if r["kind"] == kind]
        n = sum(r["parameters"] for r in of_kind)
        rms = math.sqrt(sum(r["parameters"] * r["rms"] ** 2 for r in of_kind) / n)
        abs_max = max(r["abs_max"] for r in of_kind)
        # Matrices are centred at 0 and ±6 rms holds all but the rarest values; norm gains
        # are not centred, so they get their whole range.
        edge = abs_max if kind == "norms" else min(abs_max, 6 * rms)
        counts = sum(
            torch.histc(by_name[r["name"]].detach().float(), BINS, -edge, edge) for r in of_kind
        )
        edges = torch.linspace(-edge, edge, BINS + 1)
        ax.stairs((counts / n).numpy(), edges.numpy(), color=COLORS.get(kind, "grey"))
        ax.set_yscale("log")
        label = {"norms": "norm gains"}.get(kind, kind)
        if kind == "embedding" and tied:
            label = "embedding = output head"
        ax.set_title(f"{label}\nrms {rms:.3f}, |max| {abs_max:.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[len(kinds) :]:
        ax.set_visible(False)
    fig.suptitle("weight values by kind: fraction of the values in each bin, log scale")
