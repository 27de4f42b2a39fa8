"""``ctwa migrate``: creates the database, goes up, down to base and up again; the models match the migrations."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from support import RUN_ID, drop_database

from workers.engine.schema import metadata


@pytest.fixture
async def fresh_database_url(database_url: str) -> AsyncIterator[str]:
    """The URL of a database that does not exist yet."""
    url = make_url(database_url).set(database=f"ctwa_test_{RUN_ID}_fresh").render_as_string(hide_password=False)
    await drop_database(url)
    yield url
    await drop_database(url)


async def _ctwa_migrate(url: str, *args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "migrate", *args, env={**os.environ, "CTWA_DATABASE_URL": url}
    )
    assert await asyncio.wait_for(process.wait(), 120) == 0


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await engine.dispose()
    return names - {"alembic_version"}


async def test_migrate_creates_the_database_then_goes_up_down_and_up(fresh_database_url: str) -> None:
    await _ctwa_migrate(fresh_database_url)
    assert await _tables(fresh_database_url) == {table.name for table in metadata.sorted_tables}
    await _ctwa_migrate(fresh_database_url)  # idempotent
    await _ctwa_migrate(fresh_database_url, "--down", "base")
    assert await _tables(fresh_database_url) == set()
    await _ctwa_migrate(fresh_database_url)
    assert await _tables(fresh_database_url) == {table.name for table in metadata.sorted_tables}


async def test_the_models_match_the_migrations(database_url: str) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        assert await connection.run_sync(differences) == []
    await engine.dispose()
