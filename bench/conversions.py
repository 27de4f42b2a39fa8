"""Conversions sender benchmark: ``ctwa conversions send --drain`` sends a backlog of conversion events to a fake
Meta; in the same run, the HTTP side alone and the database side alone.

    python bench/conversions.py [--count 50000] [--rounds 3] [--latency 0]

The backlog: ``--count`` Purchase events an hour old (a value, a currency, an order id), in a database of the run's
own. Every other event names a contact, so the sender attributes it to the contact's latest click; the others carry
an explicit ctwa_clid, of a click stored too. The clicks are plain INSERTs into ``ad_clicks``, since for a contact
neither merged nor erased the clicks are all that attribution finds: each of those contacts clicked an ad three days
and two hours before its event, and each explicit ctwa_clid is a click of its own. The database is built and
analysed once, then copied for every measurement (``CREATE DATABASE … TEMPLATE``), so each starts from the same rows.
After each run of the sender the script checks that every event is ``sent``, attributed to the click it should be.

Three measurements a round, the order rotating from round to round so that the machine's drift weighs on all alike:

- the sender: ``python -m workers conversions send --drain``, default settings (1,000 events a request), against
  tests/meta.py's FakeMeta — a real aiohttp server that checks and counts every event as Meta does — served by this
  process. The script checks that Meta counted every event once and that every event ended ``sent``;
- the reference, the HTTP side alone (``bench/reference_meta_client.py``): a bare aiohttp loop posts as many events,
  1,000 a request, one request at a time, to a FakeMeta of the same kind; no database;
- the database side alone (``bench/database_only_sender.py``): the same sender with Meta stood in by a client that
  counts every request at once — its claims, attribution and settling, no HTTP.

The sender and both references run pinned to core 0, this process (the fake Meta) to core 1; Postgres floats.
events/s count from the first request to the sender's "sender stopped" (the reference: to its last answer); "process
life" from the process's start to its exit. CPU per event over the first-request-to-drained span: the measured
process's (``/proc/<pid>/stat``, and its rusage at exit), the Postgres backends of the run's database (the server's
own processes are left out: other runs may share the server), and this process's (the fake Meta, and the sampling).
Prints Markdown tables on stdout (medians over the rounds); progress on stderr. Needs PostgreSQL on
CTWA_DATABASE_URL's server (default the local one) and ``taskset`` to pin (without it, nothing is pinned).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

# bench/ for its neighbours, tests/ for the fake Meta; the project root before tests/, as in pytest's pythonpath, since
# tests/ has directories named ingest, workers and migrations too.
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from meta import FakeMeta, Slow
from traffic import ADS, APP_ID
from worker import SERVER_URL, _logged_moments, reset_database

from ingest.eventloop import new_event_loop
from workers.commands.migrate import upgrade

BENCH = Path(__file__).parent
SENDER = "`ctwa conversions send --drain`"
DATABASE_ALONE = "database alone: the sender, Meta answering at once (`bench/database_only_sender.py`)"
REFERENCE = "reference: bare aiohttp loop, no database (`bench/reference_meta_client.py`)"
CLIENT_CORE = 0  # the sender, or the reference standing in for it
META_CORE = 1  # this process: the fake Meta
TICK_S = 0.05  # how often CPU is sampled
_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def _contact(n: str) -> str:
    """The contact id of event or click ``n`` (SQL)."""
    return f"'BENCH' || lpad(({n})::text, 21, '0')"


def _clid(n: str, k: str) -> str:
    """The ctwa_clid of click ``k`` of ``n`` (SQL): 52 characters, as long as Meta's."""
    return f"'AR' || md5(({n}) || '/' || ({k})) || left(md5(({k}) || '/' || ({n})), 18)"


# Event n names contact n when n is even (clicks k = 0 three days before, k = 1 two hours before: attribution picks
# k = 1); when n is odd it names click (n, 1), a click of its own, by its ctwa_clid.
CLICKS = text(
    f"""
    INSERT INTO ad_clicks (message_id, ctwa_clid, source_id, source_type, source_url, headline, media_type, app_id,
                           channel, identity, contact_id, conversation_id, clicked_at, referral)
    SELECT 'bench-click-' || n || '-' || k, {_clid("n", "k")}, ad.source_id, 'ad', 'https://fb.me/8xQmT2pLw',
           ad.headline, ad.media_type, :app_id, 'WHATSAPP', '346' || lpad(n::text, 8, '0'), {_contact("n")},
           'bench-conversation-' || n, now() - CASE k WHEN 0 THEN interval '3 days' ELSE interval '2 hours' END,
           jsonb_build_object('source_id', ad.source_id, 'source_type', 'ad', 'headline', ad.headline,
                              'media_type', ad.media_type, 'ctwa_clid', {_clid("n", "k")})
    FROM generate_series(0, :count - 1) AS n
    CROSS JOIN generate_series(0, 1) AS k
    CROSS JOIN LATERAL (
        SELECT (CAST(:sources AS text[]))[n % :ads + 1] AS source_id, (CAST(:headlines AS text[]))[n % :ads + 1]
               AS headline, (CAST(:media AS text[]))[n % :ads + 1] AS media_type
    ) AS ad
    WHERE n % 2 = 0 OR k = 1
    """
)
EVENTS = text(
    f"""
    INSERT INTO conversion_events (event_id, event_name, event_time, contact_id, ctwa_clid, value, currency,
                                   custom_data)
    SELECT 'bench-order-' || n, 'Purchase', now() - interval '1 hour',
           CASE WHEN n % 2 = 0 THEN {_contact("n")} END, CASE WHEN n % 2 = 1 THEN {_clid("n", "1")} END,
           59.90, 'EUR', jsonb_build_object('order_id', n::text)
    FROM generate_series(0, :count - 1) AS n
    """
)


@dataclass
class Result:
    name: str
    seconds: float  # from the first request to drained
    life_s: float  # from the process's start to its exit
    cpu_s: dict[str, float]  # CPU seconds over `seconds`, by role


PINNING = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(command: list[str], core: int) -> list[str]:
    return ["taskset", "-c", str(core), *command] if PINNING else command


def _cpu_of(pid: int) -> float | None:
    """utime + stime of ``pid``, in seconds; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICK


def _at(history: list[tuple[float, float]], moment: float) -> float:
    """CPU seconds at ``moment``, between the samples around it (0 before the first, the last after it)."""
    if not history or moment < history[0][0]:
        return 0.0
    for (before, spent), (after, then) in itertools.pairwise(history):
        if before <= moment <= after:
            return spent + (then - spent) * (moment - before) / (after - before) if after > before else then
    return history[-1][1]


class CpuTrace:
    """CPU seconds over time of the measured process, of the Postgres backends serving ``database``, and of this
    process (the fake Meta), sampled every TICK_S, to be read at any moment of the run."""

    def __init__(self, pid: int, database: str) -> None:
        self._pid = pid
        self._title = f" {database} "  # in a backend's process title: "postgres: 15/main: user database host …"
        self.client: list[tuple[float, float]] = []
        self.bench: list[tuple[float, float]] = []
        self.backends: dict[int, list[tuple[float, float]]] = {}
        self._elsewhere: set[int] = set()  # processes that are not Postgres's

    def sample(self) -> None:
        now = time.time()
        if (spent := _cpu_of(self._pid)) is not None:
            self.client.append((now, spent))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.bench.append((now, usage.ru_utime + usage.ru_stime))
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or (pid := int(entry.name)) in self._elsewhere:
                continue
            if pid not in self.backends:
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() != "postgres":
                        self._elsewhere.add(pid)
                        continue
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if self._title not in title:
                    continue  # another database's, or a backend not named yet: looked at again
                self.backends[pid] = []
            if (spent := _cpu_of(pid)) is not None:
                self.backends[pid].append((now, spent))

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(TICK_S)

    def exited(self, moment: float, usage: resource.struct_rusage) -> None:
        """The measured process's last word: its rusage when it was reaped."""
        self.client.append((moment, usage.ru_utime + usage.ru_stime))

    def spent(self, start: float, end: float, *, fake_meta: bool) -> dict[str, float]:
        spent = {"process": _at(self.client, end) - _at(self.client, start)}
        spent["postgres"] = sum(_at(history, end) - _at(history, start) for history in self.backends.values())
        if fake_meta:
            spent["fake Meta"] = _at(self.bench, end) - _at(self.bench, start)
        return spent


def _url(database: str) -> str:
    return make_url(SERVER_URL).set(database=database).render_as_string(hide_password=False)


async def build_template(database: str, count: int) -> None:
    """The run's database, migrated, with the clicks and ``count`` pending events, analysed."""
    url = _url(database)
    await reset_database(url)
    await asyncio.to_thread(upgrade, url)
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            sources, headlines, media = (list(column) for column in zip(*ADS, strict=True))
            await connection.execute(
                CLICKS,
                {
                    "count": count,
                    "app_id": APP_ID,
                    "sources": sources,
                    "headlines": headlines,
                    "media": media,
                    "ads": len(ADS),
                },
            )
            await connection.execute(EVENTS, {"count": count})
            await connection.execute(text("VACUUM (ANALYZE) ad_clicks, conversion_events"))
    finally:
        await engine.dispose()


async def copy_database(template: str, database: str) -> None:
    admin = create_async_engine(_url("postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{database}" TEMPLATE "{template}"'))
    finally:
        await admin.dispose()


async def statuses(database: str) -> dict[str, int]:
    """The events by status, and apart those attributed to another click than their own latest (k = 1)."""
    engine = create_async_engine(_url(database))
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT CASE WHEN click_message_id = 'bench-click-' || substr(event_id, 13) || '-1' "
                    "AND sent_ctwa_clid IS NOT NULL THEN status ELSE status || ', misattributed' END, count(*) "
                    "FROM conversion_events GROUP BY 1"
                )
            )
            return {status: count for status, count in rows}
    finally:
        await engine.dispose()


async def _first_request(meta: FakeMeta) -> float:
    await meta.wait_requests(1, timeout=3600)
    return time.time()


def _process(name: str, meta: FakeMeta | None, database: str, count: int) -> tuple[list[str], dict[str, str]]:
    """The command line and the environment of ``name``'s process, on ``database`` and ``meta``: the CTWA_*
    variables of this environment left out, so that a setting of the caller's (a batch size) cannot skew it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CTWA_")}
    env |= {
        "PYTHONUNBUFFERED": "1",
        "CTWA_LOG_FORMAT": "json",
        "CTWA_LOG_LEVEL": "INFO",
        "CTWA_DATABASE_URL": _url(database),
        "CTWA_CONVERSIONS_METRICS_PORT": "0",
        # The database alone never calls Meta, but the sender's settings want it named.
        "CTWA_META_GRAPH_URL": meta.url if meta else "http://127.0.0.1:9",
        "CTWA_META_API_VERSION": meta.version if meta else "v25.0",
        "CTWA_META_DATASET_ID": meta.dataset_id if meta else "1234567890",
        "CTWA_META_ACCESS_TOKEN": meta.token if meta else "token",
        "CTWA_META_WABA_ID": meta.waba_id if meta else "waba",
    }
    if name == SENDER:
        return [sys.executable, "-m", "workers", "conversions", "send", "--drain"], env
    if name == DATABASE_ALONE:
        return [sys.executable, str(BENCH / "database_only_sender.py")], env
    assert meta is not None
    events_url = f"{meta.url}/{meta.version}/{meta.dataset_id}/events"
    return [
        sys.executable,
        str(BENCH / "reference_meta_client.py"),
        events_url,
        meta.token,
        meta.waba_id,
        str(count),
    ], env


async def measure(name: str, template: str, count: int, latency: float, workdir: Path) -> Result:
    """Copy the template, run ``name``'s process on it to completion (the fake Meta answering each request
    ``latency`` seconds after it arrived), check what it did; its figures."""
    database = f"{template}_{uuid.uuid4().hex[:6]}"
    await copy_database(template, database)
    try:
        async with contextlib.AsyncExitStack() as stack:
            meta = None if name == DATABASE_ALONE else await stack.enter_async_context(FakeMeta())
            if meta is not None and latency > 0:
                meta.always(Slow(latency))
            command, env = _process(name, meta, database, count)
            out, log = workdir / f"{database}.out", workdir / f"{database}.log"
            with out.open("wb") as stdout, log.open("wb") as stderr:
                started = time.time()
                # Not asyncio's subprocess: its loop would reap the process, and with it the rusage os.wait4 gives.
                process = subprocess.Popen(  # noqa: ASYNC220
                    pinned(command, CLIENT_CORE), env=env, stdout=stdout, stderr=stderr
                )
            stack.callback(_reap, process)
            trace = CpuTrace(process.pid, database)
            sampling = asyncio.create_task(trace.run())
            first_seen = asyncio.create_task(_first_request(meta)) if meta and name == SENDER else None
            if first_seen is not None:
                stack.callback(first_seen.cancel)
            try:
                _, status, usage = await asyncio.to_thread(os.wait4, process.pid, 0)
            finally:
                sampling.cancel()
            exited = time.time()
            process.returncode = os.waitstatus_to_exitcode(status)
            trace.exited(exited, usage)
            logged = log.read_text(errors="replace")
            if process.returncode != 0:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{logged[-3000:]}")
            if name == REFERENCE:
                answer = json.loads(out.read_text())
                first, done = float(answer["first"]), float(answer["done"])
            else:
                moments = _logged_moments(logged)
                if first_seen is not None:
                    if not first_seen.done():
                        raise RuntimeError(f"{name} exited without a request:\n{logged[-3000:]}")
                    first = first_seen.result()
                else:
                    first = moments["first request"]
                done = moments["sender stopped"]
            if meta is not None:
                counted = meta.counted
                if len(counted) != count or any(times != 1 for times in counted.values()):
                    twice = sum(1 for times in counted.values() if times > 1)
                    raise RuntimeError(f"{name}: Meta counted {len(counted):,} events of {count:,}, {twice:,} twice")
            if name != REFERENCE and (found := await statuses(database)) != {"sent": count}:
                raise RuntimeError(f"{name} left the events {found}: not all {count:,} sent, each for its latest click")
            requests = len(meta.requests) if meta else None
    finally:
        await reset_database(_url(database))
    result = Result(name, done - first, exited - started, trace.spent(first, done, fake_meta=meta is not None))
    cpu = ", ".join(f"{role} {seconds / count * 1e6:.0f} µs" for role, seconds in result.cpu_s.items())
    print(
        f"  {count:,} events in {result.seconds:.2f} s = {count / result.seconds:,.0f}/s "
        f"(process life {result.life_s:.2f} s{f', {requests} requests' if requests else ''}); per event: {cpu}",
        file=sys.stderr,
    )
    return result


def _reap(process: subprocess.Popen[bytes]) -> None:
    """A process left running by a failure is killed, not left behind."""
    if process.returncode is None:
        process.kill()
        process.wait()


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    memory_kb = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")
    )
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{platform.node()}: {os.cpu_count()} cores ({model}), {memory_kb / 2**20:.0f} GiB RAM, "
        f"Python {platform.python_version()}, load average at the start {load}"
    )


async def server_version() -> str:
    engine = create_async_engine(_url("postgres"))
    try:
        async with engine.connect() as connection:
            return str(await connection.scalar(text("SHOW server_version")))
    finally:
        await engine.dispose()


async def run(args: argparse.Namespace) -> list[Result]:
    template = f"ctwa_bench_conversions_{uuid.uuid4().hex[:8]}"
    results = []
    try:
        building = time.perf_counter()
        await build_template(template, args.count)
        print(
            f"{args.count:,} events and their clicks stored in {time.perf_counter() - building:.1f} s", file=sys.stderr
        )
        order = [SENDER, REFERENCE, DATABASE_ALONE]
        with tempfile.TemporaryDirectory() as workdir:
            for round_number in range(args.rounds):
                # The order rotates, so that a drift in the machine's speed weighs on all three alike.
                shift = round_number % len(order)
                for name in order[shift:] + order[:shift]:
                    print(f"round {round_number + 1}/{args.rounds}: {name}", file=sys.stderr)
                    results.append(await measure(name, template, args.count, args.latency, Path(workdir)))
    finally:
        await reset_database(_url(template))
    return results


def report(args: argparse.Namespace, results: list[Result], postgres: str) -> None:
    def rates(name: str) -> list[float]:
        return [args.count / r.seconds for r in results if r.name == name]

    reference, database = statistics.median(rates(REFERENCE)), statistics.median(rates(DATABASE_ALONE))
    rounds = f"{args.rounds} rounds, medians" if args.rounds > 1 else "1 round"
    placement = (
        f"the sender and the references on core {CLIENT_CORE}, the fake Meta on core {META_CORE}, Postgres unpinned"
        if PINNING
        else "nothing pinned"
    )
    latency = f"; the fake Meta answering {args.latency * 1000:.0f} ms after each request" if args.latency else ""
    print(f"\n{machine()}; PostgreSQL {postgres}; {placement}; {args.count:,} events, {rounds}{latency}\n")
    roles = ("process", "postgres", "fake Meta")
    print(
        "| run | events/s | vs reference | vs database alone | events/s over the process's life "
        "| CPU per event: the process | Postgres | fake Meta | all |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in (SENDER, DATABASE_ALONE, REFERENCE):
        rows = [r for r in results if r.name == name]
        rate = statistics.median(rates(name))
        life = statistics.median(args.count / r.life_s for r in rows)
        cpu = {role: statistics.median(r.cpu_s.get(role, 0.0) for r in rows) / args.count * 1e6 for role in roles}
        cells = " | ".join(f"{cpu[role]:.0f} µs" if cpu[role] >= 0.5 else "" for role in roles)
        print(
            f"| {name} | {rate:,.0f} | {rate / reference:.0%} | {rate / database:.0%} | {life:,.0f} | {cells} "
            f"| {sum(cpu.values()):.0f} µs |"
        )
    if args.rounds > 1:
        print("\nevents/s in each round:\n")
        print("| run | " + " | ".join(str(n + 1) for n in range(args.rounds)) + " |")
        print("|---|" + "---:|" * args.rounds)
        for name in (SENDER, DATABASE_ALONE, REFERENCE):
            print(f"| {name} | " + " | ".join(f"{rate:,.0f}" for rate in rates(name)) + " |")
    print(
        "\nevents/s: from the first request to drained (the sender's \"sender stopped\"; the reference's last "
        "answer). CPU per event over the same span: Postgres is the backends of the run's database. Meta counted "
        "every event once, and every event ended `sent`, attributed to its latest click."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50_000, help="conversion events to send")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three runs, their order rotating")
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds the fake Meta takes to answer each request (default 0: as fast as it can)",
    )
    args = parser.parse_args()
    # Stopped from outside (SIGTERM), the run still stops its process and drops its databases.
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(128 + number))
    if PINNING:
        os.sched_setaffinity(0, {META_CORE})
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        postgres = runner.run(server_version())
        results = runner.run(run(args))
    report(args, results, postgres)


if __name__ == "__main__":
    main()
