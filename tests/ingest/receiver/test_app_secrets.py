"""Many Sinch apps, one receiver (CTWA_APPS_FILE): a callback is verified by its own app's secrets only, an app not in
the file is refused, and the file is read again on SIGHUP with no callback refused or lost meanwhile."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from aio_pika.abc import AbstractConnection
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import AMQP_URL, ReceiverFactory, fixture_bytes, free_port, key_of, queued_keys, receiver_ready

from ingest.receiver.app import reload_apps
from ingest.receiver.signature import signed_headers
from ingest.topology import Topology

Client = TestClient[web.Request, web.Application]
A = "01EB4BNMPW0AY1E1HAEE2Y2D4Z"
B = "01K94FXGRR71HFE865V215DE1C"
C = "01KCCCCCCCCCCCCCCCCCCCCCCC"
UNKNOWN = "01KXXXXXXXXXXXXXXXXXXXXXXX"


def _apps(*apps: tuple[str, list[str]]) -> str:
    return "".join(f'[[app]]\nid = "{app}"\nwebhook_secrets = {json.dumps(secrets)}\n' for app, secrets in apps)


def _write(path: Path, text: str) -> None:
    path.write_text(text)


def _callback(app_id: str, n: int) -> bytes:
    payload = json.loads(fixture_bytes("03_delivery_delivered.json"))
    payload["app_id"] = app_id
    payload["message_delivery_report"]["message_id"] = f"01K94FXNN0X9G8FG{n:010d}"
    return json.dumps(payload).encode()


async def _post(client: Client, body: bytes, secret: str, path: str = "/webhooks/sinch") -> tuple[int, str]:
    headers = signed_headers(body, secret, f"nonce-{time.monotonic_ns()}", int(time.time()))
    response = await client.post(path, data=body, headers=headers)
    return response.status, (await response.json()).get("error", "")


@pytest.fixture
def apps_file(tmp_path: Path) -> Path:
    path = tmp_path / "apps.toml"
    path.write_text(_apps((A, ["a-old", "a-new"]), (B, ["b-secret"])))
    return path


async def test_a_callback_is_verified_by_its_own_apps_secrets_only(
    start_receiver: ReceiverFactory, apps_file: Path, amqp: AbstractConnection, topology: Topology
) -> None:
    client = await start_receiver(apps_file=apps_file)
    assert await _post(client, _callback(A, 1), "b-secret") == (401, "bad_signature")  # B's secret, A's callback
    assert await _post(client, _callback(B, 2), "a-old") == (401, "bad_signature")
    assert await _post(client, _callback(A, 3), "a-old") == (200, "")
    assert await _post(client, _callback(A, 4), "a-new") == (200, "")  # rotating: either of A's secrets
    assert await _post(client, _callback(B, 5), "b-secret") == (200, "")
    assert await _post(client, _callback(UNKNOWN, 6), "a-old") == (401, "unknown_app")
    assert await _post(client, _callback("", 7), "a-old") == (401, "unknown_app")
    assert sorted(await queued_keys(amqp, topology.queue)) == sorted(
        key_of(_callback(app, n)) for app, n in ((A, 3), (A, 4), (B, 5))
    )


async def test_an_apps_own_url_takes_only_that_apps_callbacks(
    start_receiver: ReceiverFactory, apps_file: Path, amqp: AbstractConnection, topology: Topology
) -> None:
    client = await start_receiver(apps_file=apps_file)
    assert await _post(client, _callback(A, 1), "a-old", f"/webhooks/sinch/{A}") == (200, "")
    assert await _post(client, _callback(B, 2), "b-secret", f"/webhooks/sinch/{A}") == (401, "app_mismatch")
    assert await _post(client, _callback(UNKNOWN, 3), "a-old", f"/webhooks/sinch/{UNKNOWN}") == (401, "unknown_app")
    assert await queued_keys(amqp, topology.queue) == [key_of(_callback(A, 1))]


async def test_with_the_deployments_secrets_too_they_verify_only_apps_not_in_the_file(
    start_receiver: ReceiverFactory, apps_file: Path
) -> None:
    client = await start_receiver(apps_file=apps_file, webhook_secrets=("everyone",))
    assert await _post(client, _callback(UNKNOWN, 1), "everyone") == (200, "")
    assert await _post(client, _callback(A, 2), "everyone") == (401, "bad_signature")  # A has secrets of its own
    assert await _post(client, _callback(A, 3), "a-old") == (200, "")


async def test_a_reload_adds_an_app_and_a_bad_file_keeps_the_running_apps(
    start_receiver: ReceiverFactory, apps_file: Path
) -> None:
    client = await start_receiver(apps_file=apps_file)
    assert await _post(client, _callback(C, 1), "c-secret") == (401, "unknown_app")
    _write(apps_file, _apps((A, ["a-new"]), (C, ["c-secret"])))
    assert reload_apps(client.app)
    assert await _post(client, _callback(C, 2), "c-secret") == (200, "")
    assert await _post(client, _callback(A, 3), "a-old") == (401, "bad_signature")  # rotated out
    assert await _post(client, _callback(B, 4), "b-secret") == (401, "unknown_app")  # removed

    _write(apps_file, _apps((A, ["a-new"])) + "[[app]]\nid = 7\n")
    assert not reload_apps(client.app)
    assert await _post(client, _callback(C, 5), "c-secret") == (200, "")  # the running apps stay


async def _receiver_process(apps_file: Path, port: int, prefix: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,  # without CTWA_* settings: conftest takes them out of the tests' environment
        "CTWA_AMQP_URL": AMQP_URL,
        "CTWA_AMQP_PREFIX": prefix,
        "CTWA_HTTP_HOST": "127.0.0.1",
        "CTWA_HTTP_PORT": str(port),
        "CTWA_APPS_FILE": str(apps_file),
        "CTWA_LOG_FORMAT": "json",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "receiver", env=env, stderr=asyncio.subprocess.PIPE
    )


async def test_sighup_reloads_the_file_mid_traffic_refusing_and_losing_nothing(
    apps_file: Path, amqp: AbstractConnection, topology: Topology
) -> None:
    port = free_port()
    process = await _receiver_process(apps_file, port, topology.prefix)
    url = f"http://127.0.0.1:{port}/webhooks/sinch"
    answers: Counter[tuple[str, int]] = Counter()
    accepted: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:

            async def post(app: str, n: int, secret: str) -> int:
                body = _callback(app, n)
                headers = signed_headers(body, secret, f"nonce-{n}", int(time.time()))
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        status = response.status
                except aiohttp.ClientConnectionError:
                    status = 0
                answers[(app, status)] += 1
                if status == 200:
                    accepted.append(key_of(body))
                return status

            await receiver_ready(session, f"http://127.0.0.1:{port}", process, within=30)
            assert await post(C, 1, "c-secret") == 401

            stop = asyncio.Event()

            async def traffic() -> None:
                n = 100
                while not stop.is_set():
                    n += 1
                    await post(A if n % 2 else B, n, "a-old" if n % 2 else "b-secret")

            senders = [asyncio.create_task(traffic()) for _ in range(4)]
            await asyncio.sleep(0.5)
            _write(apps_file, _apps((A, ["a-old"]), (B, ["b-secret"]), (C, ["c-secret"])))
            assert process.pid is not None
            os.kill(process.pid, signal.SIGHUP)
            deadline = time.monotonic() + 10
            n = 10_000
            while await post(C, n, "c-secret") != 200:
                assert time.monotonic() < deadline, "the reload never took C"
                n += 1
                await asyncio.sleep(0.05)
            _write(apps_file, "[[app]]\nbroken")  # a bad file on the next SIGHUP: refused, nothing changes
            os.kill(process.pid, signal.SIGHUP)
            await asyncio.sleep(0.5)
            assert await post(C, 20_000, "c-secret") == 200
            stop.set()
            await asyncio.gather(*senders)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    # A's and B's callbacks all along: every one answered 200; none refused while the file was read again.
    assert answers[(A, 200)] > 20
    assert answers[(B, 200)] > 20
    assert {key for key in answers if key[1] != 200} <= {(C, 401)}
    log = err.decode()
    assert "apps file reloaded" in log
    assert "apps file refused, the running apps stay" in log
    # Nothing answered 200 was lost: the queue holds each accepted callback.
    assert Counter(await queued_keys(amqp, topology.queue)) == Counter(accepted)
