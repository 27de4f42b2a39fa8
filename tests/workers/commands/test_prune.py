"""``ctwa prune``: old callbacks leave the archive, the tables stay, and ``replay --all`` then refuses to run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import ctwa, inbound_bodies, store

from ingest.settings import Settings


async def test_prune_deletes_old_archive_keeps_tables_and_stops_replay_all(
    worker_settings: Settings, db: AsyncEngine
) -> None:
    await store(db, inbound_bodies(30))
    async with db.begin() as connection:
        await connection.execute(
            text("UPDATE callbacks SET received_at = CASE WHEN id <= 20 THEN :old ELSE now() END"),
            {"old": datetime.now(UTC) - timedelta(days=100)},
        )
    _, said = await ctwa("prune", "--archive-older-than", "90d", settings=worker_settings)
    assert "20 archived callbacks deleted" in said
    async with db.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM callbacks")) == 10
        assert await connection.scalar(text("SELECT count(*) FROM messages")) == 30
        assert await connection.scalar(text("SELECT callbacks FROM archive_prunes")) == 20
    _, said = await ctwa("replay", "--all", settings=worker_settings, expect=1)
    assert "pruned" in said
    async with db.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM messages")) == 30
    await ctwa("prune", "--archive-older-than", "ninety days", settings=worker_settings, expect=2)
