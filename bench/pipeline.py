"""End-to-end benchmark: ``ctwa receiver`` → RabbitMQ → one ``ctwa worker`` → Postgres, all on this machine, under
wrk's load; then, in the same run, the bare confirmed-publish reference (``bench/reference_receiver.py``) under the
same load.

    python bench/pipeline.py [--duration 30] [--connections 64] [--threads 1] [--rounds 1]

Each pipeline measurement gets a fresh database (migrated) and a fresh broker topology (its own
``CTWA_AMQP_PREFIX``). The worker starts first, with its default batch settings; the receiver runs with signatures
on. A pool of realistic callbacks, each with its own business key, is signed right before each wrk run (the
receiver's tolerance is 300 s), and wrk replays it at ``--connections``. Once wrk stops, the script waits for the
worker to store what was left on the queue (the catch-up: from wrk's stop to the last row seen stored), then reads
the ``callbacks`` table:

- that nothing was lost: the callbacks stored equal the callbacks the receiver answered 200 (its own count, which
  also has the requests wrk left in flight when it stopped). The pool is larger than what a run sends, and
  ``bench/wrk_pipeline.lua`` counts the requests each wrk thread makes, so no callback is sent twice and every
  200 is a distinct callback; the script fails if a thread went round its share of the pool;
- the freshness lag, to the commit: from the moment the receiver read the request to the commit that made the
  callback visible, p50/p99 from the worker's ``ctwa_worker_freshness_seconds`` histogram (interpolated within its
  buckets, as Prometheus's ``histogram_quantile``); and to the storing transaction's start, ``archived_at`` (its
  ``now()``) minus ``received_at``, p50/p99/max exactly, in SQL over every stored callback;
- what the pipeline sustained: the callbacks stored per second over the load and the catch-up. A receiver that
  accepts faster than its worker stores only moves work into the queue; this counts what reached Postgres.

CPU placement: only wrk is pinned, to core 1 as in bench/receiver.py, so the load is generated the same way for the
pipeline and the reference. The receiver, the worker, RabbitMQ and Postgres are left to the scheduler: four busy
processes on two cores have to share them, and pinning some of them would be a deployment choice that the pipeline
as ``docker compose`` runs it does not make. The reference is not pinned either, so that it runs placed as the
receiver it is compared with (bench/receiver.py pins both its servers to core 0: its reference figures differ).
One wrk thread by default: wrk loads each further thread's share of the pool (seconds, for this pool) while the
first thread already sends, a head start that its requests count but its duration does not.

Prints a Markdown table on stdout (medians over the rounds); progress on stderr. Exits 1 if a callback answered 200
was not stored. Needs wrk (``apt-get install wrk``), RabbitMQ on CTWA_AMQP_URL and PostgreSQL on
CTWA_DATABASE_URL's server (default the local ones), and the ``ctwa`` console script next to this interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import aio_pika
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

sys.path.insert(0, str(Path(__file__).parent))
import worker as worker_bench
from receiver import AMQP_URL, SECRET, delete_topology, parse_wrk, wait_ready, write_requests

from ingest.topology import Topology
from workers.commands.migrate import upgrade

BENCH = Path(__file__).parent
CTWA = Path(sys.executable).parent / "ctwa"
PIPELINE = "pipeline: `ctwa receiver` → RabbitMQ → one `ctwa worker` → Postgres"
REFERENCE = "reference: bare confirmed publish (`bench/reference_receiver.py`)"
WRK_CORE = "1"
# The pool signed for each measurement: this many callbacks per second of --duration (360,000 for 30 s), more than
# 30 s at ~10,000/s sends (about what the receiver alone reaches here; the whole pipeline makes less), so wrk never
# repeats a callback and every 2xx is a distinct one. wrk_pipeline.lua's counts check it on every run.
POOL_RATE = 12_000
# Waiting for the worker after wrk stops: the last stored row is taken as final once the queue has nothing ready
# and no row has been added for QUIET_S (or GIVE_UP_S, if fewer rows than 200 answers are stored by then).
QUIET_S = 1.0
GIVE_UP_S = 30.0

# The lag to the storing transaction's start over every stored callback (archived_at is the transaction's now()).
FRESHNESS = text(
    """
    SELECT count(*) AS stored,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY lag) AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) AS p99,
           max(lag) AS max
    FROM (SELECT (extract(epoch FROM archived_at - received_at) * 1000)::float8 AS lag FROM callbacks) AS lags
    """
)


def histogram_quantile(q: float, metrics: str, name: str) -> float:
    """The ``q`` quantile of a Prometheus histogram in ``metrics`` (text format), interpolated linearly within the
    bucket it falls in, as Prometheus's ``histogram_quantile`` does."""
    buckets = sorted(
        (float(le), float(count))
        for le, count in re.findall(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', metrics, re.MULTILINE)
    )
    total = buckets[-1][1]
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = upper, count
    return lower


@dataclass
class Result:
    server: str
    accepted_per_s: float
    accepted: int  # 2xx answers wrk counted
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers and socket errors
    sent: int  # requests wrk made, counting those still in flight when it stopped
    # The pipeline's only:
    answered: int | None = None  # callbacks the receiver answered 200, by its own count: distinct callbacks
    stored: int | None = None
    lag_p50_ms: float | None = None
    lag_p99_ms: float | None = None
    lag_max_ms: float | None = None
    visible_p50_ms: float | None = None  # to the commit, from the worker's histogram
    visible_p99_ms: float | None = None
    catch_up_s: float | None = None
    stored_per_s: float | None = None  # stored over the load and the catch-up: what the pipeline sustained
    cpu_us: dict[str, float] | None = None  # CPU per callback (stored, or accepted by the reference), by process
    dead_letters: int | None = None


def free_port() -> int:
    """A port nothing listens on now (the machine is shared: a fixed one may be taken)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=out)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_consuming(process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"the worker exited:\n{log.read_text(errors='replace')[-2000:]}")
        if "consuming" in worker_bench._logged_moments(log.read_text(errors="replace")):
            return
        time.sleep(0.1)
    raise RuntimeError("the worker never started consuming")


def rejections(log: Path) -> Counter[str]:
    """The receiver's refusals by reason, from its JSON log (a stale signature shows here)."""
    reasons: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, AttributeError):
            record = json.loads(line)
            if record.get("message") == "callback rejected":
                reasons[f"{record.get('status')} {record.get('reason')}"] += 1
    return reasons


_TICK = os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent from `start` to `stop` by each role: the given processes, Postgres's processes, RabbitMQ's
    (beam.smp), and wrk (a child that exits in between, so counted by this process's children's usage)."""

    def __init__(self, processes: dict[str, int]) -> None:
        self._processes = processes
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        spent: defaultdict[str, float] = defaultdict(float)
        roles = {pid: name for name, pid in self._processes.items()}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = stat.read_text()
                pid, comm = int(text.split(" ", 1)[0]), text[text.index("(") + 1 : text.rindex(")")]
                fields = text[text.rindex(")") + 2 :].split()
                role = roles.get(pid) or {"postgres": "postgres", "beam.smp": "rabbitmq"}.get(comm)
                if role:
                    spent[role] += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        spent["wrk"] = children.ru_utime + children.ru_stime
        return dict(spent)

    def start(self) -> None:
        self._start = self._now()

    def per_callback_us(self, callbacks: int) -> dict[str, float]:
        end = self._now()
        spent = {role: seconds - self._start.get(role, 0.0) for role, seconds in end.items()}
        return {role: seconds / callbacks * 1e6 for role, seconds in spent.items()} if callbacks else {}


def sign(args: argparse.Namespace, seed: int, workdir: Path) -> Path:
    """A fresh pool of signed callbacks, in wrk's line format."""
    requests = workdir / f"requests-{seed}.txt"
    signing = time.perf_counter()
    write_requests(requests, args.pool, seed)
    print(f"  signed {args.pool:,} callbacks in {time.perf_counter() - signing:.1f} s", file=sys.stderr)
    return requests


def load(args: argparse.Namespace, port: int, requests: Path) -> tuple[Result, float]:
    """Run wrk against ``port`` with the pool ``requests`` (deleted after); return its figures and the moment
    (epoch s) it stopped."""
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", "--latency"]
    command += ["-s", str(BENCH / "wrk_pipeline.lua"), f"http://127.0.0.1:{port}"]
    env = {
        **os.environ,
        "CTWA_BENCH_SCRIPT": str(BENCH / "wrk_callbacks.lua"),
        "CTWA_BENCH_REQUESTS": str(requests),
        "CTWA_BENCH_THREADS": str(args.threads),
    }
    try:
        wrk = subprocess.run(["taskset", "-c", WRK_CORE, *command], env=env, capture_output=True, text=True, check=True)
    finally:
        requests.unlink()
    stopped = time.time()
    made = re.findall(r"^ctwa-bench thread made (\d+) requests of (\d+)$", wrk.stdout, re.MULTILINE)
    if len(made) != args.threads:
        raise RuntimeError(f"wrk did not count its threads' requests:\n{wrk.stdout}")
    if any(int(sent) > int(share) for sent, share in made):
        raise RuntimeError(
            f"a wrk thread went round its share of the pool (callbacks sent twice): raise --pool\n{made}"
        )
    accepted_per_s, p50, p99, errors = parse_wrk(wrk.stdout, args.duration)
    accepted = round(accepted_per_s * args.duration)
    sent = sum(int(count) for count, _ in made)
    return Result("", accepted_per_s, accepted, p50, p99, errors, sent), stopped


def answered(port: int) -> int:
    """The callbacks the receiver answered 200, by its own ``ctwa_receiver_accepted`` counters, once nothing is in
    flight. Unlike wrk's count it includes the requests wrk had in flight when it stopped (about one per connection):
    the receiver answered them, and they are stored too."""
    for _ in range(100):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        if re.search(r"^ctwa_receiver_in_flight 0\.0$", metrics, re.MULTILINE):
            break
        time.sleep(0.1)
    else:
        raise RuntimeError("the receiver still had callbacks in flight 10 s after wrk stopped")
    counts = re.findall(r"^ctwa_receiver_accepted_total\{.*\} (\S+)$", metrics, re.MULTILINE)
    return round(sum(float(count) for count in counts))


async def wait_drained(database_url: str, topology: Topology, answered: int, stopped: float) -> float:
    """Wait until the worker has stored what was left when wrk stopped; return the catch-up: seconds from wrk's stop
    to the moment the last row was seen stored (polled every 0.1 s)."""
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as database, await aio_pika.connect(AMQP_URL) as broker:
            channel = await broker.channel()
            newest, seen = -1, time.time()
            while True:
                # max(id), not count(*): an index lookup, where a count would scan the archive while the worker works.
                latest = int(await database.scalar(text("SELECT coalesce(max(id), 0) FROM callbacks")) or 0)
                now = time.time()
                if latest != newest:
                    newest, seen = latest, now
                queue = await channel.declare_queue(topology.queue, passive=True)
                ready = queue.declaration_result.message_count or 0
                quiet = now - seen
                # Ids are consecutive here (no callback comes twice), so max(id) reaching the 200s means all are in.
                if ready == 0 and ((quiet >= QUIET_S and newest >= answered) or quiet >= GIVE_UP_S):
                    return max(seen - stopped, 0.0)
                if quiet >= GIVE_UP_S:
                    raise RuntimeError(f"the worker stored nothing for {GIVE_UP_S:.0f} s with {ready} messages waiting")
                await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


async def freshness(result: Result, database_url: str, topology: Topology) -> None:
    """Fill in what was stored, the freshness lag and the dead letters, once the queue has drained."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as database:
            row = (await database.execute(FRESHNESS)).one()
    finally:
        await engine.dispose()
    result.stored = int(row.stored)
    result.lag_p50_ms, result.lag_p99_ms, result.lag_max_ms = float(row.p50), float(row.p99), float(row.max)
    async with await aio_pika.connect(AMQP_URL) as broker:
        channel = await broker.channel()
        dead = await channel.declare_queue(topology.dead_letter_queue, passive=True)
        result.dead_letters = dead.declaration_result.message_count or 0


def run_pipeline(args: argparse.Namespace, seed: int, workdir: Path) -> Result:
    port = free_port()
    prefix = f"ctwa-bench-{uuid.uuid4().hex[:8]}"
    topology = Topology(prefix)
    database_url = (
        make_url(worker_bench.SERVER_URL).set(database=prefix.replace("-", "_")).render_as_string(hide_password=False)
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CTWA_LOG_FORMAT": "json"}
    env |= {"CTWA_AMQP_URL": AMQP_URL, "CTWA_AMQP_PREFIX": prefix}
    worker_metrics_port = free_port()
    worker_env = env | {"CTWA_DATABASE_URL": database_url, "CTWA_WORKER_METRICS_PORT": str(worker_metrics_port)}
    receiver_env = env | {
        "CTWA_HTTP_HOST": "127.0.0.1",
        "CTWA_HTTP_PORT": str(port),
        "CTWA_WEBHOOK_SECRETS": SECRET,
    }
    worker_log, receiver_log = workdir / f"worker-{seed}.log", workdir / f"receiver-{seed}.log"
    with contextlib.ExitStack() as cleanup:
        # Undone in reverse: the receiver, the worker, the broker's queues, the database — each even if one fails.
        cleanup.callback(lambda: asyncio.run(worker_bench.reset_database(database_url)))
        asyncio.run(worker_bench.reset_database(database_url))
        upgrade(database_url)
        cleanup.callback(lambda: asyncio.run(delete_topology(topology)))
        worker = start([str(CTWA), "worker"], worker_env, worker_log)
        cleanup.callback(stop, worker)
        wait_consuming(worker, worker_log)
        receiver = start([str(CTWA), "receiver"], receiver_env, receiver_log)
        cleanup.callback(stop, receiver)
        wait_ready(port, receiver)

        requests = sign(args, seed, workdir)
        cpu = CpuMeter({"receiver": receiver.pid, "worker": worker.pid})
        cpu.start()
        result, stopped = load(args, port, requests)
        print(
            f"  wrk stopped: {result.accepted:,} answered 2xx of {result.sent:,} sent; waiting for the worker",
            file=sys.stderr,
        )
        if result.errors:
            print(f"  receiver's refusals: {dict(rejections(receiver_log))}", file=sys.stderr)
        result.answered = answered(port)
        result.catch_up_s = asyncio.run(wait_drained(database_url, topology, result.answered, stopped))
        result.cpu_us = cpu.per_callback_us(result.answered)
        for process, name in ((worker, "worker"), (receiver, "receiver")):
            if process.poll() is not None:
                raise RuntimeError(f"the {name} exited during the run with {process.returncode}")
        asyncio.run(freshness(result, database_url, topology))
        with urllib.request.urlopen(f"http://127.0.0.1:{worker_metrics_port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        result.visible_p50_ms = histogram_quantile(0.5, metrics, "ctwa_worker_freshness_seconds") * 1000
        result.visible_p99_ms = histogram_quantile(0.99, metrics, "ctwa_worker_freshness_seconds") * 1000
    result.stored_per_s = (result.stored or 0) / (args.duration + result.catch_up_s)
    result.server = PIPELINE
    return result


def run_reference(args: argparse.Namespace, seed: int, workdir: Path) -> Result:
    port = free_port()
    prefix = f"ctwa-bench-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, str(BENCH / "reference_receiver.py"), str(port), AMQP_URL, prefix]
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: asyncio.run(delete_topology(Topology(prefix))))
        server = start(command, {**os.environ, "PYTHONUNBUFFERED": "1"}, workdir / f"reference-{seed}.log")
        cleanup.callback(stop, server)
        wait_ready(port, server)
        requests = sign(args, seed, workdir)
        cpu = CpuMeter({"reference": server.pid})
        cpu.start()
        result, _ = load(args, port, requests)
        result.cpu_us = cpu.per_callback_us(result.accepted)
        if server.poll() is not None:
            raise RuntimeError(f"the reference exited during the run with {server.returncode}")
    result.server = REFERENCE
    return result


def report(result: Result) -> None:
    line = (
        f"  {result.accepted_per_s:,.0f}/s  p50 {result.p50_ms:.1f} ms  p99 {result.p99_ms:.1f} ms  "
        f"errors {result.errors}"
    )
    if result.stored is not None:
        line += (
            f"\n  stored {result.stored:,}; the receiver answered {result.answered:,} with 200 ({result.accepted:,} "
            f"within wrk's count); dead letters {result.dead_letters}; freshness to the commit p50 "
            f"{result.visible_p50_ms:.0f} ms p99 {result.visible_p99_ms:.0f} ms; to the transaction's start p50 "
            f"{result.lag_p50_ms:.0f} ms p99 {result.lag_p99_ms:.0f} ms max {result.lag_max_ms:.0f} ms; "
            f"catch-up {result.catch_up_s:.1f} s; {result.stored_per_s:,.0f} stored/s with the catch-up"
        )
    if result.cpu_us:
        line += "\n  CPU per callback: " + ", ".join(
            f"{role} {us:.0f} µs" for role, us in sorted(result.cpu_us.items())
        )
    print(line, file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=30, help="seconds of wrk load per measurement")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="wrk threads (default 1: wrk loads each further thread's share of the pool while the first already "
        "sends, a head start of seconds that its requests/s count but its duration does not)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the pipeline and the reference, alternating")
    parser.add_argument(
        "--pool",
        type=int,
        help=f"distinct signed callbacks per measurement (default {POOL_RATE:,} per second of --duration: "
        "more than a run sends)",
    )
    args = parser.parse_args()
    args.pool = args.pool or POOL_RATE * args.duration
    # Stopped from outside (SIGTERM), the run still stops its processes and drops its queues and database.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    if not CTWA.exists():
        sys.exit(f"{CTWA} is missing: pip install -e . in this environment")

    results: list[Result] = []
    with tempfile.TemporaryDirectory() as workdir:
        seed = 0
        for round_number in range(args.rounds):
            # The order alternates, so a drift in the machine's speed weighs on both alike.
            runs = (run_pipeline, run_reference) if round_number % 2 == 0 else (run_reference, run_pipeline)
            for run in runs:
                seed += 1
                name = PIPELINE if run is run_pipeline else REFERENCE
                print(f"round {round_number + 1}/{args.rounds}: {name}", file=sys.stderr)
                result = run(args, seed, Path(workdir))
                report(result)
                results.append(result)

    pipeline = [r for r in results if r.server == PIPELINE]
    reference = [r for r in results if r.server == REFERENCE]

    def median(rows: list[Result], field: str) -> float:
        return statistics.median(float(getattr(r, field)) for r in rows)

    rounds = f"{args.rounds} rounds (medians)" if args.rounds > 1 else "1 round"
    print(
        f"\n{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s on core {WRK_CORE}, {rounds}, "
        f"{args.pool:,} signed callbacks per measurement\n"
    )
    print(
        "| server | accepted/s | vs reference | HTTP p50 | HTTP p99 | errors | freshness p50 | p99 "
        "| to the transaction's start p50 | p99 | max | stored / answered 200 | catch-up | stored/s with the catch-up |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = median(reference, "accepted_per_s")
    for name, rows in ((PIPELINE, pipeline), (REFERENCE, reference)):
        accepted = median(rows, "accepted_per_s")
        line = (
            f"| {name} | {accepted:,.0f} | {accepted / base if base else float('nan'):.0%} "
            f"| {median(rows, 'p50_ms'):.1f} ms "
            f"| {median(rows, 'p99_ms'):.1f} ms | {sum(r.errors for r in rows)} |"
        )
        if name == PIPELINE:
            stored, answered_200 = sum(r.stored or 0 for r in rows), sum(r.answered or 0 for r in rows)
            line += (
                f" {median(rows, 'visible_p50_ms'):,.0f} ms | {median(rows, 'visible_p99_ms'):,.0f} ms "
                f"| {median(rows, 'lag_p50_ms'):,.0f} ms | {median(rows, 'lag_p99_ms'):,.0f} ms "
                f"| {max(r.lag_max_ms or 0 for r in rows):,.0f} ms | {stored:,} / {answered_200:,} "
                f"| {median(rows, 'catch_up_s'):.1f} s | {median(rows, 'stored_per_s'):,.0f} |"
            )
        else:
            line += " | | | | | | | |"
        print(line)
    print(
        "\nFreshness: from the receiver reading a callback to the commit that made it visible in Postgres (the "
        "worker's ctwa_worker_freshness_seconds, interpolated within its buckets); to the transaction's start: "
        "archived_at (the storing transaction's now()) minus received_at, exactly, over every stored callback. "
        "Catch-up: from wrk's stop to the last callback stored. Stored/s with the catch-up: the callbacks stored over "
        "the load and the catch-up, what the pipeline sustained end to end."
    )

    roles = ("receiver", "worker", "postgres", "rabbitmq", "reference", "wrk")
    print("\nCPU per callback (stored by the pipeline, accepted by the reference), medians, µs:\n")
    print("| server | " + " | ".join(roles) + " | all |")
    print("|---|" + "---:|" * (len(roles) + 1))
    for name, rows in ((PIPELINE, pipeline), (REFERENCE, reference)):
        spent = {role: statistics.median((r.cpu_us or {}).get(role, 0.0) for r in rows) for role in roles}
        cells = " | ".join(f"{spent[role]:.0f}" if spent[role] >= 0.5 else "" for role in roles)
        print(f"| {name} | {cells} | {sum(spent.values()):.0f} |")

    lost = sum(max((r.answered or 0) - (r.stored or 0), 0) for r in pipeline)
    dead = sum(r.dead_letters or 0 for r in pipeline)
    if lost or dead:
        print(f"\nLOST: {lost:,} callbacks answered 200 were not stored; {dead:,} dead letters")
        sys.exit(1)
    extra = sum(max((r.stored or 0) - (r.answered or 0), 0) for r in pipeline)
    print(
        "\nNothing lost: every callback answered 200 was stored"
        + (f", and {extra:,} refused with an error (to be retried) were stored too." if extra else ".")
    )


if __name__ == "__main__":
    main()
