"""The receiver's side of the broker: one connection kept alive, confirmed publishes, a clear failure otherwise."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import aiormq.abc
from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError, PublishError
from pamqp.commands import Basic

from ingest.broker import BrokerLink
from ingest.callback import Callback
from ingest.envelope import BATCH_CONTENT_TYPE, BATCH_ROUTING_KEY, Single, pack
from ingest.receiver.metrics import ReceiverMetrics
from ingest.topology import Topology

__all__ = ["BrokerUnavailable", "Publisher"]

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The broker did not confirm the callback; it may on a retry. ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Publisher:
    """Keeps a confirm-mode channel to the broker, reconnecting by itself, and publishes callbacks on it.

    With a ``linger``, callbacks arriving together share one message (group commit): a callback waits for others
    at most ``linger`` seconds, and not at all when no publish is waiting for its confirm. Each caller returns
    only once the message carrying its callback is confirmed. Without a linger, one message per callback.

    While there is no channel, or while the broker blocks the connection (``connection.blocked``: a memory or disk
    alarm, during which a publish would wait until it clears), `publish` fails at once rather than queueing: the
    caller answers 503 and Sinch retries, so nothing waits in this process's memory. RabbitMQ says it blocks a
    connection only when a publish reaches it: the publishes then waiting for their confirm fail too, within
    ``blocked_check`` seconds, not after the whole ``confirm_timeout`` (their tasks are cancelled, and the
    cancellation turned into `BrokerUnavailable`; a confirm that came just before the cancellation reads as refused:
    a 503, never a 200 without a confirm). aiormq still holds each of those publishes and sends it once the alarm
    clears: a copy of a callback Sinch retries, which the workers drop as a duplicate.
    """

    def __init__(
        self,
        urls: Sequence[str],
        topology: Topology,
        metrics: ReceiverMetrics,
        *,
        confirm_timeout: float,
        linger: float = 0.0,
        batch_max: int = 64,
        batch_bytes: int = 1024 * 1024,
        replace_after: float = 10.0,
        blocked_check: float = 0.05,
        connection_name: str = "ctwa-receiver",
    ) -> None:
        self._topology = topology
        self._metrics = metrics
        self._confirm_timeout = confirm_timeout
        self._linger = linger
        self._batch_max = batch_max
        self._batch_bytes = batch_bytes
        # aio-pika opens and declares; publishes go straight to its underlying aiormq channel, which skips
        # building an aio_pika.Message per callback (a fifth of the receiver's CPU under load).
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._link = BrokerLink(urls, connection_name, self._on_channel, self._on_channel_lost)
        self._blocked = False  # as last seen, to log the changes
        self._replace_after = replace_after
        self._refused_since: float | None = None  # the first of the publishes refused since the last confirm
        self._replacing: asyncio.Task[None] | None = None
        metrics.broker_blocked.set_function(lambda: float(self._link.blocked))
        self._pending: list[tuple[Callback, asyncio.Future[None]]] = []
        self._pending_bytes = 0
        self._flush_at: asyncio.Handle | None = None
        self._in_flight = 0
        self._sends: set[asyncio.Task[None]] = set()
        # The tasks waiting for a publish's confirm, and those of them cut off because the connection got blocked.
        self._confirming: set[asyncio.Task[Any]] = set()
        self._cut_off: set[asyncio.Task[Any]] = set()
        self._blocked_check = blocked_check
        self._watching: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._channel is not None and not self.blocked

    @property
    def blocked(self) -> bool:
        """Whether the broker blocks publishing now (a resource alarm)."""
        blocked = self._link.blocked
        if blocked != self._blocked:
            self._blocked = blocked
            if blocked:
                log.warning("the broker blocks publishing (a resource alarm): callbacks get 503 until it clears")
            else:
                log.info("the broker takes publishes again")
        return blocked

    async def wait_ready(self, within: float) -> bool:
        """Whether a channel is open, waiting up to ``within`` seconds for one."""
        return await self._link.wait_connected(within)

    async def start(self) -> None:
        await self._link.start()
        self._watching = asyncio.create_task(self._watch_blocked(), name="ctwa-receiver-blocked")

    async def close(self) -> None:
        self._flush()
        if self._sends:
            await asyncio.wait(self._sends)
        if self._watching is not None:
            self._watching.cancel()
            with suppress(asyncio.CancelledError):
                await self._watching
        if self._replacing is not None:
            await self._replacing
        await self._link.close()

    async def publish(self, callback: Callback) -> None:
        """Return once the broker has confirmed ``callback`` into a durable queue; else raise `BrokerUnavailable`."""
        if self._channel is None:
            raise BrokerUnavailable("broker_unavailable")
        if self.blocked:
            raise BrokerUnavailable("broker_blocked")
        if not self._linger:
            await self._send_one(callback)
            return
        confirmed = asyncio.get_running_loop().create_future()
        self._pending.append((callback, confirmed))
        self._pending_bytes += len(callback.body)
        if len(self._pending) >= self._batch_max or self._pending_bytes >= self._batch_bytes:
            self._flush()
        elif self._flush_at is None:
            loop = asyncio.get_running_loop()
            # Nothing waiting for a confirm: go now (what arrives in the same loop turn joins). Otherwise gather.
            self._flush_at = (
                loop.call_soon(self._flush) if not self._in_flight else loop.call_later(self._linger, self._flush)
            )
        await confirmed

    def _flush(self) -> None:
        if self._flush_at is not None:
            self._flush_at.cancel()
            self._flush_at = None
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        if batch:
            self._in_flight += 1
            send = asyncio.create_task(self._send(batch))
            self._sends.add(send)
            send.add_done_callback(self._sends.discard)

    async def _send(self, batch: list[tuple[Callback, asyncio.Future[None]]]) -> None:
        try:
            callbacks = [callback for callback, _ in batch]
            if len(callbacks) == 1:
                await self._send_one(callbacks[0])
            else:
                await self._send_batch(callbacks)
        except BrokerUnavailable as error:
            for _, confirmed in batch:
                if not confirmed.done():
                    confirmed.set_exception(error)
        else:
            for _, confirmed in batch:
                if not confirmed.done():
                    confirmed.set_result(None)
        finally:
            self._in_flight -= 1

    async def _send_one(self, callback: Callback) -> None:
        single = Single.of(callback)
        properties = Basic.Properties(
            content_type=single.content_type,
            delivery_mode=2,  # persistent
            message_id=single.message_id,
            message_type=single.type,
            timestamp=single.timestamp,
            app_id=single.app_id,
            headers=single.headers,
        )
        await self._confirmed(callback.body, single.routing_key, properties, count=1)

    async def _send_batch(self, callbacks: list[Callback]) -> None:
        properties = Basic.Properties(
            content_type=BATCH_CONTENT_TYPE,
            delivery_mode=2,
            # Unique per publish: aiormq matches a returned (unroutable) message to its publish by this id.
            message_id=f"batch:{uuid.uuid4().hex}",
            message_type="BATCH",
            timestamp=callbacks[0].received_at,
            app_id="ctwa-receiver",
        )
        await self._confirmed(pack(callbacks), BATCH_ROUTING_KEY, properties, count=len(callbacks))

    async def _confirmed(self, body: bytes, routing_key: str, properties: Basic.Properties, count: int) -> None:
        channel = self._channel
        if channel is None:
            raise BrokerUnavailable("broker_unavailable")
        started = time.perf_counter()
        # The task awaiting the confirm, cancelled by `_watch_blocked` if the broker blocks the connection.
        waiting = asyncio.current_task()
        assert waiting is not None
        self._confirming.add(waiting)
        try:
            await channel.basic_publish(
                body,
                exchange=self._topology.exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
                timeout=self._confirm_timeout,
            )
        except asyncio.CancelledError:
            if waiting not in self._cut_off or waiting.uncancel() > 0:
                raise  # cancelled for another reason too
            raise BrokerUnavailable("broker_blocked") from None
        except TimeoutError:
            self._refused()
            raise BrokerUnavailable("confirm_timeout") from None
        except PublishError:
            # Returned as unroutable: no queue holds it, so it must not count as accepted.
            raise BrokerUnavailable("unroutable") from None
        except DeliveryError:
            self._refused()
            raise BrokerUnavailable("nacked") from None
        except CONNECTION_EXCEPTIONS as error:
            log.debug("publish failed: %r", error)
            raise BrokerUnavailable("publish_failed") from None
        finally:
            self._confirming.discard(waiting)
            self._cut_off.discard(waiting)
        self._refused_since = None
        self._metrics.confirm_seconds.observe(time.perf_counter() - started)
        self._metrics.message_callbacks.observe(count)

    async def _watch_blocked(self) -> None:
        """Fail the publishes waiting for a confirm as soon as the broker blocks the connection (aiormq tells no
        one: the state is read, every ``blocked_check`` seconds while a publish waits)."""
        while True:
            await asyncio.sleep(self._blocked_check)
            if self._confirming and self.blocked:
                for waiting in self._confirming - self._cut_off:
                    self._cut_off.add(waiting)
                    waiting.cancel()

    def _refused(self) -> None:
        """A publish was nacked or never confirmed. When nothing but that has happened for ``replace_after``
        seconds, the channel is replaced, on another address if there is one: a channel can stay refusing while
        the broker would take the same publish on a new one (RabbitMQ 3.10's quorum queues, a channel opened just
        after the leader's node died, kept a stale leader and nacked everything)."""
        now = time.monotonic()
        if self._refused_since is None:
            self._refused_since = now
        elif now - self._refused_since >= self._replace_after and self._replacing is None:
            log.warning(
                "every publish refused, replacing the broker connection",
                extra={"refused_for_s": round(now - self._refused_since, 1), "broker": self._link.broker},
            )
            self._refused_since = None
            self._metrics.replaced.inc()
            self._replacing = asyncio.create_task(self._link.replace())
            self._replacing.add_done_callback(lambda _: setattr(self, "_replacing", None))

    async def _on_channel(self, channel: AbstractChannel) -> None:
        await self._topology.declare(channel)
        self._channel = await channel.get_underlay_channel()
        self._metrics.broker_ready.set(1)

    def _on_channel_lost(self) -> None:
        self._channel = None
        self._metrics.broker_ready.set(0)
