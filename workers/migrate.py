"""``ctwa migrate``: create the database when it is missing, then run the Alembic migrations."""

from __future__ import annotations

import asyncio
import logging
from importlib.resources import files

from alembic import command
from alembic.config import Config
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from workers.database import sqlstate

__all__ = ["alembic_config", "downgrade", "ensure_database", "upgrade"]

log = logging.getLogger(__name__)

_DUPLICATE_DATABASE = "42P04"


def alembic_config(database_url: str) -> Config:
    """Alembic's configuration for ``database_url``, with the migrations shipped in the ``migrations`` package."""
    config = Config()
    config.set_main_option("script_location", str(files("migrations")))
    # Alembic's config is an INI file underneath, where '%' starts an interpolation.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


async def ensure_database(database_url: str) -> bool:
    """Create the database ``database_url`` names if it does not exist; return whether it was created."""
    url = make_url(database_url)
    name = url.database
    if not name:
        raise ValueError("the database URL names no database")
    # CREATE DATABASE can't run in a transaction, and needs a connection to another database.
    engine = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            exists = await connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
            if exists:
                return False
            quoted = engine.dialect.identifier_preparer.quote(name)
            try:
                await connection.execute(text(f"CREATE DATABASE {quoted}"))
            except DBAPIError as error:
                if sqlstate(error) == _DUPLICATE_DATABASE:  # created meanwhile by another migrator
                    return False
                raise
            log.info("database created", extra={"database": name})
            return True
    finally:
        await engine.dispose()


def upgrade(database_url: str, revision: str = "head") -> None:
    """Create the database if needed and migrate it up to ``revision``. Not to be called inside an event loop."""
    asyncio.run(ensure_database(database_url))
    command.upgrade(alembic_config(database_url), revision)
    log.info("database migrated", extra={"revision": revision})


def downgrade(database_url: str, revision: str) -> None:
    """Migrate down to ``revision`` (``base`` removes every table). Not to be called inside an event loop."""
    command.downgrade(alembic_config(database_url), revision)
    log.info("database migrated down", extra={"revision": revision})
