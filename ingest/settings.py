"""Typed settings, read once from ``CTWA_*`` environment variables."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["FILE_SETTINGS", "READS", "Settings", "SettingsError", "from_files", "load_settings"]

# The settings that hold secrets (the URLs may hold passwords): never echoed in an error, and each may come from a
# file instead, ``CTWA_<NAME>_FILE``, as containers pass secrets (Docker's and Kubernetes' convention).
FILE_SETTINGS = (
    "webhook_secrets",
    "amqp_url",
    "amqp_password",
    "database_url",
    "database_password",
    "migrate_database_url",
    "migrate_database_password",
    "meta_access_token",
    "dashboard_users",
    "dashboard_database_url",
    "dashboard_database_password",
)
# A URL's password given apart (CTWA_<URL>_PASSWORD, or its _FILE): put into the URL — each address of the broker's.
_PASSWORDS = {
    "amqp_password": "amqp_url",
    "database_password": "database_url",
    "migrate_database_password": "migrate_database_url",
    "dashboard_database_password": "dashboard_database_url",
}
_PASSWORD_OF = {url: password for password, url in _PASSWORDS.items()}
_UNECHOED = frozenset(FILE_SETTINGS)
_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")


class SettingsError(Exception):
    """The environment holds a value that can't be used; the message names every bad variable."""


class Settings(BaseSettings):
    """Everything the services read from the environment. Build it once in ``main`` and pass it down."""

    model_config = SettingsConfigDict(env_prefix="CTWA_", frozen=True, extra="ignore")

    # A URL's password may be given apart (CTWA_<URL>_PASSWORD, or its _FILE): read first, then put into the URL.
    amqp_password: str | None = Field(default=None, repr=False)
    amqp_url: str = Field(default="amqp://guest:guest@127.0.0.1:5672/", validate_default=True)
    amqp_prefix: str = "ctwa"
    database_password: str | None = Field(default=None, repr=False)
    database_url: str = Field(default="postgresql+asyncpg://postgres@127.0.0.1:5432/ctwa", validate_default=True)
    migrate_database_password: str | None = Field(default=None, repr=False)
    migrate_database_url: str | None = Field(default=None, validate_default=True)
    # False behind a pooler in transaction mode (PgBouncer): no prepared statement outlives its transaction.
    database_statement_cache: bool = True
    webhook_secrets: Annotated[tuple[str, ...], NoDecode] = Field(default=(), repr=False)
    # Several Sinch apps, each verified by its own secrets (docs/apps.md); read at start and on SIGHUP.
    apps_file: Path | None = None
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    signature_tolerance_s: int = Field(default=300, ge=1)
    publish_timeout_s: float = Field(default=5.0, gt=0, le=60)
    publish_linger_ms: float = Field(default=2.0, ge=0, le=1000)
    publish_batch_max: int = Field(default=64, ge=1, le=10_000)
    publish_replace_after_s: float = Field(default=10.0, gt=0, le=3600)
    delivery_limit: int = Field(default=20, ge=1)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    batch_linger_ms: int = Field(default=50, ge=0, le=10_000)
    prefetch: int = Field(default=1000, ge=1, le=65_535)
    worker_concurrency: int = Field(default=2, ge=1, le=16)
    worker_metrics_port: int = Field(default=9100, ge=0, le=65535)
    # How often a worker settles the day chains of the people that batches touched (workers/engine/chains.py).
    chains_interval_s: float = Field(default=1.0, gt=0, le=3600)
    shutdown_grace_s: float = Field(default=30.0, gt=0)
    # Meta's Conversions API, for `ctwa conversions send` (docs/conversions.md).
    meta_graph_url: str = "https://graph.facebook.com"
    meta_api_version: str = Field(default="v25.0", pattern=r"^v\d+\.\d+$")
    meta_dataset_id: str | None = None
    meta_access_token: str | None = Field(default=None, repr=False)
    meta_waba_id: str | None = None
    meta_partner_agent: str | None = None
    meta_test_event_code: str | None = None
    meta_timeout_s: float = Field(default=30.0, gt=0, le=300)
    conversions_batch_size: int = Field(default=1000, ge=1, le=1000)
    conversions_poll_s: float = Field(default=2.0, gt=0, le=3600)
    conversions_backoff_s: float = Field(default=5.0, gt=0, le=3600)
    conversions_backoff_max_s: float = Field(default=900.0, gt=0, le=86_400)
    # A request not settled after this long was cut short by its sender's death: its events become unconfirmed.
    conversions_lease_s: float = Field(default=120.0, gt=0)
    conversions_metrics_port: int = Field(default=9101, ge=0, le=65535)
    # `ctwa dashboard` (docs/dashboard.md): who may see it (name:password pairs), where it listens, and the
    # read-only role it reads as (`ctwa migrate` creates it).
    dashboard_users: Annotated[tuple[str, ...], NoDecode] = Field(default=(), repr=False)
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8081, ge=1, le=65535)
    dashboard_database_password: str | None = Field(default=None, repr=False)
    dashboard_database_url: str | None = Field(default=None, repr=False, validate_default=True)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"

    @field_validator("webhook_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            # An empty entry must never become a key anyone can sign with.
            return tuple(s.strip() for s in value if isinstance(s, str) and s.strip())
        return value

    @field_validator(*_PASSWORDS.values(), mode="before")
    @classmethod
    def _password_into_url(cls, value: object, info: ValidationInfo) -> object:
        """A URL whose password is given apart (``CTWA_DATABASE_PASSWORD``, …) gets it, in place of any it holds."""
        password = info.data.get(_PASSWORD_OF[str(info.field_name)])
        if password is None:
            return value
        if value is None:
            raise ValueError(f"is not set, and CTWA_{_PASSWORD_OF[str(info.field_name)].upper()} is")
        return ",".join(_with_password(part.strip(), str(password)) for part in str(value).split(","))

    @field_validator("dashboard_users", mode="before")
    @classmethod
    def _split_users(cls, value: object) -> object:
        if isinstance(value, str):
            value = [pair.strip() for pair in value.split(",") if pair.strip()]
        if isinstance(value, list | tuple):
            for number, pair in enumerate(value, 1):
                name, _, password = str(pair).partition(":")
                # The message names the pair by its place only: it holds a password.
                if not name.strip() or not password:
                    raise ValueError(f"pair {number} is not name:password")
            return tuple(str(pair) for pair in value)
        return value

    @field_validator("amqp_url")
    @classmethod
    def _check_amqp_url(cls, value: str) -> str:
        urls = [url.strip() for url in value.split(",")]
        for number, url in enumerate(urls, 1):
            # The message names the address by its place only: URLs may hold passwords.
            place = f"address {number} of {len(urls)}" if len(urls) > 1 else "the address"
            if not url.startswith(("amqp://", "amqps://")):
                raise ValueError(f"{place} must start with amqp:// or amqps://")
            try:
                parsed = urlsplit(url)
                if parsed.port == 0:  # reading the port raises for one that is not a number below 65536
                    raise ValueError
            except ValueError:
                raise ValueError(f"{place} has no valid port") from None
            if not parsed.hostname:
                raise ValueError(f"{place} names no host")
        return ",".join(urls)

    @field_validator("amqp_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not _PREFIX_PATTERN.fullmatch(value):
            raise ValueError("letters, digits, '.', '_' and '-' only, starting with a letter or digit")
        return value

    @field_validator("database_url", "migrate_database_url", "dashboard_database_url")
    @classmethod
    def _use_asyncpg(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for scheme in ("postgres://", "postgresql://"):
            if value.startswith(scheme):
                return "postgresql+asyncpg://" + value.removeprefix(scheme)
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("must be a postgresql:// or postgresql+asyncpg:// URL")
        return value

    @field_validator("meta_graph_url")
    @classmethod
    def _check_graph_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URL")
        return value.rstrip("/")

    @field_validator("conversions_lease_s")
    @classmethod
    def _lease_outlasts_a_request(cls, value: float, info: ValidationInfo) -> float:
        # A rule between two settings: told as the later one's, so that only the services reading it care.
        if value <= info.data.get("meta_timeout_s", 30.0):
            raise ValueError("must exceed CTWA_META_TIMEOUT_S")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def signatures_enabled(self) -> bool:
        return bool(self.webhook_secrets)

    @property
    def amqp_urls(self) -> tuple[str, ...]:
        """The broker's addresses: ``CTWA_AMQP_URL`` holds one, or several separated by commas (a cluster's nodes)."""
        return tuple(self.amqp_url.split(","))


def _with_password(url: str, password: str) -> str:
    """``url`` with ``password`` as its password (quoted as a URL's userinfo needs), its user kept."""
    parts = urlsplit(url)
    if not parts.username:
        raise ValueError("names no user for its password (given apart) to go with")
    host = parts.netloc.rpartition("@")[2]
    userinfo = f"{quote(parts.username, safe='')}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


_LISTS = {"webhook_secrets", "dashboard_users"}  # one per line in a file, or comma-separated


def from_files(environ: Mapping[str, str]) -> dict[str, str]:
    """The secret settings given as files (``CTWA_<NAME>_FILE``), read; `SettingsError` for a file that can't be
    read, or a setting given both ways."""
    values: dict[str, str] = {}
    problems: list[str] = []
    for field in FILE_SETTINGS:
        variable = f"CTWA_{field.upper()}"
        path = environ.get(f"{variable}_FILE")
        if path is None:
            continue
        if variable in environ:
            problems.append(f"{variable} and {variable}_FILE are both set: give one")
            continue
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            problems.append(f"{variable}_FILE: {path} can't be read: {reason}")
            continue
        values[field] = ",".join(text.splitlines()) if field in _LISTS else text
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
    return values


# What each service reads, as prefixes of setting names: a bad value of any other setting is no concern of it, and
# never keeps it from starting (`load_settings`' ``reads``). Commands not named here check every setting.
_LOGS = ("log_",)
_BROKER = ("amqp_", "delivery_limit")
_DATABASE = ("database_url", "database_password", "database_statement_cache")
READS: dict[str, tuple[str, ...]] = {
    "receiver": (*_LOGS, *_BROKER, "webhook_secrets", "apps_file", "http_", "max_body_bytes", "signature_", "publish_"),
    "worker": (*_LOGS, *_BROKER, *_DATABASE, "http_host", "batch_", "prefetch", "worker_", "chains_", "shutdown_"),
    "conversions": (*_LOGS, *_DATABASE, "http_host", "meta_", "conversions_", "apps_file"),
    "dashboard": (*_LOGS, *_DATABASE, "dashboard_"),
    "migrate": (*_LOGS, *_DATABASE, "migrate_database_", "dashboard_database_", "apps_file"),
}


def load_settings(
    reads: tuple[str, ...] | None = None, ignored: list[str] | None = None, **overrides: object
) -> Settings:
    """Read the environment (and the ``CTWA_<NAME>_FILE`` files), with ``overrides`` on top; raise `SettingsError`
    naming each bad variable. With ``reads`` (a service's prefixes, `READS`), only the settings it reads must be
    good: another one's bad value falls back to its default, and its problem is added to ``ignored``."""
    values = from_files(os.environ) | overrides
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as error:
        problems = _problems(error)
    mine = {field: line for field, line in problems.items() if reads is None or field.startswith(reads)}
    if mine:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(mine.values())) from None
    if ignored is not None:
        ignored.extend(problems.values())
    defaults = {field: Settings.model_fields[field].default for field in problems}
    return Settings(**(values | defaults))  # type: ignore[arg-type]


def _problems(error: ValidationError) -> dict[str, str]:
    """Each bad setting's field and the line that says what is wrong with it."""
    problems: dict[str, str] = {}
    for problem in error.errors():
        field = str(problem["loc"][0])
        # Secrets and URLs (which may hold a password) are never echoed back.
        shown = "" if field in _UNECHOED else f" (got {problem['input']!r})"
        problems[field] = f"CTWA_{field.upper()}: {problem['msg'].removeprefix('Value error, ')}{shown}"
    return problems
