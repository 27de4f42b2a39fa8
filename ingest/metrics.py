"""The ``GET /metrics`` handler the services serve, and the small server of ``/healthz`` and ``/metrics`` that the
processes without an HTTP app of their own run (the worker, the conversions sender)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["metrics_handler", "serve_health"]

Handler = Callable[[web.Request], Awaitable[web.Response]]


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """A ``GET /metrics`` handler exposing ``registry`` in the Prometheus text format."""

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    return metrics


async def serve_health(
    stack: AsyncExitStack, host: str, port: int, healthz: Handler, registry: CollectorRegistry
) -> None:
    """Serve ``GET /healthz`` (``healthz``) and ``GET /metrics`` (``registry``) on ``host:port`` until ``stack``
    closes."""
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_handler(registry))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    await web.TCPSite(runner, host, port).start()
