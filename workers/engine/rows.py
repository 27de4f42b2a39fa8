"""Rows as the engine sends them to Postgres: a batch is one JSON document, unpacked by ``json_to_recordset``.

A row type is a `TypedDict`: its keys are the columns, its annotations their types. The recordset's column
definitions and an INSERT's column list are derived from it, so a row's columns are declared once — where its
type is — and the rows themselves are plain dicts, which orjson writes many times faster than the driver encodes
an array per column.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Union, get_args, get_origin, get_type_hints

import orjson

__all__ = ["columns", "definitions", "encode", "recordset"]

_SQL_TYPES: Mapping[object, str] = {str: "text", datetime: "timestamptz", bool: "boolean", dict: "jsonb"}


def columns(row: type) -> tuple[str, ...]:
    """The columns of ``row`` (a TypedDict), in declaration order."""
    return tuple(row.__annotations__)


def definitions(row: type) -> str:
    """The column definitions of ``row`` (a TypedDict) in SQL: ``column type, …``."""
    hints = get_type_hints(row)
    return ", ".join(f"{name} {_sql_type(name, hints[name])}" for name in columns(row))


def recordset(row: type, parameter: str) -> str:
    """SQL reading the parameter ``:parameter`` (see `encode`) as rows of ``row``, named like the parameter:
    ``json_to_recordset(CAST(:parameter AS json)) AS parameter(column type, …)``."""
    return f"json_to_recordset(CAST(:{parameter} AS json)) AS {parameter}({definitions(row)})"


def encode(rows: Sequence[Mapping[str, Any]]) -> str:
    """A batch of rows as one JSON parameter, for `recordset`."""
    return orjson.dumps(rows).decode()


def _sql_type(name: str, hint: object) -> str:
    options: Sequence[object] = (
        [arg for arg in get_args(hint) if arg is not type(None)]
        if get_origin(hint) in (Union, types.UnionType)
        else [hint]
    )
    if len(options) == 1:
        (option,) = options
        if get_origin(option) is list and get_args(option) == (str,):
            return "text[]"
        sql = _SQL_TYPES.get(get_origin(option) or option)
        if sql is not None:
            return sql
    raise TypeError(f"column {name}: no SQL type for {hint!r}")
