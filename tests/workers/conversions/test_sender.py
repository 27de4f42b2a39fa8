"""The conversions sender against a real HTTP server that plays Meta (tests/meta.py) and the real Postgres."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from conversion_records import eraser_of, record
from meta import Drop, FakeMeta, Short, Slow, server_error, throttled, too_many_requests, transient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import free_port, rows

from ingest.settings import Settings
from workers.conversions.routes import routes_of
from workers.conversions.sender import Sender
from workers.runtime.database import create_engine

NOW = datetime.now(UTC)


@pytest.fixture
async def meta() -> AsyncIterator[FakeMeta]:
    async with FakeMeta() as fake:
        yield fake


@pytest.fixture
def sender_settings(db: AsyncEngine, database_url: str, meta: FakeMeta) -> Settings:
    return meta.settings(
        database_url,
        meta_timeout_s=1.0,
        conversions_lease_s=2.0,
        conversions_poll_s=0.05,
        conversions_backoff_s=0.02,
        conversions_backoff_max_s=0.1,
        conversions_metrics_port=0,
    )


async def record_many(db: AsyncEngine, count: int, *, prefix: str = "e", **columns: Any) -> list[str]:
    """``count`` events an hour old, each with an explicit ctwa_clid of its own unless ``columns`` say otherwise."""
    ids = [f"{prefix}{number}" for number in range(count)]
    for event_id in ids:
        await record(db, event_id, NOW - timedelta(hours=1), **{"ctwa_clid": f"CLID-{event_id}", **columns})
    return ids


async def until(condition: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Return as soon as ``condition()`` holds (checked every 10 ms); fail, naming ``what``, after ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.01)


def metric(sender: Sender, name: str, **labels: str) -> float:
    """A sample of the sender's metrics, as /metrics shows it (0 before it is first counted)."""
    return sender.metrics.registry.get_sample_value(name, labels) or 0.0


async def send(settings: Settings, *, drain: bool = True) -> tuple[int, Sender]:
    engine = create_engine(settings.database_url, application_name="ctwa-conversions-test")
    try:
        async with routes_of(settings, None) as routes:
            sender = Sender(engine, routes, await eraser_of(engine), settings, drain=drain)
            status = await asyncio.wait_for(sender.run(), 30)
    finally:
        await engine.dispose()
    return status, sender


async def statuses(db: AsyncEngine) -> dict[str, str]:
    return {row["event_id"]: row["status"] for row in await rows(db, "SELECT event_id, status FROM conversion_events")}


async def test_events_are_sent_once_as_meta_documents_them(
    db: AsyncEngine, meta: FakeMeta, sender_settings: Settings
) -> None:
    await record_many(db, 2, value=59.9, currency="EUR", custom_data={"order_id": "42"})
    await record_many(db, 1, prefix="lead", event_name="LeadSubmitted")
    settings = sender_settings.model_copy(update={"meta_partner_agent": "ctwa", "meta_test_event_code": "TEST1"})

    status, sender = await send(settings)

    assert status == 0
    assert meta.counted == {"e0": 1, "e1": 1, "lead0": 1}
    [request] = meta.requests
    assert request.authorization == f"Bearer {meta.token}"
    assert request.body is not None
    assert (request.body["partner_agent"], request.body["test_event_code"]) == ("ctwa", "TEST1")
    by_id = {event["event_id"]: event for event in request.events}
    assert by_id["e0"] == {
        "event_name": "Purchase",
        "event_time": int((NOW - timedelta(hours=1)).timestamp()),
        "event_id": "e0",
        "action_source": "business_messaging",
        "messaging_channel": "whatsapp",
        "user_data": {"whatsapp_business_account_id": meta.waba_id, "ctwa_clid": "CLID-e0"},
        "custom_data": {"order_id": "42", "currency": "EUR", "value": 59.9},
    }
    assert "custom_data" not in by_id["lead0"]  # no value is left out, not sent as 0
    sent = await rows(db, "SELECT status, sent_at, fbtrace_id, attempts FROM conversion_events")
    assert all(row["status"] == "sent" and row["sent_at"] and row["fbtrace_id"] for row in sent)
    assert {row["attempts"] for row in sent} == {1}
    assert metric(sender, "ctwa_conversions_sent_total", app="default") == 3

    await send(sender_settings)  # nothing left: no request
    assert len(meta.requests) == 1


async def test_a_request_holds_at_most_1000_events(db: AsyncEngine, meta: FakeMeta, sender_settings: Settings) -> None:
    async with db.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO conversion_events (event_id, event_name, event_time, ctwa_clid) "
                "SELECT 'e' || n, 'Purchase', now() - interval '1 hour', 'CLID-' || n FROM generate_series(1, 2500) n"
            )
        )
    await send(sender_settings)
    assert [len(request.events) for request in meta.requests] == [1000, 1000, 500]
    assert len(meta.counted) == 2500
    assert set(meta.counted.values()) == {1}


async def test_metas_trouble_and_throttles_are_retried_slower_and_nothing_fails(
    db: AsyncEngine, meta: FakeMeta, sender_settings: Settings
) -> None:
    events = await record_many(db, 8)
    meta.then(transient(), server_error(502), Short(0), too_many_requests(), throttled())

    await send(sender_settings.model_copy(update={"conversions_batch_size": 8}))

    assert meta.counted == dict.fromkeys(events, 1)
    assert set((await statuses(db)).values()) == {"sent"}
    sizes = [len(request.events) for request in meta.requests]
    assert sizes[:4] == [8, 8, 8, 8]
    assert sizes[4:6] == [4, 2]  # slower: each throttle (the 429, then Meta's code 4) halves the request
    assert sum(sizes[5:]) == 8


async def test_an_event_meta_refuses_is_found_by_halving_and_the_rest_is_sent(
    db: AsyncEngine, meta: FakeMeta, sender_settings: Settings
) -> None:
    events = await record_many(db, 8)
    meta.invalid_clids = frozenset({"CLID-e5"})

    await send(sender_settings)

    assert meta.counted == {event: 1 for event in events if event != "e5"}
    [failed] = await rows(
        db,
        "SELECT event_id, status, error_code, error_subcode, last_error FROM conversion_events WHERE status <> 'sent'",
    )
    assert (failed["event_id"], failed["status"], failed["error_code"], failed["error_subcode"]) == (
        "e5",
        "failed",
        100,
        2804087,
    )
    assert failed["last_error"]
    assert len(meta.requests) <= 1 + 2 * 3  # halving: log2(8) rounds of two


async def test_a_refused_configuration_parks_every_event_pending_until_restarted_with_it_fixed(
    db: AsyncEngine,
    meta: FakeMeta,
    sender_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    events = await record_many(db, 3)
    meta.token = "a-new-token"
    caplog.set_level(logging.DEBUG)

    engine = create_engine(sender_settings.database_url)
    port = free_port()
    async with routes_of(sender_settings, None) as routes:
        sender = Sender(engine, routes, await eraser_of(engine), sender_settings)
        task = asyncio.create_task(sender.run())
        async with AsyncExitStack() as stack:
            await sender.serve(stack, "127.0.0.1", port)
            await until(lambda: bool(sender.parked), "the sender parked")
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as response:
                health = (response.status, await response.json())
                async with http.get(f"http://127.0.0.1:{port}/metrics") as metrics_response:
                    metrics = await metrics_response.text()
        # Past the point of sending again: three turns parked, two of them after waking from the poll interval
        # (or a second request, which the assertion below reports).
        await until(
            lambda: metric(sender, "ctwa_conversions_waits_total", state="parked") >= 3 or len(meta.requests) > 1,
            "three turns of the loop while parked",
        )
        sender.stop()
        await task
    await engine.dispose()

    assert health[0] == 503
    assert health[1]["status"] == "parked"
    assert 'ctwa_conversions_parked{app="default"} 1.0' in metrics
    assert len(meta.requests) == 1
    assert set((await statuses(db)).values()) == {"pending"}
    [state] = await rows(db, "SELECT parked_reason, parked_code FROM conversion_sender")
    assert state["parked_code"] == 190
    assert sender_settings.meta_access_token not in caplog.text + metrics + json.dumps(health)

    status, _ = await send(sender_settings)  # restarted, still the old token: parked again, nothing sent
    assert status == 1

    status, _ = await send(sender_settings.model_copy(update={"meta_access_token": "a-new-token"}))
    assert status == 0
    assert meta.counted == dict.fromkeys(events, 1)
    [state] = await rows(db, "SELECT parked_reason FROM conversion_sender")
    assert state["parked_reason"] is None


async def test_an_answer_never_received_leaves_the_events_unconfirmed_and_never_resent(
    db: AsyncEngine, meta: FakeMeta, sender_settings: Settings
) -> None:
    dropped = await record_many(db, 2, prefix="dropped")
    meta.then(Drop(counted=True))
    await send(sender_settings)
    slow = await record_many(db, 2, prefix="slow")
    meta.then(Slow(3.0))  # longer than CTWA_META_TIMEOUT_S
    await send(sender_settings)
    partly = await record_many(db, 2, prefix="partly")
    meta.then(Short(1))
    await send(sender_settings)
    await send(sender_settings)  # and again: nothing goes out twice

    assert len(meta.requests) == 3
    state = await statuses(db)
    assert state == dict.fromkeys(dropped + slow + partly, "unconfirmed")
    assert meta.counted == {**dict.fromkeys(dropped + slow, 1), "partly0": 1}
    reasons = await rows(db, "SELECT DISTINCT last_error FROM conversion_events")
    assert all(row["last_error"] for row in reasons)


async def test_a_request_that_never_left_is_sent_again(
    db: AsyncEngine, meta: FakeMeta, sender_settings: Settings
) -> None:
    events = await record_many(db, 2)
    nowhere = sender_settings.model_copy(update={"meta_graph_url": f"http://127.0.0.1:{free_port()}"})
    engine = create_engine(nowhere.database_url)
    async with routes_of(nowhere, None) as routes:
        sender = Sender(engine, routes, await eraser_of(engine), nowhere)
        task = asyncio.create_task(sender.run())
        await until(
            lambda: metric(sender, "ctwa_conversions_requests_total", outcome="retry", app="default") >= 2,
            "two requests retried",
        )
        sender.stop()
        await task
    await engine.dispose()
    refused = await rows(db, "SELECT status, attempts, last_error FROM conversion_events")
    assert {row["status"] for row in refused} == {"pending"}
    assert all(row["attempts"] >= 1 and "no connection" in row["last_error"] for row in refused)

    await send(sender_settings)
    assert meta.counted == dict.fromkeys(events, 1)
