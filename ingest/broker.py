"""Connections to RabbitMQ — one node, or any of a cluster's: the reconnect loop the receiver and the workers run,
and a one-off connection for the commands.

Given several addresses (the nodes of a cluster, or several load balancers), a process tries them in an order
shuffled once per process, so that processes spread over the nodes; when its connection is lost it goes on with
the next address that answers, as Celery/Kombu and Spring AMQP do. Addresses are logged as host and port only:
the URLs may hold passwords.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from ingest.backoff import backoff

__all__ = ["BrokerLink", "address", "connect", "is_blocked"]

log = logging.getLogger(__name__)


def address(url: str) -> str:
    """``host:port`` of an AMQP URL: what may be shown of it."""
    parsed = urlsplit(url)
    return f"{parsed.hostname}:{parsed.port or (5671 if parsed.scheme == 'amqps' else 5672)}"


async def connect(urls: Sequence[str], name: str) -> AbstractConnection:
    """A connection to the first of ``urls`` that answers (within 10 s each), tried in order; the last failure
    when none does."""
    failure: BaseException | None = None
    for url in urls:
        try:
            return await aio_pika.connect(url, timeout=10, client_properties={"connection_name": name})
        except (*CONNECTION_EXCEPTIONS, TimeoutError) as error:
            log.warning("broker unreachable", extra={"broker": address(url), "error": repr(error)})
            failure = error
    assert failure is not None, "no broker address given"
    raise failure


def is_blocked(connection: AbstractConnection) -> bool:
    """Whether RabbitMQ has blocked ``connection`` (``connection.blocked``: a memory or disk alarm): its publishes
    would wait until the alarm clears."""
    unblocked = _unblocked(connection)
    return unblocked is not None and not unblocked.is_set()


def _unblocked(connection: AbstractConnection) -> asyncio.Event | None:
    """The event aiormq keeps to hold its writer back while the connection is blocked: it publishes no accessor
    (tests/ingest/receiver/test_publisher.py raises a real alarm to check this still reads it)."""
    underlay = connection.transport
    unblocked = getattr(underlay.connection, "_Connection__connection_unblocked", None) if underlay else None
    return unblocked if isinstance(unblocked, asyncio.Event) else None


class BrokerLink:
    """Connects (with backoff) to one of ``urls``, runs ``setup`` on a new confirm-mode channel, waits until that
    channel is lost for any reason — the connection's loss included — runs ``teardown``, and starts over with the
    next address, until `close`."""

    def __init__(
        self,
        urls: Sequence[str],
        name: str,
        setup: Callable[[AbstractChannel], Awaitable[None]],
        teardown: Callable[[], None],
    ) -> None:
        if isinstance(urls, str) or not urls:
            raise ValueError("a sequence of one broker URL or more is needed")
        self._urls = random.sample(list(urls), len(urls))  # this process's order
        self._name = name
        self._setup = setup
        self._teardown = teardown
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connection: AbstractConnection | None = None
        self._unblocked: asyncio.Event | None = None  # the connection's, read on every publish
        self.reconnects = 0
        self.connected_at = 0.0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def blocked(self) -> bool:
        """Whether the broker has blocked this connection (a resource alarm); see `is_blocked`."""
        return self._unblocked is not None and not self._unblocked.is_set()

    @property
    def broker(self) -> str | None:
        """``host:port`` of the node connected to, if any."""
        return address(self._urls[0]) if self.connected else None

    async def wait_connected(self, within: float) -> bool:
        """Whether a channel is set up, waiting up to ``within`` seconds for one."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), within)
        return self.connected

    async def start(self) -> None:
        self._task = asyncio.create_task(self._stay_connected(), name=self._name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def replace(self) -> None:
        """Close the connection in use: the link starts over with the next address (or the same, if it is the only
        one)."""
        connection = self.connection
        if connection is not None:
            with suppress(*CONNECTION_EXCEPTIONS, TimeoutError):
                await connection.close()

    def _next_address(self) -> None:
        """Go on with the next address: the current one is tried again last."""
        self._urls.append(self._urls.pop(0))

    async def _connect(self) -> AbstractConnection:
        """The first address that answers, in this process's order; the order then starts with it."""
        for _ in range(len(self._urls)):
            try:
                return await connect(self._urls[:1], self._name)
            except (*CONNECTION_EXCEPTIONS, TimeoutError):
                if len(self._urls) == 1:
                    raise
                self._next_address()
        raise ConnectionError("no broker address answers")

    async def _stay_connected(self) -> None:
        delays = backoff(initial=0.1, cap=5.0)
        while True:
            try:
                connection = await self._connect()
            except (*CONNECTION_EXCEPTIONS, TimeoutError, ConnectionError) as error:
                delay = next(delays)
                log.warning(
                    "no broker reachable, retrying",
                    extra={"brokers": len(self._urls), "error": repr(error), "retry_in_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)
                continue
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                await self._setup(channel)
                self.connection, self._unblocked = connection, _unblocked(connection)
                self._connected.set()
                self.connected_at = time.monotonic()
                delays = backoff(initial=0.1, cap=5.0)
                log.info("broker ready", extra={"connection": self._name, "broker": address(self._urls[0])})
                await channel.closed()
                log.warning("broker channel closed, reconnecting", extra={"broker": address(self._urls[0])})
            except (*CONNECTION_EXCEPTIONS, TimeoutError) as error:
                log.warning(
                    "broker setup failed, reconnecting",
                    extra={"broker": address(self._urls[0]), "error": repr(error)},
                )
            finally:
                if self._connected.is_set():
                    self.reconnects += 1
                self._connected.clear()
                self.connection = self._unblocked = None
                self._teardown()
                with suppress(*CONNECTION_EXCEPTIONS, TimeoutError):
                    await connection.close()
            if len(self._urls) > 1:
                self._next_address()
            await asyncio.sleep(next(delays))
