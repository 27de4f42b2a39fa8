"""Attribution rollups — each person's first and last click, clicks, people and conversations per ad per day —
kept in the same transaction as ``ad_clicks``, so the analytics views stay fast at millions of clicks.

New clicks are added incrementally, as sets (a click is inserted once, so adding is order-independent). When a
merge or an erasure changes whose a click is, the rollups of the persons concerned are recomputed from
``ad_clicks``: deleting and re-deriving their rows gives the same result in any order.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from workers.engine.precedence import take_when

__all__ = ["ON_NEW_CLICKS", "person_key", "rebuild", "recompute_days", "refresh"]


def person_key(contact_id: str | None, channel: str | None, identity: str | None) -> str | None:
    """The key ``ad_clicks.person_key`` computes (see workers.schema.PERSON_KEY)."""
    if contact_id is not None:
        return f"contact:{contact_id}"
    if identity is not None:
        return f"identity:{channel or ''}:{identity}"
    return None


_DAY = "(clicked_at AT TIME ZONE 'UTC')::date"

_NEWER_CREATIVE = "(EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key)"

_NEW_CLICKS_DAILY = f"""
    , daily AS (
        INSERT INTO ad_daily AS daily
            (day, source_id, clicks, click_ids, headline, source_type, media_type, creative_at, creative_key)
        SELECT DISTINCT ON (day, source_id)
            day, source_id, count(*) OVER same, count(ctwa_clid) OVER same,
            headline, source_type, media_type, clicked_at, message_id
        FROM (SELECT *, {_DAY} AS day FROM inserted) AS click
        WINDOW same AS (PARTITION BY day, source_id)
        ORDER BY day, source_id, clicked_at DESC, message_id DESC
        ON CONFLICT (day, source_id) DO UPDATE SET
            clicks = daily.clicks + EXCLUDED.clicks,
            click_ids = daily.click_ids + EXCLUDED.click_ids,
            {take_when(_NEWER_CREATIVE, "daily", ["headline", "source_type", "media_type", "creative_key"])},
            creative_at = GREATEST(daily.creative_at, EXCLUDED.creative_at)
    ), daily_people AS (
        INSERT INTO ad_daily_people (day, source_id, person_key)
        SELECT DISTINCT {_DAY}, source_id, person_key FROM inserted WHERE person_key IS NOT NULL
        ON CONFLICT DO NOTHING
    ), daily_conversations AS (
        INSERT INTO ad_daily_conversations (day, source_id, conversation_id)
        SELECT DISTINCT {_DAY}, source_id, conversation_id FROM inserted WHERE conversation_id IS NOT NULL
        ON CONFLICT DO NOTHING
    )
"""

_EARLIER_FIRST = (
    "(EXCLUDED.first_clicked_at, EXCLUDED.first_message_id) < (touches.first_clicked_at, touches.first_message_id)"
)
_LATER_LAST = (
    "(EXCLUDED.last_clicked_at, EXCLUDED.last_message_id) > (touches.last_clicked_at, touches.last_message_id)"
)
_FIRST = ["first_message_id", "first_source_id", "first_headline", "first_day"]
_LAST = ["last_message_id", "last_source_id", "last_headline", "channel", "identity"]

_NEW_CLICKS_TOUCHES = f"""
    ON CONFLICT (person_key) DO UPDATE SET
        clicks = touches.clicks + EXCLUDED.clicks,
        {take_when(_EARLIER_FIRST, "touches", _FIRST)},
        first_clicked_at = LEAST(touches.first_clicked_at, EXCLUDED.first_clicked_at),
        {take_when(_LATER_LAST, "touches", _LAST)},
        last_clicked_at = GREATEST(touches.last_clicked_at, EXCLUDED.last_clicked_at)
"""


def _touches(source: str) -> str:
    """Each person's touches among the clicks in ``source`` (a table or CTE with ad_clicks' columns)."""
    return f"""
        SELECT first.person_key, first.contact_id, last.channel, last.identity, counted.clicks,
               first.message_id, first.source_id, first.headline, first.clicked_at,
               (first.clicked_at AT TIME ZONE 'UTC')::date,
               last.message_id, last.source_id, last.headline, last.clicked_at
        FROM (
            SELECT DISTINCT ON (person_key) * FROM {source} WHERE person_key IS NOT NULL
            ORDER BY person_key, clicked_at, message_id
        ) AS first
        JOIN (
            SELECT DISTINCT ON (person_key) * FROM {source} WHERE person_key IS NOT NULL
            ORDER BY person_key, clicked_at DESC, message_id DESC
        ) AS last USING (person_key)
        JOIN (
            SELECT person_key, count(*)::int AS clicks FROM {source} WHERE person_key IS NOT NULL GROUP BY person_key
        ) AS counted USING (person_key)
    """


# Data-modifying CTEs to append to a statement whose CTE ``inserted`` returns the ad_clicks rows it inserted.
ON_NEW_CLICKS = (
    f"{_NEW_CLICKS_DAILY} INSERT INTO person_touches AS touches {_touches('inserted')} {_NEW_CLICKS_TOUCHES}"
)

_REFRESH = [
    "DELETE FROM person_touches WHERE person_key = ANY(:keys)",
    "DELETE FROM ad_daily_people WHERE person_key = ANY(:keys)",
    f"""
    WITH concerned AS (SELECT * FROM ad_clicks WHERE person_key = ANY(:keys))
    INSERT INTO person_touches {_touches("concerned")}
    """,
    f"""
    INSERT INTO ad_daily_people (day, source_id, person_key)
    SELECT DISTINCT {_DAY}, source_id, person_key FROM ad_clicks WHERE person_key = ANY(:keys)
    """,
]


async def refresh(connection: AsyncConnection, keys: Iterable[str]) -> None:
    """Recompute the rollups of the persons ``keys`` (old keys and new) from ``ad_clicks``."""
    wanted = sorted(set(keys))
    if not wanted:
        return
    for statement in _REFRESH:
        await connection.execute(text(statement), {"keys": wanted})


_REBUILD = [
    "TRUNCATE person_touches, ad_daily, ad_daily_people, ad_daily_conversations",
    # Every click is "new" to the emptied rollups.
    f"WITH inserted AS (SELECT * FROM ad_clicks) {ON_NEW_CLICKS}",
]


async def rebuild(connection: AsyncConnection) -> None:
    """Recompute every rollup from ``ad_clicks`` (after a bulk load, or to check them)."""
    for statement in _REBUILD:
        await connection.execute(text(statement))


_DAYS = "unnest(CAST(:days AS date[]), CAST(:sources AS text[])) AS concerned(day, source_id)"
_RECOMPUTE_DAYS = [
    *(
        f"DELETE FROM {table} USING {_DAYS} "
        f"WHERE {table}.day = concerned.day AND {table}.source_id IS NOT DISTINCT FROM concerned.source_id"
        for table in ("ad_daily", "ad_daily_people", "ad_daily_conversations")
    ),
    # Every click of those days and ads is "new" to their emptied rows; the person rollups are left alone.
    f"""
    WITH inserted AS (
        SELECT click.* FROM ad_clicks AS click JOIN {_DAYS}
        ON (click.clicked_at AT TIME ZONE 'UTC')::date = concerned.day
           AND click.source_id IS NOT DISTINCT FROM concerned.source_id
    ) {_NEW_CLICKS_DAILY}
    SELECT count(*) FROM inserted
    """,
]


async def recompute_days(connection: AsyncConnection, days: Iterable[tuple[date, str | None]]) -> None:
    """Recompute the per-day rollups of these (UTC day, source_id) pairs from ``ad_clicks``."""
    wanted = sorted(set(days), key=lambda pair: (pair[0], pair[1] or ""))
    if not wanted:
        return
    params = {"days": [day for day, _ in wanted], "sources": [source for _, source in wanted]}
    for statement in _RECOMPUTE_DAYS:
        await connection.execute(text(statement), params)
