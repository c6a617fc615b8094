"""The numbers behind a plot, as a table one can check, print or save as CSV.

A picture can mislead (a colour scale, a clipped axis); the table cannot. Every plot
function returns one, so that a test, a notebook or a spreadsheet can read the very
values that were drawn.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhood.errors import LLMHoodError


@dataclass
class Table:
    """One dict per row, with the same keys in the same order in every row."""

    rows: list[dict[str, Any]]

    def __post_init__(self) -> None:
        if not self.rows:
            raise ValueError("A table needs at least one row.")
        columns = list(self.rows[0])
        for row in self.rows:
            if list(row) != columns:
                raise ValueError(f"Table rows differ in their columns: {list(row)} vs {columns}")

    @property
    def columns(self) -> list[str]:
        return list(self.rows[0])

    def column(self, name: str) -> list[Any]:
        return [row[name] for row in self.rows]

    def where(self, **equal: Any) -> list[dict[str, Any]]:
        """The rows whose columns equal the given values, e.g. `where(layer=3, head=0)`."""
        return [row for row in self.rows if all(row[k] == v for k, v in equal.items())]

    def to_csv(self, path: str | Path | None = None) -> str:
        """The table as CSV text; also written to `path` when one is given."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        text = buffer.getvalue()
        if path is not None:
            path = Path(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
            except OSError as e:
                raise LLMHoodError(f"Cannot write the table to {path}: {e.strerror}.") from e
        return text

    def __len__(self) -> int:
        return len(self.rows)
