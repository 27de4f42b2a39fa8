"""The attribution rollups the workers keep as they store clicks — each person's touches, clicks, people and
conversations per ad per day — equal what `rollups.rebuild` computes from ad_clicks alone, after clicks, merges,
a merge chain and an erasure, stored in scrambled small batches; `recompute_days` restores a day's rows."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from callbacks import contact_event, inbound, merge, referral
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import rows, snapshot, store

from workers.engine import rollups

DAY0, DAY1 = date(2025, 11, 3), date(2025, 11, 4)  # minute 0 is 09:00 UTC on DAY0: DAY1 is minutes 900 to 2339

STREAM = [
    # A clicks AD1, then AD2 the next day; B clicks AD1 (delivered twice) and is merged into A.
    inbound("A1", 0, identity="111", contact="A", conversation="VA", metadata=referral("AD1", "CL-A1")),
    inbound("A2", 1500, identity="111", contact="A", conversation="VA", metadata=referral("AD2", "CL-A2")),
    inbound("B1", 60, identity="222", contact="B", conversation="VB", metadata=referral("AD1", "CL-B1")),
    inbound("B1", 60, identity="222", contact="B", conversation="VB", metadata=referral("AD1", "CL-B1")),
    merge("A", "B", 200, name="Ana", identities=["111", "222"]),
    # C clicks AD2 and is deleted: erased, and the click still counts.
    contact_event("create", "C", 90, name="Cleo", identities=["333"]),
    inbound("C1", 100, identity="333", contact="C", conversation="VC", metadata=referral("AD2", "CL-C1")),
    contact_event("delete", "C", 3000, name="Cleo", identities=["333"]),
    # D, in DISPATCH mode, is known by the identity alone; one of its clicks names only a click id.
    inbound("D1", 30, identity="444", metadata=referral("AD1", None)),
    inbound("D2", 40, identity="444", metadata=referral(None, "CL-D2")),
    # E clicks AD3 (a Status ad: no click id) and is merged into F, which F1 merged into G: a chain.
    inbound("E1", 950, identity="555", contact="E", conversation="VE", metadata=referral("AD3", None)),
    merge("F", "E", 2500, name="Fay", identities=["555"]),
    inbound("G1", 2000, identity="666", contact="G", conversation="VG", metadata=referral("AD1", "CL-G1")),
    merge("G", "F", 2700, name="Gil", identities=["555", "666"]),
    inbound("H1", 10, identity="777", contact="H", conversation="VH", text="never clicked"),
]

ROLLUPS = (
    "person_touches",
    "ad_daily",
    "ad_daily_people",
    "daily_people",
    "ad_daily_conversations",
    "daily_conversations",
)


@pytest.fixture
async def stored(db: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    await store(db, STREAM[1::2] + STREAM[::-2], batch_size=2)  # scrambled, in small batches
    return await snapshot(db)


def _rollups(state: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    return {table: state[table] for table in ROLLUPS}


async def test_the_stream_reaches_every_rollup(db: AsyncEngine, stored: dict[str, list[dict[str, Any]]]) -> None:
    touches = {row["person_key"]: row for row in stored["person_touches"]}
    assert set(touches) == {"contact:A", "contact:C", "identity:WHATSAPP:444", "contact:G"}  # B, E, F merged away
    assert (touches["contact:A"]["clicks"], touches["contact:A"]["first_message_id"]) == (3, "A1")
    assert touches["contact:A"]["last_message_id"] == "A2"
    assert touches["contact:C"]["identity"] == "erased:C"
    assert (touches["contact:G"]["clicks"], touches["contact:G"]["first_source_id"]) == (2, "AD3")
    daily = {(row["day"], row["source_id"]): (row["clicks"], row["click_ids"]) for row in stored["ad_daily"]}
    assert daily == {
        (DAY0, "AD1"): (3, 2),  # A1, B1 (once), D1
        (DAY0, "AD2"): (1, 1),  # C1
        (DAY0, None): (1, 1),  # D2: a click id alone
        (DAY1, "AD2"): (1, 1),  # A2
        (DAY1, "AD3"): (1, 0),  # E1
        (DAY1, "AD1"): (1, 1),  # G1
    }
    people = await rows(db, "SELECT person_key FROM ad_daily_people WHERE day = :day AND source_id = 'AD1'", day=DAY0)
    assert sorted(row["person_key"] for row in people) == ["contact:A", "identity:WHATSAPP:444"]


async def test_the_rollups_kept_live_equal_a_rebuild_from_ad_clicks(
    db: AsyncEngine, stored: dict[str, list[dict[str, Any]]]
) -> None:
    async with db.begin() as connection:
        await rollups.rebuild(connection)
    rebuilt = await snapshot(db)
    assert _rollups(rebuilt) == _rollups(stored)
    assert rebuilt == stored  # and nothing else changed


async def test_recompute_days_restores_the_rows_of_a_day(
    db: AsyncEngine, stored: dict[str, list[dict[str, Any]]]
) -> None:
    lost = [(DAY0, "AD1"), (DAY0, None)]
    async with db.begin() as connection:
        for table in ("ad_daily", "ad_daily_people", "ad_daily_conversations"):
            await connection.execute(
                text(f"DELETE FROM {table} WHERE day = :day AND (source_id = 'AD1' OR source_id IS NULL)"),
                {"day": DAY0},
            )
    assert _rollups(await snapshot(db)) != _rollups(stored)

    async with db.begin() as connection:
        await rollups.recompute_days(connection, [*lost, (DAY0, "AD1")])  # a pair twice counts once
    assert await snapshot(db) == stored

    # Days that were right stay right, and no day is no work.
    every = [(row["day"], row["source_id"]) for row in stored["ad_daily"]]
    async with db.begin() as connection:
        await rollups.recompute_days(connection, every)
        await rollups.recompute_days(connection, [])
    assert await snapshot(db) == stored
