"""Merge chains: the contact a contact id ended up in, and the contact ids that ended up in a contact.

Sinch merges a contact into another (CONTACT_MERGE); merges chain, and a chain is followed at most 64 steps, so
even a cycle ends.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["MEMBERS", "members", "resolve"]

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

# A CTE ``members(root, member, depth)``: each root of the parameter ``:roots``, and every contact id merged into
# it, directly or through a chain (the root itself at depth 0). Queries go on from it.
MEMBERS = """
    WITH RECURSIVE members(root, member, depth) AS (
        SELECT root, root, 0 FROM unnest(CAST(:roots AS text[])) AS root
        UNION
        SELECT members.root, merges.deleted_contact_id, members.depth + 1
        FROM members JOIN contact_merges AS merges ON merges.preserved_contact_id = members.member
        WHERE members.depth < 64
    )
"""

_MEMBERS = text(f"{MEMBERS} SELECT DISTINCT member, root FROM members ORDER BY member, root")


async def resolve(connection: AsyncConnection, contact_ids: set[str]) -> dict[str, str]:
    """Each contact id's root: the contact it was merged into, following chains."""
    if not contact_ids:
        return {}
    rows = await connection.execute(_RESOLVE, {"ids": sorted(contact_ids)})
    return {start: root for start, root in rows}


async def members(connection: AsyncConnection, roots: set[str]) -> list[tuple[str, str]]:
    """Every contact id merged into one of ``roots`` (the roots included) with its root: (member, root) pairs."""
    rows = await connection.execute(_MEMBERS, {"roots": sorted(roots)})
    return [(member, root) for member, root in rows]
