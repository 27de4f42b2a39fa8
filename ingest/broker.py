"""A connection to RabbitMQ kept open: the reconnect loop both the receiver and the workers run."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress

import aio_pika
from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from ingest.backoff import backoff

__all__ = ["BrokerLink"]

log = logging.getLogger(__name__)


class BrokerLink:
    """Connects (with backoff), runs ``setup`` on a new confirm-mode channel, waits until that channel is lost for
    any reason — the connection's loss included — runs ``teardown``, and starts over, until `close`."""

    def __init__(
        self,
        url: str,
        name: str,
        setup: Callable[[AbstractChannel], Awaitable[None]],
        teardown: Callable[[], None],
    ) -> None:
        self._url = url
        self._name = name
        self._setup = setup
        self._teardown = teardown
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0
        self.connected_at = 0.0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

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

    async def _stay_connected(self) -> None:
        delays = backoff(initial=0.1, cap=5.0)
        while True:
            try:
                connection = await aio_pika.connect(
                    self._url, timeout=10, client_properties={"connection_name": self._name}
                )
            except (*CONNECTION_EXCEPTIONS, TimeoutError) as error:
                delay = next(delays)
                log.warning("broker unreachable, retrying", extra={"error": repr(error), "retry_in_s": delay})
                await asyncio.sleep(delay)
                continue
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                await self._setup(channel)
                self._connected.set()
                self.connected_at = time.monotonic()
                delays = backoff(initial=0.1, cap=5.0)
                log.info("broker ready", extra={"connection": self._name})
                await channel.closed()
                log.warning("broker channel closed, reconnecting")
            except (*CONNECTION_EXCEPTIONS, TimeoutError) as error:
                log.warning("broker setup failed, reconnecting", extra={"error": repr(error)})
            finally:
                if self._connected.is_set():
                    self.reconnects += 1
                self._connected.clear()
                self._teardown()
                with suppress(*CONNECTION_EXCEPTIONS, TimeoutError):
                    await connection.close()
            await asyncio.sleep(next(delays))
