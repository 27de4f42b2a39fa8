"""Projections: contacts, identities, conversations, messages, ad clicks, delivery reports, merges, erasure.

Also the ``message_status`` view, the erasure key, and on ``callbacks`` the contact ids and channel identity each
callback names (filled in for callbacks archived before this revision).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Each message's current status: FAILED is terminal, then READ over DELIVERED over QUEUED_ON_CHANNEL; unknown
# statuses rank lowest. Reports may come in any order: the status never moves backwards.
_MESSAGE_STATUS = """
CREATE VIEW message_status AS
SELECT DISTINCT ON (message_id)
    message_id,
    status,
    reported_at AS status_at,
    app_id,
    channel,
    identity,
    contact_id,
    conversation_id,
    reason_code
FROM delivery_reports
ORDER BY
    message_id,
    CASE status
        WHEN 'FAILED' THEN 5
        WHEN 'READ' THEN 4
        WHEN 'DELIVERED' THEN 3
        WHEN 'QUEUED_ON_CHANNEL' THEN 2
        WHEN 'SWITCHING_CHANNEL' THEN 1
        ELSE 0
    END DESC,
    reported_at DESC,
    status
"""

_BACKFILL_SUBJECTS = """
UPDATE callbacks SET
    contact_ids = (
        SELECT array_agg(DISTINCT value #>> '{}' ORDER BY value #>> '{}')
        FROM (
            SELECT jsonb_path_query(payload, '$.*.contact_id') AS value
            UNION ALL SELECT jsonb_path_query(payload, '$.*.conversation.contact_id')
            UNION ALL SELECT jsonb_path_query(payload, '$.*.contact.id')
            UNION ALL SELECT jsonb_path_query(payload, '$.*.preserved_contact.id')
            UNION ALL SELECT jsonb_path_query(payload, '$.*.deleted_contact.id')
        ) AS found
        WHERE jsonb_typeof(value) = 'string' AND value #>> '{}' <> ''
    ),
    identity = (
        SELECT value #>> '{}'
        FROM (
            SELECT jsonb_path_query(payload, '$.*.channel_identity.identity') AS value
            UNION ALL SELECT jsonb_path_query(payload, '$.*.identity')
        ) AS found
        WHERE jsonb_typeof(value) = 'string' AND value #>> '{}' <> ''
        LIMIT 1
    )
"""


def upgrade() -> None:
    op.create_table(
        "ad_clicks",
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("ctwa_clid", sa.Text(), nullable=True),
        sa.Column("source_id", sa.Text(), nullable=True),
        sa.Column("source_type", sa.Text(), nullable=True),
        sa.Column("source_url", sa.Text(), nullable=True),
        sa.Column("headline", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("media_type", sa.Text(), nullable=True),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("video_url", sa.Text(), nullable=True),
        sa.Column("thumbnail_url", sa.Text(), nullable=True),
        sa.Column("welcome_text", sa.Text(), nullable=True),
        sa.Column("app_id", sa.Text(), nullable=True),
        sa.Column("channel", sa.Text(), nullable=True),
        sa.Column("identity", sa.Text(), nullable=True),
        sa.Column("contact_id", sa.Text(), nullable=True),
        sa.Column("conversation_id", sa.Text(), nullable=True),
        sa.Column("clicked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("referral", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_ad_clicks")),
    )
    op.create_index(op.f("ix_ad_clicks_channel_identity"), "ad_clicks", ["channel", "identity"], unique=False)
    op.create_index(op.f("ix_ad_clicks_clicked_at"), "ad_clicks", ["clicked_at"], unique=False)
    op.create_index(op.f("ix_ad_clicks_contact_id"), "ad_clicks", ["contact_id"], unique=False)
    op.create_index(op.f("ix_ad_clicks_ctwa_clid"), "ad_clicks", ["ctwa_clid"], unique=False)
    op.create_index(op.f("ix_ad_clicks_source_id_clicked_at"), "ad_clicks", ["source_id", "clicked_at"], unique=False)
    op.create_table(
        "channel_identities",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column(
            "identity", sa.Text(), nullable=False, comment="phone number or app-scoped id; erased:<contact> once erased"
        ),
        sa.Column(
            "app_id",
            sa.Text(),
            nullable=True,
            comment="the channel's app, for app-scoped channels (Messenger, Instagram)",
        ),
        sa.Column("contact_id", sa.Text(), nullable=True, comment="NULL when known only in DISPATCH mode"),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("contact_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("contact_key", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_identities")),
        sa.UniqueConstraint(
            "channel",
            "identity",
            "app_id",
            name=op.f("uq_channel_identities_channel_identity_app_id"),
            postgresql_nulls_not_distinct=True,
        ),
    )
    op.create_index(op.f("ix_channel_identities_contact_id"), "channel_identities", ["contact_id"], unique=False)
    op.create_index(op.f("ix_channel_identities_identity"), "channel_identities", ["identity"], unique=False)
    op.create_table(
        "contact_merges",
        sa.Column("deleted_contact_id", sa.Text(), nullable=False),
        sa.Column("preserved_contact_id", sa.Text(), nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("merge_key", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("deleted_contact_id", name=op.f("pk_contact_merges")),
    )
    op.create_index(
        op.f("ix_contact_merges_preserved_contact_id"), "contact_merges", ["preserved_contact_id"], unique=False
    )
    op.create_table(
        "contacts",
        sa.Column("contact_id", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "merged_into_contact_id",
            sa.Text(),
            nullable=True,
            comment="set once merged away: the contact that holds its data now",
        ),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "deleted_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="CONTACT_DELETE: personal data erased, ad clicks kept",
        ),
        sa.Column("display_name_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("display_name_key", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_contacts")),
    )
    op.create_index(op.f("ix_contacts_merged_into_contact_id"), "contacts", ["merged_into_contact_id"], unique=False)
    op.create_index("ix_contacts_deleted", "contacts", ["contact_id"], postgresql_where="deleted_at IS NOT NULL")
    op.create_table(
        "conversations",
        sa.Column("conversation_id", sa.Text(), nullable=False),
        sa.Column("contact_id", sa.Text(), nullable=True),
        sa.Column("app_id", sa.Text(), nullable=True),
        sa.Column("active_channel", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_activity_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active_channel_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active_channel_key", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_conversations")),
    )
    op.create_index(op.f("ix_conversations_contact_id"), "conversations", ["contact_id"], unique=False)
    op.create_index(op.f("ix_conversations_started_at"), "conversations", ["started_at"], unique=False)
    op.create_table(
        "delivery_reports",
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("app_id", sa.Text(), nullable=True),
        sa.Column("channel", sa.Text(), nullable=True),
        sa.Column("identity", sa.Text(), nullable=True),
        sa.Column("contact_id", sa.Text(), nullable=True),
        sa.Column("conversation_id", sa.Text(), nullable=True),
        sa.Column("reason_code", sa.Text(), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processing_mode", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("message_id", "status", name=op.f("pk_delivery_reports")),
    )
    op.create_index(
        op.f("ix_delivery_reports_channel_identity"), "delivery_reports", ["channel", "identity"], unique=False
    )
    op.create_index(op.f("ix_delivery_reports_contact_id"), "delivery_reports", ["contact_id"], unique=False)
    op.create_index(op.f("ix_delivery_reports_reported_at"), "delivery_reports", ["reported_at"], unique=False)
    op.create_table(
        "erased_identities",
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("opaque_identity", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", name=op.f("pk_erased_identities")),
    )
    op.create_table(
        "erasure_key",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_erasure_key_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_erasure_key")),
    )
    op.create_table(
        "messages",
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("app_id", sa.Text(), nullable=True),
        sa.Column("contact_id", sa.Text(), nullable=True),
        sa.Column("conversation_id", sa.Text(), nullable=True),
        sa.Column("channel", sa.Text(), nullable=True),
        sa.Column("identity", sa.Text(), nullable=True),
        sa.Column(
            "kind", sa.Text(), nullable=False, comment="text, media, media_card, location, choice_response, fallback, …"
        ),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("media_url", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("has_referral", sa.Boolean(), nullable=False, comment="it came from an ad: ad_clicks has its row"),
        sa.Column("processing_mode", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_messages")),
    )
    op.create_index(op.f("ix_messages_channel_identity"), "messages", ["channel", "identity"], unique=False)
    op.create_index(op.f("ix_messages_contact_id"), "messages", ["contact_id"], unique=False)
    op.create_index(op.f("ix_messages_conversation_id"), "messages", ["conversation_id"], unique=False)
    op.create_index(op.f("ix_messages_sent_at"), "messages", ["sent_at"], unique=False)
    op.add_column(
        "callbacks",
        sa.Column(
            "contact_ids",
            postgresql.ARRAY(sa.Text()),
            nullable=True,
            comment="the contact ids it names: how erasure finds it",
        ),
    )
    op.add_column(
        "callbacks",
        sa.Column("identity", sa.Text(), nullable=True, comment="its channel identity: how erasure finds it"),
    )
    op.alter_column(
        "callbacks",
        "payload",
        existing_type=postgresql.JSONB(astext_type=sa.Text()),
        comment="the callback as received (personal data redacted on erasure)",
        existing_comment="the callback as received",
        existing_nullable=False,
    )
    op.create_index(
        op.f("ix_callbacks_contact_ids"), "callbacks", ["contact_ids"], unique=False, postgresql_using="gin"
    )
    op.create_index(op.f("ix_callbacks_identity"), "callbacks", ["identity"], unique=False)
    op.execute(_BACKFILL_SUBJECTS)
    # 244 random bits from the server's strong random source (gen_random_uuid is built in since PostgreSQL 13).
    op.execute(
        "INSERT INTO erasure_key (id, key) "
        "VALUES (1, decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'))"
    )
    op.execute(_MESSAGE_STATUS)


def downgrade() -> None:
    op.execute("DROP VIEW message_status")
    op.drop_index(op.f("ix_callbacks_identity"), table_name="callbacks")
    op.drop_index(op.f("ix_callbacks_contact_ids"), table_name="callbacks", postgresql_using="gin")
    op.alter_column(
        "callbacks",
        "payload",
        existing_type=postgresql.JSONB(astext_type=sa.Text()),
        comment="the callback as received",
        existing_comment="the callback as received (personal data redacted on erasure)",
        existing_nullable=False,
    )
    op.drop_column("callbacks", "identity")
    op.drop_column("callbacks", "contact_ids")
    op.drop_index(op.f("ix_messages_sent_at"), table_name="messages")
    op.drop_index(op.f("ix_messages_conversation_id"), table_name="messages")
    op.drop_index(op.f("ix_messages_contact_id"), table_name="messages")
    op.drop_index(op.f("ix_messages_channel_identity"), table_name="messages")
    op.drop_table("messages")
    op.drop_table("erasure_key")
    op.drop_table("erased_identities")
    op.drop_index(op.f("ix_delivery_reports_reported_at"), table_name="delivery_reports")
    op.drop_index(op.f("ix_delivery_reports_contact_id"), table_name="delivery_reports")
    op.drop_index(op.f("ix_delivery_reports_channel_identity"), table_name="delivery_reports")
    op.drop_table("delivery_reports")
    op.drop_index(op.f("ix_conversations_started_at"), table_name="conversations")
    op.drop_index(op.f("ix_conversations_contact_id"), table_name="conversations")
    op.drop_table("conversations")
    op.drop_index("ix_contacts_deleted", table_name="contacts")
    op.drop_index(op.f("ix_contacts_merged_into_contact_id"), table_name="contacts")
    op.drop_table("contacts")
    op.drop_index(op.f("ix_contact_merges_preserved_contact_id"), table_name="contact_merges")
    op.drop_table("contact_merges")
    op.drop_index(op.f("ix_channel_identities_identity"), table_name="channel_identities")
    op.drop_index(op.f("ix_channel_identities_contact_id"), table_name="channel_identities")
    op.drop_table("channel_identities")
    op.drop_index(op.f("ix_ad_clicks_source_id_clicked_at"), table_name="ad_clicks")
    op.drop_index(op.f("ix_ad_clicks_ctwa_clid"), table_name="ad_clicks")
    op.drop_index(op.f("ix_ad_clicks_contact_id"), table_name="ad_clicks")
    op.drop_index(op.f("ix_ad_clicks_clicked_at"), table_name="ad_clicks")
    op.drop_index(op.f("ix_ad_clicks_channel_identity"), table_name="ad_clicks")
    op.drop_table("ad_clicks")
