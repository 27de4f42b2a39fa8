"""Writing a batch: the archive and every projection, in one transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from workers.engine import archive, projections
from workers.engine.archive import Incoming
from workers.engine.erasure import Eraser

__all__ = ["Store", "distinct"]


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
        exclusive = projections.needs_exclusive(items)
        while True:
            try:
                async with self._engine.begin() as connection:
                    await projections.lock(connection, exclusive)
                    if self._eraser is None:
                        self._eraser = await Eraser.load(connection)
                    new = await archive.insert(connection, items)
                    fresh = [item for item in items if item.callback.key in new]
                    await projections.project(connection, fresh, self._eraser, exclusive=exclusive)
                return new
            except projections.NeedsExclusive:
                exclusive = True
