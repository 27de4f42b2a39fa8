"""Behind a real PgBouncer in transaction mode, two server connections shared by every client: with
``CTWA_DATABASE_STATEMENT_CACHE=false`` the worker, ``ctwa report``, ``replay`` and ``prune`` work; with the
statement cache on, a transaction that lands on another server connection than the one before finds no statement
its client prepared there ("does not exist"), or one another process left under the same name ("already exists")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from aio_pika.abc import AbstractConnection
from callbacks import contact_event, delivery, inbound, merge, referral
from sqlalchemy import func, make_url, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from support import AMQP_URL, ctwa, drain, enqueue, free_port, key_of, snapshot, store, take_all

from ingest.settings import Settings
from ingest.topology import Topology
from workers.engine.schema import callbacks, contact_merges
from workers.runtime.database import create_engine, sqlstate

# Server connections PgBouncer keeps for the test database: fewer than the clients, so that they are shared.
SERVER_CONNECTIONS = 2
_PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
# 26000: prepared statement "…" does not exist; 42P05: prepared statement "…" already exists.
_STATEMENT_MISSING_OR_TAKEN = {"26000", "42P05"}


@dataclass(frozen=True)
class PgBouncer:
    host: str
    port: int
    user: str
    database: str

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{self.database}"

    async def client(self) -> asyncpg.Connection:
        """A plain asyncpg connection through the pooler that prepares nothing beyond its transaction."""
        return await asyncpg.connect(
            host=self.host, port=self.port, user=self.user, database=self.database, statement_cache_size=0
        )


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


@pytest.fixture(scope="module")
def pgbouncer(database_url: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode on a free port, in front of the test database, with ``SERVER_CONNECTIONS``
    server connections at most, handed out in turn (``server_round_robin``, rather than the last one used) so that
    a client's next transaction goes to another one whenever both exist; stopped afterwards."""
    if not os.access(_PGBOUNCER, os.X_OK):
        message = "pgbouncer is not installed (apt-get install pgbouncer); the pooler tests can't run"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    server = make_url(database_url)
    user = server.username or "postgres"
    directory = Path(tempfile.mkdtemp(prefix="ctwa-pgbouncer-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            account = pwd.getpwnam("nobody")
        os.chown(directory, account.pw_uid, account.pw_gid)
        run_as = ["-u", account.pw_name]
    port = free_port()
    password = f" password={server.password}" if server.password else ""
    (directory / "userlist.txt").write_text(f'"{user}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        f"""[databases]
{server.database} = host={server.host or "127.0.0.1"} port={server.port or 5432} dbname={server.database} \
user={user}{password}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "userlist.txt"}
pool_mode = transaction
server_round_robin = 1
default_pool_size = {SERVER_CONNECTIONS}
max_db_connections = {SERVER_CONNECTIONS}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 200
logfile = {directory / "pgbouncer.log"}
"""
    )
    for path in directory.iterdir():
        path.chmod(0o644)
    process = subprocess.Popen(
        [_PGBOUNCER, *run_as, str(directory / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    log = directory / "pgbouncer.log"
    try:
        deadline = time.monotonic() + 15
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                text = log.read_text() if log.exists() else "(no log)"
                pytest.fail(f"pgbouncer did not start (exit {process.poll()}):\n{text}")
            time.sleep(0.05)
        yield PgBouncer("127.0.0.1", port, user, server.database or "")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def shuffling(pooler: PgBouncer) -> AsyncIterator[None]:
    """Keep taking a server connection for a moment and giving it back, so that the clients' transactions land on
    one server connection, then the other."""

    async def shuffle() -> None:
        connection = await pooler.client()
        try:
            while True:
                async with connection.transaction():
                    await connection.execute("SELECT pg_sleep(0.002)")
                await asyncio.sleep(0.001)
        finally:
            await connection.close()

    task = asyncio.create_task(shuffle())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def stream(people: int = 100) -> list[bytes]:
    """A few hundred callbacks: people clicking ads, their contacts, replies delivered, and every tenth person's
    contact merged into the one before (so that some batches take the exclusive lock)."""
    bodies: list[bytes] = []
    for person in range(people):
        identity, contact, minute = f"3461{person:07d}", f"C{person:03d}", person * 3.0
        bodies.append(contact_event("create", contact, minute, name=f"P{person}", identities=[identity]))
        bodies.append(
            inbound(
                f"M{person:03d}",
                minute + 1,
                identity=identity,
                contact=contact,
                conversation=f"V{person:03d}",
                metadata=referral(f"12000{person % 5}", f"CL{person}"),
            )
        )
        bodies.append(delivery(f"OUT{person:03d}", "DELIVERED", minute + 2, identity=identity, contact=contact))
        if person % 10 == 9:
            previous = f"C{person - 1:03d}"
            bodies.append(
                merge(previous, contact, minute + 2.5, name=f"P{person - 1}", identities=[f"3461{person - 1:07d}"])
            )
    return bodies


async def leave_numbered_statements(pooler: PgBouncer) -> None:
    """Prepare asyncpg's own statement names (``__asyncpg_stmt_1__``, …) on every server connection, as a process
    with asyncpg's statement cache leaves them when it ends (PgBouncer keeps the server connection, statements and
    all): the next process that numbers its statements the same way finds each name taken."""
    clients = [await pooler.client() for _ in range(SERVER_CONNECTIONS)]
    try:
        transactions = [client.transaction() for client in clients]
        for client, transaction in zip(clients, transactions, strict=True):
            await transaction.start()  # each holds a server connection of its own until the commit
            names = "".join(f"PREPARE __asyncpg_stmt_{n:x}__ AS SELECT 1;" for n in range(1, 65))
            await client.execute(f"DEALLOCATE ALL; {names}")
        assert len({await client.fetchval("SELECT pg_backend_pid()") for client in clients}) == SERVER_CONNECTIONS
        for transaction in transactions:
            await transaction.commit()
    finally:
        for client in clients:
            await client.close()


async def test_the_worker_stores_a_stream_through_pgbouncer_without_the_statement_cache(
    pgbouncer: PgBouncer, worker_settings: Settings, db: AsyncEngine, amqp: AbstractConnection, topology: Topology
) -> None:
    bodies = stream()
    pooled = worker_settings.model_copy(
        # Small batches: many transactions, each free to land on either server connection.
        update={"database_url": pgbouncer.url, "database_statement_cache": False, "batch_size": 10}
    )
    await enqueue(AMQP_URL, topology, bodies)
    async with shuffling(pgbouncer):
        worker = await drain(pooled)

    # Not one transaction failed: no statement prepared on one server connection is looked for on another.
    assert not worker.metrics.registry.get_sample_value("ctwa_worker_retries_total", {"cause": "database"})
    async with db.connect() as connection:
        archived = list(await connection.scalars(select(callbacks.c.key)))
        merges = await connection.scalar(select(func.count()).select_from(contact_merges))
    assert sorted(archived) == sorted({key_of(body) for body in bodies})  # every one stored, once
    assert merges == 10
    assert await take_all(amqp, topology.dead_letter_queue) == []
    assert await take_all(amqp, topology.queue) == []


async def test_report_replay_and_prune_work_through_pgbouncer_without_the_statement_cache(
    pgbouncer: PgBouncer, worker_settings: Settings, db: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    bodies = stream()
    await store(db, bodies)  # received on 2025-11-03
    pooled = worker_settings.model_copy(update={"database_url": pgbouncer.url})
    monkeypatch.setenv("CTWA_DATABASE_STATEMENT_CACHE", "false")
    days = ("--since", "2025-11-01", "--until", "2025-11-30", "--format", "json")
    direct, _ = await ctwa("report", *days, settings=worker_settings)
    before = await snapshot(db)

    await leave_numbered_statements(pgbouncer)  # with its statement cache on, a command fails at once
    through, _ = await ctwa("report", *days, settings=pooled)
    await ctwa("replay", "--all", settings=pooled)
    await ctwa("replay", "--since", "2025-11-01", settings=pooled)
    assert through == direct
    assert '"clicks": ' in direct
    assert await snapshot(db) == before  # rebuilt through the pooler, equal to what was stored

    _, pruned = await ctwa("prune", "--archive-older-than", "1d", settings=pooled)
    assert pruned.splitlines()[-1].startswith(f"{len({key_of(body) for body in bodies})} archived callbacks deleted")
    assert await snapshot(db) == before | {"callbacks": []}


@pytest.mark.parametrize("statement_cache", [True, False], ids=["cache", "no-cache"])
async def test_a_transaction_on_the_other_server_connection_needs_no_statement_prepared_before(
    pgbouncer: PgBouncer, db: AsyncEngine, statement_cache: bool
) -> None:
    # The store's client connection prepares its statements on one server connection, then, while a client holds
    # that one, writes again on the other. Only two exist, so where each transaction lands is certain.
    engine = create_engine(pgbouncer.url, connections=1, statement_cache=statement_cache)
    first = [inbound(f"F{n}", n, identity="34600000001", contact="CF", metadata=referral("1", None)) for n in range(5)]
    second = [
        inbound("S1", 10, identity="34600000002", contact="CS", metadata=referral("1", None)),
        merge("CF", "CS", 11, name="Merged", identities=["34600000001", "34600000002"]),
    ]
    holder, other = await pgbouncer.client(), await pgbouncer.client()
    try:
        async with holder.transaction():
            held = await holder.fetchval("SELECT pg_backend_pid()")
            await store(engine, first)  # on the server connection the holder does not hold
            elsewhere = other.transaction()
            await elsewhere.start()  # takes the only one free: where the store's statements are
            assert await other.fetchval("SELECT pg_backend_pid()") != held
        try:  # the holder's server connection is the only one free now: the store's next transaction lands there
            if statement_cache:
                with pytest.raises(DBAPIError) as raised:
                    await store(engine, second)
                assert sqlstate(raised.value) in _STATEMENT_MISSING_OR_TAKEN, raised.value
                assert "prepared statement" in str(raised.value)
            else:
                await store(engine, second)
        finally:
            await elsewhere.rollback()
    finally:
        await holder.close()
        await other.close()
        await engine.dispose()
    async with db.connect() as connection:
        stored = set(await connection.scalars(select(callbacks.c.key)))
    expected = first if statement_cache else first + second
    assert stored == {key_of(body) for body in expected}
