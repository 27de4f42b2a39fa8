"""The kinds of table in ``schema``, and that each table naming a person is handled by what must handle it —
merges, erasure, the rollups, replay — so that a table added to ``schema.py`` alone either is, or fails here."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import Table

from workers.commands.replay import PROJECTIONS
from workers.engine import erasure, merges, rollups
from workers.engine.schema import ARCHIVE, KEPT, PROJECTION, ROLLUP, metadata, personal_columns, tables

# Columns that say who a row is about.
PERSON = ("contact_id", "contact_ids", "identity", "person_key")

# Kept tables that name a person, and what handles them (kept tables are nobody's by default).
KEPT_PEOPLE = {
    # Resolved through merges when a sender claims one; erased by the one rule of erasure._ERASE_CONVERSIONS.
    "conversion_events": erasure._ERASE_CONVERSIONS.text,
    # Holds opaque identities only: what erased ones became.
    "erased_identities": None,
}

ALL = list(metadata.tables.values())


def _sql(statements: list[object]) -> str:
    return "\n".join(getattr(statement, "text", str(statement)) for statement in statements)


def _names_person(table: Table) -> bool:
    return any(name in table.c for name in PERSON)


@pytest.mark.parametrize("table", ALL, ids=lambda table: table.name)
def test_every_table_says_what_kind_it_is(table: Table) -> None:
    assert table.info.get("kind") in (ARCHIVE, PROJECTION, ROLLUP, KEPT)


def test_replay_rebuilds_every_table_built_from_the_archive_and_nothing_else() -> None:
    built = {table.name for table in ALL if table.info["kind"] in (PROJECTION, ROLLUP)}
    assert set(PROJECTIONS) == built
    assert {table.name for table in tables(ARCHIVE)} == {"callbacks"}


@pytest.mark.parametrize("table", tables(PROJECTION, naming=("contact_id",)), ids=lambda table: table.name)
def test_merges_move_the_rows_of_every_projection_naming_a_contact(table: Table) -> None:
    assert re.search(rf"UPDATE {table.name} SET contact_id = merged.root", _sql(merges._REKEY))


@pytest.mark.parametrize("table", tables(PROJECTION, naming=("channel", "identity")), ids=lambda table: table.name)
def test_erasure_replaces_the_identities_of_every_projection_holding_one(table: Table) -> None:
    erased = _sql(erasure._ERASE_ROWS)
    assert re.search(rf"UPDATE {table.name} SET identity = erased.opaque", erased) or re.search(
        rf"DELETE FROM {table.name} AS row\s+USING unnest", erased
    ), f"{table.name}: its identity is part of its key; erasure needs a statement of its own for it"
    if "contact_id" in table.c:
        assert f"FROM {table.name} WHERE contact_id = ANY(:roots)" in erasure._IDENTITIES_OF.text


@pytest.mark.parametrize("table", [table for table in ALL if personal_columns(table)], ids=lambda table: table.name)
def test_erasure_empties_every_personal_column(table: Table) -> None:
    assert table.info["kind"] == PROJECTION, "personal content outside the projections: say how erasure finds it"
    emptied = ", ".join(f"{column} = NULL" for column in personal_columns(table))
    assert f"UPDATE {table.name} SET {emptied} WHERE contact_id = ANY(:members)" in _sql(erasure._ERASE_ROWS)


@pytest.mark.parametrize("table", tables(ROLLUP), ids=lambda table: table.name)
def test_the_rollups_are_rebuilt_and_refreshed_per_person(table: Table) -> None:
    assert re.search(rf"TRUNCATE .*\b{table.name}\b", _sql(rollups._REBUILD))
    if "person_key" in table.c:
        assert f"DELETE FROM {table.name} WHERE person_key = ANY(:keys)" in _sql(rollups._REFRESH)
        if table.name != "chain_backlog":  # what waited for the persons refreshed: they are settled whole then
            assert re.search(rf"INSERT INTO {table.name}\b", _sql(rollups._REFRESH))
    if "day" in table.c and "source_id" in table.c:
        assert f"DELETE FROM {table.name} USING" in _sql(rollups._RECOMPUTE_DAYS)
    elif "day" in table.c:  # all ads together: every row of the days
        assert f"DELETE FROM {table.name} WHERE day = ANY(" in _sql(rollups._RECOMPUTE_ALL_ADS)
        assert re.search(rf"INSERT INTO {table.name}\b", _sql(rollups._RECOMPUTE_ALL_ADS))


@pytest.mark.parametrize("table", [t for t in tables(KEPT) if _names_person(t)], ids=lambda table: table.name)
def test_every_kept_table_naming_a_person_is_known(table: Table) -> None:
    assert table.name in KEPT_PEOPLE, f"{table.name} names a person: say how merges and erasure reach it"
    if (handled_by := KEPT_PEOPLE[table.name]) is not None:
        assert f"UPDATE {table.name}" in handled_by


def test_the_derived_lists_are_those_of_the_schema_today() -> None:
    """The lists as they stood when they were written by hand: a change here is a change of behaviour."""
    assert [t.name for t in tables(PROJECTION, naming=("contact_id",))] == [
        "channel_identities",
        "conversations",
        "messages",
        "ad_clicks",
        "delivery_reports",
    ]
    assert [t.name for t in tables(PROJECTION, naming=("contact_id", "channel", "identity"))] == [
        "channel_identities",
        "messages",
        "ad_clicks",
        "delivery_reports",
    ]
    assert [t.name for t in tables(ROLLUP)] == [
        "person_touches",
        "ad_daily",
        "ad_daily_people",
        "daily_people",
        "ad_daily_conversations",
        "daily_conversations",
        "chain_backlog",
    ]
