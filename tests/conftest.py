"""Fixtures around the real RabbitMQ (and, where needed, Postgres). What tests import lives in support.py.

Every test gets its own broker prefix (``ctwa-test-<run>-<n>``), so tests never see each other's queues
nor those of a running instance; the exchanges and queues are deleted after each test.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aio_pika.abc import AbstractConnection
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cluster import Cluster, ClusterUnavailable
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from support import (
    AMQP_URL,
    DATABASE_URL,
    RUN_ID,
    ReceiverFactory,
    cannot_connect,
    connect_amqp,
    drop_database,
    empty,
    free_port,
    unavailable,
    unreachable,
)

from ingest.receiver.app import PUBLISHER, create_app
from ingest.settings import Settings
from ingest.topology import Topology
from workers.commands.migrate import upgrade

_prefixes = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--compose",
        action="store_true",
        help="run tests/compose: the stack on a real Docker engine (.ci/compose runs them; slow)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # A developer's own CTWA_* settings must not leak into the tests; CTWA_TEST_* point the tests at services.
    for name in [name for name in os.environ if name.startswith("CTWA_") and not name.startswith("CTWA_TEST_")]:
        del os.environ[name]


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
        await topology.delete(channel)


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A database of this test run's own, migrated once with ``ctwa migrate``, dropped at the end."""
    url = make_url(DATABASE_URL).set(database=f"ctwa_test_{RUN_ID}").render_as_string(hide_password=False)
    try:
        await asyncio.to_thread(upgrade, url)
    except Exception as error:
        if cannot_connect(error):
            unreachable("PostgreSQL", error)
        await drop_database(url)
        raise  # a migration that fails is a failure, not a service that is down
    yield url
    await drop_database(url)


@pytest.fixture(scope="session")
async def rabbitmq_cluster() -> AsyncIterator[Cluster]:
    """A real three-node RabbitMQ cluster of this run's own (tests/cluster.py), started once (about 15 s) by the
    first test that asks for it; every node is killed and its files removed at the end of the run. Skips loudly if
    ``rabbitmq-server`` is missing or the cluster does not form (with the nodes' logs); with ``CI`` set, fails."""
    try:
        cluster = await Cluster.start_all(RUN_ID)
    except ClusterUnavailable as error:
        unavailable(f"no RabbitMQ cluster: {error}")
    try:
        yield cluster
    finally:
        await cluster.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The test database, emptied before the test (its erasure key stays: it is set once, by the migration)."""
    engine = create_async_engine(database_url)
    await empty(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def settings(topology: Topology) -> Settings:
    return Settings(
        amqp_url=AMQP_URL,
        amqp_prefix=topology.prefix,
        publish_timeout_s=2.0,
        batch_size=100,
        batch_linger_ms=20,
        worker_metrics_port=0,
        shutdown_grace_s=10,
    )


@pytest.fixture
def worker_settings(settings: Settings, db: AsyncEngine, database_url: str) -> Settings:
    """Settings for a worker on the test's queues and the (emptied) test database."""
    return settings.model_copy(update={"database_url": database_url})


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


@pytest.fixture
def free_http_port() -> int:
    return free_port()
