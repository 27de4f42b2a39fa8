"""Erasure after CONTACT_DELETE: no personal data survives anywhere, the clicks still count, whatever the order."""

from __future__ import annotations

import json

import callbacks as build
from callbacks import delivery, inbound, merge, referral
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import empty, rows, snapshot, store

PHONE = "34699111222"
NAME = "Rosa Secreta"
TEXT = "my address is Calle Falsa 123"


def _erasure_stream() -> list[bytes]:
    return [
        build.contact_event("create", "R", 0, name=NAME, identities=[PHONE]),
        inbound("M1", 1, identity=PHONE, contact="R", conversation="V1", text=TEXT, metadata=referral("42", "CLID-R")),
        delivery("OUT1", "READ", 2, identity=PHONE, contact="R", conversation="V1"),
        inbound("M2", 3, identity=PHONE, text=TEXT + " (dispatch)"),  # the same number, DISPATCH mode
        merge("R", "Q", 4, name=NAME, identities=[PHONE]),
        inbound("M0", -5, identity="34699000000", contact="Q", conversation="V0", text=TEXT),  # Q's, merged into R
        build.contact_event("delete", "R", 30, name=NAME, identities=[PHONE]),
    ]


async def _assert_erased(db: AsyncEngine) -> None:
    async with db.connect() as connection:
        for table in ("callbacks", "contacts", "channel_identities", "conversations", "messages", "ad_clicks"):
            dump = json.dumps(
                [dict(r._mapping) for r in await connection.execute(text(f"SELECT * FROM {table}"))], default=str
            )
            for secret in (PHONE, "34699000000", NAME, "Calle Falsa", "rosa.secreta@example.com"):
                assert secret not in dump, f"{secret!r} survives in {table}"
    # The clicks still count, under an opaque person key.
    [click] = await rows(db, "SELECT source_id, ctwa_clid, contact_id, identity FROM ad_clicks")
    assert click == {"source_id": "42", "ctwa_clid": "CLID-R", "contact_id": "R", "identity": "erased:R"}
    [rosa] = await rows(db, "SELECT display_name, deleted_at FROM contacts WHERE contact_id = 'R'")
    assert rosa["display_name"] is None
    assert rosa["deleted_at"] is not None


async def test_contact_delete_erases_personal_data_everywhere_and_keeps_the_clicks(db: AsyncEngine) -> None:
    await store(db, _erasure_stream(), batch_size=1)
    await _assert_erased(db)
    texts = await rows(db, "SELECT message_id, text, identity FROM messages ORDER BY message_id")
    assert texts == [
        {"message_id": "M0", "text": None, "identity": "erased:R"},
        {"message_id": "M1", "text": None, "identity": "erased:R"},
        {"message_id": "M2", "text": None, "identity": "erased:R"},
    ]


async def test_erasure_holds_for_callbacks_that_arrive_after_the_delete(db: AsyncEngine) -> None:
    stream = _erasure_stream()
    await store(db, [stream[-1]], batch_size=1)  # the delete first
    await store(db, stream[:-1], batch_size=1)
    await _assert_erased(db)
    in_order = await snapshot(db)

    await empty(db)
    await store(db, stream, batch_size=1)
    assert await snapshot(db) == in_order
