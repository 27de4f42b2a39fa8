"""The conversions fault run: `ctwa conversions send` processes SIGKILLed mid-request and restarted, two side by side,
their Postgres backends terminated — against a real HTTP server playing Meta. Every attributable event is counted by
Meta exactly once; those of the killed request stay ``unconfirmed`` (Meta counted them; the policy is never to send
them again); no unattributed, expired or erased event is sent."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from callbacks import T0, contact_event, inbound, referral
from meta import FakeMeta, Slow
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import rows, store

NOW = datetime.now(UTC)
PEOPLE = 40


def ago(hours: float) -> float:
    return (NOW - timedelta(hours=hours) - T0).total_seconds() / 60


class SenderProcess:
    """``ctwa conversions send`` in a process of its own."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self._env = env
        self._log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> SenderProcess:
        with self._log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "workers", "conversions", "send", env=self._env, stdout=log, stderr=log
            )
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)


@pytest.fixture
async def recorded(db: AsyncEngine) -> AsyncEngine:
    """PEOPLE contacts who clicked an ad an hour or two ago, one contact deleted after clicking, events for all of
    them (and some explicit click ids), events of strangers without a click, and events too old to send."""
    callbacks = [
        inbound(f"M{n}", ago(2 + n / 100), identity=f"9{n:04}", contact=f"C{n}", metadata=referral("A", f"CLID-{n}"))
        for n in range(PEOPLE)
    ]
    callbacks.append(contact_event("delete", "C0", ago(0.5), name="Ann", identities=["90000"]))
    await store(db, callbacks)
    async with db.begin() as connection:
        await connection.execute(
            text(
                """
                INSERT INTO conversion_events (event_id, event_name, event_time, contact_id, ctwa_clid, channel,
                                               identity, value, currency)
                SELECT 'person-' || n || '-' || k, 'Purchase', now() - interval '1 hour', 'C' || n, NULL, NULL, NULL,
                       k * 10, 'EUR'
                FROM generate_series(0, :people - 1) n, generate_series(1, 10) k
                UNION ALL
                SELECT 'explicit-' || k, 'OrderCreated', now() - interval '30 minutes', NULL, 'CLID-X' || k, NULL,
                       NULL, NULL, NULL
                FROM generate_series(1, 100) k
                UNION ALL
                SELECT 'stranger-' || k, 'Purchase', now() - interval '1 hour', NULL, NULL, 'WHATSAPP',
                       '1555000' || k, NULL, NULL
                FROM generate_series(1, 20) k
                UNION ALL
                SELECT 'old-' || k, 'Purchase', now() - interval '8 days', 'C1', NULL, NULL, NULL, NULL, NULL
                FROM generate_series(1, 20) k
                """
            ),
            {"people": PEOPLE},
        )
    return db


async def _terminate_backends(db: AsyncEngine) -> int:
    async with db.begin() as connection:
        return len(
            (
                await connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'ctwa-conversions' AND datname = current_database()"
                    )
                )
            ).all()
        )


async def _settled(db: AsyncEngine) -> bool:
    [left] = await rows(db, "SELECT count(*) AS n FROM conversion_events WHERE status IN ('pending', 'sending')")
    return left["n"] == 0


async def test_senders_killed_restarted_and_cut_off_from_postgres_count_every_event_once(
    recorded: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    db = recorded
    async with FakeMeta() as meta:
        env = {
            **os.environ,
            "CTWA_DATABASE_URL": database_url,
            "CTWA_META_GRAPH_URL": meta.url,
            "CTWA_META_API_VERSION": meta.version,
            "CTWA_META_DATASET_ID": meta.dataset_id,
            "CTWA_META_ACCESS_TOKEN": meta.token,
            "CTWA_META_WABA_ID": meta.waba_id,
            "CTWA_META_TIMEOUT_S": "10",
            "CTWA_CONVERSIONS_LEASE_S": "12",
            "CTWA_CONVERSIONS_BATCH_SIZE": "25",
            "CTWA_CONVERSIONS_POLL_S": "0.1",
            "CTWA_CONVERSIONS_BACKOFF_S": "0.05",
            "CTWA_CONVERSIONS_BACKOFF_MAX_S": "0.5",
            "CTWA_CONVERSIONS_METRICS_PORT": "0",
            "CTWA_LOG_FORMAT": "json",
        }
        log = tmp_path / "senders.log"

        # The first request hangs: Meta has it (and counts it), its sender is SIGKILLed before the answer.
        meta.then(Slow(8.0))
        first = await SenderProcess(env, log).start()
        await meta.wait_requests(1, timeout=30)
        first.kill()
        await first.stop()
        killed = {event["event_id"] for event in meta.requests[0].events}
        assert 0 < len(killed) <= 25  # a claim of 25 (an erased person's events among them are not sent)

        # Restarted, and a second sender beside it; every request takes a while, so both have some in flight.
        meta.always(Slow(0.05))
        senders = [
            await SenderProcess(env | {"CTWA_META_PARTNER_AGENT": name}, log).start() for name in ("first", "second")
        ]
        terminated = 0
        for _ in range(600):
            if len(meta.requests) >= 4 and terminated < 3:
                terminated += await _terminate_backends(db)
                await asyncio.sleep(0.3)
            if await _settled(db) and len(meta.requests) > 4:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"the senders never settled every event; their log:\n{log.read_text()[-3000:]}")
        for sender in senders:
            assert await sender.stop() == 0, log.read_text()[-3000:]

    assert terminated >= 1
    # Both worked side by side (each names itself as partner agent) …
    assert {request.partner_agent for request in meta.requests[1:]} == {"first", "second"}
    statuses = {
        row["event_id"]: row["status"] for row in await rows(db, "SELECT event_id, status FROM conversion_events")
    }
    attributable = {
        event
        for event in statuses
        if event.startswith("explicit-") or (event.startswith("person-") and not event.startswith("person-0-"))
    }
    # Meta counted every attributable event, each once — the killed request's too (it reached Meta).
    assert set(meta.counted) == attributable
    assert set(meta.counted.values()) == {1}
    # … and those are unconfirmed: never sent again, by the policy for a request whose answer was lost.
    assert {event for event, status in statuses.items() if status == "unconfirmed"} == killed
    assert {event for event, status in statuses.items() if status == "sent"} == attributable - killed
    assert {statuses[event] for event in statuses if event.startswith("person-0-")} == {"erased"}
    assert {statuses[event] for event in statuses if event.startswith("stranger-")} == {"unattributed"}
    assert {statuses[event] for event in statuses if event.startswith("old-")} == {"expired"}
