"""Claiming conversion events: attribution to a click (the views' rule), erasure, expiry, and several senders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from callbacks import T0, contact_event, inbound, merge, referral
from conversion_records import record
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import rows, store

from workers.conversions import outbox
from workers.engine.erasure import Eraser

NOW = datetime.now(UTC)


def ago(hours: float) -> float:
    """The minute (after the test callbacks' T0) ``hours`` before now."""
    return (NOW - timedelta(hours=hours) - T0).total_seconds() / 60


def hours_ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


async def claim(db: AsyncEngine, limit: int = 1000) -> outbox.Claimed:
    async with db.begin() as connection:
        eraser = await Eraser.load(connection)
        return await outbox.claim(connection, eraser, limit)


async def statuses(db: AsyncEngine) -> dict[str, dict[str, Any]]:
    found = await rows(
        db, "SELECT event_id, status, sent_ctwa_clid, click_message_id, identity, custom_data FROM conversion_events"
    )
    return {row.pop("event_id"): row for row in found}


@pytest.fixture
async def clicks(db: AsyncEngine) -> AsyncEngine:
    """C1 clicked ad A 30 h ago and ad B 10 h ago; C2 (merged into C3) clicked ad A 20 h ago; the DISPATCH
    identity 555 clicked ad B 5 h ago; C4 clicked ad A 9 days ago only; C5 clicked a post without a ctwa_clid."""
    await store(
        db,
        [
            inbound("M1a", ago(30), identity="111", contact="C1", metadata=referral("A", "CLID-1a")),
            inbound("M1b", ago(10), identity="111", contact="C1", metadata=referral("B", "CLID-1b")),
            inbound("M2", ago(20), identity="222", contact="C2", metadata=referral("A", "CLID-2")),
            merge("C3", "C2", ago(15), name="Ann", identities=["222"]),
            inbound("M5", ago(5), identity="555", metadata=referral("B", "CLID-5")),
            inbound("M4", ago(24 * 9), identity="444", contact="C4", metadata=referral("A", "CLID-4")),
            inbound("M6", ago(3), identity="666", contact="C6", metadata=referral("P")),
        ],
    )
    return db


async def test_an_event_is_sent_with_the_persons_latest_click_before_it(clicks: AsyncEngine) -> None:
    await record(clicks, "by-contact", hours_ago(1), contact_id="C1")
    await record(clicks, "between-clicks", hours_ago(20), contact_id="C1")
    await record(clicks, "merged-away", hours_ago(1), contact_id="C2")
    await record(clicks, "via-root", hours_ago(1), contact_id="C3")
    await record(clicks, "by-identity", hours_ago(1), channel="WHATSAPP", identity="555")
    await record(clicks, "identity-of-contact", hours_ago(1), channel="WHATSAPP", identity="111")
    await record(clicks, "explicit", hours_ago(1), ctwa_clid="CLID-1a", contact_id="C1")
    await record(clicks, "explicit-unknown-click", hours_ago(1), ctwa_clid="CLID-elsewhere")

    claimed = await claim(clicks)

    assert {event.event_id: event.ctwa_clid for event in claimed.events} == {
        "by-contact": "CLID-1b",
        "between-clicks": "CLID-1a",
        "merged-away": "CLID-2",
        "via-root": "CLID-2",
        "by-identity": "CLID-5",
        "identity-of-contact": "CLID-1b",
        "explicit": "CLID-1a",
        "explicit-unknown-click": "CLID-elsewhere",
    }
    state = await statuses(clicks)
    assert {event: row["status"] for event, row in state.items()} == dict.fromkeys(state, "sending")
    assert state["by-contact"]["click_message_id"] == "M1b"
    assert state["explicit"]["click_message_id"] == "M1a"
    assert state["explicit-unknown-click"]["click_message_id"] is None


async def test_without_a_click_in_the_window_an_event_is_unattributed_and_looked_at_again(clicks: AsyncEngine) -> None:
    await record(clicks, "out-of-window", hours_ago(1), contact_id="C4")  # its click is 9 days old
    await record(clicks, "before-any-click", hours_ago(40), contact_id="C1")
    await record(clicks, "no-ctwa-clid", hours_ago(1), contact_id="C6")
    await record(clicks, "stranger", hours_ago(1), channel="WHATSAPP", identity="999")

    claimed = await claim(clicks)

    assert claimed.events == []
    assert claimed.unattributed == 4
    state = await statuses(clicks)
    assert {row["status"] for row in state.values()} == {"unattributed"}
    # Due again a minute after it was recorded: a click stored late (a backlog, out-of-order delivery) still
    # attributes it; later, after a quarter of its age each time.
    [due] = await rows(
        clicks,
        "SELECT min(extract(epoch FROM next_attempt_at - now())) AS min_s, max(extract(epoch FROM "
        "next_attempt_at - now())) AS max_s FROM conversion_events",
    )
    assert 50 < due["min_s"] <= due["max_s"] <= 61
    await store(clicks, [inbound("M9", ago(2), identity="999", metadata=referral("B", "CLID-9"))])
    async with clicks.begin() as connection:
        await connection.execute(text("UPDATE conversion_events SET next_attempt_at = now()"))
    claimed = await claim(clicks)
    assert [(event.event_id, event.ctwa_clid) for event in claimed.events] == [("stranger", "CLID-9")]


async def test_an_erased_persons_events_are_never_sent(clicks: AsyncEngine) -> None:
    await record(clicks, "by-contact", hours_ago(1), contact_id="C1", custom_data={"email": "ann@example.com"})
    await record(clicks, "by-identity", hours_ago(1), channel="WHATSAPP", identity="111")
    await record(clicks, "explicit", hours_ago(1), ctwa_clid="CLID-1b", contact_id="C1")
    await store(clicks, [contact_event("delete", "C1", ago(0.5), name="Ann", identities=["111"])])
    # The worker's erasure reaches them: nothing personal left, never to be sent.
    erased = await statuses(clicks)
    assert {event: (row["status"], row["identity"], row["custom_data"]) for event, row in erased.items()} == {
        "by-contact": ("erased", None, None),
        "by-identity": ("erased", "erased:C1", None),
        "explicit": ("erased", None, None),
    }
    await record(clicks, "recorded-after", hours_ago(1), channel="WHATSAPP", identity="111")

    claimed = await claim(clicks)

    assert claimed.events == []
    state = await statuses(clicks)
    assert {event: row["status"] for event, row in state.items()} == dict.fromkeys(state, "erased")
    assert all(row["custom_data"] is None for row in state.values())
    assert all(row["identity"] in (None, "erased:C1") for row in state.values())


async def test_events_too_old_to_send_expire(clicks: AsyncEngine) -> None:
    await record(clicks, "old", NOW - timedelta(days=7, minutes=1), contact_id="C1")
    await record(clicks, "fresh", hours_ago(1), contact_id="C1")
    async with clicks.begin() as connection:
        assert await outbox.expire(connection) == 1
    claimed = await claim(clicks)
    assert [event.event_id for event in claimed.events] == ["fresh"]
    assert (await statuses(clicks))["old"]["status"] == "expired"


async def test_two_senders_never_claim_the_same_event(clicks: AsyncEngine) -> None:
    for number in range(10):
        await record(clicks, f"e{number}", hours_ago(1), contact_id="C1")
    async with clicks.begin() as first:
        eraser = await Eraser.load(first)
        mine = await outbox.claim(first, eraser, 6)
        async with clicks.begin() as second:  # while the first holds its rows
            theirs = await outbox.claim(second, eraser, 10)
    assert len(mine.events) == 6
    assert len(theirs.events) == 4
    assert not {event.id for event in mine.events} & {event.id for event in theirs.events}


async def test_a_sender_that_died_mid_request_leaves_its_events_unconfirmed(clicks: AsyncEngine) -> None:
    await record(clicks, "in-flight", hours_ago(1), contact_id="C1")
    await claim(clicks)
    async with clicks.begin() as connection:
        assert await outbox.recover(connection, lease=60) == 0  # its lease runs
        await connection.execute(text("UPDATE conversion_events SET claimed_at = now() - interval '61 seconds'"))
        assert await outbox.recover(connection, lease=60) == 1
    assert (await statuses(clicks))["in-flight"]["status"] == "unconfirmed"
    assert (await claim(clicks)).events == []  # never sent again by itself
