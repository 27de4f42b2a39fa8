"""The day chains: ``ad_daily_people``, ``daily_people``, ``ad_daily_conversations`` and ``daily_conversations`` —
one row per key (an ad's person, a person, an ad's conversation, a conversation) per UTC day with a click, each row
naming the key's previous such day. A range of days counts each key once by reading only the range's rows: those
whose previous day is before the range (or none) are the keys' first days in it. No sort, no DISTINCT, however many
days the tables hold.

The people's rows also hold what the person did next after that day's clicks, each within a click's attribution
window: wrote again (a message of theirs other than the click's own), got a reply delivered (a reply whose status,
as ``message_status`` has it, is DELIVERED or READ), got one read, and how soon the first reply came after the
day's first click. Each flag has its own chain, so that "people who wrote again" over a range is counted the same
way.

Those facts depend on messages and delivery reports stored before or after the click, by any worker. So whoever
settles a person's rows holds the person's advisory lock, taken in one statement in a fixed order, and settles from
a fresh snapshot: the last writer to settle a person sees everything the others wrote. Settling a person recomputes
the facts of the rows a new message or report can change (the days of the clicks whose window holds it: for a
report, any report of the same reply, since its status is the reply's) and relinks every chain of the key.

Each statement is read whole in ``tests/workers/statements/workers.engine.chains.sql``.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["CONVERSATIONS", "FLAGS", "PEOPLE", "settle"]

# The people's flags: each is counted over a range by its own chain (previous_<flag>_day).
FLAGS = ("wrote_again", "replied", "reply_read")

# The chains: table → the columns naming its key (the day aside), and whether its rows hold the people's facts.
PEOPLE = {"ad_daily_people": ("source_id", "person_key"), "daily_people": ("person_key",)}
CONVERSATIONS = {
    "ad_daily_conversations": ("source_id", "conversation_id"),
    "daily_conversations": ("conversation_id",),
}

_WINDOW = "attribution_window()"
_UTC_DAY = "(({at}) AT TIME ZONE 'UTC')::date"

# Advisory locks of the two-key form, apart from the store's (one bigint): (this namespace, the key's hash).
_NAMESPACE = 0x63686E73  # "chns"


def _facts(row: str, by_ad: bool) -> str:
    """A sub-select of what the person of ``row`` (a row of a people chain) did next after that day's clicks (of
    its ad when ``by_ad``): one row, or none when ``row`` is outside the settled days of ``dirty``."""
    ad = f"AND click.source_id IS NOT DISTINCT FROM {row}.source_id" if by_ad else ""
    return f"""
        SELECT bool_or(fact.wrote) AS wrote_again, bool_or(fact.delivered) AS replied, bool_or(fact.read) AS reply_read,
               (array_agg(extract(epoch FROM fact.first_reply_at - click.clicked_at)
                          ORDER BY click.clicked_at, click.message_id))[1] AS first_reply_seconds
        FROM ad_clicks AS click
        CROSS JOIN LATERAL (
            SELECT EXISTS (
                       SELECT 1 FROM messages AS later
                       WHERE later.person_key = click.person_key
                         AND later.sent_at > click.clicked_at
                         AND later.sent_at <= click.clicked_at + {_WINDOW}
                         AND later.message_id <> click.message_id
                   ) AS wrote,
                   reply.first_reply_at, coalesce(reply.delivered, false) AS delivered,
                   coalesce(reply.read, false) AS read
            FROM (
                SELECT min(report.reported_at) AS first_reply_at,
                       bool_or(report.status IN ('DELIVERED', 'READ')) AS delivered,
                       bool_or(report.status = 'READ') AS read
                FROM (
                    -- Each reply's status as message_status has it, looked up by the reply's id.
                    SELECT report.reported_at,
                           (SELECT status FROM message_status WHERE message_status.message_id = report.message_id)
                               AS status
                    FROM delivery_reports AS report
                    WHERE report.person_key = click.person_key
                      AND report.reported_at >= click.clicked_at
                      AND report.reported_at <= click.clicked_at + {_WINDOW}
                ) AS report
            ) AS reply
        ) AS fact
        WHERE {row}.day BETWEEN dirty.first_day AND dirty.last_day
          AND click.person_key = {row}.person_key
          AND click.clicked_at >= ({row}.day::timestamp AT TIME ZONE 'UTC')
          AND click.clicked_at < (({row}.day + 1)::timestamp AT TIME ZONE 'UTC')
          {ad}
        HAVING count(*) > 0
    """


def _settle_people(table: str, key: tuple[str, ...]) -> str:
    """A data-modifying CTE settling the rows of ``table`` of the persons of ``dirty``: facts for their dirty days,
    then every chain of each key. Each person's rows are found by its key (a nested loop on the index, whatever the
    table's statistics say) and updated by their row address."""
    partition = ", ".join(key)
    facts = [*FLAGS, "first_reply_seconds"]
    chains = ["previous_day", *(f"previous_{flag}_day" for flag in FLAGS)]
    return f"""
    {table}_settled AS (
        UPDATE {table} AS row SET {", ".join(f"{name} = linked.{name}" for name in [*facts, *chains])}
        FROM (
            SELECT address, {", ".join(facts)},
                   lag(day) OVER chain AS previous_day,
                   {", ".join(f"max(day) FILTER (WHERE {flag}) OVER before AS previous_{flag}_day" for flag in FLAGS)}
            FROM (
                SELECT row.ctid AS address, row.day, {", ".join(f"row.{column}" for column in key)},
                       {", ".join(f"coalesce(found.{flag}, row.{flag}) AS {flag}" for flag in FLAGS)},
                       CASE WHEN found.wrote_again IS NULL THEN row.first_reply_seconds
                            ELSE found.first_reply_seconds END AS first_reply_seconds
                FROM dirty
                CROSS JOIN LATERAL (SELECT ctid, * FROM {table} WHERE person_key = dirty.person_key) AS row
                LEFT JOIN LATERAL ({_facts("row", by_ad="source_id" in key)}) AS found ON true
            ) AS settled
            WINDOW chain AS (PARTITION BY {partition} ORDER BY day),
                   before AS (chain ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        ) AS linked
        WHERE row.ctid = linked.address
          AND ({", ".join(f"row.{name}" for name in [*facts, *chains])})
              IS DISTINCT FROM ({", ".join(f"linked.{name}" for name in [*facts, *chains])})
    )
    """


def _link_conversations(table: str, key: tuple[str, ...]) -> str:
    """A data-modifying CTE relinking the rows of ``table`` of the conversations of ``talks``, found and updated as
    the people's are."""
    partition = ", ".join(f"row.{column}" for column in key)
    return f"""
    {table}_linked AS (
        UPDATE {table} AS row SET previous_day = linked.previous_day
        FROM (
            SELECT row.ctid AS address, lag(row.day) OVER (PARTITION BY {partition} ORDER BY row.day) AS previous_day
            FROM talks
            CROSS JOIN LATERAL (SELECT ctid, * FROM {table} WHERE conversation_id = talks.conversation_id) AS row
        ) AS linked
        WHERE row.ctid = linked.address AND row.previous_day IS DISTINCT FROM linked.previous_day
    )
    """


# Who and what a batch touched, from its parameters (ids joined as rows: a plan that scans a table tests each row
# once against them, not against a whole array): the messages it stored (:messages, clicks included), the
# replies it stored reports of (:reports), persons to settle whole (:persons, or all with :everyone) and
# conversations (:conversations, with those of the clicks among :messages). A person's dirty days are those a
# click's window could reach from what touched them.
_TOUCHED = f"""
    touched AS (
        SELECT person_key, {_UTC_DAY.format(at=f"sent_at - {_WINDOW}")} AS first_day,
               {_UTC_DAY.format(at="sent_at")} AS last_day
        FROM unnest(CAST(:messages AS text[])) AS given(message_id) JOIN messages USING (message_id)
        WHERE person_key IS NOT NULL
        UNION ALL
        SELECT report.person_key, reply.first_day, reply.last_day
        FROM (
            SELECT message_id, {_UTC_DAY.format(at=f"min(reported_at) - {_WINDOW}")} AS first_day,
                   {_UTC_DAY.format(at="max(reported_at)")} AS last_day
            FROM unnest(CAST(:reports AS text[])) AS given(message_id) JOIN delivery_reports USING (message_id)
            GROUP BY message_id
        ) AS reply
        JOIN delivery_reports AS report USING (message_id)
        WHERE report.person_key IS NOT NULL
        UNION ALL
        SELECT person_key, '-infinity'::date, 'infinity'::date FROM unnest(CAST(:persons AS text[])) AS person_key
        UNION ALL
        SELECT DISTINCT person_key, '-infinity'::date, 'infinity'::date FROM daily_people WHERE :everyone
    ), dirty AS (
        SELECT person_key, min(first_day) AS first_day, max(last_day) AS last_day FROM touched GROUP BY person_key
    ), talks AS (
        SELECT conversation_id
        FROM unnest(CAST(:messages AS text[])) AS given(message_id) JOIN ad_clicks USING (message_id)
        WHERE conversation_id IS NOT NULL
        UNION
        SELECT unnest(CAST(:conversations AS text[]))
        UNION
        SELECT conversation_id FROM daily_conversations WHERE :everyone
    )
"""

# Persons and conversations are locked by bucket: a batch takes at most _BUCKETS locks, however many persons it
# touched (Postgres's lock table is small), in one order (no deadlock between batches). And JIT is turned off for
# the rest of the transaction: the settling statement's plan is costed above Postgres's JIT threshold, and compiling
# it took 2 s where running it takes milliseconds.
_BUCKETS = 256
_LOCK = text(
    f"""
    WITH {_TOUCHED}, buckets AS (
        SELECT DISTINCT hashtext(key) & {_BUCKETS - 1} AS bucket FROM (
            SELECT 'person:' || person_key FROM dirty UNION ALL SELECT 'conversation:' || conversation_id FROM talks
        ) AS named(key)
    )
    SELECT (
        SELECT count(pg_advisory_xact_lock({_NAMESPACE}, bucket))
        FROM (SELECT bucket FROM buckets ORDER BY bucket) AS ordered
    ), set_config('jit', 'off', true)
    """
)

_SETTLE = text(
    f"""
    WITH {_TOUCHED},
    {", ".join(_settle_people(table, key) for table, key in PEOPLE.items())},
    {", ".join(_link_conversations(table, key) for table, key in CONVERSATIONS.items())}
    SELECT count(*) FROM dirty
    """
)


async def settle(
    connection: AsyncConnection,
    messages: Collection[str] = (),
    reports: Collection[str] = (),
    persons: Collection[str] = (),
    conversations: Collection[str] = (),
    *,
    everyone: bool = False,
) -> None:
    """Settle the chains after a transaction stored the messages ``messages`` (message ids, clicks among them)
    and reports of the replies ``reports`` (their message ids), and after the rows of ``persons`` (person keys:
    all their days) and ``conversations`` changed — or every row, ``everyone``. Under the locks of all those, taken
    in a statement of their own, so that settling sees what every other writer of theirs committed."""
    if not (messages or reports or persons or conversations or everyone):
        return
    params = {
        "messages": sorted(messages),
        "reports": sorted(reports),
        "persons": sorted(persons),
        "conversations": sorted(conversations),
        "everyone": everyone,
    }
    await connection.execute(_LOCK, params)
    await connection.execute(_SETTLE, params)
