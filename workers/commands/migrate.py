"""``ctwa migrate``: create the database when it is missing, then run the Alembic migrations; with an apps file
(``CTWA_APPS_FILE``), name its apps in table ``apps``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence
from importlib.resources import files

from alembic import command
from alembic.config import Config
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from ingest.apps import Apps, AppsFileError, load_apps
from ingest.settings import Settings
from workers.commands.command import Subcommands, complain
from workers.engine.apps import name_apps
from workers.runtime.database import sqlstate

__all__ = [
    "READABLE",
    "alembic_config",
    "downgrade",
    "ensure_database",
    "grant_app_role",
    "grant_read_role",
    "grant_role",
    "register",
    "upgrade",
]

log = logging.getLogger(__name__)

_DUPLICATE_DATABASE = "42P04"


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "migrate", help="create the database if missing and migrate it to the latest schema"
    )
    parser.add_argument("--down", metavar="REVISION", help="migrate down to REVISION instead ('base': no tables)")
    parser.set_defaults(run=_run)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    # The schema's owner migrates (CTWA_MIGRATE_DATABASE_URL); the services' role is granted the data.
    owner = settings.migrate_database_url or settings.database_url
    if args.down is not None:
        downgrade(owner, args.down)
        return 0
    try:
        apps = load_apps(settings.apps_file) if settings.apps_file is not None else None
    except AppsFileError as error:
        return complain("migrate", str(error))
    upgrade(owner, app_url=settings.database_url, read_url=settings.dashboard_database_url)
    if apps is not None:
        asyncio.run(_name_apps(owner, apps))
        log.info("apps named", extra={"apps": len(apps)})
    return 0


async def _name_apps(database_url: str, apps: Apps) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.begin() as connection:
            await name_apps(connection, apps)
    finally:
        await engine.dispose()


def alembic_config(database_url: str) -> Config:
    """Alembic's configuration for ``database_url``, with the migrations shipped in the ``migrations`` package."""
    config = Config()
    config.set_main_option("script_location", str(files("migrations")))
    # Alembic's config is an INI file underneath, where '%' starts an interpolation.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


async def ensure_database(database_url: str) -> bool:
    """Create the database ``database_url`` names if it does not exist; return whether it was created."""
    url = make_url(database_url)
    name = url.database
    if not name:
        raise ValueError("the database URL names no database")
    # CREATE DATABASE can't run in a transaction, and needs a connection to another database.
    engine = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            exists = await connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name})
            if exists:
                return False
            quoted = engine.dialect.identifier_preparer.quote(name)
            try:
                await connection.execute(text(f"CREATE DATABASE {quoted}"))
            except DBAPIError as error:
                if sqlstate(error) == _DUPLICATE_DATABASE:  # created meanwhile by another migrator
                    return False
                raise
            log.info("database created", extra={"database": name})
            return True
    finally:
        await engine.dispose()


def upgrade(
    database_url: str, revision: str = "head", *, app_url: str | None = None, read_url: str | None = None
) -> None:
    """Create the database if needed and migrate it up to ``revision`` as the role of ``database_url``, the schema's
    owner; then let the role of ``app_url`` (the services') read and write the data, and nothing more, and the role
    of ``read_url`` (the dashboard's) read the figures, and nothing personal.

    Not to be called inside an event loop.
    """
    asyncio.run(ensure_database(database_url))
    command.upgrade(alembic_config(database_url), revision)
    log.info("database migrated", extra={"revision": revision})
    owner = make_url(database_url).username
    if app_url is not None and make_url(app_url).username != owner:
        asyncio.run(grant_app_role(database_url, app_url))
        log.info("database role may use the data, not change the schema", extra={"role": make_url(app_url).username})
    if read_url is not None and make_url(read_url).username not in (owner, app_url and make_url(app_url).username):
        asyncio.run(grant_read_role(database_url, read_url))
        log.info("database role may read the figures, nothing personal", extra={"role": make_url(read_url).username})


async def grant_role(owner_url: str, role_url: str, grants: Sequence[str]) -> None:
    """Make sure the role of ``role_url`` exists, with its password, may connect, and has ``grants`` (``%I`` is the
    role)."""
    url = make_url(role_url)
    if not url.username:
        raise ValueError("the database URL names no user")
    engine = create_async_engine(owner_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:

            async def execute(template: str, *values: str) -> None:
                # Identifiers (%I) and literals (%L) are quoted by Postgres's own format().
                names = {f"v{n}": value for n, value in enumerate(values)}
                arguments = "".join(f", CAST(:{name} AS text)" for name in names)
                statement = await connection.scalar(
                    text(f"SELECT format(:template{arguments})"), names | {"template": template}
                )
                await connection.execute(text(statement))

            role, database = url.username, make_url(owner_url).database or ""
            if not await connection.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role}):
                await execute("CREATE ROLE %I LOGIN PASSWORD %L", role, url.password or "")
                log.info("database role created", extra={"role": role})
            elif url.password:
                await execute("ALTER ROLE %I PASSWORD %L", role, url.password)
            await execute("GRANT CONNECT ON DATABASE %I TO %I", database, role)
            for grant in grants:
                await execute(grant, *([role] if "%I" in grant else []))
    finally:
        await engine.dispose()


async def grant_app_role(owner_url: str, app_url: str) -> None:
    """Make sure the services' role exists and may use the data — read, write, delete — but not change the schema."""
    await grant_role(owner_url, app_url, _APP_GRANTS)


async def grant_read_role(owner_url: str, read_url: str) -> None:
    """Make sure the dashboard's role exists and may read the figures (:data:`READABLE`), and nothing else."""
    await grant_role(owner_url, read_url, _READ_GRANTS)


# What the services' role may do (besides connecting): everything to the rows, nothing to the schema. The
# migrations' bookkeeping and the erasure key it may only read.
_APP_GRANTS = [
    "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    "GRANT USAGE ON SCHEMA public TO %I",
    "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO %I",
    "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version, erasure_key FROM %I",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %I",
    "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO %I",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO %I",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO %I",
]

# What the dashboard reads: figures with no person in them — the views of counts, and the functions of a range
# (which read the rollups with their owner's rights). Nothing else, whatever was granted before: no table, so no
# phone number, identity or message text.
READABLE = (
    "ad_performance_daily",
    "ad_conversions_daily",
    "performance_daily",
    "conversions_daily",
    "conversion_overview",
    "conversion_app_overview",
    "ingest_freshness",
)
_READ_GRANTS = [
    "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
    "GRANT USAGE ON SCHEMA public TO %I",
    "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM %I",
    f"GRANT SELECT ON {', '.join(READABLE)} TO %I",
    "GRANT EXECUTE ON FUNCTION ad_report(date, date), range_report(date, date), "
    "engagement_report(date, date, boolean), ad_creatives(date, date, text) TO %I",
    # Per app (migration 0010): the apps to choose from, and the figures of an app's clicks.
    "GRANT EXECUTE ON FUNCTION app_names(), app_ad_report(date, date, text), app_range_report(date, date, text), "
    "app_daily(date, date, text), app_engagement(date, date, text, boolean) TO %I",
]


def downgrade(database_url: str, revision: str) -> None:
    """Migrate down to ``revision`` (``base`` removes every table). Not to be called inside an event loop."""
    command.downgrade(alembic_config(database_url), revision)
    log.info("database migrated down", extra={"revision": revision})
