"""``ctwa replay``: run the projections again from the ``callbacks`` archive — after a fix, or to rebuild.

A range replay re-projects the archived callbacks received in it (of some triggers, if asked): the rows each of
them made (messages, ad clicks, delivery reports) are replaced, the rest is combined again, and the attribution
rollups of the days and people concerned are recomputed. ``--all`` empties every projection and rebuilds them
all; the result equals what the workers built live. Both are idempotent, in batches, each its own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest.callback import Callback, Incoming, Trigger
from workers.engine import facts, rollups
from workers.engine.facts import Facts
from workers.engine.store import Store, lock
from workers.runtime.database import create_engine
from workers.tools.progress import Progress

__all__ = ["PROJECTIONS", "ReplayRefused", "replay"]

# Every table built from the archive. Not rebuilt: the archive itself, the erasure key and the fingerprints of
# erased identities (the archive no longer holds those identities), reported conversions, the prune log.
PROJECTIONS = (
    "contacts",
    "channel_identities",
    "conversations",
    "messages",
    "ad_clicks",
    "delivery_reports",
    "contact_merges",
    "person_touches",
    "ad_daily",
    "ad_daily_people",
    "ad_daily_conversations",
)


class ReplayRefused(Exception):
    """The replay would lose data; the message says why."""


async def replay(
    database_url: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    triggers: Sequence[str] = (),
    everything: bool = False,
    batch_size: int = 500,
    progress: TextIO | None = None,
    statement_cache: bool = True,
) -> int:
    """Re-project the archived callbacks received in ``[since, until)`` (all of them with ``everything``); how many."""
    engine = create_engine(database_url, application_name="ctwa-replay", connections=1, statement_cache=statement_cache)
    try:
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
    finally:
        await engine.dispose()


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
