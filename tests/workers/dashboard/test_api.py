"""``ctwa dashboard``'s JSON API over the hand-built stream of attribution.py, read as the read-only role ``ctwa
migrate`` makes: the views' and functions' numbers, the worked-out answers, credentials on every path, the headers,
bad ranges, and no phone number or message text in any answer."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from attribution import DAY0, DAY2, A, B, C, store_conversions, store_stream
from callbacks import inbound, referral
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from support import RUN_ID, database_role, free_port, rows, store

from ingest.settings import Settings
from workers.commands import report
from workers.commands.migrate import READABLE, grant_read_role
from workers.dashboard.access import HEADERS
from workers.dashboard.app import create_app

USER, PASSWORD = "anna", "a long password"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
RANGE = {"since": DAY0.isoformat(), "until": DAY2.isoformat()}

# A DISPATCH person with a real-looking number and a message text: neither may reach any answer.
PHONE, TEXT = "34611223344", "my address is Calle Mayor 1"

Client = TestClient[web.Request, web.Application]


@pytest.fixture(scope="module")
async def read_role(database_url: str) -> AsyncIterator[str]:
    """The dashboard's role, as `ctwa migrate` sets it up from CTWA_DASHBOARD_DATABASE_URL."""
    async with database_role(database_url, f"ctwa_test_read_{RUN_ID}", grant_read_role) as url:
        yield url


@pytest.fixture
async def seeded(db: AsyncEngine) -> AsyncEngine:
    await store_stream(db)
    await store_conversions(db)
    await store(db, [inbound("MP", 30, identity=PHONE, text=TEXT, metadata=referral(A, "CLP"))])
    return db


@pytest.fixture
async def dashboard(seeded: AsyncEngine, read_role: str, database_url: str) -> AsyncIterator[Client]:
    settings = Settings(
        database_url=database_url, dashboard_database_url=read_role, dashboard_users=(f"{USER}:{PASSWORD}",)
    )
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    yield client
    await client.close()


async def _get(client: Client, path: str, **query: str) -> Any:
    async with client.get(path, params=query, headers=AUTH) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_the_summary_is_the_ranges_figures_worked_out_by_hand(dashboard: Client, seeded: AsyncEngine) -> None:
    answer = await _get(dashboard, "/api/summary", **RANGE)
    # Over days 0-2: the stream's 8 clicks and the number's own; 7 people (P1, P2, P3, P4 with C5 merged in,
    # P6, P7, the number), all new; 7 conversations; K1-K9 counted, from P1, P2, P4 and P6.
    assert answer["current"] == {
        "clicks": 9,
        "people": 7,
        "new_people": 7,
        "conversations": 6,
        "conversions": 9,
        "people_converted": 4,
        "conversion_rate": 0.571,
        "value": {"EUR": "130.40", "USD": "10.00"},
    }
    assert (answer["since"], answer["until"]) == (RANGE["since"], RANGE["until"])
    assert answer["previous"] == {
        "since": (DAY0 - timedelta(days=3)).isoformat(),
        "until": (DAY0 - timedelta(days=1)).isoformat(),
    }
    assert answer["before"]["clicks"] == 0
    [by_sql] = await rows(seeded, "SELECT * FROM range_report(:since, :until)", since=DAY0, until=DAY2)
    assert {name: answer["current"][name] for name in ("clicks", "people", "conversions")} == {
        name: by_sql[name] for name in ("clicks", "people", "conversions")
    }


async def test_the_ads_are_ctwa_reports(dashboard: Client, seeded: AsyncEngine) -> None:
    answer = await _get(dashboard, "/api/ads", **RANGE)
    reported = await report.ads(seeded, DAY0, DAY2)
    assert [ad["source_id"] for ad in answer] == [ad["source_id"] for ad in reported] == [A, B, C]
    for ad, row in zip(answer, reported, strict=True):
        assert ad["clicks"] == row["clicks"]
        assert ad["people"] == row["people"]
        assert ad["conversions"] == row["conversions"]
        assert ad["value"] == {currency: str(amount) for currency, amount in row["value"].items()}
    by_ad = {ad["source_id"]: ad for ad in answer}
    assert by_ad[A]["value"] == {"EUR": "100.40", "USD": "10.00"}
    assert (by_ad[A]["clicks"], by_ad[A]["conversions"], by_ad[C]["conversions"]) == (5, 6, 3)


async def test_the_ads_download_as_csv(dashboard: Client) -> None:
    async with dashboard.get("/api/ads", params={**RANGE, "format": "csv"}, headers=AUTH) as response:
        assert response.status == 200
        assert response.content_type == "text/csv"
        assert "attachment" in response.headers["Content-Disposition"]
        table = list(csv.DictReader(io.StringIO(await response.text())))
    assert [row["source_id"] for row in table] == [A, B, C]
    assert table[0]["value"] == "EUR 100.40, USD 10.00"


async def test_every_day_of_the_range_is_there_with_the_views_numbers(dashboard: Client, seeded: AsyncEngine) -> None:
    since, until = DAY0 - timedelta(days=1), DAY2 + timedelta(days=1)
    answer = await _get(dashboard, "/api/daily", since=since.isoformat(), until=until.isoformat())
    assert [day["day"] for day in answer] == [(since + timedelta(days=n)).isoformat() for n in range(5)]
    assert answer[0]["clicks"] == answer[-1]["clicks"] == 0
    viewed = await rows(seeded, "SELECT day, clicks, people FROM performance_daily ORDER BY day")
    assert [(day["clicks"], day["people"]) for day in answer[1:4]] == [(v["clicks"], v["people"]) for v in viewed]
    assert sum(day["conversions"] for day in answer) == 9

    one_ad = await _get(dashboard, "/api/daily", source_id=C, **RANGE)
    by_view = await rows(
        seeded, "SELECT day, clicks FROM ad_performance_daily WHERE source_id = :ad ORDER BY day", ad=C
    )
    viewed_clicks = {v["day"].isoformat(): v["clicks"] for v in by_view}
    assert [day["clicks"] for day in one_ad] == [viewed_clicks.get(day["day"], 0) for day in one_ad] == [1, 1, 0]
    assert [day["conversions"] for day in one_ad] == [1, 2, 0]
    assert await _get(dashboard, "/api/daily", source_id="no-such-ad", **RANGE) == [
        {
            "day": day["day"],
            "clicks": 0,
            "people": 0,
            "new_people": 0,
            "conversations": 0,
            "conversions": 0,
            "value": {},
        }
        for day in one_ad
    ]


async def test_what_the_people_did_next_worked_out_by_hand(dashboard: Client, seeded: AsyncEngine) -> None:
    answer = await _get(dashboard, "/api/engagement", **RANGE)
    # P1 (M1) and P4 (M5, then M4) wrote again, P3 too (M3); OUT1 to P1 was read, OUT3 to P3 delivered, OUT2 to P2
    # failed. First replies 10 min after M1 and M2, 50 min after M3: median 600 s. The number (MP) did nothing more.
    assert answer["total"] == {
        "people": 7,
        "people_wrote_again": 3,
        "wrote_again_rate": 0.429,
        "people_replied": 2,
        "people_reply_read": 1,
        "median_seconds_to_first_reply": 600.0,
    }
    by_ad = {ad["source_id"]: ad for ad in answer["ads"]}
    assert by_ad[A] | {"source_id": A} == {
        "source_id": A,
        "people": 5,
        "people_wrote_again": 2,
        "wrote_again_rate": 0.4,
        "people_replied": 1,
        "people_reply_read": 1,
        "median_seconds_to_first_reply": 600.0,
    }
    assert (by_ad[B]["people_wrote_again"], by_ad[B]["median_seconds_to_first_reply"]) == (1, 3000.0)
    assert (by_ad[C]["people_wrote_again"], by_ad[C]["median_seconds_to_first_reply"]) == (0, None)
    assert answer["before"]["people"] == 0
    # The people who clicked are those of the ads' figures: one definition of a range's people.
    ads = {ad["source_id"]: ad for ad in await _get(dashboard, "/api/ads", **RANGE)}
    assert {ad: by_ad[ad]["people"] for ad in (A, B, C)} == {ad: ads[ad]["people"] for ad in (A, B, C)}


async def test_an_ads_creatives(dashboard: Client) -> None:
    answer = await _get(dashboard, "/api/creatives", source_id=A, **RANGE)
    assert [(c["headline"], c["media_type"], c["clicks"], c["people"]) for c in answer] == [
        (f"Headline {A}", "image", 4, 4),
        (f"Ad {A}", None, 1, 1),
    ]
    assert await _get(dashboard, "/api/creatives", source_id="no-such-ad", **RANGE) == []
    async with dashboard.get("/api/creatives", params=RANGE, headers=AUTH) as response:
        assert response.status == 400


async def test_the_conversions_to_meta_and_the_freshness(dashboard: Client) -> None:
    answer = await _get(dashboard, "/api/conversions")
    assert answer["events"] == {
        "pending": 2,
        "sending": 1,
        "sent": 7,
        "unattributed": 1,
        "expired": 1,
        "erased": 1,
        "failed": 1,
        "unconfirmed": 1,
        "unconfigured": 0,
    }
    assert answer["oldest_pending"]["event_id"] == "K15"
    assert answer["parked"] is None
    assert answer["parked_apps"] == []
    fresh = await _get(dashboard, "/api/freshness")
    assert fresh["newest_stored_at"] is not None
    assert 0 <= fresh["age_s"] < 120


async def test_the_conversions_say_which_apps_setup_is_parked(dashboard: Client, seeded: AsyncEngine) -> None:
    """Read as the dashboard's role, which reads no table: the apps parked and their names, from the view."""
    two, three = "01EB4BNMPW0AY1E1HAEE2Y2D4Z", "01KCCCCCCCCCCCCCCCCCCCCCCC"
    async with seeded.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO conversion_app_state (app_id, parked_reason, parked_code, parked_at, last_request_at) "
                "VALUES (:two, 'Invalid OAuth access token', 190, '2026-12-01T10:00:00Z', now()), "
                "(:three, NULL, NULL, NULL, now())"
            ),
            {"two": two, "three": three},
        )
        await connection.execute(text("INSERT INTO apps (app_id, name) VALUES (:two, 'Brand Two')"), {"two": two})
        await connection.execute(text("UPDATE conversion_events SET status = 'unconfigured' WHERE event_id = 'K15'"))
    answer = await _get(dashboard, "/api/conversions")
    assert answer["parked_apps"] == [
        {
            "app_id": two,
            "name": "Brand Two",
            "reason": "Invalid OAuth access token",
            "code": 190,
            "at": "2026-12-01T10:00:00+00:00",
        }
    ]
    assert answer["parked"] is None  # the deployment's own setup is not
    assert answer["events"]["unconfigured"] == 1


@pytest.mark.parametrize(
    "query",
    [
        {"since": "yesterday"},
        {"since": "2025-11-05", "until": "2025-11-03"},
        {"since": "2020-01-01", "until": "2025-01-01"},
        {"until": "2025-13-40"},
    ],
)
async def test_a_bad_range_is_a_clear_400(dashboard: Client, query: dict[str, str]) -> None:
    for path in ("/api/summary", "/api/ads", "/api/daily", "/api/engagement", "/api/creatives"):
        async with dashboard.get(path, params=query | {"source_id": A}, headers=AUTH) as response:
            assert response.status == 400
            assert (await response.json())["error"] == "bad request"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode(),
        "Basic " + base64.b64encode(f"{USER}:{PASSWORD}x".encode()).decode(),
        "Basic " + base64.b64encode(b"\x00").decode(),
        "Basic not-base64!",
        "Bearer " + PASSWORD,
    ],
)
async def test_nothing_without_credentials(dashboard: Client, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for path in ("/", "/healthz", "/static/dashboard.js", "/api/ads", "/api/summary", "/api/freshness", "/nowhere"):
        async with dashboard.get(path, headers=headers) as response:
            assert response.status == 401, path
            assert response.headers["WWW-Authenticate"].startswith('Basic realm="ctwa"')
            for name, value in HEADERS.items():
                assert response.headers[name] == value


async def test_every_answer_carries_the_security_headers(dashboard: Client) -> None:
    for path in ("/", "/api/ads", "/nowhere"):
        async with dashboard.get(path, headers=AUTH) as response:
            assert response.status in (200, 404)
            assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Server-Timing"].startswith("app;dur=")


async def test_no_answer_carries_a_phone_number_or_a_message_text(dashboard: Client, seeded: AsyncEngine) -> None:
    [stored] = await rows(seeded, "SELECT count(*) AS n FROM messages WHERE identity = :phone", phone=PHONE)
    assert stored["n"] == 1  # it is in the database, under the dashboard's eyes
    for path in ("/api/summary", "/api/ads", "/api/daily", "/api/engagement", "/api/creatives", "/api/conversions"):
        for query in (RANGE, {**RANGE, "source_id": A}, {**RANGE, "format": "csv"}):
            async with dashboard.get(path, params=query, headers=AUTH) as response:
                body = await response.text()
            assert PHONE not in body, path
            assert TEXT not in body, path


@pytest.mark.parametrize(
    "table",
    [
        "callbacks",
        "messages",
        "contacts",
        "channel_identities",
        "ad_clicks",
        "person_touches",
        "ad_daily_people",
        "daily_people",
        "daily_conversations",
        "conversion_events",
        "delivery_reports",
    ],
)
async def test_the_read_role_reads_no_table(read_role: str, table: str) -> None:
    engine = create_async_engine(read_role)
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError, match="permission denied"):
                await connection.execute(text(f"SELECT * FROM {table} LIMIT 1"))
    finally:
        await engine.dispose()


async def test_the_read_role_reads_the_figures(read_role: str, seeded: AsyncEngine) -> None:
    engine = create_async_engine(read_role)
    try:
        async with engine.connect() as connection:
            for view in READABLE:
                await connection.execute(text(f"SELECT * FROM {view} LIMIT 1"))
            clicks = await connection.scalar(text("SELECT clicks FROM range_report(:a, :b)"), {"a": DAY0, "b": DAY2})
    finally:
        await engine.dispose()
    assert clicks == 9


async def _dashboard_process(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, int]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        "dashboard",
        env={**os.environ, **env, "CTWA_DASHBOARD_PORT": str(port)},
        stderr=asyncio.subprocess.PIPE,
    )
    return process, port


async def test_without_users_it_refuses_to_listen_beyond_loopback(database_url: str) -> None:
    process, _ = await _dashboard_process({"CTWA_DATABASE_URL": database_url, "CTWA_DASHBOARD_HOST": "0.0.0.0"})
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert "CTWA_DASHBOARD_USERS is empty" in err.decode()


async def test_without_users_on_loopback_it_starts_and_warns(database_url: str, seeded: AsyncEngine) -> None:
    process, port = await _dashboard_process({"CTWA_DATABASE_URL": database_url, "CTWA_LOG_FORMAT": "json"})
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/api/ads", params=RANGE) as response:
                        assert response.status == 200
                        assert len(await response.json()) == 3
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("the dashboard did not answer within 10 s")
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    assert "anyone on this machine may see the dashboard" in err.decode()
