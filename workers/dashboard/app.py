"""The dashboard's aiohttp app: the page, its files, and the JSON API of docs/dashboard.md, read-only."""

from __future__ import annotations

import gc
import io
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.eventloop import new_event_loop
from ingest.settings import Settings
from workers.commands import output
from workers.commands.report import AD_COLUMNS
from workers.dashboard import figures
from workers.dashboard.access import Users, guard
from workers.runtime.database import create_engine

__all__ = ["STATIC", "Refused", "create_app", "run"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SETTINGS = web.AppKey("settings", Settings)
_ENGINE = web.AppKey("engine", AsyncEngine)


class Refused(Exception):
    """The dashboard will not start as configured; the message says why."""


def create_app(settings: Settings) -> web.Application:
    """The dashboard, reading the database of ``CTWA_DASHBOARD_DATABASE_URL`` (default ``CTWA_DATABASE_URL``)."""
    app = web.Application(middlewares=[_timed, guard(Users(settings.dashboard_users))])
    app[_SETTINGS] = settings
    app.cleanup_ctx.append(_database)
    app.router.add_get("/", _page)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/api/summary", _api(_summary))
    app.router.add_get("/api/ads", _api(_ads))
    app.router.add_get("/api/daily", _api(_daily))
    app.router.add_get("/api/engagement", _api(_engagement))
    app.router.add_get("/api/creatives", _api(_creatives))
    app.router.add_get("/api/conversions", _api(_conversions))
    app.router.add_get("/api/freshness", _api(_freshness))
    app.router.add_get("/api/apps", _api(_apps))
    app.router.add_static("/static", STATIC, append_version=False)
    return app


@web.middleware
async def _timed(request: web.Request, handler: Handler) -> web.StreamResponse:
    """How long the server took, as ``Server-Timing`` (browsers' developer tools and bench/dashboard.py read it)."""
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as error:
        error.headers["Server-Timing"] = _timing(started)
        raise
    response.headers["Server-Timing"] = _timing(started)
    return response


def _timing(started: float) -> str:
    return f"app;dur={(time.perf_counter() - started) * 1000:.1f}"


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[_SETTINGS]
    app[_ENGINE] = create_engine(
        settings.dashboard_database_url or settings.database_url,
        application_name="ctwa-dashboard",
        connections=4,
        statement_cache=settings.database_statement_cache,
    )
    yield
    await app[_ENGINE].dispose()


Answer = Callable[[web.Request, AsyncEngine], Awaitable[web.StreamResponse | Any]]


def _api(answer: Answer) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A JSON endpoint: ``answer``'s result as JSON, a bad range a ``400`` saying why."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            result = await answer(request, request.app[_ENGINE])
        except figures.RangeError as error:
            return web.json_response({"error": "bad request", "detail": str(error)}, status=400)
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(result, headers={"Cache-Control": "no-store"})

    return handler


async def _summary(request: web.Request, engine: AsyncEngine) -> Any:
    return await figures.summary(engine, figures.Range.asked(request.query))


async def _ads(request: web.Request, engine: AsyncEngine) -> Any:
    asked = figures.Range.asked(request.query)
    rows = await figures.ads(engine, asked)
    if request.query.get("format") != "csv":
        return rows
    out = io.StringIO()
    output.render(rows, AD_COLUMNS, "csv", out)
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="ads-{asked.since}-{asked.until}.csv"'},
    )


async def _daily(request: web.Request, engine: AsyncEngine) -> Any:
    return await figures.daily(engine, figures.Range.asked(request.query), request.query.get("source_id") or None)


async def _engagement(request: web.Request, engine: AsyncEngine) -> Any:
    return await figures.engagement(engine, figures.Range.asked(request.query))


async def _creatives(request: web.Request, engine: AsyncEngine) -> Any:
    asked = figures.Range.asked(request.query)
    if not (source_id := request.query.get("source_id")):
        return web.json_response({"error": "no ad", "detail": "source_id names the ad"}, status=400)
    return await figures.creatives(engine, asked, source_id)


async def _conversions(request: web.Request, engine: AsyncEngine) -> Any:
    return await figures.conversions(engine)


async def _apps(request: web.Request, engine: AsyncEngine) -> Any:
    return await figures.apps(engine)


async def _freshness(request: web.Request, engine: AsyncEngine) -> Any:
    return await figures.freshness(engine)


async def _page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM. Refuses to start without users unless it listens on loopback only."""
    if not settings.dashboard_users:
        if not _loopback(settings.dashboard_host):
            raise Refused(
                f"CTWA_DASHBOARD_USERS is empty and CTWA_DASHBOARD_HOST ({settings.dashboard_host}) is not loopback: "
                "set name:password pairs, or listen on 127.0.0.1 only"
            )
        log.warning("CTWA_DASHBOARD_USERS is empty: anyone on this machine may see the dashboard")
    if not settings.dashboard_database_url:
        log.warning("CTWA_DASHBOARD_DATABASE_URL is not set: reading as the services' role, not a read-only one")
    try:
        app = create_app(settings)
    except ValueError as error:  # a user's hash that can't be read
        raise Refused(str(error)) from None
    log.info("dashboard listening", extra={"host": settings.dashboard_host, "port": settings.dashboard_port})
    gc.freeze()
    web.run_app(
        app,
        host=settings.dashboard_host,
        port=settings.dashboard_port,
        access_log=None,
        print=None,
        handle_signals=True,
        loop=new_event_loop(),
    )
    log.info("dashboard stopped")
