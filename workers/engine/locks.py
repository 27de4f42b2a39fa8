"""The store's advisory lock: batches that merge or delete contacts (and replays) hold it exclusive, every other
batch — and every pass settling the day chains — shared. So a merge, an erasure or a replay sees every row committed
before it, every later writer sees it, and none of them runs beside a settling pass (`workers.engine.store`)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["lock"]

_LOCK = 0x63747761  # "ctwa"


async def lock(connection: AsyncConnection, *, exclusive: bool) -> None:
    """Take the store's advisory lock for the rest of the transaction: exclusive, or shared."""
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    await connection.execute(text(f"SELECT {function}(:key)"), {"key": _LOCK})
