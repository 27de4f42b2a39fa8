"""Helpers the tests share: where the services are, Sinch example callbacks, queue inspection, a TCP relay that can
fail on cue, and ``ctwa`` and the worker run as an operator runs them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import aio_pika
import aiohttp
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from yarl import URL

from ingest.callback import Incoming, business_key, identify, parse_body, read
from ingest.envelope import BATCH_CONTENT_TYPE, unpack
from ingest.receiver.metrics import ReceiverMetrics
from ingest.receiver.publisher import Publisher
from ingest.settings import Settings
from ingest.topology import Topology
from workers.engine.chains import settle_queued
from workers.engine.schema import metadata
from workers.engine.store import Store, distinct
from workers.runtime.database import sqlstate
from workers.runtime.worker import Worker

AMQP_URL = os.environ.get("CTWA_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# The server the tests create their own database on (its name is replaced).
DATABASE_URL = os.environ.get("CTWA_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
# The node rabbitmqctl drives (the broker's alarms, policies, connections): the tests' broker's, when it is not this
# machine's own (compose's tests service names rabbit@rabbitmq), and that node's Erlang cookie.
RABBITMQ_NODE = os.environ.get("CTWA_TEST_RABBITMQ_NODE")
RABBITMQ_COOKIE = os.environ.get("CTWA_TEST_RABBITMQ_COOKIE")
RUN_ID = uuid.uuid4().hex[:8]
FIXTURES = Path(__file__).parent / "fixtures" / "sinch"

# ``start_receiver``'s type: ``await start_receiver(clock=..., wait_ready=..., **setting_overrides)``.
ReceiverFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def unavailable(message: str) -> NoReturn:
    """Skip the test, loudly, because something it needs is missing on this machine; with ``CI`` set, fail it."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def unreachable(service: str, error: BaseException) -> NoReturn:
    """Skip the test, loudly, because ``service`` can't be reached; with ``CI`` set, fail it."""
    unavailable(f"{service} is not reachable ({error!r}); start it, or see the README")


# OSErrors that are about files, not about reaching a server.
_FILE_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def cannot_connect(error: BaseException) -> bool:
    """Whether ``error`` says a service could not be reached — down, refusing, unknown host, starting up, or not
    letting us in — rather than that something asked of it failed."""
    if isinstance(error, OSError):  # refused, reset, timed out, no route; aiormq's connection errors too
        return not isinstance(error, _FILE_ERRORS)
    if isinstance(error, DBAPIError):
        code = sqlstate(error) or ""
        # 08: connection exception; 28: invalid authorization; 57P03: cannot connect now (starting up).
        return code.startswith(("08", "28")) or code == "57P03"
    return False


async def connect_amqp() -> AbstractConnection:
    """A connection to the tests' RabbitMQ; the test skips (fails under CI) if the broker can't be reached."""
    try:
        return await aio_pika.connect(AMQP_URL, timeout=5)
    except Exception as error:
        if cannot_connect(error):
            unreachable("RabbitMQ", error)
        raise


async def drop_database(url: str) -> None:
    engine = create_async_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    await engine.dispose()


async def receiver_ready(
    session: aiohttp.ClientSession, base: str, process: asyncio.subprocess.Process, within: float = 10
) -> None:
    """Wait until the ``ctwa receiver`` process at ``base`` answers ``/readyz`` with 200; fail if it exits first or
    is not ready within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert process.returncode is None, "the receiver exited"
        try:
            async with session.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"the receiver was not ready within {within:g} s")


def rabbitmqctl(*args: str) -> None:
    """Run ``rabbitmqctl`` on the tests' broker node (`RABBITMQ_NODE`, else this machine's)."""
    node = ["-n", RABBITMQ_NODE] if RABBITMQ_NODE else []
    cookie = ["--erlang-cookie", RABBITMQ_COOKIE] if RABBITMQ_COOKIE else []
    subprocess.run(["rabbitmqctl", *node, *cookie, *args], check=True, capture_output=True, timeout=60)


def fixture_bytes(name: str) -> bytes:
    """The exact bytes of a Sinch example callback."""
    return (FIXTURES / name).read_bytes()


def fixture_names() -> list[str]:
    return sorted(path.name for path in FIXTURES.glob("*.json") if path.name != "signatures.json")


def signature_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads((FIXTURES / "signatures.json").read_text())["vectors"]
    return vectors


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def take_all(connection: AbstractConnection, queue: str) -> list[AbstractIncomingMessage]:
    """Remove and return every message in ``queue``. Confirmed publishes are already there: no waiting."""
    messages: list[AbstractIncomingMessage] = []
    async with connection.channel() as channel:
        declared = await channel.get_queue(queue, ensure=True)
        while (message := await declared.get(no_ack=True, fail=False, timeout=5)) is not None:
            messages.append(message)
    return messages


class TcpRelay:
    """Relays TCP between a client (the receiver) and a server (RabbitMQ) so a test can make the link fail.

    ``cut()`` drops every relayed connection and refuses new ones, like a broker that went away;
    ``freeze()`` keeps connections open but lets no byte through, like a broker that stopped answering.
    """

    def __init__(self, target: URL) -> None:
        self._target_host = target.host or "127.0.0.1"
        self._target_port = target.port or 5672
        self._target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._pumps: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return str(self._target.with_host("127.0.0.1").with_port(self.port))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        self.thaw()
        await self.cut()
        for pump in list(self._pumps):
            pump.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(self._target_host, self._target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, server_writer}
        for reader, writer in ((client_reader, server_writer), (server_reader, client_writer)):
            pump = asyncio.create_task(self._pump(reader, writer))
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)


def inbound_bodies(count: int, tag: str = "A") -> list[bytes]:
    """``count`` distinct inbound callbacks (the referral fixture with its own message id each)."""
    template = fixture_bytes("01_inbound_ctwa_referral.json")
    return [template.replace(b"01K94FXHR0TEWH0AVNH9DN65R6", f"01K94{tag}{n:020d}".encode()) for n in range(count)]


def key_of(body: bytes) -> str:
    payload = parse_body(body)
    trigger = identify(payload)
    return business_key(trigger, payload, body)


async def enqueue(amqp_url: str, topology: Topology, bodies: Sequence[bytes]) -> list[str]:
    """Put ``bodies`` on the queue exactly as the receiver does; return their business keys."""
    publisher = Publisher([amqp_url], topology, ReceiverMetrics(), confirm_timeout=30)
    await publisher.start()
    try:
        assert await publisher.wait_ready(10)
        callbacks = [read(body, datetime.now(UTC), signature_verified=False).callback for body in bodies]
        for start in range(0, len(callbacks), 500):
            await asyncio.gather(*(publisher.publish(callback) for callback in callbacks[start : start + 500]))
    finally:
        await publisher.close()
    return [callback.key for callback in callbacks]


def incoming(body: bytes, received_at: datetime | None = None) -> Incoming:
    """A callback as the worker decodes it, without the queue."""
    return read(body, received_at or datetime(2025, 11, 3, 12, 0, tzinfo=UTC), signature_verified=False)


async def store(engine: AsyncEngine, bodies: Sequence[bytes], batch_size: int = 100) -> None:
    """Store ``bodies`` in batches as the worker does (duplicates within a batch stored once), skipping the queue."""
    writer = Store(engine)
    for start in range(0, len(bodies), batch_size):
        unique, _ = distinct(incoming(body) for body in bodies[start : start + batch_size])
        await writer.write(unique)
    await settle_queued(engine)  # as a worker's next pass of settling the day chains does


async def rows(db: AsyncEngine, query: str, **params: Any) -> list[dict[str, Any]]:
    """The rows ``query`` gives, as dicts."""
    async with db.connect() as connection:
        return [dict(row._mapping) for row in await connection.execute(text(query), params)]


def utc(value: str) -> datetime:
    """An ISO-8601 time, in UTC."""
    return datetime.fromisoformat(value).astimezone(UTC)


# What "the same final state" compares: every projection, and the archive minus when it was written.
_SNAPSHOT = {
    "callbacks": "key, trigger, app_id, project_id, event_time, accepted_time, received_at, payload, contact_ids, "
    "identity",
    "contacts": "*",
    "channel_identities": "channel, identity, app_id, contact_id, first_seen_at, last_seen_at, contact_at, contact_key",
    "conversations": "*",
    "messages": "*",
    "ad_clicks": "*",
    "delivery_reports": "*",
    "message_status": "*",
    "contact_merges": "*",
    "erased_identities": "*",
    "person_touches": "*",
    "ad_daily": "*",
    "ad_daily_people": "*",
    "daily_people": "*",
    "ad_daily_conversations": "*",
    "daily_conversations": "*",
    "ad_performance_daily": "*",
    "person_attribution": "*",
}


async def snapshot(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table users query (and of the archive), in a stable order — the day chains settled
    first, as a worker's next pass settles them."""
    await settle_queued(engine)
    state: dict[str, list[dict[str, Any]]] = {}
    async with engine.connect() as connection:
        for table, columns in _SNAPSHOT.items():
            rows = await connection.execute(text(f"SELECT {columns} FROM {table}"))
            state[table] = sorted((dict(row._mapping) for row in rows), key=repr)
    return state


async def empty(engine: AsyncEngine) -> None:
    """Delete every row the services write (the erasure key stays: the migration sets it once)."""
    tables = ", ".join(table.name for table in metadata.sorted_tables if table.name != "erasure_key")
    async with engine.begin() as connection:
        await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY"))


async def raw_post(port: int, path: str, body: bytes, headers: Sequence[tuple[str, str]]) -> tuple[int, str, bytes]:
    """POST exactly these headers — duplicates, odd bytes and all, which HTTP client libraries tidy up — on a
    connection of its own; (status, content type, body) of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{name}: {value}" for name, value in headers]
        writer.write("\r\n".join(head).encode("utf-8", "surrogateescape") + b"\r\n\r\n" + body)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    header_block, _, content = rest.partition(b"\r\n\r\n")
    content_type = ""
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-type":
            content_type = value.strip().decode("latin-1").split(";")[0]
    return int(status_line.split()[1]), content_type, content


async def queued_keys(connection: AbstractConnection, queue: str) -> list[str]:
    """The business keys of the callbacks in ``queue`` (removed from it), batches unpacked, in order."""
    keys: list[str] = []
    for message in await take_all(connection, queue):
        if message.content_type == BATCH_CONTENT_TYPE:
            keys += [callback.key for callback in unpack(message.body)]
        else:
            keys.append(message.message_id or "")
    return keys


# Valid JSON that Postgres refuses: jsonb can't hold a NUL character.
NUL = b'{"message": {"id": "01KNUL", "contact_message": {"text_message": {"text": "a\\u0000b"}}}}'


async def ctwa(*args: str, settings: Settings, expect: int = 0) -> tuple[str, str]:
    """Run ``ctwa *args`` as a process on the services of ``settings``; (stdout, stderr), once it exited ``expect``."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        *args,
        env={
            **os.environ,
            "CTWA_AMQP_URL": settings.amqp_url,
            "CTWA_AMQP_PREFIX": settings.amqp_prefix,
            "CTWA_DATABASE_URL": settings.database_url,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == expect, err.decode()
    return out.decode(), err.decode()


async def drain(settings: Settings) -> Worker:
    """Run a worker until the queue is empty."""
    worker = Worker(settings, drain=True)
    await asyncio.wait_for(worker.run(), 120)
    return worker


async def dead_letters(settings: Settings, amqp: AbstractConnection, topology: Topology) -> None:
    """Three dead letters: two the worker refused, one RabbitMQ gave up on after its delivery limit."""
    await enqueue(AMQP_URL, topology, inbound_bodies(5))
    async with amqp.channel() as channel:
        exchange = await channel.get_exchange(topology.exchange)
        for body in (b"not json", NUL):
            await exchange.publish(aio_pika.Message(body, message_id="hand-published"), "message.inbound")
    await drain(settings)
    await enqueue(AMQP_URL, topology, [fixture_bytes("03_delivery_delivered.json")])
    async with amqp.channel() as channel:
        queue = await channel.get_queue(topology.queue)
        for _ in range(settings.delivery_limit + 1):
            message = await queue.get(timeout=5)
            await message.nack(requeue=True)


@contextlib.asynccontextmanager
async def serving_worker(settings: Settings) -> AsyncIterator[int]:
    """A worker running in this process on ``settings``' queues and database, its ``/healthz`` and ``/metrics`` on
    the port yielded; stopped at the end."""
    port = free_port()
    worker = Worker(settings.model_copy(update={"worker_metrics_port": port}))
    running = asyncio.create_task(worker.run())
    try:
        yield port
    finally:
        worker.stop()
        await running


class WorkerProcess:
    """``ctwa worker`` as a process the harness can kill and restart; its counters are read while it lives."""

    def __init__(self, settings: Settings, amqp_url: str) -> None:
        self.port = free_port()
        self.environment = {
            **os.environ,
            "CTWA_AMQP_URL": amqp_url,
            "CTWA_AMQP_PREFIX": settings.amqp_prefix,
            "CTWA_DATABASE_URL": settings.database_url,
            "CTWA_BATCH_SIZE": "200",
            "CTWA_WORKER_METRICS_PORT": str(self.port),
            "CTWA_HTTP_HOST": "127.0.0.1",
        }
        self.process: asyncio.subprocess.Process | None = None
        self.lifetimes: list[dict[str, float]] = []
        self.current: dict[str, float] = {}

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workers",
            "worker",
            env=self.environment,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self.current = {}

    async def stop(self, signum: int) -> int:
        assert self.process is not None
        await self.scrape()
        self.process.send_signal(signum)
        code = await asyncio.wait_for(self.process.wait(), 60)
        self.lifetimes.append(self.current)
        return code

    async def scrape(self) -> None:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{self.port}/metrics", timeout=aiohttp.ClientTimeout(total=2)) as r,
            ):
                text_ = await r.text()
        except (aiohttp.ClientError, TimeoutError):
            return
        for line in text_.splitlines():
            if line.startswith("ctwa_worker_") and not line.startswith("#") and "_created" not in line:
                name, value = line.rsplit(" ", 1)
                self.current[name] = float(value)

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    def total(self, prefix: str) -> float:
        return sum(value for counters in self.lifetimes for name, value in counters.items() if name.startswith(prefix))


@contextlib.asynccontextmanager
async def database_role(
    database_url: str, role: str, grant: Callable[[str, str], Awaitable[None]]
) -> AsyncIterator[str]:
    """A role of the test database's server set up by ``grant`` (`ctwa migrate`'s ``grant_app_role`` or
    ``grant_read_role``), as its URL; dropped afterwards, with what it was granted."""
    url = make_url(database_url).set(username=role, password=f"{role}-password").render_as_string(hide_password=False)
    await grant(database_url, url)
    try:
        yield url
    finally:
        admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP OWNED BY "{role}"'))
            await connection.execute(text(f'DROP ROLE "{role}"'))
        await admin.dispose()
