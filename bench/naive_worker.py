"""The naive consumer the worker is measured against: one callback, one transaction, one acknowledgement.

It stores each callback exactly as the worker does — archive and projections, same code, same de-duplication —
but message by message, as a straightforward consumer would.
Usage: python bench/naive_worker.py AMQP_URL PREFIX DATABASE_URL COUNT
"""

from __future__ import annotations

import sys

import aio_pika
from sqlalchemy.ext.asyncio import create_async_engine

from ingest.eventloop import new_event_loop
from ingest.topology import Topology
from workers.engine.store import Store
from workers.runtime.messages import decode


async def main(amqp_url: str, prefix: str, database_url: str, count: int) -> None:
    engine = create_async_engine(database_url)
    store = Store(engine)
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=10)
        _, queue = await Topology(prefix).declare(channel)
        done = 0
        async with queue.iterator() as messages:
            async for message in messages:
                stored, _ = decode(message)
                await store.write(stored)
                await message.ack()
                done += 1
                if done == count:
                    break
    await engine.dispose()


if __name__ == "__main__":
    loop = new_event_loop()
    loop.run_until_complete(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
