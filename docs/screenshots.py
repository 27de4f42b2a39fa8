"""Screenshots of a running dashboard, for the docs: ``dashboard.png`` (all ads), ``dashboard-ad.png`` (one ad's
view, with its funnel and creatives) and, when there are apps to choose from, ``dashboard-app.png`` (one app's ads),
each the whole page at 1280 pixels wide (at least 900 high), taken in headless Chromium (Debian's ``chromium`` and
``chromium-driver``, through Selenium).

    python docs/screenshots.py --url http://127.0.0.1:8081 --user anna:a-long-password
    python docs/screenshots.py --since 2025-11-01 --until 2025-11-30 --ad 120000A --out /tmp/shots

Without ``--user``, the first pair of ``CTWA_DASHBOARD_USERS``; without ``--ad``, the ad with most clicks; without
``--app``, the first app of the choice; without a range, the dashboard's default (the last 7 days). Exits non-zero,
saying why, if the page does not draw or shows an error.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

WIDTH, HEIGHT = 1280, 900
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
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
    "--hide-scrollbars",
)
TIMEOUT_S = 30


class NotDrawn(Exception):
    """The page did not draw, or drew an error."""


@contextmanager
def chromium(user: str | None, binary: str = CHROMIUM, driver_path: str = CHROMEDRIVER) -> Iterator[WebDriver]:
    """Headless Chromium with a fresh profile and a 1280x900 viewport, sending ``user`` (``name:password``) as HTTP
    Basic with every request; the driver is given by path, so that Selenium fetches nothing."""
    profile = tempfile.mkdtemp(prefix="ctwa-screenshots-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*FLAGS, f"--window-size={WIDTH},{HEIGHT}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
        )
        if user:
            driver.execute_cdp_cmd("Network.enable", {})
            token = base64.b64encode(user.encode()).decode()
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_drawn(driver: WebDriver, ad: str | None = None) -> None:
    """Until the page says it is drawn, its engagement figures too (for ``ad``'s view, if given); NotDrawn on an error
    or after TIMEOUT_S."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        state, engagement, shown = driver.execute_script(
            "const root = document.documentElement; "
            "return [root.dataset.state, root.dataset.engagement, root.dataset.ad || null]"
        )
        if "error" in (state, engagement):
            raise NotDrawn(driver.find_element(By.CSS_SELECTOR, '[data-testid="error"]').text)
        if state == engagement == "drawn" and (ad is None or shown == ad):
            return
        time.sleep(0.1)
    raise NotDrawn(f"the page did not draw within {TIMEOUT_S} s")


def capture(driver: WebDriver, path: Path) -> None:
    """The whole page, from its top, as a PNG: as wide as the viewport, as high as the page (at least the viewport)."""
    driver.execute_script("window.scrollTo(0, 0)")
    height = max(HEIGHT, int(driver.execute_script("return document.documentElement.scrollHeight")))
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1},
        },
    )
    path.write_bytes(base64.b64decode(shot["data"]))


def take(
    url: str,
    out: Path,
    user: str | None,
    since: str | None = None,
    until: str | None = None,
    ad: str | None = None,
    log: Callable[[str], None] = print,
    app: str | None = None,
) -> list[Path]:
    """The screenshots of the dashboard at ``url``, into ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    query = urlencode({name: value for name, value in (("since", since), ("until", until)) if value})
    page = url.rstrip("/") + "/" + (f"?{query}" if query else "")
    saved = []
    with chromium(user) as driver:
        driver.get(page)
        wait_drawn(driver)
        saved.append(out / "dashboard.png")
        capture(driver, saved[-1])
        log(f"saved {saved[-1]}")
        if ad is None:
            rows = driver.find_elements(By.CSS_SELECTOR, '[data-testid="ad-row"][data-source-id]')
            if not rows:
                raise NotDrawn("no ad in the range: nothing to show in an ad's view")
            ad = rows[0].get_attribute("data-source-id")
        row = driver.find_element(By.CSS_SELECTOR, f'[data-testid="ad-row"][data-source-id="{ad}"]')
        row.click()
        wait_drawn(driver, ad)
        saved.append(out / "dashboard-ad.png")
        capture(driver, saved[-1])
        log(f"saved {saved[-1]}")
        if driver.find_element(By.CSS_SELECTOR, '[data-testid="app-picker"]').is_displayed():
            picker = Select(driver.find_element(By.CSS_SELECTOR, '[data-testid="app"]'))
            apps = [option.get_attribute("value") for option in picker.options if option.get_attribute("value")]
            picker.select_by_value(app or apps[0])
            wait_drawn(driver)
            saved.append(out / "dashboard-app.png")
            capture(driver, saved[-1])
            log(f"saved {saved[-1]}")
    return saved


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8081", help="the dashboard (default: %(default)s)")
    parser.add_argument("--user", help="name:password (default: CTWA_DASHBOARD_USERS's first pair)")
    parser.add_argument("--since", help="first UTC day, YYYY-MM-DD")
    parser.add_argument("--until", help="last UTC day, YYYY-MM-DD")
    parser.add_argument("--ad", help="the ad of dashboard-ad.png (default: the one with most clicks)")
    parser.add_argument("--app", help="the app of dashboard-app.png (default: the first of the choice)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "img", help="default: %(default)s")
    args = parser.parse_args(argv)
    user = args.user or next(iter(os.environ.get("CTWA_DASHBOARD_USERS", "").split(",")), "").strip() or None
    try:
        take(args.url, args.out, user, args.since, args.until, args.ad, app=args.app)
    except NotDrawn as error:
        print(f"screenshots: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
