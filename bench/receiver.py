"""Receiver benchmark: ``ctwa receiver`` with group commit (the default), without it (one message per callback,
``CTWA_PUBLISH_LINGER_MS=0``), and a bare publish-with-confirms aiohttp handler, in one run.

All get the same signed, realistic callbacks with unique ids from wrk at the same concurrency, and publish into
the local RabbitMQ. Rounds rotate the order so drift on a shared machine hits all alike. Prints a Markdown
table: accepted/s, p50/p99 latency, peak RSS.

    python bench/receiver.py [--duration 20] [--connections 64] [--rounds 2] [--before TREE]

With ``--before TREE`` (another commit checked out with ``git worktree add TREE <commit>``), that tree's receiver,
group commit and one message per callback, runs in the same rounds too: before and after in one run. With
``--apps N``, this tree's receivers verify by an apps file of N apps (the traffic's app among them, CTWA_APPS_FILE)
instead of CTWA_WEBHOOK_SECRETS; the other tree's keep the plain secret.

Needs wrk (``apt-get install wrk``) and RabbitMQ on CTWA_AMQP_URL (default the local one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import aio_pika

sys.path.insert(0, str(Path(__file__).parent))
from traffic import APP_ID, callbacks

from ingest.receiver.signature import sign
from ingest.topology import Topology

BENCH = Path(__file__).parent
AMQP_URL = os.environ.get("CTWA_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SECRET = "bench-webhook-secret"
GROUP_COMMIT = "ctwa receiver (group commit)"
SINGLE = "ctwa receiver (one message per callback)"
SERVERS = ("reference", SINGLE, GROUP_COMMIT)
BEFORE = "before: "  # the prefix of the other tree's servers


@dataclass
class Result:
    server: str
    accepted_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    peak_rss_mb: float
    callbacks_per_message: float | None  # the receiver's own count; None for the reference


def callbacks_per_message(port: int) -> float | None:
    """The mean callbacks per published message, from the receiver's ``ctwa_receiver_message_callbacks``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = re.search(r"^ctwa_receiver_message_callbacks_sum (\S+)$", text, re.MULTILINE)
    count = re.search(r"^ctwa_receiver_message_callbacks_count (\S+)$", text, re.MULTILINE)
    if not (total and count and float(count.group(1))):
        return None
    return float(total.group(1)) / float(count.group(1))


def write_requests(path: Path, count: int, seed: int) -> None:
    """Sign ``count`` callbacks now (their timestamps must be fresh) into wrk's line format."""
    timestamp = str(int(time.time()))
    with path.open("w") as out:
        for n, payload in enumerate(callbacks(count, seed=seed)):
            body = json.dumps(payload, separators=(",", ":")).encode()
            nonce = f"bench-{seed}-{n}"
            out.write(f"{sign(body, SECRET, nonce, timestamp)}\t{nonce}\t{timestamp}\t{body.decode()}\n")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def parse_wrk(output: str, duration: float) -> tuple[float, float, float, int]:
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)$", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)$", output, re.MULTILINE).group(1))  # type: ignore[union-attr]
    return (requests - errors) / duration, p50, p99, errors


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def delete_topology(topology: Topology) -> None:
    async with await aio_pika.connect(AMQP_URL) as connection, connection.channel() as channel:
        await topology.delete(channel)


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    import urllib.request

    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server never became ready")


def _apps_file(count: int, workdir: Path) -> dict[str, str]:
    """Settings for an apps file of ``count`` apps, each with two secrets, the traffic's app last; no secret valid
    for every app."""
    others = [f"01BENCH{n:019d}" for n in range(count - 1)]
    path = workdir / "apps.toml"
    path.write_text(
        "".join(f'[[app]]\nid = "{app}"\nwebhook_secrets = ["{app}-old", "{app}-new"]\n' for app in others)
        + f'[[app]]\nid = "{APP_ID}"\nwebhook_secrets = ["{SECRET}-old", "{SECRET}"]\n'
    )
    return {"CTWA_APPS_FILE": str(path), "CTWA_WEBHOOK_SECRETS": ""}


def run_one(server: str, args: argparse.Namespace, seed: int, workdir: Path) -> Result:
    port = 18_000 + seed
    prefix = f"ctwa-bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    tree = BENCH.parent
    if server.startswith(BEFORE):
        # `python -m` in that tree, that tree first on the path: its code, this interpreter's dependencies.
        tree = args.before.resolve()
        env["PYTHONPATH"] = str(tree)
    if server.removeprefix(BEFORE).startswith("ctwa receiver"):
        command = [sys.executable, "-m", "workers", "receiver"]
        env |= {
            "CTWA_AMQP_URL": AMQP_URL,
            "CTWA_AMQP_PREFIX": prefix,
            "CTWA_HTTP_HOST": "127.0.0.1",
            "CTWA_HTTP_PORT": str(port),
            "CTWA_WEBHOOK_SECRETS": SECRET,
            "CTWA_LOG_FORMAT": "json",
            **(_apps_file(args.apps, workdir) if args.apps and tree == BENCH.parent else {}),
            "CTWA_PUBLISH_LINGER_MS": "0" if server.removeprefix(BEFORE) == SINGLE else "2",
        }
    else:
        command = [sys.executable, str(BENCH / "reference_receiver.py"), str(port), AMQP_URL, prefix]
    requests = workdir / f"requests-{seed}.txt"
    write_requests(requests, args.pool, seed)
    # The server gets core 0 and wrk core 1 (RabbitMQ floats), so the scheduler's placement adds no noise.
    process = subprocess.Popen(["taskset", "-c", "0", *command], env=env, cwd=tree, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, process)
        wrk = subprocess.run(
            [
                "taskset",
                "-c",
                "1",
                "wrk",
                f"-t{args.threads}",
                f"-c{args.connections}",
                f"-d{args.duration}s",
                "--latency",
                "-s",
                str(BENCH / "wrk_callbacks.lua"),
                f"http://127.0.0.1:{port}",
            ],
            env={**os.environ, "CTWA_BENCH_REQUESTS": str(requests), "CTWA_BENCH_THREADS": str(args.threads)},
            capture_output=True,
            text=True,
            check=True,
        )
        rss = peak_rss_mb(process.pid)
        per_message = callbacks_per_message(port) if server != "reference" else None
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        requests.unlink()
        asyncio.run(delete_topology(Topology(prefix)))
    accepted, p50, p99, errors = parse_wrk(wrk.stdout, args.duration)
    return Result(server, accepted, p50, p99, errors, rss, per_message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=15, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds of each server")
    parser.add_argument("--pool", type=int, default=100_000, help="distinct signed callbacks per measurement")
    parser.add_argument("--before", type=Path, help="another tree whose receiver runs in the same rounds")
    parser.add_argument("--apps", type=int, default=0, help="this tree's receivers verify by an apps file of N apps")
    args = parser.parse_args()
    servers = SERVERS + ((BEFORE + SINGLE, BEFORE + GROUP_COMMIT) if args.before else ())
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    results: list[Result] = []
    with tempfile.TemporaryDirectory() as workdir:
        seed = 0
        for round_number in range(args.rounds):
            # The order rotates: a drift in the machine's speed during the run weighs on every server alike.
            shift = round_number % len(servers)
            order = servers[shift:] + servers[:shift]
            for server in order:
                seed += 1
                result = run_one(server, args, seed, Path(workdir))
                print(
                    f"{server:>42}: {result.accepted_per_s:8.0f}/s  p50 {result.p50_ms:6.2f} ms  "
                    f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}  RSS {result.peak_rss_mb:.0f} MB  "
                    f"callbacks/message {result.callbacks_per_message or 1:.1f}",
                    file=sys.stderr,
                )
                results.append(result)

    def median(server: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in results if r.server == server)

    reference = median("reference", "accepted_per_s")
    print(
        f"\n{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {args.rounds} rounds (medians)\n"
    )
    print("| server | accepted/s | vs reference | p50 | p99 | errors | peak RSS | callbacks per message |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for server in servers:
        accepted = median(server, "accepted_per_s")
        errors = sum(r.errors for r in results if r.server == server)
        per_message = [r.callbacks_per_message for r in results if r.server == server and r.callbacks_per_message]
        carried = f"{statistics.median(per_message):.1f}" if per_message else "1"
        print(
            f"| {server} | {accepted:,.0f} | {accepted / reference:.0%} | {median(server, 'p50_ms'):.1f} ms "
            f"| {median(server, 'p99_ms'):.1f} ms | {errors} | {median(server, 'peak_rss_mb'):.0f} MB | {carried} |"
        )


if __name__ == "__main__":
    main()
