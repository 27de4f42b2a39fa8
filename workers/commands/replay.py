"""``ctwa replay``: run the projections again from the ``callbacks`` archive — after a fix, or to rebuild.

A range replay re-projects the archived callbacks received in it (of some triggers, if asked): the rows each of
them made (messages, ad clicks, delivery reports) are replaced, the rest is combined again, and the attribution
rollups of the days and people concerned are recomputed. ``--all`` empties every projection and rebuilds them
all; the result equals what the workers built live. Both are idempotent, in batches, each its own transaction.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest.callback import Callback, Incoming, Trigger
from ingest.settings import Settings
from workers.commands.arguments import moment
from workers.commands.command import Subcommands, complain, on_database
from workers.engine import facts, rollups
from workers.engine.facts import Facts
from workers.engine.schema import PROJECTION, ROLLUP, tables
from workers.engine.store import Store, lock
from workers.tools.progress import Progress

__all__ = ["PROJECTIONS", "ReplayRefused", "register", "replay"]

# Every table built from the archive: emptied and rebuilt by --all. Not rebuilt: the archive itself, and the
# tables kept beside it (schema.KEPT: the erasure key and the fingerprints of erased identities, which the archive
# no longer holds; the business's conversions; the prune log).
PROJECTIONS = tuple(table.name for table in (*tables(PROJECTION), *tables(ROLLUP)))


class ReplayRefused(Exception):
    """The replay would lose data; the message says why."""


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "replay",
        help="run the projections again from the callbacks archive (after a fix), or rebuild them all",
        description="Re-project the archived callbacks received in a range (UTC), or with --all empty every table "
        "built from the archive and rebuild it. Idempotent; batched; safe while workers run.",
    )
    parser.add_argument("--since", type=moment, metavar="WHEN", help="from this date or time (received)")
    parser.add_argument("--until", type=moment, metavar="WHEN", help="up to this date or time, excluded")
    parser.add_argument("--trigger", action="append", help="only callbacks of this trigger (repeatable)")
    parser.add_argument("--all", action="store_true", help="empty every projection and rebuild it from the archive")
    parser.set_defaults(run=_run)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if args.all == (args.since is not None or args.until is not None or bool(args.trigger)):
        return complain("replay", "say what to replay: --since (with --until, --trigger), or --all alone")
    return _replay(settings, args)


@on_database("ctwa-replay")
async def _replay(args: argparse.Namespace, engine: AsyncEngine) -> int:
    try:
        count = await replay(
            engine,
            since=args.since,
            until=args.until,
            triggers=args.trigger or (),
            everything=args.all,
            progress=sys.stderr,
        )
    except ReplayRefused as refused:
        return complain("replay", str(refused), 1)
    print(f"{count} callbacks re-projected", file=sys.stderr)
    return 0


async def replay(
    engine: AsyncEngine,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    triggers: Sequence[str] = (),
    everything: bool = False,
    batch_size: int = 500,
    progress: TextIO | None = None,
) -> int:
    """Re-project the archived callbacks received in ``[since, until)`` (all of them with ``everything``); how many."""
    if everything:
        await _empty_projections(engine)
    where, params = _range(since, until, triggers)
    async with engine.connect() as connection:
        total = int(await connection.scalar(text(f"SELECT count(*) FROM callbacks WHERE {where}"), params) or 0)
    meter = Progress(progress, total=total, unit="callbacks")
    done, last_id = 0, 0
    store = Store(engine)
    while True:
        async with engine.begin() as connection:
            await lock(connection, exclusive=True)
            rows = (
                await connection.execute(
                    text(
                        "SELECT id, key, trigger, received_at, signature_verified, payload::text AS payload "
                        f"FROM callbacks WHERE {where} AND id > :after ORDER BY id LIMIT :limit"
                    ),
                    params | {"after": last_id, "limit": batch_size},
                )
            ).all()
            if not rows:
                break
            said = facts.read([_archived(row) for row in rows]).facts()
            if everything:
                await store.project(connection, said, exclusive=True)
            else:
                await _reproject(connection, store, said)
        last_id = rows[-1].id
        done += len(rows)
        meter.update(done)
    meter.finish(done)
    return done


async def _empty_projections(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        pruned = await connection.scalar(text("SELECT max(pruned_before) FROM archive_prunes"))
        if pruned is not None:
            raise ReplayRefused(
                f"the archive was pruned of callbacks received before {pruned.isoformat()}: rebuilding every table "
                "from it would lose what they held. Replay a range (--since) instead."
            )
        await lock(connection, exclusive=True)
        await connection.execute(text(f"TRUNCATE {', '.join(PROJECTIONS)}"))


def _range(since: datetime | None, until: datetime | None, triggers: Sequence[str]) -> tuple[str, dict[str, Any]]:
    conditions: list[str] = ["true"]
    params: dict[str, Any] = {}
    if since is not None:
        conditions.append("received_at >= :since")
        params["since"] = since
    if until is not None:
        conditions.append("received_at < :until")
        params["until"] = until
    if triggers:
        conditions.append("trigger = ANY(:triggers)")
        params["triggers"] = [trigger.upper() for trigger in triggers]
    return " AND ".join(conditions), params


def _archived(row: Any) -> Incoming:
    """An archived callback as it is archived: its key and trigger as stored, its (maybe redacted) payload."""
    body = row.payload.encode()
    callback = Callback(body, Trigger.named(row.trigger), row.key, row.received_at, row.signature_verified)
    return Incoming(callback, orjson.loads(body))


async def _reproject(connection: AsyncConnection, store: Store, said: Facts) -> None:
    """Replace what these callbacks made, and recompute the rollups that counted it."""
    message_ids = [message["message_id"] for message in said.messages]
    clicked = (
        await connection.execute(
            text(
                "DELETE FROM ad_clicks WHERE message_id = ANY(:ids) "
                "RETURNING (clicked_at AT TIME ZONE 'UTC')::date AS day, source_id, person_key"
            ),
            {"ids": message_ids},
        )
    ).all()
    await connection.execute(text("DELETE FROM messages WHERE message_id = ANY(:ids)"), {"ids": message_ids})
    await connection.execute(
        text(
            "DELETE FROM delivery_reports USING unnest(CAST(:ids AS text[]), CAST(:statuses AS text[])) "
            "AS report(message_id, status) "
            "WHERE delivery_reports.message_id = report.message_id AND delivery_reports.status = report.status"
        ),
        {"ids": [d["message_id"] for d in said.deliveries], "statuses": [d["status"] for d in said.deliveries]},
    )
    await store.project(connection, said, exclusive=True)
    remade = (
        await connection.execute(
            text(
                "SELECT (clicked_at AT TIME ZONE 'UTC')::date AS day, source_id, person_key FROM ad_clicks "
                "WHERE message_id = ANY(:ids)"
            ),
            {"ids": message_ids},
        )
    ).all()
    await rollups.recompute_days(connection, {(row.day, row.source_id) for row in [*clicked, *remade]})
    await rollups.refresh(connection, (row.person_key for row in [*clicked, *remade] if row.person_key))
