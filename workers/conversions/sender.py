"""``ctwa conversions send``: the service that sends recorded conversions to Meta, exactly once.

A loop: settle what no request can help (too old: ``expired``; left ``sending`` by a dead sender: ``unconfirmed``),
claim up to ``CTWA_CONVERSIONS_BATCH_SIZE`` events (attributed on the way, committed as ``sending``), post them, and
record what came of it. Meta's trouble and throttles pause the sender with a growing backoff (throttles also halve
the request size); a token, permission or dataset Meta refuses parks it — every event stays pending — until it is
restarted with the setting fixed; an event Meta refuses for good is found by halving its request and marked
``failed``; a request whose answer never came leaves its events ``unconfirmed``. Several senders run side by side.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, suppress
from typing import Concatenate, ParamSpec, TypeVar

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest.backoff import backoff
from ingest.eventloop import new_event_loop
from ingest.metrics import serve_health
from ingest.settings import Settings
from workers.conversions import outbox
from workers.conversions.meta import Event, MetaClient, Outcome, Verdict
from workers.conversions.metrics import SenderMetrics
from workers.engine.erasure import Eraser
from workers.runtime.database import DATABASE_ERRORS, engine_for, sqlstate

__all__ = ["ConfigurationMissing", "Sender", "client_of", "run"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class ConfigurationMissing(Exception):
    """A setting the sender needs is not set; the message names it."""


class Sender:
    """Sends the events of ``engine``'s database through ``client`` until stopped (or, with ``drain``, until no
    event is pending)."""

    def __init__(
        self,
        engine: AsyncEngine,
        client: MetaClient,
        eraser: Eraser,
        settings: Settings,
        *,
        drain: bool = False,
        metrics: SenderMetrics | None = None,
    ) -> None:
        self._engine = engine
        self._client = client
        self._eraser = eraser
        self._settings = settings
        self._drain = drain
        self.metrics = metrics or SenderMetrics()
        self._batch = settings.conversions_batch_size
        self._pause = self._new_backoff()
        self._stopping = asyncio.Event()
        self.parked: str | None = None

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> int:
        """Send until stopped; 0, or 1 when ``drain`` ends parked."""
        # A restart is how a fixed token, permission or dataset id is taken up: the park is lifted and tried again.
        await self._database(outbox.unpark)
        while not self._stopping.is_set():
            if self.parked is not None:
                if self._drain:
                    return 1
                self.metrics.waits.labels("parked").inc()
                await self._sleep(self._settings.conversions_poll_s)
                continue
            await self._database(self._housekeeping)
            claimed = await self._database(self._claim)
            if claimed.unattributed or claimed.erased:
                self.metrics.settled.labels("unattributed").inc(claimed.unattributed)
                self.metrics.settled.labels("erased").inc(claimed.erased)
            if claimed.events:
                await self._deliver(claimed.events)
                continue
            if self._drain and not await self._database(_any_pending):
                return 0
            self.metrics.waits.labels("idle").inc()
            await self._sleep(self._settings.conversions_poll_s)
        return 0

    async def serve(self, stack: AsyncExitStack, host: str, port: int) -> None:
        """``/healthz`` (503 while parked, with the reason) and ``/metrics`` on ``host:port``."""
        await serve_health(stack, host, port, self._healthz, self.metrics.registry)

    async def watch(self, every: float = 5.0) -> None:
        """Keep the pending gauges current."""
        while True:
            try:
                async with self._engine.connect() as connection:
                    pending, oldest = (
                        await connection.execute(
                            text(
                                "SELECT count(*), extract(epoch FROM now() - min(recorded_at)) "
                                "FROM conversion_events WHERE status = 'pending'"
                            )
                        )
                    ).one()
                self.metrics.pending.set(pending)
                self.metrics.oldest_pending.set(float(oldest or 0))
            except DATABASE_ERRORS:
                pass  # the loop says so; the gauges keep their last value
            await asyncio.sleep(every)

    async def _housekeeping(self, connection: AsyncConnection) -> None:
        self.metrics.settled.labels("expired").inc(await outbox.expire(connection))
        recovered = await outbox.recover(connection, self._settings.conversions_lease_s)
        if recovered:
            log.error("events left mid-request by a sender that stopped are unconfirmed", extra={"events": recovered})
            self.metrics.settled.labels("unconfirmed").inc(recovered)

    async def _claim(self, connection: AsyncConnection) -> outbox.Claimed:
        return await outbox.claim(connection, self._eraser, self._batch)

    async def _deliver(self, events: Sequence[Event]) -> None:
        """Send ``events``; halve a request Meta refuses for one of its events, until that event is alone."""
        queue: list[Sequence[Event]] = [events]
        claimed = True  # the claim has just started their lease
        while queue:
            part = queue.pop(0)
            ids = [event.id for event in part]
            if not claimed:
                await self._database(outbox.renew, ids)
            claimed = False
            verdict = await self._client.send(part)
            self.metrics.requests.labels(verdict.outcome.value).inc()
            if verdict.outcome is Outcome.COUNTED:
                await self._database(_settle, outbox.mark_sent, ids, verdict)
                self.metrics.sent.inc(len(part))
                self._batch = min(self._settings.conversions_batch_size, self._batch * 2)
                self._pause = self._new_backoff()
            elif verdict.outcome is Outcome.UNKNOWN:
                log.error(
                    "no answer from Meta for a request that may have reached it: its events are unconfirmed",
                    extra={"events": len(part), "reason": verdict.reason},
                )
                await self._database(_settle, outbox.mark_unconfirmed, ids, verdict)
                self.metrics.settled.labels("unconfirmed").inc(len(part))
            elif verdict.outcome is Outcome.REFUSED and len(part) > 1:
                await self._database(_settle, None, ids, verdict)
                middle = len(part) // 2
                queue[:0] = [part[:middle], part[middle:]]
            elif verdict.outcome is Outcome.REFUSED:
                log.warning(
                    "Meta refused an event for good",
                    extra={"event_id": part[0].event_id, "code": verdict.code, "subcode": verdict.subcode},
                )
                await self._database(_settle, outbox.mark_failed, ids, verdict)
                self.metrics.refused.labels(str(verdict.subcode or verdict.code or "unknown")).inc()
            else:
                # Nothing of it counted, nor of what is left to send: all of it is pending again.
                left = ids + [event.id for rest in queue for event in rest]
                await self._hold_back(left, verdict)
                return

    async def _hold_back(self, ids: list[int], verdict: Verdict) -> None:
        if verdict.outcome is Outcome.PARK:
            await self._database(_park, ids, verdict)
            self.parked = verdict.reason
            self.metrics.parked.set(1)
            log.critical(
                "Meta refuses the sender's configuration: sending stopped, every event kept pending; fix the "
                "setting (CTWA_META_ACCESS_TOKEN, its permissions, CTWA_META_DATASET_ID) and restart",
                extra={"code": verdict.code, "subcode": verdict.subcode, "reason": verdict.reason},
            )
            return
        delay = next(self._pause)
        if verdict.outcome is Outcome.THROTTLED:
            self._batch = max(1, self._batch // 2)
            delay = min(self._settings.conversions_backoff_max_s, delay * 4)
        log.warning(
            "Meta did not take the request, retrying later",
            extra={"outcome": verdict.outcome.value, "reason": verdict.reason, "retry_in_s": round(delay, 2)},
        )
        await self._database(_release, ids, verdict, delay)
        await self._sleep(delay)

    async def _database(
        self, step: Callable[Concatenate[AsyncConnection, P], Awaitable[R]], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Run ``step`` in a transaction of its own, retried until the database takes it: what was learnt from
        Meta is kept in memory meanwhile, never dropped."""
        return await _in_transaction(self._engine, step, *args, **kwargs)

    async def _sleep(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _new_backoff(self) -> Iterator[float]:
        return backoff(self._settings.conversions_backoff_s, self._settings.conversions_backoff_max_s)

    async def _healthz(self, request: web.Request) -> web.Response:
        if self.parked is not None:
            return web.json_response({"status": "parked", "reason": self.parked}, status=503)
        return web.json_response({"status": "ok"})


async def _in_transaction(
    engine: AsyncEngine,
    step: Callable[Concatenate[AsyncConnection, P], Awaitable[R]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """Run ``step`` in a transaction of its own, retried until the database takes it."""
    delays = backoff(0.1, 5.0)
    while True:
        try:
            async with engine.begin() as connection:
                return await step(connection, *args, **kwargs)
        except DATABASE_ERRORS as error:
            delay = next(delays)
            log.warning(
                "database unavailable, retrying",
                extra={"error": type(error).__name__, "sqlstate": sqlstate(error), "retry_in_s": round(delay, 2)},
            )
            await asyncio.sleep(delay)


Mark = Callable[[AsyncConnection, Sequence[int], Verdict], Awaitable[None]]


async def _settle(connection: AsyncConnection, mark: Mark | None, ids: Sequence[int], verdict: Verdict) -> None:
    """What a request came to, in one transaction: the events' status (``mark``), and the request noted."""
    if mark is not None:
        await mark(connection, ids, verdict)
    await outbox.note_request(connection, success=verdict.outcome is Outcome.COUNTED)


async def _release(connection: AsyncConnection, ids: Sequence[int], verdict: Verdict, delay: float) -> None:
    await outbox.release(connection, ids, verdict, delay)
    await outbox.note_request(connection, success=False)


async def _park(connection: AsyncConnection, ids: Sequence[int], verdict: Verdict) -> None:
    await _release(connection, ids, verdict, 0.0)
    await outbox.park(connection, verdict)


async def _any_pending(connection: AsyncConnection) -> bool:
    return bool(await connection.scalar(text("SELECT EXISTS (SELECT FROM conversion_events WHERE status = 'pending')")))


def client_of(settings: Settings) -> MetaClient:
    missing = [
        f"CTWA_{name.upper()}"
        for name in ("meta_dataset_id", "meta_access_token", "meta_waba_id")
        if not getattr(settings, name)
    ]
    if missing:
        raise ConfigurationMissing(f"missing {', '.join(missing)} (docs/conversions.md)")
    return MetaClient(
        graph_url=settings.meta_graph_url,
        version=settings.meta_api_version,
        dataset_id=settings.meta_dataset_id or "",
        access_token=settings.meta_access_token or "",
        waba_id=settings.meta_waba_id or "",
        partner_agent=settings.meta_partner_agent,
        test_event_code=settings.meta_test_event_code,
        timeout=settings.meta_timeout_s,
    )


def run(settings: Settings, *, drain: bool = False) -> int:
    """Run a sender until SIGTERM/SIGINT (or, with ``drain``, until nothing is pending); its exit status."""

    async def main() -> int:
        client = client_of(settings)
        if settings.meta_test_event_code:
            log.warning("CTWA_META_TEST_EVENT_CODE is set: Meta shows these events as tests and credits no ad")
        engine = engine_for(settings, "ctwa-conversions")
        async with AsyncExitStack() as stack, client:
            stack.push_async_callback(engine.dispose)
            sender = Sender(engine, client, await _in_transaction(engine, Eraser.load), settings, drain=drain)
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, sender.stop)
            if settings.conversions_metrics_port:
                await sender.serve(stack, settings.http_host, settings.conversions_metrics_port)
            watch = asyncio.create_task(sender.watch())
            try:
                status = await sender.run()
            finally:
                watch.cancel()
            log.info("sender stopped", extra={"status": status})
            return status

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main())
