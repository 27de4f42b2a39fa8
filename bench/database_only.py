"""The database alone: the statements a worker sends for a backlog, replayed with no worker at all.

A reference for bench/worker.py, measured in the same run. It records the statements and parameters the worker's
store sends for the backlog — one transaction per batch of ``CTWA_BATCH_SIZE`` callbacks, de-duplicated and ordered
as the worker does, exactly as ``Store.write`` sends them — then replays them into a fresh database from as many
connections as a worker keeps batches in flight (``CTWA_WORKER_CONCURRENCY``). Nothing runs between the statements
but the driver: no broker, no decoding, no projection code. What it reaches is about the most any worker storing the
same tables can drain on this machine, since a worker's own work shares the machine's cores with Postgres.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from ingest.callback import read
from workers.engine.store import Store, distinct

__all__ = ["record", "replay"]

Statements = list[tuple[str, Sequence[Any]]]


async def record(database_url: str, bodies: Sequence[bytes], batch_size: int) -> list[Statements]:
    """Store ``bodies`` in batches of ``batch_size`` into ``database_url`` (migrated, empty); return each batch's
    statements with their parameters, in the order they were sent."""
    now = datetime.now(UTC)
    batches = [
        distinct(read(body, now, signature_verified=True) for body in bodies[start : start + batch_size])[0]
        for start in range(0, len(bodies), batch_size)
    ]

    engine = create_async_engine(database_url)
    sent: list[Statements] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _keep(connection: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        sent[-1].append((statement, tuple(parameters)))

    store = Store(engine)
    for batch in batches:
        sent.append([])
        await store.write(batch)
    await engine.dispose()
    return sent


async def replay(database_url: str, batches: Sequence[Statements], connections: int) -> float:
    """Send ``batches`` (from `record`) into ``database_url`` (migrated, empty), one transaction each, from
    ``connections`` connections at once; return the seconds it took."""
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
    pool = [await asyncpg.connect(dsn) for _ in range(connections)]
    pending = iter(batches)

    async def send(connection: asyncpg.Connection) -> None:
        for statements in pending:
            async with connection.transaction():
                for statement, parameters in statements:
                    await connection.fetch(statement, *parameters)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(send(connection) for connection in pool))
        return time.perf_counter() - started
    finally:
        for connection in pool:
            await connection.close()
