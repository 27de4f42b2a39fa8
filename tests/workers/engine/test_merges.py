"""Contact merges: what arrives after a merge belongs to the preserved contact, and chains resolve in any order."""

from __future__ import annotations

import itertools

import callbacks as build
from callbacks import delivery, inbound, merge, referral
from sqlalchemy.ext.asyncio import AsyncEngine
from support import empty, rows, snapshot, store


async def test_what_arrives_after_a_merge_belongs_to_the_preserved_contact(db: AsyncEngine) -> None:
    await store(
        db,
        [
            inbound("M1", 0, identity="111", contact="A", conversation="V1", metadata=referral("9", "X")),
            merge("B", "A", 5, name="Ana", identities=["111"]),
            inbound("M2", 1, identity="111", contact="A", conversation="V1"),  # late, about the merged-away id
            delivery("OUT1", "READ", 2, identity="111", contact="A", conversation="V1"),
        ],
        batch_size=1,
    )
    for table in ("messages", "ad_clicks", "delivery_reports", "conversations", "channel_identities"):
        assert {row["contact_id"] for row in await rows(db, f"SELECT contact_id FROM {table}")} == {"B"}, table
    contacts = {row["contact_id"]: row for row in await rows(db, "SELECT * FROM contacts")}
    assert contacts["A"]["merged_into_contact_id"] == "B"
    assert contacts["B"]["first_seen_at"] == build.T0  # A's history moved to B
    assert contacts["B"]["display_name"] == "Ana"


async def test_merge_chains_resolve_whatever_order_they_arrive_in(db: AsyncEngine) -> None:
    stream = [
        inbound("M1", 0, identity="111", contact="A", conversation="V1"),
        inbound("M2", 1, identity="222", contact="B", conversation="V2"),
        inbound("M3", 2, identity="333", contact="C", conversation="V3"),
        merge("B", "A", 10, name="Bea", identities=["111", "222"]),
        merge("C", "B", 20, name="Cleo", identities=["111", "222", "333"]),
    ]
    states = []
    for order in itertools.permutations(stream):
        await empty(db)
        await store(db, list(order), batch_size=1)
        assert {row["contact_id"] for row in await rows(db, "SELECT contact_id FROM messages")} == {"C"}
        merged = await rows(db, "SELECT contact_id, merged_into_contact_id FROM contacts ORDER BY contact_id")
        assert merged == [
            {"contact_id": "A", "merged_into_contact_id": "C"},
            {"contact_id": "B", "merged_into_contact_id": "C"},
            {"contact_id": "C", "merged_into_contact_id": None},
        ]
        states.append(await snapshot(db))
    assert all(state == states[0] for state in states)
