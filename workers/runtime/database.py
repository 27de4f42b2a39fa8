"""The Postgres side of the workers: the engine, and telling a failure worth retrying from bad data."""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ingest.settings import Settings

__all__ = ["DATABASE_ERRORS", "create_engine", "engine_for", "is_data_error", "sqlstate"]

# SQLSTATE classes that mean "this data can never be stored": 22 data exception (a NUL in a JSON string, a value
# out of range), 23 integrity constraint violation, 54 program limit exceeded (JSON nested too deep for Postgres).
# Everything else — connection loss (08), serialization failure and deadlock (40), resources (53), operator
# intervention such as pg_terminate_backend (57), an undefined table before the migrations ran (42) — is the
# database's state, not the message's: retried, never dead-lettered.
_DATA_ERROR_CLASSES = ("22", "23", "54")

# A connection still alive but of no more use: 25006, read-only — after a failover it leads to a standby not yet
# promoted, or to the old primary, demoted. Retrying on it would fail forever, so the pool is dropped, as after a
# lost connection, and the retry connects anew: to the new primary, or to a read-only server again until there is one.
_STALE_CONNECTION_STATES = ("25006",)

# What reaching or using the database raises. SQLAlchemy wraps the driver's errors in its own, but SQLAlchemy 2.0
# (which the project allows) lets asyncpg's through unwrapped when *connecting* — 57P03 "the database system is
# starting up" during a failover, a connection closed mid-handshake (08003). Missing here, those were taken for a
# failure of the worker's own code on the data, and every callback of the batch was dead-lettered.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, asyncpg.PostgresError, OSError, TimeoutError)


def create_engine(
    url: str, *, application_name: str = "ctwa-worker", connections: int = 2, statement_cache: bool = True
) -> AsyncEngine:
    """An engine for ``connections`` batches at a time: connections checked before use, named in
    ``pg_stat_activity``, and a couple more for what else runs alongside.

    Without ``statement_cache`` (``CTWA_DATABASE_STATEMENT_CACHE=false``) no prepared statement is reused after its
    transaction, as a pooler in transaction mode requires: it may hand the next transaction to another server
    connection, where a cached statement does not exist. asyncpg then prepares unnamed statements, which need no
    name of their own.
    """
    connect_args: dict[str, Any] = {"server_settings": {"application_name": application_name}, "timeout": 10}
    if not statement_cache:
        connect_args |= {
            "statement_cache_size": 0,  # asyncpg's own cache
            "prepared_statement_cache_size": 0,  # SQLAlchemy's, in its asyncpg dialect
        }
    engine = create_async_engine(
        url, pool_size=connections, max_overflow=2, pool_pre_ping=True, connect_args=connect_args
    )
    event.listen(engine.sync_engine, "handle_error", _drop_stale_connections)
    return engine


def engine_for(settings: Settings, application_name: str, *, connections: int = 2) -> AsyncEngine:
    """The engine of ``settings``' database (``CTWA_DATABASE_URL``, ``CTWA_DATABASE_STATEMENT_CACHE``): how every
    service and command connects."""
    return create_engine(
        settings.database_url,
        application_name=application_name,
        connections=connections,
        statement_cache=settings.database_statement_cache,
    )


def _drop_stale_connections(context: ExceptionContext) -> None:
    """Treat a read-only server as a lost connection: this connection, and every other the pool holds, is dropped."""
    if sqlstate(context.original_exception) in _STALE_CONNECTION_STATES:
        context.is_disconnect = True


def sqlstate(error: BaseException) -> str | None:
    """The SQLSTATE code behind a SQLAlchemy or asyncpg error, if there is one."""
    for candidate in (getattr(error, "orig", None), error.__cause__, error):
        code = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_data_error(error: BaseException) -> bool:
    """Whether ``error`` says the data itself can't be stored, so retrying the same data would fail again."""
    if isinstance(error, DisconnectionError):
        return False
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return False
    code = sqlstate(error)
    return code is not None and code.startswith(_DATA_ERROR_CLASSES)
