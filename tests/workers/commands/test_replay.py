"""``ctwa replay``: the projections run again from the archive — all of them, or a range and a trigger."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from callbacks import contact_event
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import ctwa, snapshot, store

from ingest.settings import Settings
from workers.tools.simulator import scenario


def _stream() -> list[bytes]:
    story = scenario(seed=5, people=120, ads=4, start=datetime(2026, 3, 2, 12, tzinfo=UTC))
    bodies = [callback.body for callback in story.callbacks]
    merged = [json.loads(body) for body in bodies if b"contact_merge_notification" in body]
    created = [json.loads(body) for body in bodies if b"contact_create_notification" in body]
    assert merged
    victim = created[0]["contact_create_notification"]["contact"]
    bodies.append(
        contact_event("delete", victim["id"], 90, name="x", identities=[victim["channel_identities"][0]["identity"]])
    )
    return bodies


async def test_replay_all_rebuilds_exactly_the_live_tables(worker_settings: Settings, db: AsyncEngine) -> None:
    await store(db, _stream(), batch_size=60)
    live = await snapshot(db)
    assert live["erased_identities"]
    assert live["person_touches"]
    _, said = await ctwa("replay", "--all", settings=worker_settings)
    assert "callbacks re-projected" in said
    assert "callbacks" in said.splitlines()[-2]  # the progress line
    assert await snapshot(db) == live


async def test_range_replay_repairs_and_is_idempotent(worker_settings: Settings, db: AsyncEngine) -> None:
    await store(db, _stream(), batch_size=60)
    live = await snapshot(db)
    async with db.begin() as connection:
        # What a parsing bug might have left: wrong texts, a click lost, rollups off, a report missing.
        await connection.execute(text("UPDATE messages SET text = 'garbled'"))
        await connection.execute(
            text("DELETE FROM ad_clicks WHERE message_id = (SELECT min(message_id) FROM ad_clicks)")
        )
        await connection.execute(text("UPDATE ad_daily SET clicks = clicks + 7"))
        await connection.execute(text("DELETE FROM person_touches WHERE person_key LIKE 'identity:%'"))
        await connection.execute(text("DELETE FROM delivery_reports WHERE status = 'READ'"))
    since = "2020-01-01"
    await ctwa("replay", "--since", since, "--trigger", "MESSAGE_INBOUND", settings=worker_settings)
    repaired = await snapshot(db)
    assert repaired["messages"] == live["messages"]
    assert repaired["ad_clicks"] == live["ad_clicks"]
    assert repaired["ad_daily"] == live["ad_daily"]
    assert repaired["person_touches"] == live["person_touches"]
    assert repaired["delivery_reports"] != live["delivery_reports"]  # not replayed: another trigger
    await ctwa("replay", "--since", since, "--trigger", "message_delivery", settings=worker_settings)
    assert await snapshot(db) == live
    await ctwa("replay", "--since", since, "--until", "2100-01-01", settings=worker_settings)
    assert await snapshot(db) == live  # idempotent

    await ctwa("replay", settings=worker_settings, expect=2)
    await ctwa("replay", "--all", "--since", since, settings=worker_settings, expect=2)
