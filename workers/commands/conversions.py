"""``ctwa conversions``: record a conversion, see how the senders are doing, list the events, send some again.

The business may record conversions with plain SQL as well (docs/tables.md); ``add`` is the same insert, and
what the table's trigger refuses is refused here with its message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TextIO

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from workers.commands import output
from workers.engine.schema import CONVERSION_STATUSES, conversion_events, conversion_sender
from workers.runtime.database import create_engine, sqlstate

__all__ = [
    "EVENT_COLUMNS",
    "RETRYABLE",
    "Refused",
    "add",
    "events",
    "print_summary",
    "retry",
    "retry_refusal",
    "summary",
]

# What ``list`` shows: the sender's account of each event, and no personal data (no identity, no custom data).
EVENT_COLUMNS = (
    "event_id",
    "event_name",
    "event_time",
    "contact_id",
    "status",
    "attempts",
    "sent_at",
    "sent_ctwa_clid",
    "fbtrace_id",
    "error_code",
    "error_subcode",
    "last_error",
    "value",
    "currency",
)

RETRYABLE = ("failed", "unconfirmed", "unattributed")

# Why the other statuses are never set back to pending.
_NOT_RETRIED = {
    "pending": "they are waiting to be sent already",
    "sending": "they are in a request to Meta now",
    "sent": "Meta counted them; sent again, they would count twice",
    "expired": "Meta refuses events more than 7 days old",
    "erased": "the person was deleted; their conversions are never sent",
}

_CHECK_VIOLATION = "23514"


class Refused(Exception):
    """The database refused the event: the message of ``conversion_events``' trigger, saying why."""


@asynccontextmanager
async def _connection(database_url: str, statement_cache: bool) -> AsyncIterator[AsyncConnection]:
    """One connection in one transaction, committed when the block ends."""
    engine = create_engine(
        database_url, application_name="ctwa-conversions", connections=1, statement_cache=statement_cache
    )
    try:
        async with engine.begin() as connection:
            yield connection
    finally:
        await engine.dispose()


async def add(database_url: str, event: Mapping[str, Any], *, statement_cache: bool = True) -> bool:
    """Record ``event`` (values by ``conversion_events`` column): whether it was new — ``False`` when an event
    with its ``event_id`` was there already, which is left as it was. Raises :class:`Refused`."""
    # None is left out, to be NULL: given, JSONB would store it as JSON's null, which is not an object.
    values = {name: value for name, value in event.items() if value is not None}
    statement = insert(conversion_events).values(values).on_conflict_do_nothing(index_elements=["event_id"])
    try:
        async with _connection(database_url, statement_cache) as connection:
            inserted = await connection.scalar(statement.returning(conversion_events.c.id))
    except DBAPIError as error:
        if sqlstate(error) != _CHECK_VIOLATION:
            raise
        raise Refused(_postgres_message(error)) from None
    return inserted is not None


def _postgres_message(error: DBAPIError) -> str:
    """Postgres's own message (and hint), without the driver's decoration."""
    cause = error.orig.__cause__ if error.orig is not None else None
    message = getattr(cause, "message", None) or str(error.orig)
    hint = getattr(cause, "hint", None)
    return f"{message} ({hint})" if hint else str(message)


async def summary(database_url: str, *, statement_cache: bool = True) -> dict[str, Any]:
    """How many events are in each status, the oldest one waiting, whether the senders are parked and why, and
    when they last sent a request and last had one accepted."""
    event, sender = conversion_events.c, conversion_sender.c
    async with _connection(database_url, statement_cache) as connection:
        by_status = await connection.execute(select(event.status, func.count()).group_by(event.status))
        counts: dict[str, int] = dict(by_status.tuples().all())
        oldest = (
            await connection.execute(
                select(event.event_id, event.event_time, (func.now() - event.event_time).label("age"))
                .where(event.status == "pending")
                .order_by(event.event_time, event.id)
                .limit(1)
            )
        ).first()
        state = (await connection.execute(select(conversion_sender).where(sender.id == 1))).first()
    return {
        "events": {name: counts.get(name, 0) for name in CONVERSION_STATUSES},
        "oldest_pending": None
        if oldest is None
        else {"event_id": oldest.event_id, "event_time": oldest.event_time, "age_s": int(oldest.age.total_seconds())},
        "parked": None
        if state is None or (state.parked_reason is None and state.parked_at is None)
        else {"reason": state.parked_reason, "code": state.parked_code, "at": state.parked_at},
        "last_request_at": None if state is None else state.last_request_at,
        "last_success_at": None if state is None else state.last_success_at,
    }


def print_summary(summary: Mapping[str, Any], fmt: str, out: TextIO) -> None:
    """Write a :func:`summary` as ``json``, or as a table of counts followed by the rest."""
    if fmt == "json":
        json.dump(summary, out, indent=2, default=lambda value: value.isoformat())
        out.write("\n")
        return
    counts = [{"status": name, "events": count} for name, count in summary["events"].items()]
    output.render(counts, ("status", "events"), "table", out)
    oldest, parked = summary["oldest_pending"], summary["parked"]
    lines = {
        "oldest pending": "none"
        if oldest is None
        else f"{oldest['event_id']} of {_when(oldest['event_time'])}, {timedelta(seconds=oldest['age_s'])} ago",
        "senders": "not parked" if parked is None else f"PARKED since {_when(parked['at'])}: {_why(parked)}",
        "last request": _when(summary["last_request_at"]),
        "last success": _when(summary["last_success_at"]),
    }
    out.write("\n" + "".join(f"{label + ':':<16}{value}\n" for label, value in lines.items()))


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.isoformat(" ", "seconds")


def _why(parked: Mapping[str, Any]) -> str:
    return str(parked["reason"]) + ("" if parked["code"] is None else f" (Meta's error code {parked['code']})")


async def events(
    database_url: str, statuses: Sequence[str], limit: int | None, *, statement_cache: bool = True
) -> list[dict[str, Any]]:
    """The events in ``statuses`` (all when empty), newest first, at most ``limit``, as :data:`EVENT_COLUMNS`."""
    query = select(*(conversion_events.c[name] for name in EVENT_COLUMNS))
    if statuses:
        query = query.where(conversion_events.c.status.in_(statuses))
    query = query.order_by(conversion_events.c.event_time.desc(), conversion_events.c.id.desc()).limit(limit)
    async with _connection(database_url, statement_cache) as connection:
        return [dict(row._mapping) for row in await connection.execute(query)]


def retry_refusal(status: str) -> str | None:
    """Why events in ``status`` are not set back to pending, or ``None`` when they may be."""
    return None if status in RETRYABLE else _NOT_RETRIED[status]


async def retry(database_url: str, status: str, event_ids: Sequence[str], *, statement_cache: bool = True) -> int:
    """Set the events in ``status`` (those of ``event_ids``, when given) back to pending, due now, their error
    cleared and their attempts kept; how many."""
    if (refusal := retry_refusal(status)) is not None:
        raise ValueError(f"{status} events are not sent again: {refusal}")
    event = conversion_events.c
    statement = (
        update(conversion_events)
        .where(event.status == status)
        .values(
            status="pending",
            next_attempt_at=func.now(),
            claimed_at=None,
            error_code=None,
            error_subcode=None,
            last_error=None,
        )
    )
    if event_ids:
        statement = statement.where(event.event_id.in_(event_ids))
    async with _connection(database_url, statement_cache) as connection:
        result = await connection.execute(statement)
    return int(result.rowcount)
