"""Where each conversion goes: to the Meta setup of the app its click came through (the apps file's
``[app.meta]``), else to the deployment's own (``CTWA_META_*``), else nowhere — ``unconfigured`` until a setup is
loaded. Each setup is a route with its own client (dataset, WABA, token), so that events of different apps never
share a request and one app's refused token parks only its own events.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass

from ingest.apps import Apps
from ingest.settings import Settings
from workers.conversions.meta import MetaClient

__all__ = ["DEFAULT", "ConfigurationMissing", "Route", "Routes", "routes_of"]

DEFAULT = ""  # the key of the deployment's own setup, CTWA_META_*
_GLOBAL = ("meta_dataset_id", "meta_access_token", "meta_waba_id")


class ConfigurationMissing(Exception):
    """The sender has no Meta setup to send with; the message names the settings."""


@dataclass(frozen=True)
class Route:
    """One Meta setup: ``key`` is its app's id, or `DEFAULT` for ``CTWA_META_*``; ``label`` names it in metrics and
    logs."""

    key: str
    label: str
    client: MetaClient


class Routes:
    """The routes of one configuration; an async context manager that opens and closes their clients."""

    def __init__(self, default: Route | None, apps: Mapping[str, Route]) -> None:
        self.default = default
        self.apps = dict(apps)
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Routes:
        for route in self:
            await self._stack.enter_async_context(route.client)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def __len__(self) -> int:
        return len(self.apps) + (self.default is not None)

    def __iter__(self) -> Iterator[Route]:
        if self.default is not None:
            yield self.default
        yield from self.apps.values()

    def of(self, app_id: str | None) -> Route | None:
        """The route of an event whose click came through ``app_id`` (None: the click is not stored)."""
        if app_id is not None and app_id in self.apps:
            return self.apps[app_id]
        return self.default

    def get(self, key: str) -> Route | None:
        return self.default if key == DEFAULT else self.apps.get(key)

    @property
    def own(self) -> list[str]:
        """The apps with a setup of their own."""
        return sorted(self.apps)


def routes_of(settings: Settings, apps: Apps | None) -> Routes:
    """The routes of ``settings`` (``CTWA_META_*``: all three or none) and the apps file's ``[app.meta]`` tables;
    `ConfigurationMissing` when the global setup is half given, or there is no setup at all."""
    given = [name for name in _GLOBAL if getattr(settings, name)]
    if given and len(given) < len(_GLOBAL):
        missing = ", ".join(f"CTWA_{name.upper()}" for name in _GLOBAL if name not in given)
        raise ConfigurationMissing(f"missing {missing} (docs/conversions.md)")
    default = None
    if given:
        default = Route(
            DEFAULT,
            "default",
            _client(
                settings,
                settings.meta_dataset_id or "",
                settings.meta_access_token or "",
                settings.meta_waba_id or "",
                settings.meta_partner_agent,
            ),
        )
    own = {
        app.id: Route(
            app.id,
            app.id,
            _client(
                settings,
                app.meta.dataset_id,
                app.meta.access_token,
                app.meta.waba_id,
                app.meta.partner_agent or settings.meta_partner_agent,
            ),
        )
        for app in (apps.by_id.values() if apps is not None else ())
        if app.meta is not None
    }
    if default is None and not own:
        names = ", ".join(f"CTWA_{name.upper()}" for name in _GLOBAL)
        raise ConfigurationMissing(
            f"no Meta setup: set {names}, or give apps an [app.meta] in CTWA_APPS_FILE (docs/conversions.md)"
        )
    return Routes(default, own)


def _client(settings: Settings, dataset_id: str, token: str, waba_id: str, partner_agent: str | None) -> MetaClient:
    return MetaClient(
        graph_url=settings.meta_graph_url,
        version=settings.meta_api_version,
        dataset_id=dataset_id,
        access_token=token,
        waba_id=waba_id,
        partner_agent=partner_agent,
        test_event_code=settings.meta_test_event_code,
        timeout=settings.meta_timeout_s,
    )
