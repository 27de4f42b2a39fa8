"""What the dashboard reads, and what it may: every figure of a range defined once, in SQL, without a person in it.

``ad_report(since, until)`` is ``ctwa report``'s per-ad figures over a range of UTC days (people, conversations and
people converted counted once over the range); ``range_report(since, until)`` the same over all ads together;
``engagement_report(since, until)`` what the people an ad brought did next (wrote again, got a reply, how soon),
per ad and over all; ``ad_creatives(since, until, ad)`` an ad's creatives as its clicks showed them. They read the
rollups and the tables, whose person keys may hold phone numbers, and return counts only: they run with their
owner's rights (``SECURITY DEFINER``), so that a role that may read nothing personal — the dashboard's, created by
``ctwa migrate`` — may still call them. ``performance_daily`` and ``conversions_daily`` are ``ad_performance_daily``
and ``ad_conversions_daily`` for all ads together (a person who clicked two ads that day is one person);
``conversion_overview`` is the senders' state in one row; ``ingest_freshness`` when the newest callback was stored.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# The statuses ad_conversions_daily counts (migration 0006): attributed, and sent or on their way to Meta.
_COUNTED = "('pending', 'sending', 'sent', 'unconfirmed')"

# A range's events and their value per currency: one pass over the events, the value summed per currency as
# ad_conversions_daily sums a day's (the sub-select's aggregates are the outer group's).
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

# Functions of a range run with their owner's rights, on the schema's own objects only, and without JIT: their
# plans cross Postgres's JIT threshold at about a million clicks, and compiling them took 60-150 ms that running
# them never won back (docs/performance.md).
_DEFINER = "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp SET jit = off"

VIEWS = {
    "performance_daily": """
        CREATE VIEW performance_daily AS
        SELECT day, sum(clicks)::int AS clicks, sum(click_ids)::int AS click_ids, sum(people)::int AS people,
               sum(new_people)::int AS new_people, sum(conversations)::int AS conversations
        FROM (
            SELECT day, clicks, click_ids, 0 AS people, 0 AS new_people, 0 AS conversations FROM ad_daily
            UNION ALL
            SELECT day, 0, 0, 1, 0, 0 FROM (SELECT DISTINCT day, person_key FROM ad_daily_people) AS person
            UNION ALL
            SELECT first_day, 0, 0, 0, 1, 0 FROM person_touches
            UNION ALL
            SELECT day, 0, 0, 0, 0, 1 FROM (SELECT DISTINCT day, conversation_id FROM ad_daily_conversations) AS talk
        ) AS counted
        GROUP BY day
    """,
    "conversions_daily": f"""
        CREATE VIEW conversions_daily AS
        SELECT (event.event_time AT TIME ZONE 'UTC')::date AS day, count(*)::int AS conversions,
               count(DISTINCT click.person_key)::int AS people_converted,
               coalesce({_VALUE}, '{{}}') AS value_by_currency
        FROM conversion_events AS event
        JOIN ad_clicks AS click ON click.message_id = event.click_message_id
        WHERE event.status IN {_COUNTED}
        GROUP BY 1
    """,
    "conversion_overview": """
        CREATE VIEW conversion_overview AS
        SELECT (
                   SELECT coalesce(jsonb_object_agg(status, events), '{}')
                   FROM (SELECT status, count(*) AS events FROM conversion_events GROUP BY status) AS counted
               ) AS events,
               oldest.event_id AS oldest_pending_event_id, oldest.event_time AS oldest_pending_event_time,
               sender.parked_reason, sender.parked_code, sender.parked_at, sender.last_request_at,
               sender.last_success_at
        FROM (SELECT 1) AS one
        LEFT JOIN LATERAL (
            SELECT event_id, event_time FROM conversion_events WHERE status = 'pending'
            ORDER BY event_time, id LIMIT 1
        ) AS oldest ON true
        LEFT JOIN conversion_sender AS sender ON sender.id = 1
    """,
    "ingest_freshness": """
        CREATE VIEW ingest_freshness AS
        SELECT (SELECT archived_at FROM callbacks ORDER BY id DESC LIMIT 1) AS newest_stored_at
    """,
}

FUNCTIONS = {
    # Ad performance over a range of UTC days: people, conversations and people converted counted once over the
    # whole range; a new person is one whose first click ever falls in it. An ad is in it for its clicks or for its
    # conversions (on the UTC day of the conversion, whenever the click was). The conversions are filtered on the
    # view's day, unindexed: without statistics on the day the planner looks up each event's click rather than
    # hash all of ad_clicks (docs/performance.md).
    "ad_report(since date, until date)": f"""
        CREATE FUNCTION ad_report(since date, until date)
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
            FROM (SELECT DISTINCT source_id, person_key FROM ad_daily_people WHERE day BETWEEN $1 AND $2) AS d
            GROUP BY source_id
        ), newcomers AS (
            SELECT first_source_id AS source_id, count(*)::int AS new_people
            FROM person_touches WHERE first_day BETWEEN $1 AND $2 GROUP BY first_source_id
        ), talks AS (
            SELECT source_id, count(*)::int AS conversations
            FROM (
                SELECT DISTINCT source_id, conversation_id FROM ad_daily_conversations WHERE day BETWEEN $1 AND $2
            ) AS d
            GROUP BY source_id
        ), conversions AS (
            SELECT click.source_id, count(*)::int AS conversions, {_VALUE} AS value,
                   count(DISTINCT click.person_key)::int AS people_converted
            FROM conversion_events AS event
            JOIN ad_clicks AS click ON click.message_id = event.click_message_id
            WHERE (event.event_time AT TIME ZONE 'UTC')::date BETWEEN $1 AND $2 AND event.status IN {_COUNTED}
            GROUP BY click.source_id
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
    # The same over all ads together: a person who clicked two ads in the range is one person.
    "range_report(since date, until date)": f"""
        CREATE FUNCTION range_report(since date, until date)
        RETURNS TABLE (
            clicks int, click_ids int, people int, new_people int, conversations int, conversions int, value jsonb,
            people_converted int, conversion_rate numeric
        )
        {_DEFINER} AS $$
        WITH clicks AS (
            SELECT coalesce(sum(clicks), 0)::int AS clicks, coalesce(sum(click_ids), 0)::int AS click_ids
            FROM ad_daily WHERE day BETWEEN $1 AND $2
        ), people AS (
            SELECT count(DISTINCT person_key)::int AS people FROM ad_daily_people WHERE day BETWEEN $1 AND $2
        ), newcomers AS (
            SELECT count(*)::int AS new_people FROM person_touches WHERE first_day BETWEEN $1 AND $2
        ), talks AS (
            SELECT count(DISTINCT conversation_id)::int AS conversations
            FROM ad_daily_conversations WHERE day BETWEEN $1 AND $2
        ), conversions AS (
            SELECT count(*)::int AS conversions, coalesce({_VALUE}, '{{}}') AS value,
                   count(DISTINCT click.person_key)::int AS people_converted
            FROM conversion_events AS event
            JOIN ad_clicks AS click ON click.message_id = event.click_message_id
            WHERE (event.event_time AT TIME ZONE 'UTC')::date BETWEEN $1 AND $2 AND event.status IN {_COUNTED}
        )
        SELECT clicks.clicks, clicks.click_ids, people.people, newcomers.new_people, talks.conversations,
               conversions.conversions, conversions.value, conversions.people_converted,
               round(conversions.people_converted::numeric / nullif(people.people, 0), 3)
        FROM clicks, people, newcomers, talks, conversions
        $$
    """,
    # What the people an ad's clicks in the range brought did next, per ad and (total) over all ads together — each
    # person counted once: wrote again within the attribution window after a click (a message of theirs other than
    # the click's own), got a reply within it that was delivered (or read), and how long after a click its first
    # reply came (the median over clicks with one). And the replies of the range (by their first report's UTC day)
    # whose last touch was the ad: how many, delivered, read — as ad_engagement counts them over all time.
    "engagement_report(since date, until date)": f"""
        CREATE FUNCTION engagement_report(since date, until date)
        RETURNS TABLE (
            total boolean, source_id text, people int, people_wrote_again int, wrote_again_rate numeric,
            people_replied int, people_reply_read int, median_seconds_to_first_reply double precision, replies int,
            replies_delivered int, replies_read int
        )
        {_DEFINER} AS $$
        WITH click AS (
            SELECT click.source_id, click.person_key,
                   EXISTS (
                       SELECT 1 FROM messages AS later
                       WHERE later.person_key = click.person_key
                         AND later.sent_at > click.clicked_at
                         AND later.sent_at <= click.clicked_at + attribution_window()
                         AND later.message_id <> click.message_id
                   ) AS wrote_again,
                   reply.first_reported_at - click.clicked_at AS first_reply_after,
                   coalesce(reply.delivered, false) AS replied,
                   coalesce(reply.read, false) AS reply_read
            FROM ad_clicks AS click
            LEFT JOIN LATERAL (
                SELECT min(report.reported_at) AS first_reported_at,
                       bool_or(report.status IN ('DELIVERED', 'READ')) AS delivered,
                       bool_or(report.status = 'READ') AS read
                FROM (
                    -- Each reply's status as message_status has it, looked up by the reply's id: a sub-select,
                    -- so that the view is read for that id only (joined, it was read whole for every click).
                    SELECT report.reported_at,
                           (SELECT status FROM message_status WHERE message_status.message_id = report.message_id)
                               AS status
                    FROM delivery_reports AS report
                    WHERE report.person_key = click.person_key
                      AND report.reported_at >= click.clicked_at
                      AND report.reported_at <= click.clicked_at + attribution_window()
                ) AS report
            ) AS reply ON true
            WHERE click.person_key IS NOT NULL
              AND click.clicked_at >= ($1::timestamp AT TIME ZONE 'UTC')
              AND click.clicked_at < (($2 + 1)::timestamp AT TIME ZONE 'UTC')
        ), engaged AS (
            SELECT GROUPING(source_id) = 1 AS total, source_id,
                   count(DISTINCT person_key)::int AS people,
                   count(DISTINCT person_key) FILTER (WHERE wrote_again)::int AS people_wrote_again,
                   count(DISTINCT person_key) FILTER (WHERE replied)::int AS people_replied,
                   count(DISTINCT person_key) FILTER (WHERE reply_read)::int AS people_reply_read,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM first_reply_after))
                       AS median_seconds_to_first_reply
            FROM click GROUP BY GROUPING SETS ((source_id), ())
        ), replied AS (
            SELECT GROUPING(last_touch_source_id) = 1 AS total, last_touch_source_id AS source_id,
                   count(*)::int AS replies,
                   count(*) FILTER (WHERE status IN ('DELIVERED', 'READ'))::int AS replies_delivered,
                   count(*) FILTER (WHERE status = 'READ')::int AS replies_read
            FROM reply_attribution
            -- The replies reported in the range, by id: the view then reads only theirs.
            WHERE message_id = ANY (ARRAY(
                SELECT DISTINCT message_id FROM delivery_reports
                WHERE reported_at >= ($1::timestamp AT TIME ZONE 'UTC')
                  AND reported_at < (($2 + 1)::timestamp AT TIME ZONE 'UTC')
            ))
              AND last_touch_message_id IS NOT NULL
              AND (first_reported_at AT TIME ZONE 'UTC')::date BETWEEN $1 AND $2
            GROUP BY GROUPING SETS ((last_touch_source_id), ())
        )
        SELECT coalesce(engaged.total, replied.total), coalesce(engaged.source_id, replied.source_id),
               coalesce(engaged.people, 0), coalesce(engaged.people_wrote_again, 0),
               round(engaged.people_wrote_again::numeric / nullif(engaged.people, 0), 3),
               coalesce(engaged.people_replied, 0), coalesce(engaged.people_reply_read, 0),
               engaged.median_seconds_to_first_reply, coalesce(replied.replies, 0),
               coalesce(replied.replies_delivered, 0), coalesce(replied.replies_read, 0)
        FROM engaged FULL JOIN replied
        ON replied.total = engaged.total AND replied.source_id IS NOT DISTINCT FROM engaged.source_id
        ORDER BY 1 DESC, 2
        $$
    """,
    # An ad's creatives as its clicks in the range showed them: each headline, text, media and link, with its clicks
    # and people.
    "ad_creatives(since date, until date, ad text)": f"""
        CREATE FUNCTION ad_creatives(since date, until date, ad text)
        RETURNS TABLE (
            headline text, body text, source_type text, media_type text, image_url text, video_url text,
            thumbnail_url text, source_url text, clicks int, people int, first_clicked_at timestamptz,
            last_clicked_at timestamptz
        )
        {_DEFINER} AS $$
        SELECT headline, body, source_type, media_type, image_url, video_url, thumbnail_url, source_url,
               count(*)::int, count(DISTINCT person_key)::int, min(clicked_at), max(clicked_at)
        FROM ad_clicks
        WHERE source_id = $3
          AND clicked_at >= ($1::timestamp AT TIME ZONE 'UTC')
          AND clicked_at < (($2 + 1)::timestamp AT TIME ZONE 'UTC')
        GROUP BY headline, body, source_type, media_type, image_url, video_url, thumbnail_url, source_url
        ORDER BY count(*) DESC, max(clicked_at) DESC
        $$
    """,
}


def upgrade() -> None:
    for statement in VIEWS.values():
        op.execute(statement)
    for signature, statement in FUNCTIONS.items():
        op.execute(statement)
        # Callable by the roles granted it (`ctwa migrate` grants the services' and the dashboard's), not by all.
        op.execute(f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC")


def downgrade() -> None:
    for signature in FUNCTIONS:
        op.execute(f"DROP FUNCTION {signature.split('(')[0]}")
    for name in VIEWS:
        op.execute(f"DROP VIEW {name}")
