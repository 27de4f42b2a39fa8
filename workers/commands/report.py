"""``ctwa report``: which ads brought which people — as a table at a terminal, CSV or JSON otherwise."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text

from workers.runtime.database import create_engine

__all__ = ["ADS_REPORT", "AD_COLUMNS", "PEOPLE_COLUMNS", "ads", "daily", "default_range", "people"]

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
)
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

# Ad performance over a range of UTC days: people and conversations are counted once over the whole range, a
# new person is one whose first click ever falls in it.
ADS_REPORT = text(
    """
    WITH clicks AS (
        SELECT source_id, sum(clicks)::int AS clicks, sum(click_ids)::int AS click_ids,
               (array_agg(headline ORDER BY creative_at DESC, creative_key DESC))[1] AS headline,
               (array_agg(source_type ORDER BY creative_at DESC, creative_key DESC))[1] AS source_type,
               (array_agg(media_type ORDER BY creative_at DESC, creative_key DESC))[1] AS media_type
        FROM ad_daily WHERE day BETWEEN :since AND :until GROUP BY source_id
    ), people AS (
        SELECT source_id, count(*)::int AS people
        FROM (SELECT DISTINCT source_id, person_key FROM ad_daily_people WHERE day BETWEEN :since AND :until) AS d
        GROUP BY source_id
    ), newcomers AS (
        SELECT first_source_id AS source_id, count(*)::int AS new_people
        FROM person_touches WHERE first_day BETWEEN :since AND :until GROUP BY first_source_id
    ), talks AS (
        SELECT source_id, count(*)::int AS conversations
        FROM (
            SELECT DISTINCT source_id, conversation_id FROM ad_daily_conversations WHERE day BETWEEN :since AND :until
        ) AS d
        GROUP BY source_id
    )
    SELECT clicks.source_id, clicks.headline, clicks.source_type, clicks.media_type, clicks.clicks,
           clicks.click_ids, coalesce(people.people, 0) AS people, coalesce(newcomers.new_people, 0) AS new_people,
           coalesce(talks.conversations, 0) AS conversations
    FROM clicks
    LEFT JOIN people ON people.source_id IS NOT DISTINCT FROM clicks.source_id
    LEFT JOIN newcomers ON newcomers.source_id IS NOT DISTINCT FROM clicks.source_id
    LEFT JOIN talks ON talks.source_id IS NOT DISTINCT FROM clicks.source_id
    ORDER BY clicks.clicks DESC, clicks.source_id
    """
)

_DAILY = text(
    f"SELECT {', '.join(DAILY_COLUMNS)} FROM ad_performance_daily WHERE day BETWEEN :since AND :until "
    "ORDER BY day, clicks DESC, source_id"
)

_PEOPLE = text(
    f"SELECT {', '.join(PEOPLE_COLUMNS)} FROM person_attribution "
    "WHERE last_clicked_at >= :start AND last_clicked_at < :end "
    "ORDER BY last_clicked_at DESC, person_key LIMIT :limit"
)


def default_range(today: date | None = None) -> tuple[date, date]:
    """The last 30 UTC days, today included."""
    until = today or datetime.now(UTC).date()
    return until - timedelta(days=29), until


async def ads(database_url: str, since: date, until: date, *, statement_cache: bool = True) -> list[dict[str, Any]]:
    return await _fetch(database_url, ADS_REPORT, {"since": since, "until": until}, statement_cache)


async def daily(database_url: str, since: date, until: date, *, statement_cache: bool = True) -> list[dict[str, Any]]:
    return await _fetch(database_url, _DAILY, {"since": since, "until": until}, statement_cache)


async def people(
    database_url: str, since: date, until: date, limit: int | None, *, statement_cache: bool = True
) -> list[dict[str, Any]]:
    start = datetime.combine(since, datetime.min.time(), UTC)
    end = datetime.combine(until + timedelta(days=1), datetime.min.time(), UTC)
    return await _fetch(database_url, _PEOPLE, {"start": start, "end": end, "limit": limit}, statement_cache)


async def _fetch(
    database_url: str, statement: Any, params: dict[str, Any], statement_cache: bool
) -> list[dict[str, Any]]:
    engine = create_engine(database_url, application_name="ctwa-report", connections=1, statement_cache=statement_cache)
    try:
        async with engine.connect() as connection:
            return [dict(row._mapping) for row in await connection.execute(statement, params)]
    finally:
        await engine.dispose()
