"""Contact merges: recorded as they arrive, followed to the contact a contact id ended up in (its root), and
applied to what was recorded before — rows of a merged-away contact move to its root.

Sinch merges a contact into another (CONTACT_MERGE); merges chain, and a chain is followed at most 64 steps, so
even a cycle ends. Of several merges of one contact, the latest by (time, business key) holds, whatever the order
they arrive in.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from workers.engine.facts import Merge
from workers.engine.precedence import take_newer
from workers.engine.rows import columns, encode, recordset
from workers.engine.schema import PROJECTION, tables

__all__ = ["Resolved", "apply", "chain_members", "members", "resolve"]


class Resolved(NamedTuple):
    """A batch's contact ids, each with its root; and the contacts whose rows moved (the rollups to redo)."""

    roots: dict[str, str]
    moved: set[str]


def chain_members(name: str, roots: str) -> str:
    """A recursive CTE ``name(root, member, depth)``: each root in the text array ``roots`` (a SQL expression) and
    every contact id merged into it, directly or through a chain — the root itself at depth 0. For a
    ``WITH RECURSIVE``."""
    return f"""
        {name}(root, member, depth) AS (
            SELECT root, root, 0 FROM unnest(CAST({roots} AS text[])) AS root
            UNION
            SELECT {name}.root, merges.deleted_contact_id, {name}.depth + 1
            FROM {name} JOIN contact_merges AS merges ON merges.preserved_contact_id = {name}.member
            WHERE {name}.depth < 64
        )
    """


async def apply(connection: AsyncConnection, merges: Sequence[Merge], contact_ids: Collection[str]) -> Resolved:
    """Record ``merges``, resolve ``contact_ids`` (which include the merges' own) to their roots, and move what is
    recorded under every contact merged into the merges' roots to those roots."""
    if merges:
        await connection.execute(_RECORD, {"merge_rows": encode(merges)})
    roots = await resolve(connection, contact_ids)
    moved = await _rekey(connection, {roots[merge["deleted_contact_id"]] for merge in merges}) if merges else set()
    return Resolved(roots, moved)


async def members(connection: AsyncConnection, roots: Collection[str]) -> list[tuple[str, str]]:
    """Every contact id merged into one of ``roots`` (the roots included) with its root: (member, root) pairs."""
    rows = await connection.execute(_MEMBERS, {"roots": sorted(roots)})
    return [(member, root) for member, root in rows]


async def resolve(connection: AsyncConnection, contact_ids: Collection[str]) -> dict[str, str]:
    """Each of ``contact_ids`` with its root: the contact it was merged into, through any chain (itself if none)."""
    if not contact_ids:
        return {}
    rows = await connection.execute(_RESOLVE, {"ids": sorted(contact_ids)})
    return {start: root for start, root in rows}


async def _rekey(connection: AsyncConnection, roots: set[str]) -> set[str]:
    """Move whatever is recorded under a contact merged into ``roots`` to its root, and fold the contact rows;
    the contacts concerned, moved and roots."""
    pairs = [(member, root) for member, root in await members(connection, roots) if member != root]
    if not pairs:
        return set()
    mapping = {"members": [member for member, _ in pairs], "roots": [root for _, root in pairs]}
    for statement in _REKEY:
        await connection.execute(statement, mapping)
    return {contact for pair in pairs for contact in pair}


_MERGE_COLUMNS = ", ".join(columns(Merge))

_RECORD = text(
    f"""
    INSERT INTO contact_merges AS merges ({_MERGE_COLUMNS})
    SELECT DISTINCT ON (deleted_contact_id) {_MERGE_COLUMNS}
    FROM {recordset(Merge, "merge_rows")}
    ORDER BY deleted_contact_id, merged_at DESC, merge_key DESC
    ON CONFLICT (deleted_contact_id) DO UPDATE SET
        preserved_contact_id = CASE WHEN (EXCLUDED.merged_at, EXCLUDED.merge_key) > (merges.merged_at, merges.merge_key)
            THEN EXCLUDED.preserved_contact_id ELSE merges.preserved_contact_id END,
        merge_key = GREATEST(merges.merge_key, EXCLUDED.merge_key),
        merged_at = GREATEST(merges.merged_at, EXCLUDED.merged_at)
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
    f"""
    WITH RECURSIVE {chain_members("members", ":roots")}
    SELECT DISTINCT member, root FROM members ORDER BY member, root
    """
)

_MERGED = "unnest(CAST(:members AS text[]), CAST(:roots AS text[])) AS merged(member, root)"

# Every projection whose rows name a contact moves them to the root (the rollups built from them are redone by the
# store afterwards; contacts, keyed by the contact, is folded below; conversion events are resolved when claimed).
_REKEY = [
    *(
        text(f"UPDATE {t.name} SET contact_id = merged.root FROM {_MERGED} WHERE {t.name}.contact_id = merged.member")
        for t in tables(PROJECTION, naming=("contact_id",))
    ),
    # A merged-away contact's times and name move to its root (the latest name wins)…
    text(
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
    ),
    # … and its own row keeps only the merge.
    text(
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
    ),
]
