"""The worker against the real RabbitMQ and Postgres: exactly-once rows, poison isolated, every outage survived; and
``ctwa worker`` as a process: SIGKILL at any moment loses nothing, SIGTERM finishes and acknowledges cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import sys
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection
from callbacks import inbound, referral
from sqlalchemy import func, make_url, select, text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from support import (
    AMQP_URL,
    ReceiverFactory,
    TcpRelay,
    drain,
    enqueue,
    fixture_bytes,
    fixture_names,
    inbound_bodies,
    key_of,
    queued_keys,
    take_all,
)
from yarl import URL

from ingest.callback import Callback, Trigger
from ingest.envelope import BATCH_CONTENT_TYPE, VERIFIED_APP_ID, pack
from ingest.settings import Settings
from ingest.topology import Topology
from workers.engine import chains
from workers.engine.schema import callbacks
from workers.runtime.consumer import REASON_HEADER
from workers.runtime.worker import Worker


async def archived_keys(db: AsyncEngine) -> list[str]:
    async with db.connect() as connection:
        return list(await connection.scalars(select(callbacks.c.key).order_by(callbacks.c.key)))


def counter(worker: Worker, name: str, **labels: str) -> float:
    value = worker.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_a_callback_posted_three_times_is_archived_once(
    start_receiver: ReceiverFactory, worker_settings: Settings, db: AsyncEngine
) -> None:
    receiver = await start_receiver()
    body = fixture_bytes("01_inbound_ctwa_referral.json")
    reserialised = json.dumps(json.loads(body) | {"accepted_time": "2025-11-03T09:14:19.5Z"}).encode()
    for attempt in (body, body, reserialised):
        assert (await receiver.post("/webhooks/sinch", data=attempt)).status == 200
    worker = await drain(worker_settings)
    assert await archived_keys(db) == ["MESSAGE_INBOUND:01K94FXHR0TEWH0AVNH9DN65R6"]
    assert counter(worker, "ctwa_worker_processed_total", trigger="MESSAGE_INBOUND") == 1
    assert counter(worker, "ctwa_worker_duplicates_total", trigger="MESSAGE_INBOUND") == 2
    async with db.connect() as connection:
        row = (await connection.execute(select(callbacks))).one()
    # The first copy is the one archived.
    assert row.payload == json.loads(body)


async def test_a_callback_published_alone_is_archived_with_its_milliseconds(
    start_receiver: ReceiverFactory, worker_settings: Settings, db: AsyncEngine
) -> None:
    received = 1_762_161_249.375
    receiver = await start_receiver(clock=lambda: received)
    assert (await receiver.post("/webhooks/sinch", data=fixture_bytes("03_delivery_delivered.json"))).status == 200
    worker = await drain(worker_settings)
    async with db.connect() as connection:
        row = (await connection.execute(select(callbacks))).one()
    # Not the AMQP timestamp's whole second (…:09): the header's time, to the millisecond.
    assert row.received_at == datetime.fromtimestamp(received, UTC)
    # Its freshness, to the commit that made it visible: the receiver's frozen clock is a year behind.
    assert counter(worker, "ctwa_worker_freshness_seconds_count") == 1
    assert counter(worker, "ctwa_worker_freshness_seconds_sum") == pytest.approx(time.time() - received, abs=30)


async def test_every_fixture_is_archived_with_its_envelope(
    start_receiver: ReceiverFactory, worker_settings: Settings, db: AsyncEngine
) -> None:
    receiver = await start_receiver()
    for name in fixture_names():
        assert (await receiver.post("/webhooks/sinch", data=fixture_bytes(name))).status == 200
    await drain(worker_settings)
    async with db.connect() as connection:
        rows = {row.key: row for row in await connection.execute(select(callbacks))}
    assert len(rows) == len(fixture_names())
    for name in fixture_names():
        body = fixture_bytes(name)
        payload = json.loads(body)
        row = rows[key_of(body)]
        assert row.payload == payload
        assert row.app_id == (payload["app_id"] or None)
        assert row.project_id == (payload["project_id"] or None)
        assert row.signature_verified is False
        assert row.received_at.tzinfo is not None
        assert (row.event_time is None) == ("event_time" not in payload)
    delivered = rows["MESSAGE_DELIVERY:01K94FXNN0X9G8FGVSQE8Z5379:DELIVERED"]
    assert delivered.trigger == "MESSAGE_DELIVERY"
    assert delivered.event_time.isoformat() == "2025-11-03T09:15:02+00:00"
    assert delivered.accepted_time.isoformat() == "2025-11-03T09:15:02.884000+00:00"
    created = rows["CONTACT_CREATE:01FJA8B466Y0R2GNXD78MD9SM1"]
    assert created.app_id is None  # "" on the wire
    assert created.accepted_time.isoformat() == "2021-10-18T17:49:13.813615+00:00"


async def test_unknown_triggers_and_odd_times_are_archived(
    start_receiver: ReceiverFactory, worker_settings: Settings, db: AsyncEngine
) -> None:
    receiver = await start_receiver()
    odd = b'{"app_id":"A","accepted_time":"yesterday","event_time":42,"brand_new_notification":{"id":"N1"}}'
    assert (await receiver.post("/webhooks/sinch", data=odd)).status == 200
    await drain(worker_settings)
    async with db.connect() as connection:
        row = (await connection.execute(select(callbacks))).one()
    assert row.trigger == "UNKNOWN"
    assert row.key == key_of(odd)
    assert (row.accepted_time, row.event_time) == (None, None)


async def test_poison_is_dead_lettered_with_its_reason_and_the_rest_of_its_batch_is_stored(
    worker_settings: Settings, db: AsyncEngine, amqp: AbstractConnection, topology: Topology
) -> None:
    good = inbound_bodies(40)
    keys = await enqueue(AMQP_URL, topology, good[:20])
    poison = {
        b"not json at all": "invalid_json",
        b"[1, 2, 3]": "not_object",
        # Valid JSON that Postgres refuses: jsonb can't hold a NUL character.
        b'{"message": {"id": "01K94NUL", "contact_message": {"text_message": {"text": "a\\u0000b"}}}}': (
            "database_22P05"
        ),
    }
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(topology.exchange)
        for body in poison:
            await exchange.publish(aio_pika.Message(body, message_id="hand-published"), "message.inbound")
    keys += await enqueue(AMQP_URL, topology, good[20:])

    worker = await drain(worker_settings.model_copy(update={"batch_size": 500, "batch_linger_ms": 200}))

    assert await archived_keys(db) == sorted(keys)
    dead = await take_all(amqp, topology.dead_letter_queue)
    assert sorted(m.body for m in dead) == sorted(poison)
    for message in dead:
        reason = str(message.headers[REASON_HEADER])
        assert reason.startswith(poison[message.body].removeprefix("database_22P05")) or "22P05" in reason
        assert message.routing_key == "message.inbound"
        assert message.message_id == "hand-published"
    for code in poison.values():
        assert counter(worker, "ctwa_worker_dead_lettered_total", reason=code) == 1
    assert await take_all(amqp, topology.queue) == []


async def test_a_poison_callback_in_a_batch_message_is_dead_lettered_alone(
    worker_settings: Settings, db: AsyncEngine, amqp: AbstractConnection, topology: Topology
) -> None:
    await enqueue(AMQP_URL, topology, [])  # declares the topology
    moment = datetime.now(UTC)
    good = [Callback(body, Trigger.MESSAGE_INBOUND, key_of(body), moment, True) for body in inbound_bodies(4)]
    nul = b'{"message": {"id": "01K94NUL", "contact_message": {"text_message": {"text": "a\\u0000b"}}}}'
    batch = [
        good[0],
        Callback(nul, Trigger.MESSAGE_INBOUND, "MESSAGE_INBOUND:01K94NUL", moment, True),
        good[1],
        Callback(b"{not json", Trigger.UNKNOWN, "UNKNOWN:sha256:bad", moment, True),
        *good[2:],
    ]
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(topology.exchange)
        await exchange.publish(aio_pika.Message(pack(batch), content_type=BATCH_CONTENT_TYPE), "batch")
        await exchange.publish(
            aio_pika.Message(pack(good)[:-3], content_type=BATCH_CONTENT_TYPE, message_id="cut"), "batch"
        )
    worker = await drain(worker_settings)

    assert await archived_keys(db) == sorted(callback.key for callback in good)
    dead = {message.message_id: message for message in await take_all(amqp, topology.dead_letter_queue)}
    assert set(dead) == {"MESSAGE_INBOUND:01K94NUL", "UNKNOWN:sha256:bad", "cut"}
    alone = dead["MESSAGE_INBOUND:01K94NUL"]
    assert alone.body == nul  # published alone, as a one-callback message, bytes unchanged
    assert alone.content_type == "application/json"
    assert alone.routing_key == "message.inbound"
    assert alone.app_id == VERIFIED_APP_ID
    assert "22P05" in str(alone.headers[REASON_HEADER])
    assert str(dead["UNKNOWN:sha256:bad"].headers[REASON_HEADER]).startswith("invalid_json")
    assert dead["cut"].content_type == BATCH_CONTENT_TYPE  # a batch that can't be read goes whole
    assert str(dead["cut"].headers[REASON_HEADER]).startswith("invalid_batch")
    assert counter(worker, "ctwa_worker_processed_total", trigger="MESSAGE_INBOUND") == 4
    assert await take_all(amqp, topology.queue) == []


async def test_duplicates_within_a_batch_and_across_batches_are_stored_once(
    worker_settings: Settings, db: AsyncEngine, topology: Topology
) -> None:
    bodies = inbound_bodies(30)
    await enqueue(AMQP_URL, topology, bodies + bodies[:10] + bodies[5:25])
    worker = await drain(worker_settings.model_copy(update={"batch_size": 7}))
    assert await archived_keys(db) == sorted(key_of(body) for body in bodies)
    assert counter(worker, "ctwa_worker_processed_total", trigger="MESSAGE_INBOUND") == 30
    assert counter(worker, "ctwa_worker_duplicates_total", trigger="MESSAGE_INBOUND") == 30


async def test_a_message_published_without_properties_is_keyed_from_its_body(
    worker_settings: Settings, db: AsyncEngine, amqp: AbstractConnection, topology: Topology
) -> None:
    await enqueue(AMQP_URL, topology, [])  # declares the topology
    body = fixture_bytes("07_delivery_failed_dispatch.json")
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(topology.exchange)
        await exchange.publish(aio_pika.Message(body), "anything")
    await drain(worker_settings)
    assert await archived_keys(db) == ["MESSAGE_DELIVERY:01K94FXSJ0SQWW7FE4N1EE043E:FAILED"]


async def test_two_workers_side_by_side_store_each_callback_once(
    worker_settings: Settings, db: AsyncEngine, topology: Topology
) -> None:
    keys = await enqueue(AMQP_URL, topology, inbound_bodies(2000))
    settings = worker_settings.model_copy(update={"prefetch": 150})
    first, second = await asyncio.gather(drain(settings), drain(settings))
    assert await archived_keys(db) == sorted(keys)
    processed = sum(counter(w, "ctwa_worker_processed_total", trigger="MESSAGE_INBOUND") for w in (first, second))
    assert processed == 2000
    assert min(counter(w, "ctwa_worker_processed_total", trigger="MESSAGE_INBOUND") for w in (first, second)) > 0


async def test_postgres_backends_terminated_mid_batch_lose_and_double_nothing(
    worker_settings: Settings, db: AsyncEngine, topology: Topology
) -> None:
    keys = await enqueue(AMQP_URL, topology, inbound_bodies(4000))
    settings = worker_settings.model_copy(update={"batch_size": 50})
    worker = Worker(settings, drain=True, name="ctwa-worker-terminated")
    running = asyncio.create_task(worker.run())
    terminated = 0
    async with db.connect() as connection:
        # Five times: terminate the worker's backend while it is in a transaction, then let it make progress.
        while not running.done() and terminated < 5:
            killed = await connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'ctwa-worker-terminated' AND state LIKE 'idle in transaction%' "
                    "OR application_name = 'ctwa-worker-terminated' AND state = 'active'"
                )
            )
            await connection.commit()
            if killed:
                terminated += 1
                progress = counter(worker, "ctwa_worker_processed_total", trigger="MESSAGE_INBOUND")
                while (
                    not running.done()
                    and counter(worker, "ctwa_worker_processed_total", trigger="MESSAGE_INBOUND") == progress
                ):
                    await asyncio.sleep(0.01)
            else:
                await asyncio.sleep(0.005)
    await asyncio.wait_for(running, 120)
    assert terminated > 0
    assert counter(worker, "ctwa_worker_retries_total", cause="database") > 0
    assert await archived_keys(db) == sorted(keys)


async def test_database_unreachable_the_worker_holds_then_recovers(
    worker_settings: Settings, db: AsyncEngine, topology: Topology
) -> None:
    keys = await enqueue(AMQP_URL, topology, inbound_bodies(300))
    database = make_url(worker_settings.database_url)
    relay = TcpRelay(URL.build(scheme="postgresql", host=database.host or "127.0.0.1", port=database.port or 5432))
    relayed = database.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    settings = worker_settings.model_copy(update={"database_url": relayed})
    worker = Worker(settings, drain=True)
    running = asyncio.create_task(worker.run())  # the relay is not listening: Postgres is "down"
    while counter(worker, "ctwa_worker_retries_total", cause="database") < 3:
        await asyncio.sleep(0.05)
    assert await archived_keys(db) == []
    await relay.start()
    await asyncio.wait_for(running, 120)
    await relay.close()
    assert await archived_keys(db) == sorted(keys)


async def test_broker_connection_lost_mid_stream_the_worker_reconnects(
    worker_settings: Settings, db: AsyncEngine, topology: Topology
) -> None:
    keys = await enqueue(AMQP_URL, topology, inbound_bodies(3000))
    relay = TcpRelay(URL(AMQP_URL))
    await relay.start()
    worker = Worker(worker_settings.model_copy(update={"amqp_url": relay.url, "batch_size": 50}), drain=True)
    running = asyncio.create_task(worker.run())
    while counter(worker, "ctwa_worker_processed_total", trigger="MESSAGE_INBOUND") < 300:
        await asyncio.sleep(0.01)
    await relay.cut()
    await asyncio.sleep(0.5)
    await relay.start()
    await asyncio.wait_for(running, 120)
    await relay.close()
    assert await archived_keys(db) == sorted(keys)


@pytest.mark.parametrize("batch_size", [1, 500])
async def test_drain_stops_once_the_queue_is_empty(
    worker_settings: Settings, db: AsyncEngine, topology: Topology, batch_size: int
) -> None:
    keys = await enqueue(AMQP_URL, topology, inbound_bodies(120))
    await drain(worker_settings.model_copy(update={"batch_size": batch_size}))
    async with db.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(callbacks)) == len(keys)


async def test_a_batch_is_never_acknowledged_before_an_earlier_one_commits(
    worker_settings: Settings, db: AsyncEngine, topology: Topology
) -> None:
    # Two batches in flight, sharing no row: the first blocks on one the test holds locked, the second commits.
    # Acknowledging the second (``multiple``) must not take the first with it: stopped, the worker leaves both
    # unacknowledged.
    template = json.loads(fixture_bytes("01_inbound_ctwa_referral.json"))
    bodies = []
    for n in (1, 2):
        payload = json.loads(json.dumps(template))
        payload["message"] |= {
            "id": f"01K94ORDER{n:016d}",
            "contact_id": f"01K94CONTACT{n:014d}",
            "conversation_id": f"01K94CONVERSATION{n:09d}",
            "channel_identity": payload["message"]["channel_identity"] | {"identity": f"3461100000{n}"},
        }
        bodies.append(json.dumps(payload).encode())
    first, second = await enqueue(AMQP_URL, topology, bodies)
    async with db.begin() as connection:
        await connection.execute(text("INSERT INTO contacts (contact_id) VALUES ('01K94CONTACT00000000000001')"))
    settings = worker_settings.model_copy(
        update={"batch_size": 1, "batch_linger_ms": 0, "worker_concurrency": 2, "shutdown_grace_s": 1.0}
    )
    worker = Worker(settings)
    async with db.connect() as holder:
        await holder.execute(text("SELECT 1 FROM contacts WHERE contact_id = '01K94CONTACT00000000000001' FOR UPDATE"))
        running = asyncio.create_task(worker.run())
        while await archived_keys(db) != [second]:
            await asyncio.sleep(0.02)
        worker.stop()
        await asyncio.wait_for(running, 30)
        await holder.rollback()
    again = await drain(worker_settings)
    assert await archived_keys(db) == sorted([first, second])
    assert counter(again, "ctwa_worker_processed_total", trigger="MESSAGE_INBOUND") == 1
    assert counter(again, "ctwa_worker_duplicates_total", trigger="MESSAGE_INBOUND") == 1  # the second, again


# ``ctwa worker`` as a process, stopped by real signals.


def _environment(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "CTWA_AMQP_URL": settings.amqp_url,
        "CTWA_AMQP_PREFIX": settings.amqp_prefix,
        "CTWA_DATABASE_URL": settings.database_url,
        "CTWA_BATCH_SIZE": "100",
        "CTWA_WORKER_METRICS_PORT": "0",
    }


async def _start_worker(settings: Settings, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "worker", *args, env=_environment(settings), stderr=asyncio.subprocess.PIPE
    )


async def _archived(db: AsyncEngine) -> int:
    async with db.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(callbacks)) or 0)


async def _wait_for_rows(db: AsyncEngine, at_least: int, process: asyncio.subprocess.Process) -> None:
    while await _archived(db) < at_least:
        assert process.returncode is None, "the worker exited early"
        await asyncio.sleep(0.02)


async def test_sigkill_mid_stream_then_restart_stores_everything_exactly_once(
    worker_settings: Settings, db: AsyncEngine, amqp: AbstractConnection, topology: Topology
) -> None:
    keys = await enqueue(worker_settings.amqp_url, topology, inbound_bodies(6000))
    process = await _start_worker(worker_settings)
    await _wait_for_rows(db, 1000, process)
    process.kill()
    await process.wait()
    stored_before_restart = await _archived(db)
    assert 1000 <= stored_before_restart < 6000  # killed mid-stream

    restarted = await _start_worker(worker_settings, "--drain")
    assert await asyncio.wait_for(restarted.wait(), 120) == 0
    async with db.connect() as connection:
        stored = list(await connection.scalars(select(callbacks.c.key)))
    assert sorted(stored) == sorted(keys)  # every callback once: none lost, none doubled
    assert await take_all(amqp, topology.queue) == []


async def test_sigterm_finishes_the_batch_in_hand_acknowledges_and_exits(
    worker_settings: Settings, db: AsyncEngine, amqp: AbstractConnection, topology: Topology
) -> None:
    keys = await enqueue(worker_settings.amqp_url, topology, inbound_bodies(6000))
    process = await _start_worker(worker_settings)
    await _wait_for_rows(db, 1000, process)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0

    async with db.connect() as connection:
        stored = set(await connection.scalars(select(callbacks.c.key)))
    waiting = set(await queued_keys(amqp, topology.queue))
    # Every callback is either stored and acknowledged, or still waiting untouched: nothing is both, which would
    # mean a commit without its acknowledgement, and nothing is neither.
    assert stored.isdisjoint(waiting)
    assert stored | waiting == set(keys)
    assert 1000 <= len(stored) < 6000
    assert process.stderr is not None
    log = (await process.stderr.read()).decode()
    assert "stopping" in log
    assert "worker stopped" in log


def dead_lettered(worker: Worker) -> float:
    """Messages ``worker`` dead-lettered, whatever the reason."""
    return sum(
        sample.value
        for metric in worker.metrics.registry.collect()
        if metric.name == "ctwa_worker_dead_lettered"
        for sample in metric.samples
        if sample.name == "ctwa_worker_dead_lettered_total"
    )


def retried_on(caplog: pytest.LogCaptureFixture, code: str) -> int:
    """Batches the worker retried after the database refused them with SQLSTATE ``code``, by its log (the day chains'
    settling, refused alike, logs its own retries, which are not batches')."""
    return sum(
        1
        for record in caplog.records
        if getattr(record, "sqlstate", None) == code and record.getMessage().startswith("database unavailable")
    )


async def stopped(worker: Worker, running: asyncio.Task[None]) -> None:
    """``worker`` (whose run is ``running``) stopped, if it still runs: no worker outlives its test."""
    if not running.done():
        worker.stop()
        await running


async def _terminate_backends(admin: AsyncEngine, application_name: str) -> None:
    async with admin.begin() as connection:
        await connection.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :name"),
            {"name": application_name},
        )


async def test_postgres_read_only_mid_stream_is_retried_until_writable_never_dead_lettered(
    worker_settings: Settings,
    db: AsyncEngine,
    database_url: str,
    amqp: AbstractConnection,
    topology: Topology,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A failover as the worker sees it: its connections drop, and the server it connects to next is read-only (a
    # standby not yet promoted, or the old primary demoted) and refuses every write with 25006 — until it is
    # writable again, while the worker's sessions on it stay open.
    caplog.set_level("WARNING", logger=Worker.__module__)
    keys = await enqueue(AMQP_URL, topology, inbound_bodies(3000))
    name = "ctwa-worker-read-only"
    worker = Worker(worker_settings.model_copy(update={"batch_size": 50}), drain=True, name=name)
    database = make_url(database_url).database
    # The test's own sessions ask for read-write at startup, which outranks the database's default.
    admin = create_async_engine(
        database_url, connect_args={"server_settings": {"default_transaction_read_only": "off"}}
    )
    running = asyncio.create_task(worker.run())
    try:
        try:
            while counter(worker, "ctwa_worker_processed_total", trigger="MESSAGE_INBOUND") < 300:
                assert not running.done()
                await asyncio.sleep(0.01)
            async with admin.begin() as connection:
                await connection.execute(text(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on'))
            # Its sessions drop; those it opens now are read-only. Terminated again until batches have met the
            # read-only server, so that no session opened just before the change lives on.
            while retried_on(caplog, "25006") < 3:
                assert not running.done()
                assert dead_lettered(worker) == 0
                await _terminate_backends(admin, name)
                await asyncio.sleep(0.2)
            held = counter(worker, "ctwa_worker_processed_total", trigger="MESSAGE_INBOUND")
            while retried_on(caplog, "25006") < 6:
                assert not running.done()
                await asyncio.sleep(0.05)
            assert counter(worker, "ctwa_worker_processed_total", trigger="MESSAGE_INBOUND") == held  # it holds
            assert counter(worker, "ctwa_worker_retries_total", cause="database") >= 6
            assert dead_lettered(worker) == 0
        finally:
            # Other tests share the database: writable again, whatever happened.
            async with admin.begin() as connection:
                await connection.execute(text(f'ALTER DATABASE "{database}" RESET default_transaction_read_only'))
        # Its read-only sessions are not terminated: the worker has to leave them for writable ones by itself.
        await asyncio.wait_for(asyncio.shield(running), 60)
    finally:
        await admin.dispose()
        await stopped(worker, running)
    assert await archived_keys(db) == sorted(keys)  # each once
    assert counter(worker, "ctwa_worker_processed_total", trigger="MESSAGE_INBOUND") == len(keys)
    assert dead_lettered(worker) == 0
    assert await take_all(amqp, topology.dead_letter_queue) == []
    assert await take_all(amqp, topology.queue) == []


class StartingPostgres(TcpRelay):
    """Postgres starting up, as a client sees it: each connection is refused after its startup message with 57P03
    "the database system is starting up" — until ``started``, from when connections are relayed to the real server."""

    def __init__(self, target: URL) -> None:
        super().__init__(target)
        self.started = False
        self.refused = 0

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.started:
            await super()._relay(client_reader, client_writer)
            return
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while True:  # SSL and GSS encryption declined, up to the startup message
                length, code = struct.unpack("!ii", await client_reader.readexactly(8))
                await client_reader.readexactly(length - 8)
                if code not in (80877103, 80877104):
                    break
                client_writer.write(b"N")
            fields = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"
            client_writer.write(b"E" + struct.pack("!i", 4 + len(fields)) + fields)
            await client_writer.drain()
            self.refused += 1
        client_writer.close()


async def _connect_as_sqlalchemy_2_0(
    cls: type[AsyncAdapt_asyncpg_connection], dbapi: Any, connection: Awaitable[Any], **kw: Any
) -> AsyncAdapt_asyncpg_connection:
    return cls(dbapi, await connection, **kw)  # what asyncpg raises while connecting goes through unwrapped


@pytest.mark.parametrize("wrapped", [True, False], ids=["wrapped", "unwrapped"])
async def test_postgres_starting_up_refuses_connections_the_worker_holds_never_dead_letters(
    worker_settings: Settings,
    db: AsyncEngine,
    amqp: AbstractConnection,
    topology: Topology,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    wrapped: bool,
) -> None:
    # SQLAlchemy 2.1 wraps the asyncpg error a refused connection raises (CannotConnectNowError) in a DBAPIError;
    # 2.0, which the project allows too, lets it through as it is.
    if not wrapped:
        monkeypatch.setattr(
            AsyncAdapt_asyncpg_connection, "create", classmethod(_connect_as_sqlalchemy_2_0), raising=False
        )
    caplog.set_level("WARNING", logger=Worker.__module__)
    keys = await enqueue(AMQP_URL, topology, inbound_bodies(300))
    database = make_url(worker_settings.database_url)
    server = StartingPostgres(
        URL.build(scheme="postgresql", host=database.host or "127.0.0.1", port=database.port or 5432)
    )
    await server.start()
    starting = database.set(host="127.0.0.1", port=server.port).render_as_string(hide_password=False)
    worker = Worker(worker_settings.model_copy(update={"database_url": starting}), drain=True)
    running = asyncio.create_task(worker.run())
    try:
        while retried_on(caplog, "57P03") < 3:
            assert not running.done(), "the worker gave up on a database that is starting up"
            assert dead_lettered(worker) == 0
            await asyncio.sleep(0.05)
        assert server.refused >= 3
        assert await archived_keys(db) == []
        assert dead_lettered(worker) == 0
        server.started = True
        await asyncio.wait_for(asyncio.shield(running), 60)
    finally:
        await stopped(worker, running)
        await server.close()
    assert await archived_keys(db) == sorted(keys)
    assert dead_lettered(worker) == 0
    assert await take_all(amqp, topology.dead_letter_queue) == []


async def test_a_cancelled_run_leaves_no_task_behind(worker_settings: Settings) -> None:
    def ours() -> set[asyncio.Task[Any]]:
        return {task for task in asyncio.all_tasks() if task.get_name().startswith("ctwa-")}

    worker = Worker(worker_settings)  # not draining: it would work on forever
    running = asyncio.create_task(worker.run())
    async with asyncio.timeout(10):
        while not {"ctwa-work", "ctwa-watch"} <= {task.get_name() for task in ours()}:
            await asyncio.sleep(0.01)
    started = ours()
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    # `run` cancels its tasks on the way out; each has to end, not go on: waited for, not given a fixed time.
    _, left = await asyncio.wait(started | ours(), timeout=10)
    assert sorted(task.get_name() for task in left) == []
    assert [task.get_name() for task in ours()] == []  # and none was started meanwhile


CLICK_AND_AFTER = [
    inbound("K1", 0, identity="111", contact="A", conversation="VA", metadata=referral("AD1", "CL1")),
    inbound("M1", 5, identity="111", contact="A", conversation="VA", text="and one more thing"),
]


async def _day_chains(db: AsyncEngine) -> tuple[int, list[Any]]:
    async with db.connect() as connection:
        queued = await connection.scalar(text("SELECT count(*) FROM chain_backlog"))
        rows = list(await connection.execute(text("SELECT wrote_again, previous_day FROM daily_people")))
    return int(queued or 0), rows


async def _until_settled(db: AsyncEngine) -> None:
    """Wait until CLICK_AND_AFTER's day chains are settled: nothing queued, and "wrote again" true."""
    for _ in range(200):
        if await _day_chains(db) == (0, [(True, None)]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not settled within 10 s: {await _day_chains(db)}")


async def test_drain_ends_with_the_day_chains_settled(
    worker_settings: Settings, db: AsyncEngine, topology: Topology
) -> None:
    await enqueue(AMQP_URL, topology, CLICK_AND_AFTER)
    worker = await drain(worker_settings.model_copy(update={"chains_interval_s": 3600}))  # no pass on the way
    assert await _day_chains(db) == (0, [(True, None)])
    assert counter(worker, "ctwa_worker_chains_settled_total") == 3  # the click's row, its message, the message


async def test_a_running_worker_settles_the_day_chains_every_interval(
    worker_settings: Settings, db: AsyncEngine, topology: Topology
) -> None:
    worker = Worker(worker_settings.model_copy(update={"chains_interval_s": 0.2}))
    running = asyncio.create_task(worker.run())
    try:
        await enqueue(AMQP_URL, topology, CLICK_AND_AFTER)
        await _until_settled(db)
        assert counter(worker, "ctwa_worker_chains_settled_timestamp_seconds") > 0
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)


async def test_a_failed_pass_of_settling_is_tried_again_and_the_worker_goes_on(
    worker_settings: Settings, db: AsyncEngine, topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    settle_queued = chains.settle_queued
    failures = [RuntimeError("a bug on some data"), OSError("connection reset")]

    async def failing_first(engine: AsyncEngine) -> int:
        if failures:
            raise failures.pop(0)
        return await settle_queued(engine)

    monkeypatch.setattr(chains, "settle_queued", failing_first)
    worker = Worker(worker_settings.model_copy(update={"chains_interval_s": 0.1}))
    running = asyncio.create_task(worker.run())
    try:
        await enqueue(AMQP_URL, topology, CLICK_AND_AFTER)
        await _until_settled(db)
        assert failures == []
        assert await archived_keys(db) == sorted(key_of(body) for body in CLICK_AND_AFTER)
    finally:
        worker.stop()
        await asyncio.wait_for(running, 30)
