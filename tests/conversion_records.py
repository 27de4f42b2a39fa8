"""Conversion events written straight into ``conversion_events``, for the outbox's and the sender's tests."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from workers.engine.erasure import Eraser

# What a sender writes with the click it attributed an event to: the click's ad, person and app.
ATTRIBUTED = text(
    """
    UPDATE conversion_events AS event
    SET click_source_id = click.source_id, click_person_key = click.person_key, click_app_id = click.app_id
    FROM ad_clicks AS click WHERE click.message_id = event.click_message_id AND event.click_source_id IS NULL
    """
)


async def record(db: AsyncEngine, event_id: str, at: datetime, **columns: Any) -> None:
    """A ``Purchase`` ``event_id`` at ``at``, no more than ``columns`` (any of the table's, ``custom_data`` a dict)
    say of it: no ctwa_clid, no person, unless given; attributed to ``click_message_id`` as a sender would."""
    row = {"event_id": event_id, "event_name": "Purchase", "event_time": at, **columns}
    if "custom_data" in row:
        row["custom_data"] = json.dumps(row["custom_data"])
    names = ", ".join(row)
    values = ", ".join(f"CAST(:{name} AS jsonb)" if name == "custom_data" else f":{name}" for name in row)
    async with db.begin() as connection:
        await connection.execute(text(f"INSERT INTO conversion_events ({names}) VALUES ({values})"), row)
        await connection.execute(ATTRIBUTED)


async def eraser_of(db: AsyncEngine) -> Eraser:
    """The database's eraser, as a sender loads it at start."""
    async with db.connect() as connection:
        return await Eraser.load(connection)
