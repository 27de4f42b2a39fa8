"""Passwords given apart from their URLs (CTWA_<URL>_PASSWORD_FILE, as compose's Docker secrets pass them) open real
connections: to RabbitMQ as a user of its own whose password needs quoting (a wrong one refused), and to Postgres as a
role of its own (a wrong password refused too, where the server asks for passwords: not on trust authentication)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aio_pika
import pytest
from aiormq.exceptions import AMQPConnectionError
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from support import AMQP_URL, DATABASE_URL, RUN_ID, rabbitmqctl

from ingest.settings import load_settings

PASSWORD = "p@ss:w/rd %"


async def test_the_broker_takes_a_password_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    user = f"ctwa-test-secret-{RUN_ID}"
    await asyncio.to_thread(rabbitmqctl, "add_user", user, PASSWORD)
    try:
        await asyncio.to_thread(rabbitmqctl, "set_permissions", user, ".*", ".*", ".*")
        host = make_url(AMQP_URL.replace("amqp://", "postgresql://"))  # the broker's host and port
        (tmp_path / "amqp").write_text(PASSWORD + "\n")
        monkeypatch.setenv("CTWA_AMQP_URL", f"amqp://{user}@{host.host}:{host.port}/")
        monkeypatch.setenv("CTWA_AMQP_PASSWORD_FILE", str(tmp_path / "amqp"))
        settings = load_settings()
        connection = await aio_pika.connect(settings.amqp_urls[0])
        await connection.close()
        (tmp_path / "amqp").write_text("not the password")
        with pytest.raises(AMQPConnectionError):
            await aio_pika.connect(load_settings().amqp_urls[0])
    finally:
        await asyncio.to_thread(rabbitmqctl, "delete_user", user)


async def test_the_database_takes_a_password_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    role = f"ctwa_test_secret_{RUN_ID}"
    admin = create_async_engine(DATABASE_URL)
    try:
        async with admin.begin() as connection:
            await connection.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"))
            rules = await connection.execute(
                text("SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type = 'host'")
            )
            checks_passwords = "trust" not in {rule for (rule,) in rules}
        (tmp_path / "database").write_text(PASSWORD + "\n")
        monkeypatch.setenv(
            "CTWA_DATABASE_URL", make_url(DATABASE_URL).set(username=role, password=None).render_as_string()
        )
        monkeypatch.setenv("CTWA_DATABASE_PASSWORD_FILE", str(tmp_path / "database"))
        engine = create_async_engine(load_settings().database_url)
        try:
            async with engine.connect() as connection:
                assert await connection.scalar(text("SELECT current_user")) == role
        finally:
            await engine.dispose()
        if checks_passwords:
            (tmp_path / "database").write_text("not the password")
            wrong = create_async_engine(load_settings().database_url)
            try:
                with pytest.raises(DBAPIError):
                    async with wrong.connect():
                        pass
            finally:
                await wrong.dispose()
    finally:
        async with admin.begin() as connection:
            await connection.execute(text(f"DROP ROLE IF EXISTS {role}"))
        await admin.dispose()
