"""Dashboard benchmark: every ``/api`` endpoint of ``ctwa dashboard`` over ``bench/analytics.py``'s data (1,000,000
clicks, 5,000,000 messages, 50,000 conversion events, and with ``--replies`` the business's replies) for its 30-day
range (the creatives those of its most clicked ad) — the server's own time per answer, from
its ``Server-Timing`` header — and, where Chromium and Selenium are installed, the page fully drawn in headless
Chromium.

    python bench/analytics.py --replies 1000000 --keep   # load the data once (ctwa_bench_analytics): minutes
    python bench/dashboard.py [--repeat 20]              # then measure the dashboard on it

The dashboard runs in this process, as the read-only role ``ctwa migrate`` makes (so the grants are part of what is
measured), on loopback without users. The page counts as drawn when it marks itself so (``data-state="drawn"`` on
``<html>``: every part but the engagement figures, which it draws when ``/api/engagement`` answers,
``data-engagement="drawn"``); both moments are measured.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from sqlalchemy import make_url

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "docs"))  # screenshots.py: the headless Chromium of the docs
from analytics import APP_ID, SERVER_URL, SINCE, UNTIL

from ingest.settings import Settings
from workers.commands.migrate import grant_read_role
from workers.dashboard.app import create_app

DATABASE = "ctwa_bench_analytics"
READ_ROLE = "ctwa_bench_read"
ENDPOINTS = {
    "/api/summary": {"since": SINCE.isoformat(), "until": UNTIL.isoformat()},
    "/api/ads": {"since": SINCE.isoformat(), "until": UNTIL.isoformat()},
    "/api/daily": {"since": SINCE.isoformat(), "until": UNTIL.isoformat()},
    "/api/engagement": {"since": SINCE.isoformat(), "until": UNTIL.isoformat()},
    "/api/creatives": {"since": SINCE.isoformat(), "until": UNTIL.isoformat(), "source_id": "1202000001"},
    "/api/conversions": {},
    "/api/freshness": {},
}
# The same range with the data's one app chosen: the figures counted from the app's clicks (migration 0010) rather than
# read from the rollups, over the same million clicks.
for _path in ("/api/summary", "/api/ads", "/api/daily", "/api/engagement"):
    ENDPOINTS[f"{_path}?app"] = ENDPOINTS[_path] | {"app": APP_ID}


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def measure_api(base: str, repeat: int) -> dict[str, list[float]]:
    """Server milliseconds per endpoint, ``repeat`` answers each, in turn (after one warm-up round)."""
    times: dict[str, list[float]] = {path: [] for path in ENDPOINTS}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        for round_number in range(repeat + 1):
            for path, query in ENDPOINTS.items():
                async with session.get(base + path.split("?")[0], params=query) as response:
                    assert response.status == 200, await response.text()
                    await response.read()
                    server = float(response.headers["Server-Timing"].split("dur=")[1])
                if round_number:
                    times[path].append(server)
    return times


def measure_page(base: str, repeat: int) -> list[tuple[float, float]] | None:
    """Seconds from navigation to the page marking itself drawn, and its engagement figures too, in headless
    Chromium; None without a browser."""
    try:
        from screenshots import chromium
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError:
        return None
    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        return None
    seconds: list[tuple[float, float]] = []
    with chromium(None) as driver:
        url = f"{base}/?since={SINCE}&until={UNTIL}"
        for _ in range(repeat):
            started = time.perf_counter()
            driver.get(url)
            WebDriverWait(driver, 60).until(
                lambda d: d.execute_script("return document.documentElement.dataset.state") == "drawn"
            )
            drawn = time.perf_counter() - started
            WebDriverWait(driver, 600).until(
                lambda d: d.execute_script("return document.documentElement.dataset.engagement") == "drawn"
            )
            seconds.append((drawn, time.perf_counter() - started))
    return seconds


async def main_async(args: argparse.Namespace) -> None:
    owner = make_url(SERVER_URL).set(database=DATABASE)
    read = owner.set(username=READ_ROLE, password="bench-read")
    await grant_read_role(owner.render_as_string(False), read.render_as_string(False))
    port = int(args.port)
    settings = Settings(
        database_url=owner.render_as_string(False),
        dashboard_database_url=read.render_as_string(False),
        dashboard_port=port,
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    try:
        api = await measure_api(base, args.repeat)
        page = await asyncio.to_thread(measure_page, base, max(3, args.repeat // 4)) if args.page else None
    finally:
        await runner.cleanup()

    print(f"\n{platform.node()}: {os.cpu_count()} cores, range {SINCE} .. {UNTIL}, {args.repeat} answers each\n")
    print("| endpoint | server p50 | server p95 | slowest |")
    print("|---|---:|---:|---:|")
    for path, values in api.items():
        cells = [f"{_percentile(values, share):,.0f} ms" for share in (0.5, 0.95, 1.0)]
        print(f"| `{path}` | {' | '.join(cells)} |")
    if page is None:
        print("\npage: not measured (--no-page, or no selenium, chromium and chromedriver)")
    else:
        drawn, engaged = [first for first, _ in page], [second for _, second in page]
        print(
            f"\npage drawn in headless Chromium: median {statistics.median(drawn) * 1000:,.0f} ms, slowest "
            f"{max(drawn) * 1000:,.0f} ms; its engagement figures too: median {statistics.median(engaged) * 1000:,.0f}"
            f" ms ({len(page)} loads)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--no-page", dest="page", action="store_false", help="the API only")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
