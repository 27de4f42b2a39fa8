"""``ctwa prune``: delete archived callbacks older than a given age; the tables built from them stay."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import TextIO

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from workers.commands.arguments import age
from workers.commands.command import Subcommands, on_database
from workers.tools.progress import Progress

__all__ = ["prune", "register"]


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("prune", help="delete old callbacks from the archive; the tables stay")
    parser.add_argument("--archive-older-than", type=age, required=True, metavar="AGE", help="e.g. 90d, 12h, 2w")
    parser.set_defaults(run=_prune)


@on_database("ctwa-prune")
async def _prune(args: argparse.Namespace, engine: AsyncEngine) -> int:
    count = await prune(engine, args.archive_older_than, progress=sys.stderr)
    print(f"{count} archived callbacks deleted; the tables built from them stay", file=sys.stderr)
    return 0


_COUNT = text("SELECT count(*) FROM callbacks WHERE received_at < :cutoff")


async def prune(
    engine: AsyncEngine, older_than: timedelta, *, progress: TextIO | None = None, now: datetime | None = None
) -> int:
    """Delete the callbacks received more than ``older_than`` ago, in chunks; how many."""
    cutoff = (now or datetime.now(UTC)) - older_than
    deleted = 0
    async with engine.begin() as connection:
        found = await connection.scalar(_COUNT, {"cutoff": cutoff})
        total = int(found or 0)
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
