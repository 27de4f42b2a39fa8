"""The day chains (workers/engine/chains.py) count each person and conversation once over any range of days, and
what the people did next, exactly as brute force over the tables does — after a stream stored shuffled, in small
batches, and settled; a rebuild gives the same rows. Batches queue what they touched without waiting for each
other; a pass of settling waits for another settling the same person and then sees what it wrote; a failed pass
leaves its entries queued."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import timedelta
from typing import Any

import pytest
from callbacks import T0, contact_event, delivery, inbound, merge, referral
from conversion_records import record
from sqlalchemy.ext.asyncio import AsyncEngine
from support import incoming, rows, snapshot, store

from workers.engine import rollups
from workers.engine.chains import claim, settle, settle_queued
from workers.engine.store import Store, distinct
from workers.tools.simulator import scenario

DAYS = 9
ADS = ("AD1", "AD2", "AD3")
FIRST_DAY = T0.date()


def _person(rng: random.Random) -> dict[str, str]:
    person = rng.randrange(14)
    # A third known by the number alone (DISPATCH), the rest contacts with a conversation each.
    contact = f"P{person}" if person % 3 else ""
    return {"identity": f"3460000{person:03d}", "contact": contact, "conversation": f"V{person}" if contact else ""}


def generate(seed: int) -> list[bytes]:
    """Clicks on three ads over nine days, messages after them, and replies with their reports (FAILED after
    DELIVERED among them, days apart), shuffled."""
    rng = random.Random(seed)
    bodies = []
    for number in range(70):
        minute = rng.uniform(0, DAYS * 1440)
        bodies.append(inbound(f"K{number}", minute, **_person(rng), metadata=referral(rng.choice(ADS), f"CL{number}")))
    for number in range(50):
        bodies.append(inbound(f"M{number}", rng.uniform(0, DAYS * 1440), **_person(rng), text="more"))
    for number in range(40):
        person = _person(rng)
        minute = rng.uniform(0, DAYS * 1440)
        statuses = rng.choice(
            [
                ["QUEUED_ON_CHANNEL", "DELIVERED", "READ"],
                ["DELIVERED"],
                ["QUEUED_ON_CHANNEL", "FAILED"],
                ["DELIVERED", "FAILED"],
            ]
        )
        for status in statuses:
            minute += rng.uniform(1, 3000)
            bodies.append(
                delivery(f"R{number}", status, minute, identity=person["identity"], contact=person["contact"])
            )
    rng.shuffle(bodies)
    return bodies


# Brute force: each click's facts from the tables, then DISTINCT over the range.
_CLICKS = """
    WITH click AS (
        SELECT click.*, (click.clicked_at AT TIME ZONE 'UTC')::date AS day,
               EXISTS (
                   SELECT 1 FROM messages AS later
                   WHERE later.person_key = click.person_key AND later.message_id <> click.message_id
                     AND later.sent_at > click.clicked_at AND later.sent_at <= click.clicked_at + attribution_window()
               ) AS wrote,
               EXISTS (
                   SELECT 1 FROM delivery_reports AS report JOIN message_status AS status USING (message_id)
                   WHERE report.person_key = click.person_key AND status.status IN ('DELIVERED', 'READ')
                     AND report.reported_at BETWEEN click.clicked_at AND click.clicked_at + attribution_window()
               ) AS replied,
               EXISTS (
                   SELECT 1 FROM delivery_reports AS report JOIN message_status AS status USING (message_id)
                   WHERE report.person_key = click.person_key AND status.status = 'READ'
                     AND report.reported_at BETWEEN click.clicked_at AND click.clicked_at + attribution_window()
               ) AS read,
               extract(epoch FROM (
                   SELECT min(report.reported_at) FROM delivery_reports AS report
                   WHERE report.person_key = click.person_key
                     AND report.reported_at BETWEEN click.clicked_at AND click.clicked_at + attribution_window()
               ) - click.clicked_at) AS reply_seconds
        FROM ad_clicks AS click WHERE click.person_key IS NOT NULL
    ), in_range AS (
        SELECT * FROM click WHERE day BETWEEN :since AND :until
    ), firsts AS (  -- a person's first click of each day (of each ad, or of all)
        SELECT DISTINCT ON (day, {group}, person_key) day, {group} AS source_id, reply_seconds
        FROM in_range ORDER BY day, {group}, person_key, clicked_at, message_id
    )
    SELECT counted.source_id, people, people_wrote_again, people_replied, people_reply_read, conversations,
           median_seconds_to_first_reply
    FROM (
        SELECT {group} AS source_id, count(DISTINCT person_key) AS people,
               count(DISTINCT person_key) FILTER (WHERE wrote) AS people_wrote_again,
               count(DISTINCT person_key) FILTER (WHERE replied) AS people_replied,
               count(DISTINCT person_key) FILTER (WHERE read) AS people_reply_read,
               count(DISTINCT conversation_id) AS conversations
        FROM in_range GROUP BY 1
    ) AS counted
    JOIN (
        SELECT source_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY reply_seconds) AS median_seconds_to_first_reply
        FROM firsts GROUP BY source_id
    ) AS median ON median.source_id IS NOT DISTINCT FROM counted.source_id
"""

_CHAINED = """
    SELECT engaged.source_id, engaged.people, people_wrote_again, people_replied, people_reply_read,
           counted.conversations, median_seconds_to_first_reply
    FROM engagement_report(:since, :until) AS engaged
    JOIN (
        SELECT NULL::text AS source_id, conversations, true AS total FROM range_report(:since, :until)
        UNION ALL
        SELECT source_id, conversations, false FROM ad_report(:since, :until)
    ) AS counted ON counted.total = engaged.total AND counted.source_id IS NOT DISTINCT FROM engaged.source_id
"""


def _by_ad(found: list[dict[str, Any]]) -> dict[str | None, dict[str, Any]]:
    return {
        row["source_id"]: {
            name: round(value, 6) if isinstance(value, float) else value
            for name, value in row.items()
            if name != "source_id"
        }
        for row in found
    }


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_range_counts_as_brute_force_does(db: AsyncEngine, seed: int) -> None:
    bodies = generate(seed)
    await store(db, bodies, batch_size=random.Random(seed).choice([1, 3, 7]))
    days = [FIRST_DAY + timedelta(days=offset) for offset in range(-1, DAYS + 9)]
    ranges = [(since, until) for since in days for until in days if since <= until]
    wrote_again = 0
    for since, until in ranges:
        params = {"since": since, "until": until}
        expected = _by_ad(await rows(db, _CLICKS.format(group="source_id"), **params))
        expected |= _by_ad(await rows(db, _CLICKS.format(group="NULL::text"), **params))  # all ads: the total
        chained = _by_ad(await rows(db, _CHAINED, **params))
        if None not in expected:  # nobody in the range: the total is there, and zero
            assert chained.pop(None)["people"] == 0
        assert chained == expected, (since, until)
        wrote_again += sum(row["people_wrote_again"] for row in expected.values())
    assert wrote_again > 0  # the stream has what the chains count
    # Per day: performance_daily's people and conversations are those of one-day ranges.
    for day in days:
        one = _by_ad(await rows(db, _CLICKS.format(group="NULL::text"), since=day, until=day)).get(None)
        daily = await rows(db, "SELECT people, conversations FROM performance_daily WHERE day = :day", day=day)
        assert (daily[0] if daily else None) == (
            None if one is None else {"people": one["people"], "conversations": one["conversations"]}
        )


@pytest.mark.parametrize("batch_size", [1, 5])
async def test_a_rebuild_gives_the_rows_the_workers_settled(db: AsyncEngine, batch_size: int) -> None:
    await store(db, generate(4), batch_size=batch_size)
    settled = await snapshot(db)
    async with db.begin() as connection:
        await rollups.rebuild(connection)
    assert await snapshot(db) == settled


def _app(body: bytes, app_id: str) -> bytes:
    """``body`` as the Sinch app ``app_id`` sends it."""
    payload = json.loads(body)
    payload["app_id"] = app_id
    for event in ("message", "message_delivery_report"):
        if event in payload:
            payload[event]["channel_identity"]["app_id"] = app_id
    return json.dumps(payload).encode()


# One person known by the number alone (DISPATCH), through two Sinch apps: the two workers' transactions share no
# row of the projections (an identity's row is per app), only the person.
CLICK = _app(inbound("K1", 0, identity="111", metadata=referral("AD1", "CL1")), "APP-ONE")
AFTER = _app(inbound("M1", 5, identity="111", text="and one more thing"), "APP-TWO")
REPLY = _app(delivery("R1", "READ", 8, identity="111"), "APP-TWO")


@pytest.mark.parametrize(
    ("first", "second"),
    [(CLICK, AFTER), (AFTER, CLICK), (CLICK, REPLY), (REPLY, CLICK)],
    ids=["click-message", "message-click", "click-reply", "reply-click"],
)
async def test_batches_at_once_are_settled_as_one(db: AsyncEngine, first: bytes, second: bytes) -> None:
    """Two workers' batches of one person, written at once: neither waits for the other, and the next pass of
    settling finds both."""
    writes = [Store(db).write(distinct([incoming(body)])[0]) for body in (first, second)]
    await asyncio.gather(*writes)
    assert await rows(db, "SELECT count(*) AS n FROM chain_backlog") != [{"n": 0}]
    await settle_queued(db)
    [day] = await rows(db, "SELECT wrote_again, replied, reply_read, first_reply_seconds FROM daily_people")
    if AFTER in (first, second):
        assert day == {"wrote_again": True, "replied": False, "reply_read": False, "first_reply_seconds": None}
    else:
        assert day == {"wrote_again": False, "replied": True, "reply_read": True, "first_reply_seconds": 480.0}
    assert await rows(db, "SELECT count(*) AS n FROM chain_backlog") == [{"n": 0}]


async def test_a_pass_waits_for_one_settling_the_same_person(db: AsyncEngine) -> None:
    """A pass settles a person's click and reply (not committed yet); meanwhile a batch stores the person's next
    message, and a second pass takes it: it waits for the first pass's locks, then sees what the first wrote —
    without them, the first's commit would leave "wrote again" false."""
    await store_unsettled(db, [CLICK, REPLY])
    first = await db.connect()
    try:
        await first.begin()
        touched, claimed = await claim(first)
        assert claimed == 3  # the click's person (click, message), the reply's
        await settle(first, touched=touched)
        await store_unsettled(db, [AFTER])  # a batch goes on meanwhile: nothing of it waits
        second = asyncio.create_task(settle_queued(db))
        done, _ = await asyncio.wait([second], timeout=0.5)
        assert not done
        await first.commit()
        assert await second == 1
    finally:
        await first.close()
    [day] = await rows(db, "SELECT wrote_again, replied, reply_read, first_reply_seconds FROM daily_people")
    assert day == {"wrote_again": True, "replied": True, "reply_read": True, "first_reply_seconds": 480.0}


async def test_a_failed_pass_leaves_its_entries_queued(db: AsyncEngine) -> None:
    await store_unsettled(db, [CLICK, AFTER])
    async with db.connect() as connection:
        await connection.begin()
        _, claimed = await claim(connection)
        assert claimed > 0
        await connection.rollback()  # the pass failed: a lost connection, a restarted database
    assert await rows(db, "SELECT count(*) AS n FROM chain_backlog") == [{"n": claimed}]
    assert await settle_queued(db) == claimed


async def store_unsettled(db: AsyncEngine, bodies: list[bytes]) -> None:
    """Store ``bodies`` as a worker's batches do, one batch each, leaving the day chains queued."""
    for body in bodies:
        await Store(db).write(distinct([incoming(body)])[0])


async def test_a_conversions_click_keeps_its_person_through_merges_and_erasure(db: AsyncEngine) -> None:
    phone = "34600000333"
    await store(
        db,
        [
            inbound("KA", 0, identity="111", contact="A", conversation="VA", metadata=referral("AD1", "CLA")),
            inbound("KB", 10, identity="222", contact="B", conversation="VB", metadata=referral("AD1", "CLB")),
            contact_event("create", "D", 15, name="Dee", identities=[phone]),
            inbound("KD", 20, identity=phone, metadata=referral("AD2", "CLD")),  # DISPATCH: known by the number
        ],
    )
    for event, click in [("EA", "KA"), ("EB", "KB"), ("ED", "KD")]:
        await record(db, event, T0 + timedelta(hours=1), contact_id="A", status="sent", click_message_id=click)

    async def attributed() -> dict[str, tuple[str, str]]:
        found = await rows(db, "SELECT event_id, click_source_id, click_person_key FROM conversion_events")
        return {row["event_id"]: (row["click_source_id"], row["click_person_key"]) for row in found}

    assert await attributed() == {
        "EA": ("AD1", "contact:A"),
        "EB": ("AD1", "contact:B"),
        "ED": ("AD2", f"identity:WHATSAPP:{phone}"),
    }
    day = {"since": FIRST_DAY, "until": FIRST_DAY}
    [before] = await rows(db, "SELECT conversions, people_converted FROM range_report(:since, :until)", **day)
    assert before == {"conversions": 3, "people_converted": 3}

    # B is merged into A: A's two conversions are one person's; D is deleted: no number stays with its event.
    await store(db, [merge("A", "B", 30, name="Ana", identities=["111", "222"])])
    await store(db, [contact_event("delete", "D", 40, name="Dee", identities=[phone])])
    now = await attributed()
    assert now["EB"] == ("AD1", "contact:A")
    assert now["ED"][0] == "AD2"
    assert phone not in now["ED"][1]
    [after] = await rows(db, "SELECT conversions, people_converted FROM range_report(:since, :until)", **day)
    assert after == {"conversions": 3, "people_converted": 2}
    async with db.begin() as connection:
        await rollups.rebuild(connection)
    assert await attributed() == now


async def test_a_later_message_keeps_what_a_days_other_ad_row_says(db: AsyncEngine) -> None:
    """A person clicks two ads the same day, gets a reply between the clicks, then writes again: the all-ads row
    keeps the first click's reply though the second ad's row did not get it, and "wrote again" stays true."""
    person = {"identity": "111", "contact": "A", "conversation": "VA"}
    await store(db, [inbound("K1", 0, **person, metadata=referral("AD1", "CL1"))])
    await store(db, [delivery("R1", "DELIVERED", 2, identity="111", contact="A")])
    await store(db, [inbound("K2", 5, **person, metadata=referral("AD2", "CL2"))])
    before = await rows(db, "SELECT wrote_again, replied, first_reply_seconds FROM daily_people")
    assert before == [{"wrote_again": True, "replied": True, "first_reply_seconds": 120.0}]
    await store(db, [inbound("M1", 60, **person, text="and one more thing")])
    assert await rows(db, "SELECT wrote_again, replied, first_reply_seconds FROM daily_people") == before
    ads = await rows(db, "SELECT source_id, wrote_again, replied FROM ad_daily_people ORDER BY source_id")
    assert ads == [
        {"source_id": "AD1", "wrote_again": True, "replied": True},
        {"source_id": "AD2", "wrote_again": True, "replied": False},
    ]
    settled = await snapshot(db)
    async with db.begin() as connection:
        await rollups.rebuild(connection)
    assert await snapshot(db) == settled


@pytest.mark.parametrize("seed", [3, 5])
async def test_settling_while_batches_are_written_gives_what_a_rebuild_gives(db: AsyncEngine, seed: int) -> None:
    """`ctwa simulate`'s people, shuffled, written by two writers at once while a settler passes again and again —
    batches commit between a pass's taking its entries and its settling them — end as a rebuild computes them."""
    bodies = [callback.body for callback in scenario(seed=seed, people=300).callbacks]
    random.Random(seed).shuffle(bodies)
    batches = [bodies[start : start + 37] for start in range(0, len(bodies), 37)]
    written = asyncio.Event()

    async def writer(part: list[list[bytes]]) -> None:
        for batch in part:
            await Store(db).write(distinct(incoming(body) for body in batch)[0])

    async def settler() -> None:
        while not written.is_set():
            await settle_queued(db)
            await asyncio.sleep(0.005)

    settling = asyncio.create_task(settler())
    await asyncio.gather(writer(batches[0::2]), writer(batches[1::2]))
    written.set()
    await settling
    settled = await snapshot(db)  # what is left queued settled too
    async with db.begin() as connection:
        await rollups.rebuild(connection)
    assert await snapshot(db) == settled
