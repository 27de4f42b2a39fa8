"""What the worker retries and what it dead-letters, by the error Postgres gives."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from workers.runtime.database import is_data_error, sqlstate


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
