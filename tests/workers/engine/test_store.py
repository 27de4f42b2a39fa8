"""The store: a batch written once in one transaction, duplicates archived and projected once, and the lock decision —
shared for plain batches, exclusive for merges and deletions and for a batch that meets an erased contact — seen in
pg_locks from other connections while the write waits."""

from __future__ import annotations

import asyncio
import json

import pytest
from callbacks import contact_event, inbound, merge, referral
from sqlalchemy.ext.asyncio import AsyncEngine
from support import fixture_bytes, fixture_names, incoming, key_of, rows, snapshot, utc

from ingest.callback import Incoming
from workers.engine import facts
from workers.engine.store import Store, distinct, lock

PHONE = "34699111222"
SECRET = "my address is Calle Falsa 123"


def batch(*bodies: bytes) -> list[Incoming]:
    unique, _ = distinct(incoming(body) for body in bodies)
    return unique


async def waiting(db: AsyncEngine) -> list[str]:
    """The modes of the requests for the store's lock that wait, in the test database (no other advisory lock
    is taken there)."""
    waits = await rows(
        db,
        "SELECT mode FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    return sorted(wait["mode"] for wait in waits)


async def until_waiting(db: AsyncEngine, *modes: str) -> None:
    """Until exactly these requests for the store's lock wait."""

    async def poll() -> None:
        while await waiting(db) != sorted(modes):
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), 30)
    except TimeoutError:
        raise AssertionError(f"waited for {list(modes)}; waiting now: {await waiting(db)}") from None


async def hold(db: AsyncEngine, held: asyncio.Event, release: asyncio.Event, *, exclusive: bool = False) -> None:
    """Hold the store's lock — shared, as a worker writing a plain batch does, or exclusive — from once it is granted
    until ``release``."""
    async with db.connect() as connection, connection.begin():
        await lock(connection, exclusive=exclusive)
        held.set()
        await release.wait()


async def archived(db: AsyncEngine) -> list[str]:
    return [row["key"] for row in await rows(db, "SELECT key FROM callbacks ORDER BY key")]


async def test_write_returns_the_new_keys_and_a_second_write_changes_nothing(db: AsyncEngine) -> None:
    store = Store(db)
    items = batch(*(fixture_bytes(name) for name in fixture_names()))
    assert await store.write(items) == {key_of(fixture_bytes(name)) for name in fixture_names()}
    stored = await snapshot(db)
    assert [row["clicks"] for row in stored["ad_daily"]] == [1, 1]

    assert await store.write(items) == set()
    assert await snapshot(db) == stored  # archived once, projected once: no click counted twice

    newcomer = inbound("M-NEW", 0, identity="34600000009", contact="N", conversation="VN", metadata=referral("9"))
    assert await store.write(batch(newcomer, *(fixture_bytes(name) for name in fixture_names()[:3]))) == {
        key_of(newcomer)
    }
    after = await snapshot(db)
    assert len(after["callbacks"]) == len(stored["callbacks"]) + 1
    assert len(after["messages"]) == len(stored["messages"]) + 1
    assert sorted(row["clicks"] for row in after["ad_daily"]) == [1, 1, 1]


def test_distinct_keeps_the_first_copy_of_each_key_sorted_by_key() -> None:
    referral_body = fixture_bytes("01_inbound_ctwa_referral.json")
    reserialised = json.dumps(json.loads(referral_body) | {"accepted_time": "2025-11-03T09:14:19.5Z"}).encode()
    first = incoming(referral_body)
    delivery = incoming(fixture_bytes("07_delivery_failed_dispatch.json"))
    retry = incoming(reserialised)
    merged = incoming(fixture_bytes("04_contact_merge.json"))
    delivery_again = incoming(fixture_bytes("07_delivery_failed_dispatch.json"))

    unique, repeated = distinct([first, delivery, retry, merged, delivery_again])

    assert [item.callback.key for item in unique] == sorted(item.callback.key for item in (first, delivery, merged))
    assert [id(item) for item in unique] == [id(merged), id(delivery), id(first)]  # CONTACT_… < …DELIVERY < …INBOUND
    assert [id(item) for item in repeated] == [id(retry), id(delivery_again)]
    assert distinct([]) == ([], [])


async def test_a_plain_batch_shares_the_lock(db: AsyncEngine) -> None:
    plain = inbound("M1", 0, identity=PHONE, contact="R", conversation="V1", metadata=referral("42", "CL"))
    held, release = asyncio.Event(), asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(hold(db, held, release))
        await asyncio.wait_for(held.wait(), 30)
        # Written while another holds the lock shared: it asks for nothing more.
        assert await asyncio.wait_for(Store(db).write(batch(plain)), 30) == {key_of(plain)}
        release.set()


@pytest.mark.parametrize(
    "changing",
    [
        merge("R", "Q", 5, name="Rosa", identities=[PHONE]),
        contact_event("delete", "R", 5, name="Rosa", identities=[PHONE]),
    ],
    ids=["merge", "delete"],
)
async def test_a_batch_that_merges_or_deletes_takes_the_exclusive_lock_from_the_start(
    db: AsyncEngine, changing: bytes
) -> None:
    plain = inbound("M1", 0, identity=PHONE, contact="R", conversation="V1")
    held, release = asyncio.Event(), asyncio.Event()
    # Task groups: whatever fails, no write is left running into the next test.
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(hold(db, held, release, exclusive=True))
        await asyncio.wait_for(held.wait(), 30)
        writing = tasks.create_task(Store(db).write(batch(plain, changing)))
        await until_waiting(db, "ExclusiveLock")  # its first request for the lock, held up by the holder's
        assert await archived(db) == []
        release.set()
    assert writing.result() == {key_of(plain), key_of(changing)}
    assert await waiting(db) == []


async def test_a_batch_that_meets_an_erased_contact_is_written_again_under_the_exclusive_lock(
    db: AsyncEngine,
) -> None:
    store = Store(db)
    deleted = contact_event("delete", "R", 0, name="Rosa Secreta", identities=[PHONE])
    await store.write(batch(deleted))
    late = inbound("M9", 10, identity=PHONE, contact="R", conversation="V9", text=SECRET, metadata=referral("42", "CL"))
    assert not facts.read(batch(late)).changes_contacts  # nothing in it asks for the exclusive lock

    second_held, release = asyncio.Event(), asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        async with db.connect() as first, first.begin():
            await lock(first, exclusive=True)
            writing = tasks.create_task(store.write(batch(late)))
            await until_waiting(db, "ShareLock")  # the write's first try: under the shared lock
            tasks.create_task(hold(db, second_held, release))
            await until_waiting(db, "ShareLock", "ShareLock")
        # Both shared requests are granted together. The write finds the erased contact, rolls back and asks again
        # for the lock, exclusive, which the second holder's shared lock holds up.
        await asyncio.wait_for(second_held.wait(), 30)
        await until_waiting(db, "ExclusiveLock")
        assert await archived(db) == [key_of(deleted)]  # the first try left nothing
        release.set()
    assert writing.result() == {key_of(late)}

    [message] = await rows(db, "SELECT text, identity, contact_id, sent_at FROM messages")
    assert message == {"text": None, "identity": "erased:R", "contact_id": "R", "sent_at": utc("2025-11-03T09:10Z")}
    [click] = await rows(db, "SELECT source_id, identity FROM ad_clicks")
    assert click == {"source_id": "42", "identity": "erased:R"}
    [stored] = await rows(db, "SELECT payload FROM callbacks WHERE key = :key", key=key_of(late))
    assert PHONE not in json.dumps(stored["payload"])
    assert "Calle Falsa" not in json.dumps(stored["payload"])
