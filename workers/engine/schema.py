"""The tables, as SQLAlchemy sees them. The schema itself changes only through the migrations in ``migrations/``;
a test checks that the two agree.

Each table says what kind it is (``info["kind"]``), and each column of personal content says so
(``info["personal"]``): the code that handles every table of a kind — replay, merges, erasure, the rollups —
reads its list from here (the functions at the end), so that a new table is declared in one place. A test fails
when a table names a person and nothing handles it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from workers.conversions import status as conversion_status

__all__ = [
    "ARCHIVE",
    "KEPT",
    "PROJECTION",
    "ROLLUP",
    "ad_clicks",
    "ad_daily",
    "ad_daily_conversations",
    "ad_daily_people",
    "apps",
    "archive_prunes",
    "callbacks",
    "chain_backlog",
    "channel_identities",
    "contact_merges",
    "contacts",
    "conversations",
    "conversion_app_state",
    "conversion_events",
    "conversion_sender",
    "daily_conversations",
    "daily_people",
    "delivery_reports",
    "erased_identities",
    "erasure_key",
    "messages",
    "metadata",
    "person_touches",
    "personal_columns",
    "tables",
]

Time = DateTime(timezone=True)

# The kinds of table.
ARCHIVE = "archive"  # every callback accepted, once: the source of truth the projections are built from
PROJECTION = "projection"  # built from the archive by the workers; `ctwa replay --all` rebuilds them
ROLLUP = "rollup"  # summaries of ad_clicks, kept in the same transactions; rebuilt with the projections
KEPT = "kept"  # not built from the archive, never rebuilt: the business's, the senders' and erasure's own records


def _person_key() -> Column[str]:
    """Who a row is about, for attribution: the (resolved) contact when the callback named one, else the channel
    identity — by the SQL function ``person_key`` (migration 0005), which the rollups call too."""
    return Column(
        "person_key",
        Text,
        Computed("person_key(contact_id, channel, identity)", persisted=True),
        comment="who: see docs/analytics.md",
    )


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
    Column("payload", JSONB, nullable=False, comment="the callback as received (personal data redacted on erasure)"),
    Column("contact_ids", ARRAY(Text), comment="the contact ids it names: how erasure finds it"),
    Column("identity", Text, comment="its channel identity: how erasure finds it"),
    Index(None, "received_at"),
    Index(None, "trigger", "received_at"),
    Index(None, "contact_ids", postgresql_using="gin"),
    Index(None, "identity"),
    info={"kind": ARCHIVE},
)

# Projections: what users query. Each is a function of the set of archived callbacks, whatever their order.
# Columns ending in _at/_key next to a value record which callback set it, so "the latest" is decided by
# (time, business key) and never by arrival.

contacts = Table(
    "contacts",
    metadata,
    Column("contact_id", Text, primary_key=True),
    Column("display_name", Text, info={"personal": True}),
    Column("first_seen_at", Time),
    Column("last_seen_at", Time),
    Column("merged_into_contact_id", Text, comment="set once merged away: the contact that holds its data now"),
    Column("merged_at", Time),
    Column("deleted_at", Time, comment="CONTACT_DELETE: personal data erased, ad clicks kept"),
    Column("display_name_at", Time),
    Column("display_name_key", Text),
    Index(None, "merged_into_contact_id"),
    Index("ix_contacts_deleted", "contact_id", postgresql_where="deleted_at IS NOT NULL"),
    info={"kind": PROJECTION},
)

channel_identities = Table(
    "channel_identities",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("channel", Text, nullable=False),
    Column("identity", Text, nullable=False, comment="phone number or app-scoped id; erased:<contact> once erased"),
    Column("app_id", Text, comment="the channel's app, for app-scoped channels (Messenger, Instagram)"),
    Column("contact_id", Text, comment="NULL when known only in DISPATCH mode"),
    Column("first_seen_at", Time, nullable=False),
    Column("last_seen_at", Time, nullable=False),
    Column("contact_at", Time),
    Column("contact_key", Text),
    UniqueConstraint("channel", "identity", "app_id", postgresql_nulls_not_distinct=True),
    Index(None, "contact_id"),
    Index(None, "identity"),
    info={"kind": PROJECTION},
)

conversations = Table(
    "conversations",
    metadata,
    Column("conversation_id", Text, primary_key=True),
    Column("contact_id", Text),
    Column("app_id", Text),
    Column("active_channel", Text),
    Column("started_at", Time),
    Column("last_activity_at", Time),
    Column("stopped_at", Time),
    Column("deleted_at", Time),
    Column("active_channel_at", Time),
    Column("active_channel_key", Text),
    Index(None, "contact_id"),
    Index(None, "started_at"),
    info={"kind": PROJECTION},
)

messages = Table(
    "messages",
    metadata,
    Column("message_id", Text, primary_key=True),
    Column("app_id", Text),
    Column("contact_id", Text),
    Column("conversation_id", Text),
    Column("channel", Text),
    Column("identity", Text),
    Column("kind", Text, nullable=False, comment="text, media, media_card, location, choice_response, fallback, …"),
    Column("text", Text, info={"personal": True}),
    Column("media_url", Text, info={"personal": True}),
    Column("sent_at", Time, nullable=False),
    Column("has_referral", Boolean, nullable=False, comment="it came from an ad: ad_clicks has its row"),
    Column("processing_mode", Text),
    _person_key(),
    Index(None, "contact_id"),
    Index(None, "channel", "identity"),
    Index(None, "conversation_id"),
    Index(None, "sent_at"),
    Index(None, "person_key", "sent_at"),
    info={"kind": PROJECTION},
)

ad_clicks = Table(
    "ad_clicks",
    metadata,
    Column("message_id", Text, primary_key=True),
    Column("ctwa_clid", Text),
    Column("source_id", Text),
    Column("source_type", Text),
    Column("source_url", Text),
    Column("headline", Text),
    Column("body", Text),
    Column("media_type", Text),
    Column("image_url", Text),
    Column("video_url", Text),
    Column("thumbnail_url", Text),
    Column("welcome_text", Text),
    Column("app_id", Text),
    Column("channel", Text),
    Column("identity", Text),
    Column("contact_id", Text),
    Column("conversation_id", Text),
    Column("clicked_at", Time, nullable=False),
    Column("referral", JSONB, nullable=False),
    _person_key(),
    Index(None, "source_id", "clicked_at"),
    Index(None, "person_key", "clicked_at", "message_id"),
    Index(None, "clicked_at"),
    Index(None, "contact_id"),
    Index(None, "channel", "identity"),
    Index(None, "ctwa_clid"),
    # An app's clicks of a range, read from the index alone (migration 0010).
    Index(None, "app_id", "clicked_at", postgresql_include=["source_id", "person_key", "conversation_id", "ctwa_clid"]),
    info={"kind": PROJECTION},
)

delivery_reports = Table(
    "delivery_reports",
    metadata,
    Column("message_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("app_id", Text),
    Column("channel", Text),
    Column("identity", Text),
    Column("contact_id", Text),
    Column("conversation_id", Text),
    Column("reason_code", Text),
    Column("reported_at", Time, nullable=False),
    Column("processing_mode", Text),
    _person_key(),
    PrimaryKeyConstraint("message_id", "status"),
    Index(None, "contact_id"),
    Index(None, "channel", "identity"),
    Index(None, "reported_at"),
    Index(None, "person_key", "reported_at"),
    info={"kind": PROJECTION},
)

contact_merges = Table(
    "contact_merges",
    metadata,
    Column("deleted_contact_id", Text, primary_key=True),
    Column("preserved_contact_id", Text, nullable=False),
    Column("merged_at", Time, nullable=False),
    Column("merge_key", Text, nullable=False),
    Index(None, "preserved_contact_id"),
    info={"kind": PROJECTION},
)

# Keyed fingerprints of erased identities: a late callback carrying one is erased on arrival.
erased_identities = Table(
    "erased_identities",
    metadata,
    Column("fingerprint", LargeBinary, primary_key=True),
    Column("opaque_identity", Text, nullable=False),
    info={"kind": KEPT},
)

erasure_key = Table(
    "erasure_key",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("key", LargeBinary, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
    info={"kind": KEPT},
)


# Rollups for attribution, kept by the workers in the same transactions as ad_clicks; see workers/engine/rollups.py.

# Each person's first and last ad click, and how many.
person_touches = Table(
    "person_touches",
    metadata,
    Column("person_key", Text, primary_key=True),
    Column("contact_id", Text),
    Column("channel", Text),
    Column("identity", Text, comment="of the person's latest click"),
    Column("clicks", Integer, nullable=False),
    Column("first_message_id", Text, nullable=False),
    Column("first_source_id", Text),
    Column("first_headline", Text),
    Column("first_clicked_at", Time, nullable=False),
    Column("first_day", Date, nullable=False, comment="UTC day of the first click"),
    Column("last_message_id", Text, nullable=False),
    Column("last_source_id", Text),
    Column("last_headline", Text),
    Column("last_clicked_at", Time, nullable=False),
    Index(None, "first_day", "first_source_id"),
    Index(None, "last_clicked_at"),
    info={"kind": ROLLUP},
)

# Clicks per ad per UTC day, with the ad's creative as its latest click that day showed it.
ad_daily = Table(
    "ad_daily",
    metadata,
    Column("day", Date, nullable=False),
    Column("source_id", Text, comment="NULL for clicks whose referral names only a ctwa_clid"),
    Column("clicks", Integer, nullable=False),
    Column("click_ids", Integer, nullable=False, comment="clicks carrying a ctwa_clid"),
    Column("headline", Text),
    Column("source_type", Text),
    Column("media_type", Text),
    Column("creative_at", Time),
    Column("creative_key", Text),
    UniqueConstraint("day", "source_id", postgresql_nulls_not_distinct=True),
    info={"kind": ROLLUP},
)

# The day chains: one row per person (or conversation) per UTC day with a click, each naming the key's previous
# such day. A range of days then counts each key once without sorting anything: the rows of the range whose
# previous day is before it (docs/analytics.md). The people's rows also say what the person did next — wrote again,
# got a reply delivered, read — each with its own chain, and how soon the first reply came.


def _previous_day(what: str = "") -> Column[object]:
    name = f"previous_{what}_day" if what else "previous_day"
    return Column(name, Date, comment=f"the key's previous {what or 'click'} day")


def _engagement() -> list[Column[object]]:
    """What a person did next after their clicks of a row's day: each flag a click's attribution window long."""
    return [
        Column("wrote_again", Boolean, nullable=False, server_default="false", comment="a message after a click"),
        Column("replied", Boolean, nullable=False, server_default="false", comment="a reply delivered or read"),
        Column("reply_read", Boolean, nullable=False, server_default="false", comment="a reply read"),
        Column("first_reply_seconds", Float, comment="from the day's first click to the first reply's report"),
        _previous_day(),
        _previous_day("wrote_again"),
        _previous_day("replied"),
        _previous_day("reply_read"),
    ]


# A range's people are counted from these indexes alone (index-only scans): the chains and the facts they count.
_ENGAGEMENT_CHAINS = [
    "wrote_again",
    "previous_wrote_again_day",
    "replied",
    "previous_replied_day",
    "reply_read",
    "previous_reply_read_day",
    "first_reply_seconds",
]

ad_daily_people = Table(
    "ad_daily_people",
    metadata,
    Column("day", Date, nullable=False),
    Column("source_id", Text),
    Column("person_key", Text, nullable=False),
    *_engagement(),
    UniqueConstraint("day", "source_id", "person_key", postgresql_nulls_not_distinct=True),
    Index(None, "person_key"),
    Index("ix_ad_daily_people_chains", "day", "source_id", "previous_day", postgresql_include=_ENGAGEMENT_CHAINS),
    info={"kind": ROLLUP},
)

# ad_daily_people for all ads together: a person who clicked two ads that day is one row.
daily_people = Table(
    "daily_people",
    metadata,
    Column("day", Date, primary_key=True),
    Column("person_key", Text, primary_key=True),
    *_engagement(),
    Index(None, "person_key"),
    Index("ix_daily_people_chains", "day", "previous_day", postgresql_include=_ENGAGEMENT_CHAINS),
    info={"kind": ROLLUP},
)

ad_daily_conversations = Table(
    "ad_daily_conversations",
    metadata,
    Column("day", Date, nullable=False),
    Column("source_id", Text),
    Column("conversation_id", Text, nullable=False),
    _previous_day(),
    UniqueConstraint("day", "source_id", "conversation_id", postgresql_nulls_not_distinct=True),
    Index(None, "conversation_id"),
    Index("ix_ad_daily_conversations_chains", "day", "source_id", "previous_day"),
    info={"kind": ROLLUP},
)

daily_conversations = Table(
    "daily_conversations",
    metadata,
    Column("day", Date, primary_key=True),
    Column("conversation_id", Text, primary_key=True),
    _previous_day(),
    Index(None, "conversation_id"),
    Index("ix_daily_conversations_chains", "day", "previous_day"),
    info={"kind": ROLLUP},
)

# The people and conversations whose day chains wait to be settled: queued by the workers in each batch's
# transaction, settled and deleted by `workers.engine.chains.settle_queued` (docs/tables.md, "Concurrency").
chain_backlog = Table(
    "chain_backlog",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("person_key", Text, comment="a person, or NULL for a conversation"),
    Column("first_day", Date, comment="the person's days to look at"),
    Column("last_day", Date),
    Column("cause", Text, comment="message, click or report"),
    Column("conversation_id", Text, comment="a conversation whose days a click changed"),
    info={"kind": ROLLUP},
)

# Conversions the business records for Meta's Conversions API (plain SQL or `ctwa conversions add`), and what the
# sender did with each (docs/conversions.md). A trigger of migration 0006 refuses what Meta could never take.
conversion_events = Table(
    "conversion_events",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("event_id", Text, nullable=False, unique=True, comment="the business's id of the conversion; unique"),
    Column("event_name", Text, nullable=False, comment="one of Meta's 14: Purchase, LeadSubmitted, …"),
    Column("event_time", Time, nullable=False, comment="when the conversion happened"),
    Column("contact_id", Text, comment="the person, as a Sinch contact id"),
    Column("channel", Text, comment="the person, as a channel identity: its channel"),
    Column("identity", Text, comment="… and its identity (a phone number)"),
    Column("ctwa_clid", Text, comment="the click, when the business knows it"),
    Column("value", Numeric, comment="in currency units, not cents"),
    Column("currency", Text, comment="ISO 4217"),
    Column("custom_data", JSONB, comment="sent as is"),
    Column("recorded_at", Time, nullable=False, server_default=func.now()),
    Column("status", Text, nullable=False, server_default="pending", comment="see docs/conversions.md"),
    Column("attempts", Integer, nullable=False, server_default="0", comment="requests it was in"),
    Column("next_attempt_at", Time, nullable=False, server_default=func.now()),
    Column("claimed_at", Time, comment="sending: since when"),
    Column("sent_at", Time, comment="when Meta counted it"),
    Column("sent_ctwa_clid", Text, comment="the click id it was sent with"),
    Column("click_message_id", Text, comment="the click it was attributed to, if known"),
    # The click's ad and person, kept with it (through merges and erasure) so that a range's conversions are counted
    # without looking up each click; see workers/engine/rollups.py.
    Column("click_source_id", Text, comment="its click's ad (ad_clicks.source_id)"),
    Column("click_person_key", Text, comment="its click's person (ad_clicks.person_key)"),
    Column("click_app_id", Text, comment="its click's app (ad_clicks.app_id): whose Meta setup it goes to"),
    Column("fbtrace_id", Text, comment="Meta's trace id of its request"),
    Column("error_code", Integer),
    Column("error_subcode", Integer),
    Column("last_error", Text, comment="why it is failed, unconfirmed or retried"),
    CheckConstraint(f"status IN {conversion_status.sql_in(conversion_status.STATUSES)}", name="status"),
    Index("ix_conversion_events_sendable", "next_attempt_at", "id", postgresql_where=conversion_status.CLAIM.where),
    Index(None, "status"),
    Index(None, "contact_id"),
    Index(None, "channel", "identity"),
    Index(None, "click_message_id"),
    Index(None, "event_time"),
    Index(None, "click_person_key"),
    Index(
        "ix_conversion_events_unconfigured",
        "click_app_id",
        postgresql_where=text(f"status IN {conversion_status.sql_in((conversion_status.UNCONFIGURED,))}"),
    ),
    # A range's counted conversions, read from the index alone (migration 0008).
    Index(
        "ix_conversion_events_counted_day",
        text("((event_time AT TIME ZONE 'UTC')::date)"),
        postgresql_include=["click_source_id", "click_person_key", "currency", "value"],
        postgresql_where=text(
            f"status IN {conversion_status.sql_in(conversion_status.COUNTED)} AND click_message_id IS NOT NULL"
        ),
    ),
    info={"kind": KEPT},
)

# The conversion senders' shared state: parked (Meta refused the token, a permission or the dataset) and why.
conversion_sender = Table(
    "conversion_sender",
    metadata,
    Column("id", SmallInteger, primary_key=True),
    Column("parked_reason", Text, comment="why the senders stopped sending, if they did"),
    Column("parked_code", Integer, comment="Meta's error code that parked them"),
    Column("parked_at", Time),
    Column("last_request_at", Time),
    Column("last_success_at", Time),
    CheckConstraint("id = 1", name="single_row"),
    info={"kind": KEPT},
)

# conversion_sender's state for each app with a Meta setup of its own (the apps file's [app.meta]).
conversion_app_state = Table(
    "conversion_app_state",
    metadata,
    Column("app_id", Text, primary_key=True),
    Column("parked_reason", Text, comment="why the senders stopped sending this app's events, if they did"),
    Column("parked_code", Integer, comment="Meta's error code that parked them"),
    Column("parked_at", Time),
    Column("last_request_at", Time),
    Column("last_success_at", Time),
    info={"kind": KEPT},
)

# The apps' names, from the apps file (CTWA_APPS_FILE): written by `ctwa migrate` and the senders as they read it.
apps = Table(
    "apps",
    metadata,
    Column("app_id", Text, primary_key=True, comment="the Sinch app id"),
    Column("name", Text, nullable=False, comment="its name in the apps file"),
    Column("updated_at", Time, nullable=False, server_default=func.now()),
    info={"kind": KEPT},
)

# Every `ctwa prune` of the archive: after one, the archive no longer holds everything the tables were built from.
archive_prunes = Table(
    "archive_prunes",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("pruned_before", Time, nullable=False, comment="callbacks received before this were deleted"),
    Column("pruned_at", Time, nullable=False, server_default=func.now()),
    Column("callbacks", BigInteger, nullable=False, comment="how many"),
    info={"kind": KEPT},
)


def tables(kind: str, *, naming: tuple[str, ...] = ()) -> list[Table]:
    """The tables of ``kind`` that have every column of ``naming`` (``contact_id`` not as their key), in the order
    they are declared."""
    return [
        table
        for table in metadata.tables.values()
        if table.info["kind"] == kind
        and all(name in table.c and not (name == "contact_id" and table.c[name].primary_key) for name in naming)
    ]


def personal_columns(table: Table) -> list[str]:
    """The columns of ``table`` that hold personal content, which erasure empties."""
    return [column.name for column in table.c if column.info.get("personal")]
