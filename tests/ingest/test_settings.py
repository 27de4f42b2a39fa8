from __future__ import annotations

from pathlib import Path

import pytest

from ingest.settings import FILE_SETTINGS, Settings, SettingsError, load_settings


def test_defaults() -> None:
    settings = load_settings()
    assert settings.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert settings.database_url == "postgresql+asyncpg://postgres@127.0.0.1:5432/ctwa"
    assert settings.webhook_secrets == ()
    assert not settings.signatures_enabled
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 8080)
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.signature_tolerance_s == 300


def test_read_from_ctwa_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTWA_WEBHOOK_SECRETS", " old-secret , new-secret,, ")
    monkeypatch.setenv("CTWA_HTTP_PORT", "9090")
    monkeypatch.setenv("CTWA_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("CTWA_LOG_LEVEL", "debug")
    monkeypatch.setenv("CTWA_DATABASE_URL", "postgresql://app:pw@db:5432/ctwa")
    settings = load_settings()
    assert settings.webhook_secrets == ("old-secret", "new-secret")
    assert settings.signatures_enabled
    assert settings.http_port == 9090
    assert settings.max_body_bytes == 2048
    assert settings.log_level == "DEBUG"
    assert settings.database_url == "postgresql+asyncpg://app:pw@db:5432/ctwa"


@pytest.mark.parametrize("value", ["", " ", ",", " , ,"])
def test_empty_secrets_turn_signatures_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CTWA_WEBHOOK_SECRETS", value)
    assert load_settings().webhook_secrets == ()


def test_secrets_never_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTWA_WEBHOOK_SECRETS", "hunter2")
    assert "hunter2" not in repr(load_settings())


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CTWA_HTTP_PORT", "0"),
        ("CTWA_HTTP_PORT", "http"),
        ("CTWA_MAX_BODY_BYTES", "-1"),
        ("CTWA_SIGNATURE_TOLERANCE_S", "0"),
        ("CTWA_PUBLISH_TIMEOUT_S", "0"),
        ("CTWA_AMQP_URL", "http://localhost:5672"),
        ("CTWA_AMQP_PREFIX", "has space"),
        ("CTWA_DATABASE_URL", "mysql://db/ctwa"),
        ("CTWA_LOG_LEVEL", "LOUD"),
        ("CTWA_LOG_FORMAT", "xml"),
        ("CTWA_META_API_VERSION", "25.0"),
        ("CTWA_META_GRAPH_URL", "graph.facebook.com"),
        ("CTWA_CONVERSIONS_BATCH_SIZE", "1001"),  # Meta takes at most 1,000 events a request
    ],
)
def test_bad_values_fail_with_the_variable_named(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings()


def test_urls_are_not_echoed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTWA_DATABASE_URL", "mysql://user:topsecret@db/ctwa")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "topsecret" not in str(raised.value)


def test_the_meta_token_shows_nowhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTWA_META_ACCESS_TOKEN", "EAAG-secret-token")
    assert "EAAG-secret-token" not in repr(load_settings())
    # A rule between settings fails with its own message, never with the values it was given.
    monkeypatch.setenv("CTWA_META_TIMEOUT_S", "60")
    monkeypatch.setenv("CTWA_CONVERSIONS_LEASE_S", "30")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "CTWA_CONVERSIONS_LEASE_S: must exceed CTWA_META_TIMEOUT_S" in str(raised.value)
    assert "EAAG-secret-token" not in str(raised.value)


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(Exception, match="frozen"):
        settings.http_port = 1  # type: ignore[misc]


def test_several_broker_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTWA_AMQP_URL", "amqp://u:p@rabbit-1:5672/ctwa, amqp://u:p@rabbit-2/ctwa ,amqps://u:p@lb:5671/")
    settings = load_settings()
    assert settings.amqp_urls == ("amqp://u:p@rabbit-1:5672/ctwa", "amqp://u:p@rabbit-2/ctwa", "amqps://u:p@lb:5671/")
    assert load_settings(amqp_url="amqp://guest:guest@127.0.0.1:5672/").amqp_urls == (
        "amqp://guest:guest@127.0.0.1:5672/",
    )


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("amqp://u:s3cret@a:5672/,http://u:s3cret@b/", "address 2 of 2 must start with amqp:// or amqps://"),
        ("amqp://u:s3cret@a:5672/,", "address 2 of 2 must start with amqp:// or amqps://"),
        ("amqp://u:s3cret@:5672/", "the address names no host"),
        ("amqp://u:s3cret@a:99999/,amqp://u:s3cret@b/", "address 1 of 2 has no valid port"),
        ("amqp://u:s3cret@a:port/", "the address has no valid port"),
    ],
)
def test_every_broker_address_is_checked_and_none_is_echoed(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv("CTWA_AMQP_URL", value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert problem in str(raised.value)
    assert "s3cret" not in str(raised.value)
    assert "u:" not in str(raised.value)


def test_secrets_from_files_as_containers_pass_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    files = {
        "CTWA_WEBHOOK_SECRETS_FILE": "old-secret\nnew-secret\n",
        "CTWA_META_ACCESS_TOKEN_FILE": "the-token\n",
        "CTWA_DATABASE_URL_FILE": "postgresql://app:pass@db:5432/ctwa\n",
        "CTWA_AMQP_URL_FILE": "amqp://user:pass@mq:5672/\n",
        "CTWA_DASHBOARD_USERS_FILE": "anna:first\nbob:second\n",
    }
    for variable, content in files.items():
        path = tmp_path / variable.lower()
        path.write_text(content)
        monkeypatch.setenv(variable, str(path))
    settings = load_settings()
    assert settings.webhook_secrets == ("old-secret", "new-secret")
    assert settings.meta_access_token == "the-token"
    assert settings.database_url == "postgresql+asyncpg://app:pass@db:5432/ctwa"
    assert settings.amqp_urls == ("amqp://user:pass@mq:5672/",)
    assert settings.dashboard_users == ("anna:first", "bob:second")
    assert tuple(field for field in FILE_SETTINGS if field in Settings.model_fields) == FILE_SETTINGS


def test_a_secret_given_twice_or_in_a_file_that_cant_be_read_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("in-the-file")
    monkeypatch.setenv("CTWA_WEBHOOK_SECRETS", "in-the-environment")
    monkeypatch.setenv("CTWA_WEBHOOK_SECRETS_FILE", str(secret))
    monkeypatch.setenv("CTWA_META_ACCESS_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert "CTWA_WEBHOOK_SECRETS and CTWA_WEBHOOK_SECRETS_FILE are both set" in message
    assert f"CTWA_META_ACCESS_TOKEN_FILE: {tmp_path / 'missing'} can't be read: No such file or directory" in message
    assert "in-the-file" not in message
    assert "in-the-environment" not in message


def test_a_bad_url_in_a_file_is_named_and_not_echoed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "url"
    path.write_text("mysql://user:hunter2@db/ctwa")
    monkeypatch.setenv("CTWA_DATABASE_URL_FILE", str(path))
    with pytest.raises(SettingsError, match="CTWA_DATABASE_URL: ") as refused:
        load_settings()
    assert "hunter2" not in str(refused.value)


def test_a_urls_password_from_a_file_goes_into_the_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As compose passes them: the URLs without their passwords, each password a Docker secret."""
    for name, password in (("database", "p@ss:w/rd %"), ("amqp", "rabbit pass"), ("dashboard", "read")):
        (tmp_path / name).write_text(password + "\n")
    monkeypatch.setenv("CTWA_DATABASE_URL", "postgresql://ctwa_app@postgres:5432/ctwa")
    monkeypatch.setenv("CTWA_DATABASE_PASSWORD_FILE", str(tmp_path / "database"))
    monkeypatch.setenv("CTWA_AMQP_URL", "amqp://ctwa@rabbitmq:5672/,amqp://ctwa:stale@rabbitmq-2:5672/")
    monkeypatch.setenv("CTWA_AMQP_PASSWORD_FILE", str(tmp_path / "amqp"))
    monkeypatch.setenv("CTWA_DASHBOARD_DATABASE_URL", "postgresql://ctwa_read@postgres:5432/ctwa")
    monkeypatch.setenv("CTWA_DASHBOARD_DATABASE_PASSWORD_FILE", str(tmp_path / "dashboard"))
    settings = load_settings()
    assert settings.database_url == "postgresql+asyncpg://ctwa_app:p%40ss%3Aw%2Frd%20%25@postgres:5432/ctwa"
    assert settings.amqp_urls == (
        "amqp://ctwa:rabbit%20pass@rabbitmq:5672/",
        "amqp://ctwa:rabbit%20pass@rabbitmq-2:5672/",
    )
    assert settings.dashboard_database_url == "postgresql+asyncpg://ctwa_read:read@postgres:5432/ctwa"
    assert "rabbit" not in repr(settings.model_copy(update={"amqp_url": "x"}))  # the password field is not shown


def test_a_password_without_its_user_or_its_url_is_refused_unechoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTWA_DATABASE_URL", "postgresql://db:5432/ctwa")
    monkeypatch.setenv("CTWA_DATABASE_PASSWORD", "hunter2")
    monkeypatch.setenv("CTWA_MIGRATE_DATABASE_PASSWORD", "hunter3")
    with pytest.raises(SettingsError) as refused:
        load_settings()
    message = str(refused.value)
    assert "CTWA_DATABASE_URL: names no user for its password" in message
    assert "CTWA_MIGRATE_DATABASE_URL: is not set, and CTWA_MIGRATE_DATABASE_PASSWORD is" in message
    assert "hunter" not in message
