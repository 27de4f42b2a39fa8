"""The tables, as SQLAlchemy sees them. The schema itself changes only through the migrations in ``migrations/``;
a test checks that the two agree."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    MetaData,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = ["callbacks", "metadata"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# Every callback ever accepted, once: the source of truth the projections are built from (and rebuilt from).
callbacks = Table(
    "callbacks",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("key", Text, nullable=False, unique=True, comment="business key: what makes two deliveries one callback"),
    Column("trigger", Text, nullable=False),
    Column("app_id", Text),
    Column("project_id", Text),
    Column("event_time", DateTime(timezone=True), comment="the channel's time of the event, when given"),
    Column("accepted_time", DateTime(timezone=True), comment="when Sinch accepted the event, when given"),
    Column("received_at", DateTime(timezone=True), nullable=False, comment="when the receiver got it"),
    Column("archived_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("signature_verified", Boolean, nullable=False),
    Column("payload", JSONB, nullable=False, comment="the callback as received"),
    Index(None, "received_at"),
    Index(None, "trigger", "received_at"),
)
