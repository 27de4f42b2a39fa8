"""The dashboard's page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by
Selenium) against a real ``ctwa dashboard`` process, reading the seeded test database as the read-only role that
``ctwa migrate`` makes. The page draws without a console error; its numbers, table and daily chart are the API's
and the SQL's (``range_report``, ``ad_report``, ``engagement_report``, ``performance_daily``, …); an ad's view shows
its funnel (a uPlot bar chart) and its creatives (``ad_creatives``), their links as text, never loaded; a preset, a
changed address and an ad's view update them; the sort and the view survive the page's own refreshes; with
/api/engagement held by the browser, every other part is drawn and the engagement's show a placeholder until it
answers, and it is not asked again meanwhile; a callback stored while the page is open shows up within 10 s without a
reload; ``docs/screenshots.py`` saves its two images.

Without the browser the tests skip, loudly; with ``CI`` set they fail (``.ci/run`` installs it)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from attribution import DAY0, DAY2, A, B, C, store_conversions, store_stream
from callbacks import APP, T0, inbound, referral
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import RUN_ID, database_role, free_port, rows, store, unavailable

from ingest.apps import App, Apps
from workers.commands.migrate import grant_read_role
from workers.engine.apps import name_apps

ROOT = Path(__file__).parents[3]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--lang=en-US",
)
WIDTH, HEIGHT = 1280, 900
NOTHING = "\N{EN DASH}"  # what the page shows where there is no figure
FAINT = "rgb(138, 149, 163)"  # the muted colour of what is still on its way (dashboard.css's --faint)

USER, PASSWORD = "anna", "a long password"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
STREAM = {"since": DAY0.isoformat(), "until": DAY2.isoformat()}

COUNTS = ("clicks", "people", "new_people", "conversations", "conversions")
# What the people an ad brought did next (/api/engagement, engagement_report), and the ads table's columns of it.
ENGAGED = (
    "people",
    "people_wrote_again",
    "wrote_again_rate",
    "people_replied",
    "people_reply_read",
    "median_seconds_to_first_reply",
)
ENGAGED_COLUMNS = ("wrote_again_rate", "median_seconds_to_first_reply", "replied")
REPLIED = ("people", "people_replied", "people_reply_read")
# An ad's funnel, its steps in order.
FUNNEL = ("Clicked", "Wrote again", "Reply delivered", "Reply read", "Converted")
CREATIVE = (
    "headline",
    "body",
    "source_type",
    "media_type",
    "image_url",
    "video_url",
    "thumbnail_url",
    "source_url",
    "clicks",
    "people",
    "first_clicked_at",
    "last_clicked_at",
)
# The daily chart's lines, in order, and the statuses of the conversions panel.
SERIES = ("clicks", "people", "conversations", "conversions")
STATUSES = ("pending", "sending", "sent", "failed", "unconfirmed", "unattributed")
PARKED = "Meta refused the access token (code 190): renew CTWA_META_ACCESS_TOKEN"
# The page refreshes itself every 5 s: what it shows must change within 10.
LIVE_S = 10


# ---- the browser, the dashboard, the data ----


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile, a 1280x900 viewport and the dashboard's credentials on every
    request; its console kept. Skips, loudly, without chromium or chromedriver (fails with ``CI`` set)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        unavailable(
            f"{' and '.join(missing)} missing (apt-get install chromium chromium-driver); the page can't be tested"
        )
    profile = tempfile.mkdtemp(prefix="ctwa-test-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--window-size={WIDTH},{HEIGHT}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver given by path: Selenium Manager, which would download one, never runs.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": AUTH})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
async def read_role(database_url: str) -> AsyncIterator[str]:
    """The dashboard's read-only role, as ``ctwa migrate`` sets it up from CTWA_DASHBOARD_DATABASE_URL."""
    async with database_role(database_url, f"ctwa_test_page_{RUN_ID}", grant_read_role) as url:
        yield url


@pytest.fixture(scope="module")
def dashboard(browser: WebDriver, database_url: str, read_role: str) -> Iterator[str]:
    """``ctwa dashboard`` as a process on a free port, reading as the read-only role; its base URL. Stopped with
    SIGTERM afterwards, which it must survive cleanly."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="ctwa-test-dashboard-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "workers", "dashboard"],
        env={
            **os.environ,
            "CTWA_DATABASE_URL": database_url,
            "CTWA_DASHBOARD_DATABASE_URL": read_role,
            "CTWA_DASHBOARD_USERS": f"{USER}:{PASSWORD}",
            "CTWA_DASHBOARD_HOST": "127.0.0.1",
            "CTWA_DASHBOARD_PORT": str(port),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _answers(f"{base}/healthz"):
            assert process.poll() is None, f"ctwa dashboard exited {process.returncode}: {_read(log.name)}"
            assert time.monotonic() < deadline, f"ctwa dashboard did not answer within 30 s: {_read(log.name)}"
            time.sleep(0.1)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        finally:
            log.close()
        output = _read(log.name)
        Path(log.name).unlink()
        assert code == 0, f"ctwa dashboard exited {code}: {output}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _read(path: str) -> str:
    return Path(path).read_text(errors="replace")[-4000:]


def _minute(at: datetime) -> float:
    """``at`` as the callbacks' minutes after T0."""
    return (at - T0).total_seconds() / 60


def _today() -> date:
    return datetime.now(UTC).date()


def _earlier_today() -> datetime:
    """A moment of today (UTC) already past: halfway between midnight and now."""
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date(), datetime.min.time(), UTC)
    return midnight + (now - midnight) / 2


@pytest.fixture
async def seeded(db: AsyncEngine) -> AsyncEngine:
    """attribution.py's stream and conversions (November 2025), a few clicks of recent days — today, yesterday,
    3 and 20 days ago, so that the 7- and 30-day ranges differ — and the senders parked."""
    await store_stream(db)
    await store_conversions(db)
    now = datetime.now(UTC)
    recent = [
        ("R1", now - timedelta(days=1), A, "CLR1"),
        ("R2", _earlier_today(), B, None),
        ("R3", now - timedelta(days=20), C, "CLR3"),
        ("R4", now - timedelta(days=3), A, "CLR4"),
    ]
    await store(
        db,
        [
            inbound(
                message,
                _minute(at),
                identity=f"99{index}",
                contact=f"CR{index}",
                conversation=f"VR{index}",
                metadata=referral(ad, clid, headline=f"Headline {ad}", media_type="image"),
            )
            for index, (message, at, ad, clid) in enumerate(recent)
        ],
    )
    async with db.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO conversion_sender (id, parked_reason, parked_code, parked_at, last_request_at) "
                "VALUES (1, :reason, 190, now(), now()) ON CONFLICT (id) DO UPDATE SET "
                "parked_reason = excluded.parked_reason, parked_code = excluded.parked_code, "
                "parked_at = excluded.parked_at, last_request_at = excluded.last_request_at"
            ),
            {"reason": PARKED},
        )
    return db


# ---- reading the page ----


class Page:
    """The dashboard's page in the browser: what it shows, as its ``data-testid`` elements and its chart hold it."""

    def __init__(self, driver: WebDriver, base: str) -> None:
        self.driver = driver
        self.base = base
        self.console: list[dict[str, Any]] = []

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def open(self, query: str = "") -> None:
        self.driver.get(f"{self.base}/{query}")

    async def drawn(
        self, since: str | None = None, until: str | None = None, ad: str | None = None, *, engagement: bool = False
    ) -> None:
        """Until the page has drawn the range ``since``-``until`` (any, if not given) and the view (``ad``, or all):
        every part but the engagement's (``data-state``), and with ``engagement`` those too (``data-engagement``)."""
        want = None if since is None else f"{since}..{until}"

        def done() -> bool:
            state, engaged, shown, shown_ad = self.js(
                "const d = document.documentElement.dataset; return [d.state, d.engagement, d.range, d.ad || null]"
            )
            assert state != "error", self.text("error")
            assert engaged != "error", self.text("error")
            return bool(
                state == "drawn"
                and (engaged == "drawn" or not engagement)
                and (want is None or shown == want)
                and shown_ad == ad
            )

        what = f"{want or 'its range'} ({ad or 'all ads'}){', engagement included' if engagement else ''}"
        await eventually(done, 15, f"the page did not draw {what}")

    def engagement(self) -> str:
        """``data-engagement``: whether the parts drawn from /api/engagement are (``drawn``) or wait (``loading``)."""
        return str(self.js("return document.documentElement.dataset.engagement"))

    def pending(self) -> list[dict[str, Any]]:
        """The placeholders of figures still on their way: where (the closest ``data-testid``), what they show, what
        they say to assistive technology, and their colour."""
        shown: list[dict[str, Any]] = self.js(
            """
            return [...document.querySelectorAll('.pending')].map((node) => ({
                where: node.closest('[data-testid]').dataset.testid,
                text: node.textContent,
                role: node.getAttribute('role'),
                label: node.getAttribute('aria-label'),
                color: getComputedStyle(node).color,
            }));
            """
        )
        return shown

    def refreshes(self) -> int:
        return int(self.js("return Number(document.documentElement.dataset.refreshes || 0)"))

    def range(self) -> tuple[str, str]:
        since, until = self.js("return document.documentElement.dataset.range").split("..")
        return since, until

    def find(self, testid: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, f'[data-testid="{testid}"]')

    def text(self, testid: str) -> str:
        return str(self.find(testid).text)

    def value(self, testid: str) -> str:
        return str(self.find(testid).get_attribute("data-value"))

    def figures(self) -> dict[str, Any]:
        """The headline numbers, as the API gives them: counts, the rate (or None), the value per currency."""
        shown: dict[str, Any] = {key: int(self.value(f"figure-{key}")) for key in (*COUNTS, "people_converted")}
        rate = self.value("figure-conversion_rate")
        shown["conversion_rate"] = float(rate) if rate else None
        shown["value"] = {
            item.get_attribute("data-currency"): item.get_attribute("data-value")
            for item in self.driver.find_elements(By.CSS_SELECTOR, '[data-testid="value"]')
        }
        return shown

    def ads(self) -> list[dict[str, Any]]:
        """The table's rows, in the order shown, each cell as the API gives it."""
        table: list[dict[str, Any]] = self.js(
            """
            return [...document.querySelectorAll('[data-testid="ad-row"]')].map((row) => {
                const cells = {};
                for (const cell of row.querySelectorAll('[data-testid^="ad-"]')) {
                    cells[cell.dataset.testid.slice(3)] = cell.dataset.value;
                }
                return cells;
            });
            """
        )
        for row in table:
            for key in COUNTS:
                row[key] = int(row[key])
            for key in ("conversion_rate", "wrote_again_rate", "median_seconds_to_first_reply"):
                row[key] = float(row[key]) if row[key] else None
            row["value"] = json.loads(row["value"])
            row["replied"] = json.loads(row["replied"]) if row["replied"] else None
        return table

    def wrote_again(self) -> dict[str, Any]:
        """The "Wrote again" card: how many, and the share of the people who clicked."""
        rate = self.value("headline-wrote-again-rate")
        count = self.value("headline-wrote-again")
        return {
            "people_wrote_again": int(count) if count else None,
            "wrote_again_rate": float(rate) if rate else None,
        }

    def funnel(self) -> dict[str, Any]:
        """An ad's funnel as uPlot holds it and as the page labels it: its canvas, its steps, each bar's count."""
        funnel: dict[str, Any] = self.js(
            """
            const chart = window.dashboard.funnel;
            const box = document.querySelector('[data-testid="funnel"]');
            const canvas = box.querySelector('canvas');
            return {
                shown: !box.closest('[hidden]'),
                canvas: canvas !== null && canvas.width > 0 && canvas.height > 0,
                drawn: box.dataset.drawn,
                bars: box.dataset.bars,
                counts: chart.data[1],
                steps: [...box.querySelectorAll('[data-testid="funnel-label"]')].map((label) => label.dataset.step),
                labels: [...box.querySelectorAll('[data-testid="funnel-label"]')].map((label) => label.textContent),
            };
            """
        )
        return funnel

    def creatives(self) -> list[dict[str, Any]]:
        """The creatives table's rows, each field as the API gives it (None where the page shows none)."""
        table: list[dict[str, Any]] = self.js(
            """
            return [...document.querySelectorAll('[data-testid="creative-row"]')].map((row) => {
                const fields = {};
                for (const field of row.querySelectorAll('[data-testid^="creative-"]')) {
                    fields[field.dataset.testid.slice(9)] = field.dataset.value;
                }
                return fields;
            });
            """
        )
        return [
            {
                key: (int(row[key]) if key in ("clicks", "people") else row[key]) if row.get(key) else None
                for key in CREATIVE
            }
            for row in table
        ]

    def chart(self) -> dict[str, Any]:
        """The daily chart as uPlot holds it: its canvas, its lines, its days and each line's values."""
        chart: dict[str, Any] = self.js(
            """
            const chart = window.dashboard.chart;
            const canvas = document.querySelector('[data-testid="chart-daily"] canvas');
            return {
                canvas: canvas !== null && canvas.width > 0 && canvas.height > 0,
                labels: chart.series.slice(1).map((line) => line.label),
                days: chart.data[0].map((x) => new Date(x * 1000).toISOString().slice(0, 10)),
                values: chart.data.slice(1),
                drawn: document.querySelector('[data-testid="chart-daily"]').dataset.days,
            };
            """
        )
        return chart

    def meta(self) -> dict[str, int]:
        return {status: int(self.value(f"meta-{status}")) for status in STATUSES}

    def severe(self) -> list[dict[str, Any]]:
        """The console's errors since the page opened (Chromium's SEVERE level: errors, failed loads, CSP refusals)."""
        self.console += self.driver.get_log("browser")
        return [entry for entry in self.console if entry["level"] == "SEVERE"]


async def eventually(condition: Callable[[], bool], seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.1)


async def settles(check: Callable[[], Awaitable[None]], seconds: float) -> None:
    """Until ``check`` passes, for a page whose parts follow one another, each as its answer comes; its failure if it
    still fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            await check()
            return
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture
async def page(browser: WebDriver, dashboard: str, seeded: AsyncEngine) -> AsyncIterator[Page]:
    browser.get_log("browser")  # what an earlier test left
    yield Page(browser, dashboard)
    browser.get("about:blank")  # stop its refreshes before the database is emptied for the next test


# ---- what the API and the SQL say ----


async def api(base: str, path: str, **query: str) -> Any:
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.get(f"{base}{path}", params=query) as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


def _money(value: dict[str, Any]) -> dict[str, Decimal]:
    return {currency: Decimal(str(amount)) for currency, amount in value.items()}


def _figures(row: dict[str, Any]) -> dict[str, Any]:
    """A row of range_report or ad_report, or the API's figures, as the page's headline numbers show them."""
    return {
        **{key: row[key] for key in (*COUNTS, "people_converted")},
        "conversion_rate": None if row["conversion_rate"] is None else float(row["conversion_rate"]),
        "value": _money(_json(row["value"])),
    }


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _shown(figures: dict[str, Any]) -> dict[str, Any]:
    return {**figures, "value": _money(figures["value"])}


async def range_report(db: AsyncEngine, since: str, until: str) -> dict[str, Any]:
    [row] = await rows(
        db,
        "SELECT * FROM range_report(:since, :until)",
        since=date.fromisoformat(since),
        until=date.fromisoformat(until),
    )
    return _figures(row)


async def ad_report(db: AsyncEngine, since: str, until: str) -> list[dict[str, Any]]:
    reported = await rows(
        db, "SELECT * FROM ad_report(:since, :until)", since=date.fromisoformat(since), until=date.fromisoformat(until)
    )
    return [{"source_id": row["source_id"], **_figures(row)} for row in reported]


async def daily_views(db: AsyncEngine, since: str, until: str, ad: str | None = None) -> list[list[int]]:
    """Each chart line's values per day of the range, from the views (a day without a row at 0)."""
    scope = "" if ad is None else " AND source_id = :ad"
    performance, converted = (
        ("performance_daily", "conversions_daily") if ad is None else ("ad_performance_daily", "ad_conversions_daily")
    )
    params: dict[str, Any] = {"since": date.fromisoformat(since), "until": date.fromisoformat(until), "ad": ad}
    days = [params["since"] + timedelta(days=n) for n in range((params["until"] - params["since"]).days + 1)]
    by_day: dict[date, dict[str, int]] = {day: dict.fromkeys(SERIES, 0) for day in days}
    for row in await rows(
        db,
        f"SELECT day, clicks, people, conversations FROM {performance} WHERE day BETWEEN :since AND :until{scope}",
        **params,
    ):
        by_day[row["day"]].update(clicks=row["clicks"], people=row["people"], conversations=row["conversations"])
    for row in await rows(
        db, f"SELECT day, conversions FROM {converted} WHERE day BETWEEN :since AND :until{scope}", **params
    ):
        by_day[row["day"]]["conversions"] = row["conversions"]
    return [[by_day[day][line] for day in days] for line in SERIES]


def _table(ads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API's or the SQL's ads as the table's cells hold them."""
    return [
        {
            "source_id": ad["source_id"] or "",
            **{key: ad[key] for key in COUNTS},
            "conversion_rate": None if ad["conversion_rate"] is None else float(ad["conversion_rate"]),
            "value": _money(_json(ad["value"])),
        }
        for ad in ads
    ]


def _number(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


async def engagement_report(db: AsyncEngine, since: str, until: str) -> dict[str, Any]:
    """engagement_report's rows, read as its owner, shaped as /api/engagement answers: ``total`` and ``ads``."""
    reported = await rows(
        db,
        "SELECT * FROM engagement_report(:since, :until)",
        since=date.fromisoformat(since),
        until=date.fromisoformat(until),
    )
    [total] = [row for row in reported if row["total"]]
    return {
        "total": {key: _number(total[key]) for key in ENGAGED},
        "ads": [
            {"source_id": row["source_id"], **{key: _number(row[key]) for key in ENGAGED}}
            for row in reported
            if not row["total"]
        ],
    }


def _engaged_table(ads: list[dict[str, Any]], engaged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ads table's engagement columns: each ad's row of the engagement, joined to the ads by ad id."""
    by_ad = {row["source_id"]: row for row in engaged}
    table = []
    for ad in ads:
        row = by_ad.get(ad["source_id"])
        table.append(
            {
                "source_id": ad["source_id"] or "",
                "wrote_again_rate": None if row is None else row["wrote_again_rate"],
                "median_seconds_to_first_reply": None if row is None else row["median_seconds_to_first_reply"],
                "replied": None if row is None else {key: row[key] for key in REPLIED},
            }
        )
    return table


def _engaged_cells(page_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: row[key] for key in ("source_id", *ENGAGED_COLUMNS)} for row in page_rows]


async def ad_creatives(db: AsyncEngine, since: str, until: str, ad: str) -> list[dict[str, Any]]:
    """ad_creatives's rows, read as its owner, as /api/creatives answers them."""
    found = await rows(
        db,
        "SELECT * FROM ad_creatives(:since, :until, :ad)",
        since=date.fromisoformat(since),
        until=date.fromisoformat(until),
        ad=ad,
    )
    return [
        {key: row[key].isoformat() if isinstance(row[key], datetime) else row[key] for key in CREATIVE} for row in found
    ]


def _cells(page_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {key: row[key] for key in ("source_id", *COUNTS, "conversion_rate")} | {"value": _money(row["value"])}
        for row in page_rows
    ]


async def check_all_ads(page: Page, db: AsyncEngine, since: str, until: str, *, engagement: bool = True) -> None:
    """The page's headline numbers, table and chart are the API's and the views' for the range; with ``engagement``
    (the page drawn with it), what the people did next too."""
    summary = await api(page.base, "/api/summary", since=since, until=until)
    assert _shown(page.figures()) == _shown(summary["current"]) == await range_report(db, since, until)
    ads = await api(page.base, "/api/ads", since=since, until=until)
    assert _cells(page.ads()) == _table(ads) == _table(await ad_report(db, since, until))
    if engagement:
        await check_engagement(page, db, since, until)
    daily = await api(page.base, "/api/daily", since=since, until=until)
    chart = page.chart()
    assert chart["days"] == [day["day"] for day in daily]
    assert chart["values"] == [[day[line] for day in daily] for line in SERIES] == await daily_views(db, since, until)
    assert page.find("download-csv").get_attribute("href").endswith(f"/api/ads?since={since}&until={until}&format=csv")


async def check_engagement(page: Page, db: AsyncEngine, since: str, until: str) -> None:
    """What the people did next, as the page shows it for the range: the "Wrote again" card, and the ads table's
    columns joined by ad id, the API's and the SQL's."""
    ads = await api(page.base, "/api/ads", since=since, until=until)
    engagement = await api(page.base, "/api/engagement", since=since, until=until)
    by_sql = await engagement_report(db, since, until)
    assert engagement["total"] == by_sql["total"]
    assert engagement["ads"] == by_sql["ads"]
    shown = {key: engagement["total"][key] for key in ("people_wrote_again", "wrote_again_rate")}
    assert page.wrote_again() == shown
    assert _engaged_cells(page.ads()) == _engaged_table(ads, engagement["ads"]) == _engaged_table(ads, by_sql["ads"])
    assert page.pending() == []


# ---- /api/engagement made slow: the browser holds its requests ----


class Held:
    """The page's requests to /api/engagement, held by Chromium until released: DevTools' Fetch domain, enabled in a
    session of its own on the page's tab, beside chromedriver's. ``asked``: each request's URL, in order."""

    PATTERN = "*/api/engagement*"

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.asked: list[str] = []
        self.holding = True
        self._held: list[str] = []
        self._numbers = itertools.count(1)
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}

    async def command(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self._numbers)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[number] = answer
        await self.socket.send_json({"id": number, "method": method, "params": params})
        return await asyncio.wait_for(answer, 10)

    async def _continue(self, request: str) -> None:
        # Not waited for: called from read(), which reads its answer.
        await self.socket.send_json(
            {"id": next(self._numbers), "method": "Fetch.continueRequest", "params": {"requestId": request}}
        )

    async def read(self) -> None:
        async for message in self.socket:
            event = json.loads(message.data)
            answer = self._answers.pop(event.get("id"), None)
            if answer is not None:
                if "error" in event:
                    answer.set_exception(AssertionError(f"DevTools refused: {event['error']}"))
                else:
                    answer.set_result(event.get("result", {}))
            elif event.get("method") == "Fetch.requestPaused":
                self.asked.append(event["params"]["request"]["url"])
                if self.holding:
                    self._held.append(event["params"]["requestId"])
                else:
                    await self._continue(event["params"]["requestId"])

    async def release(self) -> None:
        """Lets the held requests go on, and those to come."""
        self.holding = False
        while self._held:
            await self._continue(self._held.pop(0))


@contextlib.asynccontextmanager
async def engagement_held(driver: WebDriver) -> AsyncIterator[Held]:
    """The page's requests to /api/engagement held (``Held``) until released; all released, and the interception
    gone with its session, on the way out."""
    address = driver.capabilities["goog:chromeOptions"]["debuggerAddress"]
    # chromedriver's window handle is the tab's DevTools target id.
    url = f"ws://{address}/devtools/page/{driver.current_window_handle}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url, max_msg_size=0) as socket:
        held = Held(socket)
        reading = asyncio.create_task(held.read())
        try:
            await held.command("Fetch.enable", patterns=[{"urlPattern": Held.PATTERN, "requestStage": "Request"}])
            yield held
        finally:
            await held.release()
            await held.command("Fetch.disable")
            reading.cancel()


# ---- the tests ----


async def test_the_page_draws_the_views_figures_without_a_console_error(page: Page, seeded: AsyncEngine) -> None:
    page.open(f"?since={STREAM['since']}&until={STREAM['until']}")
    await page.drawn(**STREAM, engagement=True)
    assert page.severe() == []

    # The daily chart drew: uPlot's canvas, its four lines, one point per day of the range.
    chart = page.chart()
    assert chart["canvas"]
    assert chart["labels"] == ["Clicks", "People", "Conversations", "Conversions"]
    assert chart["days"] == [(DAY0 + timedelta(days=n)).isoformat() for n in range(3)]
    assert chart["drawn"] == "3"
    await check_all_ads(page, seeded, **STREAM)

    # attribution.py's answers, worked out by hand, as the page shows them.
    assert page.figures() == {
        "clicks": 8,
        "people": 6,
        "new_people": 6,
        "conversations": 6,
        "conversions": 9,
        "people_converted": 4,
        "conversion_rate": 0.667,
        "value": {"EUR": "130.40", "USD": "10.00"},
    }
    assert [row["source_id"] for row in page.ads()] == [A, B, C]
    assert page.text("figure-clicks") == "8"
    assert page.text("figure-conversion_rate") == "66.7%"
    assert page.text("figure-people_converted") == "4 of 6 people converted"

    # What those people did next, worked out by hand: P1 and P4 (on A) and P3 (on B) wrote again; OUT1 to P1 was
    # read, OUT3 to P3 delivered, OUT2 to P2 failed; first replies 10 min after M1 and M2, 50 min after M3.
    engagement = await api(page.base, "/api/engagement", **STREAM)
    assert {key: engagement["total"][key] for key in ENGAGED} == {
        "people": 6,
        "people_wrote_again": 3,
        "wrote_again_rate": 0.5,
        "people_replied": 2,
        "people_reply_read": 1,
        "median_seconds_to_first_reply": 600.0,
    }
    assert page.wrote_again() == {"people_wrote_again": 3, "wrote_again_rate": 0.5}
    assert page.text("headline-wrote-again") == "3"
    assert page.text("headline-wrote-again-rate") == "50.0% of 6 people"
    assert page.text("change-wrote-again") == "new"  # nobody wrote again in the 3 days before
    by_ad = {row["source_id"]: row for row in page.ads()}
    assert (by_ad[A]["wrote_again_rate"], by_ad[A]["median_seconds_to_first_reply"]) == (0.5, 600.0)
    assert by_ad[A]["replied"] == {"people": 4, "people_replied": 1, "people_reply_read": 1}
    assert by_ad[B]["median_seconds_to_first_reply"] == 3000.0
    assert by_ad[C]["median_seconds_to_first_reply"] is None

    def shown(ad: str, column: str) -> str:
        return str(
            page.driver.find_element(
                By.CSS_SELECTOR, f'[data-testid="ad-row"][data-source-id="{ad}"] [data-testid="ad-{column}"]'
            ).text
        )

    assert shown(A, "wrote_again_rate") == "50.0%"
    assert shown(A, "median_seconds_to_first_reply") == "10 min"
    assert shown(B, "median_seconds_to_first_reply") == "50 min"
    assert shown(C, "median_seconds_to_first_reply") == NOTHING
    assert shown(A, "replied").split() == ["1", "/", "1", "of", "4"]
    # The ad panels are an ad's view's only.
    assert not page.find("ad-panels").is_displayed()

    # Conversions to Meta: the overview's counts, the oldest pending, and the parked reason, shown.
    overview = await api(page.base, "/api/conversions")
    [by_sql] = await rows(seeded, "SELECT events FROM conversion_overview")
    assert page.meta() == {status: overview["events"][status] for status in STATUSES}
    assert page.meta() == {status: _json(by_sql["events"]).get(status, 0) for status in STATUSES}
    assert page.meta()["pending"] == 2
    assert page.find("meta-parked").is_displayed()
    assert page.text("meta-parked-reason") == PARKED
    assert page.text("meta-oldest-pending") != "none"

    # Freshness: the newest callback was stored moments ago, as the API says.
    freshness = await api(page.base, "/api/freshness")
    assert freshness["age_s"] is not None
    assert page.text("freshness").startswith("Newest callback stored ")
    assert page.text("freshness").endswith(" s ago")
    assert float(page.find("freshness").get_attribute("data-age-s")) < 120
    assert page.severe() == []


async def test_a_preset_a_changed_address_and_an_ads_view_update_the_figures(page: Page, seeded: AsyncEngine) -> None:
    page.open(f"?since={STREAM['since']}&until={STREAM['until']}")
    await page.drawn(**STREAM)

    # A preset: the last 30 days, today included, in the address and on the page.
    today = _today()
    page.find("preset-30").click()
    thirty = {"since": (today - timedelta(days=29)).isoformat(), "until": today.isoformat()}
    await page.drawn(**thirty, engagement=True)
    assert page.driver.current_url == f"{page.base}/?since={thirty['since']}&until={thirty['until']}"
    assert "active" in page.find("preset-30").get_attribute("class")
    assert len(page.chart()["days"]) == 30
    await check_all_ads(page, seeded, **thirty)
    assert page.figures()["clicks"] == 4  # R1-R4

    page.find("preset-7").click()
    seven = {"since": (today - timedelta(days=6)).isoformat(), "until": today.isoformat()}
    await page.drawn(**seven, engagement=True)
    assert len(page.chart()["days"]) == 7
    await check_all_ads(page, seeded, **seven)
    assert page.figures()["clicks"] == 3  # R3 was 20 days ago
    assert page.find("since").get_attribute("value") == seven["since"]

    # The browser's back button: the 30 days again.
    page.driver.back()
    await page.drawn(**thirty, engagement=True)
    await check_all_ads(page, seeded, **thirty)

    # A changed address: the stream's first day alone.
    day0 = {"since": DAY0.isoformat(), "until": DAY0.isoformat()}
    page.open(f"?since={day0['since']}&until={day0['until']}")
    await page.drawn(**day0, engagement=True)
    assert len(page.chart()["days"]) == 1
    await check_all_ads(page, seeded, **day0)

    # An ad's view, from its row: its own days, its row's figures, the table with its row marked; and back.
    page.open(f"?since={STREAM['since']}&until={STREAM['until']}")
    await page.drawn(**STREAM)
    page.driver.find_element(
        By.CSS_SELECTOR, f'[data-testid="ad-row"][data-source-id="{A}"] [data-testid="ad-clicks"]'
    ).click()
    await page.drawn(**STREAM, ad=A)
    assert page.driver.current_url == f"{page.base}/?since={STREAM['since']}&until={STREAM['until']}&ad={A}"
    assert page.text("view-title") == f"Headline {A}"
    assert page.text("view-subtitle") == f"Ad {A} · ad · image"
    assert page.find("back").is_displayed()
    [reported] = [row for row in await ad_report(seeded, **STREAM) if row["source_id"] == A]
    [answered] = [row for row in await api(page.base, "/api/ads", **STREAM) if row["source_id"] == A]
    assert _shown(page.figures()) == _figures(answered) == {key: reported[key] for key in _figures(answered)}
    daily = await api(page.base, "/api/daily", **STREAM, source_id=A)
    chart = page.chart()
    assert (
        chart["values"]
        == [[day[line] for day in daily] for line in SERIES]
        == await daily_views(seeded, **STREAM, ad=A)
    )
    assert chart["values"] != await daily_views(seeded, **STREAM)
    assert "selected" in page.driver.find_element(
        By.CSS_SELECTOR, f'[data-testid="ad-row"][data-source-id="{A}"]'
    ).get_attribute("class")

    page.find("back").click()
    await page.drawn(**STREAM, engagement=True)
    assert page.driver.current_url == f"{page.base}/?since={STREAM['since']}&until={STREAM['until']}"
    assert not page.find("back").is_displayed()
    await check_all_ads(page, seeded, **STREAM)

    # An ad opened by its address, over a range where it has nothing: no figures, every day at 0.
    page.open(f"?since=2025-10-01&until=2025-10-05&ad={A}")
    await page.drawn(since="2025-10-01", until="2025-10-05", ad=A)
    assert page.chart()["values"] == [[0] * 5] * 4
    assert page.text("figure-clicks") == NOTHING
    assert page.severe() == []


async def test_an_ads_view_draws_its_funnel_and_lists_its_creatives(page: Page, seeded: AsyncEngine) -> None:
    page.open(f"?since={STREAM['since']}&until={STREAM['until']}&ad={A}")
    await page.drawn(**STREAM, ad=A, engagement=True)
    assert page.find("ad-panels").is_displayed()

    # The funnel, drawn as soon as the page says it is: uPlot's canvas, five bars, each labelled with its count —
    # the people of the ad's row of the ads and of the engagement, the API's and the SQL's.
    [row] = [ad for ad in await api(page.base, "/api/ads", **STREAM) if ad["source_id"] == A]
    [engaged] = [ad for ad in (await api(page.base, "/api/engagement", **STREAM))["ads"] if ad["source_id"] == A]
    [reported] = [ad for ad in await ad_report(seeded, **STREAM) if ad["source_id"] == A]
    [by_sql] = [ad for ad in (await engagement_report(seeded, **STREAM))["ads"] if ad["source_id"] == A]
    steps = [
        row["people"],
        engaged["people_wrote_again"],
        engaged["people_replied"],
        engaged["people_reply_read"],
        row["people_converted"],
    ]
    assert steps == [
        reported["people"],
        by_sql["people_wrote_again"],
        by_sql["people_replied"],
        by_sql["people_reply_read"],
        reported["people_converted"],
    ]
    # By hand: P1, P2, P4 and P7 clicked A; P1 and P4 wrote again; OUT1 reached P1 and was read; P1, P2, P4 bought.
    assert steps == [4, 2, 1, 1, 3]
    funnel = page.funnel()
    assert funnel["canvas"]
    assert funnel["drawn"] == "true"
    assert funnel["bars"] == "5"
    assert funnel["counts"] == steps
    assert funnel["steps"] == list(FUNNEL)
    assert funnel["labels"] == ["4", "2", "1", "1", "3"]
    assert page.js("return window.dashboard.funnel.series.length") == 2  # the steps, and one series of counts

    # Its "Wrote again" card: its row of the engagement; nothing in the period before to compare with.
    assert page.wrote_again() == {"people_wrote_again": 2, "wrote_again_rate": 0.5}
    assert page.text("headline-wrote-again-rate") == "50.0% of 4 people"

    # Its creatives: the API's and the SQL's, field by field; the links as text, no image or video loaded.
    creatives = await api(page.base, "/api/creatives", **STREAM, source_id=A)
    assert page.creatives() == creatives == await ad_creatives(seeded, **STREAM, ad=A)
    assert [(creative["headline"], creative["clicks"], creative["people"]) for creative in creatives] == [
        (f"Headline {A}", 4, 4)
    ]
    assert "https://fb.me/x" in page.text("creatives")
    assert page.js("return document.querySelectorAll('img, video, picture, iframe, object, embed').length") == 0
    loaded = page.js("return performance.getEntriesByType('resource').map((entry) => entry.name)")
    assert all(url.startswith(page.base) for url in loaded), loaded

    # Another ad, by its row: the funnel and the creatives follow.
    page.driver.find_element(
        By.CSS_SELECTOR, f'[data-testid="ad-row"][data-source-id="{C}"] [data-testid="ad-clicks"]'
    ).click()
    await page.drawn(**STREAM, ad=C, engagement=True)
    [row_c] = [ad for ad in await ad_report(seeded, **STREAM) if ad["source_id"] == C]
    [engaged_c] = [ad for ad in (await engagement_report(seeded, **STREAM))["ads"] if ad["source_id"] == C]
    assert page.funnel()["counts"] == [
        row_c["people"],
        engaged_c["people_wrote_again"],
        engaged_c["people_replied"],
        engaged_c["people_reply_read"],
        row_c["people_converted"],
    ]
    assert page.creatives() == await ad_creatives(seeded, **STREAM, ad=C)

    # All ads again: no funnel, no creatives.
    page.find("back").click()
    await page.drawn(**STREAM)
    assert not page.find("ad-panels").is_displayed()

    # An ad over a range where it has nothing: every step at 0, no creative.
    page.open(f"?since=2025-10-01&until=2025-10-05&ad={A}")
    await page.drawn(since="2025-10-01", until="2025-10-05", ad=A, engagement=True)
    assert page.funnel()["counts"] == [0] * 5
    assert page.creatives() == []
    assert page.find("creatives-empty").is_displayed()
    assert page.text("headline-wrote-again") == NOTHING
    assert page.severe() == []


async def test_the_sort_and_the_view_survive_the_pages_refreshes(page: Page, seeded: AsyncEngine) -> None:
    page.open(f"?since={STREAM['since']}&until={STREAM['until']}")
    await page.drawn(**STREAM, engagement=True)
    by_api = [row["source_id"] for row in await api(page.base, "/api/ads", **STREAM)]
    assert [row["source_id"] for row in page.ads()] == by_api  # most clicks first, as the API orders them

    page.find("sort-clicks").click()  # most clicks first, as a choice
    page.find("sort-clicks").click()  # then fewest
    fewest = sorted(page.ads(), key=lambda row: row["clicks"])
    assert [row["clicks"] for row in page.ads()] == [row["clicks"] for row in fewest]
    assert (
        page.driver.find_element(By.CSS_SELECTOR, "th:has(> [data-testid='sort-clicks'])").get_attribute("aria-sort")
        == "ascending"
    )

    # The columns joined from the engagement sort too: the most first, then the fewest; an ad without one last.
    for column, value in [
        ("wrote_again_rate", lambda row: row["wrote_again_rate"]),
        ("median_seconds_to_first_reply", lambda row: row["median_seconds_to_first_reply"]),
        ("replied", lambda row: (row["replied"]["people_replied"], row["replied"]["people_reply_read"])),
    ]:
        for direction, descending in (("descending", True), ("ascending", False)):
            page.find(f"sort-{column}").click()
            shown = [value(row) for row in page.ads() if row[column] is not None]
            assert shown == sorted(shown, reverse=descending), (column, direction)
            assert [row[column] is None for row in page.ads()] == sorted(row[column] is None for row in page.ads())
            header = page.driver.find_element(By.CSS_SELECTOR, f"th:has(> [data-testid='sort-{column}'])")
            assert header.get_attribute("aria-sort") == direction
    # By hand: first replies 50 min after B's click, 10 after A's; none after C's.
    page.find("sort-median_seconds_to_first_reply").click()
    assert [row["source_id"] for row in page.ads()] == [B, A, C]
    page.find("sort-median_seconds_to_first_reply").click()
    assert [row["source_id"] for row in page.ads()] == [A, B, C]

    page.find("sort-headline").click()
    headlines = [row["headline"] for row in page.ads()]
    assert headlines == sorted(headlines)

    # The next refreshes redraw it all, and keep the sort.
    before = page.refreshes()
    await eventually(lambda: page.refreshes() >= before + 1, LIVE_S, "the page did not refresh itself")
    assert [row["headline"] for row in page.ads()] == headlines

    # An ad's view stays through a refresh too.
    page.open(f"?since={STREAM['since']}&until={STREAM['until']}&ad={B}")
    await page.drawn(**STREAM, ad=B, engagement=True)
    before = page.refreshes()
    await eventually(lambda: page.refreshes() >= before + 1, LIVE_S, "the page did not refresh itself")
    assert page.js("return document.documentElement.dataset.ad") == B
    assert page.text("view-title") == f"Headline {B}"
    funnel = page.funnel()
    assert funnel["shown"]
    assert funnel["bars"] == "5"
    assert funnel["labels"] == [str(count) for count in funnel["counts"]]
    assert len(page.creatives()) == 1
    assert page.severe() == []


async def test_the_page_draws_the_rest_while_the_engagement_is_slow(page: Page, seeded: AsyncEngine) -> None:
    """/api/engagement, much the slowest at scale, held by the browser: every other part is drawn, the engagement's
    show a placeholder; it is not asked again at each refresh while its answer is awaited; it fills in once it
    answers."""
    summary = await api(page.base, "/api/summary", **STREAM)
    asked = f"{page.base}/api/engagement?since={STREAM['since']}&until={STREAM['until']}"
    before = summary["previous"]
    asked_before = f"{page.base}/api/engagement?since={before['since']}&until={before['until']}"
    waiting = {"text": "\N{HORIZONTAL ELLIPSIS}", "role": "img", "label": "Loading", "color": FAINT}
    cells = [f"ad-{column}" for _ in range(3) for column in ENGAGED_COLUMNS]  # A, B and C's

    async with engagement_held(page.driver) as held:
        page.open(f"?since={STREAM['since']}&until={STREAM['until']}")
        await page.drawn(**STREAM)
        await eventually(lambda: held.asked == [asked], 5, "the page did not ask for the engagement")
        assert page.engagement() == "loading"

        # Everything but the engagement: the API's and the SQL's.
        await check_all_ads(page, seeded, **STREAM, engagement=False)
        assert page.chart()["canvas"]
        overview = await api(page.base, "/api/conversions")
        assert page.meta() == {status: overview["events"][status] for status in STATUSES}
        assert page.text("freshness").startswith("Newest callback stored ")
        assert [row["source_id"] for row in page.ads()] == [A, B, C]

        # The engagement's parts: "…", muted, "Loading" to assistive technology; no figure of theirs.
        assert page.pending() == [{"where": where, **waiting} for where in ["headline-wrote-again", *cells]]
        assert page.text("headline-wrote-again") == "\N{HORIZONTAL ELLIPSIS}"
        assert page.text("headline-wrote-again-rate") == ""
        assert page.wrote_again() == {"people_wrote_again": None, "wrote_again_rate": None}
        assert all(row[column] is None for row in page.ads() for column in ENGAGED_COLUMNS)
        card = page.driver.find_element(By.CSS_SELECTOR, '.card[data-figure="wrote_again"]')
        assert card.get_attribute("aria-busy") == "true"

        # The page refreshes the rest meanwhile, but does not ask for the engagement again while it waits for it.
        refreshes = page.refreshes()
        await eventually(lambda: page.refreshes() >= refreshes + 1, LIVE_S, "the page did not refresh itself")
        assert held.asked == [asked]
        assert page.engagement() == "loading"
        assert len(page.pending()) == 1 + len(cells)

        # An ad's view meanwhile: its figures, days and creatives; its funnel's clicked and converted, its engagement's
        # steps waiting. The range's engagement is still the one asked; the period before's, for its card, once.
        page.driver.find_element(
            By.CSS_SELECTOR, f'[data-testid="ad-row"][data-source-id="{A}"] [data-testid="ad-clicks"]'
        ).click()
        await page.drawn(**STREAM, ad=A)
        [row] = [ad for ad in await api(page.base, "/api/ads", **STREAM) if ad["source_id"] == A]
        assert _shown(page.figures()) == _figures(row)
        assert page.chart()["values"] == await daily_views(seeded, **STREAM, ad=A)
        assert page.creatives() == await api(page.base, "/api/creatives", **STREAM, source_id=A)
        funnel = page.funnel()
        assert funnel["shown"]
        assert funnel["canvas"]
        assert funnel["counts"] == [4, None, None, None, 3]
        assert funnel["labels"] == ["4", *["\N{HORIZONTAL ELLIPSIS}"] * 3, "3"]
        assert page.pending() == [
            {"where": where, **waiting} for where in ["headline-wrote-again", *["funnel-label"] * 3, *cells]
        ]
        await eventually(lambda: len(held.asked) == 2, 5, "the page did not ask for the engagement before")
        assert held.asked == [asked, asked_before]
        assert page.engagement() == "loading"

        # Answered: every placeholder filled in, with the API's and the SQL's figures.
        await held.release()
        await page.drawn(**STREAM, ad=A, engagement=True)
        assert page.pending() == []
        assert page.funnel()["counts"] == [4, 2, 1, 1, 3]
        assert page.funnel()["labels"] == ["4", "2", "1", "1", "3"]
        assert page.wrote_again() == {"people_wrote_again": 2, "wrote_again_rate": 0.5}
        assert card.get_attribute("aria-busy") == "false"
        page.find("back").click()
        await page.drawn(**STREAM, engagement=True)
        await check_all_ads(page, seeded, **STREAM)
        assert page.wrote_again() == {"people_wrote_again": 3, "wrote_again_rate": 0.5}
    assert page.severe() == []


async def test_a_callback_stored_after_the_page_opened_shows_up_without_a_reload(
    page: Page, seeded: AsyncEngine
) -> None:
    page.open()  # the default range: the last 7 days, today included
    today = _today()
    await page.drawn(since=(today - timedelta(days=6)).isoformat(), until=today.isoformat(), engagement=True)
    since, until = page.range()
    clicks = page.figures()["clicks"]
    [row_a] = [row for row in page.ads() if row["source_id"] == A]
    people = (await api(page.base, "/api/engagement", since=since, until=until))["total"]["people"]
    page.js("window.notReloaded = true")

    await store(
        seeded,
        [
            inbound(
                "LIVE",
                _minute(_earlier_today()),
                identity="9999",
                contact="CLIVE",
                conversation="VLIVE",
                metadata=referral(A, "CLLIVE", headline=f"Headline {A}", media_type="image"),
            )
        ],
    )
    stored = time.monotonic()

    def shown() -> bool:
        [row_a_now] = [row for row in page.ads() if row["source_id"] == A]
        return bool(page.figures()["clicks"] == clicks + 1 and row_a_now["clicks"] == row_a["clicks"] + 1)

    await eventually(shown, LIVE_S, "the new click did not show up within 10 s")
    assert time.monotonic() - stored <= LIVE_S
    assert page.js("return window.notReloaded === true"), "the page was reloaded"

    # Every part follows, each as its answer comes: the freshness, the chart, what the people did next (the new
    # person among those who clicked).
    async def followed() -> None:
        assert float(page.find("freshness").get_attribute("data-age-s")) < LIVE_S
        assert page.engagement() == "drawn"
        assert page.text("headline-wrote-again-rate").endswith(f" of {people + 1} people")
        await check_all_ads(page, seeded, since, until)

    await settles(followed, LIVE_S)
    assert page.severe() == []


# A second Sinch app: two clicks on an ad of its own on the stream's days, by two people, one of whom writes again.
TWO = "01EB4BNMPW0AY1E1HAEE2Y2D4Z"
TWOS_AD = "AD-TWO"


async def app_figures(db: AsyncEngine, since: str, until: str, app: str) -> dict[str, Any]:
    [row] = await rows(
        db,
        "SELECT * FROM app_range_report(:since, :until, :app)",
        since=date.fromisoformat(since),
        until=date.fromisoformat(until),
        app=app,
    )
    return _figures(row)


async def test_choosing_an_app_shows_its_ads_alone(page: Page, seeded: AsyncEngine) -> None:
    await store(
        seeded,
        [
            inbound(
                "T1",
                100,
                identity="8001",
                contact="CT1",
                conversation="VT1",
                app=TWO,
                metadata=referral(TWOS_AD, "CLT1", headline="Brand Two's ad", media_type="video"),
            ),
            inbound(
                "T2",
                1500,
                identity="8002",
                contact="CT2",
                conversation="VT2",
                app=TWO,
                metadata=referral(TWOS_AD, None, headline="Brand Two's ad", media_type="video"),
            ),
            inbound("T2b", 1510, identity="8002", contact="CT2", conversation="VT2", app=TWO),
        ],
    )
    async with seeded.begin() as connection:
        await name_apps(connection, Apps({APP: App(APP, "Brand One", ("s",)), TWO: App(TWO, "Brand Two", ("t",))}))

    page.open(f"?since={STREAM['since']}&until={STREAM['until']}")
    await page.drawn(**STREAM, engagement=True)
    await check_all_ads(page, seeded, **STREAM)
    assert page.figures()["clicks"] == 10  # the stream's 8 and app two's 2
    assert page.find("app-picker").is_displayed()
    picker = Select(page.find("app"))
    assert [option.text for option in picker.options] == ["All apps", "Brand One", "Brand Two"]

    picker.select_by_visible_text("Brand Two")
    await eventually(lambda: f"app={TWO}" in page.driver.current_url, 10, "the address did not take the app")
    await page.drawn(**STREAM, engagement=True)
    assert page.text("view-title") == "All ads of Brand Two"
    summary = await api(page.base, "/api/summary", **STREAM, app=TWO)
    assert _shown(page.figures()) == _shown(summary["current"]) == await app_figures(seeded, **STREAM, app=TWO)
    assert {key: page.figures()[key] for key in ("clicks", "people", "new_people", "conversations")} == {
        "clicks": 2,
        "people": 2,
        "new_people": 2,
        "conversations": 2,
    }
    assert [row["source_id"] for row in page.ads()] == [TWOS_AD]
    assert page.wrote_again() == {"people_wrote_again": 1, "wrote_again_rate": 0.5}  # CT2 wrote T2b
    daily = await api(page.base, "/api/daily", **STREAM, app=TWO)
    [by_sql] = await rows(
        seeded,
        "SELECT array_agg(clicks ORDER BY day) AS clicks FROM app_daily(:since, :until, :app)",
        since=DAY0,
        until=DAY2,
        app=TWO,
    )
    assert page.chart()["values"][0] == [day["clicks"] for day in daily] == [1, 1, 0]
    assert [value for value in page.chart()["values"][0] if value] == by_sql["clicks"]
    assert page.find("download-csv").get_attribute("href").endswith(f"&app={TWO}")

    # An ad of the app, and back to the app's ads; then all apps again.
    page.driver.find_element(
        By.CSS_SELECTOR, f'[data-testid="ad-row"][data-source-id="{TWOS_AD}"] [data-testid="ad-clicks"]'
    ).click()
    await page.drawn(**STREAM, ad=TWOS_AD)
    assert page.text("back") == "\N{LEFTWARDS ARROW} All ads of Brand Two"
    page.find("back").click()
    await page.drawn(**STREAM, engagement=True)
    assert page.text("view-title") == "All ads of Brand Two"
    Select(page.find("app")).select_by_visible_text("All apps")
    await eventually(lambda: "app=" not in page.driver.current_url, 10, "the address kept the app")
    await page.drawn(**STREAM, engagement=True)
    assert page.text("view-title") == "All ads"
    await check_all_ads(page, seeded, **STREAM)
    assert page.severe() == []


async def test_an_apps_parked_setup_and_the_unconfigured_events_are_shown(page: Page, seeded: AsyncEngine) -> None:
    async with seeded.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO conversion_app_state (app_id, parked_reason, parked_code, parked_at) "
                "VALUES (:two, 'Invalid OAuth access token', 190, now())"
            ),
            {"two": TWO},
        )
        await name_apps(connection, Apps({TWO: App(TWO, "Brand Two", ("t",))}))
        await connection.execute(text("UPDATE conversion_events SET status = 'unconfigured' WHERE event_id = 'K15'"))
    page.open(f"?since={STREAM['since']}&until={STREAM['until']}")
    await page.drawn(**STREAM)
    assert page.find("meta-parked-apps").is_displayed()
    [shown] = page.driver.find_elements(By.CSS_SELECTOR, '[data-testid="meta-parked-app"]')
    assert shown.get_attribute("data-app-id") == TWO
    assert shown.text == "Brand Two: Invalid OAuth access token (code 190)"
    assert page.find("meta-unconfigured-line").is_displayed()
    assert page.value("meta-unconfigured") == "1"
    assert page.severe() == []


async def test_an_app_that_is_not_a_sinch_app_id_is_refused(page: Page) -> None:
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.get(f"{page.base}/api/summary", params={"app": "nothing"}) as response,
    ):
        assert response.status == 400
        assert "Sinch app id" in (await response.json())["detail"]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("apps", [1, 2])
async def test_the_screenshot_script_saves_both_views(
    dashboard: str, seeded: AsyncEngine, tmp_path: Path, browser: WebDriver, apps: int
) -> None:
    """The page of all ads and an ad's; and with two apps to choose from, one app's too."""
    if apps == 2:
        await store(seeded, [inbound("T1", 100, identity="8001", contact="CT1", app=TWO, metadata=referral(TWOS_AD))])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "docs" / "screenshots.py"),
        "--url",
        dashboard,
        "--user",
        f"{USER}:{PASSWORD}",
        "--since",
        STREAM["since"],
        "--until",
        STREAM["until"],
        "--out",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode == 0, err.decode()
    names = ("dashboard.png", "dashboard-ad.png", "dashboard-app.png")[: 2 if apps == 1 else 3]
    assert sorted(path.name for path in tmp_path.glob("*.png")) == sorted(names)  # noqa: ASYNC240 (a test's folder)
    for name in names:
        path = tmp_path / name
        assert path.stat().st_size > 10_000, f"{name} is nearly empty"
        width, height = _png_size(path)
        assert width == WIDTH
        assert height >= HEIGHT  # the whole page, from the top: the ads table, and in an ad's view its funnel
        assert f"saved {path}" in out.decode()
    assert (tmp_path / "dashboard.png").read_bytes() != (tmp_path / "dashboard-ad.png").read_bytes()


async def test_without_credentials_the_page_and_its_files_are_refused(dashboard: str) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/static/dashboard.js", "/static/vendor/uplot/uPlot.iife.min.js", "/api/summary"):
            async with session.get(f"{dashboard}{path}") as response:
                assert response.status == 401, path
        async with session.get(f"{dashboard}/static/dashboard.js", headers=AUTH) as response:
            assert response.status == 200
            assert "javascript" in response.headers["Content-Type"]
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
