"""What the worker retries and what it dead-letters, by the error Postgres gives."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from workers.runtime.database import DATABASE_ERRORS, create_engine, is_data_error, sqlstate


@pytest.mark.parametrize(
    ("statement", "codes", "data"),
    [
        ('SELECT \'{"a": "\\u0000"}\'::jsonb', {"22P05"}, True),  # a NUL in a JSON string
        ("SELECT 1 / 0", {"22012"}, True),
        ("SELECT 'x'::int", {"22P02"}, True),
        ("SELECT * FROM no_such_table", {"42P01"}, False),  # migrations not run yet: wait, don't dead-letter
        # The backend is gone: "admin shutdown", or "connection does not exist" as the driver sees it.
        ("SELECT pg_terminate_backend(pg_backend_pid())", {"57P01", "08003"}, False),
    ],
)
async def test_real_postgres_errors_are_classified(
    db: AsyncEngine, statement: str, codes: set[str], data: bool
) -> None:
    with pytest.raises(DBAPIError) as raised:
        async with db.connect() as connection:
            await connection.execute(text(statement))
    assert sqlstate(raised.value) in codes
    assert is_data_error(raised.value) is data


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.DeadlockDetectedError("deadlock"),
        asyncpg.exceptions.SerializationError("could not serialize"),
        asyncpg.exceptions.TooManyConnectionsError("too many"),
        asyncpg.exceptions.CannotConnectNowError("starting up"),
        ConnectionRefusedError(111, "refused"),
    ],
)
def test_contention_and_unavailability_are_retried_not_dead_lettered(error: Exception) -> None:
    assert not is_data_error(error)


async def test_a_write_on_a_read_only_server_is_retried_on_a_new_connection(database_url: str) -> None:
    # What a failover can lead to: a standby not yet promoted, or the old primary demoted, refuses every write.
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SET TRANSACTION READ ONLY"))
            with pytest.raises(DBAPIError) as raised:
                await connection.execute(text("CREATE TABLE never_created (x int)"))
        assert sqlstate(raised.value) == "25006"
        assert not is_data_error(raised.value)
        # The session may stay read-only: it is dropped, and so is the rest of the pool, opened before.
        assert raised.value.connection_invalidated
    finally:
        await engine.dispose()


def _as_sqlalchemy_raises_it(error: Exception) -> DBAPIError:
    """``error`` from asyncpg wrapped as SQLAlchemy 2.1 wraps it, connecting or not."""
    message = str(error)
    return DBAPIError(None, None, AsyncAdapt_asyncpg_dbapi.Error(message, error))


@pytest.mark.parametrize(
    "error",
    [
        # A failover: the server reached is read-only (25006), or still starting up (57P03, raised when connecting).
        asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    ],
    ids=["25006", "57P03"],
)
@pytest.mark.parametrize("wrapped", [True, False], ids=["wrapped", "unwrapped"])
def test_a_failover_is_retried_wrapped_or_not(error: Exception, wrapped: bool) -> None:
    # SQLAlchemy 2.0 lets asyncpg's errors raised while connecting through unwrapped; 2.1 wraps them.
    raised = _as_sqlalchemy_raises_it(error) if wrapped else error
    assert sqlstate(raised) == type(error).sqlstate
    assert not is_data_error(raised)
    assert isinstance(raised, DATABASE_ERRORS)  # what the worker catches and retries
