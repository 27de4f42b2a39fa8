"""``ctwa conversions send --drain`` with Meta stood in by a client that counts every request at once: the sender's
database side alone — settling, claiming, attributing, marking sent — with no HTTP and no payload encoding. A
reference for bench/conversions.py, not a mode of the product.

Usage: python bench/database_only_sender.py (settings from the CTWA_* environment, as ``ctwa conversions send``).
Logs "first request" when the first request would leave.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from ingest.apps import Apps
from ingest.settings import Settings
from workers.cli import main
from workers.conversions import sender
from workers.conversions.meta import Event, Outcome, Verdict
from workers.conversions.routes import DEFAULT, Route, Routes

log = logging.getLogger("bench.database_only_sender")


class CountingMeta:
    """Answers every request at once: all of its events counted."""

    def __init__(self) -> None:
        self._requests = 0

    async def __aenter__(self) -> CountingMeta:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send(self, events: Sequence[Event]) -> Verdict:
        if self._requests == 0:
            log.info("first request")
        self._requests += 1
        return Verdict(Outcome.COUNTED, "counted", len(events), "database-only")


def _counting_meta(settings: Settings, apps: Apps | None) -> Routes:
    return Routes(Route(DEFAULT, "default", CountingMeta()), {})  # type: ignore[arg-type]


if __name__ == "__main__":
    setattr(sender, "routes_of", _counting_meta)  # noqa: B010 (the sender module reads it at run)
    sys.exit(main(["conversions", "send", "--drain"]))
