"""Migration 0006: ``conversion_events`` takes the business's plain SQL — a second insert of an event is a no-op —
and its trigger refuses at insert what Meta could never take, saying why."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from workers.runtime.database import sqlstate

_INSERT = text(
    """
    INSERT INTO conversion_events (event_id, event_name, event_time, contact_id, channel, identity, ctwa_clid,
                                   value, currency, custom_data)
    VALUES (:event_id, :event_name, :event_time, :contact_id, :channel, :identity, :ctwa_clid,
            :value, :currency, CAST(:custom_data AS jsonb))
    ON CONFLICT (event_id) DO NOTHING
    """
)


def event(**changes: Any) -> dict[str, Any]:
    return {
        "event_id": "order-42",
        "event_name": "Purchase",
        "event_time": datetime(2026, 12, 1, 10, tzinfo=UTC),
        "contact_id": "C1",
        "channel": None,
        "identity": None,
        "ctwa_clid": None,
        "value": Decimal("59.9"),
        "currency": "EUR",
        "custom_data": '{"order_id": "42"}',
    } | changes


async def insert(db: AsyncEngine, **changes: Any) -> int:
    async with db.begin() as connection:
        return (await connection.execute(_INSERT, event(**changes))).rowcount


async def test_a_second_insert_of_an_event_changes_nothing(db: AsyncEngine) -> None:
    assert await insert(db) == 1
    assert await insert(db, event_name="OrderShipped", value=Decimal(10), contact_id="C2") == 0
    async with db.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT event_name, contact_id, value, status, attempts, custom_data FROM conversion_events")
            )
        ).one()
    assert tuple(row) == ("Purchase", "C1", Decimal("59.9"), "pending", 0, {"order_id": "42"})


async def test_empty_strings_are_null_and_any_of_the_three_names_the_person(db: AsyncEngine) -> None:
    await insert(db, event_id="by-contact", channel="", identity="", ctwa_clid="")
    await insert(db, event_id="by-identity", contact_id="", channel="WHATSAPP", identity="34600000001")
    await insert(db, event_id="by-click", contact_id=None, ctwa_clid="CL1", value=None, currency=None)
    async with db.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT event_id, contact_id, channel, identity, ctwa_clid FROM conversion_events ORDER BY id")
            )
        ).all()
    assert [tuple(row) for row in rows] == [
        ("by-contact", "C1", None, None, None),
        ("by-identity", None, "WHATSAPP", "34600000001", None),
        ("by-click", None, None, None, "CL1"),
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"event_id": ""}, "event_id is required"),
        ({"event_name": "Lead"}, "event_name 'Lead' is not one Meta takes for business messaging"),
        ({"event_name": None}, "event_name NULL is not one Meta takes"),
        ({"event_time": None}, "event_time is required"),
        ({"contact_id": None}, "no person: give contact_id, or channel and identity, or ctwa_clid"),
        ({"contact_id": "", "identity": "34600000001"}, "identity '34600000001' needs its channel"),
        ({"currency": "eur"}, "currency 'eur' is not an ISO 4217 code (three capital letters)"),
        ({"currency": "EURO"}, "currency 'EURO' is not an ISO 4217 code"),
        ({"value": Decimal(-1)}, "value -1 is not a number of at least 0"),
        ({"value": Decimal("NaN")}, "value NaN is not a number of at least 0"),
        ({"currency": None}, "value 59.9 needs its currency"),
        ({"custom_data": '["order-42"]'}, "custom_data must be a JSON object"),
        ({"custom_data": '"order-42"'}, "custom_data must be a JSON object"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_the_trigger_refuses_what_meta_could_never_take_saying_why(
    db: AsyncEngine, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(DBAPIError) as refused:
        await insert(db, **changes)
    assert sqlstate(refused.value) == "23514"  # check_violation
    assert message in str(refused.value.orig)
    async with db.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM conversion_events")) == 0


async def test_an_unknown_name_is_refused_with_the_names_meta_takes(db: AsyncEngine) -> None:
    with pytest.raises(DBAPIError) as refused:
        await insert(db, event_name="CompleteRegistration")
    assert "one of: Purchase, LeadSubmitted" in refused.value.orig.__cause__.hint  # type: ignore[union-attr]


async def test_an_update_is_checked_while_the_event_is_pending_only(db: AsyncEngine) -> None:
    await insert(db)
    with pytest.raises(DBAPIError, match="is not a number of at least 0"):
        async with db.begin() as connection:
            await connection.execute(text("UPDATE conversion_events SET value = -5"))
    async with db.begin() as connection:
        await connection.execute(text("UPDATE conversion_events SET status = 'sent', sent_at = now()"))
        # Erasure rewrites what was sent: no longer the trigger's business.
        await connection.execute(text("UPDATE conversion_events SET identity = 'erased:C1', custom_data = NULL"))
