"""The front door: an aiohttp app that takes Sinch callbacks and answers 200 only once the broker holds them."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import orjson
from aiohttp import web

from ingest.callback import InvalidCallback, read
from ingest.eventloop import new_event_loop
from ingest.metrics import metrics_handler
from ingest.receiver.metrics import ReceiverMetrics
from ingest.receiver.publisher import BrokerUnavailable, Publisher
from ingest.receiver.signature import SignatureError, Verifier
from ingest.settings import Settings
from ingest.topology import Topology

__all__ = ["PUBLISHER", "RETRY_AFTER_S", "WEBHOOK_PATH", "create_app", "run"]

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/sinch"
RETRY_AFTER_S = 5

PUBLISHER = web.AppKey("publisher", Publisher)
_SETTINGS = web.AppKey("settings", Settings)
_METRICS = web.AppKey("metrics", ReceiverMetrics)
_CLOCK = web.AppKey[Callable[[], float]]("clock")
_VERIFIER = web.AppKey[Verifier | None]("verifier")


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> web.Application:
    """Build the receiver. ``clock`` gives Unix seconds; tests freeze it to check signature windows."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[_SETTINGS] = settings
    app[_METRICS] = ReceiverMetrics()
    app[_CLOCK] = clock
    app[_VERIFIER] = (
        Verifier(settings.webhook_secrets, settings.signature_tolerance_s) if settings.signatures_enabled else None
    )
    app.cleanup_ctx.append(_broker)
    app.router.add_post(WEBHOOK_PATH, receive_callback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler(app[_METRICS].registry))
    if not settings.signatures_enabled:
        log.warning("CTWA_WEBHOOK_SECRETS is empty: signatures are off and unsigned callbacks are accepted")
    return app


async def _broker(app: web.Application) -> AsyncIterator[None]:
    settings = app[_SETTINGS]
    publisher = Publisher(
        settings.amqp_urls,
        Topology(settings.amqp_prefix, settings.delivery_limit),
        app[_METRICS],
        confirm_timeout=settings.publish_timeout_s,
        linger=settings.publish_linger_ms / 1000,
        batch_max=settings.publish_batch_max,
        replace_after=settings.publish_replace_after_s,
    )
    await publisher.start()
    app[PUBLISHER] = publisher
    yield
    await publisher.close()


async def receive_callback(request: web.Request) -> web.Response:
    """``POST /webhooks/sinch``: 200 once confirmed; 400/401/413 for what can never succeed; 503 to be retried."""
    app = request.app
    settings, metrics = app[_SETTINGS], app[_METRICS]
    metrics.in_flight += 1
    try:
        return await _accept(request, settings, metrics)
    finally:
        metrics.in_flight -= 1


async def _accept(request: web.Request, settings: Settings, metrics: ReceiverMetrics) -> web.Response:
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _reject(metrics, 413, "too_large", f"the body exceeds {settings.max_body_bytes} bytes")

    now = request.app[_CLOCK]()
    verifier = request.app[_VERIFIER]
    if verifier is not None:
        try:
            verifier.verify(body, request.headers, now)
        except SignatureError as error:
            return _reject(metrics, 401, error.reason, error.detail)

    try:
        # Only the callback is kept, not its parsed payload: parsed trees kept alive across awaits are what the GC
        # scans.
        callback = read(body, datetime.fromtimestamp(now, UTC), signature_verified=verifier is not None).callback
    except InvalidCallback as error:
        return _reject(metrics, 400, error.reason, error.detail)

    try:
        await request.app[PUBLISHER].publish(callback)
    except BrokerUnavailable as error:
        # An outage or an alarm is logged once by the publisher; a broker that is up but won't confirm is worth a
        # line each.
        level = logging.DEBUG if error.reason in ("broker_unavailable", "broker_blocked") else logging.WARNING
        log.log(level, "callback not confirmed by the broker", extra={"reason": error.reason})
        response = _reject(metrics, 503, error.reason, "the broker did not confirm the callback; retry")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    metrics.accepted[callback.trigger].inc()
    answer = {"status": "accepted", "trigger": callback.trigger, "key": callback.key}
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready: a confirm channel to the broker is open, and the broker takes publishes (no resource alarm)."""
    publisher = request.app[PUBLISHER]
    if publisher.ready:
        return web.json_response({"status": "ready"})
    reason = "the broker blocks publishing (a resource alarm)" if publisher.blocked else "no broker channel"
    return web.json_response({"status": "unavailable", "reason": reason}, status=503)


def _reject(metrics: ReceiverMetrics, status: int, reason: str, detail: str) -> web.Response:
    metrics.rejected.labels(str(status), reason).inc()
    if status < 500:
        log.info("callback rejected", extra={"status": status, "reason": reason})
    return web.json_response({"error": reason, "detail": detail}, status=status)


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; in-flight callbacks get their answer before the broker connection closes."""
    log.info("receiver listening", extra={"host": settings.http_host, "port": settings.http_port})
    app = create_app(settings)
    # What was loaded at start lives forever: keeping it out of the collector's scans is worth ~5 % throughput.
    gc.freeze()
    web.run_app(
        app,
        host=settings.http_host,
        port=settings.http_port,
        access_log=None,
        print=None,
        shutdown_timeout=settings.publish_timeout_s + 1,
        handle_signals=True,
        loop=new_event_loop(),
    )
    log.info("receiver stopped")
