"""Row types as the engine sends them to Postgres: each is declared once, as a TypedDict, and must agree with the
table it is inserted into; a batch of them goes to Postgres as one JSON document and comes back as the rows."""

from __future__ import annotations

import types
from datetime import UTC, datetime
from typing import Any, TypedDict, Union, get_args, get_origin, get_type_hints

import pytest
from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from workers.engine import rows, schema
from workers.engine.facts import Archived, Click, Delivery, Merge, Message

# Every row type the engine inserts as a row of a table, with that table.
INSERTED: list[tuple[type, Table]] = [
    (Archived, schema.callbacks),
    (Message, schema.messages),
    (Click, schema.ad_clicks),
    (Delivery, schema.delivery_reports),
    (Merge, schema.contact_merges),
]
# What a row leaves for the insert to add: the archive's payload goes beside the rows, as the text received.
ADDED_APART = {"callbacks": {"payload"}}

# The same types as SQLAlchemy compiles them for Postgres and as `rows` spells them.
_SPELLED = {"timestamp with time zone": "timestamptz"}


def _postgres_type(table: Table, column: str) -> str:
    compiled = table.c[column].type.compile(dialect=postgresql.dialect()).lower()
    return _SPELLED.get(compiled, compiled)


def _definitions(row: type) -> dict[str, str]:
    """`rows.definitions` read back: column name → SQL type."""
    pairs = [definition.split(" ", 1) for definition in rows.definitions(row).split(", ")]
    return {name: sql_type for name, sql_type in pairs}


@pytest.mark.parametrize(("row", "table"), INSERTED, ids=[table.name for _, table in INSERTED])
def test_a_row_has_columns_of_its_table_with_their_types(row: type, table: Table) -> None:
    declared = _definitions(row)
    assert list(declared) == list(rows.columns(row))
    assert set(declared) <= set(table.c.keys()), f"not columns of {table.name}: {set(declared) - set(table.c.keys())}"
    for column, sql_type in declared.items():
        assert sql_type == _postgres_type(table, column), f"{table.name}.{column}"


@pytest.mark.parametrize(("row", "table"), INSERTED, ids=[table.name for _, table in INSERTED])
def test_a_row_fills_every_column_the_table_does_not_fill_itself(row: type, table: Table) -> None:
    required = {
        column.name
        for column in table.columns
        if not column.nullable and column.server_default is None and column.identity is None and column.computed is None
    }
    assert required - set(rows.columns(row)) == ADDED_APART.get(table.name, set())


def test_a_column_type_rows_cannot_send_is_refused() -> None:
    with pytest.raises(TypeError, match="column amount"):
        rows.definitions(_Unsendable)


class _Unsendable(TypedDict):
    amount: float


def _sample(row: type, filled: bool) -> dict[str, Any]:
    """A row of ``row`` with a value of its type in each column (or ``None`` where a column may be empty)."""
    values: dict[str, Any] = {}
    for name, hint in get_type_hints(row).items():
        options = [arg for arg in get_args(hint) if arg is not type(None)] if _optional(hint) else [hint]
        if _optional(hint) and not filled:
            values[name] = None
            continue
        (option,) = options
        kind = get_origin(option) or option
        values[name] = {
            str: f"{name}: 'quoted' \"twice\", ñ, 😀, \\ and a\nnewline",
            datetime: datetime(2025, 11, 3, 9, 14, 7, 123456, tzinfo=UTC),
            bool: True,
            dict: {"nested": {"list": [1, "two", None]}, "text": "a'b\"c"},
            list: ["first", "second, with a comma", "{braces}"],
        }[kind]
    return values


def _optional(hint: object) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


@pytest.mark.parametrize(("row", "table"), INSERTED, ids=[table.name for _, table in INSERTED])
async def test_a_recordset_gives_the_rows_back(db: AsyncEngine, row: type, table: Table) -> None:
    sent = [_sample(row, filled=True), _sample(row, filled=False)]
    async with db.connect() as connection:
        result = await connection.execute(
            text(f"SELECT * FROM {rows.recordset(row, 'sample')}"), {"sample": rows.encode(sent)}
        )
        assert list(result.keys()) == list(rows.columns(row))
        assert [dict(received._mapping) for received in result] == sent
