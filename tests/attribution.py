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

Conversions (``store_conversions``), as the sender left them — day 1 begins at minute 900:

- A, day 0: P1 buys for EUR 59.90 (K1, sent) and USD 10.00 (K2, sent); P2 for EUR 20.00 (K3, unconfirmed); P4 leaves
  a lead at 23:59:59 (K4, pending, no value): 4 conversions by 3 people, EUR 79.90 and USD 10.00.
- A, day 1: P4 buys for EUR 5.00 at 00:00 (K5, sending).
- A, day 2: P1 buys for EUR 15.50 (K6, sent): on M1, P1's latest click with a ctwa_clid (M1c, of the post B,
  has none, so the sender never picks it).
- C, day 0: P6 buys for EUR 30 (K7, sent before P6 was deleted: it stays counted).
- C, day 1: P4 leaves a lead (K8, no value) and buys for an unknown amount of EUR (K9): 2 conversions, 1 person,
  no value.
- Not counted: K10 failed, K11 expired, K12 erased, K13 unattributed (each on a click all the same); K14 sent but
  attributed to no click, as the events carried over from the old ``conversions`` table are; K15 pending, not yet
  attributed.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from callbacks import T0, contact_event, delivery, inbound, merge, referral
from conversion_records import ATTRIBUTED
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine
from support import store

from workers.engine.schema import conversion_events

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


def _conversion(
    event_id: str,
    at: datetime,
    contact: str,
    status: str,
    click: str | None,
    value: str | None = None,
    currency: str | None = None,
    name: str = "Purchase",
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "event_name": name,
        "event_time": at,
        "contact_id": contact,
        "value": None if value is None else Decimal(value),
        "currency": currency,
        "status": status,
        "click_message_id": click,
    }


MIDNIGHT = minute(900)  # day 1 begins

CONVERSIONS = [
    _conversion("K1", minute(120), "C1", "sent", "M1", "59.90", "EUR"),
    _conversion("K2", minute(200), "C1", "sent", "M1", "10.00", "USD"),
    _conversion("K3", minute(240), "C2", "unconfirmed", "M2", "20.00", "EUR"),
    _conversion("K4", MIDNIGHT - timedelta(seconds=1), "C4", "pending", "M5", name="LeadSubmitted"),
    _conversion("K5", MIDNIGHT, "C4", "sending", "M5", "5.00", "EUR"),
    _conversion("K6", minute(2900), "C1", "sent", "M1", "15.50", "EUR"),
    _conversion("K7", minute(420), "C6", "sent", "M6", "30", "EUR"),
    _conversion("K8", minute(1500), "C4", "sent", "M4", name="LeadSubmitted"),
    _conversion("K9", minute(1510), "C4", "sent", "M4", currency="EUR"),
    _conversion("K10", minute(130), "C7", "failed", "M7", "100.00", "EUR"),
    _conversion("K11", minute(250), "C2", "expired", "M2", "100.00", "EUR"),
    _conversion("K12", minute(430), "C6", "erased", "M6", "100.00", "EUR"),
    _conversion("K13", minute(140), "C1", "unattributed", "M1", "100.00", "EUR"),
    _conversion("K14", minute(150), "C7", "sent", None, "100.00", "EUR"),
    _conversion("K15", minute(160), "C8", "pending", None, "100.00", "EUR"),
]


async def store_conversions(db: AsyncEngine) -> AsyncEngine:
    """Write the conversions as the sender would have left them: attributed (``click_message_id``), with a status."""
    async with db.begin() as connection:
        await connection.execute(insert(conversion_events), CONVERSIONS)
        await connection.execute(ATTRIBUTED)
    return db
