"""What every plot shares: the result type, a figure that never needs a display, saving,
and token labels one can read.

Figures are built with matplotlib's object-oriented API on the Agg canvas, never through
`pyplot`: nothing opens a window, nothing global is left behind, and the same code runs
on a server, in a test and in a notebook.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from llmhood.errors import LLMHoodError
from llmhood.plot.table import Table

FORMATS = ("png", "svg")
DPI = 110
# Invisible characters made visible in axis labels: a leading space is how byte-level BPE
# marks the start of a word, so it matters which tokens carry one.
VISIBLE = {" ": "␣", "\n": "↵", "\t": "→"}


class Plot(NamedTuple):
    """A figure and the numbers drawn in it: `figure, table = plot_rope(config)`."""

    figure: Figure
    table: Table

    def save(self, path: str | Path) -> Path:
        """Write the figure as PNG or SVG, chosen by the file's suffix."""
        path = Path(path)
        fmt = path.suffix.lstrip(".").lower()
        if fmt not in FORMATS:
            raise LLMHoodError(
                f"Cannot save a plot as '{path.name}': the file name must end in "
                f"{' or '.join('.' + f for f in FORMATS)}."
            )
        # No dates or random ids in the file, so regenerating an image gives the same bytes.
        metadata = {"Date": None} if fmt == "svg" else {}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with matplotlib.rc_context({"svg.hashsalt": "llmhood"}):
                self.figure.savefig(path, format=fmt, dpi=DPI, metadata=metadata)
        except OSError as e:
            raise LLMHoodError(f"Cannot write the plot to {path}: {e.strerror}.") from e
        return path


def new_figure(width: float, height: float) -> Figure:
    """A figure of width × height inches on the non-interactive Agg canvas."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def token_label(text: str) -> str:
    """A token's text with spaces, newlines and tabs shown and other control characters
    escaped, for an axis label."""
    return "".join(VISIBLE.get(ch) or (ch if ch.isprintable() else ascii(ch)[1:-1]) for ch in text)
