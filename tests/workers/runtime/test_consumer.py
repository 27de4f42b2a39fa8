"""The worker's side of the broker, against the real RabbitMQ: deliveries wait in the buffer, one acknowledgement
settles every earlier delivery on its channel, dead letters carry their reasons, and a lost connection gives its
unacknowledged messages back to the queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection
from support import AMQP_URL, TcpRelay, enqueue, inbound_bodies, key_of, queued_keys, take_all
from yarl import URL

from ingest.callback import Callback, Trigger
from ingest.envelope import BATCH_CONTENT_TYPE, BATCH_ROUTING_KEY, UNVERIFIED_APP_ID, VERIFIED_APP_ID, pack, received_at
from ingest.topology import Topology
from workers.runtime.consumer import AT_HEADER, HISTORY_HEADER, REASON_HEADER, BrokerLost, Consumer

StartConsumer = Callable[..., Awaitable[Consumer]]


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


@pytest.fixture
async def start_consumer(topology: Topology) -> AsyncIterator[StartConsumer]:
    """``await start_consumer(url=...)``: a consumer of the test's queue, connected; closed after the test."""
    consumers: list[Consumer] = []

    async def start(url: str = AMQP_URL) -> Consumer:
        consumer = Consumer([url], topology, prefetch=100, connection_name="ctwa-test-consumer")
        consumers.append(consumer)
        await consumer.start()
        await until(lambda: consumer.connected, "connected")
        return consumer

    yield start
    for consumer in consumers:
        await consumer.close()


async def ready(amqp: AbstractConnection, queue: str) -> int:
    """Messages ready in ``queue``, neither delivered nor acknowledged."""
    async with amqp.channel() as channel:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def given_back(amqp: AbstractConnection, queue: str) -> list[str]:
    """The keys of the messages a closed channel gave back to ``queue`` (all at once), taken from it."""
    for _ in range(3000):
        if await ready(amqp, queue):
            return await queued_keys(amqp, queue)
        await asyncio.sleep(0.01)
    raise AssertionError("nothing came back to the queue")


async def test_deliveries_wait_in_the_buffer(start_consumer: StartConsumer, topology: Topology) -> None:
    consumer = await start_consumer()
    bodies = inbound_bodies(5)
    keys = await enqueue(AMQP_URL, topology, bodies)
    await until(lambda: len(consumer.buffer) == 5, "five messages in the buffer")
    assert consumer.arrived.is_set()
    assert sorted(message.body for message in consumer.buffer) == sorted(bodies)
    assert sorted(message.message_id or "" for message in consumer.buffer) == sorted(keys)


async def test_acknowledging_a_delivery_settles_the_earlier_ones_on_its_channel(
    start_consumer: StartConsumer, amqp: AbstractConnection, topology: Topology
) -> None:
    consumer = await start_consumer()
    await enqueue(AMQP_URL, topology, inbound_bodies(5))
    await until(lambda: len(consumer.buffer) == 5, "five messages in the buffer")
    delivered = list(consumer.buffer)

    await consumer.ack([delivered[2]])  # the third: the first two with it, one frame
    await consumer.close()  # unacknowledged deliveries go back to the queue

    assert sorted(await given_back(amqp, topology.queue)) == sorted(m.message_id or "" for m in delivered[3:])


async def test_a_message_is_dead_lettered_with_its_reason_and_history(
    start_consumer: StartConsumer, amqp: AbstractConnection, topology: Topology
) -> None:
    consumer = await start_consumer()
    body = inbound_bodies(1)[0]
    sent_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(topology.exchange)
        await exchange.publish(
            aio_pika.Message(
                body,
                headers={HISTORY_HEADER: ["invalid_json: once before"], "x-kept": "yes"},
                content_type="application/json",
                message_id=key_of(body),
                type="MESSAGE_INBOUND",
                timestamp=sent_at,
                app_id=VERIFIED_APP_ID,
            ),
            "message.inbound",
        )
    await until(lambda: len(consumer.buffer) == 1, "the message in the buffer")
    [message] = consumer.buffer
    started = datetime.now(UTC)

    await consumer.dead_letter(message, "database_22P05: the database refused it")

    [dead] = await take_all(amqp, topology.dead_letter_queue)
    assert dead.body == body
    assert (dead.routing_key, dead.message_id, dead.content_type, dead.type) == (
        "message.inbound",
        key_of(body),
        "application/json",
        "MESSAGE_INBOUND",
    )
    assert (dead.app_id, dead.timestamp, dead.delivery_mode) == (VERIFIED_APP_ID, sent_at, 2)
    headers = dead.headers or {}
    assert headers[REASON_HEADER] == "database_22P05: the database refused it"
    assert headers[HISTORY_HEADER] == ["invalid_json: once before", "database_22P05: the database refused it"]
    assert started <= datetime.fromisoformat(str(headers[AT_HEADER])) <= datetime.now(UTC)
    assert headers["x-kept"] == "yes"

    # Dead-lettering is not acknowledging: that is the caller's to do, once the copy is confirmed.
    await consumer.close()
    assert await given_back(amqp, topology.queue) == [key_of(body)]


async def test_one_callback_of_a_batch_is_dead_lettered_alone(
    start_consumer: StartConsumer, amqp: AbstractConnection, topology: Topology
) -> None:
    consumer = await start_consumer()
    received = datetime(2025, 11, 3, 9, 14, 9, 250000, tzinfo=UTC)
    carried = [
        Callback(body, Trigger.MESSAGE_INBOUND, key_of(body), received, verified)
        for body, verified in zip(inbound_bodies(3), (True, False, True), strict=True)
    ]
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(topology.exchange)
        await exchange.publish(
            aio_pika.Message(pack(carried), content_type=BATCH_CONTENT_TYPE), routing_key=BATCH_ROUTING_KEY
        )
    await until(lambda: len(consumer.buffer) == 1, "the batch in the buffer")
    [message] = consumer.buffer

    await consumer.dead_letter(message, "database_22P05: refused", carried[1])

    [dead] = await take_all(amqp, topology.dead_letter_queue)
    assert dead.body == carried[1].body  # as a one-callback message, the bytes unchanged
    assert (dead.routing_key, dead.content_type, dead.message_id, dead.type) == (
        "message.inbound",
        "application/json",
        carried[1].key,
        "MESSAGE_INBOUND",
    )
    assert dead.app_id == UNVERIFIED_APP_ID
    assert dead.timestamp == datetime(2025, 11, 3, 9, 14, 9, tzinfo=UTC)  # AMQP keeps whole seconds
    assert received_at(dead.timestamp, dead.headers) == received  # the header, the milliseconds
    assert (dead.headers or {})[REASON_HEADER] == "database_22P05: refused"
    assert (dead.headers or {})[HISTORY_HEADER] == ["database_22P05: refused"]


async def test_a_lost_connection_empties_the_buffer_and_the_broker_delivers_again(
    start_consumer: StartConsumer, topology: Topology
) -> None:
    relay = TcpRelay(URL(AMQP_URL))
    await relay.start()
    try:
        consumer = await start_consumer(relay.url)
        keys = await enqueue(AMQP_URL, topology, inbound_bodies(3))
        await until(lambda: len(consumer.buffer) == 3, "three messages in the buffer")
        before = list(consumer.buffer)
        assert not any(message.redelivered for message in before)

        await relay.cut()
        await until(lambda: not consumer.connected, "the loss noticed")
        assert not consumer.buffer  # they belong to the lost channel: forgotten
        with pytest.raises(BrokerLost):
            await consumer.ack(before)

        await relay.start()
        await until(lambda: len(consumer.buffer) == 3, "three messages delivered again")
        assert sorted(message.message_id or "" for message in consumer.buffer) == sorted(keys)
        assert all(message.redelivered for message in consumer.buffer)
        await consumer.ack(list(consumer.buffer))
    finally:
        await relay.close()


async def consumers_of(amqp: AbstractConnection, queue: str) -> int | None:
    """How many consumers ``queue`` has; ``None`` while it does not exist."""
    try:
        async with amqp.channel() as channel:
            declared = await channel.declare_queue(queue, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return None
    return declared.declaration_result.consumer_count


async def test_a_consumer_the_broker_cancels_subscribes_again(
    start_consumer: StartConsumer, amqp: AbstractConnection, topology: Topology
) -> None:
    consumer = await start_consumer()
    first = await enqueue(AMQP_URL, topology, inbound_bodies(1, tag="X"))
    await until(lambda: len(consumer.buffer) == 1, "the first delivery")
    async with amqp.channel() as channel:
        await channel.queue_delete(topology.queue)  # RabbitMQ cancels the queue's consumers (basic.cancel)
    # The consumer declares the queue again and consumes from it, on the channel it had.
    for _ in range(300):
        if await consumers_of(amqp, topology.queue) == 1:
            break
        await asyncio.sleep(0.05)
    assert await consumers_of(amqp, topology.queue) == 1

    second = await enqueue(AMQP_URL, topology, inbound_bodies(2, tag="Y"))
    await until(lambda: len(consumer.buffer) == 3, "deliveries after the cancel")
    assert consumer.connected
    assert [message.message_id for message in consumer.buffer] == [*first, *second]
    await consumer.ack(list(consumer.buffer)[1:])  # the new subscription's deliveries are settled as usual
    assert await ready(amqp, topology.queue) == 0


async def test_an_acknowledgement_cut_off_with_its_connection_is_a_lost_broker(
    start_consumer: StartConsumer, topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiormq fails a frame waiting on a channel that closes without a reason with a bare Exception: the worker must
    take it as the channel lost (the broker delivers the messages again), not as its own failure."""
    consumer = await start_consumer()
    await enqueue(AMQP_URL, topology, inbound_bodies(2))
    await until(lambda: len(consumer.buffer) == 2, "two messages in the buffer")
    delivered = list(consumer.buffer)

    async def cut_off(self: object, multiple: bool = False) -> None:
        raise Exception

    monkeypatch.setattr(type(delivered[0]), "ack", cut_off)
    with pytest.raises(BrokerLost):
        await consumer.ack(delivered)
    monkeypatch.undo()

    async def broken(self: object, multiple: bool = False) -> None:
        raise ValueError("our own bug")

    monkeypatch.setattr(type(delivered[0]), "ack", broken)
    with pytest.raises(ValueError, match="our own bug"):  # anything else, on an open channel, is not hidden
        await consumer.ack(delivered)
