"""Archive prunes: a record of every `ctwa prune`, so `ctwa replay --all` knows the archive is no longer complete.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "archive_prunes",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column(
            "pruned_before",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="callbacks received before this were deleted",
        ),
        sa.Column("pruned_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("callbacks", sa.BigInteger(), nullable=False, comment="how many"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_archive_prunes")),
    )


def downgrade() -> None:
    op.drop_table("archive_prunes")
