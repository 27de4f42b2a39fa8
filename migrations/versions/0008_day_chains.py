"""Day chains: each person and conversation counted once over any range of days without sorting, and what the
people an ad brought did next kept by the workers.

``ad_daily_people`` and ``ad_daily_conversations`` gain ``previous_day`` (the key's previous day with a click);
``daily_people`` and ``daily_conversations`` are the same for all ads together. The people's rows gain what the
person did next after that day's clicks (wrote again, got a reply delivered, read; how soon the first reply came),
each flag with its own chain (workers/engine/chains.py keeps them). ``range_report``, ``ad_report``,
``engagement_report`` and ``performance_daily`` count from them: the rows of a range whose previous day is before
it. ``engagement_report`` no longer counts replies by their last touch (``ad_engagement`` still does, over all
time): it counts people who got a reply delivered or read, and the median time to the first reply is taken over
the people's days (from a day's first click).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path
from types import ModuleType
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_FLAGS = ("wrote_again", "replied", "reply_read")
_PEOPLE = {"ad_daily_people": ("source_id", "person_key"), "daily_people": ("person_key",)}
_CONVERSATIONS = {
    "ad_daily_conversations": ("source_id", "conversation_id"),
    "daily_conversations": ("conversation_id",),
}
_COUNTED = "('pending', 'sending', 'sent', 'unconfirmed')"
# As migration 0007's, with room to sort a range's rows in memory.
_DEFINER = "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp SET jit = off SET work_mem = '32MB'"


def _engagement() -> list[sa.Column[Any]]:
    return [
        sa.Column("wrote_again", sa.Boolean, nullable=False, server_default="false", comment="a message after a click"),
        sa.Column("replied", sa.Boolean, nullable=False, server_default="false", comment="a reply delivered or read"),
        sa.Column("reply_read", sa.Boolean, nullable=False, server_default="false", comment="a reply read"),
        sa.Column("first_reply_seconds", sa.Float, comment="from the day's first click to the first reply's report"),
        *_chains(),
    ]


def _chains() -> list[sa.Column[Any]]:
    return [
        sa.Column("previous_day", sa.Date, comment="the key's previous click day"),
        *(sa.Column(f"previous_{flag}_day", sa.Date, comment=f"the key's previous {flag} day") for flag in _FLAGS),
    ]


_CLICK_COLUMNS = [
    sa.Column("click_source_id", sa.Text, comment="its click's ad (ad_clicks.source_id)"),
    sa.Column("click_person_key", sa.Text, comment="its click's person (ad_clicks.person_key)"),
]

# A range's people and conversations are counted from these indexes alone.
_FACTS = [
    "wrote_again",
    "previous_wrote_again_day",
    "replied",
    "previous_replied_day",
    "reply_read",
    "previous_reply_read_day",
    "first_reply_seconds",
]
_CHAIN_INDEXES = [
    ("ix_ad_daily_people_chains", "ad_daily_people", ["day", "source_id", "previous_day"], _FACTS),
    ("ix_daily_people_chains", "daily_people", ["day", "previous_day"], _FACTS),
    ("ix_ad_daily_conversations_chains", "ad_daily_conversations", ["day", "source_id", "previous_day"], None),
    ("ix_daily_conversations_chains", "daily_conversations", ["day", "previous_day"], None),
]


def _same(key: tuple[str, ...]) -> str:
    return " AND ".join(
        f"row.{column} IS NOT DISTINCT FROM linked.{column}"
        if column == "source_id"
        else f"row.{column} = linked.{column}"
        for column in ("day", *key)
    )


# Each click's facts, as workers/engine/chains.py settles them, for every click at once.
_CLICK_FACTS = """
    CREATE TEMPORARY TABLE click_facts ON COMMIT DROP AS
    SELECT click.message_id, click.source_id, click.person_key, click.clicked_at,
           (click.clicked_at AT TIME ZONE 'UTC')::date AS day,
           EXISTS (
               SELECT 1 FROM messages AS later
               WHERE later.person_key = click.person_key
                 AND later.sent_at > click.clicked_at
                 AND later.sent_at <= click.clicked_at + attribution_window()
                 AND later.message_id <> click.message_id
           ) AS wrote,
           extract(epoch FROM reply.first_reply_at - click.clicked_at) AS reply_seconds,
           coalesce(reply.delivered, false) AS delivered, coalesce(reply.read, false) AS read
    FROM ad_clicks AS click
    CROSS JOIN LATERAL (
        SELECT min(report.reported_at) AS first_reply_at,
               bool_or(report.status IN ('DELIVERED', 'READ')) AS delivered,
               bool_or(report.status = 'READ') AS read
        FROM (
            SELECT report.reported_at,
                   (SELECT status FROM message_status WHERE message_status.message_id = report.message_id) AS status
            FROM delivery_reports AS report
            WHERE report.person_key = click.person_key
              AND report.reported_at >= click.clicked_at
              AND report.reported_at <= click.clicked_at + attribution_window()
        ) AS report
    ) AS reply
    WHERE click.person_key IS NOT NULL
"""


def _backfill() -> list[str]:
    statements = [
        "UPDATE conversion_events AS event SET click_source_id = click.source_id, click_person_key = click.person_key "
        "FROM ad_clicks AS click WHERE click.message_id = event.click_message_id",
        "INSERT INTO daily_people (day, person_key) SELECT DISTINCT day, person_key FROM ad_daily_people",
        "INSERT INTO daily_conversations (day, conversation_id) "
        "SELECT DISTINCT day, conversation_id FROM ad_daily_conversations",
        _CLICK_FACTS,
    ]
    for table, key in _PEOPLE.items():
        grouped = ", ".join(("day", *key))
        statements.append(
            f"""
            UPDATE {table} AS row SET wrote_again = linked.wrote_again, replied = linked.replied,
                   reply_read = linked.reply_read, first_reply_seconds = linked.first_reply_seconds
            FROM (
                SELECT {grouped}, bool_or(wrote) AS wrote_again, bool_or(delivered) AS replied,
                       bool_or(read) AS reply_read,
                       (array_agg(reply_seconds ORDER BY clicked_at, message_id))[1] AS first_reply_seconds
                FROM click_facts GROUP BY {grouped}
            ) AS linked
            WHERE {_same(key)}
            """
        )
    for table, key in {**_PEOPLE, **_CONVERSATIONS}.items():
        partition = ", ".join(key)
        flags = _FLAGS if table in _PEOPLE else ()
        chains = ["previous_day", *(f"previous_{flag}_day" for flag in flags)]
        flag_chains = "".join(f", max(day) FILTER (WHERE {flag}) OVER before AS previous_{flag}_day" for flag in flags)
        statements.append(
            f"""
            UPDATE {table} AS row SET {", ".join(f"{chain} = linked.{chain}" for chain in chains)}
            FROM (
                SELECT day, {partition}, lag(day) OVER chain AS previous_day {flag_chains}
                FROM {table}
                WINDOW chain AS (PARTITION BY {partition} ORDER BY day),
                       before AS (chain ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
            ) AS linked
            WHERE {_same(key)}
            """
        )
    return statements


# The keys' first days in the range $1 .. $2: rows of the range whose previous day (of the flag) is before it.
def _first_in_range(flag: str = "") -> str:
    previous = f"previous_{flag}_day" if flag else "previous_day"
    return f"({flag + ' AND ' if flag else ''}({previous} IS NULL OR {previous} < $1))"


_VALUE = """
    (
        SELECT jsonb_object_agg(currency, amount) FROM (
            SELECT counted.currency, sum(counted.value) AS amount
            FROM unnest(array_agg(event.currency), array_agg(event.value)) AS counted(currency, value)
            WHERE counted.value IS NOT NULL
            GROUP BY counted.currency
        ) AS per_currency
    )
"""

# The conversions the figures count: attributed to a click, and sent or on their way to Meta — read with their
# click's ad and person from the index of their UTC day alone.
_EVENT_DAY = "(event.event_time AT TIME ZONE 'UTC')::date"
_COUNTED_WHERE = f"event.status IN {_COUNTED} AND event.click_message_id IS NOT NULL"

_CONVERSIONS_DAILY = f"""
    CREATE OR REPLACE VIEW conversions_daily AS
    SELECT {_EVENT_DAY} AS day, count(*)::int AS conversions,
           count(DISTINCT event.click_person_key)::int AS people_converted,
           coalesce({_VALUE}, '{{}}') AS value_by_currency
    FROM conversion_events AS event WHERE {_COUNTED_WHERE}
    GROUP BY 1
"""

_AD_CONVERSIONS_DAILY = f"""
    CREATE OR REPLACE VIEW ad_conversions_daily AS
    SELECT {_EVENT_DAY} AS day, event.click_source_id AS source_id, count(*)::int AS conversions,
           count(DISTINCT event.click_person_key)::int AS people_converted,
           coalesce({_VALUE}, '{{}}') AS value_by_currency
    FROM conversion_events AS event WHERE {_COUNTED_WHERE}
    GROUP BY 1, 2
"""

_PERFORMANCE_DAILY = """
    CREATE OR REPLACE VIEW performance_daily AS
    SELECT day, sum(clicks)::int AS clicks, sum(click_ids)::int AS click_ids, sum(people)::int AS people,
           sum(new_people)::int AS new_people, sum(conversations)::int AS conversations
    FROM (
        SELECT day, clicks, click_ids, 0 AS people, 0 AS new_people, 0 AS conversations FROM ad_daily
        UNION ALL
        SELECT day, 0, 0, 1, 0, 0 FROM daily_people
        UNION ALL
        SELECT first_day, 0, 0, 0, 1, 0 FROM person_touches
        UNION ALL
        SELECT day, 0, 0, 0, 0, 1 FROM daily_conversations
    ) AS counted
    GROUP BY day
"""

_FUNCTIONS = {
    "ad_report": f"""
        CREATE OR REPLACE FUNCTION ad_report(since date, until date)
        RETURNS TABLE (
            source_id text, headline text, source_type text, media_type text, clicks int, click_ids int,
            people int, new_people int, conversations int, conversions int, value jsonb, people_converted int,
            conversion_rate numeric
        )
        {_DEFINER} AS $$
        WITH clicks AS (
            SELECT source_id, sum(clicks)::int AS clicks, sum(click_ids)::int AS click_ids,
                   (array_agg(headline ORDER BY creative_at DESC, creative_key DESC))[1] AS headline,
                   (array_agg(source_type ORDER BY creative_at DESC, creative_key DESC))[1] AS source_type,
                   (array_agg(media_type ORDER BY creative_at DESC, creative_key DESC))[1] AS media_type
            FROM ad_daily WHERE day BETWEEN $1 AND $2 GROUP BY source_id
        ), people AS (
            SELECT source_id, count(*)::int AS people
            FROM ad_daily_people WHERE day BETWEEN $1 AND $2 AND {_first_in_range()}
            GROUP BY source_id
        ), newcomers AS (
            SELECT first_source_id AS source_id, count(*)::int AS new_people
            FROM person_touches WHERE first_day BETWEEN $1 AND $2 GROUP BY first_source_id
        ), talks AS (
            SELECT source_id, count(*)::int AS conversations
            FROM ad_daily_conversations WHERE day BETWEEN $1 AND $2 AND {_first_in_range()}
            GROUP BY source_id
        ), conversions AS (
            SELECT event.click_source_id AS source_id, count(*)::int AS conversions, {_VALUE} AS value,
                   count(DISTINCT event.click_person_key)::int AS people_converted
            FROM conversion_events AS event WHERE {_COUNTED_WHERE} AND {_EVENT_DAY} BETWEEN $1 AND $2
            GROUP BY event.click_source_id
        ), ads AS (
            SELECT source_id FROM clicks UNION SELECT source_id FROM conversions
        )
        SELECT ads.source_id, clicks.headline, clicks.source_type, clicks.media_type,
               coalesce(clicks.clicks, 0), coalesce(clicks.click_ids, 0),
               coalesce(people.people, 0), coalesce(newcomers.new_people, 0),
               coalesce(talks.conversations, 0), coalesce(conversions.conversions, 0),
               coalesce(conversions.value, '{{}}'), coalesce(conversions.people_converted, 0),
               round(coalesce(conversions.people_converted, 0)::numeric / nullif(people.people, 0), 3)
        FROM ads
        LEFT JOIN clicks ON clicks.source_id IS NOT DISTINCT FROM ads.source_id
        LEFT JOIN people ON people.source_id IS NOT DISTINCT FROM ads.source_id
        LEFT JOIN newcomers ON newcomers.source_id IS NOT DISTINCT FROM ads.source_id
        LEFT JOIN talks ON talks.source_id IS NOT DISTINCT FROM ads.source_id
        LEFT JOIN conversions ON conversions.source_id IS NOT DISTINCT FROM ads.source_id
        ORDER BY coalesce(clicks.clicks, 0) DESC, ads.source_id
        $$
    """,
    "range_report": f"""
        CREATE OR REPLACE FUNCTION range_report(since date, until date)
        RETURNS TABLE (
            clicks int, click_ids int, people int, new_people int, conversations int, conversions int, value jsonb,
            people_converted int, conversion_rate numeric
        )
        {_DEFINER} AS $$
        WITH clicks AS (
            SELECT coalesce(sum(clicks), 0)::int AS clicks, coalesce(sum(click_ids), 0)::int AS click_ids
            FROM ad_daily WHERE day BETWEEN $1 AND $2
        ), people AS (
            SELECT count(*)::int AS people FROM daily_people WHERE day BETWEEN $1 AND $2 AND {_first_in_range()}
        ), newcomers AS (
            SELECT count(*)::int AS new_people FROM person_touches WHERE first_day BETWEEN $1 AND $2
        ), talks AS (
            SELECT count(*)::int AS conversations
            FROM daily_conversations WHERE day BETWEEN $1 AND $2 AND {_first_in_range()}
        ), conversions AS (
            SELECT count(*)::int AS conversions, coalesce({_VALUE}, '{{}}') AS value,
                   count(DISTINCT event.click_person_key)::int AS people_converted
            FROM conversion_events AS event WHERE {_COUNTED_WHERE} AND {_EVENT_DAY} BETWEEN $1 AND $2
        )
        SELECT clicks.clicks, clicks.click_ids, people.people, newcomers.new_people, talks.conversations,
               conversions.conversions, conversions.value, conversions.people_converted,
               round(conversions.people_converted::numeric / nullif(people.people, 0), 3)
        FROM clicks, people, newcomers, talks, conversions
        $$
    """,
}


def _scope(table: str) -> tuple[str, str, str]:
    """The column, condition and grouping of ``table``'s rows: per ad (only when ``per_ad``, $3) for
    ``ad_daily_people``, all ads together for ``daily_people``."""
    if table == "ad_daily_people":
        return "source_id, ", "AND $3", "GROUP BY source_id"
    return "", "", ""


def _engaged(table: str) -> str:
    """A range's people of ``table`` (a people chain) and what they did next, each person counted once."""
    ad, wanted, grouped = _scope(table)
    counts = [
        f"count(*) FILTER (WHERE {_first_in_range()})::int AS people",
        *(f"count(*) FILTER (WHERE {_first_in_range(flag)})::int AS people_{flag}" for flag in _FLAGS),
    ]
    return f"SELECT {ad}{', '.join(counts)} FROM {table} WHERE day BETWEEN $1 AND $2 {wanted} {grouped}"


def _median(table: str) -> str:
    """The median of the first reply's delay over a range's rows of ``table`` that had one."""
    ad, wanted, grouped = _scope(table)
    return f"""
        SELECT {ad}percentile_cont(0.5) WITHIN GROUP (ORDER BY first_reply_seconds) AS median_seconds_to_first_reply
        FROM {table} WHERE day BETWEEN $1 AND $2 AND first_reply_seconds IS NOT NULL {wanted}
        {grouped}
    """


# What the people an ad's clicks in the range brought did next, per ad and (total) over all ads together, each person
# counted once: wrote again within a click's attribution window, got a reply delivered (or read) within it, and the
# median time from a person's first click of a day to the first reply. The total alone with per_ad false.
ENGAGEMENT = "engagement_report(date, date, boolean)"
_ENGAGEMENT_0007 = "engagement_report(date, date)"
_ENGAGEMENT_REPORT = f"""
    CREATE FUNCTION engagement_report(since date, until date, per_ad boolean DEFAULT true)
    RETURNS TABLE (
        total boolean, source_id text, people int, people_wrote_again int, wrote_again_rate numeric,
        people_replied int, people_reply_read int, median_seconds_to_first_reply double precision
    )
    {_DEFINER} AS $$
    WITH everyone AS ({_engaged("daily_people")}), median AS ({_median("daily_people")}),
    per_ad AS ({_engaged("ad_daily_people")}), ad_median AS ({_median("ad_daily_people")})
    SELECT total, source_id, people, people_wrote_again,
           round(people_wrote_again::numeric / nullif(people, 0), 3), people_replied, people_reply_read,
           median_seconds_to_first_reply
    FROM (
        SELECT true AS total, NULL::text AS source_id, everyone.*, median.* FROM everyone, median
        UNION ALL
        SELECT false, per_ad.source_id, per_ad.people, per_ad.people_wrote_again, per_ad.people_replied,
               per_ad.people_reply_read, ad_median.median_seconds_to_first_reply
        FROM per_ad LEFT JOIN ad_median ON ad_median.source_id IS NOT DISTINCT FROM per_ad.source_id
    ) AS engaged
    ORDER BY 1 DESC, 2
    $$
"""


def _revision_0007() -> ModuleType:
    """Migration 0007, whose definitions a downgrade puts back."""
    spec = spec_from_file_location("ctwa_revision_0007", Path(__file__).with_name("0007_dashboard.py"))
    assert spec is not None
    assert spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _revision_0006_ad_conversions_daily() -> str:
    """Migration 0006's ad_conversions_daily, which joins each event's click."""
    spec = spec_from_file_location("ctwa_revision_0006", Path(__file__).with_name("0006_conversion_events.py"))
    assert spec is not None
    assert spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    definition: str = module._AD_CONVERSIONS_DAILY
    return definition.replace("CREATE VIEW", "CREATE OR REPLACE VIEW")


def _regrant(dropped: str, created: str, create: str) -> None:
    """Drop the function ``dropped`` (a signature: its arguments change, or its result) and ``create`` it again as
    ``created``, granting EXECUTE again to the roles that had it."""
    function = dropped.split("(")[0]
    op.execute(
        f"""
        DO $do$
        DECLARE grantees text[];
        BEGIN
            SELECT array_agg(DISTINCT grantee) INTO grantees FROM information_schema.routine_privileges
            WHERE routine_schema = 'public' AND routine_name = '{function}' AND privilege_type = 'EXECUTE'
              AND grantee NOT IN (current_user, 'PUBLIC');
            DROP FUNCTION {dropped};
            EXECUTE $create${create}$create$;
            EXECUTE 'REVOKE EXECUTE ON FUNCTION {created} FROM PUBLIC';
            IF grantees IS NOT NULL THEN
                EXECUTE format('GRANT EXECUTE ON FUNCTION {created} TO %s',
                               (SELECT string_agg(quote_ident(name), ', ') FROM unnest(grantees) AS name));
            END IF;
        END $do$
        """
    )


def upgrade() -> None:
    for column in _engagement():
        op.add_column("ad_daily_people", column)
    op.create_table(
        "daily_people",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("person_key", sa.Text, primary_key=True),
        *_engagement(),
    )
    op.create_index(op.f("ix_daily_people_person_key"), "daily_people", ["person_key"])
    op.add_column("ad_daily_conversations", _chains()[0])
    op.create_index(op.f("ix_ad_daily_conversations_conversation_id"), "ad_daily_conversations", ["conversation_id"])
    op.create_table(
        "daily_conversations",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("conversation_id", sa.Text, primary_key=True),
        _chains()[0],
    )
    op.create_index(op.f("ix_daily_conversations_conversation_id"), "daily_conversations", ["conversation_id"])
    op.create_table(
        "chain_backlog",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("person_key", sa.Text, comment="a person, or NULL for a conversation"),
        sa.Column("first_day", sa.Date, comment="the person's days to look at"),
        sa.Column("last_day", sa.Date),
        sa.Column("cause", sa.Text, comment="message, click or report"),
        sa.Column("conversation_id", sa.Text, comment="a conversation whose days a click changed"),
    )
    for column in _CLICK_COLUMNS:
        op.add_column("conversion_events", column)
    for statement in _backfill():
        op.execute(statement)
    for name, table, columns, include in _CHAIN_INDEXES:
        op.create_index(name, table, columns, postgresql_include=include)
    op.create_index(op.f("ix_conversion_events_click_person_key"), "conversion_events", ["click_person_key"])
    op.create_index(
        "ix_conversion_events_counted_day",
        "conversion_events",
        [sa.text("((event_time AT TIME ZONE 'UTC')::date)")],
        postgresql_include=["click_source_id", "click_person_key", "currency", "value"],
        postgresql_where=sa.text(_COUNTED_WHERE.replace("event.", "")),
    )
    op.execute(_CONVERSIONS_DAILY)
    op.execute(_AD_CONVERSIONS_DAILY)
    op.execute(_PERFORMANCE_DAILY)
    for statement in _FUNCTIONS.values():
        op.execute(statement)
    _regrant(_ENGAGEMENT_0007, ENGAGEMENT, _ENGAGEMENT_REPORT)


def downgrade() -> None:
    before = _revision_0007()
    op.execute(_revision_0006_ad_conversions_daily())
    op.execute(before.VIEWS["conversions_daily"].replace("CREATE VIEW", "CREATE OR REPLACE VIEW"))
    _regrant(ENGAGEMENT, _ENGAGEMENT_0007, before.FUNCTIONS["engagement_report(since date, until date)"])
    for signature in ("ad_report(since date, until date)", "range_report(since date, until date)"):
        op.execute(before.FUNCTIONS[signature].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION"))
    op.execute(before.VIEWS["performance_daily"].replace("CREATE VIEW", "CREATE OR REPLACE VIEW"))
    op.drop_index("ix_conversion_events_counted_day", "conversion_events")
    op.drop_index(op.f("ix_conversion_events_click_person_key"), "conversion_events")
    for column in _CLICK_COLUMNS:
        op.drop_column("conversion_events", column.name)
    for name, table, _, _ in _CHAIN_INDEXES:
        if table in ("ad_daily_people", "ad_daily_conversations"):
            op.drop_index(name, table)
    op.drop_table("chain_backlog")
    op.drop_table("daily_conversations")
    op.drop_index(op.f("ix_ad_daily_conversations_conversation_id"), "ad_daily_conversations")
    op.drop_column("ad_daily_conversations", "previous_day")
    op.drop_table("daily_people")
    for column in _engagement():
        op.drop_column("ad_daily_people", column.name)
