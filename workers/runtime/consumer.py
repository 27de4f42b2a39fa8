"""The worker's side of the broker: consume with a bounded prefetch into a local buffer, acknowledge and dead-letter.

Unacknowledged messages belong to the channel they came on. When that channel is lost, the broker hands them out
again, so the consumer forgets them: a batch that was being stored is stored (the archive de-duplicates the
redelivery), and its acknowledgement is simply lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, ChannelInvalidStateError
from pamqp.commands import Basic

from ingest.backoff import backoff
from ingest.broker import BrokerLink
from ingest.callback import Callback
from ingest.envelope import Single
from ingest.topology import Topology

__all__ = ["AT_HEADER", "HISTORY_HEADER", "REASON_HEADER", "BrokerLost", "Consumer", "copy_of"]

log = logging.getLogger(__name__)

REASON_HEADER = "x-ctwa-dead-letter-reason"
HISTORY_HEADER = "x-ctwa-dead-letter-history"
AT_HEADER = "x-ctwa-dead-lettered-at"
_REDELIVERY_GRACE_S = 3.0


def copy_of(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """A persistent copy of ``message`` to publish again — its body and properties — with ``headers``."""
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )


class BrokerLost(Exception):
    """The channel the messages came on is gone; the broker will deliver them again."""


def _closed(message: AbstractIncomingMessage) -> bool:
    try:
        return bool(message.channel.is_closed)
    except ChannelInvalidStateError:
        return True


class Consumer:
    """Consumes the main queue, reconnecting by itself; messages wait in `buffer` until the worker takes them."""

    def __init__(
        self, urls: Sequence[str], topology: Topology, *, prefetch: int, connection_name: str = "ctwa-worker"
    ) -> None:
        self._topology = topology
        self._prefetch = prefetch
        self.buffer: deque[AbstractIncomingMessage] = deque()
        self.arrived = asyncio.Event()
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._dead_letter_exchange: AbstractExchange | None = None
        self._consumer_tag: str | None = None
        self._consuming = True
        self._resubscribing: asyncio.Task[None] | None = None
        self._link = BrokerLink(urls, connection_name, self._on_channel, self._on_channel_lost)

    @property
    def connected(self) -> bool:
        return self._link.connected

    async def start(self) -> None:
        await self._link.start()

    async def close(self) -> None:
        """Close the connection; unacknowledged messages go back to the queue."""
        if self._resubscribing is not None:
            self._resubscribing.cancel()
            with suppress(asyncio.CancelledError):
                await self._resubscribing
        await self._link.close()

    async def stop_consuming(self) -> None:
        """Ask for no more messages; those already delivered stay in `buffer` to be stored."""
        self._consuming = False
        queue, tag = self._queue, self._consumer_tag
        if queue is not None and tag is not None:
            with suppress(*CONNECTION_EXCEPTIONS, TimeoutError):
                await queue.cancel(tag, timeout=5)
        self._consumer_tag = None

    async def queue_is_empty(self) -> bool:
        """Whether the main queue has no message ready (each worker's unacknowledged ones are not counted).

        Shortly after a reconnect it answers no: what the lost channel held goes back to the queue only once the
        broker has noticed the loss, and until then it is neither ready nor ours.
        """
        channel = self._channel
        if channel is None:
            return False
        if self._link.reconnects and time.monotonic() - self._link.connected_at < _REDELIVERY_GRACE_S:
            return False
        try:
            queue = await channel.declare_queue(self._topology.queue, passive=True, timeout=5)
        except (*CONNECTION_EXCEPTIONS, TimeoutError):
            return False
        result = queue.declaration_result
        return result.message_count == 0

    async def queue_stats(self) -> tuple[int, int, int] | None:
        """Messages ready in the main queue, its consumers, and dead letters; ``None`` without a channel."""
        channel = self._channel
        if channel is None:
            return None
        try:
            main = await channel.declare_queue(self._topology.queue, passive=True, timeout=5)
            dead = await channel.declare_queue(self._topology.dead_letter_queue, passive=True, timeout=5)
        except (*CONNECTION_EXCEPTIONS, TimeoutError):
            return None
        ready, consumers = main.declaration_result.message_count, main.declaration_result.consumer_count
        return ready or 0, consumers or 0, dead.declaration_result.message_count or 0

    async def ack(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        """Acknowledge ``messages`` (in delivery order) with one frame per channel; raise `BrokerLost` if it is gone.

        ``multiple`` acknowledges every earlier delivery on the channel too. That is right here: the worker takes
        messages in delivery order and settles each batch before the next, so nothing earlier is still open.
        """
        last_on_channel: dict[int, AbstractIncomingMessage] = {}
        lost = False
        for message in messages:
            try:
                last_on_channel[id(message.channel)] = message
            except ChannelInvalidStateError:  # its channel is closed: the broker delivers it again
                lost = True
        for message in last_on_channel.values():
            try:
                await message.ack(multiple=True)
            except (*CONNECTION_EXCEPTIONS, TimeoutError):
                lost = True
            except Exception as error:
                # A connection cut while the frame waits to be written: aiormq fails what waits on the closing
                # channel with a bare Exception.
                if type(error) is not Exception and not _closed(message):
                    raise
                lost = True
        if lost:
            raise BrokerLost("acknowledgement lost with the channel")

    async def dead_letter(
        self, message: AbstractIncomingMessage, reason: str, callback: Callback | None = None
    ) -> None:
        """Publish to the dead-letter exchange, confirmed, with ``reason`` — the message, or only ``callback`` of it
        (a callback of a batch goes alone, as a one-callback message) — before the caller acknowledges it."""
        exchange = self._dead_letter_exchange
        if exchange is None:
            raise BrokerLost("no channel to dead-letter on")
        headers = dict(message.headers or {})
        history = headers.get(HISTORY_HEADER)
        previous = [str(item) for item in history] if isinstance(history, list) else []
        headers[HISTORY_HEADER] = [*previous, reason]
        headers[REASON_HEADER] = reason
        headers[AT_HEADER] = datetime.now(UTC).isoformat()
        if callback is None:
            copy, routing_key = copy_of(message, headers), message.routing_key or "unknown"
        else:
            single = Single.of(callback)
            properties = single._asdict()
            routing_key = properties.pop("routing_key")
            headers = {**properties.pop("headers"), **headers}
            copy = aio_pika.Message(
                callback.body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties
            )
        try:
            await exchange.publish(copy, routing_key, mandatory=True, timeout=10)
        except (*CONNECTION_EXCEPTIONS, TimeoutError) as error:
            raise BrokerLost(f"dead-letter publish failed: {error!r}") from None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.buffer.append(message)
        self.arrived.set()

    async def _on_channel(self, channel: AbstractChannel) -> None:
        await channel.set_qos(prefetch_count=self._prefetch)
        (await channel.get_underlay_channel()).on_consumer_cancel_callbacks.add(self._on_cancelled)
        _, queue = await self._topology.declare(channel)
        self._dead_letter_exchange = await channel.get_exchange(self._topology.dead_letter_exchange, ensure=False)
        self._channel, self._queue = channel, queue
        if self._consuming:
            self._consumer_tag = await queue.consume(self._on_message)
        log.info("consuming", extra={"queue": self._topology.queue, "prefetch": self._prefetch})

    async def _on_cancelled(self, frame: Basic.Cancel) -> None:
        """The broker cancelled our consumer (``basic.cancel``: the queue was deleted, or moved away from under it):
        subscribe again on the same channel, which keeps what it was handed — declaring the queue again if need be —
        until the channel is lost, when the link starts over anyway."""
        if frame.consumer_tag != self._consumer_tag:
            return
        self._consumer_tag = None
        log.warning("the broker cancelled the consumer; subscribing again", extra={"queue": self._topology.queue})
        self._resubscribing = asyncio.create_task(self._subscribe_again())

    async def _subscribe_again(self) -> None:
        delays = backoff(initial=0.1, cap=5.0)
        while self._consuming and self._consumer_tag is None:
            channel = self._channel
            if channel is None or channel.is_closed:
                return  # the link sets up a new channel, and consumes there
            try:
                _, queue = await self._topology.declare(channel)
                self._queue = queue
                self._consumer_tag = await queue.consume(self._on_message)
                log.info("consuming again", extra={"queue": self._topology.queue})
                return
            except (*CONNECTION_EXCEPTIONS, TimeoutError) as error:
                log.warning("subscribing again failed, retrying", extra={"error": repr(error)})
                await asyncio.sleep(next(delays))

    def _on_channel_lost(self) -> None:
        self._channel = self._queue = self._dead_letter_exchange = None
        self._consumer_tag = None
        # Unacknowledged deliveries of a lost channel are redelivered; holding on to them is pointless.
        self.buffer.clear()
