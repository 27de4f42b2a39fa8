"""A hand-built stream whose attribution answers are worked out by hand, for the analytics views and ``ctwa report``.

People (minutes after 2025-11-03 09:00 UTC; the attribution window is 7 days = 10,080 minutes):

- P1, contact C1: clicks ad A at 0 (M1), writes again at 30; clicks post B on day 2 at 2,880 (M1c).
  The business's reply OUT1 is DELIVERED at 10 and READ at 20.
- P2, contact C2: clicks A at 60 (M2) — delivered twice by Sinch. Reply OUT2 FAILED at 70.
- P3, DISPATCH, identity 333 only: clicks B at 100 (M3), writes again at 200. Reply OUT3 DELIVERED at 150.
- P4, contact C4, and C5 merged into C4 at 500: C5 clicks A at 300 (M5); C4 clicks ad C on day 1 at 1,440 (M4).
- P6, contact C6: clicks C at 400 (M6); deleted at 3,000.
- P7, contact C7: clicks A at 0 (M7), writes again on day 9 (12,960): outside the window.
- P8, contact C8: writes at 50, never clicked.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from callbacks import T0, contact_event, delivery, inbound, merge, referral
from sqlalchemy.ext.asyncio import AsyncEngine
from support import store

A, B, C = "120000A", "120000B", "120000C"
DAY0, DAY1, DAY2 = date(2025, 11, 3), date(2025, 11, 4), date(2025, 11, 5)


def minute(value: float) -> datetime:
    return T0 + timedelta(minutes=value)


def _click(source: str, clid: str | None, source_type: str = "ad") -> str:
    return referral(source, clid, source_type=source_type, headline=f"Headline {source}", media_type="image")


STREAM = [
    inbound("M1", 0, identity="111", contact="C1", conversation="V1", metadata=_click(A, "CL1")),
    inbound("M1b", 30, identity="111", contact="C1", conversation="V1"),
    delivery("OUT1", "DELIVERED", 10, identity="111", contact="C1", conversation="V1"),
    delivery("OUT1", "READ", 20, identity="111", contact="C1", conversation="V1"),
    inbound("M1c", 2880, identity="111", contact="C1", conversation="V1", metadata=_click(B, None, "post")),
    inbound("M2", 60, identity="222", contact="C2", conversation="V2", metadata=_click(A, "CL2")),
    inbound("M2", 60, identity="222", contact="C2", conversation="V2", metadata=_click(A, "CL2")),
    delivery("OUT2", "FAILED", 70, identity="222", contact="C2", conversation="V2"),
    inbound("M3", 100, identity="333", metadata=_click(B, None, "post")),
    inbound("M3b", 200, identity="333"),
    delivery("OUT3", "DELIVERED", 150, identity="333"),
    inbound("M5", 300, identity="555", contact="C5", conversation="V5", metadata=_click(A, "CL5")),
    inbound("M4", 1440, identity="444", contact="C4", conversation="V4", metadata=_click(C, "CL4")),
    merge("C4", "C5", 500, name="Four", identities=["444", "555"]),
    inbound("M6", 400, identity="666", contact="C6", conversation="V6", metadata=_click(C, "CL6")),
    contact_event("delete", "C6", 3000, name="Six", identities=["666"]),
    inbound("M7", 0, identity="777", contact="C7", conversation="V7", metadata=_click(A, "CL7")),
    inbound("M7b", 12960, identity="777", contact="C7", conversation="V7"),
    inbound("M8", 50, identity="888", contact="C8", conversation="V8"),
]


async def store_stream(db: AsyncEngine) -> AsyncEngine:
    """Store the stream — scrambled, in small batches: the answers must not depend on it."""
    scrambled = STREAM[::3] + STREAM[1::3] + STREAM[2::3]
    await store(db, scrambled, batch_size=3)
    return db
