"""What a worker shows of itself: ``/healthz`` and ``/metrics`` over HTTP, and the queue and lag gauges, kept
current while it works."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from datetime import UTC, datetime

from aiohttp import web

from ingest.metrics import serve_health
from workers.runtime.consumer import Consumer
from workers.runtime.metrics import WorkerMetrics

__all__ = ["Monitor"]

log = logging.getLogger(__name__)


class Monitor:
    """The gauges of ``metrics`` for the queue ``consumer`` takes from, and the batches the worker holds."""

    def __init__(self, consumer: Consumer, metrics: WorkerMetrics, *, every: float) -> None:
        self._consumer = consumer
        self._metrics = metrics
        self._every = every
        self._holding: dict[int, datetime] = {}  # each batch in hand: the receive time of its oldest callback

    def hold(self, batch: object, oldest: datetime) -> None:
        """A batch is in hand; its oldest callback was received at ``oldest``."""
        self._holding[id(batch)] = oldest
        self._show_lag()

    def release(self, batch: object) -> None:
        self._holding.pop(id(batch), None)

    async def watch(self) -> None:
        """Keep the queue gauges current, every ``every`` seconds; the lag drops to 0 once nothing waits."""
        while True:
            stats = await self._consumer.queue_stats()
            if stats is not None:
                ready, consumers, dead = stats
                self._metrics.queue_messages.labels("callbacks").set(ready)
                self._metrics.queue_messages.labels("dead-letter").set(dead)
                self._metrics.queue_consumers.set(consumers)
                if not ready and not self._consumer.buffer and not self._holding:
                    self._metrics.lag.set(0)
            self._show_lag()  # a batch held up (Postgres down, say) ages in the gauge
            self._metrics.broker_connected.set(1 if self._consumer.connected else 0)
            await asyncio.sleep(self._every)

    async def serve(self, stack: AsyncExitStack, host: str, port: int) -> None:
        """Serve ``/healthz`` and ``/metrics`` on ``host:port`` until ``stack`` closes."""
        await serve_health(stack, host, port, self._healthz, self._metrics.registry)
        log.info("metrics served", extra={"port": port})

    def _show_lag(self) -> None:
        if self._holding:
            oldest = min(self._holding.values())
            self._metrics.lag.set(max(0.0, (datetime.now(UTC) - oldest).total_seconds()))

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "broker_connected": self._consumer.connected})
