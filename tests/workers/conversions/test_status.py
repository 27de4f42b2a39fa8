"""The statuses of a conversion event and their moves (``workers.conversions.status``) are what the database, the
outbox, erasure, ``ctwa conversions retry`` and the analytics do: each statement moves exactly the events its move
may take, and the views and ``ctwa report`` count the same statuses."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta

import pytest
from callbacks import T0, contact_event, inbound, merge, referral
from conversion_records import record
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from support import rows, store

from workers.commands import conversions, report
from workers.conversions import outbox
from workers.conversions.meta import Outcome, Verdict
from workers.conversions.status import (
    ACCEPT,
    COUNTED,
    ERASE,
    EXPIRE,
    LOSE,
    MOVES,
    REFUSE,
    RELEASE,
    RETRY,
    STATUSES,
    Move,
)
from workers.engine.erasure import Eraser

NOW = datetime.now(UTC)
VERDICT = Verdict(Outcome.COUNTED, "test", fbtrace_id="trace")


def ago(hours: float) -> float:
    """The minute (after the test callbacks' T0) ``hours`` before now."""
    return (NOW - timedelta(hours=hours) - T0).total_seconds() / 60


async def _one_of_each(db: AsyncEngine, at: datetime) -> None:
    """An event in every status, each named after it, all long out of their lease."""
    for status in STATUSES:
        await record(db, status, at, contact_id="C1", status=status, claimed_at=NOW - timedelta(hours=1))


async def _statuses(db: AsyncEngine) -> dict[str, str]:
    return {row["event_id"]: row["status"] for row in await rows(db, "SELECT event_id, status FROM conversion_events")}


async def _ids(db: AsyncEngine) -> list[int]:
    return [row["id"] for row in await rows(db, "SELECT id FROM conversion_events")]


Apply = Callable[[AsyncConnection, list[int]], Awaitable[object]]

# Each statement that moves events, applied to every event there is, with the move it makes.
STATEMENTS: dict[str, tuple[Move, Apply]] = {
    "mark_sent": (ACCEPT, lambda connection, ids: outbox.mark_sent(connection, ids, VERDICT)),
    "mark_failed": (REFUSE, lambda connection, ids: outbox.mark_failed(connection, ids, VERDICT)),
    "mark_unconfirmed": (LOSE, lambda connection, ids: outbox.mark_unconfirmed(connection, ids, VERDICT)),
    "release": (RELEASE, lambda connection, ids: outbox.release(connection, ids, VERDICT, 0.0)),
    "recover": (LOSE, lambda connection, ids: outbox.recover(connection, 60.0)),
    "expire": (EXPIRE, lambda connection, ids: outbox.expire(connection)),
}


@pytest.mark.parametrize("name", STATEMENTS)
async def test_a_statement_moves_only_the_events_its_move_may_take(db: AsyncEngine, name: str) -> None:
    move, apply = STATEMENTS[name]
    # Old enough to expire: expiry is the only statement that looks at the event's time.
    await _one_of_each(db, NOW - timedelta(days=8))
    async with db.begin() as connection:
        await apply(connection, await _ids(db))
    assert await _statuses(db) == {status: move.target if status in move.sources else status for status in STATUSES}


async def test_erasure_moves_only_the_events_not_settled(db: AsyncEngine) -> None:
    await _one_of_each(db, NOW - timedelta(hours=1))
    async with db.begin() as connection:
        eraser = await Eraser.load(connection)
        await eraser.erase_conversions(connection, dict.fromkeys(await _ids(db), "erased:C1"))
    assert await _statuses(db) == {status: ERASE.target if status in ERASE.sources else status for status in STATUSES}


@pytest.mark.parametrize("status", STATUSES)
async def test_retry_takes_exactly_the_statuses_its_move_names(db: AsyncEngine, status: str) -> None:
    await _one_of_each(db, NOW - timedelta(hours=1))
    if status not in RETRY.sources:
        assert conversions.retry_refusal(status)
        with pytest.raises(ValueError, match="not sent again"):
            await conversions.retry(db, status, ())
        return
    assert await conversions.retry(db, status, ()) == 1
    assert (await _statuses(db))[status] == RETRY.target


def test_every_status_is_reached_and_every_move_starts_somewhere() -> None:
    assert {move.target for move in MOVES} | {"pending"} == set(STATUSES)
    assert all(move.sources and set(move.sources) <= set(STATUSES) for move in MOVES)


async def test_the_tables_check_and_sendable_index_are_the_modules(db: AsyncEngine) -> None:
    check = await rows(
        db, "SELECT pg_get_constraintdef(oid) AS sql FROM pg_constraint WHERE conname = 'ck_conversion_events_status'"
    )
    assert sorted(_quoted(check[0]["sql"])) == sorted(STATUSES)
    index = await rows(db, "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_conversion_events_sendable'")
    assert sorted(_quoted(index[0]["indexdef"])) == sorted(("pending", "unattributed"))


def _quoted(sql: str) -> list[str]:
    return re.findall(r"'([a-z]+)'::text", sql)


async def test_the_views_and_the_report_count_the_same_statuses(db: AsyncEngine) -> None:
    """One attributed event per status, each on a day of its own: ad_conversions_daily and `ctwa report` count a
    day's event exactly when its status is one of COUNTED."""
    first = date(2026, 11, 1)
    async with db.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO ad_clicks (message_id, ctwa_clid, source_id, contact_id, clicked_at, referral) "
                "VALUES ('M1', 'CLID-1', 'AD-1', 'C1', :at, '{}')"
            ),
            {"at": datetime(2026, 10, 31, 12, tzinfo=UTC)},
        )
    days = {status: first + timedelta(days=number) for number, status in enumerate(STATUSES)}
    for status, day in days.items():
        at = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=12)
        await record(db, status, at, contact_id="C1", status=status, click_message_id="M1", value=1, currency="EUR")
    viewed = await rows(db, "SELECT day, conversions FROM ad_conversions_daily WHERE source_id = 'AD-1'")
    by_view = {row["day"]: row["conversions"] for row in viewed}
    by_report = {}
    for day in days.values():
        ads = {row["source_id"]: row for row in await report.ads(db, day, day)}
        by_report[day] = ads["AD-1"]["conversions"] if "AD-1" in ads else 0
    expected = {day: int(status in COUNTED) for status, day in days.items()}
    assert {day: by_view.get(day, 0) for day in days.values()} == expected
    assert by_report == expected


async def test_an_erased_persons_events_end_the_same_whichever_path_erased_them(db: AsyncEngine) -> None:
    """Recorded before the CONTACT_DELETE, the worker's erasure reaches an event; recorded after it, the sender's
    claim does. Either way: the same status, identity, custom data and reason."""
    await store(
        db,
        [
            inbound("M1", ago(3), identity="111", contact="C1", metadata=referral("A", "CLID-1")),
            merge("C1", "C2", ago(2.5), name="Ann", identities=["222"]),
        ],
    )
    people = {
        "by-contact": {"contact_id": "C1"},
        "by-merged-contact": {"contact_id": "C2"},
        "by-identity": {"channel": "WHATSAPP", "identity": "111"},
        "by-contact-and-identity": {"contact_id": "C1", "channel": "WHATSAPP", "identity": "111"},
        "by-click": {"ctwa_clid": "CLID-1", "contact_id": "C1"},
    }
    for name, person in people.items():
        await record(db, f"{name}/before", NOW - timedelta(hours=1), custom_data={"order": 1}, **person)
    await store(db, [contact_event("delete", "C1", ago(2), name="Ann", identities=["111"])])
    for name, person in people.items():
        await record(db, f"{name}/after", NOW - timedelta(hours=1), custom_data={"order": 1}, **person)
    async with db.begin() as connection:
        claimed = await outbox.claim(connection, await Eraser.load(connection), 100)
    assert (claimed.events, claimed.erased) == ([], len(people))

    found = await rows(db, "SELECT event_id, status, identity, custom_data, last_error FROM conversion_events")
    state = {row.pop("event_id"): row for row in found}
    for name, person in people.items():
        before, after = state[f"{name}/before"], state[f"{name}/after"]
        assert before == after, name
        assert (before["status"], before["custom_data"], before["last_error"]) == (
            "erased",
            None,
            "the person was deleted",
        )
        assert before["identity"] == ("erased:C1" if "identity" in person else None), name
