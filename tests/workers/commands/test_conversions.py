"""``ctwa conversions``: add a conversion (the trigger's refusals said as they are), the senders' status, the
events listed without personal data, and failed ones sent again — never sent, expired or erased ones."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import ctwa

from ingest.settings import Settings


@pytest.fixture
def on_db(db: AsyncEngine, database_url: str) -> Settings:
    """Settings on the (emptied) test database; no broker needed."""
    return Settings(database_url=database_url)


async def rows(db: AsyncEngine, sql: str) -> list[dict[str, Any]]:
    async with db.connect() as connection:
        return [dict(row._mapping) for row in await connection.execute(text(sql))]


async def seed(db: AsyncEngine, *events: tuple[str, str, int]) -> None:
    """Events (event_id, status, hours ago), as the senders would have left them."""
    async with db.begin() as connection:
        for event_id, status, hours in events:
            failed = status == "failed"
            await connection.execute(
                text(
                    "INSERT INTO conversion_events (event_id, event_name, event_time, contact_id, channel, identity, "
                    "value, currency, custom_data, status, attempts, next_attempt_at, error_code, error_subcode, "
                    "last_error) VALUES (:event_id, 'Purchase', :at, 'C1', 'WHATSAPP', '34600000001', 59.9, 'EUR', "
                    """'{"order_id": "42"}', :status, :attempts, :at, :code, :subcode, :error)"""
                ),
                {
                    "event_id": event_id,
                    "at": datetime.now(UTC) - timedelta(hours=hours),
                    "status": status,
                    "attempts": 0 if status == "pending" else 1,
                    "code": 100 if failed else None,
                    "subcode": 2804087 if failed else None,
                    "error": "ctwa_clid is not a click" if failed else None,
                },
            )


async def test_add_records_an_event_and_a_second_add_changes_nothing(on_db: Settings, db: AsyncEngine) -> None:
    out, _ = await ctwa(
        *("conversions", "add", "--event-id", "order-42", "--name", "Purchase", "--time", "2026-12-01T10:00"),
        *("--contact-id", "C1", "--ctwa-clid", "CL1", "--value", "59.9", "--currency", "EUR"),
        *("--custom-data", '{"order_id": "42"}'),
        settings=on_db,
    )
    assert out == "order-42: recorded\n"
    out, _ = await ctwa(
        *("conversions", "add", "--event-id", "order-42", "--name", "OrderShipped", "--contact-id", "C2"),
        settings=on_db,
    )
    assert out == "order-42: already recorded; left as it was\n"
    out, _ = await ctwa(
        *("conversions", "add", "--event-id", "lead-7", "--name", "LeadSubmitted"),
        *("--channel", "WHATSAPP", "--identity", "34600000001"),
        settings=on_db,
    )
    assert out == "lead-7: recorded\n"
    recorded = await rows(
        db,
        "SELECT event_id, event_name, event_time, contact_id, channel, identity, ctwa_clid, value, currency, "
        "custom_data, status FROM conversion_events ORDER BY id",
    )
    assert recorded[0] == {
        "event_id": "order-42",
        "event_name": "Purchase",
        "event_time": datetime(2026, 12, 1, 10, tzinfo=UTC),  # no zone given: UTC
        "contact_id": "C1",
        "channel": None,
        "identity": None,
        "ctwa_clid": "CL1",
        "value": Decimal("59.9"),
        "currency": "EUR",
        "custom_data": {"order_id": "42"},
        "status": "pending",
    }
    assert recorded[1]["identity"] == "34600000001"
    assert recorded[1]["custom_data"] is None
    assert abs(recorded[1]["event_time"] - datetime.now(UTC)) < timedelta(minutes=1)  # default: now


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("--name", "Lead", "--contact-id", "C1"), "event_name 'Lead' is not one Meta takes for business messaging"),
        (("--name", "Purchase"), "no person: give contact_id, or channel and identity, or ctwa_clid"),
        (("--name", "Purchase", "--identity", "34600000001"), "identity '34600000001' needs its channel"),
        (("--name", "Purchase", "--ctwa-clid", "CL1", "--value", "5", "--currency", "eur"), "currency 'eur' is not"),
        (("--name", "Purchase", "--ctwa-clid", "CL1", "--value", "-5", "--currency", "EUR"), "value -5 is not a"),
        (("--name", "Purchase", "--ctwa-clid", "CL1", "--value", "5"), "value 5 needs its currency"),
        (("--name", "Purchase", "--ctwa-clid", "CL1", "--custom-data", "[42]"), "custom_data must be a JSON object"),
    ],
    ids=["event name", "no person", "identity without channel", "currency", "negative", "no currency", "not object"],
)
async def test_add_refuses_what_the_trigger_refuses_saying_why(
    on_db: Settings, db: AsyncEngine, args: tuple[str, ...], reason: str
) -> None:
    out, err = await ctwa("conversions", "add", "--event-id", "order-42", *args, settings=on_db, expect=2)
    assert out == ""
    assert err.startswith(f"ctwa conversions add: refused: conversion event order-42: {reason}")
    assert "Traceback" not in err
    assert await rows(db, "SELECT * FROM conversion_events") == []


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--custom-data", "{order: 42}"), "argument --custom-data: not JSON"),
        (("--time", "yesterday"), "argument --time: not a date or time"),
        (("--value", "59,9"), "argument --value: not an amount"),
        (("--value", "NaN"), "argument --value: not an amount"),
        (("--contact-id", "C1", "--channel", "WHATSAPP", "--identity", "346"), "--contact-id, or --channel and"),
    ],
    ids=["json", "time", "value", "nan", "two people"],
)
async def test_add_refuses_bad_input_before_the_database(on_db: Settings, args: tuple[str, ...], said: str) -> None:
    base = ("conversions", "add", "--event-id", "order-42", "--name", "Purchase", "--ctwa-clid", "CL1")
    _, err = await ctwa(*base, *args, settings=on_db, expect=2)
    assert said in err
    assert "Traceback" not in err


async def test_status_counts_every_status_and_says_when_the_senders_are_parked(
    on_db: Settings, db: AsyncEngine
) -> None:
    await seed(db, ("new", "pending", 1), ("old", "pending", 30), ("f", "failed", 2), ("s1", "sent", 3))
    await seed(db, ("s2", "sent", 4))
    out, _ = await ctwa("conversions", "status", "--format", "json", settings=on_db)
    summary = json.loads(out)
    assert summary["events"] == {
        "pending": 2,
        "sending": 0,
        "sent": 2,
        "unattributed": 0,
        "expired": 0,
        "erased": 0,
        "failed": 1,
        "unconfirmed": 0,
        "unconfigured": 0,
    }
    assert summary["oldest_pending"]["event_id"] == "old"
    assert 30 * 3600 - 60 < summary["oldest_pending"]["age_s"] < 30 * 3600 + 60
    assert (summary["parked"], summary["last_request_at"], summary["last_success_at"]) == (None, None, None)

    async with db.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO conversion_sender (id, parked_reason, parked_code, parked_at, last_request_at, "
                "last_success_at) VALUES (1, 'the access token expired', 190, now(), now(), now() - interval '1 h')"
            )
        )
    out, _ = await ctwa("conversions", "status", "--format", "json", settings=on_db, expect=1)
    summary = json.loads(out)
    assert (summary["parked"]["reason"], summary["parked"]["code"]) == ("the access token expired", 190)
    assert summary["last_request_at"] > summary["last_success_at"]

    table, _ = await ctwa("conversions", "status", settings=on_db, expect=1)
    lines = table.splitlines()
    assert lines[:3] == ["status        events", "------------  ------", "pending            2"]
    assert "unconfirmed        0" in lines
    assert any(line.startswith("oldest pending: old of ") and "1 day, 6:00:" in line for line in lines)
    assert any("PARKED since" in line and "the access token expired (Meta's error code 190)" in line for line in lines)

    async with db.begin() as connection:
        await connection.execute(text("UPDATE conversion_sender SET parked_reason = NULL, parked_at = NULL"))
    table, _ = await ctwa("conversions", "status", settings=on_db)
    assert "senders:        not parked" in table.splitlines()


async def test_list_filters_newest_first_without_personal_data(on_db: Settings, db: AsyncEngine) -> None:
    await seed(db, ("a", "pending", 5), ("b", "failed", 4), ("c", "sent", 3), ("d", "failed", 2), ("e", "sent", 1))
    out, _ = await ctwa("conversions", "list", "--format", "json", settings=on_db)
    listed = json.loads(out)
    assert [event["event_id"] for event in listed] == ["e", "d", "c", "b", "a"]
    assert listed[1] | {"event_time": None} == {
        "event_id": "d",
        "event_name": "Purchase",
        "event_time": None,
        "contact_id": "C1",
        "status": "failed",
        "attempts": 1,
        "sent_at": None,
        "sent_ctwa_clid": None,
        "fbtrace_id": None,
        "error_code": 100,
        "error_subcode": 2804087,
        "last_error": "ctwa_clid is not a click",
        "value": 59.9,
        "currency": "EUR",
    }
    assert "34600000001" not in out
    assert "order_id" not in out

    out, _ = await ctwa(
        "conversions", "list", "--status", "failed", "--status", "pending", "--format", "csv", settings=on_db
    )
    assert [(row["event_id"], row["status"]) for row in csv.DictReader(io.StringIO(out))] == [
        ("d", "failed"),
        ("b", "failed"),
        ("a", "pending"),
    ]
    out, _ = await ctwa("conversions", "list", "--limit", "2", "--format", "table", settings=on_db)
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["event_id", "event_name", "event_time", "contact_id", "status"]
    assert [line.split()[0] for line in lines[2:]] == ["e", "d"]
    _, err = await ctwa("conversions", "list", "--status", "lost", settings=on_db, expect=2)
    assert (
        "not a status (pending, sending, sent, unattributed, expired, erased, failed, unconfirmed, unconfigured)" in err
    )


async def test_retry_sets_failed_events_back_to_pending(on_db: Settings, db: AsyncEngine) -> None:
    await seed(db, ("a", "failed", 3), ("b", "failed", 2), ("c", "failed", 1), ("d", "sent", 1))
    out, err = await ctwa("conversions", "retry", "--status", "failed", "--event-id", "b", settings=on_db)
    assert out == "1 failed events set back to pending\n"
    assert err == ""
    out, _ = await ctwa("conversions", "retry", "--status", "failed", settings=on_db)
    assert out == "2 failed events set back to pending\n"
    after = await rows(
        db,
        "SELECT event_id, status, attempts, error_code, error_subcode, last_error, "
        "next_attempt_at > now() - interval '1 minute' AS due_now FROM conversion_events ORDER BY event_id",
    )
    assert [tuple(row.values()) for row in after] == [
        ("a", "pending", 1, None, None, None, True),
        ("b", "pending", 1, None, None, None, True),
        ("c", "pending", 1, None, None, None, True),
        ("d", "sent", 1, None, None, None, False),
    ]


async def test_retry_of_unconfirmed_events_warns_they_may_count_twice(on_db: Settings, db: AsyncEngine) -> None:
    await seed(db, ("a", "unconfirmed", 3), ("b", "unattributed", 2))
    out, err = await ctwa("conversions", "retry", "--status", "unconfirmed", settings=on_db)
    assert out == "1 unconfirmed events set back to pending\n"
    assert "warning: Meta may have counted unconfirmed events already" in err
    assert "count twice" in err
    out, err = await ctwa("conversions", "retry", "--status", "unattributed", settings=on_db)
    assert out == "1 unattributed events set back to pending\n"
    assert err == ""


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("sent", "Meta counted them; sent again, they would count twice"),
        ("expired", "Meta refuses events more than 7 days old"),
        ("erased", "the person was deleted; their conversions are never sent"),
        ("pending", "they are waiting to be sent already"),
        ("sending", "they are in a request to Meta now"),
    ],
)
async def test_retry_refuses_what_must_not_be_sent_again(
    on_db: Settings, db: AsyncEngine, status: str, reason: str
) -> None:
    await seed(db, ("a", status, 1))
    out, err = await ctwa("conversions", "retry", "--status", status, settings=on_db, expect=2)
    assert out == ""
    assert err == f"ctwa conversions retry: {status} events are not sent again: {reason}\n"
    assert [row["status"] for row in await rows(db, "SELECT status FROM conversion_events")] == [status]
