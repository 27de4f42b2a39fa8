"""Fixtures around the real RabbitMQ (and, where needed, Postgres).

Every test gets its own broker prefix (``ctwa-test-<run>-<n>``), so tests never see each other's queues
nor those of a running instance; the exchanges and queues are deleted after each test.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ingest.receiver import PUBLISHER, create_app
from ingest.settings import Settings
from ingest.topology import Topology

# A developer's own CTWA_* settings must not leak into the tests; CTWA_TEST_* point the tests at services.
for _name in [name for name in os.environ if name.startswith("CTWA_") and not name.startswith("CTWA_TEST_")]:
    del os.environ[_name]

AMQP_URL = os.environ.get("CTWA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
RUN_ID = uuid.uuid4().hex[:8]
_prefixes = itertools.count()


def _unreachable(service: str, error: BaseException) -> None:
    message = f"{service} is not reachable ({error!r}); start it, or see the README"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


async def connect_amqp() -> AbstractConnection:
    try:
        return await aio_pika.connect(AMQP_URL, timeout=5)
    except Exception as error:
        _unreachable("RabbitMQ", error)
        raise


@pytest.fixture
async def amqp() -> AsyncIterator[AbstractConnection]:
    """The test's own connection, to look into queues."""
    async with await connect_amqp() as connection:
        yield connection


@pytest.fixture
async def topology() -> AsyncIterator[Topology]:
    topology = Topology(prefix=f"ctwa-test-{RUN_ID}-{next(_prefixes)}")
    yield topology
    # A connection of its own: the test may have dropped every connection on the broker.
    async with await connect_amqp() as connection, connection.channel() as channel:
        for queue in (topology.queue, topology.dead_letter_queue):
            await channel.queue_delete(queue)
        for exchange in (topology.exchange, topology.dead_letter_exchange):
            await channel.exchange_delete(exchange)


@pytest.fixture
def settings(topology: Topology) -> Settings:
    return Settings(amqp_url=AMQP_URL, amqp_prefix=topology.prefix, publish_timeout_s=2.0)


ReceiverFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def start_receiver(settings: Settings) -> AsyncIterator[ReceiverFactory]:
    """Start a receiver app on a real port: ``await start_receiver(clock=..., **setting_overrides)``."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(
        clock: Callable[[], float] | None = None, wait_ready: bool = True, **overrides: Any
    ) -> TestClient[web.Request, web.Application]:
        app_settings = settings.model_copy(update=overrides)
        app = create_app(app_settings) if clock is None else create_app(app_settings, clock=clock)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        if wait_ready:
            assert await app[PUBLISHER].wait_ready(10), "the receiver did not connect to RabbitMQ"
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def receiver(start_receiver: ReceiverFactory) -> TestClient[web.Request, web.Application]:
    """A receiver with signatures off, connected to the broker."""
    return await start_receiver()
