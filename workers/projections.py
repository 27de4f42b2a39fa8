"""The tables users query — contacts, channel identities, conversations, messages, ad clicks, delivery reports —
built from each batch of new callbacks with one set-based statement per table, in the batch's transaction.

Every table comes out the same whatever order callbacks arrive in and however often: times combine as earliest
and latest; a value that can change (a display name, a conversation's channel) is the one of the latest callback
by (time, business key); rows keyed by a message are written once. Contact ids are resolved through merges
(chains included) before they are written, and rows written before a merge are re-keyed when it arrives.

Batches that merge or delete contacts hold an exclusive advisory lock; every other batch holds it shared. So a
merge or erasure sees every row committed before it, and every later batch sees the merge or erasure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ingest.callback import Trigger
from workers import rollups
from workers.archive import Incoming
from workers.erasure import Eraser
from workers.facts import Facts, collect
from workers.precedence import take_newer

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
                "deleted": [deleted for deleted, *_ in facts.merges],
                "preserved": [preserved for _, preserved, _, _ in facts.merges],
                "ats": [at for _, _, at, _ in facts.merges],
                "keys": [key for *_, key in facts.merges],
            },
        )
    if facts.deletions:
        await connection.execute(
            _DELETIONS,
            {"ids": [contact for contact, _ in facts.deletions], "ats": [at for _, at in facts.deletions]},
        )
    roots = await resolve(connection, facts.contact_ids())
    await _write(connection, facts, roots)
    if facts.merges:
        await _rekey(connection, {roots[deleted] for deleted, *_ in facts.merges})

    erased = await _erased(connection, set(roots.values()))
    matched = await eraser.match(connection, {(f.channel, f.identity) for f in facts.identities})
    if erased or matched:
        if not exclusive:
            raise NeedsExclusive
        await eraser.erase(connection, erased, matched)


async def resolve(connection: AsyncConnection, contact_ids: set[str]) -> dict[str, str]:
    """Each contact id's root: the contact it was merged into, following chains (cycles stop after 64 steps)."""
    if not contact_ids:
        return {}
    rows = await connection.execute(_RESOLVE, {"ids": sorted(contact_ids)})
    return {start: root for start, root in rows}


async def _write(connection: AsyncConnection, facts: Facts, roots: dict[str, str]) -> None:
    def root(contact_id: str | None) -> str | None:
        return roots.get(contact_id, contact_id) if contact_id else None

    if facts.sightings:
        await connection.execute(
            _CONTACTS,
            {
                "seen_ids": [root(contact_id) for contact_id, _ in facts.sightings],
                "seen_ats": [at for _, at in facts.sightings],
                "name_ids": [root(contact_id) for contact_id, *_ in facts.names],
                "names": [name for _, name, _, _ in facts.names],
                "name_ats": [at for _, _, at, _ in facts.names],
                "name_keys": [key for *_, key in facts.names],
            },
        )
    if identities := facts.identities:
        await connection.execute(
            _IDENTITIES,
            {
                "channels": [f.channel for f in identities],
                "identities": [f.identity for f in identities],
                "apps": [f.app_id or "" for f in identities],
                "contacts": [root(f.contact_id) for f in identities],
                "ats": [f.at for f in identities],
                "keys": [f.key for f in identities],
            },
        )
    if conversations := facts.conversations:
        await connection.execute(
            _CONVERSATIONS,
            {
                "ids": [f.conversation_id for f in conversations],
                "contacts": [root(f.contact_id) for f in conversations],
                "apps": [f.app_id for f in conversations],
                "events": [f.event for f in conversations],
                "channels": [f.active_channel for f in conversations],
                "ats": [f.at for f in conversations],
                "keys": [f.key for f in conversations],
            },
        )
    if messages := facts.messages:
        await connection.execute(
            _MESSAGES,
            {
                "ids": [m.message_id for m in messages],
                "apps": [m.app_id for m in messages],
                "contacts": [root(m.contact_id) for m in messages],
                "conversations": [m.conversation_id for m in messages],
                "channels": [m.channel for m in messages],
                "identities": [m.identity for m in messages],
                "kinds": [m.kind for m in messages],
                "texts": [m.text for m in messages],
                "media": [m.media_url for m in messages],
                "ats": [m.sent_at for m in messages],
                "referred": [m.referral is not None for m in messages],
                "modes": [m.processing_mode for m in messages],
            },
        )
    if clicks := [(m, m.referral) for m in messages if m.referral is not None]:
        await connection.execute(
            _AD_CLICKS,
            {
                "ids": [m.message_id for m, _ in clicks],
                "clids": [r.ctwa_clid for _, r in clicks],
                "sources": [r.source_id for _, r in clicks],
                "types": [r.source_type for _, r in clicks],
                "urls": [r.source_url for _, r in clicks],
                "headlines": [r.headline for _, r in clicks],
                "bodies": [r.body for _, r in clicks],
                "media": [r.media_type for _, r in clicks],
                "images": [r.image_url for _, r in clicks],
                "videos": [r.video_url for _, r in clicks],
                "thumbnails": [r.thumbnail_url for _, r in clicks],
                "welcomes": [r.welcome_text for _, r in clicks],
                "apps": [m.app_id for m, _ in clicks],
                "channels": [m.channel for m, _ in clicks],
                "identities": [m.identity for m, _ in clicks],
                "contacts": [root(m.contact_id) for m, _ in clicks],
                "conversations": [m.conversation_id for m, _ in clicks],
                "ats": [m.sent_at for m, _ in clicks],
                "referrals": [orjson.dumps(r.raw).decode() for _, r in clicks],
            },
        )
    if deliveries := facts.deliveries:
        await connection.execute(
            _DELIVERIES,
            {
                "ids": [d.message_id for d in deliveries],
                "statuses": [d.status for d in deliveries],
                "apps": [d.app_id for d in deliveries],
                "channels": [d.channel for d in deliveries],
                "identities": [d.identity for d in deliveries],
                "contacts": [root(d.contact_id) for d in deliveries],
                "conversations": [d.conversation_id for d in deliveries],
                "reasons": [d.reason_code for d in deliveries],
                "ats": [d.reported_at for d in deliveries],
                "modes": [d.processing_mode for d in deliveries],
            },
        )


async def _rekey(connection: AsyncConnection, roots: set[str]) -> None:
    """Move whatever is recorded under a merged-away contact to its root, and fold the contact rows."""
    rows = await connection.execute(_MEMBERS, {"roots": sorted(roots)})
    pairs = [(member, root) for member, root in rows if member != root]
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


def _unnest(spec: str) -> str:
    """SQL ``unnest`` of the array parameters named in ``spec`` ("ids ats:timestamptz …"; text unless typed)."""
    columns = (f"{name}:text".split(":")[:2] for name in spec.split())
    return "unnest(" + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in columns) + ")"


_MERGES = text(
    f"""
    INSERT INTO contact_merges AS merges (deleted_contact_id, preserved_contact_id, merged_at, merge_key)
    SELECT DISTINCT ON (deleted) deleted, preserved, at, key
    FROM {_unnest("deleted preserved ats:timestamptz keys")}
        AS merge(deleted, preserved, at, key)
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
    SELECT id, min(at) FROM {_unnest("ids ats:timestamptz")} AS deletion(id, at) GROUP BY id
    ON CONFLICT (contact_id) DO UPDATE SET deleted_at = LEAST(contacts.deleted_at, EXCLUDED.deleted_at)
    """
)

_RESOLVE = text(
    """
    WITH RECURSIVE chain(start, current, depth) AS (
        SELECT id, id, 0 FROM unnest(CAST(:ids AS text[])) AS id
        UNION ALL
        SELECT chain.start, merges.preserved_contact_id, chain.depth + 1
        FROM chain JOIN contact_merges AS merges ON merges.deleted_contact_id = chain.current
        WHERE chain.depth < 64
    )
    SELECT DISTINCT ON (start) start, current FROM chain ORDER BY start, depth DESC
    """
)

_MEMBERS = text(
    """
    WITH RECURSIVE members(root, member, depth) AS (
        SELECT root, root, 0 FROM unnest(CAST(:roots AS text[])) AS root
        UNION
        SELECT members.root, merges.deleted_contact_id, members.depth + 1
        FROM members JOIN contact_merges AS merges ON merges.preserved_contact_id = members.member
        WHERE members.depth < 64
    )
    SELECT DISTINCT member, root FROM members ORDER BY member, root
    """
)

_ERASED = text(
    """
    WITH RECURSIVE members(root, member, depth) AS (
        SELECT root, root, 0 FROM unnest(CAST(:roots AS text[])) AS root
        UNION
        SELECT members.root, merges.deleted_contact_id, members.depth + 1
        FROM members JOIN contact_merges AS merges ON merges.preserved_contact_id = members.member
        WHERE members.depth < 64
    )
    SELECT DISTINCT members.root
    FROM members JOIN contacts ON contacts.contact_id = members.member
    WHERE contacts.deleted_at IS NOT NULL
    """
)

_CONTACTS = text(
    f"""
    WITH seen AS (
        SELECT contact_id, min(at) AS first_seen_at, max(at) AS last_seen_at
        FROM {_unnest("seen_ids seen_ats:timestamptz")} AS seen(contact_id, at)
        GROUP BY contact_id
    ), named AS (
        SELECT DISTINCT ON (contact_id) contact_id, name, at, key
        FROM {_unnest("name_ids names name_ats:timestamptz name_keys")}
            AS named(contact_id, name, at, key)
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
)

_IDENTITY_ROWS = _unnest("channels identities apps contacts ats:timestamptz keys")
_IDENTITIES = text(
    f"""
    WITH seen AS (
        SELECT * FROM {_IDENTITY_ROWS} AS seen(channel, identity, app_id, contact_id, at, key)
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
)

_CONVERSATION_ROWS = _unnest("ids contacts apps events channels ats:timestamptz keys")
_CONVERSATIONS = text(
    f"""
    WITH event AS (
        SELECT * FROM {_CONVERSATION_ROWS} AS event(conversation_id, contact_id, app_id, kind, channel, at, key)
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
)

_MESSAGE_ROWS = _unnest(
    "ids apps contacts conversations channels identities kinds texts media ats:timestamptz referred:boolean modes"
)
_MESSAGES = text(
    f"""
    INSERT INTO messages (
        message_id, app_id, contact_id, conversation_id, channel, identity, kind, text, media_url, sent_at,
        has_referral, processing_mode
    )
    SELECT * FROM {_MESSAGE_ROWS}
    ON CONFLICT (message_id) DO NOTHING
    """
)

_CLICK_ROWS = _unnest(
    "ids clids sources types urls headlines bodies media images videos thumbnails "
    "welcomes apps channels identities contacts conversations ats:timestamptz "
    "referrals"
)
_AD_CLICKS = text(
    f"""
    WITH inserted AS (
    INSERT INTO ad_clicks (
        message_id, ctwa_clid, source_id, source_type, source_url, headline, body, media_type, image_url,
        video_url, thumbnail_url, welcome_text, app_id, channel, identity, contact_id, conversation_id, clicked_at,
        referral
    )
    SELECT ids, clids, sources, types, urls, headlines, bodies, media, images, videos, thumbnails, welcomes, apps,
           channels, identities, contacts, conversations, ats, CAST(referrals AS jsonb)
    FROM {_CLICK_ROWS} AS click(
        ids, clids, sources, types, urls, headlines, bodies, media, images, videos, thumbnails, welcomes, apps,
        channels, identities, contacts, conversations, ats, referrals
    )
    ON CONFLICT (message_id) DO NOTHING
    RETURNING *
    )
    {rollups.ON_NEW_CLICKS}
    """
)

_DELIVERY_ROWS = _unnest("ids statuses apps channels identities contacts conversations reasons ats:timestamptz modes")
_DELIVERIES = text(
    f"""
    INSERT INTO delivery_reports (
        message_id, status, app_id, channel, identity, contact_id, conversation_id, reason_code, reported_at,
        processing_mode
    )
    SELECT * FROM {_DELIVERY_ROWS}
    ON CONFLICT (message_id, status) DO NOTHING
    """
)

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
