"""Attribution rollups — each person's first and last click, clicks, people and conversations per ad per day —
kept from ``ad_clicks`` in the same transaction as the clicks, so the analytics views stay fast at millions of
clicks.

New clicks are added incrementally, as sets (a click is inserted once, so adding is order-independent). When a
merge or an erasure changes whose a click is, the rollups of the persons concerned are recomputed from
``ad_clicks``: deleting and re-deriving their rows gives the same result in any order. Persons are told apart by
``person_key``, the SQL function that also fills the tables' ``person_key`` columns.

The day chains' rows (``ad_daily_people``, ``daily_people``, …) are made here with the clicks; what the people
did next and each key's previous day are settled later, once for all the batches of a second
(``workers.engine.chains``: a batch queues what it touched) — except after a merge, an erasure or a replay, which
settle the persons concerned at once.

The statements share their parts (the per-day counting, a person's touches); each is read whole, as it runs, in
``tests/workers/statements/workers.engine.rollups.sql``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from workers.engine import chains
from workers.engine.precedence import take_when
from workers.engine.projections import Written
from workers.engine.schema import ROLLUP, tables

__all__ = ["rebuild", "recompute_days", "refresh", "update"]

_DAY = "(clicked_at AT TIME ZONE 'UTC')::date"

_NEWER_CREATIVE = "(EXCLUDED.creative_at, EXCLUDED.creative_key) > (daily.creative_at, daily.creative_key)"


def _count_daily(clicks: str) -> str:
    """Data-modifying CTEs (for a ``WITH``) adding the clicks of the relation ``clicks`` (a table or CTE with
    ad_clicks' columns) to the per-day rollups."""
    return f"""
    daily AS (
        INSERT INTO ad_daily AS daily
            (day, source_id, clicks, click_ids, headline, source_type, media_type, creative_at, creative_key)
        SELECT DISTINCT ON (day, source_id)
            day, source_id, count(*) OVER same, count(ctwa_clid) OVER same,
            headline, source_type, media_type, clicked_at, message_id
        FROM (SELECT *, {_DAY} AS day FROM {clicks}) AS click
        WINDOW same AS (PARTITION BY day, source_id)
        ORDER BY day, source_id, clicked_at DESC, message_id DESC
        ON CONFLICT (day, source_id) DO UPDATE SET
            clicks = daily.clicks + EXCLUDED.clicks,
            click_ids = daily.click_ids + EXCLUDED.click_ids,
            {take_when(_NEWER_CREATIVE, "daily", ["headline", "source_type", "media_type", "creative_key"])},
            creative_at = GREATEST(daily.creative_at, EXCLUDED.creative_at)
    ), daily_people AS (
        INSERT INTO ad_daily_people (day, source_id, person_key)
        SELECT DISTINCT {_DAY}, source_id, person_key FROM {clicks} WHERE person_key IS NOT NULL
        ON CONFLICT DO NOTHING
    ), daily_conversations AS (
        INSERT INTO ad_daily_conversations (day, source_id, conversation_id)
        SELECT DISTINCT {_DAY}, source_id, conversation_id FROM {clicks} WHERE conversation_id IS NOT NULL
        ON CONFLICT DO NOTHING
    ), all_ads_people AS (
        INSERT INTO daily_people (day, person_key)
        SELECT DISTINCT {_DAY}, person_key FROM {clicks} WHERE person_key IS NOT NULL
        ON CONFLICT DO NOTHING
    ), all_ads_conversations AS (
        INSERT INTO daily_conversations (day, conversation_id)
        SELECT DISTINCT {_DAY}, conversation_id FROM {clicks} WHERE conversation_id IS NOT NULL
        ON CONFLICT DO NOTHING
    )
    """


def _touches(clicks: str) -> str:
    """Each person's touches among the clicks of the relation ``clicks``: rows of ``person_touches``."""
    return f"""
        SELECT first.person_key, first.contact_id, last.channel, last.identity, counted.clicks,
               first.message_id, first.source_id, first.headline, first.clicked_at,
               (first.clicked_at AT TIME ZONE 'UTC')::date,
               last.message_id, last.source_id, last.headline, last.clicked_at
        FROM (
            SELECT DISTINCT ON (person_key) * FROM {clicks} WHERE person_key IS NOT NULL
            ORDER BY person_key, clicked_at, message_id
        ) AS first
        JOIN (
            SELECT DISTINCT ON (person_key) * FROM {clicks} WHERE person_key IS NOT NULL
            ORDER BY person_key, clicked_at DESC, message_id DESC
        ) AS last USING (person_key)
        JOIN (
            SELECT person_key, count(*)::int AS clicks FROM {clicks} WHERE person_key IS NOT NULL GROUP BY person_key
        ) AS counted USING (person_key)
    """


_EARLIER_FIRST = (
    "(EXCLUDED.first_clicked_at, EXCLUDED.first_message_id) < (touches.first_clicked_at, touches.first_message_id)"
)
_LATER_LAST = (
    "(EXCLUDED.last_clicked_at, EXCLUDED.last_message_id) > (touches.last_clicked_at, touches.last_message_id)"
)
_FIRST = ["first_message_id", "first_source_id", "first_headline", "first_day"]
_LAST = ["last_message_id", "last_source_id", "last_headline", "channel", "identity"]


def _count(clicks: str) -> str:
    """Data-modifying CTEs and a final INSERT adding the clicks of the relation ``clicks`` to every rollup."""
    return f"""
    {_count_daily(clicks)}
    INSERT INTO person_touches AS touches {_touches(clicks)}
    ON CONFLICT (person_key) DO UPDATE SET
        clicks = touches.clicks + EXCLUDED.clicks,
        {take_when(_EARLIER_FIRST, "touches", _FIRST)},
        first_clicked_at = LEAST(touches.first_clicked_at, EXCLUDED.first_clicked_at),
        {take_when(_LATER_LAST, "touches", _LAST)},
        last_clicked_at = GREATEST(touches.last_clicked_at, EXCLUDED.last_clicked_at)
    """


_COUNT_NEW = text(
    f"WITH new_clicks AS (SELECT * FROM ad_clicks WHERE message_id = ANY(CAST(:ids AS text[]))), {_count('new_clicks')}"
)


async def update(
    connection: AsyncConnection,
    written: Written,
    contacts: Collection[str] = (),
    identities: Collection[tuple[str, str]] = (),
) -> None:
    """Add what ``written`` holds (new clicks, messages and delivery reports) to the rollups, then recompute those
    of the persons ``contacts`` and ``identities`` (channel, identity), whose clicks changed hands."""
    if written.clicks:
        await connection.execute(_COUNT_NEW, {"ids": list(written.clicks)})
    await chains.queue(connection, written.messages, written.reports, written.clicks)
    if contacts or identities:
        keys = await connection.scalar(
            _PERSON_KEYS,
            {
                "contacts": sorted(contacts),
                "channels": [channel for channel, _ in identities],
                "identities": [identity for _, identity in identities],
            },
        )
        await refresh(connection, keys)


_PERSON_KEYS = text(
    """
    SELECT array_agg(DISTINCT key ORDER BY key) FROM (
        SELECT person_key(contact_id, NULL, NULL) FROM unnest(CAST(:contacts AS text[])) AS contact_id
        UNION ALL
        SELECT person_key(NULL, channel, identity)
        FROM unnest(CAST(:channels AS text[]), CAST(:identities AS text[])) AS given(channel, identity)
    ) AS persons(key)
    """
)

_REFRESH = [
    *(
        text(f"DELETE FROM {table.name} WHERE person_key = ANY(:keys)")
        for table in tables(ROLLUP, naming=("person_key",))
    ),
    text(
        f"""
        WITH concerned AS (SELECT * FROM ad_clicks WHERE person_key = ANY(:keys))
        INSERT INTO person_touches {_touches("concerned")}
        """
    ),
    text(
        f"""
        INSERT INTO ad_daily_people (day, source_id, person_key)
        SELECT DISTINCT {_DAY}, source_id, person_key FROM ad_clicks WHERE person_key = ANY(:keys)
        """
    ),
    text(
        f"""
        INSERT INTO daily_people (day, person_key)
        SELECT DISTINCT {_DAY}, person_key FROM ad_clicks WHERE person_key = ANY(:keys)
        """
    ),
]

# Attributed conversion events take their click's ad, person and app again (where they changed): in a refresh, those
# of clicks of the persons concerned (as the clicks are now, or as the events last knew them).
_ATTRIBUTE_CONVERSIONS = """
    UPDATE conversion_events AS event
    SET click_source_id = click.source_id, click_person_key = click.person_key, click_app_id = click.app_id
    FROM ad_clicks AS click
    WHERE click.message_id = event.click_message_id
      AND (event.click_source_id, event.click_person_key, event.click_app_id)
          IS DISTINCT FROM (click.source_id, click.person_key, click.app_id)
"""
_REFRESH_CONVERSIONS = text(
    f"{_ATTRIBUTE_CONVERSIONS} AND (click.person_key = ANY(:keys) OR event.click_person_key = ANY(:keys))"
)


async def refresh(connection: AsyncConnection, keys: Iterable[str]) -> None:
    """Recompute the rollups of the persons ``keys`` (``person_key`` values, old and new) from ``ad_clicks``."""
    wanted = sorted(set(keys))
    if not wanted:
        return
    for statement in _REFRESH:
        await connection.execute(statement, {"keys": wanted})
    await connection.execute(_REFRESH_CONVERSIONS, {"keys": wanted})
    await chains.settle(connection, persons=wanted)


_REBUILD = [
    text(f"TRUNCATE {', '.join(table.name for table in tables(ROLLUP))}"),
    # Every click is new to the emptied rollups.
    text(f"WITH {_count('ad_clicks')}"),
    # Every attributed conversion event takes its click's ad and person again.
    text(_ATTRIBUTE_CONVERSIONS),
]


async def rebuild(connection: AsyncConnection) -> None:
    """Recompute every rollup from ``ad_clicks`` (after a bulk load, or to check them)."""
    for statement in _REBUILD:
        await connection.execute(statement)
    await chains.settle(connection, everyone=True)


_DAYS = "unnest(CAST(:days AS date[]), CAST(:sources AS text[])) AS concerned(day, source_id)"
_RECOMPUTE_DAYS = [
    *(
        text(
            f"DELETE FROM {table.name} USING {_DAYS} WHERE {table.name}.day = concerned.day "
            f"AND {table.name}.source_id IS NOT DISTINCT FROM concerned.source_id"
        )
        for table in tables(ROLLUP, naming=("day", "source_id"))
    ),
    # Every click of those days and ads is new to their emptied rows; the person rollups are left alone.
    text(
        f"""
        WITH day_clicks AS (
            SELECT click.* FROM ad_clicks AS click JOIN {_DAYS}
            ON (click.clicked_at AT TIME ZONE 'UTC')::date = concerned.day
               AND click.source_id IS NOT DISTINCT FROM concerned.source_id
        ), {_count_daily("day_clicks")}
        SELECT count(*) FROM day_clicks
        """
    ),
]

# The rows of all ads together of those days, made again from all their clicks; each statement returns the person
# keys and conversation ids of its rows, those that had a row and those that have one now, to settle.
_DAYS_CLICKS = """
    SELECT days.day, click.person_key, click.conversation_id
    FROM (SELECT DISTINCT day FROM unnest(CAST(:days AS date[])) AS day) AS days
    JOIN ad_clicks AS click
    ON click.clicked_at >= (days.day::timestamp AT TIME ZONE 'UTC')
       AND click.clicked_at < ((days.day + 1)::timestamp AT TIME ZONE 'UTC')
"""
_RECOMPUTE_ALL_ADS = [
    text(
        """
        WITH people AS (
            DELETE FROM daily_people WHERE day = ANY(CAST(:days AS date[])) RETURNING person_key
        ), talks AS (
            DELETE FROM daily_conversations WHERE day = ANY(CAST(:days AS date[])) RETURNING conversation_id
        )
        SELECT (SELECT array_agg(DISTINCT person_key) FROM people) AS persons,
               (SELECT array_agg(DISTINCT conversation_id) FROM talks) AS conversations
        """
    ),
    text(
        f"""
        WITH day_clicks AS ({_DAYS_CLICKS}), people AS (
            INSERT INTO daily_people (day, person_key)
            SELECT DISTINCT day, person_key FROM day_clicks WHERE person_key IS NOT NULL
            RETURNING person_key
        ), talks AS (
            INSERT INTO daily_conversations (day, conversation_id)
            SELECT DISTINCT day, conversation_id FROM day_clicks WHERE conversation_id IS NOT NULL
            RETURNING conversation_id
        )
        SELECT (SELECT array_agg(DISTINCT person_key) FROM people) AS persons,
               (SELECT array_agg(DISTINCT conversation_id) FROM talks) AS conversations
        """
    ),
]


async def recompute_days(connection: AsyncConnection, days: Iterable[tuple[date, str | None]]) -> None:
    """Recompute the per-day rollups of these (UTC day, source_id) pairs from ``ad_clicks``, and those of all ads
    together of these days."""
    wanted = sorted(set(days), key=lambda pair: (pair[0], pair[1] or ""))
    if not wanted:
        return
    params = {"days": [day for day, _ in wanted], "sources": [source for _, source in wanted]}
    for statement in _RECOMPUTE_DAYS:
        await connection.execute(statement, params)
    persons: set[str] = set()
    conversations: set[str] = set()
    for statement in _RECOMPUTE_ALL_ADS:
        changed = (await connection.execute(statement, {"days": params["days"]})).one()
        persons.update(changed.persons or ())
        conversations.update(changed.conversations or ())
    await chains.settle(connection, persons=persons, conversations=conversations)
