"""The broker topology, as declared on the real RabbitMQ: a durable quorum queue that dead-letters, by RabbitMQ itself
past the delivery limit too."""

from __future__ import annotations

import asyncio

import pytest
from aio_pika.abc import AbstractConnection
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import AMQP_URL, enqueue, inbound_bodies, take_all

from ingest.settings import Settings
from ingest.topology import Topology

Client = TestClient[web.Request, web.Application]


async def test_the_queue_is_durable_quorum_with_dead_lettering(
    receiver: Client, amqp: AbstractConnection, topology: Topology
) -> None:
    async with amqp.channel() as channel:
        # Re-declaring with the shared definition succeeds only if the receiver declared exactly that.
        exchange, queue = await topology.declare(channel)
        assert queue.arguments is not None
        assert queue.arguments["x-queue-type"] == "quorum"
        assert queue.arguments["x-dead-letter-exchange"] == topology.dead_letter_exchange
        assert queue.durable
        assert exchange.durable
        with pytest.raises(Exception, match="PRECONDITION_FAILED"):
            await channel.declare_queue(topology.queue, durable=True, arguments={"x-queue-type": "classic"})


async def test_delivery_limit_dead_letters_a_message_redelivered_too_often(
    worker_settings: Settings, amqp: AbstractConnection, topology: Topology
) -> None:
    limited = Topology(topology.prefix, delivery_limit=2)
    await enqueue(AMQP_URL, limited, inbound_bodies(1))
    async with amqp.channel() as channel:
        queue = await channel.get_queue(limited.queue)
        for _ in range(3):
            message = await queue.get(timeout=5)
            await message.nack(requeue=True)
    # RabbitMQ dead-letters it itself, a moment later: not a confirmed publish of ours to wait for.
    for _ in range(100):
        if dead_letters := await take_all(amqp, limited.dead_letter_queue):
            break
        await asyncio.sleep(0.05)
    [dead] = dead_letters
    assert dead.headers["x-death"][0]["reason"] == "delivery_limit"  # type: ignore[index]
