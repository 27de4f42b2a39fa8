"""``ctwa prune``: delete archived callbacks older than a given age; the tables built from them stay."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TextIO

from sqlalchemy import text

from workers.runtime.database import create_engine
from workers.tools.progress import Progress

__all__ = ["parse_age", "prune"]

_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_age(value: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``2w``."""
    match = re.fullmatch(r"(\d+)([mhdw])", value.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"not an age like 90d, 12h, 30m or 2w: {value!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


async def prune(
    database_url: str,
    older_than: timedelta,
    *,
    progress: TextIO | None = None,
    now: datetime | None = None,
    statement_cache: bool = True,
) -> int:
    """Delete the callbacks received more than ``older_than`` ago, in chunks; how many."""
    cutoff = (now or datetime.now(UTC)) - older_than
    engine = create_engine(database_url, application_name="ctwa-prune", connections=1, statement_cache=statement_cache)
    deleted = 0
    try:
        async with engine.begin() as connection:
            total = int(
                await connection.scalar(
                    text("SELECT count(*) FROM callbacks WHERE received_at < :cutoff"), {"cutoff": cutoff}
                )
                or 0
            )
            if total:
                # Recorded first: from now on `ctwa replay --all` knows the archive is incomplete.
                await connection.execute(
                    text("INSERT INTO archive_prunes (pruned_before, callbacks) VALUES (:cutoff, :total)"),
                    {"cutoff": cutoff, "total": total},
                )
        meter = Progress(progress, total=total, unit="callbacks deleted")
        while deleted < total:
            async with engine.begin() as connection:
                result = await connection.execute(
                    text(
                        "DELETE FROM callbacks WHERE id IN ("
                        "SELECT id FROM callbacks WHERE received_at < :cutoff ORDER BY id LIMIT 5000)"
                    ),
                    {"cutoff": cutoff},
                )
            if not result.rowcount:
                break
            deleted += result.rowcount
            meter.update(deleted)
        meter.finish(deleted)
        return deleted
    finally:
        await engine.dispose()
