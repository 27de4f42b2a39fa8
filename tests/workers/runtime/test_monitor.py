"""What a worker shows of itself: the queue, consumer, dead-letter and lag gauges, and ``/healthz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aio_pika
import aiohttp
from aio_pika.abc import AbstractConnection
from sqlalchemy.ext.asyncio import AsyncEngine
from support import AMQP_URL, dead_letters, enqueue, inbound_bodies

from ingest.settings import Settings
from ingest.topology import Topology
from workers.runtime.worker import Worker

PROCESSED = "ctwa_worker_processed_total"


async def test_queue_depth_consumers_dead_letters_and_lag_metrics(
    worker_settings: Settings, db: AsyncEngine, amqp: AbstractConnection, topology: Topology
) -> None:
    await dead_letters(worker_settings, amqp, topology)
    async with amqp.channel() as channel:  # a backlog that waited a while: received two minutes ago
        exchange = await channel.get_exchange(topology.exchange)
        for body in inbound_bodies(3, tag="L"):
            await exchange.publish(
                aio_pika.Message(body, timestamp=datetime.now(UTC) - timedelta(minutes=2)), "message.inbound"
            )
    worker = Worker(worker_settings, watch_every=0.05)
    running = asyncio.create_task(worker.run())

    def value(name: str, **labels: str) -> float | None:
        return worker.metrics.registry.get_sample_value(name, labels)

    try:
        # The gauge shows the batch's wait while the batch is in hand, and the monitor sets it back to 0 as soon as
        # nothing waits: read it at every turn of the event loop until the batch is stored, not once afterwards.
        lag = 0.0
        while (value("ctwa_worker_processed_total", trigger="MESSAGE_INBOUND") or 0) < 3:
            lag = max(lag, value("ctwa_worker_lag_seconds") or 0)
            await asyncio.sleep(0)
        assert lag >= 100  # the batch had waited two minutes
        while value("ctwa_worker_lag_seconds") != 0:  # then nothing waits
            await asyncio.sleep(0.02)
        assert value("ctwa_queue_messages", queue="dead-letter") == 3
        assert value("ctwa_queue_messages", queue="callbacks") == 0
        assert value("ctwa_queue_consumers") == 1
        assert value("ctwa_worker_broker_connected") == 1
    finally:
        worker.stop()
        await running


async def test_worker_serves_health_and_metrics(worker_settings: Settings, topology: Topology) -> None:
    await enqueue(AMQP_URL, topology, inbound_bodies(5))
    port = 19_000 + (hash(topology.prefix) % 1000)
    worker = Worker(worker_settings.model_copy(update={"worker_metrics_port": port}))
    running = asyncio.create_task(worker.run())
    try:
        while (worker.metrics.registry.get_sample_value(PROCESSED, {"trigger": "MESSAGE_INBOUND"}) or 0) < 5:
            await asyncio.sleep(0.02)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
                assert (await response.json())["broker_connected"] is True
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                metrics = await response.text()
        assert 'ctwa_worker_processed_total{trigger="MESSAGE_INBOUND"} 5.0' in metrics
        assert "ctwa_worker_batch_size_count" in metrics
        assert "ctwa_worker_commit_seconds_count" in metrics
    finally:
        worker.stop()
        await running
