"""Security: no signature bypass, replays refused, SQL only through bound parameters, a services role that can't
change the schema, and no phone number or message text in the logs."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from callbacks import contact_event, delivery, inbound, merge, referral
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from support import (
    RUN_ID,
    ReceiverFactory,
    database_role,
    fixture_bytes,
    fixture_names,
    raw_post,
    receiver_ready,
    store,
)

from ingest.receiver.signature import signed_headers
from ingest.settings import Settings
from workers.commands.migrate import grant_app_role
from workers.runtime.database import sqlstate
from workers.runtime.worker import Worker

NOW = 1_762_161_247


@dataclass
class Signed:
    port: int
    clock: dict[str, float]


@pytest.fixture
async def signed(start_receiver: ReceiverFactory) -> Signed:
    clock = {"now": float(NOW)}
    client = await start_receiver(clock=lambda: clock["now"], webhook_secrets=("the-secret",))
    assert client.port is not None
    return Signed(client.port, clock)


async def test_no_signature_bypass(signed: Signed) -> None:
    body = fixture_bytes("01_inbound_ctwa_referral.json")
    good = list(signed_headers(body, "the-secret", "nonce-1", NOW).items())

    async def status(headers: list[tuple[str, str]]) -> int:
        return (await raw_post(signed.port, "/webhooks/sinch", body, headers))[0]

    assert await status(good) == 200
    assert await status([(name.upper(), value) for name, value in good]) == 200  # case-insensitive names
    # A second signature header, right or wrong, is refused: which one would be checked is ambiguous.
    assert await status([*good, ("X-Sinch-Webhook-Signature", good[0][1])]) == 401
    assert await status([*good, ("x-sinch-webhook-signature", "AAAA")]) == 401
    assert await status([("x-sinch-webhook-signature", "AAAA"), *good]) == 401
    assert await status([*good, ("x-sinch-webhook-signature-timestamp", str(NOW))]) == 401
    for missing in (
        "x-sinch-webhook-signature",
        "x-sinch-webhook-signature-timestamp",
        "x-sinch-webhook-signature-nonce",
    ):
        assert await status([(name, value) for name, value in good if name != missing]) == 401
    assert await status(list(signed_headers(body, "", "nonce-1", NOW).items())) == 401  # an empty secret
    assert await status([(n, "" if n == "x-sinch-webhook-signature" else v) for n, v in good]) == 401
    assert await status([(n, "none" if n.endswith("algorithm") else v) for n, v in good]) == 401


async def test_a_replay_outside_the_window_is_refused(signed: Signed) -> None:
    body = fixture_bytes("03_delivery_delivered.json")
    headers = list(signed_headers(body, "the-secret", "nonce-2", NOW).items())
    assert (await raw_post(signed.port, "/webhooks/sinch", body, headers))[0] == 200
    signed.clock["now"] = NOW + 301.0  # the same request, captured and replayed five minutes later
    status, _, answer = await raw_post(signed.port, "/webhooks/sinch", body, headers)
    assert status == 401
    assert json.loads(answer)["error"] == "stale_timestamp"


INJECTIONS = [
    "'; DROP TABLE callbacks; --",
    "x') ON CONFLICT DO NOTHING; DELETE FROM contacts; --",
    '"; TRUNCATE messages; --',
    "$1::text); DROP TABLE ad_clicks; --",
]


# Three apps and the secrets each may sign with; an attacker holds some of them and tries to pass as another app.
_APPS = {
    "01EB4BNMPW0AY1E1HAEE2Y2D4Z": ("a-old", "a-new"),
    "01K94FXGRR71HFE865V215DE1C": ("b-secret",),
    "01KCCCCCCCCCCCCCCCCCCCCCCC": ("c-secret",),
}
FORGERIES = 1200


def _forgery(rng: random.Random, n: int) -> tuple[bytes, bytes, str]:
    """A callback claiming some app (the bytes sent), the bytes signed, and the secret: another app's, a near miss,
    or the right one."""
    apps = list(_APPS)
    claims = [*apps, *apps, *apps, "01KXXXXXXXXXXXXXXXXXXXXXXX", "", None, 7, apps[0].lower(), f" {apps[1]}"]
    claimed = rng.choice(claims)
    secrets = [secret for held in _APPS.values() for secret in held]
    secret = rng.choice([*secrets, "", "a-ol", "a-old ", "B-SECRET", "c-secret\n"])
    payload = json.loads(fixture_bytes("03_delivery_delivered.json"))
    payload["message_delivery_report"]["message_id"] = f"01K94FXNN0X9G8FG{n:010d}"
    if claimed is None:
        del payload["app_id"]
    else:
        payload["app_id"] = claimed
    body = json.dumps(payload).encode()
    trick = rng.random()
    if trick < 0.15:
        # The app named twice: the last one is the callback's, for the receiver as for the workers.
        body = body[:-1] + f', "app_id": "{rng.choice(apps)}"}}'.encode()
    if trick > 0.9:
        # Signed as another app's callback, then sent with this app_id.
        return body, body.replace(f'"app_id": "{claimed}"'.encode(), f'"app_id": "{apps[0]}"'.encode()), secret
    return body, body, secret


async def test_no_apps_secret_signs_for_another_app(start_receiver: ReceiverFactory, tmp_path: Path) -> None:
    apps_file = tmp_path / "apps.toml"
    apps_file.write_text(
        "".join(f'[[app]]\nid = "{app}"\nwebhook_secrets = {json.dumps(list(held))}\n' for app, held in _APPS.items())
    )
    client = await start_receiver(clock=lambda: float(NOW), apps_file=apps_file)
    rng = random.Random(23)
    outcomes: Counter[str] = Counter()
    for n in range(FORGERIES):
        body, signed_body, secret = _forgery(rng, n)
        headers = signed_headers(signed_body, secret, f"nonce-{n}", NOW) if secret else {}
        response = await client.post("/webhooks/sinch", data=body, headers=headers)
        app_id = json.loads(body).get("app_id")
        rightful = signed_body == body and isinstance(app_id, str) and secret in _APPS.get(app_id, ())
        if response.status == 200:
            assert rightful, f"forgery {n} accepted: app {app_id!r} signed with another secret"
            outcomes["accepted, signed by its own app"] += 1
        else:
            assert response.status == 401, (n, response.status, await response.text())
            assert not rightful, f"callback {n} of {app_id!r}, signed with its own secret, refused"
            outcomes[f"401 {(await response.json())['error']}"] += 1
    print(f"\nper-app forgeries: {FORGERIES} tries: {dict(outcomes)}")
    assert outcomes["accepted, signed by its own app"] > 50
    assert sum(outcomes.values()) == FORGERIES


async def test_sql_injection_strings_are_stored_as_data(db: AsyncEngine) -> None:
    stream = []
    for n, evil in enumerate(INJECTIONS):
        stream += [
            inbound(
                f"M{n}{evil}",
                n,
                identity=evil,
                contact=f"C{evil}",
                conversation=evil,
                text=evil,
                metadata=referral(evil, evil),
            ),
            delivery(f"O{evil}", evil, n, identity=evil, contact=f"C{evil}"),
            contact_event("create", f"C{evil}", n, name=evil, identities=[evil]),
            merge(f"C{evil}", f"D{evil}", n + 1, name=evil, identities=[evil]),
        ]
    await store(db, stream, batch_size=7)
    async with db.connect() as connection:
        texts = set(await connection.scalars(text("SELECT text FROM messages")))
        sources = set(await connection.scalars(text("SELECT source_id FROM ad_clicks")))
        tables = set(await connection.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")))
        statuses = set(await connection.scalars(text("SELECT status FROM delivery_reports")))
    assert texts == set(INJECTIONS)
    assert sources == set(INJECTIONS)
    assert statuses == set(INJECTIONS)
    assert {"callbacks", "contacts", "messages", "ad_clicks"} <= tables


@pytest.fixture
async def app_role(database_url: str) -> AsyncIterator[str]:
    """A services role, as `ctwa migrate` sets it up when CTWA_DATABASE_URL names another user than the owner's."""
    async with database_role(database_url, f"ctwa_test_app_{RUN_ID}", grant_app_role) as url:
        yield url


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE sneaky (id int)",
        "ALTER TABLE callbacks ADD COLUMN sneaky int",
        "DROP TABLE ad_clicks",
        "CREATE INDEX sneaky ON messages (text)",
        "CREATE OR REPLACE FUNCTION attribution_window() RETURNS interval "
        "LANGUAGE sql AS $$ SELECT interval '1 year' $$",
        "UPDATE alembic_version SET version_num = '0001'",
        "DELETE FROM erasure_key",
    ],
)
async def test_the_services_role_cannot_change_the_schema(app_role: str, db: AsyncEngine, statement: str) -> None:
    engine = create_async_engine(app_role)
    try:
        with pytest.raises(DBAPIError) as raised:
            async with engine.begin() as connection:
                await connection.execute(text(statement))
        assert sqlstate(raised.value) in {"42501", "42P01"}  # insufficient privilege (or not even visible)
    finally:
        await engine.dispose()


async def test_the_services_role_can_do_all_the_workers_do(
    app_role: str, worker_settings: Settings, db: AsyncEngine, start_receiver: ReceiverFactory
) -> None:
    receiver = await start_receiver()
    stream = [fixture_bytes(name) for name in fixture_names()]
    stream += [contact_event("delete", "01K94FXJQ8PPG2X7R5JQC42EJ5", 9999, name="x", identities=["34611223344"])]
    for body in stream:
        assert (await receiver.post("/webhooks/sinch", data=body)).status == 200
    worker = Worker(worker_settings.model_copy(update={"database_url": app_role}), drain=True)
    await asyncio.wait_for(worker.run(), 60)
    async with db.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM callbacks")) == len(stream)
        assert await connection.scalar(text("SELECT count(*) FROM person_touches")) > 0
        erased = await connection.scalar(text("SELECT count(*) FROM erased_identities"))
    assert erased > 0  # merges, erasure and the rollups all ran under the services role


async def test_the_services_role_runs_ctwa_report_and_the_range_functions(app_role: str, db: AsyncEngine) -> None:
    """Not executable by PUBLIC, the range functions are granted to the services' role by `ctwa migrate`."""
    engine = create_async_engine(app_role)
    try:
        async with engine.connect() as connection:
            for function in ("ad_report", "range_report", "engagement_report"):
                await connection.execute(text(f"SELECT * FROM {function}(current_date - 7, current_date)"))
            await connection.execute(text("SELECT * FROM ad_creatives(current_date - 7, current_date, 'ad')"))
    finally:
        await engine.dispose()


PERSONAL = [
    "34611223344",
    "447700900123",
    "4915112345678",
    "48123456789",
    "Hi! Is the summer bundle still available?",
    "Great, please send the payment link",
    "Lucía",
    "New Test Contact",
    "new.contact@email.com",
]


async def test_no_phone_number_or_message_text_in_the_logs(worker_settings: Settings, free_http_port: int) -> None:
    environment = {
        **os.environ,
        "CTWA_AMQP_URL": worker_settings.amqp_url,
        "CTWA_AMQP_PREFIX": worker_settings.amqp_prefix,
        "CTWA_DATABASE_URL": worker_settings.database_url,
        "CTWA_HTTP_HOST": "127.0.0.1",
        "CTWA_HTTP_PORT": str(free_http_port),
        "CTWA_WORKER_METRICS_PORT": "0",
        "CTWA_LOG_LEVEL": "INFO",
    }
    receiver = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "receiver", env=environment, stderr=asyncio.subprocess.PIPE
    )
    try:
        import aiohttp

        async with aiohttp.ClientSession() as session:
            base = f"http://127.0.0.1:{free_http_port}"
            await receiver_ready(session, base, receiver, within=5)
            bodies = [fixture_bytes(name) for name in fixture_names()]
            bodies += [b"not json " + b"34611223344", json.dumps({"message": {"id": "N\u0000"}}).encode()]
            for body in bodies:
                async with session.post(f"{base}/webhooks/sinch", data=body) as response:
                    assert response.status in (200, 400)
    finally:
        receiver.terminate()
        receiver_log = (await receiver.communicate())[1].decode()
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "worker", "--drain", env=environment, stderr=asyncio.subprocess.PIPE
    )
    worker_log = (await asyncio.wait_for(worker.communicate(), 60))[1].decode()
    assert "queue drained" in worker_log
    assert "dead-lettered" in worker_log  # the NUL one, refused by Postgres: logged without its content
    for secret in PERSONAL:
        assert secret not in receiver_log
        assert secret not in worker_log
