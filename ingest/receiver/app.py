"""The front door: an aiohttp app that takes Sinch callbacks and answers 200 only once the broker holds them."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from aiohttp import web

from ingest.apps import AppsFileError, load_apps
from ingest.callback import Callback, InvalidCallback, read
from ingest.eventloop import new_event_loop
from ingest.metrics import metrics_handler
from ingest.receiver.metrics import ReceiverMetrics
from ingest.receiver.publisher import BrokerUnavailable, Publisher
from ingest.receiver.signature import SignatureError, Signatures
from ingest.settings import Settings
from ingest.topology import Topology

__all__ = ["PUBLISHER", "RETRY_AFTER_S", "WEBHOOK_PATH", "create_app", "reload_apps", "run", "signatures"]

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/sinch"
RETRY_AFTER_S = 5


@dataclass
class _Verification:
    """What verifies callbacks now: replaced whole by a reload (None: signatures off)."""

    signatures: Signatures | None


PUBLISHER = web.AppKey("publisher", Publisher)
_SETTINGS = web.AppKey("settings", Settings)
_METRICS = web.AppKey("metrics", ReceiverMetrics)
_CLOCK = web.AppKey[Callable[[], float]]("clock")
_SIGNATURES = web.AppKey("signatures", _Verification)


def create_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> web.Application:
    """Build the receiver. ``clock`` gives Unix seconds; tests freeze it to check signature windows."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[_SETTINGS] = settings
    app[_METRICS] = ReceiverMetrics()
    app[_CLOCK] = clock
    app[_SIGNATURES] = _Verification(signatures(settings))
    app.cleanup_ctx.append(_broker)
    if settings.apps_file is not None:
        app.cleanup_ctx.append(_reload_on_sighup)
    app.router.add_post(WEBHOOK_PATH, receive_callback)
    # One URL per app, if Sinch's webhooks should say which: the body's app_id must be the path's.
    app.router.add_post(WEBHOOK_PATH + "/{app_id}", receive_callback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler(app[_METRICS].registry))
    if app[_SIGNATURES].signatures is None:
        log.warning("CTWA_WEBHOOK_SECRETS is empty: signatures are off and unsigned callbacks are accepted")
    return app


def signatures(settings: Settings) -> Signatures | None:
    """What verifies callbacks: the apps of ``CTWA_APPS_FILE``, read now, and the deployment's secrets; None when
    neither is set (signatures off). Raises `AppsFileError` for a file that can't be used. Warns about a secret valid
    for more than one app."""
    apps = None if settings.apps_file is None else load_apps(settings.apps_file)
    if apps is None and not settings.webhook_secrets:
        return None
    if apps is not None:
        if settings.webhook_secrets:
            log.warning(
                "CTWA_WEBHOOK_SECRETS verifies the callbacks of every app not in the apps file: any holder of it can "
                "sign for them; list each app in the file instead",
                extra={"apps": len(apps)},
            )
        for secret, ids in apps.shared_secrets().items():
            log.warning(
                "a webhook secret is shared by several apps: each can sign for the others",
                extra={"secret": secret, "apps": ids},
            )
    return Signatures(settings.webhook_secrets, settings.signature_tolerance_s, apps)


def reload_apps(app: web.Application) -> bool:
    """Read the apps file again and use it from the next callback on (those in hand keep the apps they started
    with); a file that can't be used is refused, logged with its line and reason, and the running apps stay."""
    settings = app[_SETTINGS]
    try:
        reloaded = signatures(settings)
    except AppsFileError as error:
        log.error("apps file refused, the running apps stay", extra={"error": str(error)})
        return False
    app[_SIGNATURES].signatures = reloaded
    log.info("apps file reloaded", extra={"apps": len(reloaded.apps) if reloaded and reloaded.apps else 0})
    return True


async def _reload_on_sighup(app: web.Application) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reload_apps, app)
    yield
    loop.remove_signal_handler(signal.SIGHUP)


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
    signatures = request.app[_SIGNATURES].signatures  # this callback's, whatever a reload does meanwhile
    try:
        if signatures is not None and not signatures.per_app:
            signatures.verify(body, request.headers, now)
        try:
            # Only the callback and its app are kept, not the parsed payload: parsed trees kept alive across awaits
            # are what the GC scans.
            callback, app_id = _read(body, now, signatures is not None)
        except InvalidCallback as error:
            return _reject(metrics, 400, error.reason, error.detail)
        path_app = request.match_info.get("app_id")
        if path_app is not None and app_id != path_app:
            raise SignatureError("app_mismatch", f"the callback's app_id is not the app of its URL ({path_app[:64]!r})")
        if signatures is not None and signatures.per_app:
            signatures.verify(body, request.headers, now, app_id)  # by the secrets of the app it names
    except SignatureError as error:
        return _reject(metrics, 401, error.reason, error.detail)

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


def _read(body: bytes, now: float, verified: bool) -> tuple[Callback, object]:
    incoming = read(body, datetime.fromtimestamp(now, UTC), signature_verified=verified)
    return incoming.callback, incoming.payload.get("app_id")


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
