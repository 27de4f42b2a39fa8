"""The tables users query — contacts, channel identities, conversations, messages, ad clicks, delivery reports —
built from each batch of new callbacks with one set-based query per table, in the batch's transaction. The
batch's rows reach Postgres as JSON documents; the queries of five tables go as one statement, those of the ad
clicks and their rollups as a second.

Every table comes out the same whatever order callbacks arrive in and however often: times combine as earliest
and latest; a value that can change (a display name, a conversation's channel) is the one of the latest callback
by (time, business key); rows keyed by a message are written once. Contact ids are resolved through merges
(chains included) before they are written, and rows written before a merge are re-keyed when it arrives.

Batches that merge or delete contacts hold an exclusive advisory lock; every other batch holds it shared. So a
merge or erasure sees every row committed before it, and every later batch sees the merge or erasure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ingest.callback import Trigger
from workers.engine import merges, rollups
from workers.engine.archive import Incoming
from workers.engine.erasure import Eraser
from workers.engine.facts import Facts, collect
from workers.engine.precedence import take_newer

__all__ = ["NeedsExclusive", "lock", "needs_exclusive", "project"]

_LOCK = 0x63747761  # "ctwa"
_EXCLUSIVE_TRIGGERS = frozenset({Trigger.CONTACT_MERGE, Trigger.CONTACT_DELETE})


class NeedsExclusive(Exception):
    """The batch touches an erased contact: it must be written again holding the exclusive lock."""


def needs_exclusive(items: Iterable[Incoming]) -> bool:
    return any(item.callback.trigger in _EXCLUSIVE_TRIGGERS for item in items)


async def lock(connection: AsyncConnection, exclusive: bool) -> None:
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    await connection.execute(text(f"SELECT {function}(:key)"), {"key": _LOCK})


async def project(connection: AsyncConnection, items: Sequence[Incoming], eraser: Eraser, *, exclusive: bool) -> None:
    """Project ``items`` (callbacks archived for the first time) into every table."""
    facts = collect([(item.callback, item.payload) for item in items])
    if facts.merges:
        await connection.execute(
            _MERGES,
            {
                "merges": _json(
                    {"deleted": deleted, "preserved": preserved, "at": at, "key": key}
                    for deleted, preserved, at, key in facts.merges
                )
            },
        )
    if facts.deletions:
        await connection.execute(
            _DELETIONS, {"deletions": _json({"id": contact, "at": at} for contact, at in facts.deletions)}
        )
    roots = await merges.resolve(connection, facts.contact_ids())
    erased = await _erased(connection, set(roots.values()))
    matched = await eraser.match(connection, {(f.channel, f.identity) for f in facts.identities})
    if (erased or matched) and not exclusive:
        raise NeedsExclusive
    await _write(connection, facts, roots)
    if facts.merges:
        await _rekey(connection, {roots[deleted] for deleted, *_ in facts.merges})
    if erased or matched:
        await eraser.erase(connection, erased, matched)


async def _write(connection: AsyncConnection, facts: Facts, roots: dict[str, str]) -> None:
    """Every table's rows for ``facts``: two statements, `_WRITE` and then `_AD_CLICKS`."""

    def root(contact_id: str | None) -> str | None:
        return roots.get(contact_id, contact_id) if contact_id else None

    clicks = [(m, m.referral) for m in facts.messages if m.referral is not None]
    await connection.execute(
        _WRITE,
        {
            "seen": _json({"contact_id": root(contact_id), "at": at} for contact_id, at in facts.sightings),
            "named": _json(
                {"contact_id": root(contact_id), "name": name, "at": at, "key": key}
                for contact_id, name, at, key in facts.names
            ),
            "identity_rows": _json(
                {
                    "channel": f.channel,
                    "identity": f.identity,
                    "app_id": f.app_id or "",
                    "contact_id": root(f.contact_id),
                    "at": f.at,
                    "key": f.key,
                }
                for f in facts.identities
            ),
            "conversation_rows": _json(
                {
                    "conversation_id": f.conversation_id,
                    "contact_id": root(f.contact_id),
                    "app_id": f.app_id,
                    "kind": f.event,
                    "channel": f.active_channel,
                    "at": f.at,
                    "key": f.key,
                }
                for f in facts.conversations
            ),
            "message_rows": _json(
                {
                    "message_id": m.message_id,
                    "app_id": m.app_id,
                    "contact_id": root(m.contact_id),
                    "conversation_id": m.conversation_id,
                    "channel": m.channel,
                    "identity": m.identity,
                    "kind": m.kind,
                    "text": m.text,
                    "media_url": m.media_url,
                    "sent_at": m.sent_at,
                    "has_referral": m.referral is not None,
                    "processing_mode": m.processing_mode,
                }
                for m in facts.messages
            ),
            "delivery_rows": _json(
                {
                    "message_id": d.message_id,
                    "status": d.status,
                    "app_id": d.app_id,
                    "channel": d.channel,
                    "identity": d.identity,
                    "contact_id": root(d.contact_id),
                    "conversation_id": d.conversation_id,
                    "reason_code": d.reason_code,
                    "reported_at": d.reported_at,
                    "processing_mode": d.processing_mode,
                }
                for d in facts.deliveries
            ),
        },
    )
    if clicks:
        await connection.execute(
            _AD_CLICKS,
            {
                "click_rows": _json(
                    {
                        "message_id": m.message_id,
                        "ctwa_clid": r.ctwa_clid,
                        "source_id": r.source_id,
                        "source_type": r.source_type,
                        "source_url": r.source_url,
                        "headline": r.headline,
                        "body": r.body,
                        "media_type": r.media_type,
                        "image_url": r.image_url,
                        "video_url": r.video_url,
                        "thumbnail_url": r.thumbnail_url,
                        "welcome_text": r.welcome_text,
                        "app_id": m.app_id,
                        "channel": m.channel,
                        "identity": m.identity,
                        "contact_id": root(m.contact_id),
                        "conversation_id": m.conversation_id,
                        "clicked_at": m.sent_at,
                        "referral": r.raw,
                    }
                    for m, r in clicks
                )
            },
        )


async def _rekey(connection: AsyncConnection, roots: set[str]) -> None:
    """Move whatever is recorded under a merged-away contact to its root, and fold the contact rows."""
    pairs = [(member, root) for member, root in await merges.members(connection, roots) if member != root]
    if not pairs:
        return
    mapping = {"members": [member for member, _ in pairs], "roots": [root for _, root in pairs]}
    for table in ("messages", "ad_clicks", "delivery_reports", "conversations", "channel_identities"):
        await connection.execute(
            text(
                f"UPDATE {table} SET contact_id = merged.root "
                f"FROM unnest(CAST(:members AS text[]), CAST(:roots AS text[])) AS merged(member, root) "
                f"WHERE {table}.contact_id = merged.member"
            ),
            mapping,
        )
    await connection.execute(_FOLD_CONTACTS, mapping)
    await connection.execute(_MARK_MERGED, mapping)
    await rollups.refresh(connection, (f"contact:{contact}" for pair in pairs for contact in pair))


async def _erased(connection: AsyncConnection, roots: set[str]) -> set[str]:
    """Those of ``roots`` that are erased: deleted themselves, or with a deleted contact merged into them."""
    if not roots:
        return set()
    rows = await connection.execute(_ERASED, {"roots": sorted(roots)})
    return set(rows.scalars())


def _json(rows: Iterable[Mapping[str, object]]) -> str:
    """A batch of rows as one JSON parameter, for `_records`."""
    return orjson.dumps(list(rows)).decode()


def _records(parameter: str, columns: str) -> str:
    """SQL rows from the JSON parameter ``parameter`` (`_json`): "name:type …", text unless typed.

    One JSON document per statement rather than an array per column: orjson writes a batch many times faster
    than the driver encodes arrays element by element, and Postgres reads it as fast.
    """
    definitions = ", ".join(" ".join(f"{column}:text".split(":")[:2]) for column in columns.split())
    return f"json_to_recordset(CAST(:{parameter} AS json)) AS {parameter}({definitions})"


_MERGES = text(
    f"""
    INSERT INTO contact_merges AS merges (deleted_contact_id, preserved_contact_id, merged_at, merge_key)
    SELECT DISTINCT ON (deleted) deleted, preserved, at, key
    FROM {_records("merges", "deleted preserved at:timestamptz key")}
    ORDER BY deleted, at DESC, key DESC
    ON CONFLICT (deleted_contact_id) DO UPDATE SET
        preserved_contact_id = CASE WHEN (EXCLUDED.merged_at, EXCLUDED.merge_key) > (merges.merged_at, merges.merge_key)
            THEN EXCLUDED.preserved_contact_id ELSE merges.preserved_contact_id END,
        merge_key = GREATEST(merges.merge_key, EXCLUDED.merge_key),
        merged_at = GREATEST(merges.merged_at, EXCLUDED.merged_at)
    """
)

_DELETIONS = text(
    f"""
    INSERT INTO contacts (contact_id, deleted_at)
    SELECT id, min(at) FROM {_records("deletions", "id at:timestamptz")} GROUP BY id
    ON CONFLICT (contact_id) DO UPDATE SET deleted_at = LEAST(contacts.deleted_at, EXCLUDED.deleted_at)
    """
)

_ERASED = text(
    f"""
    {merges.MEMBERS}
    SELECT DISTINCT members.root
    FROM members JOIN contacts ON contacts.contact_id = members.member
    WHERE contacts.deleted_at IS NOT NULL
    """
)

_CONTACTS = f"""
    WITH seen AS (
        SELECT contact_id, min(at) AS first_seen_at, max(at) AS last_seen_at
        FROM {_records("seen", "contact_id at:timestamptz")}
        GROUP BY contact_id
    ), named AS (
        SELECT DISTINCT ON (contact_id) contact_id, name, at, key
        FROM {_records("named", "contact_id name at:timestamptz key")}
        ORDER BY contact_id, at DESC, key DESC
    )
    INSERT INTO contacts
        (contact_id, first_seen_at, last_seen_at, display_name, display_name_at, display_name_key)
    SELECT seen.contact_id, seen.first_seen_at, seen.last_seen_at, named.name, named.at, named.key
    FROM seen LEFT JOIN named USING (contact_id)
    ON CONFLICT (contact_id) DO UPDATE SET
        first_seen_at = LEAST(contacts.first_seen_at, EXCLUDED.first_seen_at),
        last_seen_at = GREATEST(contacts.last_seen_at, EXCLUDED.last_seen_at),
        {take_newer("contacts", "display_name", ["display_name"])}
    """

_IDENTITIES = f"""
    WITH seen AS (
        SELECT * FROM {_records("identity_rows", "channel identity app_id contact_id at:timestamptz key")}
    ), times AS (
        SELECT channel, identity, app_id, min(at) AS first_seen_at, max(at) AS last_seen_at
        FROM seen GROUP BY channel, identity, app_id
    ), owner AS (
        SELECT DISTINCT ON (channel, identity, app_id) channel, identity, app_id, contact_id, at, key
        FROM seen WHERE contact_id IS NOT NULL
        ORDER BY channel, identity, app_id, at DESC, key DESC
    )
    INSERT INTO channel_identities
        (channel, identity, app_id, contact_id, first_seen_at, last_seen_at, contact_at, contact_key)
    SELECT times.channel, times.identity, NULLIF(times.app_id, ''), owner.contact_id,
           times.first_seen_at, times.last_seen_at, owner.at, owner.key
    FROM times LEFT JOIN owner USING (channel, identity, app_id)
    ON CONFLICT (channel, identity, app_id) DO UPDATE SET
        first_seen_at = LEAST(channel_identities.first_seen_at, EXCLUDED.first_seen_at),
        last_seen_at = GREATEST(channel_identities.last_seen_at, EXCLUDED.last_seen_at),
        {take_newer("channel_identities", "contact", ["contact_id"])}
    """

_CONVERSATION_ROWS = _records("conversation_rows", "conversation_id contact_id app_id kind channel at:timestamptz key")
_CONVERSATIONS = f"""
    WITH event AS (
        SELECT * FROM {_CONVERSATION_ROWS}
    ), summary AS (
        SELECT conversation_id, min(contact_id) AS contact_id, min(app_id) AS app_id,
               min(at) FILTER (WHERE kind IN ('start', 'activity')) AS started_at,
               max(at) FILTER (WHERE kind <> 'delete') AS last_activity_at,
               max(at) FILTER (WHERE kind = 'stop') AS stopped_at,
               max(at) FILTER (WHERE kind = 'delete') AS deleted_at
        FROM event GROUP BY conversation_id
    ), channel AS (
        SELECT DISTINCT ON (conversation_id) conversation_id, channel, at, key
        FROM event WHERE channel IS NOT NULL
        ORDER BY conversation_id, at DESC, key DESC
    )
    INSERT INTO conversations (
        conversation_id, contact_id, app_id, started_at, last_activity_at, stopped_at, deleted_at,
        active_channel, active_channel_at, active_channel_key
    )
    SELECT summary.*, channel.channel, channel.at, channel.key
    FROM summary LEFT JOIN channel USING (conversation_id)
    ON CONFLICT (conversation_id) DO UPDATE SET
        contact_id = LEAST(conversations.contact_id, EXCLUDED.contact_id),
        app_id = LEAST(conversations.app_id, EXCLUDED.app_id),
        started_at = LEAST(conversations.started_at, EXCLUDED.started_at),
        last_activity_at = GREATEST(conversations.last_activity_at, EXCLUDED.last_activity_at),
        stopped_at = GREATEST(conversations.stopped_at, EXCLUDED.stopped_at),
        deleted_at = GREATEST(conversations.deleted_at, EXCLUDED.deleted_at),
        {take_newer("conversations", "active_channel", ["active_channel"])}
    """

_MESSAGE_ROWS = _records(
    "message_rows",
    "message_id app_id contact_id conversation_id channel identity kind text media_url sent_at:timestamptz "
    "has_referral:boolean processing_mode",
)
_MESSAGES = f"""
    INSERT INTO messages (
        message_id, app_id, contact_id, conversation_id, channel, identity, kind, text, media_url, sent_at,
        has_referral, processing_mode
    )
    SELECT * FROM {_MESSAGE_ROWS}
    ON CONFLICT (message_id) DO NOTHING
    """

_CLICK_ROWS = _records(
    "click_rows",
    "message_id ctwa_clid source_id source_type source_url headline body media_type image_url video_url "
    "thumbnail_url welcome_text app_id channel identity contact_id conversation_id clicked_at:timestamptz "
    "referral:jsonb",
)
_CLICKS = f"""
    INSERT INTO ad_clicks (
        message_id, ctwa_clid, source_id, source_type, source_url, headline, body, media_type, image_url,
        video_url, thumbnail_url, welcome_text, app_id, channel, identity, contact_id, conversation_id, clicked_at,
        referral
    )
    SELECT * FROM {_CLICK_ROWS}
    ON CONFLICT (message_id) DO NOTHING
    RETURNING *
"""

_DELIVERY_ROWS = _records(
    "delivery_rows",
    "message_id status app_id channel identity contact_id conversation_id reason_code reported_at:timestamptz "
    "processing_mode",
)
_DELIVERIES = f"""
    INSERT INTO delivery_reports (
        message_id, status, app_id, channel, identity, contact_id, conversation_id, reason_code, reported_at,
        processing_mode
    )
    SELECT * FROM {_DELIVERY_ROWS}
    ON CONFLICT (message_id, status) DO NOTHING
    """

_MERGED = "unnest(CAST(:members AS text[]), CAST(:roots AS text[])) AS merged(member, root)"

# A merged-away contact's times and name move to its root (latest name wins); its own row keeps only the merge.
_FOLD_CONTACTS = text(
    f"""
    WITH folded AS (
        SELECT DISTINCT ON (merged.root)
            merged.root AS contact_id,
            min(member.first_seen_at) OVER same AS first_seen_at,
            max(member.last_seen_at) OVER same AS last_seen_at,
            member.display_name, member.display_name_at, member.display_name_key
        FROM contacts AS member JOIN {_MERGED} ON member.contact_id = merged.member
        WINDOW same AS (PARTITION BY merged.root)
        ORDER BY merged.root, member.display_name_at DESC NULLS LAST, member.display_name_key DESC NULLS LAST
    )
    INSERT INTO contacts
        (contact_id, first_seen_at, last_seen_at, display_name, display_name_at, display_name_key)
    SELECT * FROM folded
    ON CONFLICT (contact_id) DO UPDATE SET
        first_seen_at = LEAST(contacts.first_seen_at, EXCLUDED.first_seen_at),
        last_seen_at = GREATEST(contacts.last_seen_at, EXCLUDED.last_seen_at),
        {take_newer("contacts", "display_name", ["display_name"])}
    """
)

_MARK_MERGED = text(
    f"""
    INSERT INTO contacts (contact_id, merged_into_contact_id, merged_at)
    SELECT merged.member, merged.root, merges.merged_at
    FROM {_MERGED} JOIN contact_merges AS merges ON merges.deleted_contact_id = merged.member
    ON CONFLICT (contact_id) DO UPDATE SET
        merged_into_contact_id = EXCLUDED.merged_into_contact_id,
        merged_at = EXCLUDED.merged_at,
        display_name = NULL, display_name_at = NULL, display_name_key = NULL,
        first_seen_at = NULL, last_seen_at = NULL
    """
)

# The tables' statements as parts of one: Postgres runs each data-modifying WITH part to completion, whether or
# not the main query reads it. Each writes its own table from its own parameter; none depends on another.
_WRITE = text(
    "WITH "
    + ", ".join(
        f"{name} AS ({statement})"
        for name, statement in [
            ("contacts_written", _CONTACTS),
            ("identities_written", _IDENTITIES),
            ("conversations_written", _CONVERSATIONS),
            ("messages_written", _MESSAGES),
            ("deliveries_written", _DELIVERIES),
        ]
    )
    + " SELECT 1"
)

# Apart, and last: the rollups' rows are shared by every batch and stay locked until the commit, so no batch may
# hold them while it waits for a row another batch holds.
_AD_CLICKS = text(f"WITH inserted AS ({_CLICKS}) {rollups.ON_NEW_CLICKS}")
