"""The receiver's publisher: callbacks arriving together share one confirmed message (group commit); and when the
broker fails, never 200 without a confirm, 503 instead, and recovery without a restart."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractConnection
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy.ext.asyncio import AsyncEngine
from support import (
    AMQP_URL,
    ReceiverFactory,
    TcpRelay,
    connect_amqp,
    drain,
    fixture_bytes,
    queued_keys,
    rabbitmqctl,
    rows,
    take_all,
)
from yarl import URL

from ingest.broker import address
from ingest.callback import Trigger
from ingest.envelope import BATCH_CONTENT_TYPE, unpack
from ingest.receiver.app import PUBLISHER
from ingest.settings import Settings
from ingest.topology import Topology

Client = TestClient[web.Request, web.Application]
TEMPLATE = fixture_bytes("01_inbound_ctwa_referral.json")
TEMPLATE_ID = b"01K94FXHR0TEWH0AVNH9DN65R6"


def _callback(n: int) -> tuple[bytes, str]:
    message_id = f"01K94FXHR0TEWH0AVNH{n:07d}"
    return TEMPLATE.replace(TEMPLATE_ID, message_id.encode()), f"MESSAGE_INBOUND:{message_id}"


@pytest.fixture
async def relay() -> AsyncIterator[TcpRelay]:
    relay = TcpRelay(URL(AMQP_URL))
    yield relay
    await relay.close()


async def _post(client: Client, n: int) -> tuple[int, str]:
    body, key = _callback(n)
    response = await client.post("/webhooks/sinch", data=body)
    return response.status, key


async def test_broker_unreachable_gives_503_then_recovers_by_itself(
    start_receiver: ReceiverFactory, relay: TcpRelay, amqp: AbstractConnection, topology: Topology
) -> None:
    client = await start_receiver(amqp_url=relay.url, wait_ready=False)  # nothing listens at the relay yet
    response = await client.post("/webhooks/sinch", data=_callback(1)[0])
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    assert (await response.json())["error"] == "broker_unavailable"
    ready = await client.get("/readyz")
    assert ready.status == 503
    metrics = await (await client.get("/metrics")).text()
    assert 'ctwa_receiver_rejected_total{reason="broker_unavailable",status="503"} 1.0' in metrics
    assert re.findall(r"^ctwa_receiver_accepted_total\{.*\} (.*)$", metrics, re.MULTILINE) == ["0.0"] * len(Trigger)

    await relay.start()
    assert await client.app[PUBLISHER].wait_ready(15)
    assert (await client.get("/readyz")).status == 200
    status, key = await _post(client, 2)
    assert status == 200
    assert await queued_keys(amqp, topology.queue) == [key]


async def test_with_the_broker_unreachable_every_answer_is_503_within_a_second(
    start_receiver: ReceiverFactory, relay: TcpRelay, amqp: AbstractConnection, topology: Topology
) -> None:
    await relay.start()
    client = await start_receiver(amqp_url=relay.url, publish_timeout_s=5.0)
    assert (await _post(client, 0))[0] == 200
    await relay.cut()
    for n in range(1, 21):
        started = time.monotonic()
        status, _ = await _post(client, n)
        assert status == 503
        assert time.monotonic() - started < 1.0
    assert (await client.get("/readyz")).status == 503
    await relay.start()  # the broker is back: no restart needed
    assert await client.app[PUBLISHER].wait_ready(15)
    assert (await _post(client, 99))[0] == 200
    assert await queued_keys(amqp, topology.queue) == [_callback(0)[1], _callback(99)[1]]


async def test_connection_cut_mid_stream_loses_nothing_that_got_200(
    start_receiver: ReceiverFactory, relay: TcpRelay, amqp: AbstractConnection, topology: Topology
) -> None:
    await relay.start()
    client = await start_receiver(amqp_url=relay.url)
    results: list[tuple[int, str]] = []
    counter = iter(range(1_000_000))

    async def stream(stop: asyncio.Event) -> None:
        while not stop.is_set():
            results.append(await _post(client, next(counter)))

    stop = asyncio.Event()
    streams = [asyncio.create_task(stream(stop)) for _ in range(8)]
    while len(results) < 200:
        await asyncio.sleep(0.01)
    await relay.cut()
    cut_at = len(results)
    while not any(status == 503 for status, _ in results[cut_at:]):
        await asyncio.sleep(0.01)
    await relay.start()
    assert await client.app[PUBLISHER].wait_ready(15)
    recovered_at = len(results)
    while sum(status == 200 for status, _ in results[recovered_at:]) < 200:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*streams)

    statuses = {status for status, _ in results}
    assert statuses == {200, 503}
    accepted = {key for status, key in results if status == 200}
    queued = set(await queued_keys(amqp, topology.queue))
    # Everything answered 200 is queued; a 503'd callback may be queued too (its confirm was lost), which is
    # harmless: Sinch retries it and the worker de-duplicates on the business key.
    assert accepted <= queued
    assert results[-1][0] == 200


async def test_a_broker_that_stops_confirming_gets_503_never_200(
    start_receiver: ReceiverFactory, relay: TcpRelay, amqp: AbstractConnection, topology: Topology
) -> None:
    await relay.start()
    client = await start_receiver(amqp_url=relay.url, publish_timeout_s=0.5)
    assert (await _post(client, 1))[0] == 200
    relay.freeze()
    statuses = await asyncio.gather(*(_post(client, n) for n in range(2, 12)))
    assert {status for status, _ in statuses} == {503}
    text = await (await client.get("/metrics")).text()
    assert 'ctwa_receiver_rejected_total{reason="confirm_timeout",status="503"} 10.0' in text
    relay.thaw()
    assert (await _post(client, 12))[0] == 200


async def test_no_200_before_the_message_carrying_it_is_confirmed(
    start_receiver: ReceiverFactory, relay: TcpRelay, amqp: AbstractConnection, topology: Topology
) -> None:
    await relay.start()
    client = await start_receiver(amqp_url=relay.url, publish_timeout_s=0.5, publish_linger_ms=50)
    relay.freeze()  # the broker takes the messages but never confirms them
    statuses = await asyncio.gather(*(_post(client, n) for n in range(30)))
    assert {status for status, _ in statuses} == {503}
    relay.thaw()
    statuses = await asyncio.gather(*(_post(client, n) for n in range(100, 130)))
    assert {status for status, _ in statuses} == {200}
    assert {key for _, key in statuses} <= set(await queued_keys(amqp, topology.queue))
    text = await (await client.get("/metrics")).text()
    batched = re.search(r"^ctwa_receiver_message_callbacks_count (\S+)$", text, re.MULTILINE)
    assert batched is not None
    assert float(batched.group(1)) < 30  # the 30 that got 200 went in fewer messages


async def test_an_unroutable_callback_is_503_not_200(
    receiver: Client, amqp: AbstractConnection, topology: Topology
) -> None:
    async with amqp.channel() as channel:
        queue = await channel.get_queue(topology.queue)
        await queue.unbind(topology.exchange, "#")
        status, _ = await _post(receiver, 1)
        assert status == 503
        await queue.bind(topology.exchange, "#")
    assert (await _post(receiver, 2))[0] == 200


async def test_the_receiver_starts_and_queues_before_any_worker_exists(
    receiver: Client, amqp: AbstractConnection, topology: Topology
) -> None:
    statuses = await asyncio.gather(*(_post(receiver, n) for n in range(20)))
    assert {status for status, _ in statuses} == {200}
    async with amqp.channel() as channel:
        queue = await channel.get_queue(topology.queue)
        assert queue.declaration_result.consumer_count == 0
    assert sorted(await queued_keys(amqp, topology.queue)) == sorted(key for _, key in statuses)


@pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None and not os.environ.get("CI"),
    reason="rabbitmqctl is not on this machine (it is in CI)",
)
async def test_rabbitmqctl_close_all_connections_mid_run(receiver: Client, topology: Topology) -> None:
    assert (await _post(receiver, 0))[0] == 200
    closing = asyncio.create_task(
        asyncio.to_thread(rabbitmqctl, "close_all_connections", "ctwa test: broker connections dropped")
    )
    results = []
    n = 1
    while not closing.done():
        results.append(await _post(receiver, n))
        n += 1
    await closing
    assert await receiver.app[PUBLISHER].wait_ready(15)
    after = [await _post(receiver, n + i) for i in range(1, 21)]
    assert {status for status, _ in after} == {200}

    accepted = {key for status, key in results + after if status == 200}
    assert {status for status, _ in results} <= {200, 503}
    async with await connect_amqp() as amqp:  # every earlier connection was closed
        queued = set(await queued_keys(amqp, topology.queue))
    assert accepted <= queued


def _numbered(n: int) -> bytes:
    return fixture_bytes("01_inbound_ctwa_referral.json").replace(
        b"01K94FXHR0TEWH0AVNH9DN65R6", f"01K94FXHR0TEWH0AVNH9D{n:05d}".encode()
    )


async def test_concurrent_callbacks_share_confirmed_messages_byte_identical(
    start_receiver: ReceiverFactory, amqp: AbstractConnection, topology: Topology
) -> None:
    # The product's confirm timeout, not the fixtures' short one: 300 requests at once share this test's event loop
    # with the receiver, and on a slow machine answering them all can take longer than 2 s.
    receiver = await start_receiver(publish_timeout_s=Settings.model_fields["publish_timeout_s"].default)

    async def send(n: int) -> int:
        response = await receiver.post("/webhooks/sinch", data=_numbered(n))
        return response.status

    statuses = await asyncio.gather(*(send(n) for n in range(300)))
    assert set(statuses) == {200}
    messages = await take_all(amqp, topology.queue)
    assert len(messages) < 300  # group commit: callbacks arriving together went in one message
    batches = [m for m in messages if m.content_type == BATCH_CONTENT_TYPE]
    assert batches
    carried = {}
    for message in messages:
        if message.content_type == BATCH_CONTENT_TYPE:
            assert message.routing_key == "batch"
            assert message.delivery_mode == 2
            for callback in unpack(message.body):
                carried[callback.key] = callback
        else:
            carried[message.message_id or ""] = None
    assert sorted(carried) == [f"MESSAGE_INBOUND:01K94FXHR0TEWH0AVNH9D{n:05d}" for n in range(300)]
    for n in range(300):
        callback = carried[f"MESSAGE_INBOUND:01K94FXHR0TEWH0AVNH9D{n:05d}"]
        if callback is not None:
            assert callback.body == _numbered(n)  # the raw bytes, unchanged
            assert callback.trigger is Trigger.MESSAGE_INBOUND
            assert callback.signature_verified is False
            assert abs(callback.received_at.timestamp() - time.time()) < 60


async def test_without_a_linger_every_callback_is_its_own_message(
    start_receiver: ReceiverFactory, amqp: AbstractConnection, topology: Topology
) -> None:
    client = await start_receiver(publish_linger_ms=0)
    statuses = await asyncio.gather(*(client.post("/webhooks/sinch", data=_numbered(n)) for n in range(100)))
    assert {response.status for response in statuses} == {200}
    messages = await take_all(amqp, topology.queue)
    assert sorted(m.message_id or "" for m in messages) == [
        f"MESSAGE_INBOUND:01K94FXHR0TEWH0AVNH9D{n:05d}" for n in range(100)
    ]
    assert {m.content_type for m in messages} == {"application/json"}


async def test_a_lone_callback_does_not_wait_for_the_linger(start_receiver: ReceiverFactory) -> None:
    client = await start_receiver(publish_linger_ms=500)
    for n in range(5):
        started = time.monotonic()
        assert (await client.post("/webhooks/sinch", data=_numbered(n))).status == 200
        assert time.monotonic() - started < 0.25


async def test_with_two_addresses_the_receiver_moves_to_the_one_that_answers(
    start_receiver: ReceiverFactory, amqp: AbstractConnection, topology: Topology
) -> None:
    first, second = TcpRelay(URL(AMQP_URL)), TcpRelay(URL(AMQP_URL))
    await first.start()
    await second.start()
    try:
        receiver = await start_receiver(amqp_url=f"{first.url},{second.url}")
        link = receiver.app[PUBLISHER]._link
        assert (await _post(receiver, 0))[0] == 200
        connected = {first.url: first, second.url: second}
        [dropped] = [relay for url, relay in connected.items() if address(url) == link.broker]
        [other] = [relay for relay in connected.values() if relay is not dropped]
        await dropped.cut()  # that address is gone for good: the receiver must use the other, unrestarted

        statuses = [await _post(receiver, 1)]
        assert await receiver.app[PUBLISHER].wait_ready(15)
        assert link.broker == address(other.url)
        statuses += [(await _post(receiver, n))[0] for n in range(2, 12)]
        assert set(statuses[1:]) == {200}
        assert {key for _, key in [_callback(n) for n in range(2, 12)]} <= set(await queued_keys(amqp, topology.queue))
    finally:
        await first.close()
        await second.close()


_MEMORY_ALARM = "{resource_limit, memory, node()}"


def _alarm(raised: bool) -> None:
    """Raise or clear RabbitMQ's memory alarm on the local node, as crossing the memory watermark does."""
    expression = (
        f"rabbit_alarm:set_alarm({{{_MEMORY_ALARM}, []}})." if raised else f"rabbit_alarm:clear_alarm({_MEMORY_ALARM})."
    )
    rabbitmqctl("eval", expression)


@pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None and not os.environ.get("CI"),
    reason="rabbitmqctl is not on this machine (it is in CI)",
)
@pytest.mark.parametrize("linger_ms", [2, 0], ids=["group commit", "one message per callback"])
async def test_a_blocked_connection_gets_503_at_once_and_recovers_when_unblocked(
    start_receiver: ReceiverFactory,
    amqp: AbstractConnection,
    topology: Topology,
    worker_settings: Settings,
    db: AsyncEngine,
    linger_ms: int,
) -> None:
    receiver = await start_receiver(publish_timeout_s=5.0, publish_linger_ms=linger_ms)
    assert (await _post(receiver, 0))[0] == 200
    publisher = receiver.app[PUBLISHER]
    try:
        await asyncio.to_thread(_alarm, True)
        # RabbitMQ blocks a connection when it next publishes: the callback waiting for that confirm is answered
        # 503 as soon as the broker says so, not after the 5 s confirm timeout.
        started = time.monotonic()
        response = await receiver.post("/webhooks/sinch", data=_callback(1)[0])
        assert response.status == 503
        assert (await response.json())["error"] == "broker_blocked"
        assert time.monotonic() - started < 1.0
        assert publisher.blocked, "RabbitMQ's alarm never blocked the receiver's connection"

        started = time.monotonic()
        response = await receiver.post("/webhooks/sinch", data=_callback(2)[0])
        assert response.status == 503
        assert (await response.json())["error"] == "broker_blocked"
        assert response.headers["Retry-After"] == "5"
        assert time.monotonic() - started < 0.5  # at once: nothing is even tried
        ready = await receiver.get("/readyz")
        assert ready.status == 503
        assert "alarm" in (await ready.json())["reason"]
        metrics = await (await receiver.get("/metrics")).text()
        assert re.search(r"^ctwa_receiver_broker_blocked 1\.0$", metrics, re.MULTILINE)
        assert 'ctwa_receiver_rejected_total{reason="broker_blocked",status="503"} 2.0' in metrics
    finally:
        await asyncio.to_thread(_alarm, False)

    deadline = time.monotonic() + 10
    while publisher.blocked and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert (await receiver.get("/readyz")).status == 200
    assert (await _post(receiver, 3))[0] == 200
    metrics = await (await receiver.get("/metrics")).text()
    assert re.search(r"^ctwa_receiver_broker_blocked 0\.0$", metrics, re.MULTILINE)
    # The callback answered 503 while its publish waited went out once the alarm cleared; Sinch sends it again,
    # and the workers store it once. The one refused before any publish never went out.
    assert (await _post(receiver, 1))[0] == 200
    async with amqp.channel() as channel:
        queue = await channel.declare_queue(topology.queue, passive=True)
        assert queue.declaration_result.message_count == 4  # 0, 1 (sent after the alarm), 3, 1 (Sinch's retry)
    await drain(worker_settings)
    stored = {_callback(n)[1].split(":")[1] for n in (0, 1, 3)}
    assert sorted(row["message_id"] for row in await rows(db, "SELECT message_id FROM messages")) == sorted(stored)
    assert (await rows(db, "SELECT count(*) AS n FROM callbacks"))[0]["n"] == 3


def _policy(name: str, queue: str | None) -> None:
    """Set (for ``queue``) or clear a RabbitMQ policy that lets the queue hold nothing: with the queue's
    reject-publish overflow, the broker then nacks every publish to it."""
    command = (
        ["set_policy", "--apply-to", "queues", name, f"^{re.escape(queue)}$", '{"max-length": 0}']
        if queue
        else ["clear_policy", name]
    )
    rabbitmqctl(*command)


@pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None and not os.environ.get("CI"),
    reason="rabbitmqctl is not on this machine (it is in CI)",
)
async def test_a_connection_that_only_refuses_is_replaced(
    start_receiver: ReceiverFactory, amqp: AbstractConnection, topology: Topology
) -> None:
    receiver = await start_receiver(publish_replace_after_s=1.0)
    link = receiver.app[PUBLISHER]._link
    assert (await _post(receiver, 0))[0] == 200
    policy = f"{topology.prefix}-refuse"
    statuses = []
    try:
        await asyncio.to_thread(_policy, policy, topology.queue)
        for n in range(1, 200):
            response = await receiver.post("/webhooks/sinch", data=_callback(n)[0])
            statuses.append((response.status, (await response.json()).get("error")))
            if link.reconnects:
                break
            await asyncio.sleep(0.05)
        assert link.reconnects == 1, "the connection was never replaced"
        metrics = await (await receiver.get("/metrics")).text()
        assert re.search(r"^ctwa_receiver_broker_replaced_total 1\.0$", metrics, re.MULTILINE)
    finally:
        await asyncio.to_thread(_policy, policy, None)
    assert statuses
    assert {status for status, _ in statuses} == {503}
    assert {error for _, error in statuses} <= {"nacked", "broker_unavailable"}
    assert await receiver.app[PUBLISHER].wait_ready(15)
    assert (await _post(receiver, 500))[0] == 200
    assert set(await queued_keys(amqp, topology.queue)) == {_callback(0)[1], _callback(500)[1]}
