"""Writing a batch, in one transaction and in this order: the archive, merges, the projections, erasure, and the
rollups — each once.

The store owns the lock decision. Batches that merge or delete contacts hold an exclusive advisory lock
(``workers.engine.locks``); every other batch, and every pass settling the day chains, holds it shared. So a merge
or an erasure sees every row committed before it, and every later batch sees the merge or erasure. A batch found
(under the shared lock) to touch an erased contact or identity is rolled back and written again under the
exclusive lock, so its rows are erased as they are written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ingest.callback import Incoming
from workers.engine import archive, facts, merges, projections, rollups
from workers.engine.erasure import Eraser
from workers.engine.facts import Facts
from workers.engine.locks import lock

__all__ = ["Store", "distinct", "lock"]


def distinct(items: Iterable[Incoming]) -> tuple[list[Incoming], list[Incoming]]:
    """The first copy of each business key in ``items``, sorted by key, and the later copies (duplicates).

    Sorted, because concurrent writers that lock rows in one order stay out of deadlocks.
    """
    unique: dict[str, Incoming] = {}
    repeated: list[Incoming] = []
    for item in items:
        if unique.setdefault(item.callback.key, item) is not item:
            repeated.append(item)
    return sorted(unique.values(), key=lambda item: item.callback.key), repeated


class Store:
    """Archives callbacks and projects the new ones, in one transaction per call."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._eraser: Eraser | None = None

    async def write(self, items: Sequence[Incoming]) -> set[str]:
        """Store ``items`` (business keys unique among them); return the keys that were new.

        A duplicate is archived once and projected once: only new callbacks reach the projections.
        """
        batch = facts.read(items)
        exclusive = batch.changes_contacts
        while True:
            async with self._engine.connect() as connection:
                transaction = await connection.begin()
                await lock(connection, exclusive=exclusive)
                new = await archive.insert(connection, batch)
                if await self.project(connection, batch.facts(new), exclusive=exclusive):
                    await transaction.commit()
                    return new
                await transaction.rollback()
            exclusive = True

    async def project(self, connection: AsyncConnection, said: Facts, *, exclusive: bool) -> bool:
        """Write what ``said`` says into every table, in a transaction holding the store's lock (`lock`).

        Returns ``False``, having written nothing, when the facts touch an erased contact or identity and the lock
        held is only shared.
        """
        eraser = self._eraser = self._eraser or await Eraser.load(connection)
        resolved = await merges.apply(connection, said.merges, said.contact_ids())
        erasure = await eraser.find(
            connection,
            said.deletions,
            set(resolved.roots.values()),
            {(fact["channel"], fact["identity"]) for fact in said.identities},
        )
        if erasure is not None and not exclusive:
            return False
        written = await projections.write(connection, said, resolved.roots)
        contacts, identities = set(resolved.moved), set[tuple[str, str]]()
        if erasure is not None:
            identities = await eraser.erase(connection, erasure)
            contacts |= erasure.roots
        await rollups.update(connection, written, contacts, identities)
        return True
