"""Analytics per app: which app each ad, click, message and conversation came through, and each figure for one app.

An ad's clicks come through the Sinch app of the WhatsApp number the ad sends people to: ``ad_apps`` lists, per ad,
the apps its clicks came through (with the app's name from ``apps``). The attribution views gain their rows' apps, as
columns added at their end (the existing columns, and so existing queries, keep their results): ``app_id`` and
``app_name`` of a message or conversation (and of a person's last click, and of a click), and the app of each touch.

An app's figures are those of its ads (``app_ads``: the ads with a click through the app): ``ad_report`` of a range
filtered to them, and ``app_range_report``, ``app_daily`` and ``app_engagement`` — the totals of ``range_report``,
of ``performance_daily`` with ``conversions_daily``, and of ``engagement_report``, for the app's ads alone, each
person and conversation counted once.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_DEFINER = "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp SET jit = off SET work_mem = '32MB'"
_COUNTED = "('pending', 'sending', 'sent', 'unconfirmed')"
_EVENT_DAY = "(event.event_time AT TIME ZONE 'UTC')::date"
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
# The app's ads ($3), found once per statement: the CTE ``ads`` and the condition that a row (its ``column``) is of
# one of them — NULL, the clicks whose referral names no ad, too.
_ADS = """
    ads AS (
        SELECT coalesce(array_agg(source_id) FILTER (WHERE source_id IS NOT NULL), '{}') AS ids,
               coalesce(bool_or(source_id IS NULL), false) AS none
        FROM app_ads($3)
    )
"""
_OF_APP = "({column} = ANY(ads.ids) OR ({column} IS NULL AND ads.none))"

_TOUCH = """
        SELECT click.message_id, click.source_id, click.clicked_at, click.app_id
        FROM ad_clicks click
        WHERE click.person_key = {person}
          AND click.clicked_at <= {at} AND click.clicked_at >= ({at} - attribution_window())
        ORDER BY {order}
        LIMIT 1
"""


def _touches(person: str, at: str) -> str:
    first = _TOUCH.format(person=person, at=at, order="click.clicked_at, click.message_id")
    last = _TOUCH.format(person=person, at=at, order="click.clicked_at DESC, click.message_id DESC")
    return f"LEFT JOIN LATERAL ({first}) first_touch ON true LEFT JOIN LATERAL ({last}) last_touch ON true"


_TOUCH_COLUMNS = """
    first_touch.message_id AS first_touch_message_id,
    first_touch.source_id AS first_touch_source_id,
    first_touch.clicked_at AS first_touch_clicked_at,
    last_touch.message_id AS last_touch_message_id,
    last_touch.source_id AS last_touch_source_id,
    last_touch.clicked_at AS last_touch_clicked_at
"""
_CONVERSATION_PERSON = "person_key(conversation.contact_id, NULL::text, NULL::text)"

VIEWS = {
    "ad_apps": """
        CREATE VIEW ad_apps AS
        SELECT click.source_id, click.app_id, app.name AS app_name, count(*)::int AS clicks,
               min(click.clicked_at) AS first_clicked_at, max(click.clicked_at) AS last_clicked_at
        FROM ad_clicks AS click LEFT JOIN apps AS app USING (app_id)
        GROUP BY click.source_id, click.app_id, app.name
    """,
    "person_attribution": """
        CREATE OR REPLACE VIEW person_attribution AS
        SELECT touches.contact_id, touches.channel, touches.identity,
               touches.first_source_id, touches.first_headline, touches.first_clicked_at,
               touches.last_source_id, touches.last_headline, touches.last_clicked_at,
               touches.clicks, touches.person_key, touches.first_message_id, touches.last_message_id,
               first_click.app_id AS first_app_id, last_click.app_id AS last_app_id, app.name AS last_app_name
        FROM person_touches AS touches
        LEFT JOIN ad_clicks AS first_click ON first_click.message_id = touches.first_message_id
        LEFT JOIN ad_clicks AS last_click ON last_click.message_id = touches.last_message_id
        LEFT JOIN apps AS app ON app.app_id = last_click.app_id
        WHERE (touches.identity IS NULL OR touches.identity NOT LIKE 'erased:%')
          AND NOT EXISTS (
              SELECT 1 FROM contacts
              WHERE contacts.contact_id = touches.contact_id AND contacts.deleted_at IS NOT NULL
          )
    """,
    "message_attribution": f"""
        CREATE OR REPLACE VIEW message_attribution AS
        SELECT message.message_id, message.person_key, message.sent_at, message.conversation_id,
               {_TOUCH_COLUMNS},
               message.app_id, app.name AS app_name,
               first_touch.app_id AS first_touch_app_id, last_touch.app_id AS last_touch_app_id
        FROM messages AS message
        {_touches("message.person_key", "message.sent_at")}
        LEFT JOIN apps AS app ON app.app_id = message.app_id
    """,
    "conversation_attribution": f"""
        CREATE OR REPLACE VIEW conversation_attribution AS
        SELECT conversation.conversation_id, {_CONVERSATION_PERSON} AS person_key, conversation.started_at,
               {_TOUCH_COLUMNS},
               conversation.app_id, app.name AS app_name,
               first_touch.app_id AS first_touch_app_id, last_touch.app_id AS last_touch_app_id
        FROM conversations AS conversation
        {_touches(_CONVERSATION_PERSON, "conversation.started_at")}
        LEFT JOIN apps AS app ON app.app_id = conversation.app_id
        WHERE conversation.contact_id IS NOT NULL AND conversation.started_at IS NOT NULL
    """,
    "reply_attribution": f"""
        CREATE OR REPLACE VIEW reply_attribution AS
        SELECT reply.message_id, reply.person_key, reply.first_reported_at, status.status,
               last_touch.message_id AS last_touch_message_id,
               last_touch.source_id AS last_touch_source_id,
               last_touch.clicked_at AS last_touch_clicked_at,
               last_touch.app_id AS last_touch_app_id
        FROM (
            SELECT message_id, min(person_key) AS person_key, min(reported_at) AS first_reported_at
            FROM delivery_reports GROUP BY message_id
        ) AS reply
        JOIN message_status AS status USING (message_id)
        LEFT JOIN LATERAL ({
        _TOUCH.format(
            person="reply.person_key",
            at="reply.first_reported_at",
            order="click.clicked_at DESC, click.message_id DESC",
        )
    }) AS last_touch ON true
    """,
    "click_conversions": """
        CREATE OR REPLACE VIEW click_conversions AS
        SELECT click.message_id, click.ctwa_clid, click.source_id, click.person_key, click.clicked_at,
               click.clicked_at + attribution_window() AS report_until,
               reported.conversions IS NOT NULL AS conversion_reported,
               coalesce(reported.conversions, 0) AS conversions,
               reported.last_reported_at,
               click.app_id, app.name AS app_name
        FROM ad_clicks AS click
        LEFT JOIN (
            SELECT sent_ctwa_clid AS ctwa_clid, count(*) AS conversions, max(sent_at) AS last_reported_at
            FROM conversion_events WHERE status = 'sent' GROUP BY sent_ctwa_clid
        ) AS reported USING (ctwa_clid)
        LEFT JOIN apps AS app ON app.app_id = click.app_id
        WHERE click.ctwa_clid IS NOT NULL
    """,
}

# The views as they were before (migrations 0003, 0005 and 0006), for the downgrade: a view can't lose columns by
# CREATE OR REPLACE, so each is dropped and made again.
_BEFORE = {
    "person_attribution": """
        CREATE VIEW person_attribution AS
        SELECT touches.contact_id, touches.channel, touches.identity,
               touches.first_source_id, touches.first_headline, touches.first_clicked_at,
               touches.last_source_id, touches.last_headline, touches.last_clicked_at,
               touches.clicks, touches.person_key, touches.first_message_id, touches.last_message_id
        FROM person_touches AS touches
        WHERE (touches.identity IS NULL OR touches.identity NOT LIKE 'erased:%')
          AND NOT EXISTS (
              SELECT 1 FROM contacts
              WHERE contacts.contact_id = touches.contact_id AND contacts.deleted_at IS NOT NULL
          )
    """,
    "message_attribution": f"""
        CREATE VIEW message_attribution AS
        SELECT message.message_id, message.person_key, message.sent_at, message.conversation_id, {_TOUCH_COLUMNS}
        FROM messages AS message
        {_touches("message.person_key", "message.sent_at")}
    """,
    "conversation_attribution": f"""
        CREATE VIEW conversation_attribution AS
        SELECT conversation.conversation_id, {_CONVERSATION_PERSON} AS person_key, conversation.started_at,
               {_TOUCH_COLUMNS}
        FROM conversations AS conversation
        {_touches(_CONVERSATION_PERSON, "conversation.started_at")}
        WHERE conversation.contact_id IS NOT NULL AND conversation.started_at IS NOT NULL
    """,
    "reply_attribution": f"""
        CREATE VIEW reply_attribution AS
        SELECT reply.message_id, reply.person_key, reply.first_reported_at, status.status,
               last_touch.message_id AS last_touch_message_id,
               last_touch.source_id AS last_touch_source_id,
               last_touch.clicked_at AS last_touch_clicked_at
        FROM (
            SELECT message_id, min(person_key) AS person_key, min(reported_at) AS first_reported_at
            FROM delivery_reports GROUP BY message_id
        ) AS reply
        JOIN message_status AS status USING (message_id)
        LEFT JOIN LATERAL ({
        _TOUCH.format(
            person="reply.person_key",
            at="reply.first_reported_at",
            order="click.clicked_at DESC, click.message_id DESC",
        )
    }) AS last_touch ON true
    """,
    "click_conversions": """
        CREATE VIEW click_conversions AS
        SELECT click.message_id, click.ctwa_clid, click.source_id, click.person_key, click.clicked_at,
               click.clicked_at + attribution_window() AS report_until,
               reported.conversions IS NOT NULL AS conversion_reported,
               coalesce(reported.conversions, 0) AS conversions,
               reported.last_reported_at
        FROM ad_clicks AS click
        LEFT JOIN (
            SELECT sent_ctwa_clid AS ctwa_clid, count(*) AS conversions, max(sent_at) AS last_reported_at
            FROM conversion_events WHERE status = 'sent' GROUP BY sent_ctwa_clid
        ) AS reported USING (ctwa_clid)
        WHERE click.ctwa_clid IS NOT NULL
    """,
}

FUNCTIONS = {
    # The apps with a click, and those the apps file names (table apps): for a choice of app. Each app with a click
    # is found by one step of the index on (app_id, source_id).
    "app_names()": f"""
        CREATE FUNCTION app_names() RETURNS TABLE (app_id text, name text)
        {_DEFINER} AS $$
        WITH RECURSIVE clicked AS (
            SELECT min(click.app_id) AS app_id FROM ad_clicks AS click
            UNION ALL
            SELECT (SELECT min(click.app_id) FROM ad_clicks AS click WHERE click.app_id > clicked.app_id)
            FROM clicked WHERE clicked.app_id IS NOT NULL
        )
        SELECT app_id, named.name
        FROM (SELECT app_id FROM clicked WHERE app_id IS NOT NULL UNION SELECT app_id FROM apps) AS app
        LEFT JOIN apps AS named USING (app_id)
        ORDER BY named.name NULLS LAST, app_id
        $$
    """,
    # The ads with a click through the app: their source_ids (NULL among them when a click of the app's referral
    # named no ad), each found by one step of the index on (app_id, source_id) rather than by reading every click.
    "app_ads(app text)": f"""
        CREATE FUNCTION app_ads(app text) RETURNS TABLE (source_id text)
        {_DEFINER} AS $$
        WITH RECURSIVE ad AS (
            SELECT min(click.source_id) AS source_id FROM ad_clicks AS click WHERE click.app_id = $1
            UNION ALL
            SELECT (
                SELECT min(click.source_id) FROM ad_clicks AS click
                WHERE click.app_id = $1 AND click.source_id > ad.source_id
            )
            FROM ad WHERE ad.source_id IS NOT NULL
        )
        SELECT source_id FROM ad WHERE source_id IS NOT NULL
        UNION ALL
        SELECT NULL WHERE EXISTS (SELECT FROM ad_clicks WHERE app_id = $1 AND source_id IS NULL)
        $$
    """,
    # range_report for the app's ads alone: each person and conversation counted once over the range.
    "app_range_report(since date, until date, app text)": f"""
        CREATE FUNCTION app_range_report(since date, until date, app text)
        RETURNS TABLE (
            clicks int, click_ids int, people int, new_people int, conversations int, conversions int, value jsonb,
            people_converted int, conversion_rate numeric
        )
        {_DEFINER} AS $$
        WITH {_ADS}, clicks AS (
            SELECT coalesce(sum(clicks), 0)::int AS clicks, coalesce(sum(click_ids), 0)::int AS click_ids
            FROM ad_daily, ads WHERE day BETWEEN $1 AND $2 AND {_OF_APP.format(column="source_id")}
        ), people AS (
            SELECT count(DISTINCT person_key)::int AS people
            FROM ad_daily_people, ads WHERE day BETWEEN $1 AND $2 AND {_OF_APP.format(column="source_id")}
        ), newcomers AS (
            SELECT count(*)::int AS new_people FROM person_touches, ads
            WHERE first_day BETWEEN $1 AND $2 AND {_OF_APP.format(column="first_source_id")}
        ), talks AS (
            SELECT count(DISTINCT conversation_id)::int AS conversations
            FROM ad_daily_conversations, ads WHERE day BETWEEN $1 AND $2 AND {_OF_APP.format(column="source_id")}
        ), conversions AS (
            SELECT count(*)::int AS conversions, coalesce({_VALUE}, '{{}}') AS value,
                   count(DISTINCT event.click_person_key)::int AS people_converted
            FROM conversion_events AS event, ads
            WHERE event.status IN {_COUNTED} AND event.click_message_id IS NOT NULL
              AND {_EVENT_DAY} BETWEEN $1 AND $2 AND {_OF_APP.format(column="event.click_source_id")}
        )
        SELECT clicks.clicks, clicks.click_ids, people.people, newcomers.new_people, talks.conversations,
               conversions.conversions, conversions.value, conversions.people_converted,
               round(conversions.people_converted::numeric / nullif(people.people, 0), 3)
        FROM clicks, people, newcomers, talks, conversions
        $$
    """,
    # performance_daily and conversions_daily for the app's ads alone: one row per day with a click or a conversion.
    "app_daily(since date, until date, app text)": f"""
        CREATE FUNCTION app_daily(since date, until date, app text)
        RETURNS TABLE (
            day date, clicks int, click_ids int, people int, new_people int, conversations int, conversions int,
            people_converted int, value_by_currency jsonb
        )
        {_DEFINER} AS $$
        WITH {_ADS}, counted AS (
            SELECT day, clicks, click_ids, 0::bigint AS people, 0 AS new_people, 0::bigint AS conversations
            FROM ad_daily, ads WHERE day BETWEEN $1 AND $2 AND {_OF_APP.format(column="source_id")}
            UNION ALL
            SELECT day, 0, 0, count(DISTINCT person_key), 0, 0
            FROM ad_daily_people, ads WHERE day BETWEEN $1 AND $2 AND {_OF_APP.format(column="source_id")}
            GROUP BY day
            UNION ALL
            SELECT first_day, 0, 0, 0, 1, 0 FROM person_touches, ads
            WHERE first_day BETWEEN $1 AND $2 AND {_OF_APP.format(column="first_source_id")}
            UNION ALL
            SELECT day, 0, 0, 0, 0, count(DISTINCT conversation_id)
            FROM ad_daily_conversations, ads
            WHERE day BETWEEN $1 AND $2 AND {_OF_APP.format(column="source_id")}
            GROUP BY day
        ), performance AS (
            SELECT day, sum(clicks)::int AS clicks, sum(click_ids)::int AS click_ids, sum(people)::int AS people,
                   sum(new_people)::int AS new_people, sum(conversations)::int AS conversations
            FROM counted GROUP BY day
        ), converted AS (
            SELECT {_EVENT_DAY} AS day, count(*)::int AS conversions,
                   count(DISTINCT event.click_person_key)::int AS people_converted,
                   coalesce({_VALUE}, '{{}}') AS value_by_currency
            FROM conversion_events AS event, ads
            WHERE event.status IN {_COUNTED} AND event.click_message_id IS NOT NULL
              AND {_EVENT_DAY} BETWEEN $1 AND $2 AND {_OF_APP.format(column="event.click_source_id")}
            GROUP BY 1
        )
        SELECT coalesce(performance.day, converted.day), coalesce(performance.clicks, 0),
               coalesce(performance.click_ids, 0), coalesce(performance.people, 0),
               coalesce(performance.new_people, 0), coalesce(performance.conversations, 0),
               coalesce(converted.conversions, 0), coalesce(converted.people_converted, 0),
               coalesce(converted.value_by_currency, '{{}}')
        FROM performance FULL JOIN converted ON converted.day = performance.day
        ORDER BY 1
        $$
    """,
    # engagement_report's total for the app's ads alone: each person counted once, and a person wrote again (got a
    # reply, read it) if they did after a click of any of the app's ads. The median time to the first reply is taken
    # over the app's ads' person-days (each from that ad's first click of the day).
    "app_engagement(since date, until date, app text)": f"""
        CREATE FUNCTION app_engagement(since date, until date, app text)
        RETURNS TABLE (
            people int, people_wrote_again int, wrote_again_rate numeric, people_replied int, people_reply_read int,
            median_seconds_to_first_reply double precision
        )
        {_DEFINER} AS $$
        WITH {_ADS}, rows AS (
            SELECT person_key, wrote_again, replied, reply_read, first_reply_seconds
            FROM ad_daily_people, ads WHERE day BETWEEN $1 AND $2 AND {_OF_APP.format(column="source_id")}
        ), person AS (
            SELECT bool_or(wrote_again) AS wrote_again, bool_or(replied) AS replied, bool_or(reply_read) AS reply_read
            FROM rows GROUP BY person_key
        ), counted AS (
            SELECT count(*)::int AS people, (count(*) FILTER (WHERE wrote_again))::int AS people_wrote_again,
                   (count(*) FILTER (WHERE replied))::int AS people_replied,
                   (count(*) FILTER (WHERE reply_read))::int AS people_reply_read
            FROM person
        )
        SELECT counted.people, counted.people_wrote_again,
               round(counted.people_wrote_again::numeric / nullif(counted.people, 0), 3),
               counted.people_replied, counted.people_reply_read,
               (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY first_reply_seconds) FROM rows
                WHERE first_reply_seconds IS NOT NULL)
        FROM counted
        $$
    """,
}


def upgrade() -> None:
    op.create_index("ix_ad_clicks_app_id_source_id", "ad_clicks", ["app_id", "source_id"])
    for statement in VIEWS.values():
        op.execute(statement)
    for signature, statement in FUNCTIONS.items():
        op.execute(statement)
        # Callable by the roles granted it (`ctwa migrate` grants the services' and the dashboard's), not by all.
        op.execute(f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC")


def downgrade() -> None:
    for signature in reversed(FUNCTIONS):
        op.execute(f"DROP FUNCTION {signature}")
    op.execute("DROP VIEW ad_apps")
    # ad_engagement reads reply_attribution: dropped with it, and made again as it was.
    op.execute("DROP VIEW ad_engagement")
    for name, statement in _BEFORE.items():
        op.execute(f"DROP VIEW {name}")
        op.execute(statement)
    op.execute(_ad_engagement())
    op.drop_index("ix_ad_clicks_app_id_source_id", "ad_clicks")


def _ad_engagement() -> str:
    """Migration 0003's ad_engagement, which reads reply_attribution."""
    from importlib.util import module_from_spec, spec_from_file_location
    from pathlib import Path

    spec = spec_from_file_location("ctwa_revision_0003", Path(__file__).with_name("0003_attribution.py"))
    assert spec is not None
    assert spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    definition: str = module._VIEWS["ad_engagement"]
    return definition
