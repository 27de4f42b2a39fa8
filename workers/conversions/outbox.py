"""``conversion_events`` as the senders' outbox: events claimed for a request, attributed to a click on the way,
and settled by what came of the request.

Exactly once rests on one rule: an event is marked ``sending`` — committed — before its request leaves, and leaves
that state only by what the sender learnt of the request. Several senders claim with ``FOR UPDATE SKIP LOCKED``, so
none takes another's events. An event still ``sending`` after the lease belongs to a sender that died mid-request:
Meta may have counted it, so it becomes ``unconfirmed`` and is not sent again (docs/conversions.md).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from workers.conversions.meta import Event, Verdict
from workers.conversions.routes import DEFAULT
from workers.conversions.status import (
    ACCEPT,
    CLAIM,
    EXPIRE,
    HOLD,
    LOSE,
    NO_CLICK,
    NO_SETUP,
    RECHECK,
    REFUSE,
    RELEASE,
    Move,
)
from workers.engine import merges
from workers.engine.erasure import Eraser, opaque_identity

__all__ = [
    "MAX_AGE",
    "Claimed",
    "Held",
    "Way",
    "any_pending",
    "claim",
    "expire",
    "mark_failed",
    "mark_sent",
    "mark_unconfirmed",
    "note_request",
    "park",
    "recheck",
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
    unconfigured: int = 0


# What becomes of an attributed event, by its click's app: sent, held back (its route is parked or paused: it stays
# pending), or none (no Meta setup for it: unconfigured).
Way = Literal["send", "hold", "none"]


@dataclass(frozen=True, slots=True)
class Held:
    """The routes a claim leaves alone: the apps with a setup of their own that are held (``apps``), whether the
    deployment's own setup is (``default``), and which apps have their own setup (``own``). Only events attributed
    before are left alone by this — an event's app is known once it is attributed."""

    apps: list[str] = field(default_factory=list)
    default: bool = False
    own: list[str] = field(default_factory=list)

    def parameters(self) -> dict[str, Any]:
        return {"held_apps": self.apps, "default_held": self.default, "own_apps": self.own}


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


async def claim(
    connection: AsyncConnection,
    eraser: Eraser,
    limit: int,
    way: Callable[[str | None], Way] = lambda app_id: "send",
    held: Held | None = None,
) -> Claimed:
    """Take up to ``limit`` events due for sending, attribute each, and mark ``sending`` those with a click whose
    app's route ``way`` says to send to.

    Events of an erased person are erased (never sent); those without a click ``unattributed`` (looked at again
    while young enough); those whose click's app has no route ``unconfigured``; those whose route is held stay
    pending, their click noted. Run it in a transaction of its own, committed before the request leaves.
    """
    parameters = {"age": MAX_AGE, "limit": limit} | (held or Held()).parameters()
    due = (await connection.execute(_DUE, parameters)).all()
    if not due:
        return Claimed([], 0, 0)
    people = await _people(connection, eraser, due)
    erased = {row.id: opaque for row in due if (opaque := people[row.id].erased_as) is not None}
    attributed = await _attribute(connection, [row for row in due if row.id not in erased], people)
    unattributed = [row.id for row in due if row.id not in erased and row.id not in attributed]
    ways: dict[Way, list[Any]] = {"send": [], "hold": [], "none": []}
    by_app: dict[str | None, Way] = {}  # a claim's events come through a few apps: each asked about once
    for row in due:
        if (click := attributed.get(row.id)) is not None:
            if (chosen := by_app.get(click.app_id)) is None:
                chosen = by_app[click.app_id] = way(click.app_id)
            ways[chosen].append(row)
    for chosen, statement in _MARK.items():
        if ways[chosen]:
            found = [attributed[row.id] for row in ways[chosen]]
            await connection.execute(
                statement,
                {
                    "ids": [row.id for row in ways[chosen]],
                    "clids": [click.ctwa_clid for click in found],
                    "clicks": [click.message_id for click in found],
                    "apps": [click.app_id for click in found],
                },
            )
    if unattributed:
        await connection.execute(_MARK_UNATTRIBUTED, {"ids": unattributed})
    if erased:
        await eraser.erase_conversions(connection, erased)
    events = [_event(row, attributed[row.id]) for row in ways["send"]]
    return Claimed(events, len(unattributed), len(erased), len(ways["none"]))


# Not an event of a held route (`Held`): one never attributed yet, or one whose click's app's route is not held.
_NOT_HELD = """(sent_ctwa_clid IS NULL OR (
          coalesce(click_app_id, '') <> ALL(CAST(:held_apps AS text[]))
          AND NOT (CAST(:default_held AS boolean) AND coalesce(click_app_id, '') <> ALL(CAST(:own_apps AS text[])))
      ))"""

_DUE = text(
    f"""
    SELECT id, event_id, event_name, event_time, contact_id, channel, identity, ctwa_clid, value, currency,
           custom_data
    FROM conversion_events
    WHERE {CLAIM.where} AND next_attempt_at <= now() AND event_time > now() - CAST(:age AS interval)
      AND {_NOT_HELD}
    ORDER BY next_attempt_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)


def _mark(move: Move, more: str) -> TextClause:
    """An attributed event's click noted (its ctwa_clid, message, ad, person and app), its status moved by
    ``move``, and ``more`` set."""
    return text(
        f"""
        UPDATE conversion_events AS event
        SET status = '{move.target}', {more}, sent_ctwa_clid = claimed.clid, click_message_id = claimed.click,
            click_source_id = click.source_id, click_person_key = click.person_key, click_app_id = claimed.app
        FROM unnest(CAST(:ids AS bigint[]), CAST(:clids AS text[]), CAST(:clicks AS text[]), CAST(:apps AS text[]))
            AS claimed(id, clid, click, app)
        LEFT JOIN ad_clicks AS click ON click.message_id = claimed.click
        WHERE event.id = claimed.id AND {move.where}
        """
    )


_MARK: dict[Way, TextClause] = {
    "send": _mark(CLAIM, "claimed_at = now(), attempts = attempts + 1"),
    "hold": _mark(HOLD, "last_error = 'its app''s Meta setup is parked or paused: sent once it is not'"),
    "none": _mark(NO_SETUP, "last_error = 'no Meta setup for its click''s app (the apps file''s [app.meta])'"),
}

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


@dataclass(frozen=True, slots=True)
class _Click:
    """The click an event is attributed to: its ctwa_clid, and — when the click is stored — its message and app."""

    ctwa_clid: str
    message_id: str | None
    app_id: str | None


def _event(row: Any, click: _Click) -> Event:
    return Event(
        row.id,
        row.event_id,
        row.event_name,
        row.event_time,
        click.ctwa_clid,
        row.value,
        row.currency,
        row.custom_data,
        click.app_id,
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
) -> dict[int, _Click]:
    """The events of ``rows`` that have a click, by event id (an explicit ctwa_clid whose click is not stored has
    no message id or app). An explicit ctwa_clid names its own click; the others are their person's latest click
    carrying one (:func:`_clicks`)."""
    named = await _clicks_by_clid(connection, [row.ctwa_clid for row in rows if row.ctwa_clid])
    found = await _clicks(
        connection, {row.id: (people[row.id].keys, row.event_time) for row in rows if not row.ctwa_clid}
    )
    attributed = {
        row.id: named.get(row.ctwa_clid) or _Click(row.ctwa_clid, None, None) for row in rows if row.ctwa_clid
    }
    return attributed | found


async def _clicks(
    connection: AsyncConnection, wanted: dict[int, tuple[list[str] | None, datetime]]
) -> dict[int, _Click]:
    """For each event id: its person's latest click carrying a ctwa_clid, at or before the event and within
    ``attribution_window()`` of it — the views' rule."""
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
            SELECT DISTINCT ON (wanted.id) wanted.id, click.message_id, click.ctwa_clid, click.app_id
            FROM unnest(CAST(:ids AS bigint[]), CAST(:keys AS text[]), CAST(:times AS timestamptz[]))
                AS wanted(id, person_key, at)
            JOIN LATERAL (
                SELECT message_id, ctwa_clid, clicked_at, app_id FROM ad_clicks AS click
                WHERE click.person_key = wanted.person_key AND click.ctwa_clid IS NOT NULL
                  AND click.clicked_at <= wanted.at AND click.clicked_at >= wanted.at - attribution_window()
                ORDER BY clicked_at DESC, message_id DESC LIMIT 1
            ) AS click ON true
            ORDER BY wanted.id, click.clicked_at DESC, click.message_id DESC
            """
        ),
        {"ids": ids, "keys": keys, "times": times},
    )
    return {event_id: _Click(clid, message_id, app_id) for event_id, message_id, clid, app_id in rows}


async def _clicks_by_clid(connection: AsyncConnection, clids: Collection[str]) -> dict[str, _Click]:
    """The click each of ``clids`` names, among those stored, by ctwa_clid."""
    if not clids:
        return {}
    rows = await connection.execute(
        text(
            "SELECT DISTINCT ON (ctwa_clid) ctwa_clid, message_id, app_id FROM ad_clicks "
            "WHERE ctwa_clid = ANY(:clids) ORDER BY ctwa_clid, clicked_at, message_id"
        ),
        {"clids": sorted(set(clids))},
    )
    return {clid: _Click(clid, message_id, app_id) for clid, message_id, app_id in rows}


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


_RECHECK = text(
    f"""
    UPDATE conversion_events SET status = '{RECHECK.target}', next_attempt_at = now(), last_error = NULL
    WHERE {RECHECK.where} AND (CAST(:default AS boolean) OR click_app_id = ANY(CAST(:own AS text[])))
    """
)


_ANY_PENDING = text(f"SELECT EXISTS (SELECT FROM conversion_events WHERE status = 'pending' AND {_NOT_HELD})")


async def any_pending(connection: AsyncConnection, held: Held) -> bool:
    """Whether an event is pending that no route of ``held`` holds."""
    return bool(await connection.scalar(_ANY_PENDING, held.parameters()))


async def recheck(connection: AsyncConnection, own: Sequence[str], default: bool) -> int:
    """The ``unconfigured`` events that have a route now — their click's app is among ``own``, or there is a
    ``default`` setup — are pending again; how many."""
    result = await connection.execute(_RECHECK, {"own": list(own), "default": default})
    return result.rowcount


# Each route's state: the deployment's own setup's in conversion_sender's one row, each app's in conversion_app_state.
_STATE = {
    True: ("conversion_sender", "id", "1"),
    False: ("conversion_app_state", "app_id", ":key"),
}


def _state(key: str, columns: str, values: str, updates: str) -> tuple[TextClause, dict[str, Any]]:
    table, column, value = _STATE[key == DEFAULT]
    statement = text(
        f"INSERT INTO {table} AS state ({column}, {columns}) VALUES ({value}, {values}) "
        f"ON CONFLICT ({column}) DO UPDATE SET {updates}"
    )
    return statement, ({} if key == DEFAULT else {"key": key})


async def park(connection: AsyncConnection, verdict: Verdict, key: str = DEFAULT) -> None:
    """Route ``key``'s setup is refused by Meta: noted, with why."""
    statement, parameters = _state(
        key,
        "parked_reason, parked_code, parked_at",
        ":reason, :code, now()",
        "parked_reason = EXCLUDED.parked_reason, parked_code = EXCLUDED.parked_code, parked_at = EXCLUDED.parked_at",
    )
    await connection.execute(statement, parameters | {"reason": verdict.reason, "code": verdict.code})


async def unpark(connection: AsyncConnection, keys: Collection[str] = (DEFAULT,)) -> None:
    """The parks of routes ``keys`` are lifted (a restart or a reload tries their setups again)."""
    if DEFAULT in keys:
        await connection.execute(
            text("UPDATE conversion_sender SET parked_reason = NULL, parked_code = NULL, parked_at = NULL WHERE id = 1")
        )
    apps = [key for key in keys if key != DEFAULT]
    if apps:
        await connection.execute(
            text(
                "UPDATE conversion_app_state SET parked_reason = NULL, parked_code = NULL, parked_at = NULL "
                "WHERE app_id = ANY(:apps)"
            ),
            {"apps": apps},
        )


async def note_request(connection: AsyncConnection, *, success: bool, key: str = DEFAULT) -> None:
    """A request went out on route ``key``: when, and when the last one succeeded."""
    statement, parameters = _state(
        key,
        "last_request_at, last_success_at",
        "now(), CASE WHEN :success THEN now() END",
        "last_request_at = now(), last_success_at = coalesce(EXCLUDED.last_success_at, state.last_success_at)",
    )
    await connection.execute(statement, parameters | {"success": success})
