"""Many apps: each conversion goes to the Meta setup of its click's app, and the apps' names are kept for reports.

``conversion_events`` gains ``click_app_id`` (its click's app, ``ad_clicks.app_id``, kept by the senders with the
click's other columns; filled here for the events already attributed) and the status ``unconfigured`` (its click's
app has no Meta setup, and the deployment none of its own: kept until one is loaded). ``conversion_app_state`` is
``conversion_sender``'s state for each app with a Meta setup of its own (``conversion_sender`` keeps that of
``CTWA_META_*``), and ``conversion_app_overview`` shows it with each app's name — for the dashboard, which reads no
table. ``apps`` holds each app's name from the apps file (``CTWA_APPS_FILE``), for reports.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_STATUSES_0006 = ("pending", "sending", "sent", "unattributed", "expired", "erased", "failed", "unconfirmed")
STATUSES = (*_STATUSES_0006, "unconfigured")


def _status_check(statuses: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_conversion_events_status"), "conversion_events", type_="check")
    op.create_check_constraint(
        op.f("ck_conversion_events_status"),
        "conversion_events",
        "status IN (" + ", ".join(f"'{status}'" for status in statuses) + ")",
    )


CONVERSION_APP_OVERVIEW = """
    CREATE VIEW conversion_app_overview AS
    SELECT state.app_id, app.name, state.parked_reason, state.parked_code, state.parked_at, state.last_request_at,
           state.last_success_at
    FROM conversion_app_state AS state LEFT JOIN apps AS app USING (app_id)
"""


def upgrade() -> None:
    op.add_column(
        "conversion_events",
        sa.Column("click_app_id", sa.Text, comment="its click's app (ad_clicks.app_id): whose Meta setup it goes to"),
    )
    op.execute(
        """
        UPDATE conversion_events AS event SET click_app_id = click.app_id
        FROM ad_clicks AS click WHERE click.message_id = event.click_message_id AND click.app_id IS NOT NULL
        """
    )
    _status_check(STATUSES)
    op.create_index(
        "ix_conversion_events_unconfigured",
        "conversion_events",
        ["click_app_id"],
        postgresql_where=sa.text("status IN ('unconfigured')"),
    )
    op.create_table(
        "conversion_app_state",
        sa.Column("app_id", sa.Text, primary_key=True),
        sa.Column("parked_reason", sa.Text, comment="why the senders stopped sending this app's events, if they did"),
        sa.Column("parked_code", sa.Integer, comment="Meta's error code that parked them"),
        sa.Column("parked_at", sa.DateTime(timezone=True)),
        sa.Column("last_request_at", sa.DateTime(timezone=True)),
        sa.Column("last_success_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "apps",
        sa.Column("app_id", sa.Text, primary_key=True, comment="the Sinch app id"),
        sa.Column("name", sa.Text, nullable=False, comment="its name in the apps file"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )
    op.execute(CONVERSION_APP_OVERVIEW)


def downgrade() -> None:
    op.execute("DROP VIEW conversion_app_overview")
    op.drop_table("apps")
    op.drop_table("conversion_app_state")
    op.drop_index("ix_conversion_events_unconfigured", "conversion_events")
    # Before this revision an event without a Meta setup waited pending.
    op.execute("UPDATE conversion_events SET status = 'pending' WHERE status = 'unconfigured'")
    _status_check(_STATUSES_0006)
    op.drop_column("conversion_events", "click_app_id")
