"""The packages keep their roles: ``ingest`` (the receiver, and what both sides share) imports nothing from
``workers``, not even inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_ingest_imports_nothing_from_workers() -> None:
    modules = sorted((ROOT / "ingest").rglob("*.py"))
    assert len(modules) > 10
    offenders = {
        str(path.relative_to(ROOT)): sorted(name for name in _imported(path) if name.split(".")[0] == "workers")
        for path in modules
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_test_modules_have_unique_names() -> None:
    """pytest imports test modules by their file's name (tests/ is on the path): two of one name can't both run."""
    names = sorted(path.name for path in (ROOT / "tests").rglob("test_*.py"))
    assert len(names) > 50
    assert sorted({name for name in names if names.count(name) > 1}) == []
