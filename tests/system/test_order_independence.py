"""Property: any permutation of a stream of callbacks, with any duplicates, in any batches, ends in the same tables.

The stream is generated for 50+ people — ad clicks (with and without a click id), follow-up messages, delivery
reports of replies, conversation starts, contact names, merges (one of them a chain) and a deletion — in
CONVERSATION and DISPATCH mode. Applied in time order it gives the reference state; applied shuffled, with
repeats and in random batch sizes, it must give exactly that state again.
"""

from __future__ import annotations

import random

from callbacks import contact_event, conversation_event, delivery, inbound, merge, referral
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine
from support import empty, snapshot, store

ADS = [("120001", True), ("120002", True), ("120003", True), ("120004", False), ("120005", True)]  # False: Status ad


def generate(seed: int, people: int = 55) -> list[tuple[float, bytes]]:
    """A stream of (minute, callback) for ``people`` people."""
    rng = random.Random(seed)
    stream: list[tuple[float, bytes]] = []
    conversing: list[tuple[str, str, float]] = []  # (contact, identity, first minute) of CONVERSATION-mode people
    for person in range(people):
        identity = f"3460{person:07d}"
        # Seven in ten have contacts, and the first 30 always do: the checks below count on them.
        conversation_mode = person < 30 or rng.random() < 0.7
        contact = f"C{person:03d}" if conversation_mode else ""
        conversation = f"V{person:03d}" if conversation_mode else ""
        start = rng.uniform(0, 600)
        if conversation_mode:
            conversing.append((contact, identity, start))
            if rng.random() < 0.5:
                stream.append(
                    (start - 1, contact_event("create", contact, start - 1, name=f"P{person}", identities=[identity]))
                )
            if rng.random() < 0.4:
                stream.append((start - 0.5, conversation_event("start", conversation, contact, start - 0.5)))
        metadata = ""
        if rng.random() < 0.7:
            source, has_click_id = rng.choice(ADS)
            metadata = referral(source, f"CLID-{person}" if has_click_id else None)
        stream.append(
            (
                start,
                inbound(
                    f"M{person:03d}",
                    start,
                    identity=identity,
                    contact=contact,
                    conversation=conversation,
                    text=f"hi {person}",
                    metadata=metadata,
                ),
            )
        )
        for follow_up in range(rng.randint(0, 3)):
            minute = start + rng.uniform(1, 300)
            stream.append(
                (
                    minute,
                    inbound(
                        f"M{person:03d}f{follow_up}",
                        minute,
                        identity=identity,
                        contact=contact,
                        conversation=conversation,
                        text="more",
                    ),
                )
            )
        for reply in range(rng.randint(0, 2)):
            minute = start + rng.uniform(0.5, 200)
            statuses = rng.choice(
                [
                    ["QUEUED_ON_CHANNEL", "DELIVERED", "READ"],
                    ["QUEUED_ON_CHANNEL", "READ"],
                    ["QUEUED_ON_CHANNEL", "FAILED"],
                    ["DELIVERED"],
                ]
            )
            for step, status in enumerate(statuses):
                stream.append(
                    (
                        minute + step,
                        delivery(
                            f"O{person:03d}r{reply}",
                            status,
                            minute + step,
                            identity=identity,
                            contact=contact,
                            conversation=conversation,
                        ),
                    )
                )
        if conversation_mode and rng.random() < 0.2:
            minute = start + rng.uniform(10, 400)
            stream.append(
                (minute, contact_event("update", contact, minute, name=f"P{person} renamed", identities=[identity]))
            )

    rng.shuffle(conversing)
    # Merges: four pairs, and a chain a -> b -> c.
    for deleted, preserved in [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (9, 10)]:
        (gone, gone_identity, _), (kept, kept_identity, _) = conversing[deleted], conversing[preserved]
        minute = rng.uniform(300, 900)
        stream.append(
            (minute, merge(kept, gone, minute, name=f"merged {kept}", identities=[kept_identity, gone_identity]))
        )
    # A deletion: of a contact with something merged into it.
    erased, erased_identity, _ = conversing[3]
    minute = rng.uniform(600, 1000)
    stream.append((minute, contact_event("delete", erased, minute, name="gone", identities=[erased_identity])))
    return stream


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 2**32 - 1),
    shuffler=st.randoms(use_true_random=False),
    repeats=st.floats(0.0, 0.4),
    batch_sizes=st.lists(st.integers(1, 120), min_size=1, max_size=12),
)
async def test_any_order_with_duplicates_gives_the_same_tables(
    db: AsyncEngine, seed: int, shuffler: random.Random, repeats: float, batch_sizes: list[int]
) -> None:
    stream = generate(seed)
    in_time_order = [body for _, body in sorted(stream, key=lambda item: item[0])]
    await empty(db)
    await store(db, in_time_order, batch_size=50)
    reference = await snapshot(db)
    assert len(reference["contacts"]) >= 30  # the generator really made people, merges and a deletion
    assert reference["contact_merges"]
    assert reference["erased_identities"]

    shuffled = in_time_order + shuffler.sample(in_time_order, int(len(in_time_order) * repeats))
    shuffler.shuffle(shuffled)
    await empty(db)
    start = 0
    for size in batch_sizes * (len(shuffled) // sum(batch_sizes) + 1):
        if start >= len(shuffled):
            break
        await store(db, shuffled[start : start + size], batch_size=size)
        start += size
    assert await snapshot(db) == reference
