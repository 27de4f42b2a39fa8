"""Analytics per app: which app each ad, click, message and conversation came through, and each figure for one app.

An ad's clicks come through the Sinch app of the WhatsApp number the ad sends people to: ``ad_apps`` lists, per ad,
the apps its clicks came through (with the app's name from ``apps``). The attribution views gain their rows' apps, as
columns added at their end (the existing columns, and so existing queries, keep their results): ``app_id`` and
``app_name`` of a message or conversation (and of a person's last click, and of a click), and the app of each touch.

An app's figures are those of its clicks (``ad_clicks.app_id``) and of the conversions attributed to them
(``conversion_events.click_app_id``): ``app_ad_report``, ``app_range_report``, ``app_daily`` and ``app_engagement``
are ``ad_report``, ``range_report``, ``performance_daily`` with ``conversions_daily``, and ``engagement_report`` for
one app, each person and conversation counted once; counted from the clicks themselves (the rollups are per ad, not
per app), an app's range reads each of its clicks in it.

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

# An app's clicks in the range ($1-$2 UTC days, app $3), read by the index on (app_id, clicked_at).
_APP_CLICKS = """
    ad_clicks.app_id = $3
    AND ad_clicks.clicked_at >= ($1::timestamp AT TIME ZONE 'UTC')
    AND ad_clicks.clicked_at < (($2 + 1)::timestamp AT TIME ZONE 'UTC')
"""
# The people new in the range whose first click ever came through the app.
_APP_NEWCOMERS = """
    person_touches AS touches JOIN ad_clicks AS first ON first.message_id = touches.first_message_id
    WHERE touches.first_day BETWEEN $1 AND $2 AND first.app_id = $3
"""
# The app's counted conversions of the range: those whose click came through it.
_APP_CONVERSIONS = f"""
    conversion_events AS event
    WHERE event.status IN {_COUNTED} AND event.click_message_id IS NOT NULL AND event.click_app_id = $3
      AND {_EVENT_DAY} BETWEEN $1 AND $2
"""


# The people of a group (``person``: one row each) and how many of them wrote again, got a reply, read it.
_ENGAGED = """
    count(*)::int, (count(*) FILTER (WHERE person.wrote_again))::int,
    round((count(*) FILTER (WHERE person.wrote_again))::numeric / nullif(count(*), 0), 3),
    (count(*) FILTER (WHERE person.replied))::int, (count(*) FILTER (WHERE person.reply_read))::int
"""


FUNCTIONS = {
    # The apps with a click, and those the apps file names (table apps): for a choice of app. Each app with a click
    # is found by one step of the index on (app_id, clicked_at).
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
    # ad_report for the app's clicks alone: per ad, its clicks through the app in the range, the people and
    # conversations they came from (each once), the people new in the range whose first click ever was that ad's
    # through the app, and the conversions whose click came through the app. Counted from the clicks themselves.
    "app_ad_report(since date, until date, app text)": f"""
        CREATE FUNCTION app_ad_report(since date, until date, app text)
        RETURNS TABLE (
            source_id text, headline text, source_type text, media_type text, clicks int, click_ids int,
            people int, new_people int, conversations int, conversions int, value jsonb, people_converted int,
            conversion_rate numeric
        )
        {_DEFINER} AS $$
        WITH app_clicks AS MATERIALIZED (
            SELECT source_id, person_key, conversation_id, ctwa_clid FROM ad_clicks WHERE {_APP_CLICKS}
        ), clicks AS (
            SELECT source_id, count(*)::int AS clicks, count(ctwa_clid)::int AS click_ids
            FROM app_clicks GROUP BY source_id
        ), people AS (
            SELECT source_id, count(*)::int AS people
            FROM (SELECT DISTINCT source_id, person_key FROM app_clicks WHERE person_key IS NOT NULL) AS person
            GROUP BY source_id
        ), talks AS (
            SELECT source_id, count(*)::int AS conversations
            FROM (
                SELECT DISTINCT source_id, conversation_id FROM app_clicks WHERE conversation_id IS NOT NULL
            ) AS talk
            GROUP BY source_id
        ), creatives AS (
            -- An ad's creative as its latest click of the range showed it: the rollup's, whichever app it came through.
            SELECT source_id,
                   (array_agg(headline ORDER BY creative_at DESC, creative_key DESC))[1] AS headline,
                   (array_agg(source_type ORDER BY creative_at DESC, creative_key DESC))[1] AS source_type,
                   (array_agg(media_type ORDER BY creative_at DESC, creative_key DESC))[1] AS media_type
            FROM ad_daily WHERE day BETWEEN $1 AND $2 GROUP BY source_id
        ), newcomers AS (
            SELECT touches.first_source_id AS source_id, count(*)::int AS new_people
            FROM {_APP_NEWCOMERS}
            GROUP BY touches.first_source_id
        ), conversions AS (
            SELECT event.click_source_id AS source_id, count(*)::int AS conversions, {_VALUE} AS value,
                   count(DISTINCT event.click_person_key)::int AS people_converted
            FROM {_APP_CONVERSIONS}
            GROUP BY event.click_source_id
        ), ads AS (
            SELECT source_id FROM clicks UNION SELECT source_id FROM conversions
        )
        SELECT ads.source_id, creatives.headline, creatives.source_type, creatives.media_type,
               coalesce(clicks.clicks, 0), coalesce(clicks.click_ids, 0),
               coalesce(people.people, 0), coalesce(newcomers.new_people, 0),
               coalesce(talks.conversations, 0), coalesce(conversions.conversions, 0),
               coalesce(conversions.value, '{{}}'), coalesce(conversions.people_converted, 0),
               round(coalesce(conversions.people_converted, 0)::numeric / nullif(people.people, 0), 3)
        FROM ads
        LEFT JOIN clicks ON clicks.source_id IS NOT DISTINCT FROM ads.source_id
        LEFT JOIN people ON people.source_id IS NOT DISTINCT FROM ads.source_id
        LEFT JOIN talks ON talks.source_id IS NOT DISTINCT FROM ads.source_id
        LEFT JOIN creatives ON creatives.source_id IS NOT DISTINCT FROM ads.source_id
        LEFT JOIN newcomers ON newcomers.source_id IS NOT DISTINCT FROM ads.source_id
        LEFT JOIN conversions ON conversions.source_id IS NOT DISTINCT FROM ads.source_id
        ORDER BY coalesce(clicks.clicks, 0) DESC, ads.source_id
        $$
    """,
    # range_report for the app's clicks alone: each person and conversation counted once over the range.
    "app_range_report(since date, until date, app text)": f"""
        CREATE FUNCTION app_range_report(since date, until date, app text)
        RETURNS TABLE (
            clicks int, click_ids int, people int, new_people int, conversations int, conversions int, value jsonb,
            people_converted int, conversion_rate numeric
        )
        {_DEFINER} AS $$
        WITH app_clicks AS MATERIALIZED (
            SELECT person_key, conversation_id, ctwa_clid FROM ad_clicks WHERE {_APP_CLICKS}
        ), clicks AS (
            SELECT count(*)::int AS clicks, count(ctwa_clid)::int AS click_ids FROM app_clicks
        ), people AS (
            SELECT count(*)::int AS people
            FROM (SELECT DISTINCT person_key FROM app_clicks WHERE person_key IS NOT NULL) AS person
        ), talks AS (
            SELECT count(*)::int AS conversations
            FROM (SELECT DISTINCT conversation_id FROM app_clicks WHERE conversation_id IS NOT NULL) AS talk
        ), newcomers AS (
            SELECT count(*)::int AS new_people FROM {_APP_NEWCOMERS}
        ), conversions AS (
            SELECT count(*)::int AS conversions, coalesce({_VALUE}, '{{}}') AS value,
                   count(DISTINCT event.click_person_key)::int AS people_converted
            FROM {_APP_CONVERSIONS}
        )
        SELECT clicks.clicks, clicks.click_ids, people.people, newcomers.new_people, talks.conversations,
               conversions.conversions, conversions.value, conversions.people_converted,
               round(conversions.people_converted::numeric / nullif(people.people, 0), 3)
        FROM clicks, people, newcomers, talks, conversions
        $$
    """,
    # performance_daily and conversions_daily for the app's clicks alone: one row per day with a click or a
    # conversion; a person who clicked twice that day counted once.
    "app_daily(since date, until date, app text)": f"""
        CREATE FUNCTION app_daily(since date, until date, app text)
        RETURNS TABLE (
            day date, clicks int, click_ids int, people int, new_people int, conversations int, conversions int,
            people_converted int, value_by_currency jsonb
        )
        {_DEFINER} AS $$
        WITH app_clicks AS MATERIALIZED (
            SELECT (clicked_at AT TIME ZONE 'UTC')::date AS day, person_key, conversation_id, ctwa_clid
            FROM ad_clicks WHERE {_APP_CLICKS}
        ), clicks AS (
            SELECT day, count(*)::int AS clicks, count(ctwa_clid)::int AS click_ids FROM app_clicks GROUP BY day
        ), people AS (
            SELECT day, count(*)::int AS people
            FROM (SELECT DISTINCT day, person_key FROM app_clicks WHERE person_key IS NOT NULL) AS person
            GROUP BY day
        ), talks AS (
            SELECT day, count(*)::int AS conversations
            FROM (SELECT DISTINCT day, conversation_id FROM app_clicks WHERE conversation_id IS NOT NULL) AS talk
            GROUP BY day
        ), newcomers AS (
            SELECT touches.first_day AS day, count(*)::int AS new_people FROM {_APP_NEWCOMERS} GROUP BY 1
        ), converted AS (
            SELECT {_EVENT_DAY} AS day, count(*)::int AS conversions,
                   count(DISTINCT event.click_person_key)::int AS people_converted,
                   coalesce({_VALUE}, '{{}}') AS value_by_currency
            FROM {_APP_CONVERSIONS}
            GROUP BY 1
        ), days AS (
            SELECT day FROM clicks UNION SELECT day FROM newcomers UNION SELECT day FROM converted
        )
        SELECT days.day, coalesce(clicks.clicks, 0), coalesce(clicks.click_ids, 0), coalesce(people.people, 0),
               coalesce(newcomers.new_people, 0), coalesce(talks.conversations, 0),
               coalesce(converted.conversions, 0), coalesce(converted.people_converted, 0),
               coalesce(converted.value_by_currency, '{{}}')
        FROM days
        LEFT JOIN clicks USING (day)
        LEFT JOIN people USING (day)
        LEFT JOIN talks USING (day)
        LEFT JOIN newcomers USING (day)
        LEFT JOIN converted USING (day)
        ORDER BY days.day
        $$
    """,
    # engagement_report for the app's clicks alone: the rows of ad_daily_people whose person clicked that ad through
    # the app that day, each person counted once per ad and over all, a flag if it was set on any of their rows (they
    # wrote again, got a reply, read it, after such a click); the median time to the first reply over those rows.
    "app_engagement(since date, until date, app text, per_ad boolean)": f"""
        CREATE FUNCTION app_engagement(since date, until date, app text, per_ad boolean DEFAULT true)
        RETURNS TABLE (
            total boolean, source_id text, people int, people_wrote_again int, wrote_again_rate numeric,
            people_replied int, people_reply_read int, median_seconds_to_first_reply double precision
        )
        {_DEFINER} AS $$
        WITH rows AS MATERIALIZED (
            -- A semi-join, hashed: the clicks without an ad (NULL source_id) matched by a sentinel no ad id is.
            SELECT source_id, person_key, wrote_again, replied, reply_read, first_reply_seconds
            FROM ad_daily_people AS row
            WHERE row.day BETWEEN $1 AND $2
              AND (row.day, coalesce(row.source_id, E'\\x01'), row.person_key) IN (
                  SELECT (clicked_at AT TIME ZONE 'UTC')::date, coalesce(source_id, E'\\x01'), person_key
                  FROM ad_clicks WHERE {_APP_CLICKS} AND person_key IS NOT NULL
              )
        ), everyone_people AS (
            SELECT bool_or(wrote_again) AS wrote_again, bool_or(replied) AS replied, bool_or(reply_read) AS reply_read
            FROM rows GROUP BY person_key
        ), ad_people AS (
            SELECT source_id, bool_or(wrote_again) AS wrote_again, bool_or(replied) AS replied,
                   bool_or(reply_read) AS reply_read
            FROM rows WHERE $4 GROUP BY source_id, person_key
        ), ad_medians AS (
            SELECT source_id, percentile_cont(0.5) WITHIN GROUP (ORDER BY first_reply_seconds) AS median
            FROM rows WHERE $4 AND first_reply_seconds IS NOT NULL GROUP BY source_id
        ), per_ad AS (
            SELECT person.source_id, {_ENGAGED} FROM ad_people AS person GROUP BY person.source_id
        )
        SELECT true, NULL::text, {_ENGAGED}, (
            SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY first_reply_seconds) FROM rows
        )
        FROM everyone_people AS person
        UNION ALL
        SELECT false, per_ad.*, ad_medians.median
        FROM per_ad LEFT JOIN ad_medians ON ad_medians.source_id IS NOT DISTINCT FROM per_ad.source_id
        ORDER BY 1 DESC, 2
        $$
    """,
}


def upgrade() -> None:
    op.create_index(
        "ix_ad_clicks_app_id_clicked_at",
        "ad_clicks",
        ["app_id", "clicked_at"],
        postgresql_include=["source_id", "person_key", "conversation_id", "ctwa_clid"],
    )
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
    op.drop_index("ix_ad_clicks_app_id_clicked_at", "ad_clicks")


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
