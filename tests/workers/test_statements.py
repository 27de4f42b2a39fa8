"""Every SQL statement a module of ``workers`` builds at import — those assembled from a table list, a status list
or a shared part among them — rendered whole in ``tests/workers/statements/<module>.sql``, where it can be read as
Postgres gets it, and a change to any of them is seen in review: this test fails until the snapshot is rewritten
with ``CTWA_TEST_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/workers/test_statements.py``. (The few
statements written inside a function are whole where they stand.)"""

from __future__ import annotations

import importlib
import os
import pkgutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import TextClause

import workers

SNAPSHOTS = Path(__file__).parent / "statements"


def _modules() -> Iterator[ModuleType]:
    for info in pkgutil.walk_packages(workers.__path__, "workers."):
        if not info.name.endswith("__main__"):
            yield importlib.import_module(info.name)


def _statements(value: object) -> Iterator[tuple[str, TextClause]]:
    """The statements ``value`` holds: itself, or those of a list, tuple or dict, with where each sits."""
    if isinstance(value, TextClause):
        yield "", value
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from ((f"[{index}]{place}", clause) for place, clause in _statements(item))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from ((f"[{key}]{place}", clause) for place, clause in _statements(item))


def _rendered() -> dict[str, str]:
    """Per module, its module-level statements as a SQL file."""
    files: dict[str, str] = {}
    seen: set[int] = set()
    for module in _modules():
        parts = []
        for name, value in vars(module).items():
            for place, clause in _statements(value):
                if id(clause) in seen:  # imported from another module
                    continue
                seen.add(id(clause))
                sql = textwrap.dedent(clause.text).strip()
                parts.append(f"-- {name}{place}\n{sql};\n")
        if parts:
            files[f"{module.__name__}.sql"] = "\n".join(parts)
    return files


def test_every_statement_is_in_its_snapshot() -> None:
    rendered = _rendered()
    assert len(rendered) >= 8, sorted(rendered)
    if os.environ.get("CTWA_TEST_UPDATE_SNAPSHOTS"):
        SNAPSHOTS.mkdir(exist_ok=True)
        for stale in set(path.name for path in SNAPSHOTS.glob("*.sql")) - set(rendered):
            (SNAPSHOTS / stale).unlink()
        for name, sql in rendered.items():
            (SNAPSHOTS / name).write_text(sql)
        pytest.skip("snapshots rewritten")
    stored = {path.name: path.read_text() for path in SNAPSHOTS.glob("*.sql")}
    assert sorted(stored) == sorted(rendered), "modules with statements changed: rewrite the snapshots"
    for name, sql in rendered.items():
        assert stored[name] == sql, f"{name}: the statements changed; rewrite the snapshots (see this module)"
