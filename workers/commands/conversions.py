"""``ctwa conversions``: send conversions to Meta (``send``, the service), record one, see how the senders are
doing, list the events, send some again.

The business may record conversions with plain SQL as well (docs/tables.md); ``add`` is the same insert, and
what the table's trigger refuses is refused here with its message.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.settings import Settings
from workers.commands import output
from workers.commands.arguments import amount, conversion_status, json_value, moment
from workers.commands.command import FORMATS, Subcommands, complain, on_database
from workers.conversions.status import NOT_RETRIED, PENDING, RETRY, STATUSES
from workers.runtime.database import sqlstate

__all__ = [
    "EVENT_COLUMNS",
    "Refused",
    "add",
    "events",
    "print_summary",
    "register",
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

# The columns ``add`` fills, as the business's own INSERT would.
_RECORDED = (
    "event_id",
    "event_name",
    "event_time",
    "contact_id",
    "channel",
    "identity",
    "ctwa_clid",
    "value",
    "currency",
    "custom_data",
)

_CHECK_VIOLATION = "23514"


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "conversions",
        help="send conversions to Meta's Conversions API, record them, see what the senders did, retry them",
        description="Conversion events for Meta's Conversions API (table conversion_events, docs/conversions.md).",
    )
    actions = parser.add_subparsers(dest="conversions_command", required=True, metavar="ACTION")

    send = actions.add_parser(
        "send",
        help="send recorded conversions to Meta, exactly once (a service; several may run side by side)",
        description="Send the pending events of conversion_events to Meta's Conversions API, each once, to the "
        "Meta setup of its click's app (the apps file's [app.meta]) or the deployment's (CTWA_META_*): "
        "docs/conversions.md, docs/apps.md. SIGHUP reads the apps file again. Exit 2 when there is no Meta setup "
        "at all, or CTWA_META_* is half given, or the apps file can't be used.",
    )
    send.add_argument(
        "--drain",
        action="store_true",
        help="exit once nothing is pending: 0, or 1 if Meta refuses a setup's token, a permission or its dataset",
    )
    send.set_defaults(run=_send)

    add = actions.add_parser(
        "add",
        help="record a conversion (a second add of its event id changes nothing)",
        description="Record a conversion, as the business's own INSERT would: exit 0 whether it is new or was "
        "recorded already (left as it was); exit 2, saying why, when Meta could never take it.",
    )
    add.add_argument("--event-id", required=True, help="your id of the conversion; unique")
    add.add_argument("--name", dest="event_name", required=True, help="Purchase, LeadSubmitted, …")
    add.add_argument(
        "--time",
        type=moment,
        metavar="WHEN",
        help="when it happened, ISO 8601; UTC unless a zone is given (default: now)",
    )
    add.add_argument("--contact-id", help="the person, as a Sinch contact id")
    add.add_argument("--channel", help="the person, as a channel identity: WHATSAPP, …")
    add.add_argument("--identity", help="… and the identity (a phone number)")
    add.add_argument("--ctwa-clid", help="the ad click, when you know it")
    add.add_argument("--value", type=amount, help="in currency units, not cents: 59.9")
    add.add_argument("--currency", help="ISO 4217: EUR")
    add.add_argument("--custom-data", type=json_value, metavar="JSON", help='sent as is: \'{"order_id": "42"}\'')
    add.set_defaults(run=_add)

    status = actions.add_parser(
        "status",
        help="events per status, the oldest pending, whether the senders are parked; exit 1 when they are",
        description="Events per status, the oldest one pending, whether the senders are parked (Meta refused the "
        "token, a permission or the dataset) and why, their last request and last success. Exit 0; exit 1 when "
        "the senders are parked, so a health check can run it.",
    )
    status.add_argument("--format", choices=("table", "json"), default="table")
    status.set_defaults(run=_status)

    listing = actions.add_parser(
        "list",
        help="the events, newest first, and what the senders did with each",
        description="The events, newest first (by event time). The person shows as contact_id only: no identity "
        "(a phone number) and no custom data, so a listing carries no personal data.",
    )
    listing.add_argument(
        "--status", type=conversion_status, action="append", metavar="STATUS", help="only these (repeatable)"
    )
    listing.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (default 100; 0: all)")
    listing.add_argument("--format", choices=FORMATS, default="auto")
    listing.set_defaults(run=_list)

    retried = actions.add_parser(
        "retry",
        help="send failed, unconfirmed or unattributed events again",
        description="Set events back to pending, due now, their error cleared (attempts kept). Only failed, "
        "unconfirmed (Meta may have counted those already: each one it did will count twice) and unattributed "
        "ones; sent, expired, erased, pending and sending events are refused (exit 2).",
    )
    retried.add_argument("--status", type=conversion_status, required=True, help="failed, unconfirmed or unattributed")
    retried.add_argument("--event-id", action="append", help="only this event (repeatable)")
    retried.set_defaults(run=_retry)


def _send(settings: Settings, args: argparse.Namespace) -> int:
    from ingest.apps import AppsFileError
    from workers.conversions.sender import ConfigurationMissing, run

    try:
        return run(settings, drain=args.drain)
    except (ConfigurationMissing, AppsFileError) as error:
        return complain("conversions send", str(error))


def _add(settings: Settings, args: argparse.Namespace) -> int:
    if args.contact_id is not None and (args.channel is not None or args.identity is not None):
        return complain("conversions add", "give --contact-id, or --channel and --identity, not both")
    return _record(settings, args)


@on_database("ctwa-conversions")
async def _record(args: argparse.Namespace, engine: AsyncEngine) -> int:
    event = {name: getattr(args, name, None) for name in _RECORDED} | {"event_time": args.time or datetime.now(UTC)}
    try:
        new = await add(engine, event)
    except Refused as refused:
        return complain("conversions add", f"refused: {refused}")
    print(f"{args.event_id}: {'recorded' if new else 'already recorded; left as it was'}")
    return 0


@on_database("ctwa-conversions")
async def _status(args: argparse.Namespace, engine: AsyncEngine) -> int:
    found = await summary(engine)
    print_summary(found, args.format, sys.stdout)
    return 1 if found["parked"] or any(app["parked"] for app in found["apps"]) else 0


def _list(settings: Settings, args: argparse.Namespace) -> int:
    if args.limit < 0:
        return complain("conversions list", "--limit is a number of events (0: all)")
    return _listing(settings, args)


@on_database("ctwa-conversions")
async def _listing(args: argparse.Namespace, engine: AsyncEngine) -> int:
    output.render(await events(engine, args.status or (), args.limit or None), EVENT_COLUMNS, args.format)
    return 0


def _retry(settings: Settings, args: argparse.Namespace) -> int:
    if (refusal := retry_refusal(args.status)) is not None:
        return complain("conversions retry", f"{args.status} events are not sent again: {refusal}")
    if args.status == "unconfirmed":
        complain(
            "conversions retry",
            "warning: Meta may have counted unconfirmed events already (their request reached it, its answer never "
            "came back); each one it did will count twice",
        )
    return _set_pending(settings, args)


@on_database("ctwa-conversions")
async def _set_pending(args: argparse.Namespace, engine: AsyncEngine) -> int:
    count = await retry(engine, args.status, args.event_id or ())
    print(f"{count} {args.status} events set back to pending")
    return 0


class Refused(Exception):
    """The database refused the event: the message of ``conversion_events``' trigger, saying why."""


_ADD = text(
    f"""
    INSERT INTO conversion_events ({", ".join(_RECORDED)})
    VALUES ({", ".join(f"CAST(:{name} AS jsonb)" if name == "custom_data" else f":{name}" for name in _RECORDED)})
    ON CONFLICT (event_id) DO NOTHING
    RETURNING id
    """
)


async def add(engine: AsyncEngine, event: Mapping[str, Any]) -> bool:
    """Record ``event`` (values by ``conversion_events`` column): whether it was new — ``False`` when an event
    with its ``event_id`` was there already, which is left as it was. Raises :class:`Refused`."""
    values = {name: event.get(name) for name in _RECORDED}
    # As JSON text for the cast; None stays NULL (JSON's null is not an object).
    values["custom_data"] = None if values["custom_data"] is None else json.dumps(values["custom_data"])
    try:
        async with engine.begin() as connection:
            inserted = await connection.scalar(_ADD, values)
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


_BY_STATUS = text("SELECT status, count(*) FROM conversion_events GROUP BY status")
_OLDEST_PENDING = text(
    f"""
    SELECT event_id, event_time, now() - event_time AS age FROM conversion_events
    WHERE status = '{PENDING}' ORDER BY event_time, id LIMIT 1
    """
)
_SENDERS = text(
    "SELECT parked_reason, parked_code, parked_at, last_request_at, last_success_at FROM conversion_sender WHERE id = 1"
)
# Per app: its events by status (by their click's app), its name, and its own setup's state where it has one.
_APPS = text(
    """
    SELECT app.app_id, named.name, counted.events, state.parked_reason, state.parked_code, state.parked_at,
           state.last_request_at, state.last_success_at
    FROM (
        SELECT click_app_id AS app_id FROM conversion_events WHERE click_app_id IS NOT NULL
        UNION SELECT app_id FROM conversion_app_state
    ) AS app
    LEFT JOIN apps AS named USING (app_id)
    LEFT JOIN conversion_app_state AS state USING (app_id)
    LEFT JOIN LATERAL (
        SELECT jsonb_object_agg(status, events) AS events FROM (
            SELECT status, count(*) AS events FROM conversion_events
            WHERE click_app_id = app.app_id GROUP BY status
        ) AS per_status
    ) AS counted ON true
    ORDER BY app.app_id
    """
)


async def summary(engine: AsyncEngine) -> dict[str, Any]:
    """How many events are in each status, the oldest one waiting, whether the senders are parked and why, and
    when they last sent a request and last had one accepted — for the deployment's own Meta setup (``CTWA_META_*``)
    at the top level, and under ``apps`` for each app whose clicks have conversions or that has a setup of its own
    (its events counted by their click's app; ``parked`` and the requests are those of its own setup)."""
    async with engine.begin() as connection:
        counts: dict[str, int] = {status: count for status, count in await connection.execute(_BY_STATUS)}
        oldest = (await connection.execute(_OLDEST_PENDING)).first()
        state = (await connection.execute(_SENDERS)).first()
        apps = (await connection.execute(_APPS)).all()
    return {
        "events": {name: counts.get(name, 0) for name in STATUSES},
        "oldest_pending": None
        if oldest is None
        else {"event_id": oldest.event_id, "event_time": oldest.event_time, "age_s": int(oldest.age.total_seconds())},
        "parked": None
        if state is None or (state.parked_reason is None and state.parked_at is None)
        else {"reason": state.parked_reason, "code": state.parked_code, "at": state.parked_at},
        "last_request_at": None if state is None else state.last_request_at,
        "last_success_at": None if state is None else state.last_success_at,
        "apps": [
            {
                "app_id": app.app_id,
                "name": app.name,
                "events": {name: (app.events or {}).get(name, 0) for name in STATUSES},
                "parked": None
                if app.parked_reason is None and app.parked_at is None
                else {"reason": app.parked_reason, "code": app.parked_code, "at": app.parked_at},
                "last_request_at": app.last_request_at,
                "last_success_at": app.last_success_at,
            }
            for app in apps
        ],
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
    if summary["apps"]:
        shown = ("pending", "sent", "failed", "unconfirmed", "unconfigured")
        per_app = [
            {"app": app["app_id"], "name": app["name"] or ""}
            | {status: app["events"][status] for status in shown}
            | {"setup": _setup(app)}
            for app in summary["apps"]
        ]
        out.write("\n")
        output.render(per_app, ("app", "name", *shown, "setup"), "table", out)


def _setup(app: Mapping[str, Any]) -> str:
    """An app's own Meta setup as the senders found it: parked and why, or its last success."""
    if app["parked"]:
        return f"PARKED since {_when(app['parked']['at'])}: {_why(app['parked'])}"
    if app["last_request_at"] is None:
        return ""  # no request on a setup of its own (the deployment's setup, or none)
    return f"last success {_when(app['last_success_at'])}"


def _when(moment: datetime | None) -> str:
    return "never" if moment is None else moment.isoformat(" ", "seconds")


def _why(parked: Mapping[str, Any]) -> str:
    return str(parked["reason"]) + ("" if parked["code"] is None else f" (Meta's error code {parked['code']})")


_EVENTS = text(
    f"""
    SELECT {", ".join(EVENT_COLUMNS)} FROM conversion_events
    WHERE cardinality(CAST(:statuses AS text[])) = 0 OR status = ANY(:statuses)
    ORDER BY event_time DESC, id DESC
    LIMIT :limit
    """
)


async def events(engine: AsyncEngine, statuses: Sequence[str], limit: int | None) -> list[dict[str, Any]]:
    """The events in ``statuses`` (all when empty), newest first, at most ``limit``, as :data:`EVENT_COLUMNS`."""
    async with engine.begin() as connection:
        found = await connection.execute(_EVENTS, {"statuses": list(statuses), "limit": limit})
        return [dict(row._mapping) for row in found]


def retry_refusal(status: str) -> str | None:
    """Why events in ``status`` are not set back to pending, or ``None`` when they may be."""
    return None if status in RETRY.sources else NOT_RETRIED[status]


# Back to pending, due now, their error cleared and their attempts kept.
_RETRY = text(
    f"""
    UPDATE conversion_events
    SET status = '{RETRY.target}', next_attempt_at = now(), claimed_at = NULL, error_code = NULL,
        error_subcode = NULL, last_error = NULL
    WHERE status = :status AND {RETRY.where}
      AND (cardinality(CAST(:event_ids AS text[])) = 0 OR event_id = ANY(:event_ids))
    """
)


async def retry(engine: AsyncEngine, status: str, event_ids: Sequence[str]) -> int:
    """Set the events in ``status`` (those of ``event_ids``, when given) back to pending; how many."""
    if (refusal := retry_refusal(status)) is not None:
        raise ValueError(f"{status} events are not sent again: {refusal}")
    async with engine.begin() as connection:
        result = await connection.execute(_RETRY, {"status": status, "event_ids": list(event_ids)})
    return int(result.rowcount)
