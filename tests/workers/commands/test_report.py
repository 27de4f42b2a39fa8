"""``ctwa report``: which ads brought which people, as a table, CSV or JSON, on the hand-built stream of
attribution.py."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import sys
from datetime import UTC

import pytest
from attribution import A, B, C, minute, store_conversions, store_stream
from sqlalchemy.ext.asyncio import AsyncEngine


@pytest.fixture
async def stream(db: AsyncEngine) -> AsyncEngine:
    return await store_stream(db)


@pytest.fixture
async def converted(stream: AsyncEngine) -> AsyncEngine:
    return await store_conversions(stream)


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


async def test_ctwa_report_conversions(converted: AsyncEngine, database_url: str) -> None:
    days = ("--since", "2025-11-03", "--until", "2025-11-05")
    by_ad = {r["source_id"]: r for r in json.loads(await _report(database_url, *days, "--format", "json"))}
    conversions = {
        ad: (r["conversions"], r["value"], r["people_converted"], r["people"], r["conversion_rate"])
        for ad, r in by_ad.items()
    }
    assert conversions == {
        # K1-K6 by P1, P2 and P4 — P1 and P4 on two days, counted once — of the 4 people who clicked A.
        A: (6, {"EUR": 100.4, "USD": 10.0}, 3, 4, 0.75),
        B: (0, {}, 0, 2, 0.0),  # a post: no click id, so no conversion
        C: (3, {"EUR": 30.0}, 2, 2, 1.0),  # K7 by P6; K8, K9 by P4, without value
    }

    table = await _report(database_url, *days, "--format", "table")
    header, _, *lines = table.splitlines()
    assert header.split()[-4:] == ["conversions", "value", "people_converted", "conversion_rate"]
    [a_line] = [line for line in lines if line.startswith(A)]
    assert re.split(r"\s{2,}", a_line)[-4:] == ["6", "EUR 100.40, USD 10.00", "3", "0.750"]  # cells: 2+ spaces apart

    daily = csv.DictReader(io.StringIO(await _report(database_url, *days, "--daily", "--format", "csv")))
    cells = ("day", "source_id", "clicks", "conversions", "value", "people_converted", "conversion_rate")
    assert [tuple(r[cell] for cell in cells) for r in daily] == [
        ("2025-11-03", A, "4", "4", "EUR 79.90, USD 10.00", "3", "0.750"),
        ("2025-11-03", B, "1", "0", "", "0", "0.000"),
        ("2025-11-03", C, "1", "1", "EUR 30.00", "1", "1.000"),
        ("2025-11-04", C, "1", "2", "", "1", "1.000"),
        # P4's clicks of A were on day 0; K5 counts on its own day, when nobody clicked A.
        ("2025-11-04", A, "0", "1", "EUR 5.00", "1", ""),
        ("2025-11-05", B, "1", "0", "", "0", "0.000"),
        ("2025-11-05", A, "0", "1", "EUR 15.50", "1", ""),
    ]


async def test_ctwa_report_counts_a_day_as_its_daily_rows(converted: AsyncEngine, database_url: str) -> None:
    """Over a single day, the per-ad report counts what the daily report does: the two agree on which
    conversions count, though the first counts people converted over the range and the second per day."""
    daily = json.loads(
        await _report(database_url, "--since", "2025-11-03", "--until", "2025-11-05", "--daily", "--format", "json")
    )
    for day in ("2025-11-03", "2025-11-04", "2025-11-05"):
        ads = json.loads(await _report(database_url, "--since", day, "--until", day, "--format", "json"))
        that_day = [{key: value for key, value in r.items() if key != "day"} for r in daily if r["day"] == day]
        assert sorted(ads, key=lambda r: r["source_id"]) == sorted(that_day, key=lambda r: r["source_id"])
