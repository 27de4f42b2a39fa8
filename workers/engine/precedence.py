"""Which of two callbacks decides a value: the later one by (time, business key) — never the one that came last.

Helpers for the ``ON CONFLICT … DO UPDATE SET`` clauses of the projections and rollups.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["newer", "take_newer", "take_when"]


def newer(table: str, column: str) -> str:
    """SQL for an upsert: the incoming ``column`` was set by a later callback than the stored one.

    ``column`` has two companions, ``<column>_at`` and ``<column>_key``, recording the callback that set it. The
    business key breaks ties between callbacks of the same time, so the outcome never depends on arrival order.
    """
    at, key = f"{column}_at", f"{column}_key"
    return (
        f"({table}.{at} IS NULL OR (EXCLUDED.{at} IS NOT NULL "
        f"AND (EXCLUDED.{at}, EXCLUDED.{key}) > ({table}.{at}, {table}.{key})))"
    )


def take_when(condition: str, table: str, columns: Iterable[str]) -> str:
    """SET clauses: each of ``columns`` takes the incoming value when ``condition`` holds, else keeps its own.

    Postgres evaluates every SET expression against the row as it was, so the columns of ``condition`` may be
    among ``columns``.
    """
    return ",\n".join(f"{c} = CASE WHEN {condition} THEN EXCLUDED.{c} ELSE {table}.{c} END" for c in columns)


def take_newer(table: str, column: str, values: Iterable[str]) -> str:
    """SET clauses taking ``values`` (with ``<column>_at`` and ``<column>_key``) from a newer callback."""
    return take_when(newer(table, column), table, [*values, f"{column}_at", f"{column}_key"])
