"""The callbacks archive: every accepted callback, once, keyed by its business key.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callbacks",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("key", sa.Text(), nullable=False, comment="business key: what makes two deliveries one callback"),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("app_id", sa.Text()),
        sa.Column("project_id", sa.Text()),
        sa.Column("event_time", sa.DateTime(timezone=True), comment="the channel's time of the event, when given"),
        sa.Column("accepted_time", sa.DateTime(timezone=True), comment="when Sinch accepted the event, when given"),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, comment="when the receiver got it"),
        sa.Column("archived_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("signature_verified", sa.Boolean(), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False, comment="the callback as received"),
        sa.PrimaryKeyConstraint("id", name="pk_callbacks"),
        sa.UniqueConstraint("key", name="uq_callbacks_key"),
    )
    op.create_index("ix_callbacks_received_at", "callbacks", ["received_at"])
    op.create_index("ix_callbacks_trigger_received_at", "callbacks", ["trigger", "received_at"])


def downgrade() -> None:
    op.drop_table("callbacks")
