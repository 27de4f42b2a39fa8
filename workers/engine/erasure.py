"""Erasure after CONTACT_DELETE: no personal data of the contact survives, the archive included.

A contact is erased when it, or any contact merged into it, was deleted. Its phone numbers and other identities
become ``erased:<contact id>`` everywhere — an opaque person key, so its ad clicks still count, once per person —
message texts and media URLs are dropped, its display name too, and the archived payloads are redacted the same
way, so replaying the archive rebuilds the erased state. A keyed fingerprint of each erased identity is kept, so a
late callback carrying one is erased as it arrives, in whichever order callbacks come.

The store asks first (`Eraser.find`) — which tells it whether the batch needs the exclusive lock — and erases
(`Eraser.erase`) once the batch's rows are written. Which tables hold identities and personal content comes from
``schema`` (their kind, their columns); the statements are read whole in ``tests/workers/statements/``. A
conversion event is erased by one rule (`Eraser.erase_conversions`), whether the worker's erasure reaches it or a
sender finds its person erased when claiming it.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping, Sequence
from typing import Any, NamedTuple

import orjson
from sqlalchemy import PrimaryKeyConstraint, Table, UniqueConstraint, text
from sqlalchemy.ext.asyncio import AsyncConnection

from ingest.callback import Trigger
from workers.conversions.status import ERASE
from workers.engine import merges
from workers.engine.facts import BODY_KEYS, Deletion
from workers.engine.precedence import take_newer
from workers.engine.rows import encode, recordset
from workers.engine.schema import PROJECTION, personal_columns, tables

__all__ = ["Eraser", "Erasure", "opaque_identity", "redact"]

_ERASED = "erased:"
_CONTACT_OBJECTS = ("contact", "preserved_contact", "deleted_contact")
_CONTACT_PERSONAL = ("display_name", "email", "external_id", "metadata")


def opaque_identity(root: str) -> str:
    """What an erased contact's identities become: an opaque key that still tells people apart."""
    return f"{_ERASED}{root}"


class Erasure(NamedTuple):
    """What a batch touches that is erased: contacts (roots), and identities erased before, each with the opaque
    identity it became."""

    roots: set[str]
    identities: dict[tuple[str, str], str]


class Eraser:
    """Erases contacts; holds the database's erasure key, which makes identity fingerprints unguessable."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    async def load(cls, connection: AsyncConnection) -> Eraser:
        key = await connection.scalar(text("SELECT key FROM erasure_key WHERE id = 1"))
        if not isinstance(key, bytes):
            raise RuntimeError("no erasure key: run `ctwa migrate`")
        return cls(key)

    def fingerprint(self, channel: str, identity: str) -> bytes:
        return hmac.digest(self._key, f"{channel}\x1f{identity}".encode(), "sha256")

    async def find(
        self,
        connection: AsyncConnection,
        deletions: Sequence[Deletion],
        roots: Collection[str],
        identities: Collection[tuple[str, str]],
    ) -> Erasure | None:
        """Record ``deletions``; then which of ``roots`` are erased (deleted, or with a deleted contact merged into
        them) and which of ``identities`` (channel, identity) were erased before. ``None``: nothing is."""
        if deletions:
            await connection.execute(_RECORD_DELETIONS, {"deletion_rows": encode(deletions)})
        erased = set((await connection.execute(_ERASED_ROOTS, {"roots": sorted(roots)})).scalars()) if roots else set()
        matched = await self._match(connection, identities)
        return Erasure(erased, matched) if erased or matched else None

    async def _match(
        self, connection: AsyncConnection, identities: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        wanted = {self.fingerprint(channel, identity): (channel, identity) for channel, identity in identities}
        if not wanted:
            return {}
        rows = await connection.execute(
            text("SELECT fingerprint, opaque_identity FROM erased_identities WHERE fingerprint = ANY(:fingerprints)"),
            {"fingerprints": list(wanted)},
        )
        return {wanted[bytes(fingerprint)]: opaque for fingerprint, opaque in rows}

    async def erase(self, connection: AsyncConnection, erasure: Erasure) -> set[tuple[str, str]]:
        """Erase the contacts ``erasure.roots`` (with everything merged into them) and the identities it names;
        return the identities whose rows changed, as they were and as they are now (channel, identity)."""
        roots = erasure.roots
        members = dict(await merges.members(connection, roots))
        found = await connection.execute(_IDENTITIES_OF, {"roots": list(roots)})
        erased = dict(erasure.identities)
        for channel, identity, contact_id in found:
            erased.setdefault((channel, identity), opaque_identity(contact_id))
        if erased:
            await connection.execute(
                text(
                    "INSERT INTO erased_identities (fingerprint, opaque_identity) "
                    "SELECT * FROM unnest(CAST(:fingerprints AS bytea[]), CAST(:opaques AS text[])) "
                    "ON CONFLICT (fingerprint) DO NOTHING"
                ),
                {
                    "fingerprints": [self.fingerprint(channel, identity) for channel, identity in erased],
                    "opaques": list(erased.values()),
                },
            )
        mapping = {
            "roots": list(roots),
            "channels": [channel for channel, _ in erased],
            "identities": [identity for _, identity in erased],
            "opaques": list(erased.values()),
            "members": list(members),
            "member_roots": list(members.values()),
        }
        for statement in _ERASE_ROWS:
            await connection.execute(statement, mapping)
        events = await connection.execute(_CONVERSIONS_OF, mapping)
        await self.erase_conversions(connection, {event_id: opaque for event_id, opaque in events})
        await _redact_archive(connection, members, erased)
        return set(erased) | {(channel, opaque) for (channel, _), opaque in erased.items()}

    async def erase_conversions(self, connection: AsyncConnection, events: Mapping[int, str]) -> None:
        """Erase the conversion events ``events`` (by id, each with the opaque identity of its person)."""
        if events:
            await connection.execute(_ERASE_CONVERSIONS, {"ids": list(events), "opaques": list(events.values())})


_RECORD_DELETIONS = text(
    f"""
    INSERT INTO contacts (contact_id, deleted_at)
    SELECT contact_id, min(deleted_at) FROM {recordset(Deletion, "deletion_rows")} GROUP BY contact_id
    ON CONFLICT (contact_id) DO UPDATE SET deleted_at = LEAST(contacts.deleted_at, EXCLUDED.deleted_at)
    """
)

# Those of ``:roots`` that are erased: deleted themselves, or with a deleted contact merged into them.
_ERASED_ROOTS = text(
    f"""
    WITH RECURSIVE {merges.chain_members("members", ":roots")}
    SELECT DISTINCT members.root
    FROM members JOIN contacts ON contacts.contact_id = members.member
    WHERE contacts.deleted_at IS NOT NULL
    """
)

_SEEN_WITH_IDENTITIES = tables(PROJECTION, naming=("contact_id", "channel", "identity"))

# The identities erased contacts were seen with, in any projection.
_IDENTITIES_OF = text(
    "SELECT DISTINCT channel, identity, contact_id FROM (\n    "
    + "\n    UNION ALL ".join(
        f"SELECT channel, identity, contact_id FROM {table.name} WHERE contact_id = ANY(:roots)"
        for table in _SEEN_WITH_IDENTITIES
    )
    + f"\n) AS seen\nWHERE channel IS NOT NULL AND identity IS NOT NULL AND identity NOT LIKE '{_ERASED}%'\n"
    "ORDER BY channel, identity, contact_id"
)

_MAPPING = "unnest(CAST(:channels AS text[]), CAST(:identities AS text[]), CAST(:opaques AS text[]))"


def _keyed_by_identity(table: Table) -> bool:
    """Whether an identity is part of a key of ``table``: two rows may become one when their identities are erased."""
    return any(
        "identity" in constraint.columns
        for constraint in table.constraints
        if isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint)
    )


def _emptied(table: Table) -> list[str]:
    return [f"{column} = NULL" for column in personal_columns(table)]


_WITH_IDENTITIES = tables(PROJECTION, naming=("channel", "identity"))

_ERASE_ROWS = [
    # Rows with an erased identity take its opaque one and lose their personal content…
    *(
        text(
            f"UPDATE {table.name} SET {', '.join(['identity = erased.opaque', *_emptied(table)])}\n"
            f"FROM {_MAPPING} AS erased(channel, identity, opaque)\n"
            f"WHERE {table.name}.channel = erased.channel AND {table.name}.identity = erased.identity"
        )
        for table in _WITH_IDENTITIES
        if not _keyed_by_identity(table)
    ),
    # … so do the rows of the erased contacts, whatever identity they carry.
    *(
        text(f"UPDATE {table.name} SET {', '.join(_emptied(table))} WHERE contact_id = ANY(:members)")
        for table in tables(PROJECTION)
        if personal_columns(table) and "contact_id" in table.c
    ),
    # Where an identity is part of the key, an identity row becomes the opaque one; several numbers of one contact on
    # a channel become one row. The one such table: a test fails when another appears with no statement of its own.
    text(
        f"""
        WITH erased AS (
            DELETE FROM channel_identities AS row
            USING {_MAPPING} AS erased(channel, identity, opaque)
            WHERE row.channel = erased.channel AND row.identity = erased.identity
            RETURNING row.*, erased.opaque
        )
        INSERT INTO channel_identities
            (channel, identity, app_id, contact_id, first_seen_at, last_seen_at, contact_at, contact_key)
        SELECT DISTINCT ON (channel, opaque, app_id)
            channel, opaque, app_id, contact_id,
            min(first_seen_at) OVER same, max(last_seen_at) OVER same, contact_at, contact_key
        FROM erased
        WINDOW same AS (PARTITION BY channel, opaque, app_id)
        ORDER BY channel, opaque, app_id, contact_at DESC NULLS LAST, contact_key DESC NULLS LAST
        ON CONFLICT (channel, identity, app_id) DO UPDATE SET
            first_seen_at = LEAST(channel_identities.first_seen_at, EXCLUDED.first_seen_at),
            last_seen_at = GREATEST(channel_identities.last_seen_at, EXCLUDED.last_seen_at),
            {take_newer("channel_identities", "contact", ["contact_id"])}
        """
    ),
]

# An erased person's conversion events, each with what its identity becomes: the opaque identity its own was erased
# to, else that of its (root) contact.
_CONVERSIONS_OF = text(
    f"""
    SELECT DISTINCT ON (id) id, opaque FROM (
        SELECT event.id, erased.opaque, 0 AS rank
        FROM conversion_events AS event JOIN {_MAPPING} AS erased(channel, identity, opaque)
        ON event.channel = erased.channel AND event.identity = erased.identity
        UNION ALL
        SELECT event.id, '{_ERASED}' || merged.root, 1
        FROM conversion_events AS event
        JOIN unnest(CAST(:members AS text[]), CAST(:member_roots AS text[])) AS merged(member, root)
        ON event.contact_id = merged.member
    ) AS found
    ORDER BY id, rank
    """
)

# The erasure of a conversion event, whichever way its person was found erased (by the worker's erasure, or by a
# sender claiming it later): its identity becomes the opaque one, its custom data goes, and unless it was settled
# already it is never sent (status.ERASE).
_ERASE_CONVERSIONS = text(
    f"""
    UPDATE conversion_events AS event SET
        custom_data = NULL,
        identity = CASE WHEN event.identity IS NULL OR event.identity LIKE '{_ERASED}%' THEN event.identity
                        ELSE erased.opaque END,
        status = CASE WHEN {ERASE.where} THEN '{ERASE.target}' ELSE status END,
        last_error = CASE WHEN {ERASE.where} THEN 'the person was deleted' ELSE last_error END
    FROM unnest(CAST(:ids AS bigint[]), CAST(:opaques AS text[])) AS erased(id, opaque)
    WHERE event.id = erased.id
    """
)


async def _redact_archive(
    connection: AsyncConnection, members: Mapping[str, str], erased: Mapping[tuple[str, str], str]
) -> None:
    by_identity = {identity: opaque for (_, identity), opaque in erased.items()}
    rows = await connection.execute(
        text(
            "SELECT key, trigger, payload, contact_ids FROM callbacks "
            "WHERE contact_ids && CAST(:members AS text[]) OR identity = ANY(:identities)"
        ),
        {"members": list(members), "identities": list(by_identity)},
    )
    keys, payloads, identities = [], [], []
    for key, trigger, payload, contact_ids in rows:
        root = next((members[c] for c in contact_ids or () if c in members), None)
        redacted, identity = redact(Trigger.named(trigger), payload, root, by_identity)
        keys.append(key)
        payloads.append(orjson.dumps(redacted).decode())
        identities.append(identity)
    if keys:
        await connection.execute(
            text(
                "UPDATE callbacks SET payload = CAST(redacted.payload AS jsonb), identity = redacted.identity "
                "FROM unnest(CAST(:keys AS text[]), CAST(:payloads AS text[]), CAST(:identities AS text[])) "
                "AS redacted(key, payload, identity) WHERE callbacks.key = redacted.key"
            ),
            {"keys": keys, "payloads": payloads, "identities": identities},
        )


def redact(
    trigger: Trigger, payload: dict[str, Any], root: str | None, identities: Mapping[str, str]
) -> tuple[dict[str, Any], str | None]:
    """``payload`` without personal data; and its channel identity as it now reads.

    Identities become their opaque key (``identities`` maps known ones; any other of a callback about contact
    ``root`` becomes ``erased:<root>``); message contents keep their kind but lose their text, media and
    coordinates; contact objects lose names, emails, external ids and metadata. Ad data stays.
    """

    def opaque(identity: object) -> object:
        if isinstance(identity, str) and identity:
            if identity in identities:
                return identities[identity]
            if root is not None and not identity.startswith(_ERASED):
                return opaque_identity(root)
        return identity

    body = payload.get(BODY_KEYS.get(trigger, ""))
    if not isinstance(body, dict):
        return payload, None
    channel_identity = body.get("channel_identity")
    if isinstance(channel_identity, dict):
        channel_identity["identity"] = opaque(channel_identity.get("identity"))
    if "identity" in body:
        body["identity"] = opaque(body["identity"])
    content = body.get("contact_message")
    if isinstance(content, dict):
        body["contact_message"] = {name: ({} if name != "reply_to" else value) for name, value in content.items()}
    for name in _CONTACT_OBJECTS:
        contact = body.get(name)
        if isinstance(contact, dict):
            for field in _CONTACT_PERSONAL:
                if field in contact:
                    contact[field] = ""
            for item in contact.get("channel_identities") or ():
                if isinstance(item, dict):
                    item["identity"] = opaque(item.get("identity"))
    if trigger is Trigger.UNSUPPORTED and "payload" in body:
        body["payload"] = ""
    identity = channel_identity.get("identity") if isinstance(channel_identity, dict) else body.get("identity")
    return payload, identity if isinstance(identity, str) and identity else None
