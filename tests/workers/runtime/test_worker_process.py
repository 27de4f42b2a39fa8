"""``ctwa worker`` as a process: SIGKILL at any moment loses nothing, SIGTERM finishes and acknowledges cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from aio_pika.abc import AbstractConnection
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from support import enqueue, inbound_bodies, queued_keys, take_all

from ingest.settings import Settings
from ingest.topology import Topology
from workers.engine.schema import callbacks


def _environment(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "CTWA_AMQP_URL": settings.amqp_url,
        "CTWA_AMQP_PREFIX": settings.amqp_prefix,
        "CTWA_DATABASE_URL": settings.database_url,
        "CTWA_BATCH_SIZE": "100",
        "CTWA_WORKER_METRICS_PORT": "0",
    }


async def _start_worker(settings: Settings, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "worker", *args, env=_environment(settings), stderr=asyncio.subprocess.PIPE
    )


async def _archived(db: AsyncEngine) -> int:
    async with db.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(callbacks)) or 0)


async def _wait_for_rows(db: AsyncEngine, at_least: int, process: asyncio.subprocess.Process) -> None:
    while await _archived(db) < at_least:
        assert process.returncode is None, "the worker exited early"
        await asyncio.sleep(0.02)


async def test_sigkill_mid_stream_then_restart_stores_everything_exactly_once(
    worker_settings: Settings, db: AsyncEngine, amqp: AbstractConnection, topology: Topology
) -> None:
    keys = await enqueue(worker_settings.amqp_url, topology, inbound_bodies(6000))
    process = await _start_worker(worker_settings)
    await _wait_for_rows(db, 1000, process)
    process.kill()
    await process.wait()
    stored_before_restart = await _archived(db)
    assert 1000 <= stored_before_restart < 6000  # killed mid-stream

    restarted = await _start_worker(worker_settings, "--drain")
    assert await asyncio.wait_for(restarted.wait(), 120) == 0
    async with db.connect() as connection:
        stored = list(await connection.scalars(select(callbacks.c.key)))
    assert sorted(stored) == sorted(keys)  # every callback once: none lost, none doubled
    assert await take_all(amqp, topology.queue) == []


async def test_sigterm_finishes_the_batch_in_hand_acknowledges_and_exits(
    worker_settings: Settings, db: AsyncEngine, amqp: AbstractConnection, topology: Topology
) -> None:
    keys = await enqueue(worker_settings.amqp_url, topology, inbound_bodies(6000))
    process = await _start_worker(worker_settings)
    await _wait_for_rows(db, 1000, process)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0

    async with db.connect() as connection:
        stored = set(await connection.scalars(select(callbacks.c.key)))
    waiting = set(await queued_keys(amqp, topology.queue))
    # Every callback is either stored and acknowledged, or still waiting untouched: nothing is both, which would
    # mean a commit without its acknowledgement, and nothing is neither.
    assert stored.isdisjoint(waiting)
    assert stored | waiting == set(keys)
    assert 1000 <= len(stored) < 6000
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert "stopping" in log
    assert "worker stopped" in log
