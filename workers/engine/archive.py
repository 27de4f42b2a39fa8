"""The ``callbacks`` archive: every callback once, under its business key, with its payload as received."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from workers.engine.facts import Archived, Batch
from workers.engine.rows import columns, definitions, encode

__all__ = ["insert"]

_COLUMNS = ", ".join(columns(Archived))

# One statement per batch: the rows as one JSON document and the payloads as one text array (carried as received,
# no escaping), zipped by position; out come the keys that were new. A key already archived is a duplicate.
_INSERT = text(
    f"""
    INSERT INTO callbacks ({_COLUMNS}, payload)
    SELECT {_COLUMNS}, payload::jsonb
    FROM ROWS FROM (
        json_to_recordset(CAST(:archived AS json)) AS ({definitions(Archived)}),
        unnest(CAST(:payloads AS text[]))
    ) AS batch({_COLUMNS}, payload)
    ON CONFLICT (key) DO NOTHING
    RETURNING key
    """
)


async def insert(connection: AsyncConnection, batch: Batch) -> set[str]:
    """Archive ``batch`` (keys unique within it); return the keys that were not archived before."""
    result = await connection.execute(_INSERT, {"archived": encode(batch.archived), "payloads": batch.payloads})
    return set(result.scalars())
