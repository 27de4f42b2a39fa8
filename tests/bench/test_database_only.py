"""The worker benchmark's reference, the database alone (bench/database_only.py), does the worker's own writes:
replaying the statements it recorded builds exactly the tables the worker's store built."""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from support import empty, snapshot

from workers.tools.simulator import scenario

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
import database_only


async def test_replaying_the_recorded_statements_builds_what_the_store_built(
    db: AsyncEngine, database_url: str
) -> None:
    # The scenario has ad clicks, delivery reports, contact merges (the exclusive lock) and duplicates.
    bodies = [callback.body for callback in scenario(seed=3, people=60).callbacks]
    batches = await database_only.record(database_url, bodies, batch_size=50)
    stored = await snapshot(db)
    assert stored["callbacks"], "the store archived nothing"
    assert stored["ad_clicks"], "the scenario has no ad clicks"

    await empty(db)
    seconds = await database_only.replay(database_url, batches, connections=2)

    assert seconds > 0
    assert await snapshot(db) == stored
