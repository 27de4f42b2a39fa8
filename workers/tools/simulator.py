"""``ctwa simulate``: realistic, signed Sinch traffic for a receiver — the demo and the load generator.

People click Click-to-WhatsApp ads (some Status ads without a ``ctwa_clid``, some posts), write, write again, get
replies whose delivery reports follow; apps in CONVERSATION mode have contacts, conversations and a few contact
merges, apps in DISPATCH mode only phone numbers. Sent as Sinch sends: signed, sometimes twice, sometimes retried
re-serialised with another ``accepted_time``, somewhat out of order, and retried on ``5xx``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import aiohttp

from ingest.receiver.signature import signed_headers
from workers.tools.progress import Progress

__all__ = ["Ad", "Scenario", "Scripted", "Summary", "people_for", "print_summary", "scenario", "send"]

CONVERSATION_APP = "01KSIMCONVERSATIONAPP00001"
DISPATCH_APP = "01KSIMDISPATCHAPP000000001"
PROJECT = "7d1f5a2e-0c3b-4e8a-9b6f-5a4c3b2a1d0e"
_ULID = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TEXTS = [
    "Hi! Is this still available?",
    "How much is shipping?",
    "Do you have it in blue?",
    "Great, send me the link please",
    "Thanks!",
    "Can I pay on delivery?",
]


@dataclass(frozen=True, slots=True)
class Ad:
    source_id: str
    headline: str
    source_type: str  # "ad" or "post"
    media_type: str
    status_ad: bool  # shown in WhatsApp Status: no ctwa_clid


@dataclass(frozen=True, slots=True)
class Scripted:
    """One callback the scenario sends: its body, the minute of its event, and the ad click it is, if any. (What
    the receiver makes of a body is an `ingest.callback.Callback`.)"""

    body: bytes
    minute: float
    key: str
    click: tuple[str, str] | None = None  # (source_id, person key)


@dataclass(slots=True)
class Scenario:
    callbacks: list[Scripted]
    ads: list[Ad]


def _ulid(rng: random.Random) -> str:
    return "".join(rng.choice(_ULID) for _ in range(26))


def _ads(rng: random.Random, count: int) -> list[Ad]:
    ads = []
    for n in range(count):
        source_type = "post" if n % 5 == 4 else "ad"
        ads.append(
            Ad(
                source_id=f"1202{rng.randrange(10**14):014d}",
                headline=rng.choice(["Summer bundle -20%", "New arrivals", "Free shipping", "Last units", "VIP"])
                + f" #{n + 1}",
                source_type=source_type,
                media_type=rng.choice(["image", "video"]),
                status_ad=source_type == "ad" and n % 4 == 3,
            )
        )
    return ads


@dataclass(frozen=True, slots=True)
class _Person:
    index: int
    app: str
    identity: str
    contact: str  # "" in DISPATCH mode, as Sinch sends it
    conversation: str

    @property
    def mode(self) -> str:
        return "CONVERSATION" if self.contact else "DISPATCH"

    @property
    def key(self) -> str:
        return f"contact:{self.contact}" if self.contact else f"identity:WHATSAPP:{self.identity}"

    @property
    def channel_identity(self) -> dict[str, str]:
        return {"channel": "WHATSAPP", "identity": self.identity, "app_id": ""}

    def contact_object(self, contact: str, name: str) -> dict[str, Any]:
        return {
            "id": contact,
            "channel_identities": [self.channel_identity] if contact == self.contact else [],
            "channel_priority": ["WHATSAPP"],
            "display_name": name,
            "email": "",
            "external_id": "",
            "metadata": "",
            "language": "ES",
        }


class _Writer:
    """Writes the callbacks of a scenario, in Sinch's wire format, on a timeline of minutes."""

    def __init__(self, rng: random.Random, origin: datetime) -> None:
        self.rng = rng
        self.origin = origin
        self.callbacks: list[Scripted] = []

    def at(self, minute: float) -> str:
        return (self.origin + timedelta(minutes=minute)).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def emit(self, payload: dict[str, Any], minute: float, key: str, click: tuple[str, str] | None = None) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode()
        self.callbacks.append(Scripted(body, minute, key, click))

    def envelope(self, person: _Person, minute: float, event: bool) -> dict[str, Any]:
        envelope = {"app_id": person.app, "accepted_time": self.at(minute + 0.01), "project_id": PROJECT}
        if event:
            envelope["event_time"] = self.at(minute)
        return envelope

    def inbound(
        self, person: _Person, minute: float, *, metadata: str = "", contact: str | None = None, ad: str | None = None
    ) -> None:
        message_id = _ulid(self.rng)
        message = {
            "id": message_id,
            "direction": "TO_APP",
            "contact_message": {"text_message": {"text": self.rng.choice(_TEXTS)}},
            "channel_identity": person.channel_identity,
            "conversation_id": person.conversation,
            "contact_id": person.contact if contact is None else contact,
            "metadata": metadata,
            "accept_time": self.at(minute + 0.005),
            "sender_id": "34910000000",
            "processing_mode": person.mode,
            "injected": False,
        }
        payload = self.envelope(person, minute, event=True) | {
            "message": message,
            "message_metadata": "",
            "correlation_id": "",
        }
        self.emit(payload, minute, f"MESSAGE_INBOUND:{message_id}", (ad, person.key) if ad else None)

    def delivery(self, person: _Person, message_id: str, status: str, minute: float) -> None:
        report: dict[str, Any] = {
            "message_id": message_id,
            "conversation_id": person.conversation,
            "status": status,
            "channel_identity": person.channel_identity,
            "contact_id": person.contact,
            "metadata": "",
            "processing_mode": person.mode,
        }
        if status == "FAILED":
            report["reason"] = {
                "code": "RECIPIENT_NOT_REACHABLE",
                "description": "The underlying channel reported: recipient not reachable",
                "sub_code": "UNSPECIFIED_SUB_CODE",
            }
        payload = self.envelope(person, minute, event=True) | {"message_delivery_report": report}
        self.emit(payload | {"message_metadata": ""}, minute, f"MESSAGE_DELIVERY:{message_id}:{status}")

    def contact_created(self, person: _Person, minute: float) -> None:
        contact = person.contact_object(person.contact, f"Customer {person.index + 1}")
        payload = self.envelope(person, minute, event=False) | {"contact_create_notification": {"contact": contact}}
        self.emit(payload | {"message_metadata": ""}, minute, f"CONTACT_CREATE:{person.contact}")

    def conversation_started(self, person: _Person, minute: float) -> None:
        conversation = {
            "id": person.conversation,
            "app_id": person.app,
            "contact_id": person.contact,
            "active": True,
            "active_channel": "WHATSAPP",
            "last_received": self.at(minute),
            "metadata": "",
            "metadata_json": {},
            "correlation_id": "",
        }
        payload = self.envelope(person, minute, event=False) | {
            "conversation_start_notification": {"conversation": conversation},
            "message_metadata": "",
        }
        self.emit(payload, minute, f"CONVERSATION_START:{person.conversation}")

    def merged(self, person: _Person, duplicate: str, minute: float) -> None:
        notification = {
            "preserved_contact": person.contact_object(person.contact, f"Customer {person.index + 1}"),
            "deleted_contact": person.contact_object(duplicate, "Unknown"),
        }
        payload = self.envelope(person, minute, event=False) | {
            "contact_merge_notification": notification,
            "message_metadata": "",
        }
        self.emit(payload, minute, f"CONTACT_MERGE:{person.contact}:{duplicate}")


def _referral(rng: random.Random, ad: Ad) -> str:
    referral: dict[str, Any] = {
        "source_url": f"https://fb.me/{ad.source_id[-8:]}",
        "source_id": ad.source_id,
        "source_type": ad.source_type,
        "headline": ad.headline,
        "body": "Chat with us to get your discount code",
        "media_type": ad.media_type,
        f"{ad.media_type}_url": f"https://scontent.example.net/v/{ad.source_id}.jpg",
        "welcome_message": {"text": "Hi there! How can we help?"},
    }
    if not ad.status_ad:
        referral["ctwa_clid"] = "AR" + "".join(rng.choice(_ULID) for _ in range(48))
    return json.dumps({"referral": referral}, separators=(",", ":"))


_REPORTS = [
    ["QUEUED_ON_CHANNEL", "DELIVERED", "READ"],
    ["QUEUED_ON_CHANNEL", "DELIVERED"],
    ["QUEUED_ON_CHANNEL", "READ"],
]


def people_for(people: int, *, count: int | None = None, rate: float = 0.0, duration: float | None = None) -> int:
    """At least ``people``, and enough for ``count`` callbacks (or ``rate`` per second for ``duration``): a person
    makes about five."""
    if count is not None:
        return max(people, count // 5 + 1)
    if duration is not None and rate > 0:
        return max(people, int(rate * duration) // 5 + 1)
    return people


def scenario(seed: int = 1, people: int = 100, ads: int = 5, start: datetime | None = None) -> Scenario:
    """The callbacks of ``people`` people and ``ads`` ads over the hour before ``start`` (default now)."""
    rng = random.Random(seed)
    writer = _Writer(rng, (start or datetime.now(UTC)) - timedelta(hours=1))
    ad_list = _ads(rng, ads)
    for index in range(people):
        conversation_mode = rng.random() < 0.7
        person = _Person(
            index=index,
            app=CONVERSATION_APP if conversation_mode else DISPATCH_APP,
            identity=f"34{rng.randrange(6 * 10**8, 7 * 10**8)}",
            contact=_ulid(rng) if conversation_mode else "",
            conversation=_ulid(rng) if conversation_mode else "",
        )
        first = rng.uniform(0, 50)
        if conversation_mode:
            writer.contact_created(person, first - 0.5)
            writer.conversation_started(person, first + 0.02)
        if rng.random() < 0.8:
            ad = rng.choice(ad_list)
            writer.inbound(person, first, metadata=_referral(rng, ad), ad=ad.source_id)
        else:
            writer.inbound(person, first)
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            writer.inbound(person, first + rng.uniform(1, 9))
        if rng.random() < 0.15:  # comes back through another ad later
            ad = rng.choice(ad_list)
            writer.inbound(person, first + rng.uniform(10, 40), metadata=_referral(rng, ad), ad=ad.source_id)
        for _ in range(rng.choice((1, 1, 2))):
            reply, sent = _ulid(rng), first + rng.uniform(0.2, 8)
            statuses = rng.choice(_REPORTS) if rng.random() < 0.95 else ["QUEUED_ON_CHANNEL", "FAILED"]
            for step, status in enumerate(statuses):
                writer.delivery(person, reply, status, sent + step * rng.uniform(0.05, 2))
        # Now and then a contact gets a duplicate (written to from another number), later merged back.
        if conversation_mode and rng.random() < 0.05:
            duplicate = _ulid(rng)
            writer.inbound(person, first + rng.uniform(1, 5), contact=duplicate)
            writer.merged(person, duplicate, first + rng.uniform(6, 9))
    writer.callbacks.sort(key=lambda callback: callback.minute)
    return Scenario(writer.callbacks, ad_list)


@dataclass(slots=True)
class Summary:
    sent: int = 0  # HTTP requests made
    callbacks: int = 0  # distinct callbacks delivered
    duplicates: int = 0  # exact copies sent again
    reserialised: int = 0  # retries with another accepted_time and whitespace
    retried: int = 0  # requests repeated after a 5xx or a connection error
    statuses: Counter[int] = field(default_factory=Counter)
    elapsed: float = 0.0
    # What the pipeline should report for what was delivered: clicks and distinct people per ad.
    clicks: Counter[str] = field(default_factory=Counter)
    people: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # Every copy of each callback the receiver accepted, in the order accepted: the archive keeps one of them.
    accepted: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))

    def note(self) -> str:
        accepted = sum(count for status, count in self.statuses.items() if 200 <= status < 300)
        return f"{self.sent:,} requests, {accepted:,} accepted, {self.retried:,} retried"

    def count(self, callback: Scripted, bodies: list[bytes]) -> None:
        self.callbacks += 1
        if len(bodies) > 1:
            if bodies[1] == bodies[0]:
                self.duplicates += 1
            else:
                self.reserialised += 1
        if callback.click:
            source_id, person = callback.click
            self.clicks[source_id] += 1
            self.people[source_id].add(person)

    def as_dict(self) -> dict[str, Any]:
        return {
            "expected": {
                source_id: {"clicks": clicks, "people": len(self.people[source_id])}
                for source_id, clicks in sorted(self.clicks.items())
            },
            "sent": self.sent,
            "callbacks": self.callbacks,
            "duplicates": self.duplicates,
            "reserialised": self.reserialised,
            "retried": self.retried,
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "elapsed_s": round(self.elapsed, 2),
        }


def _deliveries(
    callbacks: list[Scripted], rng: random.Random, duplicates: float, reserialised: float, disorder: int
) -> Iterator[tuple[Scripted, list[bytes]]]:
    """Each callback with the copies Sinch sends of it, in about the order Sinch would: each one leaves a window
    of ``disorder`` callbacks at random. A share ``duplicates`` is sent twice as is, a share ``reserialised`` is
    retried re-serialised with another ``accepted_time``."""
    window: list[Scripted] = []

    def copies(callback: Scripted) -> tuple[Scripted, list[bytes]]:
        bodies = [callback.body]
        roll = rng.random()
        if roll < duplicates:
            bodies.append(callback.body)
        elif roll < duplicates + reserialised:
            payload = json.loads(callback.body)
            accepted = datetime.fromisoformat(payload.get("accepted_time", "2025-01-01T00:00:00Z"))
            payload["accepted_time"] = (accepted + timedelta(seconds=rng.uniform(5, 60))).isoformat()
            bodies.append(json.dumps(payload, separators=(",", ":")).encode())
        return callback, bodies

    for callback in callbacks:
        window.append(callback)
        if len(window) > disorder:
            yield copies(window.pop(rng.randrange(len(window))))
    rng.shuffle(window)
    for callback in window:
        yield copies(callback)


async def send(
    url: str,
    callbacks: list[Scripted],
    *,
    secret: str | None,
    rate: float,
    concurrency: int = 16,
    duration: float | None = None,
    duplicates: float = 0.1,
    reserialised: float = 0.05,
    disorder: int = 20,
    seed: int = 1,
    progress: TextIO | None = None,
) -> Summary:
    """POST ``callbacks`` to ``url`` at about ``rate`` requests per second (0: as fast as possible), as Sinch would.

    The copies of one callback go one after the other, a retry only once the attempt before it was answered.
    """
    rng = random.Random(seed)
    summary = Summary()
    queue: asyncio.Queue[tuple[Scripted, list[bytes]] | None] = asyncio.Queue(maxsize=concurrency * 2)
    started = time.monotonic()
    meter = Progress(progress, total=len(callbacks), unit="callbacks")

    async def produce() -> None:
        requests = 0
        for delivery in _deliveries(callbacks, rng, duplicates, reserialised, disorder):
            if duration is not None and time.monotonic() - started >= duration:
                break
            if rate > 0:
                await asyncio.sleep(max(0.0, started + requests / rate - time.monotonic()))
            requests += len(delivery[1])
            await queue.put(delivery)
        for _ in range(concurrency):
            await queue.put(None)

    async def consume(session: aiohttp.ClientSession) -> None:
        while (delivery := await queue.get()) is not None:
            callback, bodies = delivery
            summary.count(callback, bodies)
            for body in bodies:
                if await _post(session, url, body, secret, summary):
                    summary.accepted[callback.key].append(body)
            meter.update(summary.callbacks, summary.note())

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(produce(), *(consume(session) for _ in range(concurrency)))
    summary.elapsed = time.monotonic() - started
    meter.finish(summary.callbacks, summary.note())
    return summary


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, secret: str | None, summary: Summary) -> bool:
    """POST one copy, retrying 5xx and failed connections as Sinch does; whether it was accepted (2xx)."""
    delay = 0.5
    for attempt in range(8):
        headers = {"Content-Type": "application/json"}
        if secret:
            headers |= signed_headers(body, secret, uuid.uuid4().hex.upper()[:26], int(time.time()))
        summary.sent += 1
        try:
            async with session.post(url, data=body, headers=headers) as response:
                summary.statuses[response.status] += 1
                if response.status < 500:
                    return 200 <= response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            summary.statuses[0] += 1
        summary.retried += 1
        await asyncio.sleep(delay * (1 + attempt))
    return False


def print_summary(summary: Summary, out: TextIO = sys.stderr) -> None:
    """The closing summary, for people."""
    statuses = ", ".join(f"{status or 'error'}: {count}" for status, count in sorted(summary.statuses.items()))
    out.write(
        f"\nsent {summary.sent} requests for {summary.callbacks} callbacks in {summary.elapsed:.1f} s "
        f"({summary.sent / summary.elapsed if summary.elapsed else 0:,.0f}/s)\n"
        f"  duplicates {summary.duplicates}, re-serialised retries {summary.reserialised}, "
        f"retried after 5xx or errors {summary.retried}\n"
        f"  statuses: {statuses}\n"
        f"  delivered: {sum(summary.clicks.values())} ad clicks by "
        f"{len(set().union(*summary.people.values())) if summary.people else 0} people on {len(summary.clicks)} ads\n"
    )
