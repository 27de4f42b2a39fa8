"""Connections to one RabbitMQ of several addresses: the first that answers, an order of their own per process, the
next address when a connection is lost, and no password in any log line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractChannel
from support import AMQP_URL, TcpRelay, free_port
from yarl import URL

from ingest.broker import BrokerLink, address, connect

PASSWORD = "s3cret-pw"


def _dead(port: int) -> str:
    """An address nothing listens at, with a password that must never be logged."""
    return f"amqp://guest:{PASSWORD}@127.0.0.1:{port}/"


@pytest.fixture
async def relays() -> AsyncIterator[list[TcpRelay]]:
    """Two TCP relays to the test broker: two addresses of one RabbitMQ, each of which a test can take away."""
    started = [TcpRelay(URL(AMQP_URL)), TcpRelay(URL(AMQP_URL))]
    for relay in started:
        await relay.start()
    yield started
    for relay in started:
        await relay.close()


def test_an_address_is_shown_as_host_and_port_only() -> None:
    assert address("amqp://user:pw@rabbit-2/vhost") == "rabbit-2:5672"
    assert address("amqps://user:pw@lb.example:5999/") == "lb.example:5999"
    assert address("amqps://lb.example") == "lb.example:5671"


async def test_connect_takes_the_first_address_that_answers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    dead = _dead(free_port())
    async with await connect([dead, AMQP_URL], "ctwa-test") as connection:
        assert not connection.is_closed
    ours = [record for record in caplog.records if record.name == "ingest.broker"]
    assert [record.__dict__["broker"] for record in ours] == [address(dead)]
    assert PASSWORD not in caplog.text
    assert all(PASSWORD not in repr(record.__dict__) for record in caplog.records)


async def test_connect_raises_when_no_address_answers() -> None:
    with pytest.raises(ConnectionError):
        await connect([_dead(free_port()), _dead(free_port())], "ctwa-test")


def test_a_link_takes_a_sequence_of_urls_not_one_string() -> None:
    async def setup(channel: AbstractChannel) -> None:
        return None

    with pytest.raises(ValueError, match="sequence"):
        BrokerLink(AMQP_URL, "ctwa-test", setup, lambda: None)


def test_each_link_has_an_order_of_its_own() -> None:
    async def setup(channel: AbstractChannel) -> None:
        return None

    urls = [_dead(port) for port in (1001, 1002, 1003)]
    firsts = {BrokerLink(urls, "ctwa-test", setup, lambda: None)._urls[0] for _ in range(40)}
    assert len(firsts) > 1  # all 40 starting alike would be a 1 in 3**39 chance


async def test_a_link_goes_on_with_the_next_address_when_its_connection_is_lost(
    relays: list[TcpRelay], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    setups: list[AbstractChannel] = []

    async def setup(channel: AbstractChannel) -> None:
        setups.append(channel)

    dead = _dead(free_port())
    link = BrokerLink([dead, relays[0].url, relays[1].url], "ctwa-test-link", setup, lambda: None)
    await link.start()
    try:
        assert await link.wait_connected(15)
        first = link.broker
        assert first in {address(relay.url) for relay in relays}
        [lost] = [relay for relay in relays if address(relay.url) == first]
        await lost.cut()  # this address is gone for good
        # Reconnected, unrestarted, to the address still answering: never the dead one, never the lost one.
        for _ in range(150):
            if link.connected and link.broker != first:
                break
            await asyncio.sleep(0.1)
        assert link.connected
        assert link.broker == address(next(relay.url for relay in relays if relay is not lost))
        assert link.reconnects == 1
        assert len(setups) == 2
    finally:
        await link.close()
    assert PASSWORD not in caplog.text
