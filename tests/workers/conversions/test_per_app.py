"""Conversions of several apps against the fake Meta and the real Postgres: each app's events go to its own dataset
with its own token and WABA, never in another app's request; one app's refused token parks that app alone; an app
without a Meta setup leaves its events unconfigured until a reload gives it one."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from conversion_records import eraser_of, record
from meta import FakeMeta
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support import free_port, rows

from ingest.apps import load_apps
from ingest.settings import Settings
from workers.commands.conversions import summary
from workers.conversions.routes import ConfigurationMissing, Routes, routes_of
from workers.conversions.sender import Sender
from workers.engine.apps import name_apps
from workers.runtime.database import create_engine

NOW = datetime.now(UTC)
A, B, C = "01AAAAAAAAAAAAAAAAAAAAAAAA", "01BBBBBBBBBBBBBBBBBBBBBBBB", "01CCCCCCCCCCCCCCCCCCCCCCCC"
SETUPS = {A: ("dataset-a", "token-a", "waba-a"), B: ("dataset-b", "token-b", "waba-b")}


@pytest.fixture
async def meta() -> AsyncIterator[FakeMeta]:
    async with FakeMeta() as fake:
        for dataset_id, token, waba_id in SETUPS.values():
            fake.dataset(dataset_id, token=token, waba_id=waba_id)
        yield fake


def write_apps(folder: Path, tokens: dict[str, str]) -> Path:
    """An apps file of A, B and C; each app in ``tokens`` with its Meta setup, its token in a file of its own."""
    parts = []
    for app_id, name in ((A, "Brand A — Spain"), (B, "Brand B"), (C, "Brand C")):
        parts.append(f'[[app]]\nid = "{app_id}"\nname = "{name}"\nwebhook_secrets = ["secret-{app_id}"]\n')
        if app_id in tokens:
            dataset_id, _, waba_id = SETUPS.get(app_id, ("dataset-c", "", "waba-c"))
            (folder / f"token-{app_id}").write_text(tokens[app_id] + "\n")
            parts.append(
                f'[app.meta]\ndataset_id = "{dataset_id}"\nwaba_id = "{waba_id}"\n'
                f'access_token_file = "token-{app_id}"\n'
            )
    path = folder / "apps.toml"
    path.write_text("\n".join(parts))
    return path


async def clicks(db: AsyncEngine) -> None:
    """Each app's person clicked an ad of the app's, an hour and a half ago: C1 through A, C2 through B, C3
    through C."""
    async with db.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO ad_clicks (message_id, ctwa_clid, source_id, contact_id, app_id, clicked_at, referral) "
                "SELECT 'M-' || app, 'CLID-' || app, 'AD-' || app, contact, app, :at, '{}' "
                "FROM unnest(CAST(:apps AS text[]), CAST(:contacts AS text[])) AS click(app, contact)"
            ),
            {"apps": [A, B, C], "contacts": ["C1", "C2", "C3"], "at": NOW - timedelta(minutes=90)},
        )


async def purchases(db: AsyncEngine, prefix: str, contact_id: str, count: int) -> list[str]:
    ids = [f"{prefix}{number}" for number in range(count)]
    for event_id in ids:
        await record(db, event_id, NOW - timedelta(hours=1), contact_id=contact_id)
    return ids


def settings_for(meta: FakeMeta, database_url: str, apps_file: Path, *, default: bool = True) -> Settings:
    more = {"apps_file": apps_file, "conversions_poll_s": 0.05, "conversions_metrics_port": 0}
    if default:
        return meta.settings(database_url, **more)
    return Settings(database_url=database_url, meta_graph_url=meta.url, meta_api_version=meta.version, **more)


def routes(settings: Settings) -> Routes:
    assert settings.apps_file is not None
    return routes_of(settings, load_apps(settings.apps_file))


async def until(condition: object, what: str, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.01)


async def statuses(db: AsyncEngine) -> dict[str, str]:
    return {row["event_id"]: row["status"] for row in await rows(db, "SELECT event_id, status FROM conversion_events")}


async def reload(sender: Sender, settings: Settings) -> None:
    """What SIGHUP does: the apps file read again, its routes opened and handed over, the replaced ones closed."""
    fresh = await routes(settings).__aenter__()
    replaced = await asyncio.wait_for(sender.reload(fresh), 10)
    await replaced.__aexit__(None, None, None)


async def test_each_apps_conversions_reach_its_own_dataset_with_its_own_token(
    db: AsyncEngine, database_url: str, meta: FakeMeta, tmp_path: Path
) -> None:
    settings = settings_for(meta, database_url, write_apps(tmp_path, {A: "token-a", B: "token-b"}))
    await clicks(db)
    of_a = await purchases(db, "a", "C1", 5)
    of_b = await purchases(db, "b", "C2", 4)
    of_c = await purchases(db, "c", "C3", 3)  # C has no setup of its own: the deployment's
    await record(db, "named", NOW - timedelta(hours=1), ctwa_clid="CLID-" + B)  # its click names B
    await record(db, "unknown-click", NOW - timedelta(hours=1), ctwa_clid="CLID-not-stored")

    engine = create_engine(database_url)
    async with routes(settings) as sending:
        sender = Sender(engine, sending, await eraser_of(engine), settings, drain=True)
        assert await asyncio.wait_for(sender.run(), 30) == 0
    async with engine.begin() as connection:
        await name_apps(connection, load_apps(settings.apps_file))  # type: ignore[arg-type]
    found = await summary(engine)
    await engine.dispose()

    assert meta.counted_in == {
        "dataset-a": dict.fromkeys(of_a, 1),
        "dataset-b": dict.fromkeys([*of_b, "named"], 1),
        meta.dataset_id: dict.fromkeys([*of_c, "unknown-click"], 1),
    }
    tokens = {"dataset-a": "token-a", "dataset-b": "token-b", meta.dataset_id: meta.token}
    wabas = {"dataset-a": "waba-a", "dataset-b": "waba-b", meta.dataset_id: meta.waba_id}
    for request in meta.requests:  # no request mixes two apps' events
        assert request.authorization == f"Bearer {tokens[request.dataset_id]}"
        assert {event["user_data"]["whatsapp_business_account_id"] for event in request.events} == {
            wabas[request.dataset_id]
        }
    assert len(meta.requests) == 3
    apps = await rows(db, "SELECT event_id, click_app_id FROM conversion_events ORDER BY event_id")
    assert {row["event_id"]: row["click_app_id"] for row in apps} == (
        dict.fromkeys(of_a, A) | dict.fromkeys([*of_b, "named"], B) | dict.fromkeys(of_c, C) | {"unknown-click": None}
    )
    per_app = {app["app_id"]: app for app in found["apps"]}
    assert {app: (entry["name"], entry["events"]["sent"]) for app, entry in per_app.items()} == {
        A: ("Brand A — Spain", 5),
        B: ("Brand B", 5),
        C: ("Brand C", 3),
    }
    assert per_app[A]["last_success_at"] is not None
    assert per_app[C]["last_request_at"] is None
    assert found["last_success_at"] is not None  # the deployment's own setup: C's and the unknown click's


async def test_one_apps_refused_token_parks_that_app_alone_until_a_reload_fixes_it(
    db: AsyncEngine, database_url: str, meta: FakeMeta, tmp_path: Path
) -> None:
    apps_file = write_apps(tmp_path, {A: "a-revoked-token", B: "token-b"})
    settings = settings_for(meta, database_url, apps_file)
    await clicks(db)
    of_a = await purchases(db, "a", "C1", 3)
    of_b = await purchases(db, "b", "C2", 3)

    engine = create_engine(database_url)
    port = free_port()
    async with AsyncExitStack() as stack:
        sending = await stack.enter_async_context(routes(settings))
        sender = Sender(engine, sending, await eraser_of(engine), settings)
        await sender.serve(stack, "127.0.0.1", port)
        running = asyncio.create_task(sender.run())
        try:
            await until(
                lambda: A in sender.parked and meta.counted_in.get("dataset-b") == dict.fromkeys(of_b, 1),
                "A parked, B's events sent",
            )
            later = await purchases(db, "b-later", "C2", 2)  # B keeps flowing while A is parked
            await until(lambda: all(meta.counted[event] == 1 for event in later), "B's later events sent")
            await asyncio.sleep(0.3)  # several turns of the loop: A's events are not tried again meanwhile
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/healthz") as response:
                health = (response.status, await response.json())
            registry = sender.metrics.registry
            parked = {app: registry.get_sample_value("ctwa_conversions_parked", {"app": app}) for app in (A, B)}
            state = await statuses(db)
            found = await summary(engine)
            requests_to_a = [request for request in meta.requests if request.dataset_id == "dataset-a"]

            (tmp_path / f"token-{A}").write_text("token-a\n")  # the token fixed, and the senders reloaded
            await reload(sender, settings)
            await until(lambda: all(meta.counted[event] == 1 for event in of_a), "A's events sent after the reload")
            fixed = await summary(engine)
        finally:
            sender.stop()
            await running
            await sender.routes.__aexit__(None, None, None)
    await engine.dispose()

    assert len(requests_to_a) == 1
    assert {event: state[event] for event in of_a} == dict.fromkeys(of_a, "pending")
    assert {event: state[event] for event in of_b + later} == dict.fromkeys(of_b + later, "sent")
    assert health == (200, {"status": "ok", "parked": {A: "Invalid OAuth access token - Cannot parse access token"}})
    assert parked == {A: 1.0, B: 0.0}
    per_app = {app["app_id"]: app for app in found["apps"]}
    assert per_app[A]["parked"]["code"] == 190
    assert per_app[B]["parked"] is None
    assert found["parked"] is None  # the deployment's own setup is fine
    assert all(app["parked"] is None for app in fixed["apps"])
    assert meta.counted == dict.fromkeys(of_a + of_b + later, 1)


async def test_an_app_without_a_setup_leaves_its_events_unconfigured_until_a_reload_gives_it_one(
    db: AsyncEngine, database_url: str, meta: FakeMeta, tmp_path: Path
) -> None:
    settings = settings_for(meta, database_url, write_apps(tmp_path, {A: "token-a"}), default=False)
    meta.dataset("dataset-c", token="token-c", waba_id="waba-c")
    await clicks(db)
    of_a = await purchases(db, "a", "C1", 2)
    of_c = await purchases(db, "c", "C3", 2)
    named = "named-b"
    await record(db, named, NOW - timedelta(hours=1), ctwa_clid="CLID-" + B)

    engine = create_engine(database_url)
    async with routes(settings) as sending:
        sender = Sender(engine, sending, await eraser_of(engine), settings)
        running = asyncio.create_task(sender.run())
        try:
            await until(lambda: meta.counted_in.get("dataset-a") == dict.fromkeys(of_a, 1), "A's events sent")
            await until(
                lambda: (
                    sender.metrics.registry.get_sample_value(
                        "ctwa_conversions_settled_unsent_total", {"status": "unconfigured"}
                    )
                    == 3
                ),
                "C's and B's unconfigured",
            )
            unconfigured = await rows(
                db, "SELECT event_id, last_error FROM conversion_events WHERE status = 'unconfigured'"
            )
            write_apps(tmp_path, {A: "token-a", C: "token-c"})  # C gets a setup; B still has none
            await reload(sender, settings)
            await until(lambda: all(meta.counted[event] == 1 for event in of_c), "C's events sent after the reload")
            await asyncio.sleep(0.2)
            series = {
                app: sender.metrics.registry.get_sample_value("ctwa_conversions_parked", {"app": app}) for app in (A, C)
            }
            write_apps(tmp_path, {A: "token-a"})  # C's setup taken out again: its series goes
            await reload(sender, settings)
            gone = sender.metrics.registry.get_sample_value("ctwa_conversions_parked", {"app": C})
        finally:
            sender.stop()
            await running
            await sender.routes.__aexit__(None, None, None)
    await engine.dispose()

    assert sorted(row["event_id"] for row in unconfigured) == sorted([*of_c, named])
    assert all("Meta setup" in row["last_error"] for row in unconfigured)
    assert meta.counted_in["dataset-c"] == dict.fromkeys(of_c, 1)
    assert (await statuses(db))[named] == "unconfigured"  # B has no setup yet: not sent anywhere
    assert sum(meta.counted.values()) == len(of_a) + len(of_c)
    assert series == {A: 0.0, C: 0.0}
    assert gone is None


def test_a_sender_needs_a_setup_and_a_whole_default_one(tmp_path: Path) -> None:
    apps = load_apps(write_apps(tmp_path, {}))
    with pytest.raises(ConfigurationMissing, match="no Meta setup"):
        routes_of(Settings(), apps)
    with pytest.raises(ConfigurationMissing, match="CTWA_META_WABA_ID"):
        routes_of(Settings(meta_dataset_id="1", meta_access_token="t"), apps)
    own = routes_of(Settings(), load_apps(write_apps(tmp_path, {B: "token-b"})))
    assert (own.default, own.own) == (None, [B])
    assert own.of(B) is not None
    assert own.of(A) is None
    assert own.of(None) is None


async def test_sighup_reads_the_apps_file_again_and_a_bad_file_leaves_the_running_setups(
    db: AsyncEngine, database_url: str, meta: FakeMeta, tmp_path: Path
) -> None:
    """``ctwa conversions send`` as a process: the apps' names written at start; SIGHUP gives C a setup, and its
    unconfigured events go out; a bad file on the next SIGHUP is refused, and A's events keep going out."""
    apps_file = write_apps(tmp_path, {A: "token-a"})
    meta.dataset("dataset-c", token="token-c", waba_id="waba-c")
    await clicks(db)
    of_c = await purchases(db, "c", "C3", 2)
    env = {
        **os.environ,  # without CTWA_* settings: conftest takes them out of the tests' environment
        "CTWA_DATABASE_URL": database_url,
        "CTWA_APPS_FILE": str(apps_file),
        "CTWA_META_GRAPH_URL": meta.url,
        "CTWA_META_API_VERSION": meta.version,
        "CTWA_CONVERSIONS_POLL_S": "0.05",
        "CTWA_CONVERSIONS_METRICS_PORT": "0",
        "CTWA_LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "conversions", "send", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:

        async def events_in(status: str) -> set[str]:
            found = await rows(db, "SELECT event_id FROM conversion_events WHERE status = :status", status=status)
            return {row["event_id"] for row in found}

        deadline = asyncio.get_running_loop().time() + 30
        while await events_in("unconfigured") != set(of_c):
            assert process.returncode is None
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        names = await rows(db, "SELECT app_id, name FROM apps ORDER BY app_id")

        write_apps(tmp_path, {A: "token-a", C: "token-c"})
        os.kill(process.pid, signal.SIGHUP)
        await until(lambda: meta.counted_in.get("dataset-c") == dict.fromkeys(of_c, 1), "C's events sent", 30)

        apps_file.write_text('[[app]]\nid = "not an app id"\n')
        os.kill(process.pid, signal.SIGHUP)
        await asyncio.sleep(0.5)
        of_a = await purchases(db, "a", "C1", 2)
        await until(lambda: meta.counted_in.get("dataset-a") == dict.fromkeys(of_a, 1), "A's events sent", 30)
        assert process.returncode is None
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    assert [(row["app_id"], row["name"]) for row in names] == [(A, "Brand A — Spain"), (B, "Brand B"), (C, "Brand C")]
    log = err.decode()
    assert "apps file read again" in log
    assert "apps file refused, the running setups stay" in log
    assert "line 1" in log
    assert "token-a" not in log
