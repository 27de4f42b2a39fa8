"""``ctwa`` as a user runs it: a real process, real signals, the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aio_pika.abc import AbstractConnection
from support import AMQP_URL, TcpRelay, fixture_bytes, free_port, receiver_ready, take_all
from yarl import URL

from ingest.topology import Topology


async def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_help_lists_the_subcommands() -> None:
    code, out, _ = await _run(sys.executable, "-m", "workers", "--help")
    assert code == 0
    assert "receiver" in out


async def test_console_script_and_module_are_the_same_entry_point() -> None:
    ctwa = os.path.join(os.path.dirname(sys.executable), "ctwa")
    assert (await _run(ctwa, "--version"))[1] == (await _run(sys.executable, "-m", "workers", "--version"))[1]


async def test_bad_settings_fail_at_start_naming_the_variable() -> None:
    env = {
        **os.environ,
        "CTWA_HTTP_PORT": "eighty",
        "CTWA_WEBHOOK_SECRETS": "s3cr3t",
        "CTWA_SIGNATURE_TOLERANCE_S": "0",
    }
    code, _, err = await _run(sys.executable, "-m", "workers", "receiver", env=env)
    assert code == 2
    assert "CTWA_HTTP_PORT" in err
    assert "eighty" in err
    assert "CTWA_SIGNATURE_TOLERANCE_S" in err
    assert "s3cr3t" not in err


async def test_a_bad_setting_of_another_service_never_keeps_one_from_starting(
    topology: Topology, database_url: str
) -> None:
    """The receiver reads no CTWA_CONVERSIONS_* or CTWA_META_* setting: bad ones are a warning, not a stop; the
    conversions commands, which read them, refuse to start."""
    port = free_port()
    env = {
        **os.environ,  # without CTWA_* settings: conftest takes them out of the tests' environment
        "CTWA_AMQP_URL": AMQP_URL,
        "CTWA_AMQP_PREFIX": topology.prefix,
        "CTWA_DATABASE_URL": database_url,
        "CTWA_HTTP_HOST": "127.0.0.1",
        "CTWA_HTTP_PORT": str(port),
        "CTWA_LOG_FORMAT": "json",
        "CTWA_CONVERSIONS_LEASE_S": "a while",
        "CTWA_META_TIMEOUT_S": "-1",
        "CTWA_DASHBOARD_PORT": "eighty",
    }
    receiver = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "receiver", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as session:
            await receiver_ready(session, f"http://127.0.0.1:{port}", receiver, within=15)
    finally:
        receiver.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(receiver.communicate(), 30)
    ignored = [json.loads(line) for line in err.decode().splitlines() if "does not read" in line]
    assert sorted(record["problem"].split(":")[0] for record in ignored) == [
        "CTWA_CONVERSIONS_LEASE_S",
        "CTWA_DASHBOARD_PORT",
        "CTWA_META_TIMEOUT_S",
    ]

    code, _, err_text = await _run(sys.executable, "-m", "workers", "conversions", "status", env=env)
    assert code == 2
    assert "CTWA_CONVERSIONS_LEASE_S" in err_text
    assert "CTWA_META_TIMEOUT_S" in err_text
    assert "CTWA_DASHBOARD_PORT" not in err_text  # not the conversions commands' concern either


@pytest.fixture
async def relay() -> AsyncIterator[TcpRelay]:
    relay = TcpRelay(URL(AMQP_URL))
    await relay.start()
    yield relay
    await relay.close()


async def _wait_closed(base: str) -> None:
    """Until the receiver takes no new connection (its shutdown has begun)."""
    for _ in range(1000):
        try:
            async with aiohttp.ClientSession() as fresh, fresh.get(f"{base}/healthz"):
                pass
        except aiohttp.ClientConnectionError:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the receiver still takes new connections 10 s after SIGTERM")


async def _in_flight(session: aiohttp.ClientSession, base: str) -> float:
    async with session.get(f"{base}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith("ctwa_receiver_in_flight "):
                return float(line.split()[1])
    raise AssertionError("no in-flight gauge")


async def test_receiver_process_serves_and_sigterm_finishes_in_flight_callbacks(
    relay: TcpRelay, amqp: AbstractConnection, topology: Topology
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CTWA_AMQP_URL": relay.url,
        "CTWA_AMQP_PREFIX": topology.prefix,
        "CTWA_HTTP_HOST": "127.0.0.1",
        "CTWA_HTTP_PORT": str(port),
        "CTWA_PUBLISH_TIMEOUT_S": "20",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "receiver", env=env, stderr=asyncio.subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await receiver_ready(session, base, process)
            async with session.post(f"{base}/webhooks/sinch", data=fixture_bytes("03_delivery_delivered.json")) as r:
                assert r.status == 200

            # A callback waiting for its confirm when SIGTERM arrives still gets its answer.
            relay.freeze()
            pending = asyncio.create_task(
                session.post(f"{base}/webhooks/sinch", data=fixture_bytes("05_conversation_start.json"))
            )
            while await _in_flight(session, base) < 1:
                await asyncio.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            await _wait_closed(base)  # shutting down: the listener is closed; the callback still waits
            assert not pending.done()
            relay.thaw()
            response = await pending
            assert response.status == 200
            response.release()
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.stderr is not None
    lines = [json.loads(line) for line in (await process.stderr.read()).decode().splitlines()]
    messages = [line["message"] for line in lines]
    assert "receiver listening" in messages
    assert sum("signatures are off" in message for message in messages) == 1
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    queued = await take_all(amqp, topology.queue)
    assert [m.body for m in queued] == [
        fixture_bytes("03_delivery_delivered.json"),
        fixture_bytes("05_conversation_start.json"),
    ]


def test_each_subcommand_is_defined_by_the_module_named_for_it() -> None:
    from workers.cli import COMMANDS, build_parser

    for name in COMMANDS:
        [commands] = [action for action in build_parser(name)._actions if action.dest == "command"]
        assert set(commands.choices) == {name}  # type: ignore[arg-type]
    [commands] = [action for action in build_parser()._actions if action.dest == "command"]
    assert list(commands.choices) == list(COMMANDS)  # type: ignore[arg-type]


async def test_the_receiver_starts_without_the_database_libraries() -> None:
    probe = (
        "import sys; from workers.cli import build_parser; build_parser('receiver').parse_args(['receiver']); "
        "print(sorted(name for name in ('sqlalchemy', 'alembic', 'asyncpg') if name in sys.modules))"
    )
    code, out, err = await _run(sys.executable, "-c", probe)
    assert (code, out.strip()) == (0, "[]"), err


async def test_the_sender_without_a_usable_meta_setup_exits_2_saying_why(tmp_path: Path) -> None:
    apps = tmp_path / "apps.toml"
    apps.write_text('[[app]]\nid = "01EB4BNMPW0AY1E1HAEE2Y2D4Z"\nwebhook_secrets = ["s"]\n\n[[app]]\nid = 7\n')
    cases = [
        ({}, "no Meta setup"),
        ({"CTWA_META_DATASET_ID": "1", "CTWA_META_ACCESS_TOKEN": "a-token"}, "missing CTWA_META_WABA_ID"),
        ({"CTWA_APPS_FILE": str(apps)}, f"{apps}, line 5: id must be the Sinch app id"),
    ]
    for more, reason in cases:
        code, _, err = await _run(sys.executable, "-m", "workers", "conversions", "send", env={**os.environ, **more})
        assert code == 2, err
        assert reason in err
        assert "a-token" not in err
        assert "Traceback" not in err
