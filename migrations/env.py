"""Alembic's environment: async, with the URL ``ctwa migrate`` passed; run by hand (``alembic upgrade head``), the
schema owner's from the settings — ``CTWA_MIGRATE_DATABASE_URL``, else ``CTWA_DATABASE_URL`` — as ``ctwa migrate``
takes it."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import create_async_engine

from ingest.settings import load_settings
from workers.engine.schema import metadata

config = context.config


def _url() -> str:
    if url := config.get_main_option("sqlalchemy.url"):
        return url
    settings = load_settings()
    return settings.migrate_database_url or settings.database_url


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


async def _migrate_online() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_migrate)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_migrate_online())
