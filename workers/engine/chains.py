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

A batch's transaction inserts its clicks' rows (``rollups``) and queues what it touched in ``chain_backlog``
(`queue`); every worker settles the queue every ``CTWA_CHAINS_INTERVAL_S`` (`settle_queued`), so that a person
touched by many batches in that time is settled once, outside the batches' transactions. Until then a new row
counts as its person's first day. Settling a person recomputes the facts of the rows a new message or report can
change (the days of the clicks whose window holds it: for a report, any report of the same reply, since its status
is the reply's) and relinks every chain of the key. Those facts depend on messages and delivery reports stored by
any worker: whoever settles a person holds the person's advisory lock, taken in one statement in a fixed order, and
settles from a fresh snapshot, so the last to settle a person sees everything committed before it; a queue entry
is deleted by the pass that settles it, in the same transaction, so that what a batch commits after a pass began
waits for the next one.

Each statement is read whole in ``tests/workers/statements/workers.engine.chains.sql``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from workers.engine.locks import lock

__all__ = ["CONVERSATIONS", "FLAGS", "PEOPLE", "Touched", "claim", "queue", "settle", "settle_queued"]

# The people's flags: each is counted over a range by its own chain (previous_<flag>_day).
FLAGS = ("wrote_again", "replied", "reply_read")

# The chains: table → the columns naming its key (the day aside). The people's rows hold their facts too.
PEOPLE = {"ad_daily_people": ("source_id", "person_key"), "daily_people": ("person_key",)}
CONVERSATIONS = {
    "ad_daily_conversations": ("source_id", "conversation_id"),
    "daily_conversations": ("conversation_id",),
}

_WINDOW = "attribution_window()"
_UTC_DAY = "(({at}) AT TIME ZONE 'UTC')::date"

# Advisory locks of the two-key form, apart from the store's (one bigint): (this namespace, the key's hash).
_NAMESPACE = 0x63686E73  # "chns"


# message_status's order of statuses (migration 0002): the status of a reply is its reports' highest.
_RANK = {"FAILED": 5, "READ": 4, "DELIVERED": 3, "QUEUED_ON_CHANNEL": 2, "SWITCHING_CHANNEL": 1}
_RANKED = f"CASE report.status {' '.join(f'WHEN {status!r} THEN {rank}' for status, rank in _RANK.items())} ELSE 0 END"


# What a person did next after the clicks of one of their rows of ad_daily_people on a dirty day (``row``): one
# row, looked up click by click. Its first click orders the rows of a day: the all-ads row's first reply is that of
# the person's first click of the day.
_FACTS = f"""
    SELECT bool_or(fact.wrote) AS wrote_again, bool_or(fact.delivered) AS replied, bool_or(fact.read) AS reply_read,
           (array_agg(extract(epoch FROM fact.first_reply_at - click.clicked_at)
                      ORDER BY click.clicked_at, click.message_id))[1] AS first_reply_seconds,
           min(click.clicked_at) AS first_clicked_at,
           (array_agg(click.message_id ORDER BY click.clicked_at, click.message_id))[1] AS first_message_id
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
            SELECT min(reported.first_at) AS first_reply_at,
                   bool_or(status.rank IN ({_RANK["DELIVERED"]}, {_RANK["READ"]})) AS delivered,
                   bool_or(status.rank = {_RANK["READ"]}) AS read
            FROM (
                SELECT message_id, min(reported_at) AS first_at FROM delivery_reports
                WHERE person_key = click.person_key
                  AND reported_at >= click.clicked_at AND reported_at <= click.clicked_at + {_WINDOW}
                GROUP BY message_id
            ) AS reported
            CROSS JOIN LATERAL (
                -- The reply's status as message_status has it: the highest in its order (FAILED over READ over
                -- DELIVERED…), from all its reports, read from the primary key's index.
                SELECT max({_RANKED}) AS rank FROM delivery_reports AS report
                WHERE report.message_id = reported.message_id
            ) AS status
        ) AS reply
    ) AS fact
    WHERE click.person_key = row.person_key
      AND click.clicked_at >= (row.day::timestamp AT TIME ZONE 'UTC')
      AND click.clicked_at < ((row.day + 1)::timestamp AT TIME ZONE 'UTC')
      AND click.source_id IS NOT DISTINCT FROM row.source_id
"""

_FACT_COLUMNS = [*FLAGS, "first_reply_seconds"]
_CHAIN_COLUMNS = ["previous_day", *(f"previous_{flag}_day" for flag in FLAGS)]

# Who and what a batch touched, from its ids: the messages it stored (:messages, clicks included), its new clicks
# (:clicks, which made rows), the replies it stored reports of (:reports). A person's dirty days are those a
# click's window could reach from what touched them, by cause; conversations are those of the new clicks.
#
# Every row is looked up by its key, one key at a time (LATERAL sub-selects kept apart with LIMIT or OFFSET 0, so
# that the planner cannot turn them into a join): planned as a join, a young table's never-analyzed statistics
# made it a scan of the whole table, every batch. Rows are updated by their address (`ctid = ANY(…)`, a TID scan).
_TOUCHED_BY_IDS = f"""
    touched AS (
        -- A new message can only make earlier clicks' "wrote again" true: their rows are looked at while false.
        SELECT message.person_key, {_UTC_DAY.format(at=f"message.sent_at - {_WINDOW}")} AS first_day,
               {_UTC_DAY.format(at="message.sent_at")} AS last_day, 'message' AS cause
        FROM unnest(CAST(:messages AS text[])) AS given(message_id)
        CROSS JOIN LATERAL (
            SELECT person_key, sent_at FROM messages WHERE message_id = given.message_id LIMIT 1
        ) AS message
        WHERE message.person_key IS NOT NULL
        UNION ALL
        -- A new click changes its row's facts whatever they were (its first click, its windows).
        SELECT click.person_key, {_UTC_DAY.format(at="click.clicked_at")}, {_UTC_DAY.format(at="click.clicked_at")},
               'click'
        FROM unnest(CAST(:clicks AS text[])) AS given(message_id)
        CROSS JOIN LATERAL (
            SELECT person_key, clicked_at FROM ad_clicks WHERE message_id = given.message_id LIMIT 1
        ) AS click
        WHERE click.person_key IS NOT NULL
        UNION ALL
        SELECT person.key, reply.first_day, reply.last_day, 'report'
        FROM unnest(CAST(:reports AS text[])) AS given(message_id)
        CROSS JOIN LATERAL (
            SELECT {_UTC_DAY.format(at=f"min(reported_at) - {_WINDOW}")} AS first_day,
                   {_UTC_DAY.format(at="max(reported_at)")} AS last_day,
                   array_agg(DISTINCT person_key) FILTER (WHERE person_key IS NOT NULL) AS persons
            FROM delivery_reports WHERE message_id = given.message_id
        ) AS reply
        CROSS JOIN LATERAL unnest(reply.persons) AS person(key)
    ), talks AS (
        SELECT click.conversation_id
        FROM unnest(CAST(:clicks AS text[])) AS given(message_id)
        CROSS JOIN LATERAL (
            SELECT conversation_id FROM ad_clicks WHERE message_id = given.message_id LIMIT 1
        ) AS click
        WHERE click.conversation_id IS NOT NULL
    )
"""

# What a settling pass settles, from its parameters: persons' dirty days by cause (:persons, :first_days,
# :last_days, :causes: 'message', 'click', 'report', or 'whole' for all their days), or every person (:everyone);
# and conversations (:conversations, or all).
_TOUCHED = """
    touched AS (
        SELECT * FROM unnest(
            CAST(:persons AS text[]), CAST(:first_days AS date[]), CAST(:last_days AS date[]), CAST(:causes AS text[])
        ) AS given(person_key, first_day, last_day, cause)
        UNION ALL
        SELECT DISTINCT person_key, '-infinity'::date, 'infinity'::date, 'whole' FROM daily_people WHERE :everyone
    ), dirty AS (
        SELECT person_key,
               min(first_day) FILTER (WHERE cause <> 'message') AS first_day,
               max(last_day) FILTER (WHERE cause <> 'message') AS last_day,
               min(first_day) FILTER (WHERE cause = 'message') AS wrote_first_day,
               max(last_day) FILTER (WHERE cause = 'message') AS wrote_last_day
        FROM touched GROUP BY person_key
    ), talks AS (
        SELECT unnest(CAST(:conversations AS text[])) AS conversation_id
        UNION
        SELECT conversation_id FROM daily_conversations WHERE :everyone
    )
"""


def _rows_of(table: str, key: str, owner: str) -> str:
    """A LATERAL sub-select of the rows of ``table`` (and their address) whose ``key`` is ``owner``'s: by the index
    of ``key``, nothing else in it for the planner to prefer another index for."""
    return f"(SELECT ctid, * FROM {table} WHERE {key} = {owner}.{key} OFFSET 0)"


# The dirty persons' rows of ad_daily_people on their dirty days, with what they did next (found once, for both
# tables: the all-ads row of a day is its ad rows together).
_FOUND = f"""
    looked_at AS (
        -- A row looked at for a message alone takes only its "wrote again": what else it found waits for the
        -- entry that caused it (a report stored since), so that a row and its day's all-ads row move together.
        SELECT row.ctid AS address, row.day, row.person_key, facts.wrote_again,
               {
    ", ".join(
        f"CASE WHEN row.day BETWEEN dirty.first_day AND dirty.last_day THEN facts.{name} ELSE row.{name} END AS {name}"
        for name in ("replied", "reply_read", "first_reply_seconds")
    )
},
               facts.first_clicked_at, facts.first_message_id,
               row.day BETWEEN dirty.first_day AND dirty.last_day AS whole_day,
               ({", ".join(f"row.{name}" for name in _FACT_COLUMNS)}) AS stored
        FROM dirty
        CROSS JOIN LATERAL {_rows_of("ad_daily_people", "person_key", "dirty")} AS row
        CROSS JOIN LATERAL ({_FACTS}) AS facts
        WHERE row.day BETWEEN dirty.first_day AND dirty.last_day
           OR (row.day BETWEEN dirty.wrote_first_day AND dirty.wrote_last_day AND NOT row.wrote_again)
    ), found AS (
        SELECT *, stored IS DISTINCT FROM ({", ".join(_FACT_COLUMNS)}) AS changed FROM looked_at
    ), changed AS (
        -- The persons whose rows may change: a fact found differs, a click made a row, or they are settled whole.
        SELECT person_key FROM found WHERE changed
        UNION
        SELECT person_key FROM touched WHERE cause IN ('click', 'whole')
    ), found_all_ads AS (
        -- A day whose ad rows were all found (whole_day) is their sum; on a day touched only by messages, the ad
        -- rows whose "wrote again" was already true were not looked at, and a message changes nothing else: the
        -- all-ads row keeps its facts, and wrote again if any ad row now did.
        SELECT ads.day, ads.person_key,
               CASE WHEN ads.whole_day THEN ads.wrote_again ELSE kept.wrote_again OR ads.wrote_again END
                   AS wrote_again,
               {
    ", ".join(
        f"CASE WHEN ads.whole_day THEN ads.{name} ELSE kept.{name} END AS {name}"
        for name in ("replied", "reply_read", "first_reply_seconds")
    )
}
        FROM (
            SELECT day, person_key, bool_and(whole_day) AS whole_day,
                   {", ".join(f"bool_or({flag}) AS {flag}" for flag in FLAGS)},
                   (array_agg(first_reply_seconds ORDER BY first_clicked_at, first_message_id))[1]
                       AS first_reply_seconds
            FROM found GROUP BY day, person_key
        ) AS ads
        CROSS JOIN LATERAL (
            SELECT * FROM daily_people WHERE day = ads.day AND person_key = ads.person_key LIMIT 1
        ) AS kept
    )
"""


def _settle_people(table: str, key: tuple[str, ...], found: str, match: str) -> str:
    """CTEs settling the rows of ``table`` of the persons ``changed``: the facts ``found`` (a CTE, joined to a row by
    ``match``) for their dirty days, then every chain of each key."""
    partition = ", ".join(key)
    names = [*_FACT_COLUMNS, *_CHAIN_COLUMNS]
    return f"""
    {table}_linked AS (
        SELECT address, {", ".join(_FACT_COLUMNS)},
               lag(day) OVER chain AS previous_day,
               {", ".join(f"max(day) FILTER (WHERE {flag}) OVER before AS previous_{flag}_day" for flag in FLAGS)}
        FROM (
            SELECT row.ctid AS address, row.day, {", ".join(f"row.{column}" for column in key)},
                   {", ".join(f"coalesce({found}.{flag}, row.{flag}) AS {flag}" for flag in FLAGS)},
                   CASE WHEN {found}.wrote_again IS NULL THEN row.first_reply_seconds
                        ELSE {found}.first_reply_seconds END AS first_reply_seconds
            FROM changed CROSS JOIN LATERAL {_rows_of(table, "person_key", "changed")} AS row
            LEFT JOIN {found} ON {match}
        ) AS settled
        WINDOW chain AS (PARTITION BY {partition} ORDER BY day),
               before AS (chain ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    ), {table}_settled AS (
        UPDATE {table} AS row SET {", ".join(f"{name} = linked.{name}" for name in names)}
        FROM {table}_linked AS linked
        WHERE row.ctid = ANY(ARRAY(SELECT address FROM {table}_linked)) AND row.ctid = linked.address
          AND ({", ".join(f"row.{name}" for name in names)})
              IS DISTINCT FROM ({", ".join(f"linked.{name}" for name in names)})
    )
    """


def _link_conversations(table: str, key: tuple[str, ...]) -> str:
    """CTEs relinking the rows of ``table`` of the conversations of ``talks``, found and updated as the people's
    are."""
    partition = ", ".join(f"row.{column}" for column in key)
    return f"""
    {table}_linked AS (
        SELECT row.ctid AS address, lag(row.day) OVER (PARTITION BY {partition} ORDER BY row.day) AS previous_day
        FROM talks CROSS JOIN LATERAL {_rows_of(table, "conversation_id", "talks")} AS row
    ), {table}_settled AS (
        UPDATE {table} AS row SET previous_day = linked.previous_day
        FROM {table}_linked AS linked
        WHERE row.ctid = ANY(ARRAY(SELECT address FROM {table}_linked)) AND row.ctid = linked.address
          AND row.previous_day IS DISTINCT FROM linked.previous_day
    )
    """


# Persons and conversations are locked by bucket: a batch takes at most _BUCKETS locks, however many persons it
# touched (Postgres's lock table is small), in one order (no deadlock between batches). And for the rest of the
# transaction, JIT is off — the settling statement's plan is costed above Postgres's JIT threshold, and compiling it
# took 2 s where running it takes milliseconds — and the settling statement is planned for its own parameters
# each time: a plan kept from a batch when the tables were small scanned them whole once they were not.
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
    ), set_config('jit', 'off', true), set_config('plan_cache_mode', 'force_custom_plan', true)
    """
)

_SETTLE = text(
    f"""
    WITH {_TOUCHED}, {_FOUND},
    {_settle_people("ad_daily_people", PEOPLE["ad_daily_people"], "found", "found.address = row.ctid")},
    {
        _settle_people(
            "daily_people",
            PEOPLE["daily_people"],
            "found_all_ads",
            "found_all_ads.day = row.day AND found_all_ads.person_key = row.person_key",
        )
    },
    {", ".join(_link_conversations(table, key) for table, key in CONVERSATIONS.items())}
    SELECT count(*) FROM dirty
    """
)


# A batch's people and conversations wait in chain_backlog to be settled (by `settle_queued`), a person once per
# cause with the days of all of them.
_QUEUE = text(
    f"""
    WITH {_TOUCHED_BY_IDS}, people AS (
        INSERT INTO chain_backlog (person_key, first_day, last_day, cause)
        SELECT person_key, min(first_day), max(last_day), cause FROM touched GROUP BY person_key, cause
    ), conversations AS (
        INSERT INTO chain_backlog (conversation_id) SELECT DISTINCT conversation_id FROM talks
    )
    SELECT 1
    """
)


async def queue(
    connection: AsyncConnection,
    messages: Collection[str] = (),
    reports: Collection[str] = (),
    clicks: Collection[str] = (),
) -> None:
    """Queue the settling of what a transaction stored: the messages ``messages`` (message ids, its new ``clicks``
    among them) and reports of the replies ``reports`` (their message ids). Queued in the same transaction, so
    that it is settled once committed, whatever happens to the worker after."""
    if messages or reports or clicks:
        params = {"messages": sorted(messages), "reports": sorted(reports), "clicks": sorted(clicks)}
        await connection.execute(_QUEUE, params)


@dataclass(slots=True)
class Touched:
    """What a settling pass settles: persons' dirty days by cause, conversations."""

    persons: list[str] = field(default_factory=list)
    first_days: list[date] = field(default_factory=list)
    last_days: list[date] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)
    conversations: set[str] = field(default_factory=set)

    def add(self, person: str, first_day: date, last_day: date, cause: str) -> None:
        self.persons.append(person)
        self.first_days.append(first_day)
        self.last_days.append(last_day)
        self.causes.append(cause)

    def __bool__(self) -> bool:
        return bool(self.persons or self.conversations)


async def settle(
    connection: AsyncConnection,
    persons: Collection[str] = (),
    conversations: Collection[str] = (),
    *,
    touched: Touched | None = None,
    everyone: bool = False,
) -> None:
    """Settle now, in the caller's transaction: every day of ``persons`` (person keys) and ``conversations``, what
    ``touched`` names, or every row (``everyone``). Under the locks of all those, taken in a statement of their own,
    so that settling sees what every other writer of theirs committed."""
    touched = touched or Touched()
    for person in sorted(set(persons)):
        touched.add(person, date.min, date.max, "whole")
    touched.conversations |= set(conversations)
    if not (touched or everyone):
        return
    params = {
        "persons": touched.persons,
        "first_days": touched.first_days,
        "last_days": touched.last_days,
        "causes": touched.causes,
        "conversations": sorted(touched.conversations),
        "everyone": everyone,
    }
    await connection.execute(_LOCK, params)
    await connection.execute(_SETTLE, params)


_CLAIM = text(
    """
    DELETE FROM chain_backlog
    WHERE id IN (SELECT id FROM chain_backlog ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED)
    RETURNING person_key, first_day, last_day, cause, conversation_id
    """
)


async def claim(connection: AsyncConnection, limit: int = 5_000) -> tuple[Touched, int]:
    """Take up to ``limit`` queued entries that no other settler holds, deleting them in the caller's transaction
    (they come back if it rolls back): what they name, and how many there were."""
    claimed = (await connection.execute(_CLAIM, {"limit": limit})).all()
    touched = Touched()
    for row in claimed:
        if row.person_key is not None:
            touched.add(row.person_key, row.first_day, row.last_day, row.cause)
        if row.conversation_id is not None:
            touched.conversations.add(row.conversation_id)
    return touched, len(claimed)


async def settle_queued(engine: AsyncEngine, limit: int = 5_000) -> int:
    """Settle what is queued, ``limit`` entries a transaction, until nothing is left that no other settler holds;
    how many entries. Several workers may run it at once: each takes what the others have not (SKIP LOCKED), and a
    pass that fails leaves its entries queued."""
    settled = 0
    while True:
        async with engine.begin() as connection:
            # Shared, as a batch holds it: never beside a merge, an erasure or a replay, which change rows of
            # persons a pass may hold, under the store's lock held exclusive.
            await lock(connection, exclusive=False)
            touched, claimed = await claim(connection, limit)
            await settle(connection, touched=touched)
        settled += claimed
        if claimed < limit:
            return settled
