"""The apps' names in the database (table ``apps``), from the apps file: for reports and the dashboard. Written by
``ctwa migrate`` and by the senders whenever they read the file; an app dropped from the file keeps its name, so
that its past figures still show it."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ingest.apps import Apps

__all__ = ["name_apps"]

_NAME = text(
    """
    INSERT INTO apps AS app (app_id, name)
    SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:names AS text[]))
    ON CONFLICT (app_id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()
    WHERE app.name IS DISTINCT FROM EXCLUDED.name
    """
)


async def name_apps(connection: AsyncConnection, apps: Apps) -> None:
    """Each app of ``apps`` named as the file names it."""
    listed = sorted(apps.by_id.values(), key=lambda app: app.id)
    await connection.execute(_NAME, {"ids": [app.id for app in listed], "names": [app.name for app in listed]})
