"""Analytics per app: two apps' ads, people, conversations and conversions — a person writing through both — in
``ctwa report apps``, ``ctwa report --app``, the attribution views' app columns and the per-app SQL functions."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import date

import pytest
from callbacks import APP, T0, inbound, referral
from conversion_records import record
from sqlalchemy import text
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
# conversation of TWO's; P2 clicks AD-2 and writes again; P3 clicks AD-3; P4 writes to TWO with no click.
STREAM = [
    _click("M1", 0, 1, "AD-1", ONE, "V1"),
    _click("M2", 10, 1, "AD-2", ONE, "V1"),
    _click("M3", 20, 2, "AD-2", ONE, "V2"),
    _click("M4", 30, 3, "AD-3", TWO, "V3"),
    _click("M5", 40, 1, "AD-3", TWO, "V1b"),
    inbound("M6", 45, identity="444", contact="C4", conversation="V4", app=TWO),
    inbound("M7", 50, identity="222", contact="C2", conversation="V2"),
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
        TWO: (None, 1, 2, 2, 1, 2, 1, {"EUR": 5.0}),
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


async def test_report_app_is_the_report_of_the_apps_ads(two_apps: AsyncEngine, database_url: str) -> None:
    everything = {row["source_id"]: row for row in await _report(database_url, *RANGE)}
    one = await _report(database_url, *RANGE, "--app", ONE)
    assert {row["source_id"]: row for row in one} == {ad: everything[ad] for ad in ("AD-1", "AD-2")}
    daily = await _report(database_url, *RANGE, "--daily", "--app", TWO)
    assert [(row["day"], row["source_id"], row["clicks"], row["people"]) for row in daily] == [(DAY, "AD-3", 2, 2)]
    people = await _report(database_url, "people", *RANGE, "--app", TWO)
    assert sorted(row["contact_id"] for row in people) == ["C1", "C3"]  # C1's last click came through TWO
    assert await _report(database_url, *RANGE, "--app", "01KXXXXXXXXXXXXXXXXXXXXXXX") == []


async def test_the_per_app_functions_agree_with_the_report(two_apps: AsyncEngine) -> None:
    day = date.fromisoformat(DAY)
    async with two_apps.connect() as connection:
        daily = {
            app: [
                dict(row._mapping)
                for row in await connection.execute(
                    text("SELECT * FROM app_daily(:day, :day, :app)"), {"day": day, "app": app}
                )
            ]
            for app in (ONE, TWO)
        }
        engaged = {
            app: dict(
                (
                    await connection.execute(
                        text("SELECT * FROM app_engagement(:day, :day, :app)"), {"day": day, "app": app}
                    )
                )
                .one()
                ._mapping
            )
            for app in (ONE, TWO)
        }
    assert [
        (row["clicks"], row["people"], row["new_people"], row["conversations"], row["conversions"])
        for row in daily[ONE]
    ] == [(3, 2, 2, 2, 1)]
    assert [
        (row["clicks"], row["people"], row["new_people"], row["conversations"], row["conversions"])
        for row in daily[TWO]
    ] == [(2, 2, 1, 2, 1)]
    # P1 wrote M2 after clicking AD-1, P2 wrote M7 after AD-2; nobody wrote after a click of TWO's ad.
    assert (engaged[ONE]["people"], engaged[ONE]["people_wrote_again"]) == (2, 2)
    assert (engaged[TWO]["people"], engaged[TWO]["people_wrote_again"]) == (2, 0)


async def test_the_attribution_views_name_each_rows_app(two_apps: AsyncEngine) -> None:
    ads = await rows(two_apps, "SELECT source_id, app_id, app_name, clicks FROM ad_apps ORDER BY source_id")
    assert [tuple(row.values()) for row in ads] == [
        ("AD-1", ONE, "Brand One", 1),
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
    assert [row["app_id"] for row in clicks] == [ONE, ONE, ONE, TWO, TWO]
    assert clicks[0]["app_name"] == "Brand One"
