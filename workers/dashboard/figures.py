"""The dashboard's figures, each read from the views and functions of the migrations — ``range_report`` and
``ad_report`` (0007, the latter ``ctwa report``'s), ``performance_daily``, ``ad_performance_daily``,
``conversions_daily``, ``ad_conversions_daily``, ``engagement_report``, ``ad_creatives``, ``conversion_overview``,
``ingest_freshness`` — never computed
again here: this module takes the range asked for and shapes what the database answers as JSON."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

from workers.commands.report import ADS_REPORT, APP_ADS_REPORT, with_money
from workers.conversions.status import STATUSES

__all__ = [
    "MAX_DAYS",
    "Range",
    "RangeError",
    "ads",
    "apps",
    "conversions",
    "creatives",
    "daily",
    "engagement",
    "freshness",
    "summary",
]

# A range longer than this is refused: more than a year of days is no chart, and a costly query.
MAX_DAYS = 400
DEFAULT_DAYS = 7

# The figures of a range and of each of its days.
FIGURES = ("clicks", "people", "new_people", "conversations", "conversions", "people_converted", "conversion_rate")


class RangeError(ValueError):
    """The range (or app) asked for can't be answered; the message says why."""


# A Sinch app id: 26 letters and digits (a ULID).
_APP_ID = re.compile(r"[0-9A-Za-z]{26}")


@dataclass(frozen=True, slots=True)
class Range:
    """UTC days ``since`` to ``until``, both included; of one Sinch app's clicks (``app``), or of all."""

    since: date
    until: date
    app: str | None = None

    @classmethod
    def asked(cls, query: Mapping[str, str], today: date | None = None) -> Range:
        """The range of a request's ``since`` and ``until`` (the last 7 days, today included, without them) and its
        ``app``, if any."""
        until = _day(query, "until") or today or datetime.now(UTC).date()
        since = _day(query, "since") or until - timedelta(days=DEFAULT_DAYS - 1)
        if since > until:
            raise RangeError(f"since ({since}) is after until ({until})")
        if (until - since).days + 1 > MAX_DAYS:
            raise RangeError(f"at most {MAX_DAYS} days at a time")
        app = query.get("app") or None
        if app is not None and not _APP_ID.fullmatch(app):
            raise RangeError(f"app is not a Sinch app id (26 letters and digits): {app[:40]!r}")
        return cls(since, until, app)

    @property
    def previous(self) -> Range:
        """The period of the same length just before."""
        length = self.until - self.since + timedelta(days=1)
        return Range(self.since - length, self.since - timedelta(days=1), self.app)

    def params(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until} | ({} if self.app is None else {"app": self.app})

    def as_json(self) -> dict[str, str]:
        days = {"since": self.since.isoformat(), "until": self.until.isoformat()}
        return days | ({} if self.app is None else {"app": self.app})


def _day(query: Mapping[str, str], name: str) -> date | None:
    value = query.get(name)
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise RangeError(f"{name} is not a day (YYYY-MM-DD): {value[:40]!r}") from None


_SUMMARY = {
    False: text(f"SELECT {', '.join(FIGURES)}, value::text AS value FROM range_report(:since, :until)"),
    True: text(f"SELECT {', '.join(FIGURES)}, value::text AS value FROM app_range_report(:since, :until, :app)"),
}


# One row per day of the range, days without a click at 0 — for all ads together, for one, or for one app's clicks:
# each day of the range, joined to the rows (``joined``) of the figures of that scope.
def _days(joined: str) -> TextClause:
    return text(
        f"""
        SELECT day.day, coalesce(clicks, 0) AS clicks, coalesce(people, 0) AS people,
               coalesce(new_people, 0) AS new_people, coalesce(conversations, 0) AS conversations,
               coalesce(conversions, 0) AS conversions, coalesce(value_by_currency, '{{}}')::text AS value
        FROM (
            SELECT CAST(day AS date) AS day
            FROM generate_series(CAST(:since AS timestamp), CAST(:until AS timestamp), interval '1 day') AS day
        ) AS day
        {joined.strip()}
        ORDER BY day.day
        """
    )


_DAILY = {
    scope: _days(
        f"""
        LEFT JOIN (
            SELECT day, clicks, people, new_people, conversations FROM {performance}
            WHERE day BETWEEN :since AND :until{ad}
        ) AS performance ON performance.day = day.day
        LEFT JOIN (
            SELECT day, conversions, value_by_currency FROM {converted}
            WHERE day BETWEEN :since AND :until{ad}
        ) AS converted ON converted.day = day.day
        """
    )
    for scope, performance, converted, ad in [
        ("all", "performance_daily", "conversions_daily", ""),
        ("ad", "ad_performance_daily", "ad_conversions_daily", " AND source_id = :source_id"),
    ]
} | {
    "app": _days(
        "LEFT JOIN app_daily(CAST(:since AS date), CAST(:until AS date), CAST(:app AS text)) AS app "
        "ON app.day = day.day"
    )
}

_ENGAGEMENT = text("SELECT * FROM engagement_report(:since, :until, :per_ad)")
# For one app's clicks: app_engagement, which answers as engagement_report does.
_APP_ENGAGEMENT = text("SELECT * FROM app_engagement(:since, :until, :app, :per_ad)")
# What engagement_report says of each ad and of all together.
_ENGAGED = (
    "people",
    "people_wrote_again",
    "wrote_again_rate",
    "people_replied",
    "people_reply_read",
    "median_seconds_to_first_reply",
)

_CREATIVES = text("SELECT * FROM ad_creatives(:since, :until, :source_id)")

_CONVERSIONS = text(
    """
    SELECT events::text AS events, oldest_pending_event_id, oldest_pending_event_time,
           extract(epoch FROM now() - oldest_pending_event_time) AS oldest_pending_age_s,
           parked_reason, parked_code, parked_at, last_request_at, last_success_at
    FROM conversion_overview
    """
)

_APPS = text("SELECT app_id, name FROM app_names()")
# The apps whose own Meta setup the senders parked (Meta refused its token, a permission or its dataset).
_PARKED_APPS = text(
    """
    SELECT app_id, name, parked_reason, parked_code, parked_at FROM conversion_app_overview
    WHERE parked_reason IS NOT NULL OR parked_at IS NOT NULL
    ORDER BY name NULLS LAST, app_id
    """
)

_FRESHNESS = text(
    "SELECT newest_stored_at, extract(epoch FROM now() - newest_stored_at) AS age_s FROM ingest_freshness"
)


async def _both(
    engine: AsyncEngine, statement: Any, current: Mapping[str, Any], before: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``statement``'s rows for the range and for the period before it (their parameters), asked at once on two
    connections."""

    async def rows(params: Mapping[str, Any]) -> list[dict[str, Any]]:
        async with engine.connect() as connection:
            return [row._asdict() for row in await connection.execute(statement, params)]

    answers = await asyncio.gather(rows(current), rows(before))
    return answers[0], answers[1]


async def summary(engine: AsyncEngine, asked: Range) -> dict[str, Any]:
    """The range's figures, and those of the period just before it, over all ads (or the app's clicks alone)."""
    statement = _SUMMARY[asked.app is not None]
    [current], [before] = await _both(engine, statement, asked.params(), asked.previous.params())
    return {
        **asked.as_json(),
        "previous": asked.previous.as_json(),
        "current": _json(with_money([current])[0]),
        "before": _json(with_money([before])[0]),
    }


async def ads(engine: AsyncEngine, asked: Range) -> list[dict[str, Any]]:
    """Each ad's figures over the range (of the app's clicks alone): ``ctwa report``'s."""
    statement = ADS_REPORT if asked.app is None else APP_ADS_REPORT
    async with engine.connect() as connection:
        rows = [dict(row._mapping) for row in await connection.execute(statement, asked.params())]
    return [_json(row) for row in with_money(rows)]


async def daily(engine: AsyncEngine, asked: Range, source_id: str | None = None) -> list[dict[str, Any]]:
    """Each day's figures, for all ads (the app's clicks alone) or for the ad ``source_id``."""
    scope = "ad" if source_id is not None else "all" if asked.app is None else "app"
    statement = _DAILY[scope]
    params: dict[str, Any] = asked.params() | ({} if source_id is None else {"source_id": source_id})
    async with engine.connect() as connection:
        rows = [dict(row._mapping) for row in await connection.execute(statement, params)]
    return [_json(row) for row in with_money(rows)]


async def engagement(engine: AsyncEngine, asked: Range) -> dict[str, Any]:
    """What the people the ads brought did next — wrote again, got a reply, how soon — over all ads (``total``, and
    ``before``: the period before) and per ad."""
    # Of the period before, the total alone.
    statement = _ENGAGEMENT if asked.app is None else _APP_ENGAGEMENT
    current, before = await _both(
        engine, statement, asked.params() | {"per_ad": True}, asked.previous.params() | {"per_ad": False}
    )

    def total(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return _json({name: next(row for row in rows if row["total"])[name] for name in _ENGAGED})

    ads = [
        _json({"source_id": row["source_id"], **{name: row[name] for name in _ENGAGED}})
        for row in current
        if not row["total"]
    ]
    return {
        "total": total(current),
        "before": total(before),
        "ads": ads,
    }


async def creatives(engine: AsyncEngine, asked: Range, source_id: str) -> list[dict[str, Any]]:
    """The ad's creatives as its clicks in the range showed them, most clicked first."""
    async with engine.connect() as connection:
        found = await connection.execute(_CREATIVES, asked.params() | {"source_id": source_id})
        return [_json(row._asdict()) for row in found]


async def conversions(engine: AsyncEngine) -> dict[str, Any]:
    """The conversions to Meta: events per status, the oldest pending, whether the senders are parked and why — for
    the deployment's own Meta setup, and (``parked_apps``) each app whose own setup is parked."""
    async with engine.connect() as connection:
        row = (await connection.execute(_CONVERSIONS)).one()
        parked_apps = (await connection.execute(_PARKED_APPS)).all()
    oldest = row.oldest_pending_event_time
    return {
        "events": _counts(row.events),
        "oldest_pending": None
        if oldest is None
        else {"event_id": row.oldest_pending_event_id, "event_time": oldest.isoformat(), "age_s": _seconds(row)},
        "parked": None
        if row.parked_reason is None and row.parked_at is None
        else _json({"reason": row.parked_reason, "code": row.parked_code, "at": row.parked_at}),
        "last_request_at": _json_value(row.last_request_at),
        "last_success_at": _json_value(row.last_success_at),
        "parked_apps": [
            _json(
                {"app_id": app.app_id, "name": app.name, "reason": app.parked_reason, "code": app.parked_code}
                | {"at": app.parked_at}
            )
            for app in parked_apps
        ],
    }


async def apps(engine: AsyncEngine) -> list[dict[str, Any]]:
    """The apps to choose from: each with a click or named in the apps file, by name."""
    async with engine.connect() as connection:
        return [{"app_id": row.app_id, "name": row.name} for row in await connection.execute(_APPS)]


async def freshness(engine: AsyncEngine) -> dict[str, Any]:
    """When the newest callback was stored, and how long ago."""
    async with engine.connect() as connection:
        row = (await connection.execute(_FRESHNESS)).one()
    return {
        "newest_stored_at": _json_value(row.newest_stored_at),
        "age_s": None if row.age_s is None else round(float(row.age_s), 1),
    }


def _counts(events: str) -> dict[str, int]:
    counted: dict[str, int] = json.loads(events)
    return {status: counted.get(status, 0) for status in STATUSES}


def _seconds(row: Any) -> int:
    return int(row.oldest_pending_age_s or 0)


def _json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as JSON takes it: money (``value``, per currency) as the exact decimal's text, so that 59.90 stays
    59.90; a rate as a number; days and times in ISO 8601."""
    return {
        name: {currency: str(amount) for currency, amount in value.items()} if name == "value" else _json_value(value)
        for name, value in row.items()
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value
