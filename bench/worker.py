"""Worker benchmark: drain a backlog of realistic callbacks with one ``ctwa worker --drain`` process, and in the same
run a naive consumer that commits one callback per transaction.

    python bench/worker.py [--count 50000] [--naive-count 5000] [--per-message 32]

The worker drains the backlog three ways: one callback per message; ``--per-message`` callbacks per message, as
the receiver's group commit publishes them; and, as a diagnostic of where the time goes, the same with the
projections switched off (``bench/archive_only_worker.py``). The reference for the worker is the database alone:
the worker's own statements for the same backlog, replayed with no worker (``bench/database_only.py``).

The backlog is put on the queue exactly as the receiver publishes it (60 % inbound messages, half of them with
a Click-to-WhatsApp referral; delivery reports; conversation starts). Each consumer gets a fresh database and
queue. Prints callbacks/s and peak RSS as a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
from sqlalchemy import func, make_url, select, text
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).parent))
import database_only
from traffic import callbacks

from ingest.callback import read
from ingest.receiver.metrics import ReceiverMetrics
from ingest.receiver.publisher import Publisher
from ingest.settings import Settings
from ingest.topology import Topology
from workers.commands.migrate import upgrade
from workers.engine.schema import callbacks as callbacks_table
from workers.tools.simulator import scenario

BENCH = Path(__file__).parent
AMQP_URL = os.environ.get("CTWA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SERVER_URL = os.environ.get("CTWA_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")


async def enqueue(topology: Topology, bodies: list[bytes], per_message: int) -> None:
    """Publish ``bodies`` as the receiver does: ``per_message`` callbacks to a message (1: one each)."""
    publisher = Publisher(
        [AMQP_URL],
        topology,
        ReceiverMetrics(),
        confirm_timeout=60,
        linger=0.05 if per_message > 1 else 0.0,
        batch_max=per_message,
    )
    await publisher.start()
    assert await publisher.wait_ready(10)
    now = datetime.now(UTC)
    callbacks = [read(body, now, signature_verified=True).callback for body in bodies]
    for start in range(0, len(callbacks), 1000):
        await asyncio.gather(*(publisher.publish(c) for c in callbacks[start : start + 1000]))
    await publisher.close()


async def reset_database(url: str) -> None:
    admin = create_async_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    await admin.dispose()


async def count_rows(url: str) -> int:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        count = int(await connection.scalar(select(func.count()).select_from(callbacks_table)) or 0)
    await engine.dispose()
    return count


async def delete_topology(topology: Topology) -> None:
    async with await aio_pika.connect(AMQP_URL) as connection, connection.channel() as channel:
        await topology.delete(channel)


def measure(
    name: str, command: list[str], env: dict[str, str], count: int, database_url: str, processes: int = 1
) -> tuple[float, float | None, float]:
    """Run ``processes`` copies of ``command`` side by side to completion; return (callbacks/s over their lives,
    callbacks/s from the first consume to the last "queue drained" — when they log them — and the peak RSS of one
    process in MB)."""
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        logs = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(processes)]
        running = [subprocess.Popen(command, env=env, stderr=log) for log in logs]
        peak_kb = 0
        while any(process.poll() is None for process in running):
            # The kernel's high-water mark of each process's own memory (reset at exec, unlike rusage after a fork).
            for process in running:
                with contextlib.suppress(OSError):
                    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            peak_kb = max(peak_kb, int(line.split()[1]))
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        moments = []
        for log in logs:
            log.seek(0)
            moments.append(_logged_moments(log.read().decode(errors="replace")))
    if failed := [process.returncode for process in running if process.returncode != 0]:
        raise RuntimeError(f"{name} exited with {failed}")
    stored = asyncio.run(count_rows(database_url))
    if stored != count:
        raise RuntimeError(f"{name} stored {stored} of {count}")
    rate, rss = count / elapsed, peak_kb / 1024
    drain_rate = None
    if all("consuming" in logged and "queue drained" in logged for logged in moments):
        draining = max(logged["queue drained"] for logged in moments) - min(logged["consuming"] for logged in moments)
        drain_rate = count / draining if draining > 0 else None
    drained = f", {drain_rate:,.0f}/s from first consume to drained" if drain_rate else ""
    print(
        f"{name:>22}: {count} callbacks in {elapsed:.1f} s = {rate:,.0f}/s{drained}, peak RSS {rss:.0f} MB",
        file=sys.stderr,
    )
    return rate, drain_rate, rss


def _logged_moments(log: str) -> dict[str, float]:
    """When the worker first logged each message (its JSON log lines), in seconds since the epoch."""
    moments: dict[str, float] = {}
    for line in log.splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            record = json.loads(line)
            moments.setdefault(record["message"], datetime.fromisoformat(record["time"]).timestamp())
    return moments


def run(
    name: str, consumer: str, count: int, bodies: list[bytes], per_message: int = 1, processes: int = 1
) -> tuple[float, float | None, float]:
    """Measure ``consumer`` — "naive", "worker" or "archive-only" — draining ``count`` of ``bodies``."""
    prefix = f"ctwa-bench-{uuid.uuid4().hex[:8]}"
    topology = Topology(prefix)
    database_url = make_url(SERVER_URL).set(database=prefix.replace("-", "_")).render_as_string(hide_password=False)
    asyncio.run(reset_database(database_url))
    upgrade(database_url)
    asyncio.run(enqueue(topology, bodies[:count], per_message))
    env = {**os.environ, "CTWA_AMQP_URL": AMQP_URL, "CTWA_AMQP_PREFIX": prefix, "CTWA_DATABASE_URL": database_url}
    env |= {"CTWA_WORKER_METRICS_PORT": "0", "CTWA_LOG_FORMAT": "json"}
    commands = {
        "naive": [sys.executable, str(BENCH / "naive_worker.py"), AMQP_URL, prefix, database_url, str(count)],
        "worker": [sys.executable, "-m", "workers", "worker", "--drain"],
        "archive-only": [sys.executable, str(BENCH / "archive_only_worker.py")],
    }
    command = commands[consumer]
    try:
        return measure(name, command, env, count, database_url, processes)
    finally:
        asyncio.run(delete_topology(topology))
        asyncio.run(reset_database(database_url))


def run_database_only(count: int, bodies: list[bytes]) -> float:
    """Callbacks/s of the worker's own statements for ``count`` of ``bodies``, replayed with no worker
    (bench/database_only.py)."""
    settings = Settings()
    database_url = make_url(SERVER_URL).set(database=f"ctwa_bench_{uuid.uuid4().hex[:8]}")
    url = database_url.render_as_string(hide_password=False)
    try:
        asyncio.run(reset_database(url))
        upgrade(url)
        batches = asyncio.run(database_only.record(url, bodies[:count], settings.batch_size))
        asyncio.run(reset_database(url))
        upgrade(url)
        seconds = asyncio.run(database_only.replay(url, batches, settings.worker_concurrency))
        if (stored := asyncio.run(count_rows(url))) != count:
            raise RuntimeError(f"the replay stored {stored} of {count}")
    finally:
        asyncio.run(reset_database(url))
    rate = count / seconds
    print(f"{'database alone':>22}: {count} callbacks in {seconds:.1f} s = {rate:,.0f}/s", file=sys.stderr)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50_000, help="backlog for the worker")
    parser.add_argument("--naive-count", type=int, default=5_000, help="backlog for the naive consumer")
    parser.add_argument("--per-message", type=int, default=32, help="callbacks per message, group-committed")
    parser.add_argument(
        "--traffic",
        choices=("new-people", "simulate"),
        default="new-people",
        help="new-people: every callback from a new person (the projections' costliest case); "
        "simulate: ctwa simulate's scenario (people writing several times, delivery reports, contact merges)",
    )
    args = parser.parse_args()
    wanted = max(args.count, args.naive_count)
    if args.traffic == "simulate":
        bodies = [callback.body for callback in scenario(seed=1, people=wanted // 6).callbacks][:wanted]
        if len(bodies) < wanted:
            sys.exit("the scenario is short of callbacks: raise its people")
    else:
        bodies = [json.dumps(c, separators=(",", ":")).encode() for c in callbacks(wanted)]

    naive_rate, _, naive_rss = run("naive consumer", "naive", args.naive_count, bodies)
    single = run("ctwa worker --drain", "worker", args.count, bodies)
    batched = run("ctwa worker, batch messages", "worker", args.count, bodies, per_message=args.per_message)
    archive_only = run("archive only, batch messages", "archive-only", args.count, bodies, per_message=args.per_message)
    two = run("two workers, batch messages", "worker", args.count, bodies, per_message=args.per_message, processes=2)
    database = run_database_only(args.count, bodies)

    print(f"\n{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, {args.traffic} traffic\n")
    print("| consumer | callbacks | callbacks/s (process life) | vs naive | callbacks/s (draining) | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    naive = f"{args.naive_count:,} | {naive_rate:,.0f} | 1x | | {naive_rss:.0f} MB"
    print(f"| naive (one transaction per callback) | {naive} |")
    rows = [("`ctwa worker --drain`, one callback per message", single)]
    rows.append((f"`ctwa worker --drain`, {args.per_message} callbacks per message (group commit)", batched))
    rows.append(("two `ctwa worker --drain` processes side by side, group commit", two))
    rows.append(
        ("diagnostic: one worker, group commit, projections off (`bench/archive_only_worker.py`)", archive_only)
    )
    for label, (rate, drain_rate, rss) in rows:
        draining = f"{drain_rate:,.0f}" if drain_rate else ""
        print(f"| {label} | {args.count:,} | {rate:,.0f} | {rate / naive_rate:.1f}x | {draining} | {rss:.0f} MB |")
    label = "reference: the database alone — the worker's statements replayed, no worker (`bench/database_only.py`)"
    print(f"| {label} | {args.count:,} | | {database / naive_rate:.1f}x | {database:,.0f} | |")


if __name__ == "__main__":
    main()
