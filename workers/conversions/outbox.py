"""``conversion_events`` as the senders' outbox: events claimed for a request, attributed to a click on the way,
and settled by what came of the request.

Exactly once rests on one rule: an event is marked ``sending`` — committed — before its request leaves, and leaves
that state only by what the sender learnt of the request. Several senders claim with ``FOR UPDATE SKIP LOCKED``, so
none takes another's events. An event still ``sending`` after the lease belongs to a sender that died mid-request:
Meta may have counted it, so it becomes ``unconfirmed`` and is not sent again (docs/conversions.md).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from workers.conversions.meta import Event, Verdict
from workers.conversions.status import ACCEPT, CLAIM, EXPIRE, LOSE, NO_CLICK, REFUSE, RELEASE, Move
from workers.engine import merges
from workers.engine.erasure import Eraser, opaque_identity

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


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one claim took: events to send, and how many it settled without a request."""

    events: list[Event]
    unattributed: int
    erased: int


_EXPIRE = text(
    f"""
    UPDATE conversion_events SET status = '{EXPIRE.target}', last_error = 'older than 7 days before it could be sent'
    WHERE {EXPIRE.where} AND event_time <= now() - CAST(:age AS interval)
    """
)


async def expire(connection: AsyncConnection) -> int:
    """Mark ``expired`` the pending events too old to send now; how many."""
    result = await connection.execute(_EXPIRE, {"age": MAX_AGE})
    return result.rowcount


_RECOVER = text(
    f"""
    UPDATE conversion_events SET status = '{LOSE.target}',
        last_error = 'its sender stopped mid-request: Meta may have counted it'
    WHERE {LOSE.where} AND claimed_at < now() - make_interval(secs => :lease)
    """
)


async def recover(connection: AsyncConnection, lease: float) -> int:
    """Mark ``unconfirmed`` the events left ``sending`` longer than ``lease`` seconds; how many."""
    result = await connection.execute(_RECOVER, {"lease": lease})
    return result.rowcount


async def claim(connection: AsyncConnection, eraser: Eraser, limit: int) -> Claimed:
    """Take up to ``limit`` events due for sending, attribute each, and mark those with a click ``sending``.

    Events of an erased person are erased (never sent); those without a click ``unattributed`` (looked at again
    while young enough). Run it in a transaction of its own, committed before the request leaves.
    """
    due = (await connection.execute(_DUE, {"age": MAX_AGE, "limit": limit})).all()
    if not due:
        return Claimed([], 0, 0)
    people = await _people(connection, eraser, due)
    erased = {row.id: opaque for row in due if (opaque := people[row.id].erased_as) is not None}
    attributed = await _attribute(connection, [row for row in due if row.id not in erased], people)
    unattributed = [row.id for row in due if row.id not in erased and row.id not in attributed]
    events = [_event(row, attributed[row.id][0]) for row in due if row.id in attributed]
    if events:
        await connection.execute(
            _MARK_SENDING,
            {
                "ids": [event.id for event in events],
                "clids": [event.ctwa_clid for event in events],
                "clicks": [attributed[event.id][1] for event in events],
            },
        )
    if unattributed:
        await connection.execute(_MARK_UNATTRIBUTED, {"ids": unattributed})
    if erased:
        await eraser.erase_conversions(connection, erased)
    return Claimed(events, len(unattributed), len(erased))


_DUE = text(
    f"""
    SELECT id, event_id, event_name, event_time, contact_id, channel, identity, ctwa_clid, value, currency,
           custom_data
    FROM conversion_events
    WHERE {CLAIM.where} AND next_attempt_at <= now() AND event_time > now() - CAST(:age AS interval)
    ORDER BY next_attempt_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)

_MARK_SENDING = text(
    f"""
    UPDATE conversion_events AS event
    SET status = '{CLAIM.target}', claimed_at = now(), attempts = attempts + 1, sent_ctwa_clid = claimed.clid,
        click_message_id = claimed.click, click_source_id = click.source_id, click_person_key = click.person_key
    FROM unnest(CAST(:ids AS bigint[]), CAST(:clids AS text[]), CAST(:clicks AS text[])) AS claimed(id, clid, click)
    LEFT JOIN ad_clicks AS click ON click.message_id = claimed.click
    WHERE event.id = claimed.id AND {CLAIM.where}
    """
)

# An unattributed event is looked at again while it is young enough to send (its click may be stored late): a
# minute after it was recorded, then after a quarter of its age each time — about a dozen looks in its 7 days.
_MARK_UNATTRIBUTED = text(
    f"""
    UPDATE conversion_events
    SET status = '{NO_CLICK.target}',
        next_attempt_at = now() + greatest(interval '1 minute', (now() - recorded_at) / 4),
        last_error = 'no click with a ctwa_clid within attribution_window() before event_time'
    WHERE id = ANY(:ids) AND {NO_CLICK.where}
    """
)


def _event(row: Any, ctwa_clid: str) -> Event:
    return Event(
        row.id, row.event_id, row.event_name, row.event_time, ctwa_clid, row.value, row.currency, row.custom_data
    )


@dataclass(frozen=True, slots=True)
class _Person:
    """Whom an event names: the person keys their clicks carry (merges resolved; none for an explicit ctwa_clid
    alone) — or, for an erased person, what its identity became (``erased_as``)."""

    keys: list[str]
    erased_as: str | None = None


async def _people(connection: AsyncConnection, eraser: Eraser, rows: Sequence[Any]) -> dict[int, _Person]:
    """Each event's person, by event id."""
    given = {row.contact_id for row in rows if row.contact_id}
    identities = {(row.channel, row.identity) for row in rows if row.identity}
    linked = await _contacts_of(connection, identities)
    roots = await merges.resolve(connection, given | set(linked.values()))
    erasure = await eraser.find(connection, (), set(roots.values()), identities)
    erased_roots = erasure.roots if erasure else set()
    erased_identities = erasure.identities if erasure else {}
    people: dict[int, _Person] = {}
    for row in rows:
        contacts = [roots[contact] for contact in (row.contact_id, linked.get((row.channel, row.identity))) if contact]
        identity = (row.channel, row.identity) if row.identity else None
        if identity in erased_identities:
            people[row.id] = _Person([], erased_identities[identity])
        elif erased := next((root for root in contacts if root in erased_roots), None):
            people[row.id] = _Person([], opaque_identity(erased))
        else:
            keys = [f"contact:{root}" for root in contacts]
            people[row.id] = _Person(keys + ([f"identity:{row.channel}:{row.identity}"] if identity else []))
    return people


async def _contacts_of(
    connection: AsyncConnection, identities: Collection[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The contact each channel identity is linked to, where one is."""
    if not identities:
        return {}
    found = await connection.execute(
        text(
            """
            SELECT DISTINCT ON (channel, identity) channel, identity, contact_id FROM channel_identities
            WHERE (channel, identity) IN (SELECT * FROM unnest(CAST(:channels AS text[]), CAST(:identities AS text[])))
              AND contact_id IS NOT NULL
            ORDER BY channel, identity, contact_at DESC NULLS LAST
            """
        ),
        {"channels": [c for c, _ in identities], "identities": [i for _, i in identities]},
    )
    return {(channel, identity): contact for channel, identity, contact in found}


async def _attribute(
    connection: AsyncConnection, rows: Sequence[Any], people: Mapping[int, _Person]
) -> dict[int, tuple[str, str | None]]:
    """The events of ``rows`` that have a click, as (ctwa_clid, the click's message id — unknown for an explicit
    ctwa_clid whose click is not stored) by event id. An explicit ctwa_clid names its own click; the others are
    their person's latest click carrying one (:func:`_clicks`)."""
    named = await _clicks_by_clid(connection, [row.ctwa_clid for row in rows if row.ctwa_clid])
    found = await _clicks(
        connection, {row.id: (people[row.id].keys, row.event_time) for row in rows if not row.ctwa_clid}
    )
    attributed: dict[int, tuple[str, str | None]] = {
        row.id: (row.ctwa_clid, named.get(row.ctwa_clid)) for row in rows if row.ctwa_clid
    }
    return attributed | {event_id: (clid, message_id) for event_id, (message_id, clid) in found.items()}


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


_RENEW = text(f"UPDATE conversion_events SET claimed_at = now() WHERE id = ANY(:ids) AND status = '{CLAIM.target}'")


async def renew(connection: AsyncConnection, ids: Sequence[int]) -> None:
    """The events are about to go out in another request: their lease starts again."""
    await connection.execute(_RENEW, {"ids": list(ids)})


async def mark_sent(connection: AsyncConnection, ids: Sequence[int], verdict: Verdict) -> None:
    await _settle(connection, ids, ACCEPT, verdict)


async def mark_failed(connection: AsyncConnection, ids: Sequence[int], verdict: Verdict) -> None:
    await _settle(connection, ids, REFUSE, verdict)


async def mark_unconfirmed(connection: AsyncConnection, ids: Sequence[int], verdict: Verdict) -> None:
    await _settle(connection, ids, LOSE, verdict)


_RELEASE = text(
    f"""
    UPDATE conversion_events SET status = '{RELEASE.target}', claimed_at = NULL,
        next_attempt_at = now() + make_interval(secs => :delay), last_error = :reason, error_code = :code,
        error_subcode = :subcode
    WHERE id = ANY(:ids) AND {RELEASE.where}
    """
)


async def release(connection: AsyncConnection, ids: Sequence[int], verdict: Verdict | None, delay: float) -> None:
    """Nothing of the request was counted: the events are pending again, due in ``delay`` seconds."""
    await connection.execute(
        _RELEASE,
        {
            "ids": list(ids),
            "delay": delay,
            "reason": verdict.reason if verdict else None,
            "code": verdict.code if verdict else None,
            "subcode": verdict.subcode if verdict else None,
        },
    )


# What a request came to: Meta's trace id and error, and for a counted event when (and no error).
_SETTLE = {
    move: text(
        f"""
        UPDATE conversion_events SET status = '{move.target}', claimed_at = NULL, fbtrace_id = :trace,
            sent_at = {"now()" if move is ACCEPT else "NULL"}, error_code = :code, error_subcode = :subcode,
            last_error = {"NULL" if move is ACCEPT else ":reason"}
        WHERE id = ANY(:ids) AND {move.where}
        """
    )
    for move in (ACCEPT, REFUSE, LOSE)
}


async def _settle(connection: AsyncConnection, ids: Sequence[int], move: Move, verdict: Verdict) -> None:
    parameters = {"ids": list(ids), "trace": verdict.fbtrace_id, "code": verdict.code, "subcode": verdict.subcode}
    await connection.execute(_SETTLE[move], parameters | ({} if move is ACCEPT else {"reason": verdict.reason}))


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
