"""Migration 0006 on a database whose ``conversions`` table holds rows: they become sent conversion events, tied to
their click, counted by the views; the downgrade gives them back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from support import RUN_ID, drop_database

from workers.commands.migrate import downgrade, upgrade

_ROWS = [
    """INSERT INTO ad_clicks (message_id, ctwa_clid, source_id, contact_id, clicked_at, referral)
       VALUES ('M1', 'CL1', 'AD1', 'C1', '2025-11-03T09:00Z', '{}')""",
    """INSERT INTO conversions (ctwa_clid, event_name, event_time, event_id, value, currency, reported_at)
       VALUES ('CL1', 'Purchase', '2025-11-03T10:00Z', 'order-1', 59.9, 'EUR', '2025-11-03T10:01Z'),
              ('CL1', 'Lead', '2025-11-03T11:00Z', NULL, NULL, NULL, '2025-11-03T11:01Z')""",
]
_CONVERSIONS = "SELECT ctwa_clid, event_name, event_time, event_id, value, currency, reported_at FROM conversions"


@pytest.fixture
async def database_at_0005(database_url: str) -> AsyncIterator[str]:
    url = make_url(database_url).set(database=f"ctwa_test_{RUN_ID}_0006").render_as_string(hide_password=False)
    await drop_database(url)
    await asyncio.to_thread(upgrade, url, "0005")
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        for statement in _ROWS:
            await connection.execute(text(statement))
    await engine.dispose()
    yield url
    await drop_database(url)


async def test_reported_conversions_become_sent_events_and_come_back_on_downgrade(database_at_0005: str) -> None:
    engine = create_async_engine(database_at_0005)
    try:
        async with engine.connect() as connection:
            before = [dict(row._mapping) for row in await connection.execute(text(_CONVERSIONS + " ORDER BY id"))]
        await asyncio.to_thread(upgrade, database_at_0005)
        async with engine.connect() as connection:
            events = [
                dict(row._mapping)
                for row in await connection.execute(
                    text(
                        "SELECT event_id, event_name, status, sent_ctwa_clid, click_message_id, sent_at "
                        "FROM conversion_events ORDER BY id"
                    )
                )
            ]
            reported = (await connection.execute(text("SELECT conversions FROM click_conversions"))).scalar_one()
            daily = (await connection.execute(text("SELECT conversions FROM ad_conversions_daily"))).scalar_one()
        assert [(e["event_id"], e["event_name"], e["status"], e["click_message_id"]) for e in events] == [
            ("order-1", "Purchase", "sent", "M1"),
            ("conversions:2", "Lead", "sent", "M1"),  # a name Meta no longer takes: history, kept as it was
        ]
        assert {e["sent_ctwa_clid"] for e in events} == {"CL1"}
        assert (reported, daily) == (2, 2)

        await asyncio.to_thread(downgrade, database_at_0005, "0005")
        async with engine.connect() as connection:
            after = [dict(row._mapping) for row in await connection.execute(text(_CONVERSIONS + " ORDER BY id"))]
        assert after == [before[0], {**before[1], "event_id": "conversions:2"}]
    finally:
        await engine.dispose()
