"""Migration 0005: the person_key columns come from the SQL function ``person_key()``, on a database that already
holds rows and a view of its owner's own — values, views and indexes as they were, both ways."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from support import RUN_ID, drop_database

from workers.commands.migrate import downgrade, upgrade

_ROWS = [
    """INSERT INTO messages (message_id, contact_id, channel, identity, kind, sent_at, has_referral)
       VALUES ('M1', 'C1', 'WHATSAPP', '34600000001', 'text', '2025-11-03T09:05Z', false),
              ('M2', NULL, 'WHATSAPP', '34600000002', 'text', '2025-11-03T09:06Z', false),
              ('M3', NULL, NULL, NULL, 'text', '2025-11-03T09:07Z', false)""",
    """INSERT INTO ad_clicks (message_id, source_id, contact_id, channel, identity, clicked_at, referral)
       VALUES ('M1', 'AD1', 'C1', 'WHATSAPP', '34600000001', '2025-11-03T09:00Z', '{}'),
              ('M2', 'AD1', NULL, 'MESSENGER', 'PSID-2', '2025-11-03T09:01Z', '{}')""",
    """INSERT INTO delivery_reports (message_id, status, contact_id, channel, identity, reported_at)
       VALUES ('O1', 'DELIVERED', NULL, 'WHATSAPP', '34600000002', '2025-11-03T09:08Z')""",
    "INSERT INTO conversations (conversation_id, contact_id, started_at) VALUES ('V1', 'C1', '2025-11-03T09:02Z')",
    # A view of the owner's own on a person_key column: the migration must keep it.
    "CREATE VIEW people_per_ad AS SELECT source_id, count(DISTINCT person_key) AS people FROM ad_clicks GROUP BY 1",
]

_STATE = {
    "messages": "SELECT message_id, person_key FROM messages ORDER BY 1",
    "ad_clicks": "SELECT message_id, person_key FROM ad_clicks ORDER BY 1",
    "delivery_reports": "SELECT message_id, person_key FROM delivery_reports ORDER BY 1",
    "conversation_attribution": (
        "SELECT conversation_id, person_key, first_touch_message_id FROM conversation_attribution"
    ),
    "people_per_ad": "SELECT * FROM people_per_ad",
    "indexes": (
        # The indexes led by person_key (a later one holds it among its included columns).
        "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%(person_key%' "
        "AND tablename IN ('messages', 'ad_clicks', 'delivery_reports') ORDER BY 1"
    ),
}


@pytest.fixture
async def database_at_0004(database_url: str) -> AsyncIterator[str]:
    """A database migrated to revision 0004 (before the function), holding rows of every kind of person."""
    url = make_url(database_url).set(database=f"ctwa_test_{RUN_ID}_0005").render_as_string(hide_password=False)
    await drop_database(url)
    await asyncio.to_thread(upgrade, url, "0004")
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        for statement in _ROWS:
            await connection.execute(text(statement))
    await engine.dispose()
    yield url
    await drop_database(url)


async def _state(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        state = {name: [tuple(row) for row in await connection.execute(text(query))] for name, query in _STATE.items()}
        functions = await connection.scalar(text("SELECT count(*) FROM pg_proc WHERE proname = 'person_key'"))
    await engine.dispose()
    state["functions"] = [(functions,)]
    return state


async def test_the_function_generates_the_same_keys_and_every_view_stays(database_at_0004: str) -> None:
    before = await _state(database_at_0004)
    assert before["messages"] == [("M1", "contact:C1"), ("M2", "identity:WHATSAPP:34600000002"), ("M3", None)]
    assert before["ad_clicks"] == [("M1", "contact:C1"), ("M2", "identity:MESSENGER:PSID-2")]
    assert before["conversation_attribution"] == [("V1", "contact:C1", "M1")]
    assert before["people_per_ad"] == [("AD1", 2)]
    assert len(before["indexes"]) == 3
    assert before["functions"] == [(0,)]

    await asyncio.to_thread(upgrade, database_at_0004)
    after = await _state(database_at_0004)
    assert after == before | {"functions": [(1,)]}

    engine = create_async_engine(database_at_0004)
    async with engine.connect() as connection:
        generated = await connection.scalar(
            text(
                "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef JOIN pg_attribute "
                "ON attrelid = adrelid AND attnum = adnum WHERE adrelid = 'ad_clicks'::regclass "
                "AND attname = 'person_key'"
            )
        )
        called = await connection.scalar(text("SELECT person_key(NULL, 'WHATSAPP', '346')"))
    await engine.dispose()
    assert generated == "person_key(contact_id, channel, identity)"
    assert called == "identity:WHATSAPP:346"

    await asyncio.to_thread(downgrade, database_at_0004, "0004")
    assert await _state(database_at_0004) == before
