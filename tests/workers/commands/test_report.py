"""``ctwa report``: which ads brought which people, as a table, CSV or JSON, on the hand-built stream of
attribution.py."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from datetime import UTC

import pytest
from attribution import A, B, C, minute, store_stream
from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.fixture
async def stream(db: AsyncEngine) -> AsyncEngine:
    return await store_stream(db)


async def _report(database_url: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        "report",
        *args,
        env={**os.environ, "CTWA_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_ctwa_report_prints_ad_performance(stream: AsyncEngine, database_url: str) -> None:
    data = json.loads(await _report(database_url, "--since", "2025-11-03", "--until", "2025-11-05", "--format", "json"))
    by_ad = {r["source_id"]: r for r in data}
    # Over the three days: A as on day 0; B twice, by two people (P3, P1), one new; C twice, by P6 and P4.
    assert (by_ad[A]["clicks"], by_ad[A]["people"], by_ad[A]["new_people"], by_ad[A]["conversations"]) == (4, 4, 4, 4)
    assert (by_ad[B]["clicks"], by_ad[B]["people"], by_ad[B]["new_people"], by_ad[B]["conversations"]) == (2, 2, 1, 1)
    assert (by_ad[C]["clicks"], by_ad[C]["people"], by_ad[C]["new_people"], by_ad[C]["conversations"]) == (2, 2, 1, 2)
    assert by_ad[A]["headline"] == f"Headline {A}"

    day_one = list(
        csv.DictReader(
            io.StringIO(
                await _report(database_url, "--since", "2025-11-04", "--until", "2025-11-04", "--format", "csv")
            )
        )
    )
    assert [(r["source_id"], r["clicks"], r["people"], r["new_people"]) for r in day_one] == [(C, "1", "1", "0")]

    daily = json.loads(
        await _report(database_url, "--since", "2025-11-03", "--until", "2025-11-05", "--daily", "--format", "json")
    )
    assert [(r["day"], r["source_id"], r["clicks"]) for r in daily][:1] == [("2025-11-03", A, 4)]

    table = await _report(database_url, "--since", "2025-11-03", "--until", "2025-11-05", "--format", "table")
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["source_id", "headline", "source_type"]
    assert any(line.startswith(A) and " 4 " in line for line in lines)


async def test_ctwa_report_people(stream: AsyncEngine, database_url: str) -> None:
    data = json.loads(
        await _report(database_url, "people", "--since", "2025-11-03", "--until", "2025-11-05", "--format", "json")
    )
    assert [(r["contact_id"], r["identity"], r["clicks"]) for r in data] == [
        ("C1", "111", 2),  # latest click first: P1 clicked B on day 2
        ("C4", "444", 2),
        (None, "333", 1),
        ("C2", "222", 1),
        ("C7", "777", 1),
    ]
    assert data[0]["first_clicked_at"] == minute(0).astimezone(UTC).isoformat()
