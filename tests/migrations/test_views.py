"""The analytics views (migrations 0003 and 0006), pinned on the hand-built stream of attribution.py, whose
answers are worked out there, by hand."""

from __future__ import annotations

import json
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from attribution import DAY0, DAY1, DAY2, A, B, C, minute, store_conversions, store_stream
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.fixture
async def stream(db: AsyncEngine) -> AsyncEngine:
    return await store_stream(db)


@pytest.fixture
async def converted(stream: AsyncEngine) -> AsyncEngine:
    return await store_conversions(stream)


async def query(db: AsyncEngine, sql: str, time_zone: str = "UTC", **params: Any) -> list[dict[str, Any]]:
    async with db.connect() as connection:
        await connection.execute(text(f"SET TIME ZONE '{time_zone}'"))
        return [dict(row._mapping) for row in await connection.execute(text(sql), params)]


async def test_ad_performance_daily(stream: AsyncEngine) -> None:
    rows = await query(
        stream,
        "SELECT day, source_id, headline, source_type, clicks, click_ids, people, new_people, conversations "
        "FROM ad_performance_daily ORDER BY day, source_id",
    )
    assert rows == [
        # A on day 0: M1 (P1), M2 (P2, once), M5 (C5, now P4), M7 (P7); all four first touches; V1, V2, V5, V7.
        row(DAY0, A, "ad", clicks=4, click_ids=4, people=4, new_people=4, conversations=4),
        # B on day 0: M3, P3 known by identity only (DISPATCH: no conversation).
        row(DAY0, B, "post", clicks=1, click_ids=0, people=1, new_people=1, conversations=0),
        # C on day 0: M6 — P6 was deleted, and the click still counts.
        row(DAY0, C, "ad", clicks=1, click_ids=1, people=1, new_people=1, conversations=1),
        # C on day 1: M4 — P4's first touch was A on day 0, so not a new person.
        row(DAY1, C, "ad", clicks=1, click_ids=1, people=1, new_people=0, conversations=1),
        # B on day 2: M1c — P1 again.
        row(DAY2, B, "post", clicks=1, click_ids=0, people=1, new_people=0, conversations=1),
    ]


def row(day: date, source: str, source_type: str, **counts: int) -> dict[str, Any]:
    return {"day": day, "source_id": source, "headline": f"Headline {source}", "source_type": source_type} | counts


async def test_person_attribution(stream: AsyncEngine) -> None:
    rows = await query(
        stream,
        "SELECT contact_id, channel, identity, first_source_id, first_clicked_at, last_source_id, last_clicked_at, "
        "clicks FROM person_attribution ORDER BY contact_id NULLS LAST",
    )
    assert rows == [
        person("C1", "111", (A, 0), (B, 2880), clicks=2),
        person("C2", "222", (A, 60), (A, 60), clicks=1),  # the duplicate counted once
        person("C4", "444", (A, 300), (C, 1440), clicks=2),  # C5's click is C4's: no row for C5
        person("C7", "777", (A, 0), (A, 0), clicks=1),
        person(None, "333", (B, 100), (B, 100), clicks=1),  # DISPATCH: the identity is the person
        # No row for C6: deleted.
    ]


def person(
    contact: str | None, identity: str, first: tuple[str, float], last: tuple[str, float], clicks: int
) -> dict[str, Any]:
    return {
        "contact_id": contact,
        "channel": "WHATSAPP",
        "identity": identity,
        "first_source_id": first[0],
        "first_clicked_at": minute(first[1]),
        "last_source_id": last[0],
        "last_clicked_at": minute(last[1]),
        "clicks": clicks,
    }


async def test_messages_and_conversations_attributed_within_the_window(stream: AsyncEngine) -> None:
    rows = await query(
        stream,
        "SELECT message_id, first_touch_message_id, last_touch_message_id, last_touch_source_id "
        "FROM message_attribution ORDER BY message_id",
    )
    touches = {r["message_id"]: (r["first_touch_message_id"], r["last_touch_message_id"]) for r in rows}
    assert touches == {
        "M1": ("M1", "M1"),  # a click's own message is attributed to it
        "M1b": ("M1", "M1"),
        "M1c": ("M1", "M1c"),  # first touch A two days earlier, last touch B
        "M2": ("M2", "M2"),
        "M3": ("M3", "M3"),
        "M3b": ("M3", "M3"),
        "M4": ("M5", "M4"),  # C4 and the merged C5 are one person
        "M5": ("M5", "M5"),
        "M6": ("M6", "M6"),
        "M7": ("M7", "M7"),
        "M7b": (None, None),  # nine days after the click: outside the window
        "M8": (None, None),  # never clicked
    }
    conversations = await query(
        stream,
        "SELECT conversation_id, first_touch_source_id, last_touch_source_id FROM conversation_attribution "
        "ORDER BY conversation_id",
    )
    assert [(r["conversation_id"], r["first_touch_source_id"]) for r in conversations] == [
        ("V1", A),
        ("V2", A),
        ("V4", A),  # started by M4 at 1,440; C4's click M5 (A, at 300) came first, M4 (C) last
        ("V5", A),
        ("V6", C),
        ("V7", A),
        ("V8", None),
    ]
    assert {r["conversation_id"]: r["last_touch_source_id"] for r in conversations}["V4"] == C


async def test_engagement_after_a_click(stream: AsyncEngine) -> None:
    rows = {r["source_id"]: r for r in await query(stream, "SELECT * FROM ad_engagement")}
    # A: P1 wrote again at 30, P4 at 1,440 (M4, after C5's click at 300); P2 never; P7 only after the window.
    assert (rows[A]["clicks"], rows[A]["people"], rows[A]["people_wrote_again"]) == (4, 4, 2)
    # First replies: M1 -> OUT1 at 10 (600 s), M2 -> OUT2 at 70 (600 s); M5 and M7 had none.
    assert rows[A]["median_seconds_to_first_reply"] == 600
    # Replies attributed to A: OUT1 (READ) and OUT2 (FAILED).
    assert (rows[A]["replies"], rows[A]["replies_delivered"], rows[A]["replies_read"]) == (2, 1, 1)
    assert (rows[A]["delivered_rate"], rows[A]["read_rate"]) == (Decimal("0.5"), Decimal("0.5"))
    # B: P3 wrote again at 200; P1 wrote nothing after M1c. M3 -> OUT3 after 50 minutes.
    assert (rows[B]["clicks"], rows[B]["people"], rows[B]["people_wrote_again"]) == (2, 2, 1)
    assert rows[B]["median_seconds_to_first_reply"] == 3000
    assert (rows[B]["replies"], rows[B]["replies_delivered"], rows[B]["replies_read"]) == (1, 1, 0)
    assert (rows[C]["clicks"], rows[C]["people_wrote_again"], rows[C]["replies"]) == (2, 0, 0)
    assert rows[C]["delivered_rate"] is None


async def test_performance_by_source_type_and_creative(stream: AsyncEngine) -> None:
    rows = await query(
        stream,
        "SELECT source_type, headline, clicks, people, ads FROM creative_performance ORDER BY source_type, headline",
    )
    assert rows == [
        {"source_type": "ad", "headline": f"Headline {A}", "clicks": 4, "people": 4, "ads": 1},
        {"source_type": "ad", "headline": f"Headline {C}", "clicks": 2, "people": 2, "ads": 1},
        {"source_type": "post", "headline": f"Headline {B}", "clicks": 2, "people": 2, "ads": 1},
    ]


async def test_click_ids_and_reported_conversions(stream: AsyncEngine) -> None:
    async with stream.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO conversion_events (event_id, event_name, event_time, ctwa_clid, status, sent_ctwa_clid, "
                "sent_at) VALUES ('e1', 'LeadSubmitted', :at, 'CL1', 'sent', 'CL1', :at), "
                "('e2', 'Purchase', :at, 'CL1', 'sent', 'CL1', :at), "
                "('e3', 'Purchase', :at, 'CL2', 'pending', NULL, NULL)"
            ),
            {"at": minute(100)},
        )
    rows = await query(
        stream, "SELECT ctwa_clid, conversion_reported, conversions, report_until FROM click_conversions"
    )
    assert {r["ctwa_clid"]: (r["conversion_reported"], r["conversions"]) for r in rows} == {
        "CL1": (True, 2),
        "CL2": (False, 0),
        "CL4": (False, 0),
        "CL5": (False, 0),
        "CL6": (False, 0),
        "CL7": (False, 0),
    }
    assert {r["ctwa_clid"]: r["report_until"] for r in rows}["CL1"] == minute(0) + timedelta(days=7)


# As text, so the amounts stay decimals (the driver would read them as floats).
_CONVERSIONS_DAILY = (
    "SELECT day, source_id, conversions, people_converted, value_by_currency::text AS value "
    "FROM ad_conversions_daily ORDER BY day, source_id"
)


async def test_conversions_per_ad_and_day(converted: AsyncEngine) -> None:
    rows = await query(converted, _CONVERSIONS_DAILY)
    assert [money(r) for r in rows] == [
        # K1, K2 (P1), K3 (P2), K4 (P4, no value); not K10 failed, K11 expired, K13 unattributed nor K14 on no click.
        (DAY0, A, 4, 3, {"EUR": Decimal("79.90"), "USD": Decimal("10.00")}),
        # K7: P6 was deleted after buying; the conversion was sent, and stays. Not K12, erased before it was sent.
        (DAY0, C, 1, 1, {"EUR": Decimal("30")}),
        (DAY1, A, 1, 1, {"EUR": Decimal("5.00")}),  # K5, at midnight
        (DAY1, C, 2, 1, {}),  # K8 has no value, K9 a currency but no value
        (DAY2, A, 1, 1, {"EUR": Decimal("15.50")}),  # K6: P1 clicked B that day, but A's click is attributed
    ]


async def test_a_conversion_counts_on_its_utc_day(converted: AsyncEngine) -> None:
    """K4 at 23:59:59 UTC is on day 0 and K5 at 00:00 UTC on day 1, whatever the session's time zone."""
    for time_zone in ("UTC", "Pacific/Kiritimati", "America/Los_Angeles"):
        rows = await query(converted, _CONVERSIONS_DAILY, time_zone)
        assert {r["day"]: r["conversions"] for r in rows if r["source_id"] == A} == {DAY0: 4, DAY1: 1, DAY2: 1}


def money(row: dict[str, Any]) -> tuple[Any, ...]:
    value = json.loads(row["value"], parse_float=Decimal, parse_int=Decimal)
    return row["day"], row["source_id"], row["conversions"], row["people_converted"], value


async def test_the_window_is_set_in_one_place(stream: AsyncEngine) -> None:
    async with stream.begin() as connection:
        await connection.execute(
            text(
                "CREATE OR REPLACE FUNCTION attribution_window() RETURNS interval "
                "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT interval '10 days' $$"
            )
        )
    try:
        [m7b] = await query(stream, "SELECT last_touch_message_id FROM message_attribution WHERE message_id = 'M7b'")
        assert m7b["last_touch_message_id"] == "M7"
    finally:
        async with stream.begin() as connection:
            await connection.execute(
                text(
                    "CREATE OR REPLACE FUNCTION attribution_window() RETURNS interval "
                    "LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT interval '7 days' $$"
                )
            )
