"""The conversions benchmark (bench/conversions.py) runs end to end on a small backlog: the sender, the database
alone and the reference each drain it, the script's own checks (every event counted once by the fake Meta, every
event ``sent``) passing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import make_url

SCRIPT = Path(__file__).parents[2] / "bench" / "conversions.py"


def test_the_benchmark_drains_a_small_backlog_three_ways(database_url: str) -> None:
    # The fixture proves Postgres reachable (or skips loudly); the script makes and drops databases of its own there.
    server = make_url(database_url).set(database="postgres").render_as_string(hide_password=False)
    env = {name: value for name, value in os.environ.items() if not name.startswith("CTWA_")}
    env["CTWA_DATABASE_URL"] = server

    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--count", "300", "--rounds", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert [row.split(" | ")[0] for row in rows[1:]] == [
        "| `ctwa conversions send --drain`",
        "| database alone: the sender, Meta answering at once (`bench/database_only_sender.py`)",
        "| reference: bare aiohttp loop, no database (`bench/reference_meta_client.py`)",
    ]
    assert (
        "Meta counted every event once, and every event ended `sent`, attributed to its latest click" in result.stdout
    )
