"""The logit lens: what the model would say if it stopped after layer ℓ.

Every block adds its output to the residual stream, and only at the end do the final
RMSNorm and the output head turn the stream into next-token scores. Nothing stops us
from applying that same norm and head to the stream after any earlier block (nostalgebraist,
2020). The guess at the top is then exactly the model's own; lower down one watches the
prediction form: early layers mostly echo the input token, and the answer appears,
sometimes abruptly, in the later layers.
"""

from __future__ import annotations

from typing import Any

import torch

from llmhood.llm import LLM
from llmhood.plot.figure import Plot, new_figure, token_label
from llmhood.plot.forward import forward_pass
from llmhood.plot.table import Table


def logit_lens(llm: LLM, text: str) -> list[dict[str, Any]]:
    """Per layer and position, the likeliest next token and its probability.

    Layer 0 reads the embeddings, layer ℓ the stream after block ℓ - 1; the last layer,
    n_layers, is the model's own output.
    """
    seen = forward_pass(llm, text)
    model = llm.model
    rows = []
    with torch.inference_mode():
        for layer, hidden in enumerate(seen.seen.hidden):
            probs = model.output(model.norm(hidden[0])).float().softmax(-1)  # (seqlen, vocab)
            best, ids = probs.max(-1)
            for position, (p, i) in enumerate(zip(best.tolist(), ids.tolist(), strict=True)):
                rows.append(
                    {
                        "layer": layer,
                        "position": position,
                        "input_token": seen.tokens[position],
                        "top_token": llm.tokenizer.decode([i]),
                        "top_id": i,
                        "probability": p,
                    }
                )
    return rows


def plot_logit_lens(llm: LLM, text: str) -> Plot:
    """A layer × position heatmap of the top guess's probability, each cell labelled with
    the guessed token."""
    rows = logit_lens(llm, text)
    n_layers = max(r["layer"] for r in rows) + 1
    n = max(r["position"] for r in rows) + 1
    probs = torch.tensor([r["probability"] for r in rows]).view(n_layers, n)
    figure = new_figure(2.5 + 0.95 * n, 1.5 + 0.3 * n_layers)
    ax = figure.subplots()
    image = ax.imshow(probs.numpy(), cmap="Blues", vmin=0, vmax=1, origin="lower", aspect="auto")
    for r in rows:
        ax.text(
            r["position"], r["layer"], token_label(r["top_token"])[:10], ha="center",
            va="center", fontsize=7, color="white" if r["probability"] > 0.6 else "black",
        )  # fmt: skip
    inputs = [token_label(r["input_token"]) for r in rows[:n]]
    ax.set_xticks(range(n), inputs, rotation=45, ha="right", fontsize=9)
    names = ["embedding"] + [f"after block {i}" for i in range(n_layers - 1)]
    names[-1] += " = output"
    ax.set_yticks(range(n_layers), names, fontsize=8)
    ax.set_xlabel("input token (each column predicts the token after it)")
    figure.colorbar(image, ax=ax, shrink=0.6, label="probability of the top guess")
    ax.set_title(
        "logit lens: the final norm and output head applied after every block; "
        "the top row is the model's real output",
        fontsize=10,
    )
    return Plot(figure, Table(rows))
