"""The HTTP side alone, a reference for bench/conversions.py: a bare aiohttp loop that posts conversion events to
Meta's events endpoint, 1,000 to a request and one request at a time, as ``ctwa conversions send`` does — with no
database: the events are built before the clock starts, each request only encodes its events, posts them and reads
the answer. What it reaches is about the most any sender can send through one connection to the same server.

Usage: python bench/reference_meta_client.py URL TOKEN WABA_ID COUNT [BATCH]
Prints one JSON line: {"first": epoch s of the first request, "done": epoch s of the last answer, "counted": n}.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from ingest.eventloop import new_event_loop
from workers.conversions.meta import Event


def events(count: int, waba_id: str) -> list[dict[str, Any]]:
    """``count`` events as the sender sends them (``Event.payload``): Purchases an hour old, a value, an order id."""
    at = datetime.now(UTC) - timedelta(hours=1)
    return [
        Event(
            n, f"reference-{n}", "Purchase", at, f"AR{n:050d}", Decimal("59.90"), "EUR", {"order_id": str(n)}
        ).payload(waba_id)
        for n in range(count)
    ]


async def post(url: str, token: str, payloads: list[dict[str, Any]], batch: int) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    counted = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        first = time.time()
        for start in range(0, len(payloads), batch):
            part = payloads[start : start + batch]
            async with session.post(url, data=orjson.dumps({"data": part}), headers=headers) as response:
                answer = orjson.loads(await response.read())
            if response.status != 200 or answer.get("events_received") != len(part):
                raise RuntimeError(f"HTTP {response.status}: {answer}")
            counted += len(part)
        done = time.time()
    return {"first": first, "done": done, "counted": counted}


def main() -> None:
    url, token, waba_id, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
    payloads = events(count, waba_id)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        print(orjson.dumps(runner.run(post(url, token, payloads, batch))).decode(), flush=True)


if __name__ == "__main__":
    main()
