"""Analytics per app: two apps' ads, people, conversations and conversions — a person writing through both, an ad
clicked through both — in ``ctwa report apps``, ``ctwa report --app``, the attribution views' app columns and the
per-app SQL functions; and for a deployment of one app, the per-app functions give the figures of everything."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import date
from typing import Any

import pytest
from attribution import DAY0, DAY1, DAY2, store_conversions, store_stream
from callbacks import APP, T0, inbound, referral
from conversion_records import record
from sqlalchemy.ext.asyncio import AsyncEngine
from support import rows, store

from ingest.apps import App, Apps
from workers.engine.apps import name_apps

ONE, TWO = APP, "01EB4BNMPW0AY1E1HAEE2Y2D4Z"
DAY = T0.date().isoformat()
RANGE = ("--since", DAY, "--until", DAY)


def _click(message_id: str, minute: float, person: int, ad: str, app: str, conversation: str) -> bytes:
    return inbound(
        message_id,
        minute,
        identity=f"{person}{person}{person}",
        contact=f"C{person}",
        conversation=conversation,
        metadata=referral(ad, f"CL-{message_id}"),
        app=app,
    )


# One day: app ONE's ads AD-1 and AD-2, app TWO's AD-3. P1 clicks AD-1 then AD-2 (ONE), then AD-3 (TWO) in a
# conversation of TWO's; P2 clicks AD-2 and writes again; P3 clicks AD-3; P4 writes to TWO with no click; P5 clicks
# AD-1 through TWO (an ad sending people to both apps' numbers).
STREAM = [
    _click("M1", 0, 1, "AD-1", ONE, "V1"),
    _click("M2", 10, 1, "AD-2", ONE, "V1"),
    _click("M3", 20, 2, "AD-2", ONE, "V2"),
    _click("M4", 30, 3, "AD-3", TWO, "V3"),
    _click("M5", 40, 1, "AD-3", TWO, "V1b"),
    inbound("M6", 45, identity="444", contact="C4", conversation="V4", app=TWO),
    inbound("M7", 50, identity="222", contact="C2", conversation="V2"),
    _click("M8", 55, 5, "AD-1", TWO, "V5"),
]


@pytest.fixture
async def two_apps(db: AsyncEngine) -> AsyncEngine:
    await store(db, STREAM[::2] + STREAM[1::2], batch_size=2)
    for event_id, contact, click, value in (("K1", "C1", "M2", "10.00"), ("K2", "C3", "M4", "5.00")):
        await record(
            db,
            event_id,
            T0.replace(hour=12),
            contact_id=contact,
            status="sent",
            click_message_id=click,
            value=value,
            currency="EUR",
        )
    async with db.begin() as connection:
        await name_apps(connection, Apps({ONE: App(ONE, "Brand One", ("s",))}))
    return db


async def _report(database_url: str, *args: str) -> list[dict[str, object]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        "report",
        *args,
        "--format",
        "json",
        env={**os.environ, "CTWA_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    found: list[dict[str, object]] = json.loads(out)
    return found


async def test_report_apps_counts_each_apps_ads_people_once(two_apps: AsyncEngine, database_url: str) -> None:
    by_app = {row["app_id"]: row for row in await _report(database_url, "apps", *RANGE)}
    figures = ("app_name", "ads", "clicks", "people", "new_people", "conversations", "conversions", "value")
    assert {app: tuple(row[name] for name in figures) for app, row in by_app.items()} == {
        # P1 clicked two of ONE's ads: one person. P1's first click ever was ONE's: new to ONE, not to TWO.
        ONE: ("Brand One", 2, 3, 2, 2, 2, 1, {"EUR": 10.0}),
        TWO: (None, 2, 3, 3, 2, 3, 1, {"EUR": 5.0}),
    }
    # The same as counting the app's clicks themselves.
    direct = await rows(
        two_apps,
        "SELECT app_id, count(*) AS clicks, count(DISTINCT person_key) AS people, "
        "count(DISTINCT conversation_id) AS conversations FROM ad_clicks GROUP BY app_id",
    )
    for row in direct:
        assert (by_app[row["app_id"]]["clicks"], by_app[row["app_id"]]["people"]) == (row["clicks"], row["people"])
        assert by_app[row["app_id"]]["conversations"] == row["conversations"]


async def test_report_app_is_the_report_of_the_apps_clicks(two_apps: AsyncEngine, database_url: str) -> None:
    everything = {row["source_id"]: row for row in await _report(database_url, *RANGE)}
    one = {row["source_id"]: row for row in await _report(database_url, *RANGE, "--app", ONE)}
    assert one["AD-2"] == everything["AD-2"]  # all of its clicks came through ONE
    assert (one["AD-1"]["clicks"], everything["AD-1"]["clicks"]) == (1, 2)  # P5's came through TWO
    assert list(one) == ["AD-2", "AD-1"]
    daily = await _report(database_url, *RANGE, "--daily", "--app", TWO)
    assert [(row["day"], row["source_id"], row["clicks"], row["people"]) for row in daily] == [
        (DAY, "AD-3", 2, 2),
        (DAY, "AD-1", 1, 1),
    ]
    people = await _report(database_url, "people", *RANGE, "--app", TWO)
    assert sorted(row["contact_id"] for row in people) == ["C1", "C3", "C5"]  # C1's last click came through TWO
    assert await _report(database_url, *RANGE, "--app", "01KXXXXXXXXXXXXXXXXXXXXXXX") == []


async def _function(db: AsyncEngine, call: str, since: date, until: date, app: str) -> list[dict[str, Any]]:
    return await rows(db, f"SELECT * FROM {call}", since=since, until=until, app=app)


async def test_the_per_app_functions_count_each_apps_clicks(two_apps: AsyncEngine) -> None:
    day = date.fromisoformat(DAY)
    daily = {app: await _function(two_apps, "app_daily(:since, :until, :app)", day, day, app) for app in (ONE, TWO)}
    counts = ("clicks", "people", "new_people", "conversations", "conversions")
    assert [tuple(row[name] for name in counts) for row in daily[ONE]] == [(3, 2, 2, 2, 1)]
    assert [tuple(row[name] for name in counts) for row in daily[TWO]] == [(3, 3, 2, 3, 1)]
    engaged = {
        app: await _function(two_apps, "app_engagement(:since, :until, :app)", day, day, app) for app in (ONE, TWO)
    }
    people = {
        app: [(row["source_id"], row["people"], row["people_wrote_again"]) for row in engaged[app]]
        for app in (ONE, TWO)
    }
    # P1 wrote M2 after clicking AD-1, P2 wrote M7 after clicking AD-2; nobody wrote after a click through TWO.
    assert people == {
        ONE: [(None, 2, 2), ("AD-1", 1, 1), ("AD-2", 2, 2)],
        TWO: [(None, 3, 0), ("AD-1", 1, 0), ("AD-3", 2, 0)],
    }


@pytest.mark.parametrize(("since", "until"), [(DAY0, DAY0), (DAY0, DAY2), (DAY1, DAY2)])
async def test_for_the_only_app_the_per_app_functions_give_the_figures_of_everything(
    db: AsyncEngine, since: date, until: date
) -> None:
    """attribution.py's stream — merges, an erasure, clicks without a contact or an ad, conversions of every status —
    is one app's: its figures counted from its clicks are the rollups' and the day chains'."""
    await store_conversions(await store_stream(db))
    assert await _function(db, "app_ad_report(:since, :until, :app)", since, until, APP) == await rows(
        db, "SELECT * FROM ad_report(:since, :until)", since=since, until=until
    )
    assert await _function(db, "app_range_report(:since, :until, :app)", since, until, APP) == await rows(
        db, "SELECT * FROM range_report(:since, :until)", since=since, until=until
    )
    per_day = await rows(
        db,
        "SELECT day, clicks, click_ids, people, new_people, conversations FROM performance_daily "
        "WHERE day BETWEEN :since AND :until ORDER BY day",
        since=since,
        until=until,
    )
    assert [
        {name: row[name] for name in ("day", "clicks", "click_ids", "people", "new_people", "conversations")}
        for row in await _function(db, "app_daily(:since, :until, :app)", since, until, APP)
        if row["clicks"] or row["new_people"]
    ] == per_day
    engaged = await _function(db, "app_engagement(:since, :until, :app)", since, until, APP)
    reported = await rows(db, "SELECT * FROM engagement_report(:since, :until)", since=since, until=until)
    counts = ("total", "source_id", "people", "people_wrote_again", "people_replied", "people_reply_read")
    assert [{name: row[name] for name in counts} for row in engaged] == [
        {name: row[name] for name in counts} for row in reported
    ]


async def test_the_attribution_views_name_each_rows_app(two_apps: AsyncEngine) -> None:
    ads = await rows(two_apps, "SELECT source_id, app_id, app_name, clicks FROM ad_apps ORDER BY source_id, app_name")
    assert [tuple(row.values()) for row in ads] == [
        ("AD-1", ONE, "Brand One", 1),
        ("AD-1", TWO, None, 1),
        ("AD-2", ONE, "Brand One", 2),
        ("AD-3", TWO, None, 2),
    ]
    messages = await rows(
        two_apps,
        "SELECT message_id, app_id, app_name, first_touch_app_id, last_touch_app_id, last_touch_source_id "
        "FROM message_attribution WHERE message_id IN ('M5', 'M7') ORDER BY message_id",
    )
    assert [tuple(row.values()) for row in messages] == [
        ("M5", TWO, None, ONE, TWO, "AD-3"),
        ("M7", ONE, "Brand One", ONE, ONE, "AD-2"),
    ]
    conversations = await rows(
        two_apps,
        "SELECT conversation_id, app_id, last_touch_app_id FROM conversation_attribution "
        "WHERE conversation_id IN ('V1', 'V1b') ORDER BY conversation_id",
    )
    assert [tuple(row.values()) for row in conversations] == [("V1", ONE, ONE), ("V1b", TWO, TWO)]
    person = await rows(
        two_apps, "SELECT first_app_id, last_app_id, last_app_name FROM person_attribution WHERE contact_id = 'C1'"
    )
    assert [tuple(row.values()) for row in person] == [(ONE, TWO, None)]
    clicks = await rows(two_apps, "SELECT message_id, app_id, app_name FROM click_conversions ORDER BY message_id")
    assert [row["app_id"] for row in clicks] == [ONE, ONE, ONE, TWO, TWO, TWO]
    assert clicks[0]["app_name"] == "Brand One"
