"""The loss curves of a training run: what people look at first to see whether it learned.

Training loss is noisy from step to step, so it is drawn faint with a moving average over
it; the held-out loss is drawn at the steps it was measured. A held-out curve that rises
while the training curve falls is overfitting, visible at a glance.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmhood.plot.figure import Plot, new_figure
from llmhood.plot.table import Table


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_loss(history: Sequence[dict], title: str = "training loss") -> Plot:
    """history: one dict per logged step with `step` and `loss`, and `eval_loss` where a
    held-out evaluation ran."""
    train = [h for h in history if "loss" in h]
    evals = [h for h in history if "eval_loss" in h]
    figure = new_figure(7, 4)
    ax = figure.add_subplot()
    steps = [h["step"] for h in train]
    losses = [h["loss"] for h in train]
    if train:
        ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=1)
        window = max(1, len(train) // 20)
        ax.plot(
            steps,
            _moving_average(losses, window),
            color="tab:blue",
            label=f"train (moving average of {window})",
        )
    if evals:
        ax.plot(
            [h["step"] for h in evals],
            [h["eval_loss"] for h in evals],
            "o-",
            color="tab:orange",
            label="held-out",
        )
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy per trained token (nats)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend()
    rows = [
        {"step": h["step"], "loss": h.get("loss"), "eval_loss": h.get("eval_loss")} for h in history
    ] or [{"step": 0, "loss": None, "eval_loss": None}]
    return Plot(figure, Table(rows))
