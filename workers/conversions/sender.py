"""``ctwa conversions send``: the service that sends recorded conversions to Meta, exactly once.

A loop: settle what no request can help (too old: ``expired``; left ``sending`` by a dead sender: ``unconfirmed``),
claim up to ``CTWA_CONVERSIONS_BATCH_SIZE`` events (attributed on the way, committed as ``sending``), post them, and
record what came of it. Each event goes to the Meta setup of its click's app (workers/conversions/routes.py), in
requests of that setup alone. Meta's trouble and throttles pause that setup with a growing backoff (throttles also
halve its request size); a token, permission or dataset Meta refuses parks it — its events stay pending, the other
setups' keep flowing — until the sender is restarted or reloaded (SIGHUP) with the setting fixed; an event Meta
refuses for good is found by halving its request and marked ``failed``; a request whose answer never came leaves its
events ``unconfirmed``. Several senders run side by side.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, suppress
from typing import Concatenate, ParamSpec, TypeVar

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest.apps import AppsFileError, load_apps
from ingest.backoff import backoff
from ingest.eventloop import new_event_loop
from ingest.metrics import serve_health
from ingest.settings import Settings
from workers.conversions import outbox
from workers.conversions.meta import Event, Outcome, Verdict
from workers.conversions.metrics import SenderMetrics
from workers.conversions.routes import DEFAULT, ConfigurationMissing, Route, Routes, routes_of
from workers.engine.apps import name_apps
from workers.engine.erasure import Eraser
from workers.runtime.database import DATABASE_ERRORS, engine_for, sqlstate

__all__ = ["ConfigurationMissing", "Sender", "run"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class Sender:
    """Sends the events of ``engine``'s database through ``routes`` until stopped (or, with ``drain``, until no
    event is pending but those of parked routes). ``reload`` gives the routes of a new configuration, taken up
    between two requests (``ctwa conversions send`` calls it on SIGHUP)."""

    def __init__(
        self,
        engine: AsyncEngine,
        routes: Routes,
        eraser: Eraser,
        settings: Settings,
        *,
        drain: bool = False,
        metrics: SenderMetrics | None = None,
    ) -> None:
        self._engine = engine
        self._routes = routes
        self._eraser = eraser
        self._settings = settings
        self._drain = drain
        self.metrics = metrics or SenderMetrics()
        self._paces: dict[str, _Pace] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._reloaded: tuple[Routes, asyncio.Future[Routes]] | None = None
        self.parked: dict[str, str] = {}  # route key → why Meta refuses its setup

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    @property
    def routes(self) -> Routes:
        return self._routes

    def reload(self, routes: Routes) -> asyncio.Future[Routes]:
        """Send with ``routes`` (their clients opened by the caller) from the next request on. The future is set,
        once they are taken up, to the routes they replace — the caller's to close then; a reload not taken up
        yet is replaced, and its routes handed back at once."""
        future: asyncio.Future[Routes] = asyncio.get_running_loop().create_future()
        if self._reloaded is not None:
            superseded, waiting = self._reloaded
            waiting.set_result(superseded)
        self._reloaded = (routes, future)
        self._wake.set()
        return future

    async def run(self) -> int:
        """Send until stopped; 0, or 1 when ``drain`` ends with a route parked."""
        await self._take_up(self._routes)
        while not self._stopping.is_set():
            if self._reloaded is not None:
                (routes, future), self._reloaded = self._reloaded, None
                replaced, self._routes = self._routes, routes
                await self._take_up(routes, replaced)
                future.set_result(replaced)
            if self.parked and len(self.parked) == len(self._routes):
                if self._drain:
                    return 1
                self.metrics.waits.labels("parked").inc()
                await self._sleep(self._settings.conversions_poll_s)
                continue
            await self._database(self._housekeeping)
            claimed = await self._database(self._claim)
            self.metrics.settled.labels("unattributed").inc(claimed.unattributed)
            self.metrics.settled.labels("erased").inc(claimed.erased)
            self.metrics.settled.labels("unconfigured").inc(claimed.unconfigured)
            if claimed.events:
                await self._deliver(claimed.events)
                continue
            if self._drain and not await self._database(outbox.any_pending, self._held(parked_only=True)):
                return 1 if self.parked else 0
            self.metrics.waits.labels("idle").inc()
            await self._sleep(min([self._settings.conversions_poll_s, *self._resumes()]))
        return 0

    async def _take_up(self, routes: Routes, replaced: Routes | None = None) -> None:
        """A restart or a reload (of ``replaced``) is how a fixed token, permission or dataset is taken up: every
        park is lifted and tried again, and the events left unconfigured that now have a route are pending again."""
        self.parked.clear()
        kept = {route.label for route in routes}
        for route in replaced or ():
            if route.label not in kept:  # a setup taken out of the file: its parked series goes with it
                self.metrics.parked.remove(route.label)
        self._paces = {route.key: self._paces.get(route.key) or _Pace(self._settings) for route in routes}
        for route in routes:  # each route's series exported from the start, at 0
            self.metrics.parked.labels(route.label).set(0)
            self.metrics.sent.labels(route.label)
            for outcome in Outcome:
                self.metrics.requests.labels(outcome.value, route.label)
        keys = [route.key for route in routes]
        rechecked = await self._database(_take_up, keys, routes.own, routes.default is not None)
        if rechecked:
            log.info("unconfigured events have a Meta setup now: pending again", extra={"events": rechecked})

    async def serve(self, stack: AsyncExitStack, host: str, port: int) -> None:
        """``/healthz`` (503 while every route is parked, with the reasons) and ``/metrics`` on ``host:port``."""
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

    def _way(self, app_id: str | None) -> outbox.Way:
        route = self._routes.of(app_id)
        if route is None:
            return "none"
        return "hold" if self._is_held(route.key) else "send"

    def _is_held(self, key: str) -> bool:
        return key in self.parked or self._paces[key].resume_at > asyncio.get_running_loop().time()

    def _held(self, *, parked_only: bool = False) -> outbox.Held:
        held = [key for key in self._paces if key in self.parked or (not parked_only and self._is_held(key))]
        return outbox.Held([key for key in held if key != DEFAULT], DEFAULT in held, self._routes.own)

    def _resumes(self) -> list[float]:
        """Seconds until each paused route may send again."""
        now = asyncio.get_running_loop().time()
        return [
            pace.resume_at - now for key, pace in self._paces.items() if key not in self.parked and pace.resume_at > now
        ]

    async def _claim(self, connection: AsyncConnection) -> outbox.Claimed:
        batch = max((self._paces[route.key].batch for route in self._routes), default=1)
        return await outbox.claim(connection, self._eraser, batch, self._way, self._held())

    async def _deliver(self, events: Sequence[Event]) -> None:
        """Send ``events``, each route's in requests of its own, one route after the other."""
        by_app: dict[str | None, list[Event]] = {}
        for event in events:
            by_app.setdefault(event.app_id, []).append(event)
        by_route: dict[str, list[Event]] = {}
        for app_id, of_app in by_app.items():
            route = self._routes.of(app_id)
            assert route is not None, "a claim marks sending only events with a route"
            by_route.setdefault(route.key, []).extend(of_app)
        for key, part in by_route.items():
            route = self._routes.get(key)
            assert route is not None
            pace = self._paces[key]
            # A claim takes up to the largest route's batch: a throttled route's share goes in smaller requests.
            requests: list[Sequence[Event]] = [
                part[start : start + pace.batch] for start in range(0, len(part), pace.batch)
            ]
            await self._deliver_route(route, requests)

    async def _deliver_route(self, route: Route, requests: list[Sequence[Event]]) -> None:
        """Send a route's ``requests``; halve a request Meta refuses for one of its events, until that event is
        alone."""
        queue = list(requests)
        claimed = True  # the claim has just started their lease
        pace = self._paces[route.key]
        while queue:
            part = queue.pop(0)
            ids = [event.id for event in part]
            if not claimed:
                await self._database(outbox.renew, ids)
            claimed = False
            verdict = await route.client.send(part)
            self.metrics.requests.labels(verdict.outcome.value, route.label).inc()
            if verdict.outcome is Outcome.COUNTED:
                await self._database(_settle, outbox.mark_sent, ids, verdict, route.key)
                self.metrics.sent.labels(route.label).inc(len(part))
                pace.counted(self._settings)
            elif verdict.outcome is Outcome.UNKNOWN:
                log.error(
                    "no answer from Meta for a request that may have reached it: its events are unconfirmed",
                    extra={"events": len(part), "reason": verdict.reason, "app": route.label},
                )
                await self._database(_settle, outbox.mark_unconfirmed, ids, verdict, route.key)
                self.metrics.settled.labels("unconfirmed").inc(len(part))
            elif verdict.outcome is Outcome.REFUSED and len(part) > 1:
                await self._database(_settle, None, ids, verdict, route.key)
                middle = len(part) // 2
                queue[:0] = [part[:middle], part[middle:]]
            elif verdict.outcome is Outcome.REFUSED:
                log.warning(
                    "Meta refused an event for good",
                    extra={
                        "event_id": part[0].event_id,
                        "code": verdict.code,
                        "subcode": verdict.subcode,
                        "app": route.label,
                    },
                )
                await self._database(_settle, outbox.mark_failed, ids, verdict, route.key)
                self.metrics.refused.labels(str(verdict.subcode or verdict.code or "unknown"), route.label).inc()
            else:
                # Nothing of it counted, nor of what is left to send on this route: all of it is pending again.
                left = ids + [event.id for rest in queue for event in rest]
                await self._hold_back(route, left, verdict)
                return

    async def _hold_back(self, route: Route, ids: list[int], verdict: Verdict) -> None:
        if verdict.outcome is Outcome.PARK:
            await self._database(_park, ids, verdict, route.key)
            self.parked[route.key] = verdict.reason
            self.metrics.parked.labels(route.label).set(1)
            setting = (
                "CTWA_META_ACCESS_TOKEN, its permissions, CTWA_META_DATASET_ID"
                if route.key == DEFAULT
                else f"the apps file's [app.meta] of app {route.key}"
            )
            log.critical(
                f"Meta refuses the sender's configuration: sending stopped for {route.label}, its events kept "
                f"pending; fix the setting ({setting}) and restart or reload (SIGHUP)",
                extra={"code": verdict.code, "subcode": verdict.subcode, "reason": verdict.reason, "app": route.label},
            )
            return
        delay = self._paces[route.key].held_back(self._settings, throttled=verdict.outcome is Outcome.THROTTLED)
        log.warning(
            "Meta did not take the request, retrying later",
            extra={
                "outcome": verdict.outcome.value,
                "reason": verdict.reason,
                "retry_in_s": round(delay, 2),
                "app": route.label,
            },
        )
        await self._database(_release, ids, verdict, delay, route.key)

    async def _database(
        self, step: Callable[Concatenate[AsyncConnection, P], Awaitable[R]], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Run ``step`` in a transaction of its own, retried until the database takes it: what was learnt from
        Meta is kept in memory meanwhile, never dropped."""
        return await _in_transaction(self._engine, step, *args, **kwargs)

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or until stopped or given new routes."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))
        if not self._stopping.is_set():
            self._wake.clear()

    async def _healthz(self, request: web.Request) -> web.Response:
        parked = {route.label: self.parked[route.key] for route in self._routes if route.key in self.parked}
        if parked and len(parked) == len(self._routes):
            return web.json_response({"status": "parked", "parked": parked}, status=503)
        return web.json_response({"status": "ok", "parked": parked} if parked else {"status": "ok"})


class _Pace:
    """How fast one route may send: its request size (halved by a throttle, doubled back by each success), and when
    it may send again after Meta's trouble (a growing backoff)."""

    def __init__(self, settings: Settings) -> None:
        self.batch = settings.conversions_batch_size
        self.resume_at = 0.0
        self._backoff = backoff(settings.conversions_backoff_s, settings.conversions_backoff_max_s)

    def counted(self, settings: Settings) -> None:
        self.batch = min(settings.conversions_batch_size, self.batch * 2)
        self._backoff = backoff(settings.conversions_backoff_s, settings.conversions_backoff_max_s)

    def held_back(self, settings: Settings, *, throttled: bool) -> float:
        """Meta did not take a request: the seconds until this route sends again."""
        delay = next(self._backoff)
        if throttled:
            self.batch = max(1, self.batch // 2)
            delay = min(settings.conversions_backoff_max_s, delay * 4)
        self.resume_at = asyncio.get_running_loop().time() + delay
        return delay


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


async def _settle(
    connection: AsyncConnection, mark: Mark | None, ids: Sequence[int], verdict: Verdict, key: str
) -> None:
    """What a request came to, in one transaction: the events' status (``mark``), and the request noted."""
    if mark is not None:
        await mark(connection, ids, verdict)
    await outbox.note_request(connection, success=verdict.outcome is Outcome.COUNTED, key=key)


async def _release(connection: AsyncConnection, ids: Sequence[int], verdict: Verdict, delay: float, key: str) -> None:
    await outbox.release(connection, ids, verdict, delay)
    await outbox.note_request(connection, success=False, key=key)


async def _park(connection: AsyncConnection, ids: Sequence[int], verdict: Verdict, key: str) -> None:
    await _release(connection, ids, verdict, 0.0, key)
    await outbox.park(connection, verdict, key)


async def _take_up(connection: AsyncConnection, keys: Sequence[str], own: Sequence[str], default: bool) -> int:
    await outbox.unpark(connection, keys)
    return await outbox.recheck(connection, own, default)


def run(settings: Settings, *, drain: bool = False) -> int:
    """Run a sender until SIGTERM/SIGINT (or, with ``drain``, until nothing is pending); its exit status. SIGHUP
    reads the apps file again and sends with its setups from the next request on; a file that can't be used is
    refused, logged with its line and reason, and the running setups stay."""

    async def main() -> int:
        apps = load_apps(settings.apps_file) if settings.apps_file is not None else None
        routes = routes_of(settings, apps)
        if settings.meta_test_event_code:
            log.warning("CTWA_META_TEST_EVENT_CODE is set: Meta shows these events as tests and credits no ad")
        engine = engine_for(settings, "ctwa-conversions")
        async with AsyncExitStack() as stack:
            stack.push_async_callback(engine.dispose)
            await stack.enter_async_context(routes)
            if apps is not None:
                await _in_transaction(engine, name_apps, apps)
            sender = Sender(engine, routes, await _in_transaction(engine, Eraser.load), settings, drain=drain)
            reloads: set[asyncio.Task[None]] = set()

            def reload() -> None:
                task = asyncio.create_task(_reload(engine, sender, settings))
                reloads.add(task)
                task.add_done_callback(reloads.discard)

            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, sender.stop)
            loop.add_signal_handler(signal.SIGHUP, reload)
            if settings.conversions_metrics_port:
                await sender.serve(stack, settings.http_host, settings.conversions_metrics_port)
            watch = asyncio.create_task(sender.watch())
            try:
                status = await sender.run()
            finally:
                watch.cancel()
                for task in reloads:
                    task.cancel()
                if sender.routes is not routes:  # reloaded: the first routes were closed when replaced
                    await sender.routes.__aexit__(None, None, None)
            log.info("sender stopped", extra={"status": status})
            return status

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main())


async def _reload(engine: AsyncEngine, sender: Sender, settings: Settings) -> None:
    """SIGHUP: the apps file read again; its setups taken up by ``sender`` between two requests."""
    try:
        apps = load_apps(settings.apps_file) if settings.apps_file is not None else None
        routes = routes_of(settings, apps)
    except (AppsFileError, ConfigurationMissing) as error:
        log.error("apps file refused, the running setups stay", extra={"reason": str(error)})
        return
    await routes.__aenter__()
    try:
        if apps is not None:
            await _in_transaction(engine, name_apps, apps)
        replaced = await sender.reload(routes)
    except BaseException:
        await routes.__aexit__(None, None, None)
        raise
    await replaced.__aexit__(None, None, None)
    log.info("apps file read again", extra={"apps": len(apps or ()), "routes": len(routes)})
