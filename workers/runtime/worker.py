"""``ctwa worker``: turn the queue into Postgres rows — in batches, exactly once, whatever fails on the way.

A batch is written in one transaction and acknowledged only after the commit. Up to ``CTWA_WORKER_CONCURRENCY``
batches are written at once, on their own connections, so that Postgres works on one while this process prepares
the next; they are acknowledged in the order they were taken. A callback that can never be stored is
dead-lettered with its reason, alone, while the rest of its batch is stored. Anything else that fails (Postgres
down or restarting, a deadlock, the broker connection) is retried with backoff, acknowledging nothing early;
redeliveries are harmless because the archive de-duplicates on the business key.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field

from aio_pika.abc import AbstractIncomingMessage

from ingest.backoff import backoff
from ingest.callback import Incoming
from ingest.envelope import received_at
from ingest.eventloop import new_event_loop
from ingest.settings import Settings
from ingest.topology import Topology
from workers.engine import chains
from workers.engine.store import Store, distinct
from workers.runtime.consumer import BrokerLost, Consumer
from workers.runtime.database import DATABASE_ERRORS, engine_for, is_data_error, sqlstate
from workers.runtime.messages import Rejected, decode
from workers.runtime.metrics import WorkerMetrics
from workers.runtime.monitor import Monitor

__all__ = ["Worker", "run"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Batch:
    """Messages taken together, and the callbacks they carry: those to store — each with the message it came in
    — and those that never can be."""

    messages: list[AbstractIncomingMessage] = field(default_factory=list)
    items: list[Incoming] = field(default_factory=list)
    came_in: dict[str, AbstractIncomingMessage] = field(default_factory=dict)  # by business key, the first copy's
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def callbacks(self) -> int:
        return len(self.items) + len(self.rejected)

    def take(self, message: AbstractIncomingMessage) -> None:
        items, rejected = decode(message)
        self.messages.append(message)
        self.items += items
        self.rejected += rejected
        for item in items:
            self.came_in.setdefault(item.callback.key, message)

    def set_aside(self, item: Incoming, code: str, reason: str) -> Rejected:
        """``item``, which can never be stored: to be dead-lettered with the message it came in."""
        return Rejected.set_aside(self.came_in[item.callback.key], item.callback, code, reason)


def _reap(tasks: list[asyncio.Task[None]]) -> list[asyncio.Task[None]]:
    """The tasks still running; a finished one's failure is raised (a bug: it stops the worker)."""
    for task in tasks:
        if task.done():
            task.result()
    return [task for task in tasks if not task.done()]


class Worker:
    """Consumes callbacks and stores them. ``drain`` stops once the queue is empty (tests and backfills)."""

    def __init__(
        self, settings: Settings, *, drain: bool = False, name: str = "ctwa-worker", watch_every: float = 15.0
    ) -> None:
        self._settings = settings
        self._drain = drain
        self._name = name
        self.metrics = WorkerMetrics()
        self._consumer = Consumer(
            settings.amqp_urls,
            Topology(settings.amqp_prefix, settings.delivery_limit),
            prefetch=settings.prefetch,
            connection_name=name,
        )
        self._monitor = Monitor(self._consumer, self.metrics, every=watch_every)
        # A connection per batch in flight, and one for settling the day chains.
        self._engine = engine_for(settings, name, connections=settings.worker_concurrency + 1)
        self._store = Store(self._engine)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Stop taking messages; what was delivered is stored and acknowledged, then `run` returns."""
        if not self._stopping.is_set():
            log.info("stopping: finishing the messages already delivered")
            self._stopping.set()
            self._consumer.arrived.set()

    async def run(self) -> None:
        """Work until `stop` (or, with ``drain``, until the queue is empty).

        After `stop`, what was delivered is finished within ``shutdown_grace_s``; past that (the database is down,
        say) the work is abandoned unacknowledged, and the broker hands those messages to another worker.
        """
        async with AsyncExitStack() as stack:
            stack.push_async_callback(self._engine.dispose)
            await self._consumer.start()
            stack.push_async_callback(self._consumer.close)
            if self._settings.worker_metrics_port:
                await self._monitor.serve(stack, self._settings.http_host, self._settings.worker_metrics_port)
            work = asyncio.create_task(self._work(), name="ctwa-work")
            watch = asyncio.create_task(self._monitor.watch(), name="ctwa-watch")
            settle = asyncio.create_task(self._settle_chains(), name="ctwa-chains")
            stopping = asyncio.create_task(self._stopping.wait())
            # Cancelled itself (a caller's timeout), `run` takes its tasks along: none may go on writing.
            for task in (work, watch, settle, stopping):
                stack.callback(task.cancel)
            await asyncio.wait((work, stopping), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            watch.cancel()
            settle.cancel()  # what it held stays queued: the next pass, here or in another worker, takes it
            try:
                await asyncio.wait_for(work, timeout=self._settings.shutdown_grace_s)
            except TimeoutError:
                log.warning("grace period over: unacknowledged messages go back to the queue")

    async def _work(self) -> None:
        """Take batches and settle them, up to ``worker_concurrency`` at once.

        While one batch waits on Postgres, the next is decoded and written on another connection. Batches are
        acknowledged in the order they were taken — each waits for the one before — because an acknowledgement
        with ``multiple`` covers every earlier delivery on its channel.
        """
        stopped_consuming = False
        settling: list[asyncio.Task[None]] = []
        previous: asyncio.Task[None] | None = None
        try:
            while True:
                if self._stopping.is_set() and not stopped_consuming:
                    await self._consumer.stop_consuming()
                    stopped_consuming = True
                while len(settling) >= self._settings.worker_concurrency:
                    await asyncio.wait(settling, return_when=asyncio.FIRST_COMPLETED)
                    settling = _reap(settling)
                batch = await self._next_batch()
                settling = _reap(settling)
                if batch.messages:
                    previous = asyncio.create_task(self._settle(batch, after=previous), name="ctwa-settle")
                    settling.append(previous)
                elif settling:
                    await asyncio.wait(settling, return_when=asyncio.FIRST_COMPLETED)
                elif self._stopping.is_set():
                    return
                elif self._drain and await self._drained():
                    await self._settle_chains_now()
                    log.info("queue drained")
                    return
        finally:
            # Stopped within the grace period, or failed: what is half-done goes back unacknowledged.
            for task in settling:
                task.cancel()
            if settling:
                await asyncio.wait(settling)

    async def _settle_chains(self) -> None:
        """Settle, every ``chains_interval_s``, the day chains of the people that batches (of any worker) touched:
        a person who wrote five times in the interval is settled once. A failure is retried at the next pass."""
        while True:
            await asyncio.sleep(self._settings.chains_interval_s)
            try:
                await self._settle_chains_now()
            except DATABASE_ERRORS as error:
                log.warning(
                    "settling the day chains failed; retrying at the next pass",
                    extra={"error": type(error).__name__, "sqlstate": sqlstate(error)},
                )
            except Exception as error:
                # Our own code failed on some data: the entries stay queued, the callbacks go on being stored, and
                # ctwa_worker_chains_settled_timestamp_seconds falls behind (CtwaChainsBehind in docs/operations.md).
                log.error("settling the day chains failed", extra={"error": type(error).__name__})
                log.debug("settling the day chains failed", exc_info=True)

    async def _settle_chains_now(self) -> None:
        self.metrics.chains_settled.inc(await chains.settle_queued(self._engine))
        self.metrics.chains_settled_at.set_to_current_time()

    async def _drained(self) -> bool:
        if self._consumer.buffer or not await self._consumer.queue_is_empty():
            return False
        # "No message ready" also holds while deliveries to this worker are still on the wire.
        await asyncio.sleep(0.05)
        return not self._consumer.buffer

    async def _next_batch(self) -> _Batch:
        """Up to ``batch_size`` callbacks: whatever is waiting, or what arrives within the linger of the first."""
        buffer, arrived = self._consumer.buffer, self._consumer.arrived
        size = self._settings.batch_size
        batch = _Batch()
        if not buffer:
            arrived.clear()
            if self._stopping.is_set():
                return batch
            with suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), timeout=0.25)
            if not buffer:
                return batch
        deadline = time.monotonic() + self._settings.batch_linger_ms / 1000
        while True:
            while buffer and batch.callbacks < size:
                batch.take(buffer.popleft())
            remaining = deadline - time.monotonic()
            if batch.callbacks >= size or remaining <= 0 or self._stopping.is_set():
                return batch
            arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), timeout=remaining)

    async def _settle(self, batch: _Batch, *, after: asyncio.Task[None] | None) -> None:
        """Store, dead-letter and acknowledge ``batch`` once ``after`` (the batch before it) is acknowledged,
        retrying transient failures until it is done."""
        self.metrics.redelivered.inc(sum(1 for message in batch.messages if message.redelivered))
        received = [received_at(message.timestamp, message.headers) for message in batch.messages]
        if moments := [moment for moment in received if moment is not None]:
            self._monitor.hold(batch, min(moments))
        try:
            await self._retry(batch, after)
        finally:
            self._monitor.release(batch)

    async def _retry(self, batch: _Batch, after: asyncio.Task[None] | None) -> None:
        delays = backoff(initial=0.2, cap=30.0)
        while True:
            try:
                await self._store_and_ack(batch, after)
                return
            except BrokerLost as error:
                # These messages come back on a new channel; storing them again is a no-op.
                log.warning("broker channel lost mid-batch; the broker redelivers it", extra={"error": str(error)})
                self.metrics.retries.labels("broker").inc()
                return
            except DATABASE_ERRORS as error:
                delay = next(delays)
                log.warning(
                    "database unavailable, retrying the batch",
                    extra={"error": type(error).__name__, "sqlstate": sqlstate(error), "retry_in_s": round(delay, 2)},
                )
                self.metrics.retries.labels("database").inc()
                await asyncio.sleep(delay)

    async def _store_and_ack(self, batch: _Batch, after: asyncio.Task[None] | None) -> None:
        poison = list(batch.rejected)
        # The first copy is stored; later copies in the same batch are duplicates.
        unique, repeated = distinct(batch.items)
        if unique:
            poison += await self._commit(batch, unique)
        for copy in repeated:
            self.metrics.duplicates.labels(str(copy.callback.trigger)).inc()
        for dead in poison:
            await self._consumer.dead_letter(dead.message, dead.reason, dead.callback)
            self.metrics.dead_lettered.labels(dead.code).inc()
            # The reason goes with the message; the log says only its kind: reasons may quote the data.
            log.warning("dead-lettered", extra={"reason": dead.code, "message_id": dead.message.message_id})
        if after is not None:
            await asyncio.shield(after)  # settled (or given up to a lost channel) before this one is acknowledged
        await self._consumer.ack(batch.messages)
        self.metrics.batch_size.observe(batch.callbacks)

    async def _commit(self, batch: _Batch, items: Sequence[Incoming]) -> list[Rejected]:
        """Commit ``items`` in one transaction; a data error is narrowed down by halving to the items that cause it."""
        started = time.perf_counter()
        try:
            new = await self._store.write(items)
        except DATABASE_ERRORS as error:
            if not is_data_error(error):
                raise
            if len(items) == 1:
                code = sqlstate(error) or "unknown"
                detail = str(getattr(error, "orig", error)).splitlines()[0][:300]
                return [batch.set_aside(items[0], f"database_{code}", f"the database refused it ({code}): {detail}")]
            return await self._halves(batch, items)
        except Exception as error:
            # A failure in our own code on some data: those messages can't be stored by this version. They are
            # isolated and dead-lettered (to be redriven after a fix) instead of crashing the worker in a loop.
            if len(items) == 1:
                log.error(
                    "storing a callback failed", extra={"key": items[0].callback.key, "error": type(error).__name__}
                )
                log.debug("storing a callback failed", exc_info=True)
                reason = f"storing it failed: {type(error).__name__}: {str(error)[:200]}"
                return [batch.set_aside(items[0], "store_failed", reason)]
            return await self._halves(batch, items)
        self.metrics.commit_seconds.observe(time.perf_counter() - started)
        self.metrics.last_commit.set_to_current_time()
        committed = time.time()
        for item in items:
            trigger = str(item.callback.trigger)
            if item.callback.key in new:
                self.metrics.processed.labels(trigger).inc()
                self.metrics.freshness.observe(committed - item.callback.received_at.timestamp())
            else:
                self.metrics.duplicates.labels(trigger).inc()
        return []

    async def _halves(self, batch: _Batch, items: Sequence[Incoming]) -> list[Rejected]:
        middle = len(items) // 2
        return await self._commit(batch, items[:middle]) + await self._commit(batch, items[middle:])


def run(settings: Settings, *, drain: bool = False) -> None:
    """Run a worker until SIGTERM/SIGINT (or until the queue is empty with ``drain``)."""

    async def main() -> None:
        worker = Worker(settings, drain=drain)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()
        log.info("worker stopped")

    # What was loaded at start lives forever: keep it out of the collector's scans. And a batch allocates tens of
    # thousands of short-lived objects, which reference counting frees: collecting the youngest generation every
    # 10,000 allocations rather than 700 stops the collector from rescanning the batches in hand again and again.
    # Together: 77 → 63 µs of worker CPU per callback draining bench/worker.py's backlog (six runs each).
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())
