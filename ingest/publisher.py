"""The receiver's side of the broker: one connection kept alive, confirmed publishes, a clear failure otherwise."""

from __future__ import annotations

import logging
import time

import aiormq.abc
from aio_pika.abc import AbstractChannel
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError, PublishError
from pamqp.commands import Basic

from ingest.broker import BrokerLink
from ingest.callback import Callback
from ingest.metrics import ReceiverMetrics
from ingest.topology import Topology

__all__ = ["UNVERIFIED_APP_ID", "VERIFIED_APP_ID", "BrokerUnavailable", "Publisher"]

# What the message properties say of a callback (docs/broker.md). Standard properties, not a headers table:
# a headers table costs the receiver and the broker together a fifth of their CPU per callback.
VERIFIED_APP_ID = "ctwa-receiver/signature-verified"
UNVERIFIED_APP_ID = "ctwa-receiver/signature-not-checked"

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The broker did not confirm the callback; it may on a retry. ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Publisher:
    """Keeps a confirm-mode channel to the broker, reconnecting by itself, and publishes callbacks on it.

    While there is no channel, `publish` fails at once rather than queueing: the caller answers 503 and
    Sinch retries, so nothing waits in this process's memory.
    """

    def __init__(
        self,
        url: str,
        topology: Topology,
        metrics: ReceiverMetrics,
        *,
        confirm_timeout: float,
        connection_name: str = "ctwa-receiver",
    ) -> None:
        self._topology = topology
        self._metrics = metrics
        self._confirm_timeout = confirm_timeout
        # aio-pika opens and declares; publishes go straight to its underlying aiormq channel, which skips
        # building an aio_pika.Message per callback (a fifth of the receiver's CPU under load).
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._link = BrokerLink(url, connection_name, self._on_channel, self._on_channel_lost)

    @property
    def ready(self) -> bool:
        return self._channel is not None

    async def wait_ready(self, within: float) -> bool:
        """Whether a channel is open, waiting up to ``within`` seconds for one."""
        return await self._link.wait_connected(within)

    async def start(self) -> None:
        await self._link.start()

    async def close(self) -> None:
        await self._link.close()

    async def publish(self, callback: Callback) -> None:
        """Return once the broker has confirmed ``callback`` into a durable queue; else raise `BrokerUnavailable`."""
        channel = self._channel
        if channel is None:
            raise BrokerUnavailable("broker_unavailable")
        properties = Basic.Properties(
            content_type="application/json",
            delivery_mode=2,  # persistent
            message_id=callback.key,
            message_type=callback.trigger,
            timestamp=callback.received_at,
            app_id=VERIFIED_APP_ID if callback.signature_verified else UNVERIFIED_APP_ID,
        )
        started = time.perf_counter()
        try:
            await channel.basic_publish(
                callback.body,
                exchange=self._topology.exchange,
                routing_key=callback.trigger.routing_key,
                properties=properties,
                mandatory=True,
                timeout=self._confirm_timeout,
            )
        except TimeoutError:
            raise BrokerUnavailable("confirm_timeout") from None
        except PublishError:
            # Returned as unroutable: no queue holds it, so it must not count as accepted.
            raise BrokerUnavailable("unroutable") from None
        except DeliveryError:
            raise BrokerUnavailable("nacked") from None
        except CONNECTION_EXCEPTIONS as error:
            log.debug("publish failed: %r", error)
            raise BrokerUnavailable("publish_failed") from None
        self._metrics.confirm_seconds.observe(time.perf_counter() - started)

    async def _on_channel(self, channel: AbstractChannel) -> None:
        await self._topology.declare(channel)
        self._channel = await channel.get_underlay_channel()
        self._metrics.broker_ready.set(1)

    def _on_channel_lost(self) -> None:
        self._channel = None
        self._metrics.broker_ready.set(0)
