"""``conversion_events`` as the senders' outbox: events claimed for a request, attributed to a click on the way,
and settled by what came of the request.

Exactly once rests on one rule: an event is marked ``sending`` — committed — before its request leaves, and leaves
that state only by what the sender learnt of the request. Several senders claim with ``FOR UPDATE SKIP LOCKED``, so
none takes another's events. An event still ``sending`` after the lease belongs to a sender that died mid-request:
Meta may have counted it, so it becomes ``unconfirmed`` and is not sent again (docs/conversions.md).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from workers.conversions.meta import Event, Verdict
from workers.engine import merges
from workers.engine.erasure import Eraser

__all__ = [
    "MAX_AGE",
    "Claimed",
    "claim",
    "expire",
    "mark_failed",
    "mark_sent",
    "mark_unconfirmed",
    "note_request",
    "park",
    "recover",
    "release",
    "renew",
    "unpark",
]

# Meta refuses an event_time more than 7 days old; an event is sent only while a request can still reach Meta
# well inside that (a margin for the request itself and for clocks).
MAX_AGE = timedelta(days=7) - timedelta(minutes=10)

# How soon an unattributed event is looked at again while it is young enough to send (its click may be stored late):
# a minute after it was recorded, then after a quarter of its age each time — about a dozen looks in its 7 days.
_RECHECK = "greatest(interval '1 minute', (now() - recorded_at) / 4)"


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one claim took: events to send, and how many it settled without a request."""

    events: list[Event]
    unattributed: int
    erased: int


async def expire(connection: AsyncConnection) -> int:
    """Mark ``expired`` the pending events too old to send now; how many."""
    result = await connection.execute(
        text(
            "UPDATE conversion_events SET status = 'expired', last_error = 'older than 7 days before it could be sent' "
            "WHERE status = 'pending' AND event_time <= now() - CAST(:age AS interval)"
        ),
        {"age": MAX_AGE},
    )
    return result.rowcount


async def recover(connection: AsyncConnection, lease: float) -> int:
    """Mark ``unconfirmed`` the events left ``sending`` longer than ``lease`` seconds; how many."""
    result = await connection.execute(
        text(
            "UPDATE conversion_events SET status = 'unconfirmed', "
            "last_error = 'its sender stopped mid-request: Meta may have counted it' "
            "WHERE status = 'sending' AND claimed_at < now() - make_interval(secs => :lease)"
        ),
        {"lease": lease},
    )
    return result.rowcount


async def claim(connection: AsyncConnection, eraser: Eraser, limit: int) -> Claimed:
    """Take up to ``limit`` events due for sending, attribute each, and mark those with a click ``sending``.

    Events of an erased person become ``erased``; those without a click ``unattributed`` (looked at again while
    young enough). Run it in a transaction of its own, committed before the request leaves.
    """
    rows = (
        await connection.execute(
            text(
                """
                SELECT id, event_id, event_name, event_time, contact_id, channel, identity, ctwa_clid, value,
                       currency, custom_data
                FROM conversion_events
                WHERE status IN ('pending', 'unattributed') AND next_attempt_at <= now()
                  AND event_time > now() - CAST(:age AS interval)
                ORDER BY next_attempt_at, id
                LIMIT :limit
                FOR UPDATE SKIP LOCKED
                """
            ),
            {"age": MAX_AGE, "limit": limit},
        )
    ).all()
    if not rows:
        return Claimed([], 0, 0)
    people = await _people(connection, eraser, rows)
    erased = [row.id for row in rows if people[row.id] is None]
    # An explicit ctwa_clid names its own click (when that click is stored); the others are looked for by person.
    by_person = await _clicks(
        connection, {row.id: (people[row.id], row.event_time) for row in rows if people[row.id] and not row.ctwa_clid}
    )
    by_clid = await _clicks_by_clid(connection, [row.ctwa_clid for row in rows if row.ctwa_clid])
    events, unattributed, click_ids = [], [], []
    for row in rows:
        if row.id in erased:
            continue
        if row.ctwa_clid:
            clid, click_id = row.ctwa_clid, by_clid.get(row.ctwa_clid)
        elif row.id in by_person:
            click_id, clid = by_person[row.id]
        else:
            unattributed.append(row.id)
            continue
        click_ids.append(click_id)
        events.append(
            Event(row.id, row.event_id, row.event_name, row.event_time, clid, row.value, row.currency, row.custom_data)
        )
    if events:
        await connection.execute(
            text(
                """
                UPDATE conversion_events AS event
                SET status = 'sending', claimed_at = now(), attempts = attempts + 1, sent_ctwa_clid = claimed.clid,
                    click_message_id = claimed.click
                FROM unnest(CAST(:ids AS bigint[]), CAST(:clids AS text[]), CAST(:clicks AS text[]))
                    AS claimed(id, clid, click)
                WHERE event.id = claimed.id
                """
            ),
            {
                "ids": [event.id for event in events],
                "clids": [event.ctwa_clid for event in events],
                "clicks": click_ids,
            },
        )
    if unattributed:
        await connection.execute(
            text(
                f"UPDATE conversion_events SET status = 'unattributed', next_attempt_at = now() + {_RECHECK}, "
                "last_error = 'no click with a ctwa_clid within attribution_window() before event_time' "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": unattributed},
        )
    if erased:
        await connection.execute(
            text(
                "UPDATE conversion_events SET status = 'erased', identity = NULL, custom_data = NULL, "
                "last_error = 'the person was deleted' WHERE id = ANY(:ids)"
            ),
            {"ids": erased},
        )
    return Claimed(events, len(unattributed), len(erased))


async def _people(connection: AsyncConnection, eraser: Eraser, rows: Sequence[Any]) -> dict[int, list[str] | None]:
    """Each event's person, as the person keys their clicks carry (merges resolved); ``None`` when the person is
    erased, ``[]`` when the event names no person (an explicit ctwa_clid alone)."""
    given = {row.contact_id for row in rows if row.contact_id}
    identities = {(row.channel, row.identity) for row in rows if row.identity}
    linked: dict[tuple[str, str], str] = {}
    if identities:
        found = await connection.execute(
            text(
                "SELECT DISTINCT ON (channel, identity) channel, identity, contact_id FROM channel_identities "
                "WHERE (channel, identity) IN (SELECT * FROM unnest(CAST(:channels AS text[]), "
                "CAST(:identities AS text[]))) AND contact_id IS NOT NULL "
                "ORDER BY channel, identity, contact_at DESC NULLS LAST"
            ),
            {"channels": [c for c, _ in identities], "identities": [i for _, i in identities]},
        )
        linked = {(channel, identity): contact for channel, identity, contact in found}
    roots = await merges.resolve(connection, given | set(linked.values()))
    erasure = await eraser.find(connection, (), set(roots.values()), identities)
    erased_roots = erasure.roots if erasure else set()
    erased_identities = erasure.identities if erasure else {}
    people: dict[int, list[str] | None] = {}
    for row in rows:
        keys: list[str] = []
        contacts = [c for c in (row.contact_id, linked.get((row.channel, row.identity))) if c]
        if any(roots[contact] in erased_roots for contact in contacts) or (
            row.identity and (row.channel, row.identity) in erased_identities
        ):
            people[row.id] = None
            continue
        keys += [f"contact:{roots[contact]}" for contact in contacts]
        if row.identity:
            keys.append(f"identity:{row.channel}:{row.identity}")
        people[row.id] = keys
    return people


async def _clicks(
    connection: AsyncConnection, wanted: dict[int, tuple[list[str] | None, datetime]]
) -> dict[int, tuple[str, str]]:
    """For each event id: its person's latest click carrying a ctwa_clid, at or before the event and within
    ``attribution_window()`` of it — the views' rule — as (message id, ctwa_clid)."""
    ids, keys, times = [], [], []
    for event_id, (person, at) in wanted.items():
        for key in person or ():
            ids.append(event_id)
            keys.append(key)
            times.append(at)
    if not ids:
        return {}
    rows = await connection.execute(
        text(
            """
            SELECT DISTINCT ON (wanted.id) wanted.id, click.message_id, click.ctwa_clid
            FROM unnest(CAST(:ids AS bigint[]), CAST(:keys AS text[]), CAST(:times AS timestamptz[]))
                AS wanted(id, person_key, at)
            JOIN LATERAL (
                SELECT message_id, ctwa_clid, clicked_at FROM ad_clicks AS click
                WHERE click.person_key = wanted.person_key AND click.ctwa_clid IS NOT NULL
                  AND click.clicked_at <= wanted.at AND click.clicked_at >= wanted.at - attribution_window()
                ORDER BY clicked_at DESC, message_id DESC LIMIT 1
            ) AS click ON true
            ORDER BY wanted.id, click.clicked_at DESC, click.message_id DESC
            """
        ),
        {"ids": ids, "keys": keys, "times": times},
    )
    return {event_id: (message_id, clid) for event_id, message_id, clid in rows}


async def _clicks_by_clid(connection: AsyncConnection, clids: Collection[str]) -> dict[str, str]:
    """The click each of ``clids`` names, among those stored: ctwa_clid → its message id."""
    if not clids:
        return {}
    rows = await connection.execute(
        text(
            "SELECT DISTINCT ON (ctwa_clid) ctwa_clid, message_id FROM ad_clicks WHERE ctwa_clid = ANY(:clids) "
            "ORDER BY ctwa_clid, clicked_at, message_id"
        ),
        {"clids": sorted(set(clids))},
    )
    return {clid: message_id for clid, message_id in rows}


async def renew(connection: AsyncConnection, ids: Sequence[int]) -> None:
    """The events are about to go out in another request: their lease starts again."""
    await connection.execute(
        text("UPDATE conversion_events SET claimed_at = now() WHERE id = ANY(:ids) AND status = 'sending'"),
        {"ids": list(ids)},
    )


async def mark_sent(connection: AsyncConnection, ids: Sequence[int], verdict: Verdict) -> None:
    await _settle(connection, ids, "sent", verdict, sent=True)


async def mark_failed(connection: AsyncConnection, ids: Sequence[int], verdict: Verdict) -> None:
    await _settle(connection, ids, "failed", verdict)


async def mark_unconfirmed(connection: AsyncConnection, ids: Sequence[int], verdict: Verdict) -> None:
    await _settle(connection, ids, "unconfirmed", verdict)


async def release(connection: AsyncConnection, ids: Sequence[int], verdict: Verdict | None, delay: float) -> None:
    """Nothing of the request was counted: the events are pending again, due in ``delay`` seconds."""
    await connection.execute(
        text(
            "UPDATE conversion_events SET status = 'pending', claimed_at = NULL, "
            "next_attempt_at = now() + make_interval(secs => :delay), last_error = :reason, "
            "error_code = :code, error_subcode = :subcode "
            "WHERE id = ANY(:ids) AND status = 'sending'"
        ),
        {
            "ids": list(ids),
            "delay": delay,
            "reason": verdict.reason if verdict else None,
            "code": verdict.code if verdict else None,
            "subcode": verdict.subcode if verdict else None,
        },
    )


async def _settle(
    connection: AsyncConnection, ids: Sequence[int], status: str, verdict: Verdict, *, sent: bool = False
) -> None:
    await connection.execute(
        text(
            "UPDATE conversion_events SET status = :status, claimed_at = NULL, fbtrace_id = :trace, "
            "sent_at = CASE WHEN :sent THEN now() END, error_code = :code, error_subcode = :subcode, "
            "last_error = CASE WHEN :sent THEN NULL ELSE :reason END "
            "WHERE id = ANY(:ids) AND status = 'sending'"
        ),
        {
            "ids": list(ids),
            "status": status,
            "trace": verdict.fbtrace_id,
            "sent": sent,
            "code": verdict.code,
            "subcode": verdict.subcode,
            "reason": verdict.reason,
        },
    )


async def park(connection: AsyncConnection, verdict: Verdict) -> None:
    await connection.execute(
        text(
            "INSERT INTO conversion_sender (id, parked_reason, parked_code, parked_at) "
            "VALUES (1, :reason, :code, now()) "
            "ON CONFLICT (id) DO UPDATE SET parked_reason = EXCLUDED.parked_reason, "
            "parked_code = EXCLUDED.parked_code, parked_at = EXCLUDED.parked_at"
        ),
        {"reason": verdict.reason, "code": verdict.code},
    )


async def unpark(connection: AsyncConnection) -> None:
    await connection.execute(
        text("UPDATE conversion_sender SET parked_reason = NULL, parked_code = NULL, parked_at = NULL WHERE id = 1")
    )


async def note_request(connection: AsyncConnection, *, success: bool) -> None:
    await connection.execute(
        text(
            "INSERT INTO conversion_sender AS sender (id, last_request_at, last_success_at) "
            "VALUES (1, now(), CASE WHEN :success THEN now() END) "
            "ON CONFLICT (id) DO UPDATE SET last_request_at = now(), "
            "last_success_at = coalesce(EXCLUDED.last_success_at, sender.last_success_at)"
        ),
        {"success": success},
    )
