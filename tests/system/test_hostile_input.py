"""Hostile input: over 10,000 generated bodies and header sets get only 200, 400, 401, 413 or 415 — never a 500 —
and the worker stores or dead-letters (with a reason) everything the receiver accepted, without crashing."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aio_pika.abc import AbstractConnection
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import AMQP_URL, RUN_ID, connect_amqp, fixture_bytes, fixture_names, raw_post, take_all

from ingest.receiver.app import PUBLISHER, create_app
from ingest.receiver.signature import signed_headers
from ingest.settings import Settings
from ingest.topology import Topology
from workers.runtime.consumer import REASON_HEADER
from workers.runtime.worker import Worker

SECRET = "fuzz-secret"
ALLOWED = {200, 400, 401, 413, 415}
LIMIT = 64 * 1024
TEMPLATES = [json.loads(fixture_bytes(name)) for name in fixture_names()]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated_callbacks(draw: st.DrawFn) -> bytes:
    """A real callback with some field — any, at any depth — replaced by a value of any type."""
    payload = json.loads(json.dumps(draw(st.sampled_from(TEMPLATES))))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(payload)[1:]))
        node = payload
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = draw(json_values)
    return json.dumps(payload).encode()


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, 3000))
    opening, closing = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    return ('{"message":' + opening * depth + "1" + closing * depth + "}").encode()


LITERALS = [
    b"",
    b"   ",
    b"null",
    b"[]",
    b'"text"',
    b'{"message": NaN}',
    b'{"message": Infinity}',
    b'{"a": -Infinity}',
    b"\xef\xbb\xbf{}",
    b'{"message": {"id": "a"}, "message": {"id": "b"}}',
    b'{"message": {"id": "\\ud800"}}',
    b'{"message": {"id": "x\\u0000y", "contact_message": {"text_message": {"text": "\\u0000"}}}}',
    b'{"event_time": "9999-12-31T23:59:59Z", "message": {"id": "future"}}',
    b'{"message": {"id": "1", "metadata": "{\\"referral\\": {\\"source_id\\": 1e400}}"}}',
]

bodies = st.one_of(
    mutated_callbacks(),
    mutated_callbacks().map(lambda body: body[: len(body) // 2]),  # truncated JSON
    nested(),
    st.binary(max_size=200),  # anything, non-UTF-8 included
    st.sampled_from(LITERALS),
    st.text(max_size=30).map(lambda s: json.dumps({"message": {"id": s}}).encode()),
    st.integers(LIMIT - 50, LIMIT + 50).map(lambda n: b'{"pad":"' + b"x" * n + b'"}'),  # around the size limit
)

header_names = st.sampled_from(
    [
        "x-sinch-webhook-signature",
        "x-sinch-webhook-signature-timestamp",
        "x-sinch-webhook-signature-nonce",
        "x-sinch-webhook-signature-algorithm",
        "X-SINCH-WEBHOOK-SIGNATURE",
        "content-type",
    ]
)
header_values = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x10FFFF, blacklist_categories=("Cs", "Cc")), max_size=60
)


@st.composite
def headers(draw: st.DrawFn, body: bytes) -> list[tuple[str, str]]:
    """Correctly signed (the body then decides), tampered, partial, duplicated, or garbage header sets."""
    choice = draw(st.sampled_from(["signed", "signed", "signed", "tampered", "partial", "duplicated", "garbage"]))
    signed = list(signed_headers(body, SECRET, "01KFUZZNONCE00000000000000", int(time.time())).items())
    if choice == "signed":
        result = signed
    elif choice == "tampered":
        index = draw(st.integers(0, len(signed) - 1))
        result = [*signed[:index], (signed[index][0], draw(header_values)), *signed[index + 1 :]]
    elif choice == "partial":
        result = draw(st.lists(st.sampled_from(signed), max_size=3, unique=True))
    elif choice == "duplicated":
        result = [*signed, draw(st.sampled_from(signed))]
    else:
        result = draw(st.lists(st.tuples(header_names, header_values), max_size=6))
    content_type = draw(st.sampled_from(["application/json", "text/plain", "multipart/form-data; boundary=x", "", "%"]))
    return [*result, ("Content-Type", content_type)] if content_type else result


@dataclass
class Fuzz:
    """One receiver and one queue for the whole module: the worker test stores what the fuzz test got accepted."""

    client: TestClient[web.Request, web.Application]
    topology: Topology
    accepted: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)


@pytest.fixture(scope="module")
async def fuzz() -> AsyncIterator[Fuzz]:
    topology = Topology(f"ctwa-test-{RUN_ID}-fuzz")
    settings = Settings(amqp_url=AMQP_URL, amqp_prefix=topology.prefix, webhook_secrets=(SECRET,), max_body_bytes=LIMIT)
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    assert await client.app[PUBLISHER].wait_ready(10)
    yield Fuzz(client, topology)
    await client.close()
    async with await connect_amqp() as connection, connection.channel() as channel:
        for name in (topology.queue, topology.dead_letter_queue):
            await channel.queue_delete(name)
        for name in (topology.exchange, topology.dead_letter_exchange):
            await channel.exchange_delete(name)


@settings(
    max_examples=10_000,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
async def test_generated_requests_never_get_a_500(fuzz: Fuzz, data: st.DataObject) -> None:
    body = data.draw(bodies)
    header_set = data.draw(headers(body))
    assert fuzz.client.port is not None
    # Raw HTTP: the headers go exactly as drawn, duplicates included (client libraries would merge them).
    status, content_type, answer = await raw_post(fuzz.client.port, "/webhooks/sinch", body, header_set)
    fuzz.statuses[status] += 1
    assert status in ALLOWED, (status, answer)
    if status == 200:
        fuzz.accepted.append(json.loads(answer)["key"])
    elif content_type == "application/json":
        assert json.loads(answer)["error"]
    else:  # refused by aiohttp's HTTP parser before the handler, e.g. a duplicated Content-Type
        assert status == 400


async def test_the_worker_stores_or_dead_letters_all_it_accepted(
    fuzz: Fuzz, database_url: str, db: AsyncEngine, amqp: AbstractConnection
) -> None:
    print(f"\nfuzz: {sum(fuzz.statuses.values())} requests, statuses {dict(sorted(fuzz.statuses.items()))}")
    assert sum(fuzz.statuses.values()) >= 10_000
    assert {200, 400, 401, 413} <= set(fuzz.statuses)
    settings = Settings(amqp_url=AMQP_URL, amqp_prefix=fuzz.topology.prefix, database_url=database_url)
    worker = Worker(settings.model_copy(update={"worker_metrics_port": 0}), drain=True)
    await asyncio.wait_for(worker.run(), 120)  # returns only once the queue is empty: nothing blocked it

    async with db.connect() as connection:
        archived = set(await connection.scalars(text("SELECT key FROM callbacks")))
    dead = await take_all(amqp, fuzz.topology.dead_letter_queue)
    reasons = Counter(str(message.headers.get(REASON_HEADER, ""))[:60] for message in dead)
    print(f"dead-lettered: {dict(reasons)}; archived: {len(archived)}")
    assert all(reasons), "a dead letter without its reason"
    dead_keys = {message.message_id for message in dead}
    assert set(fuzz.accepted) <= archived | dead_keys
    assert await take_all(amqp, fuzz.topology.queue) == []


async def test_a_slow_body_is_answered(fuzz: Fuzz) -> None:
    body = fixture_bytes("01_inbound_ctwa_referral.json")

    async def trickle() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 100):
            await asyncio.sleep(0.02)
            yield body[start : start + 100]

    response = await fuzz.client.post(
        "/webhooks/sinch", data=trickle(), headers=signed_headers(body, SECRET, "n", int(time.time()))
    )
    assert response.status == 200


async def test_a_client_that_hangs_up_mid_body_harms_nothing(fuzz: Fuzz) -> None:
    assert fuzz.client.port is not None
    for _ in range(20):
        _, writer = await asyncio.open_connection("127.0.0.1", fuzz.client.port)
        writer.write(b'POST /webhooks/sinch HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{"message": ')
        await writer.drain()
        writer.close()
    body = fixture_bytes("02_inbound_reply_no_referral.json")
    headers = list(signed_headers(body, SECRET, "n", int(time.time())).items())
    assert (await raw_post(fuzz.client.port, "/webhooks/sinch", body, headers))[0] == 200
