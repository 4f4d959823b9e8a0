"""Plain-text helpers every view shares (the CLI's tables, error messages, listings).

One copy each, below everything else, so that the registry's listing, the engine's reports and the
benchmark comparison read alike and none of them imports the command-line module for a table.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

__all__ = ["format_table", "plural", "first_line"]


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str] | None = None,
                 align: str | None = None) -> str:
    """Rows as aligned text columns (two spaces apart); ``align`` is one 'l'/'r' per column."""
    table = [[str(cell) for cell in row] for row in ([headers] if headers else []) + [list(r) for r in rows]]
    if not table:
        return ""
    columns = max(len(row) for row in table)
    for row in table:
        row.extend([""] * (columns - len(row)))
    widths = [max(len(row[i]) for row in table) for i in range(columns)]
    align = (align or "l" * columns).ljust(columns, "l")
    lines = []
    for number, row in enumerate(table):
        cells = [cell.rjust(w) if a == "r" else cell.ljust(w) for cell, w, a in zip(row, widths, align)]
        lines.append("  ".join(cells).rstrip())
        if headers and number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plural(kind: str) -> str:
    """``"backbone"`` -> ``"backbones"``; ``"weights"`` stays ``"weights"``, not ``"weightss"``."""
    return kind if kind.endswith("s") else kind + "s"


def first_line(doc: str | None) -> str:
    """The summary line of a docstring (cleaned of its indentation); ``""`` when there is none."""
    text = (inspect.cleandoc(doc) if doc else "").strip()
    return text.splitlines()[0].strip() if text else ""
