"""Operating it: ctwa dlq (list, show, redrive, purge), ctwa replay, ctwa prune, and the queue and lag metrics."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta

import aio_pika
from aio_pika.abc import AbstractConnection
from callbacks import contact_event
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import AMQP_URL, enqueue, fixture_bytes, inbound_bodies, snapshot, store, take_all

from ingest.settings import Settings
from ingest.topology import Topology
from workers.runtime.consumer import HISTORY_HEADER
from workers.runtime.worker import Worker
from workers.tools.simulator import scenario

NUL = b'{"message": {"id": "01KNUL", "contact_message": {"text_message": {"text": "a\\u0000b"}}}}'


async def ctwa(*args: str, settings: Settings, expect: int = 0) -> tuple[str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        *args,
        env={
            **os.environ,
            "CTWA_AMQP_URL": settings.amqp_url,
            "CTWA_AMQP_PREFIX": settings.amqp_prefix,
            "CTWA_DATABASE_URL": settings.database_url,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == expect, err.decode()
    return out.decode(), err.decode()


async def drain(settings: Settings) -> Worker:
    worker = Worker(settings, drain=True)
    await asyncio.wait_for(worker.run(), 120)
    return worker


async def _dead_letters(settings: Settings, amqp: AbstractConnection, topology: Topology) -> None:
    """Three dead letters: two the worker refused, one RabbitMQ gave up on after its delivery limit."""
    await enqueue(AMQP_URL, topology, inbound_bodies(5))
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(topology.exchange)
        for body in (b"not json", NUL):
            await exchange.publish(aio_pika.Message(body, message_id="hand-published"), "message.inbound")
    await drain(settings)
    await enqueue(AMQP_URL, topology, [fixture_bytes("03_delivery_delivered.json")])
    async with amqp.channel() as channel:
        queue = await channel.get_queue(topology.queue)
        for _ in range(settings.delivery_limit + 1):
            message = await queue.get(timeout=5)
            await message.nack(requeue=True)


async def test_dlq_list_show_redrive_and_purge(
    worker_settings: Settings, db: AsyncEngine, amqp: AbstractConnection, topology: Topology
) -> None:
    await _dead_letters(worker_settings, amqp, topology)

    listed = json.loads((await ctwa("dlq", "list", "--format", "json", settings=worker_settings))[0])
    reasons = {row["reason"].split(":")[0]: row for row in listed}
    assert {name: row["count"] for name, row in reasons.items()} == {
        "invalid_json": 1,
        "the database refused it (22P05)": 1,
        "rabbitmq": 1,
    }
    assert all(row["first_seen"] and row["last_seen"] for row in listed)
    assert reasons["rabbitmq"]["reason"] == "rabbitmq: delivery_limit"

    position = reasons["the database refused it (22P05)"]["first_position"]
    shown, _ = await ctwa("dlq", "show", str(position), settings=worker_settings)
    assert "unsupported Unicode escape sequence" in shown
    assert '"01KNUL"' in shown
    await ctwa("dlq", "show", "99", settings=worker_settings, expect=1)
    # Looking changes nothing.
    assert len(json.loads((await ctwa("dlq", "list", "--format", "json", settings=worker_settings))[0])) == 3

    # Sent back, only those asked for, with their history; the NUL one fails again and returns with two reasons.
    _, said = await ctwa("dlq", "redrive", "--reason", "22P05", settings=worker_settings)
    assert "1 dead letters sent back" in said
    await drain(worker_settings)
    dead = {message.body: message for message in await take_all(amqp, topology.dead_letter_queue)}
    assert len(dead) == 3
    history = dead[NUL].headers[HISTORY_HEADER]
    assert isinstance(history, list)
    assert len(history) == 2
    assert all("22P05" in str(reason) for reason in history)

    # Fixed meanwhile (here: nothing was wrong with it): the delivery report is stored once redriven.
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(topology.dead_letter_exchange)
        for body, message in dead.items():
            await exchange.publish(aio_pika.Message(body, headers=dict(message.headers or {})), "message.delivery")
    await ctwa("dlq", "redrive", "--reason", "delivery_limit", settings=worker_settings)
    await drain(worker_settings)
    async with db.connect() as connection:
        keys = set(await connection.scalars(text("SELECT key FROM callbacks")))
    assert "MESSAGE_DELIVERY:01K94FXNN0X9G8FGVSQE8Z5379:DELIVERED" in keys

    _, said = await ctwa("dlq", "purge", settings=worker_settings, expect=2)
    assert "--yes" in said
    assert len(json.loads((await ctwa("dlq", "list", "--format", "json", settings=worker_settings))[0])) == 2
    await ctwa("dlq", "purge", "--yes", settings=worker_settings)
    assert json.loads((await ctwa("dlq", "list", "--format", "json", settings=worker_settings))[0]) == []


def _stream() -> list[bytes]:
    story = scenario(seed=5, people=120, ads=4, start=datetime(2026, 3, 2, 12, tzinfo=UTC))
    bodies = [callback.body for callback in story.callbacks]
    merged = [json.loads(body) for body in bodies if b"contact_merge_notification" in body]
    created = [json.loads(body) for body in bodies if b"contact_create_notification" in body]
    assert merged
    victim = created[0]["contact_create_notification"]["contact"]
    bodies.append(
        contact_event("delete", victim["id"], 90, name="x", identities=[victim["channel_identities"][0]["identity"]])
    )
    return bodies


async def test_replay_all_rebuilds_exactly_the_live_tables(worker_settings: Settings, db: AsyncEngine) -> None:
    await store(db, _stream(), batch_size=60)
    live = await snapshot(db)
    assert live["erased_identities"]
    assert live["person_touches"]
    _, said = await ctwa("replay", "--all", settings=worker_settings)
    assert "callbacks re-projected" in said
    assert "callbacks" in said.splitlines()[-2]  # the progress line
    assert await snapshot(db) == live


async def test_range_replay_repairs_and_is_idempotent(worker_settings: Settings, db: AsyncEngine) -> None:
    await store(db, _stream(), batch_size=60)
    live = await snapshot(db)
    async with db.begin() as connection:
        # What a parsing bug might have left: wrong texts, a click lost, rollups off, a report missing.
        await connection.execute(text("UPDATE messages SET text = 'garbled'"))
        await connection.execute(
            text("DELETE FROM ad_clicks WHERE message_id = (SELECT min(message_id) FROM ad_clicks)")
        )
        await connection.execute(text("UPDATE ad_daily SET clicks = clicks + 7"))
        await connection.execute(text("DELETE FROM person_touches WHERE person_key LIKE 'identity:%'"))
        await connection.execute(text("DELETE FROM delivery_reports WHERE status = 'READ'"))
    since = "2020-01-01"
    await ctwa("replay", "--since", since, "--trigger", "MESSAGE_INBOUND", settings=worker_settings)
    repaired = await snapshot(db)
    assert repaired["messages"] == live["messages"]
    assert repaired["ad_clicks"] == live["ad_clicks"]
    assert repaired["ad_daily"] == live["ad_daily"]
    assert repaired["person_touches"] == live["person_touches"]
    assert repaired["delivery_reports"] != live["delivery_reports"]  # not replayed: another trigger
    await ctwa("replay", "--since", since, "--trigger", "message_delivery", settings=worker_settings)
    assert await snapshot(db) == live
    await ctwa("replay", "--since", since, "--until", "2100-01-01", settings=worker_settings)
    assert await snapshot(db) == live  # idempotent

    await ctwa("replay", settings=worker_settings, expect=2)
    await ctwa("replay", "--all", "--since", since, settings=worker_settings, expect=2)


async def test_prune_deletes_old_archive_keeps_tables_and_stops_replay_all(
    worker_settings: Settings, db: AsyncEngine
) -> None:
    await store(db, inbound_bodies(30))
    async with db.begin() as connection:
        await connection.execute(
            text("UPDATE callbacks SET received_at = CASE WHEN id <= 20 THEN :old ELSE now() END"),
            {"old": datetime.now(UTC) - timedelta(days=100)},
        )
    _, said = await ctwa("prune", "--archive-older-than", "90d", settings=worker_settings)
    assert "20 archived callbacks deleted" in said
    async with db.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM callbacks")) == 10
        assert await connection.scalar(text("SELECT count(*) FROM messages")) == 30
        assert await connection.scalar(text("SELECT callbacks FROM archive_prunes")) == 20
    _, said = await ctwa("replay", "--all", settings=worker_settings, expect=1)
    assert "pruned" in said
    async with db.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM messages")) == 30
    await ctwa("prune", "--archive-older-than", "ninety days", settings=worker_settings, expect=2)


async def test_queue_depth_consumers_dead_letters_and_lag_metrics(
    worker_settings: Settings, db: AsyncEngine, amqp: AbstractConnection, topology: Topology
) -> None:
    await _dead_letters(worker_settings, amqp, topology)
    async with amqp.channel() as channel:  # a backlog that waited a while: received two minutes ago
        exchange = await channel.get_exchange(topology.exchange)
        for body in inbound_bodies(3, tag="L"):
            await exchange.publish(
                aio_pika.Message(body, timestamp=datetime.now(UTC) - timedelta(minutes=2)), "message.inbound"
            )
    worker = Worker(worker_settings, watch_every=0.05)
    running = asyncio.create_task(worker.run())

    def value(name: str, **labels: str) -> float | None:
        return worker.metrics.registry.get_sample_value(name, labels)

    try:
        while (value("ctwa_worker_processed_total", trigger="MESSAGE_INBOUND") or 0) < 3:
            await asyncio.sleep(0.02)
        assert (value("ctwa_worker_lag_seconds") or 0) >= 100  # the batch had waited two minutes
        while value("ctwa_worker_lag_seconds") != 0:  # then nothing waits
            await asyncio.sleep(0.02)
        assert value("ctwa_queue_messages", queue="dead-letter") == 3
        assert value("ctwa_queue_messages", queue="callbacks") == 0
        assert value("ctwa_queue_consumers") == 1
        assert value("ctwa_worker_broker_connected") == 1
    finally:
        worker.stop()
        await running
