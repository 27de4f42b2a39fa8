"""Conversion events: what the business records for Meta's Conversions API, and what the sender did with each.

``conversion_events`` replaces ``conversions`` (a record "written by whatever sends them", with no sender): the
business inserts a row per conversion with plain SQL; ``ctwa conversions send`` attributes it to a click and sends
it, exactly once, writing its status back. What can never be sent is refused at insert by a trigger whose message
says why. Rows of ``conversions`` are carried over as sent events (their ``event_id``, when they had none,
``conversions:<id>``); the downgrade carries the sent events back.

``click_conversions`` now reads the sent events; ``ad_conversions_daily`` counts conversions and their value per
ad and UTC day. See docs/conversions.md and docs/analytics.md.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Meta's Conversions API for Business Messaging takes these event names and no others (error subcode 2804066).
EVENT_NAMES = (
    "Purchase",
    "LeadSubmitted",
    "InitiateCheckout",
    "AddToCart",
    "ViewContent",
    "OrderCreated",
    "OrderShipped",
    "OrderDelivered",
    "OrderCanceled",
    "OrderReturned",
    "CartAbandoned",
    "QualifiedLead",
    "RatingProvided",
    "ReviewProvided",
)
STATUSES = ("pending", "sending", "sent", "unattributed", "expired", "erased", "failed", "unconfirmed")

_NAMES = ", ".join(EVENT_NAMES)
_NAME_ARRAY = "ARRAY[" + ", ".join(f"'{name}'" for name in EVENT_NAMES) + "]"

# Refuses at insert what Meta could never take, saying why (a CHECK constraint would only name itself).
_CHECK_FUNCTION = f"""
    CREATE FUNCTION conversion_event_check() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        -- An update is checked only while the event is still to be sent (erasure rewrites the others).
        IF TG_OP = 'UPDATE' AND NEW.status <> 'pending' THEN
            RETURN NEW;
        END IF;
        IF NEW.event_id IS NULL OR NEW.event_id = '' THEN
            RAISE EXCEPTION 'conversion event: event_id is required (the id that makes a second insert a no-op)'
                USING ERRCODE = 'check_violation';
        END IF;
        IF NEW.event_name IS NULL OR NOT (NEW.event_name = ANY({_NAME_ARRAY})) THEN
            RAISE EXCEPTION 'conversion event %: event_name % is not one Meta takes for business messaging',
                NEW.event_id, coalesce(quote_literal(NEW.event_name), 'NULL')
                USING ERRCODE = 'check_violation', HINT = 'one of: {_NAMES}';
        END IF;
        IF NEW.event_time IS NULL THEN
            RAISE EXCEPTION 'conversion event %: event_time is required', NEW.event_id
                USING ERRCODE = 'check_violation';
        END IF;
        IF coalesce(NEW.contact_id, '') = '' AND coalesce(NEW.identity, '') = '' AND coalesce(NEW.ctwa_clid, '') = ''
        THEN
            RAISE EXCEPTION 'conversion event %: no person: give contact_id, or channel and identity, or ctwa_clid',
                NEW.event_id USING ERRCODE = 'check_violation';
        END IF;
        IF coalesce(NEW.identity, '') <> '' AND coalesce(NEW.channel, '') = '' THEN
            RAISE EXCEPTION 'conversion event %: identity % needs its channel (WHATSAPP, …)',
                NEW.event_id, quote_literal(NEW.identity) USING ERRCODE = 'check_violation';
        END IF;
        IF NEW.currency IS NOT NULL AND NEW.currency !~ '^[A-Z]{{3}}$' THEN
            RAISE EXCEPTION 'conversion event %: currency % is not an ISO 4217 code (three capital letters)',
                NEW.event_id, quote_literal(NEW.currency) USING ERRCODE = 'check_violation';
        END IF;
        IF NEW.value < 0 OR NEW.value IN ('NaN', 'Infinity') THEN
            RAISE EXCEPTION 'conversion event %: value % is not a number of at least 0', NEW.event_id, NEW.value
                USING ERRCODE = 'check_violation';
        END IF;
        IF NEW.value IS NOT NULL AND NEW.currency IS NULL THEN
            RAISE EXCEPTION 'conversion event %: value % needs its currency', NEW.event_id, NEW.value
                USING ERRCODE = 'check_violation';
        END IF;
        IF NEW.custom_data IS NOT NULL AND jsonb_typeof(NEW.custom_data) <> 'object' THEN
            RAISE EXCEPTION 'conversion event %: custom_data must be a JSON object', NEW.event_id
                USING ERRCODE = 'check_violation';
        END IF;
        NEW.contact_id := nullif(NEW.contact_id, '');
        NEW.channel := nullif(NEW.channel, '');
        NEW.identity := nullif(NEW.identity, '');
        NEW.ctwa_clid := nullif(NEW.ctwa_clid, '');
        RETURN NEW;
    END
    $$
"""
_TRIGGER = """
    CREATE TRIGGER conversion_event_check
    BEFORE INSERT OR UPDATE OF event_id, event_name, event_time, contact_id, channel, identity, ctwa_clid, value,
        currency, custom_data
    ON conversion_events FOR EACH ROW EXECUTE FUNCTION conversion_event_check()
"""

_CLICK_CONVERSIONS = """
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
"""

# Conversions per ad and UTC day of the event: those the sender attributed to one of the ad's clicks (whether
# Meta took them or not: failed ones are left out), the people they came from, and their value per currency (a
# currency whose events carry no value has no key; `{}` when none has one). One pass over the events, so that a
# range of days reads only those days' events: the sub-select's aggregates belong to the outer group, so it sums
# that ad and day's own events per currency.
_AD_CONVERSIONS_DAILY = """
    CREATE VIEW ad_conversions_daily AS
    SELECT attributed.day, attributed.source_id,
           count(*)::int AS conversions,
           count(DISTINCT attributed.person_key)::int AS people_converted,
           (
               SELECT coalesce(jsonb_object_agg(currency, value), '{}')
               FROM (
                   SELECT currency, sum(value) AS value
                   FROM unnest(array_agg(attributed.currency), array_agg(attributed.value)) AS event(currency, value)
                   WHERE value IS NOT NULL
                   GROUP BY currency
               ) AS per_currency
           ) AS value_by_currency
    FROM (
        SELECT (event.event_time AT TIME ZONE 'UTC')::date AS day, click.source_id, click.person_key,
               event.currency, event.value
        FROM conversion_events AS event
        JOIN ad_clicks AS click ON click.message_id = event.click_message_id
        WHERE event.status IN ('pending', 'sending', 'sent', 'unconfirmed')
    ) AS attributed
    GROUP BY attributed.day, attributed.source_id
"""

_CLICK_CONVERSIONS_0003 = """
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
"""


def upgrade() -> None:
    op.create_table(
        "conversion_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False, comment="the business's id of the conversion; unique"),
        sa.Column("event_name", sa.Text(), nullable=False, comment="one of Meta's 14: Purchase, LeadSubmitted, …"),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False, comment="when the conversion happened"),
        sa.Column("contact_id", sa.Text(), nullable=True, comment="the person, as a Sinch contact id"),
        sa.Column("channel", sa.Text(), nullable=True, comment="the person, as a channel identity: its channel"),
        sa.Column("identity", sa.Text(), nullable=True, comment="… and its identity (a phone number)"),
        sa.Column("ctwa_clid", sa.Text(), nullable=True, comment="the click, when the business knows it"),
        sa.Column("value", sa.Numeric(), nullable=True, comment="in currency units, not cents"),
        sa.Column("currency", sa.Text(), nullable=True, comment="ISO 4217"),
        sa.Column("custom_data", postgresql.JSONB(astext_type=sa.Text()), nullable=True, comment="sent as is"),
        sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False, comment="see docs/conversions.md"),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False, comment="requests it was in"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True, comment="sending: since when"),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True, comment="when Meta counted it"),
        sa.Column("sent_ctwa_clid", sa.Text(), nullable=True, comment="the click id it was sent with"),
        sa.Column("click_message_id", sa.Text(), nullable=True, comment="the click it was attributed to, if known"),
        sa.Column("fbtrace_id", sa.Text(), nullable=True, comment="Meta's trace id of its request"),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_subcode", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True, comment="why it is failed, unconfirmed or retried"),
        sa.CheckConstraint(
            "status IN (" + ", ".join(f"'{status}'" for status in STATUSES) + ")",
            name=op.f("ck_conversion_events_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversion_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_conversion_events_event_id")),
    )
    op.create_index(
        "ix_conversion_events_sendable",
        "conversion_events",
        ["next_attempt_at", "id"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'unattributed')"),
    )
    op.create_index(op.f("ix_conversion_events_status"), "conversion_events", ["status"], unique=False)
    op.create_index(op.f("ix_conversion_events_contact_id"), "conversion_events", ["contact_id"], unique=False)
    op.create_index(
        op.f("ix_conversion_events_channel_identity"), "conversion_events", ["channel", "identity"], unique=False
    )
    op.create_index(
        op.f("ix_conversion_events_click_message_id"), "conversion_events", ["click_message_id"], unique=False
    )
    op.create_index(op.f("ix_conversion_events_event_time"), "conversion_events", ["event_time"], unique=False)
    op.create_table(
        "conversion_sender",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("parked_reason", sa.Text(), nullable=True, comment="why the senders stopped sending, if they did"),
        sa.Column("parked_code", sa.Integer(), nullable=True, comment="Meta's error code that parked them"),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_request_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_conversion_sender_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversion_sender")),
    )
    op.execute("INSERT INTO conversion_sender (id) VALUES (1)")
    op.execute(
        """
        INSERT INTO conversion_events (event_id, event_name, event_time, ctwa_clid, value, currency, recorded_at,
                                       status, sent_at, sent_ctwa_clid, click_message_id)
        SELECT coalesce(event_id, 'conversions:' || id), event_name, event_time, ctwa_clid, value, currency,
               reported_at, 'sent', reported_at, ctwa_clid,
               (SELECT message_id FROM ad_clicks WHERE ad_clicks.ctwa_clid = conversions.ctwa_clid
                ORDER BY clicked_at, message_id LIMIT 1)
        FROM conversions ORDER BY id
        """
    )
    op.execute(_CHECK_FUNCTION)
    op.execute(_TRIGGER)
    op.execute("DROP VIEW click_conversions")
    op.drop_index(op.f("ix_conversions_ctwa_clid"), table_name="conversions")
    op.drop_table("conversions")
    op.execute(_CLICK_CONVERSIONS)
    op.execute(_AD_CONVERSIONS_DAILY)


def downgrade() -> None:
    op.execute("DROP VIEW ad_conversions_daily")
    op.execute("DROP VIEW click_conversions")
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
    op.execute(
        """
        INSERT INTO conversions (ctwa_clid, event_name, event_time, event_id, value, currency, reported_at)
        SELECT sent_ctwa_clid, event_name, event_time, event_id, value, currency, sent_at
        FROM conversion_events WHERE status = 'sent' AND sent_ctwa_clid IS NOT NULL ORDER BY id
        """
    )
    op.execute(_CLICK_CONVERSIONS_0003)
    op.drop_table("conversion_sender")
    op.drop_table("conversion_events")
    op.execute("DROP FUNCTION conversion_event_check()")
