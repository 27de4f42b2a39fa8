"""``ctwa dlq``: list, show, redrive and purge the dead letters."""

from __future__ import annotations

import json

import aio_pika
from aio_pika.abc import AbstractConnection
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import NUL, ctwa, dead_letters, drain, take_all

from ingest.settings import Settings
from ingest.topology import Topology
from workers.runtime.consumer import HISTORY_HEADER


async def test_dlq_list_show_redrive_and_purge(
    worker_settings: Settings, db: AsyncEngine, amqp: AbstractConnection, topology: Topology
) -> None:
    await dead_letters(worker_settings, amqp, topology)

    listed = json.loads((await ctwa("dlq", "list", "--format", "json", settings=worker_settings))[0])
    reasons = {row["reason"].split(":")[0]: row for row in listed}
    assert {name: row["count"] for name, row in reasons.items()} == {
        "invalid_json": 1,
        "the database refused it (22P05)": 1,
        "rabbitmq": 1,
    }
    assert all(row["first_seen"] and row["last_seen"] for row in listed)
    assert reasons["rabbitmq"]["reason"] == "rabbitmq: delivery_limit"

    position = reasons["the database refused it (22P05)"]["first_position"]
    shown, _ = await ctwa("dlq", "show", str(position), settings=worker_settings)
    assert "unsupported Unicode escape sequence" in shown
    assert '"01KNUL"' in shown
    await ctwa("dlq", "show", "99", settings=worker_settings, expect=1)
    # Looking changes nothing.
    assert len(json.loads((await ctwa("dlq", "list", "--format", "json", settings=worker_settings))[0])) == 3

    # Sent back, only those asked for, with their history; the NUL one fails again and returns with two reasons.
    _, said = await ctwa("dlq", "redrive", "--reason", "22P05", settings=worker_settings)
    assert "1 dead letters sent back" in said
    await drain(worker_settings)
    dead = {message.body: message for message in await take_all(amqp, topology.dead_letter_queue)}
    assert len(dead) == 3
    history = dead[NUL].headers[HISTORY_HEADER]
    assert isinstance(history, list)
    assert len(history) == 2
    assert all("22P05" in str(reason) for reason in history)

    # Fixed meanwhile (here: nothing was wrong with it): the delivery report is stored once redriven.
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(topology.dead_letter_exchange)
        for body, message in dead.items():
            await exchange.publish(aio_pika.Message(body, headers=dict(message.headers or {})), "message.delivery")
    await ctwa("dlq", "redrive", "--reason", "delivery_limit", settings=worker_settings)
    await drain(worker_settings)
    async with db.connect() as connection:
        keys = set(await connection.scalars(text("SELECT key FROM callbacks")))
    assert "MESSAGE_DELIVERY:01K94FXNN0X9G8FGVSQE8Z5379:DELIVERED" in keys

    _, said = await ctwa("dlq", "purge", settings=worker_settings, expect=2)
    assert "--yes" in said
    assert len(json.loads((await ctwa("dlq", "list", "--format", "json", settings=worker_settings))[0])) == 2
    await ctwa("dlq", "purge", "--yes", settings=worker_settings)
    assert json.loads((await ctwa("dlq", "list", "--format", "json", settings=worker_settings))[0]) == []
