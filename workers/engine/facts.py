"""What each callback says, read once: its row in the archive and its facts for the tables — pure Python.

`read` goes through a batch once. Each callback gives its archive row (`Archived`: what it is, when, and whom it
names, which is how erasure finds it), and its facts join the batch's `Facts`, by table, with a mark where each
callback's end. Once the archive has said which callbacks are new, `Batch.facts` keeps those of the new ones.
Every fact is a row type (`workers.engine.rows`) whose keys are
the columns it fills: ``Message``, ``Click`` and ``Delivery`` are rows of ``messages``, ``ad_clicks`` and
``delivery_reports`` as they are inserted; the others are combined into their tables.

Every fact carries its callback's time; those that decide a value that can change carry its business key too.
The projections only combine facts in ways that don't depend on arrival order — earliest, latest by
``(time, key)``, insert-once — so any permutation of the same callbacks, with any duplicates, ends in the same
tables.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, TypedDict

from ingest.callback import TRIGGER_KEYS, Callback, Incoming, Trigger
from workers.engine.referral import Referral, parse_referral

__all__ = [
    "BODY_KEYS",
    "Archived",
    "Batch",
    "Click",
    "ConversationSeen",
    "Deletion",
    "Delivery",
    "Facts",
    "IdentitySeen",
    "Merge",
    "Message",
    "Naming",
    "Sighting",
    "parse_time",
    "read",
]

# The key of each trigger's own object in the body: "message", "message_delivery_report", …
BODY_KEYS = {trigger: name for name, trigger in TRIGGER_KEYS.items()}


class Archived(TypedDict):
    """A row of ``callbacks``, but its payload (which goes to Postgres apart, as the text received)."""

    key: str
    trigger: str
    app_id: str | None
    project_id: str | None
    event_time: datetime | None
    accepted_time: datetime | None
    received_at: datetime
    signature_verified: bool
    contact_ids: list[str] | None
    identity: str | None


class Sighting(TypedDict):
    """A contact was seen."""

    contact_id: str
    at: datetime


class Naming(TypedDict):
    """What a contact event says the contact is called (``None``: no name)."""

    contact_id: str
    name: str | None
    at: datetime
    key: str


class IdentitySeen(TypedDict):
    """A channel identity was seen, with the contact it belonged to (``None`` in DISPATCH mode)."""

    channel: str
    identity: str
    app_id: str  # "" for a channel that is not app-scoped: identities are grouped by it
    contact_id: str | None
    at: datetime
    key: str


class ConversationSeen(TypedDict):
    """Something about a conversation: an event (``start``, ``stop``, ``delete``) or just ``activity`` in it."""

    conversation_id: str
    contact_id: str | None
    app_id: str | None
    kind: str
    channel: str | None
    at: datetime
    key: str


class Message(TypedDict):
    """A row of ``messages``."""

    message_id: str
    app_id: str | None
    contact_id: str | None
    conversation_id: str | None
    channel: str | None
    identity: str | None
    kind: str
    text: str | None
    media_url: str | None
    sent_at: datetime
    has_referral: bool
    processing_mode: str | None


class Click(Referral):
    """A row of ``ad_clicks``: the referral's columns and the message's."""

    message_id: str
    app_id: str | None
    channel: str | None
    identity: str | None
    contact_id: str | None
    conversation_id: str | None
    clicked_at: datetime


class Delivery(TypedDict):
    """A row of ``delivery_reports``."""

    message_id: str
    status: str
    app_id: str | None
    channel: str | None
    identity: str | None
    contact_id: str | None
    conversation_id: str | None
    reason_code: str | None
    reported_at: datetime
    processing_mode: str | None


class Merge(TypedDict):
    """A row of ``contact_merges``: a contact merged into another."""

    deleted_contact_id: str
    preserved_contact_id: str
    merged_at: datetime
    merge_key: str


class Deletion(TypedDict):
    """A contact was deleted (CONTACT_DELETE): its personal data is to be erased."""

    contact_id: str
    deleted_at: datetime


@dataclass(slots=True)
class Facts:
    """What callbacks say, by table."""

    sightings: list[Sighting] = field(default_factory=list)
    names: list[Naming] = field(default_factory=list)
    identities: list[IdentitySeen] = field(default_factory=list)
    conversations: list[ConversationSeen] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)
    deletions: list[Deletion] = field(default_factory=list)

    def contact_ids(self) -> set[str]:
        """Every contact id the facts name."""
        ids = {fact["contact_id"] for fact in self.sightings}
        ids.update(fact["contact_id"] for fact in self.names)
        ids.update(fact["contact_id"] for fact in self.identities if fact["contact_id"])
        for merge in self.merges:
            ids.update((merge["deleted_contact_id"], merge["preserved_contact_id"]))
        ids.update(fact["contact_id"] for fact in self.deletions)
        return ids


_TABLES = tuple(table.name for table in fields(Facts))
_tables = attrgetter(*_TABLES)


@dataclass(slots=True)
class Batch:
    """A batch of callbacks as the store writes it: each callback's archive row and payload as received, in order,
    and what they say (`facts`)."""

    archived: list[Archived]
    payloads: list[str]
    said: Facts  # every callback's facts, in the callbacks' order
    ends: list[tuple[int, ...]]  # after each callback, how many rows each table of ``said`` had

    @property
    def changes_contacts(self) -> bool:
        """Whether a callback merges or deletes contacts."""
        return bool(self.said.merges or self.said.deletions)

    def facts(self, keys: Collection[str] | None = None) -> Facts:
        """The facts of the callbacks whose business key is in ``keys`` — keys of this batch's callbacks, as the
        archive returns them — or of all, without ``keys``; by table."""
        if keys is None or len(keys) == len(self.archived):
            return self.said
        kept = Facts()
        start = (0,) * len(_TABLES)
        for archived, end in zip(self.archived, self.ends, strict=True):
            if archived["key"] in keys:
                for rows, all_rows, first, last in zip(_tables(kept), _tables(self.said), start, end, strict=True):
                    rows += all_rows[first:last]
            start = end
        return kept


def read(items: Sequence[Incoming]) -> Batch:
    """Read each callback of ``items`` once: its archive row, its payload as received, and its facts."""
    return _Reader().read(items)


class _Reader:
    """Reads one batch. While a callback is read, ``key``, ``app_id`` and ``at`` are its business key, app and
    time — the channel's event time (``event_time``), else when Sinch accepted it, else when it was received."""

    def __init__(self) -> None:
        self.facts = Facts()
        self.key = ""
        self.app_id: str | None = None
        self.at = datetime.min
        self.event_time: datetime | None = None

    def read(self, items: Sequence[Incoming]) -> Batch:
        batch = Batch([], [], self.facts, [])
        for callback, payload in items:
            batch.archived.append(self._callback(callback, payload))
            batch.payloads.append(callback.body.decode("utf-8"))
            batch.ends.append(tuple(map(len, _tables(self.facts))))
        return batch

    def _callback(self, callback: Callback, payload: dict[str, Any]) -> Archived:
        trigger = callback.trigger
        body = payload.get(BODY_KEYS.get(trigger, ""))
        event_time, accepted_time = parse_time(payload.get("event_time")), parse_time(payload.get("accepted_time"))
        contact_ids, identity = _subjects(body)
        app_id = _id(payload.get("app_id"))
        reader = _READERS.get(trigger)
        if reader is not None and isinstance(body, dict):
            self.key, self.app_id, self.event_time = callback.key, app_id, event_time
            self.at = event_time or accepted_time or callback.received_at
            reader(self, body)
        return {
            "key": callback.key,
            "trigger": trigger,
            "app_id": app_id,
            "project_id": _id(payload.get("project_id")),
            "event_time": event_time,
            "accepted_time": accepted_time,
            "received_at": callback.received_at,
            "signature_verified": callback.signature_verified,
            "contact_ids": contact_ids,
            "identity": identity,
        }

    def inbound(self, message: dict[str, Any]) -> None:
        message_id = _id(message.get("id"))
        if not message_id:
            return
        if self.event_time is None:  # the message's own accept time comes before the callback's
            self.at = parse_time(message.get("accept_time")) or self.at
        channel, identity, identity_app = _channel_identity(message.get("channel_identity"))
        contact_id = _id(message.get("contact_id"))
        conversation_id = _id(message.get("conversation_id"))
        kind, text, media_url = _content(message.get("contact_message"))
        referral = parse_referral(message.get("metadata"))
        self.facts.messages.append(
            {
                "message_id": message_id,
                "app_id": self.app_id,
                "contact_id": contact_id,
                "conversation_id": conversation_id,
                "channel": channel,
                "identity": identity,
                "kind": kind,
                "text": text,
                "media_url": media_url,
                "sent_at": self.at,
                "has_referral": referral is not None,
                "processing_mode": _id(message.get("processing_mode")),
            }
        )
        if referral is not None:
            self.facts.clicks.append(
                {
                    **referral,
                    "message_id": message_id,
                    "app_id": self.app_id,
                    "channel": channel,
                    "identity": identity,
                    "contact_id": contact_id,
                    "conversation_id": conversation_id,
                    "clicked_at": self.at,
                }
            )
        self._seen(channel, identity, identity_app, contact_id, conversation_id)

    def delivery(self, report: dict[str, Any]) -> None:
        message_id, status = _id(report.get("message_id")), _id(report.get("status"))
        if not (message_id and status):
            return
        channel, identity, identity_app = _channel_identity(report.get("channel_identity"))
        contact_id = _id(report.get("contact_id"))
        conversation_id = _id(report.get("conversation_id"))
        self.facts.deliveries.append(
            {
                "message_id": message_id,
                "status": status,
                "app_id": self.app_id,
                "channel": channel,
                "identity": identity,
                "contact_id": contact_id,
                "conversation_id": conversation_id,
                "reason_code": _id(_object(report.get("reason")).get("code")),
                "reported_at": self.at,
                "processing_mode": _id(report.get("processing_mode")),
            }
        )
        self._seen(channel, identity, identity_app, contact_id, conversation_id)

    def conversation_started(self, notification: dict[str, Any]) -> None:
        self._conversation(notification, "start")

    def conversation_stopped(self, notification: dict[str, Any]) -> None:
        self._conversation(notification, "stop")

    def conversation_deleted(self, notification: dict[str, Any]) -> None:
        self._conversation(notification, "delete")

    def contact_changed(self, notification: dict[str, Any]) -> None:
        self._contact(_object(notification.get("contact")))

    def contact_deleted(self, notification: dict[str, Any]) -> None:
        contact_id = self._contact(_object(notification.get("contact")))
        if contact_id:
            self.facts.deletions.append({"contact_id": contact_id, "deleted_at": self.at})

    def contact_merged(self, notification: dict[str, Any]) -> None:
        preserved = self._contact(_object(notification.get("preserved_contact")))
        deleted = _id(_object(notification.get("deleted_contact")).get("id"))
        if preserved and deleted and preserved != deleted:
            self.facts.merges.append(
                {
                    "deleted_contact_id": deleted,
                    "preserved_contact_id": preserved,
                    "merged_at": self.at,
                    "merge_key": self.key,
                }
            )

    def _conversation(self, notification: dict[str, Any], kind: str) -> None:
        conversation = _object(notification.get("conversation"))
        conversation_id = _id(conversation.get("id"))
        if not conversation_id:
            return
        contact_id = _id(conversation.get("contact_id"))
        self.facts.conversations.append(
            {
                "conversation_id": conversation_id,
                "contact_id": contact_id,
                "app_id": _id(conversation.get("app_id")) or self.app_id,
                "kind": kind,
                "channel": _id(conversation.get("active_channel")),
                "at": self.at,
                "key": self.key,
            }
        )
        if contact_id:
            self.facts.sightings.append({"contact_id": contact_id, "at": self.at})

    def _seen(
        self,
        channel: str | None,
        identity: str | None,
        identity_app: str | None,
        contact_id: str | None,
        conversation_id: str | None,
    ) -> None:
        if channel and identity:
            self._identity(channel, identity, identity_app, contact_id)
        if contact_id:
            self.facts.sightings.append({"contact_id": contact_id, "at": self.at})
        if conversation_id:
            self.facts.conversations.append(
                {
                    "conversation_id": conversation_id,
                    "contact_id": contact_id,
                    "app_id": self.app_id,
                    "kind": "activity",
                    "channel": channel,
                    "at": self.at,
                    "key": self.key,
                }
            )

    def _identity(self, channel: str, identity: str, identity_app: str | None, contact_id: str | None) -> None:
        self.facts.identities.append(
            {
                "channel": channel,
                "identity": identity,
                "app_id": identity_app or "",
                "contact_id": contact_id,
                "at": self.at,
                "key": self.key,
            }
        )

    def _contact(self, contact: dict[str, Any]) -> str | None:
        contact_id = _id(contact.get("id"))
        if not contact_id:
            return None
        self.facts.sightings.append({"contact_id": contact_id, "at": self.at})
        if "display_name" in contact:
            self.facts.names.append(
                {"contact_id": contact_id, "name": _id(contact.get("display_name")), "at": self.at, "key": self.key}
            )
        identities = contact.get("channel_identities")
        for item in identities if isinstance(identities, list) else ():
            channel, identity, identity_app = _channel_identity(item)
            if channel and identity:
                self._identity(channel, identity, identity_app, contact_id)
        return contact_id


# What each trigger's own object says, read by a method of the batch's reader.
_READERS: Mapping[Trigger, Callable[[_Reader, dict[str, Any]], None]] = {
    Trigger.MESSAGE_INBOUND: _Reader.inbound,
    Trigger.MESSAGE_DELIVERY: _Reader.delivery,
    Trigger.CONVERSATION_START: _Reader.conversation_started,
    Trigger.CONVERSATION_STOP: _Reader.conversation_stopped,
    Trigger.CONVERSATION_DELETE: _Reader.conversation_deleted,
    Trigger.CONTACT_CREATE: _Reader.contact_changed,
    Trigger.CONTACT_UPDATE: _Reader.contact_changed,
    Trigger.CONTACT_DELETE: _Reader.contact_deleted,
    Trigger.CONTACT_MERGE: _Reader.contact_merged,
}

# Where a trigger's own object names contacts, besides its ``contact_id``: (key, key of the id in it).
_SUBJECT_FIELDS = (
    ("conversation", "contact_id"),
    ("contact", "id"),
    ("preserved_contact", "id"),
    ("deleted_contact", "id"),
)


def _subjects(body: object) -> tuple[list[str] | None, str | None]:
    """The contact ids a callback's own object names and its channel identity: what erasure finds it by."""
    if not isinstance(body, dict):
        return None, None
    candidates = [body.get("contact_id")]
    for name, field_name in _SUBJECT_FIELDS:
        value = body.get(name)
        if isinstance(value, dict):
            candidates.append(value.get(field_name))
    contacts = sorted({candidate for candidate in candidates if isinstance(candidate, str) and candidate})
    channel_identity = body.get("channel_identity")
    identity = _id(channel_identity.get("identity")) if isinstance(channel_identity, dict) else None
    return contacts or None, identity or _id(body.get("identity"))


_KINDS = {
    "text_message": "text",
    "media_message": "media",
    "media_card_message": "media_card",
    "location_message": "location",
    "choice_response_message": "choice_response",
    "fallback_message": "fallback",
    "product_response_message": "product_response",
    "channel_specific_message": "channel_specific",
}


def _content(contact_message: object) -> tuple[str, str | None, str | None]:
    """(kind, text, media URL) of a ``contact_message``."""
    content = _object(contact_message)
    for name, value in content.items():
        if name == "reply_to":
            continue
        kind = _KINDS.get(name, name.removesuffix("_message"))
        body = _object(value)
        text = _id(body.get("text")) or _id(body.get("caption"))
        media_url = _id(body.get("url")) if kind in ("media", "media_card") else None
        return kind, text, media_url
    return "unknown", None, None


def _channel_identity(value: object) -> tuple[str | None, str | None, str | None]:
    channel_identity = _object(value)
    return (
        _id(channel_identity.get("channel")),
        _id(channel_identity.get("identity")),
        _id(channel_identity.get("app_id")),
    )


def parse_time(value: object) -> datetime | None:
    """An ISO-8601 time from a callback (``...Z``, any precision); ``None`` when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _id(value: object) -> str | None:
    """A non-empty string (an id, an enum value, a text); Sinch's empty strings become ``None``."""
    return value if isinstance(value, str) and value else None
