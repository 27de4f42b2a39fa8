"""Rows for people and for programs: an aligned table at a terminal, CSV or JSON otherwise."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Mapping, Sequence
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
    # A column of numbers is right-aligned, with or without empty cells (a rate of no one is empty).
    numeric = [_numeric([row[column] for row in rows if row[column] is not None]) for column in columns]
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


def _numeric(values: Sequence[object]) -> bool:
    return bool(values) and all(isinstance(value, int | float | Decimal) for value in values)


def _plain(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _text(value: object) -> str:
    """A cell's text: a decimal with its own digits (``59.90``), a mapping as ``EUR 59.90, USD 10.00``."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{key} {_text(item)}" for key, item in value.items())
    return str(_plain(value))
