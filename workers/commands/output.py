"""Rows for people and for programs: an aligned table at a terminal, CSV or JSON otherwise."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

__all__ = ["render"]


def render(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str, out: TextIO = sys.stdout) -> None:
    """Write ``rows`` as ``table``, ``csv`` or ``json``; ``auto`` is a table at a terminal and CSV otherwise."""
    if fmt == "auto":
        fmt = "table" if out.isatty() else "csv"
    if fmt == "json":
        json.dump([{column: _plain(row[column]) for column in columns} for row in rows], out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_text(row[column]) for column in columns] for row in rows)
    else:
        out.write(_table(rows, columns))


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_text(row[column]) for column in columns] for row in rows]
    widths = [max([len(column), *(len(line[i]) for line in cells)]) for i, column in enumerate(columns)]
    numeric = [all(isinstance(row[column], int | float | Decimal) for row in rows) and rows for column in columns]
    buffer = io.StringIO()

    def line(values: Sequence[str], header: bool = False) -> None:
        parts = [
            value.rjust(width) if numeric[i] and not header else value.ljust(width)
            for i, (value, width) in enumerate(zip(values, widths, strict=True))
        ]
        buffer.write("  ".join(parts).rstrip() + "\n")

    line(columns, header=True)
    line(["-" * width for width in widths], header=True)
    for values in cells:
        line(values)
    if not rows:
        buffer.write("(nothing in this range)\n")
    return buffer.getvalue()


def _plain(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


def _text(value: object) -> str:
    if value is None:
        return ""
    plain = _plain(value)
    return str(plain)
