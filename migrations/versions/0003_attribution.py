"""Attribution: person keys, rollups, the attribution window, and the analytics views (docs/analytics.md).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Who a row is about: the contact when the callback named one, else its channel identity.
_PERSON_KEY = (
    "CASE WHEN contact_id IS NOT NULL THEN 'contact:' || contact_id "
    "WHEN identity IS NOT NULL THEN 'identity:' || coalesce(channel, '') || ':' || identity END"
)

_VIEWS = {
    # The one place the attribution window is set. To change it:
    #   CREATE OR REPLACE FUNCTION attribution_window() RETURNS interval
    #   LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT interval '14 days' $$;
    "attribution_window": """
        CREATE FUNCTION attribution_window() RETURNS interval
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT interval '7 days' $$
    """,
    # One row per ad per UTC day. The rollups are stacked and summed rather than joined, so a range of days
    # reads only the index ranges of those days.
    "ad_performance_daily": """
        CREATE VIEW ad_performance_daily AS
        SELECT day, source_id,
               max(headline) AS headline, max(source_type) AS source_type, max(media_type) AS media_type,
               sum(clicks)::int AS clicks, sum(click_ids)::int AS click_ids, sum(people)::int AS people,
               sum(new_people)::int AS new_people, sum(conversations)::int AS conversations
        FROM (
            SELECT day, source_id, headline, source_type, media_type, clicks, click_ids,
                   0 AS people, 0 AS new_people, 0 AS conversations
            FROM ad_daily
            UNION ALL
            SELECT day, source_id, NULL, NULL, NULL, 0, 0, 1, 0, 0 FROM ad_daily_people
            UNION ALL
            SELECT first_day, first_source_id, NULL, NULL, NULL, 0, 0, 0, 1, 0 FROM person_touches
            UNION ALL
            SELECT day, source_id, NULL, NULL, NULL, 0, 0, 0, 0, 1 FROM ad_daily_conversations
        ) AS counted
        GROUP BY day, source_id
    """,
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
    "message_attribution": """
        CREATE VIEW message_attribution AS
        SELECT message.message_id, message.person_key, message.sent_at, message.conversation_id,
               first_touch.message_id AS first_touch_message_id,
               first_touch.source_id AS first_touch_source_id,
               first_touch.clicked_at AS first_touch_clicked_at,
               last_touch.message_id AS last_touch_message_id,
               last_touch.source_id AS last_touch_source_id,
               last_touch.clicked_at AS last_touch_clicked_at
        FROM messages AS message
        LEFT JOIN LATERAL (
            SELECT message_id, source_id, clicked_at FROM ad_clicks AS click
            WHERE click.person_key = message.person_key
              AND click.clicked_at <= message.sent_at
              AND click.clicked_at >= message.sent_at - attribution_window()
            ORDER BY clicked_at, message_id LIMIT 1
        ) AS first_touch ON true
        LEFT JOIN LATERAL (
            SELECT message_id, source_id, clicked_at FROM ad_clicks AS click
            WHERE click.person_key = message.person_key
              AND click.clicked_at <= message.sent_at
              AND click.clicked_at >= message.sent_at - attribution_window()
            ORDER BY clicked_at DESC, message_id DESC LIMIT 1
        ) AS last_touch ON true
    """,
    "conversation_attribution": """
        CREATE VIEW conversation_attribution AS
        SELECT conversation.conversation_id, 'contact:' || conversation.contact_id AS person_key,
               conversation.started_at,
               first_touch.message_id AS first_touch_message_id,
               first_touch.source_id AS first_touch_source_id,
               first_touch.clicked_at AS first_touch_clicked_at,
               last_touch.message_id AS last_touch_message_id,
               last_touch.source_id AS last_touch_source_id,
               last_touch.clicked_at AS last_touch_clicked_at
        FROM conversations AS conversation
        LEFT JOIN LATERAL (
            SELECT message_id, source_id, clicked_at FROM ad_clicks AS click
            WHERE click.person_key = 'contact:' || conversation.contact_id
              AND click.clicked_at <= conversation.started_at
              AND click.clicked_at >= conversation.started_at - attribution_window()
            ORDER BY clicked_at, message_id LIMIT 1
        ) AS first_touch ON true
        LEFT JOIN LATERAL (
            SELECT message_id, source_id, clicked_at FROM ad_clicks AS click
            WHERE click.person_key = 'contact:' || conversation.contact_id
              AND click.clicked_at <= conversation.started_at
              AND click.clicked_at >= conversation.started_at - attribution_window()
            ORDER BY clicked_at DESC, message_id DESC LIMIT 1
        ) AS last_touch ON true
        WHERE conversation.contact_id IS NOT NULL AND conversation.started_at IS NOT NULL
    """,
    "reply_attribution": """
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
        LEFT JOIN LATERAL (
            SELECT message_id, source_id, clicked_at FROM ad_clicks AS click
            WHERE click.person_key = reply.person_key
              AND click.clicked_at <= reply.first_reported_at
              AND click.clicked_at >= reply.first_reported_at - attribution_window()
            ORDER BY clicked_at DESC, message_id DESC LIMIT 1
        ) AS last_touch ON true
    """,
    "ad_engagement": """
        CREATE VIEW ad_engagement AS
        WITH click AS (
            SELECT source_id, person_key, message_id, clicked_at,
                   EXISTS (
                       SELECT 1 FROM messages AS later
                       WHERE later.person_key = ad_clicks.person_key
                         AND later.sent_at > ad_clicks.clicked_at
                         AND later.sent_at <= ad_clicks.clicked_at + attribution_window()
                         AND later.message_id <> ad_clicks.message_id
                   ) AS wrote_again,
                   (
                       SELECT min(reply.reported_at) FROM delivery_reports AS reply
                       WHERE reply.person_key = ad_clicks.person_key
                         AND reply.reported_at >= ad_clicks.clicked_at
                         AND reply.reported_at <= ad_clicks.clicked_at + attribution_window()
                   ) - clicked_at AS first_reply_after
            FROM ad_clicks WHERE person_key IS NOT NULL
        ), per_ad AS (
            SELECT source_id, count(*) AS clicks, count(DISTINCT person_key) AS people,
                   count(DISTINCT person_key) FILTER (WHERE wrote_again) AS people_wrote_again,
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM first_reply_after))
                       FILTER (WHERE first_reply_after IS NOT NULL) AS median_seconds_to_first_reply
            FROM click GROUP BY source_id
        ), replies AS (
            SELECT last_touch_source_id AS source_id, count(*) AS replies,
                   count(*) FILTER (WHERE status IN ('DELIVERED', 'READ')) AS replies_delivered,
                   count(*) FILTER (WHERE status = 'READ') AS replies_read
            FROM reply_attribution WHERE last_touch_message_id IS NOT NULL GROUP BY last_touch_source_id
        )
        SELECT per_ad.*, coalesce(replies.replies, 0) AS replies,
               coalesce(replies.replies_delivered, 0) AS replies_delivered,
               coalesce(replies.replies_read, 0) AS replies_read,
               replies.replies_delivered::numeric / nullif(replies.replies, 0) AS delivered_rate,
               replies.replies_read::numeric / nullif(replies.replies, 0) AS read_rate
        FROM per_ad LEFT JOIN replies ON replies.source_id IS NOT DISTINCT FROM per_ad.source_id
    """,
    "creative_performance": """
        CREATE VIEW creative_performance AS
        SELECT source_type, media_type, headline, count(*) AS clicks, count(DISTINCT person_key) AS people,
               count(DISTINCT source_id) AS ads, count(ctwa_clid) AS click_ids
        FROM ad_clicks GROUP BY source_type, media_type, headline
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
            SELECT ctwa_clid, count(*) AS conversions, max(reported_at) AS last_reported_at
            FROM conversions GROUP BY ctwa_clid
        ) AS reported USING (ctwa_clid)
        WHERE click.ctwa_clid IS NOT NULL
    """,
}

# Clicks archived before this revision: their rollups, as the workers would have kept them.
_BACKFILL = [
    """
    INSERT INTO ad_daily (day, source_id, clicks, click_ids, headline, source_type, media_type, creative_at,
                          creative_key)
    SELECT DISTINCT ON (day, source_id) day, source_id, count(*) OVER same, count(ctwa_clid) OVER same,
           headline, source_type, media_type, clicked_at, message_id
    FROM (SELECT *, (clicked_at AT TIME ZONE 'UTC')::date AS day FROM ad_clicks) AS click
    WINDOW same AS (PARTITION BY day, source_id)
    ORDER BY day, source_id, clicked_at DESC, message_id DESC
    """,
    """
    INSERT INTO ad_daily_people (day, source_id, person_key)
    SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, source_id, person_key
    FROM ad_clicks WHERE person_key IS NOT NULL
    """,
    """
    INSERT INTO ad_daily_conversations (day, source_id, conversation_id)
    SELECT DISTINCT (clicked_at AT TIME ZONE 'UTC')::date, source_id, conversation_id
    FROM ad_clicks WHERE conversation_id IS NOT NULL
    """,
    """
    INSERT INTO person_touches
    SELECT first.person_key, first.contact_id, last.channel, last.identity, counted.clicks,
           first.message_id, first.source_id, first.headline, first.clicked_at,
           (first.clicked_at AT TIME ZONE 'UTC')::date,
           last.message_id, last.source_id, last.headline, last.clicked_at
    FROM (
        SELECT DISTINCT ON (person_key) * FROM ad_clicks WHERE person_key IS NOT NULL
        ORDER BY person_key, clicked_at, message_id
    ) AS first
    JOIN (
        SELECT DISTINCT ON (person_key) * FROM ad_clicks WHERE person_key IS NOT NULL
        ORDER BY person_key, clicked_at DESC, message_id DESC
    ) AS last USING (person_key)
    JOIN (
        SELECT person_key, count(*)::int AS clicks FROM ad_clicks WHERE person_key IS NOT NULL GROUP BY person_key
    ) AS counted USING (person_key)
    """,
]


# The tables that get a person_key column, each with its index.
_PERSON_KEY_INDEXES = {
    "ad_clicks": ["person_key", "clicked_at", "message_id"],
    "delivery_reports": ["person_key", "reported_at"],
    "messages": ["person_key", "sent_at"],
}


def upgrade() -> None:
    op.create_table(
        "ad_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column(
            "source_id", sa.Text(), nullable=True, comment="NULL for clicks whose referral names only a ctwa_clid"
        ),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("click_ids", sa.Integer(), nullable=False, comment="clicks carrying a ctwa_clid"),
        sa.Column("headline", sa.Text(), nullable=True),
        sa.Column("source_type", sa.Text(), nullable=True),
        sa.Column("media_type", sa.Text(), nullable=True),
        sa.Column("creative_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("creative_key", sa.Text(), nullable=True),
        sa.UniqueConstraint(
            "day", "source_id", name=op.f("uq_ad_daily_day_source_id"), postgresql_nulls_not_distinct=True
        ),
    )
    op.create_table(
        "ad_daily_conversations",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=True),
        sa.Column("conversation_id", sa.Text(), nullable=False),
        sa.UniqueConstraint(
            "day",
            "source_id",
            "conversation_id",
            name=op.f("uq_ad_daily_conversations_day_source_id_conversation_id"),
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_table(
        "ad_daily_people",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("source_id", sa.Text(), nullable=True),
        sa.Column("person_key", sa.Text(), nullable=False),
        sa.UniqueConstraint(
            "day",
            "source_id",
            "person_key",
            name=op.f("uq_ad_daily_people_day_source_id_person_key"),
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index(op.f("ix_ad_daily_people_person_key"), "ad_daily_people", ["person_key"], unique=False)
    op.create_table(
        "conversions",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("ctwa_clid", sa.Text(), nullable=False),
        sa.Column("event_name", sa.Text(), nullable=False, comment="LeadSubmitted, Purchase, AddToCart, …"),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=True, comment="Meta's deduplication id, when given"),
        sa.Column("value", sa.Numeric(), nullable=True),
        sa.Column("currency", sa.Text(), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversions")),
        sa.UniqueConstraint("event_id", name=op.f("uq_conversions_event_id")),
    )
    op.create_index(op.f("ix_conversions_ctwa_clid"), "conversions", ["ctwa_clid"], unique=False)
    op.create_table(
        "person_touches",
        sa.Column("person_key", sa.Text(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=True),
        sa.Column("channel", sa.Text(), nullable=True),
        sa.Column("identity", sa.Text(), nullable=True, comment="of the person's latest click"),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("first_message_id", sa.Text(), nullable=False),
        sa.Column("first_source_id", sa.Text(), nullable=True),
        sa.Column("first_headline", sa.Text(), nullable=True),
        sa.Column("first_clicked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_day", sa.Date(), nullable=False, comment="UTC day of the first click"),
        sa.Column("last_message_id", sa.Text(), nullable=False),
        sa.Column("last_source_id", sa.Text(), nullable=True),
        sa.Column("last_headline", sa.Text(), nullable=True),
        sa.Column("last_clicked_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("person_key", name=op.f("pk_person_touches")),
    )
    op.create_index(
        op.f("ix_person_touches_first_day_first_source_id"),
        "person_touches",
        ["first_day", "first_source_id"],
        unique=False,
    )
    op.create_index(op.f("ix_person_touches_last_clicked_at"), "person_touches", ["last_clicked_at"], unique=False)
    for table, columns in _PERSON_KEY_INDEXES.items():
        op.add_column(
            table,
            sa.Column(
                "person_key",
                sa.Text(),
                sa.Computed(_PERSON_KEY, persisted=True),
                nullable=True,
                comment="who: see docs/analytics.md",
            ),
        )
        op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, columns, unique=False)
    for statement in _BACKFILL:
        op.execute(statement)
    for statement in _VIEWS.values():
        op.execute(statement)


def downgrade() -> None:
    for name in reversed(_VIEWS):
        op.execute(f"DROP {'FUNCTION' if name == 'attribution_window' else 'VIEW'} {name}")
    for table, columns in reversed(_PERSON_KEY_INDEXES.items()):
        op.drop_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table_name=table)
        op.drop_column(table, "person_key")
    op.drop_index(op.f("ix_person_touches_last_clicked_at"), table_name="person_touches")
    op.drop_index(op.f("ix_person_touches_first_day_first_source_id"), table_name="person_touches")
    op.drop_table("person_touches")
    op.drop_index(op.f("ix_conversions_ctwa_clid"), table_name="conversions")
    op.drop_table("conversions")
    op.drop_index(op.f("ix_ad_daily_people_person_key"), table_name="ad_daily_people")
    op.drop_table("ad_daily_people")
    op.drop_table("ad_daily_conversations")
    op.drop_table("ad_daily")
