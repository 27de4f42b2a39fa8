"""``ctwa report``: which ads brought which people, and their conversions — as a table at a terminal, CSV or JSON
otherwise."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ingest.settings import Settings
from workers.commands import output
from workers.commands.arguments import day
from workers.commands.command import FORMATS, Subcommands, complain, on_database

__all__ = [
    "ADS_REPORT",
    "AD_COLUMNS",
    "APPS_REPORT",
    "APP_ADS_REPORT",
    "APP_COLUMNS",
    "APP_DAILY_REPORT",
    "DAILY_COLUMNS",
    "DAILY_REPORT",
    "PEOPLE_COLUMNS",
    "SETTINGS",
    "ads",
    "apps",
    "daily",
    "default_range",
    "people",
    "register",
    "with_money",
]

AD_COLUMNS = (
    "source_id",
    "headline",
    "source_type",
    "media_type",
    "clicks",
    "click_ids",
    "people",
    "new_people",
    "conversations",
    "conversions",
    "value",
    "people_converted",
    "conversion_rate",
)


def _figures(table: str = "") -> str:
    """AD_COLUMNS as a select list (of ``table``, a prefix such as ``"ad."``), the value as JSON text, to be read as
    exact decimals."""
    return ", ".join(f"{table}value::text AS value" if column == "value" else table + column for column in AD_COLUMNS)


DAILY_COLUMNS = ("day", *AD_COLUMNS)
PEOPLE_COLUMNS = (
    "contact_id",
    "channel",
    "identity",
    "first_source_id",
    "first_clicked_at",
    "last_source_id",
    "last_clicked_at",
    "clicks",
)

# Ad performance over a range of UTC days, as the SQL function ad_report (migration 0007) defines it — people,
# conversations and people converted counted once over the whole range — the value as JSON text, to be read as
# exact decimals.
ADS_REPORT = text(
    f"""
    SELECT {_figures()}
    FROM ad_report(:since, :until)
    ORDER BY clicks DESC, source_id
    """
)

# Ad performance of one app's clicks (--app): app_ad_report (migration 0010), ad_report for the app alone.
APP_ADS_REPORT = text(
    f"""
    SELECT {_figures()}
    FROM app_ad_report(:since, :until, :app)
    ORDER BY clicks DESC, source_id
    """
)

APP_COLUMNS = (
    "app_id",
    "app_name",
    "ads",
    "clicks",
    "click_ids",
    "people",
    "new_people",
    "conversations",
    "conversions",
    "value",
    "people_converted",
    "conversion_rate",
)

# Per app over a range: each app with a click or a name (app_names), and the figures of its clicks
# (app_range_report: each person and conversation counted once) and how many of its ads had a click.
APPS_REPORT = text(
    """
    SELECT app.app_id, app.name AS app_name,
           (SELECT count(*) FROM app_ad_report(:since, :until, app.app_id) AS ad WHERE ad.clicks > 0)::int AS ads,
           figures.clicks, figures.click_ids, figures.people, figures.new_people, figures.conversations,
           figures.conversions, figures.value::text AS value, figures.people_converted, figures.conversion_rate
    FROM app_names() AS app
    CROSS JOIN LATERAL app_range_report(:since, :until, app.app_id) AS figures
    ORDER BY figures.clicks DESC, app.app_id
    """
)

# Per ad and day: ad_performance_daily and ad_conversions_daily stacked and summed, so that a day with
# conversions and no click of the ad is in it too.
DAILY_REPORT = text(
    """
    SELECT day, source_id, max(headline) AS headline, max(source_type) AS source_type,
           max(media_type) AS media_type, sum(clicks)::int AS clicks, sum(click_ids)::int AS click_ids,
           sum(people)::int AS people, sum(new_people)::int AS new_people,
           sum(conversations)::int AS conversations, sum(conversions)::int AS conversions,
           coalesce(max(value), '{}') AS value, sum(people_converted)::int AS people_converted,
           round(sum(people_converted)::numeric / nullif(sum(people), 0), 3) AS conversion_rate
    FROM (
        SELECT day, source_id, headline, source_type, media_type, clicks, click_ids, people, new_people,
               conversations, 0 AS conversions, NULL AS value, 0 AS people_converted
        FROM ad_performance_daily WHERE day BETWEEN :since AND :until
        UNION ALL
        SELECT day, source_id, NULL, NULL, NULL, 0, 0, 0, 0, 0, conversions, value_by_currency::text,
               people_converted
        FROM ad_conversions_daily WHERE day BETWEEN :since AND :until
    ) AS stacked
    GROUP BY day, source_id
    ORDER BY day, clicks DESC, source_id
    """
)
# The same for one app's clicks: each day's app_ad_report.
APP_DAILY_REPORT = text(
    f"""
    SELECT CAST(day AS date) AS day, {_figures("ad.")}
    FROM generate_series(CAST(:since AS timestamp), CAST(:until AS timestamp), interval '1 day') AS day
    CROSS JOIN LATERAL app_ad_report(CAST(day AS date), CAST(day AS date), CAST(:app AS text)) AS ad
    ORDER BY 1, ad.clicks DESC, ad.source_id
    """
)

# What the report's transaction sets before its statement. Postgres compiles a plan costed above jit_above_cost
# (100,000 by default) to machine code; the per-ad report's plan passes it at about a million clicks, and compiling
# its hundred-odd expressions took 60-150 ms that running them never won back, at 1 or 5 million clicks
# (docs/performance.md). SET LOCAL, not a connection setting: a pooler in transaction mode keeps it to the report.
SETTINGS = "SET LOCAL jit = off"

_PEOPLE = text(
    f"SELECT {', '.join(PEOPLE_COLUMNS)} FROM person_attribution "
    "WHERE last_clicked_at >= :start AND last_clicked_at < :end "
    "AND (CAST(:app AS text) IS NULL OR last_app_id = :app OR first_app_id = :app) "
    "ORDER BY last_clicked_at DESC, person_key LIMIT :limit"
)


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "report",
        help="which ads brought which people: ad performance and conversions, per app (report apps), or (report "
        "people) each person's first and last ad",
        description="Ad performance over a range of UTC days (default: the last 30) — clicks, people, conversations, "
        "conversions, their value per currency and the people converted — per ad, or with 'apps' per Sinch app (the "
        "figures of its clicks, each person counted once), or with 'people' each person's first- and last-touch ad. "
        "--app limits them to one app's clicks. A table at a terminal, CSV when piped; --format to choose.",
    )
    parser.add_argument("what", nargs="?", choices=("ads", "apps", "people"), default="ads")
    parser.add_argument("--app", metavar="APP_ID", help="one Sinch app's clicks alone: its ads' figures, or its people")
    parser.add_argument("--since", type=day, metavar="YYYY-MM-DD", help="first UTC day (default: 29 days ago)")
    parser.add_argument("--until", type=day, metavar="YYYY-MM-DD", help="last UTC day, included (default: today)")
    parser.add_argument("--daily", action="store_true", help="one row per ad per day")
    parser.add_argument("--format", choices=FORMATS, default="auto")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N rows")
    parser.set_defaults(run=_run)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    since, until = default_range()
    args.since, args.until = args.since or since, args.until or until
    if args.since > args.until:
        return complain("report", "--since is after --until")
    return _report(settings, args)


@on_database("ctwa-report")
async def _report(args: argparse.Namespace, engine: AsyncEngine) -> int:
    if args.what == "people":
        found = await people(engine, args.since, args.until, args.limit, app=args.app)
        output.render(found, PEOPLE_COLUMNS, args.format)
        return 0
    columns: tuple[str, ...]
    if args.what == "apps":
        rows, columns = await apps(engine, args.since, args.until), APP_COLUMNS
    elif args.daily:
        rows, columns = await daily(engine, args.since, args.until, app=args.app), DAILY_COLUMNS
    else:
        rows, columns = await ads(engine, args.since, args.until, app=args.app), AD_COLUMNS
    output.render(rows[: args.limit] if args.limit else rows, columns, args.format)
    return 0


def default_range(today: date | None = None) -> tuple[date, date]:
    """The last 30 UTC days, today included."""
    until = today or datetime.now(UTC).date()
    return until - timedelta(days=29), until


async def ads(engine: AsyncEngine, since: date, until: date, *, app: str | None = None) -> list[dict[str, Any]]:
    """Each ad's figures over the range; with ``app``, those of the clicks through that app alone."""
    if app is None:
        return with_money(await _fetch(engine, ADS_REPORT, {"since": since, "until": until}))
    return with_money(await _fetch(engine, APP_ADS_REPORT, {"since": since, "until": until, "app": app}))


async def daily(engine: AsyncEngine, since: date, until: date, *, app: str | None = None) -> list[dict[str, Any]]:
    """Each ad's figures per day; with ``app``, those of the clicks through that app alone."""
    if app is None:
        return with_money(await _fetch(engine, DAILY_REPORT, {"since": since, "until": until}))
    return with_money(await _fetch(engine, APP_DAILY_REPORT, {"since": since, "until": until, "app": app}))


async def apps(engine: AsyncEngine, since: date, until: date) -> list[dict[str, Any]]:
    """Each app's figures over the range: those of its clicks, each person and conversation counted once."""
    return with_money(await _fetch(engine, APPS_REPORT, {"since": since, "until": until}))


async def people(
    engine: AsyncEngine, since: date, until: date, limit: int | None, *, app: str | None = None
) -> list[dict[str, Any]]:
    """The people whose last click fell in the range, newest first; with ``app``, those whose first or last click
    came through it."""
    start = datetime.combine(since, datetime.min.time(), UTC)
    end = datetime.combine(until + timedelta(days=1), datetime.min.time(), UTC)
    return await _fetch(engine, _PEOPLE, {"start": start, "end": end, "limit": limit, "app": app})


def with_money(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's value per currency, read from the JSON text exactly (as decimals, not floats) and with at least
    the two decimals of cents: ``{"EUR": Decimal("59.90"), "USD": Decimal("10.00")}``."""
    for row in rows:
        amounts = json.loads(row["value"], parse_float=Decimal, parse_int=Decimal)
        row["value"] = {currency: _cents(amount) for currency, amount in amounts.items()}
    return rows


def _cents(amount: Decimal) -> Decimal:
    exponent = amount.as_tuple().exponent
    return amount.quantize(Decimal("0.01")) if isinstance(exponent, int) and exponent > -2 else amount


async def _fetch(engine: AsyncEngine, statement: TextClause, params: dict[str, Any]) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        await connection.execute(text(SETTINGS))
        return [dict(row._mapping) for row in await connection.execute(statement, params)]
