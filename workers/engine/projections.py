"""The tables users query — contacts, channel identities, conversations, messages, ad clicks, delivery reports —
written from a batch's facts in one statement: a set-based part per table, each reading its facts as a recordset
(`workers.engine.rows`), contact ids already resolved through merges.

Every table comes out the same whatever order callbacks arrive in and however often: times combine as earliest
and latest; a value that can change (a display name, a conversation's channel) is the one of the latest callback
by (time, business key); rows keyed by a message are written once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from workers.engine.facts import (
    Click,
    ConversationSeen,
    Delivery,
    Facts,
    IdentitySeen,
    Message,
    Naming,
    Sighting,
)
from workers.engine.precedence import take_newer
from workers.engine.rows import columns, encode, recordset

__all__ = ["Written", "write"]


class Written(NamedTuple):
    """What was new: message ids of the ad clicks, of the messages (clicks among them) and of the replies whose
    delivery reports were."""

    clicks: list[str]
    messages: list[str]
    reports: list[str]


async def write(connection: AsyncConnection, facts: Facts, roots: Mapping[str, str]) -> Written:
    """Write every table's rows for ``facts``, each contact id replaced by its root in ``roots``; return what was
    new."""
    moved = {contact: root for contact, root in roots.items() if contact != root}
    result = await connection.execute(
        _WRITE,
        {
            "sighting_rows": encode(_rooted(facts.sightings, moved)),
            "naming_rows": encode(_rooted(facts.names, moved)),
            "identity_rows": encode(_rooted(facts.identities, moved)),
            "conversation_rows": encode(_rooted(facts.conversations, moved)),
            "message_rows": encode(_rooted(facts.messages, moved)),
            "delivery_rows": encode(_rooted(facts.deliveries, moved)),
            "click_rows": encode(_rooted(facts.clicks, moved)),
        },
    )
    new: dict[str, list[str]] = {"click": [], "message": [], "report": []}
    for kind, message_id in result:
        new[kind].append(message_id)
    return Written(new["click"], new["message"], new["report"])


def _rooted(rows: Sequence[Mapping[str, Any]], moved: Mapping[str, str]) -> Sequence[Mapping[str, Any]]:
    """``rows`` with each ``contact_id`` that was merged away replaced by its root (a copy where one changes)."""
    if not moved:
        return rows
    return [{**row, "contact_id": moved[row["contact_id"]]} if row["contact_id"] in moved else row for row in rows]


def _insert(table: str, row: type, parameter: str) -> str:
    """Insert the rows of ``parameter``, a recordset of ``row`` whose columns are all columns of ``table``."""
    names = ", ".join(columns(row))
    return f"INSERT INTO {table} ({names}) SELECT {names} FROM {recordset(row, parameter)}"


_CONTACTS = f"""
    WITH seen AS (
        SELECT contact_id, min(at) AS first_seen_at, max(at) AS last_seen_at
        FROM {recordset(Sighting, "sighting_rows")}
        GROUP BY contact_id
    ), named AS (
        SELECT DISTINCT ON (contact_id) contact_id, name, at, key
        FROM {recordset(Naming, "naming_rows")}
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
        SELECT * FROM {recordset(IdentitySeen, "identity_rows")}
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

_CONVERSATIONS = f"""
    WITH event AS (
        SELECT * FROM {recordset(ConversationSeen, "conversation_rows")}
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

_MESSAGES = f"{_insert('messages', Message, 'message_rows')} ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
_DELIVERIES = (
    f"{_insert('delivery_reports', Delivery, 'delivery_rows')} ON CONFLICT (message_id, status) DO NOTHING "
    "RETURNING message_id"
)
_CLICKS = f"{_insert('ad_clicks', Click, 'click_rows')} ON CONFLICT (message_id) DO NOTHING RETURNING message_id"

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
            ("clicks_written", _CLICKS),
        ]
    )
    + " SELECT 'click', message_id FROM clicks_written"
    + " UNION ALL SELECT 'message', message_id FROM messages_written"
    + " UNION ALL SELECT DISTINCT 'report', message_id FROM deliveries_written"
)
