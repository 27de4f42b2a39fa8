"""Which of two callbacks decides a value: the later one by (time, business key) — never the one that came last."""

from __future__ import annotations

__all__ = ["newer"]


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
