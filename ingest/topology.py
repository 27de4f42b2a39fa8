"""The broker topology, defined once for the receiver that publishes into it and the workers that consume it.

::

    <prefix>.callbacks  (topic exchange)  --#-->  <prefix>.callbacks  (quorum queue)
                                                      |  dead-letters (x-delivery-limit, poison)
                                                      v
    <prefix>.dead-letter (topic exchange) --#-->  <prefix>.dead-letter (quorum queue)
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue
from pamqp.common import FieldTable

__all__ = ["Topology"]


@dataclass(frozen=True, slots=True)
class Topology:
    """Names and arguments of everything on the broker; ``prefix`` keeps deployments (and test runs) apart."""

    prefix: str
    delivery_limit: int = 20

    @property
    def exchange(self) -> str:
        return f"{self.prefix}.callbacks"

    @property
    def queue(self) -> str:
        return f"{self.prefix}.callbacks"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.dead-letter"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.prefix}.dead-letter"

    @property
    def queue_arguments(self) -> FieldTable:
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dead_letter_exchange,
            # Broker-side dead-lettering (delivery limit) is confirmed end to end, not fire-and-forget;
            # at-least-once dead-lettering needs reject-publish overflow.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": self.delivery_limit,
        }

    async def declare(self, channel: AbstractChannel) -> tuple[AbstractExchange, AbstractQueue]:
        """Declare (idempotently) both exchanges and queues with their bindings; return the main pair."""
        dead_letter_exchange = await channel.declare_exchange(
            self.dead_letter_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        dead_letter_queue = await channel.declare_queue(
            self.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_letter_queue.bind(dead_letter_exchange, routing_key="#")

        exchange = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(self.queue, durable=True, arguments=self.queue_arguments)
        await queue.bind(exchange, routing_key="#")
        return exchange, queue

    async def delete(self, channel: AbstractChannel) -> None:
        """Delete both queues, with whatever they hold, and both exchanges (test and benchmark clean-up)."""
        for queue in (self.queue, self.dead_letter_queue):
            await channel.queue_delete(queue)
        for exchange in (self.exchange, self.dead_letter_exchange):
            await channel.exchange_delete(exchange)
