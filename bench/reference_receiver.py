"""The reference the receiver is measured against: an aiohttp handler that only publishes with confirms.

No signature check, no parsing, no metrics: one persistent, mandatory, confirmed publish per request.
Usage: python bench/reference_receiver.py PORT AMQP_URL PREFIX
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import aio_pika
from aiohttp import web

from ingest.eventloop import new_event_loop
from ingest.topology import Topology

EXCHANGE = web.AppKey("exchange", aio_pika.abc.AbstractExchange)


def create_app(amqp_url: str, prefix: str) -> web.Application:
    async def broker(app: web.Application) -> AsyncIterator[None]:
        connection = await aio_pika.connect(amqp_url)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        app[EXCHANGE], _ = await Topology(prefix).declare(channel)
        yield
        await connection.close()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        try:
            await request.app[EXCHANGE].publish(message, "unknown", mandatory=True, timeout=5)
        except (aio_pika.exceptions.AMQPError, TimeoutError, asyncio.CancelledError):
            return web.Response(status=503)
        return web.json_response({"status": "accepted"})

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    app = web.Application(client_max_size=1024 * 1024)
    app.cleanup_ctx.append(broker)
    app.router.add_post("/webhooks/sinch", receive)
    app.router.add_get("/readyz", ready)
    return app


if __name__ == "__main__":
    port, amqp_url, prefix = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    web.run_app(create_app(amqp_url, prefix), port=port, access_log=None, print=None, loop=new_event_loop())
