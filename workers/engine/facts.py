"""What each callback says, as plain facts for the tables: pure Python, no database.

Every fact carries its callback's time ``at`` and business ``key``. The projections only combine facts in ways
that don't depend on arrival order — earliest, latest by ``(at, key)``, insert-once — so any permutation of the
same callbacks, with any duplicates, ends in the same tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from ingest.callback import TRIGGER_KEYS, Callback, Trigger
from workers.engine.referral import Referral, parse_referral

__all__ = [
    "BODY_KEYS",
    "ConversationFact",
    "DeliveryFact",
    "Facts",
    "IdentityFact",
    "MessageFact",
    "collect",
    "parse_time",
    "subjects",
]

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

# The key of each trigger's own object in the body: "message", "message_delivery_report", …
BODY_KEYS = {trigger: name for name, trigger in TRIGGER_KEYS.items()}

_CONVERSATION_EVENTS = {
    Trigger.CONVERSATION_START: ("conversation_start_notification", "start"),
    Trigger.CONVERSATION_STOP: ("conversation_stop_notification", "stop"),
    Trigger.CONVERSATION_DELETE: ("conversation_delete_notification", "delete"),
}
# Where a trigger's own object names contacts, besides its ``contact_id``: (key, key of the id in it).
_SUBJECT_FIELDS = (
    ("conversation", "contact_id"),
    ("contact", "id"),
    ("preserved_contact", "id"),
    ("deleted_contact", "id"),
)
_CONTACT_EVENTS = {
    Trigger.CONTACT_CREATE: "contact_create_notification",
    Trigger.CONTACT_UPDATE: "contact_update_notification",
    Trigger.CONTACT_DELETE: "contact_delete_notification",
}


class IdentityFact(NamedTuple):
    """A channel identity was seen, with the contact it belonged to (``None`` in DISPATCH mode)."""

    channel: str
    identity: str
    app_id: str | None
    contact_id: str | None
    at: datetime
    key: str


class MessageFact(NamedTuple):
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
    processing_mode: str | None
    referral: Referral | None


class DeliveryFact(NamedTuple):
    message_id: str
    status: str
    app_id: str | None
    contact_id: str | None
    conversation_id: str | None
    channel: str | None
    identity: str | None
    reason_code: str | None
    reported_at: datetime
    processing_mode: str | None


class ConversationFact(NamedTuple):
    """Something about a conversation: an event (``start``/``stop``/``delete``) or just activity in it."""

    conversation_id: str
    contact_id: str | None
    app_id: str | None
    event: str  # start, stop, delete, activity
    active_channel: str | None
    at: datetime
    key: str


@dataclass(slots=True)
class Facts:
    """Everything a batch of callbacks says, by table."""

    messages: list[MessageFact] = field(default_factory=list)
    deliveries: list[DeliveryFact] = field(default_factory=list)
    identities: list[IdentityFact] = field(default_factory=list)
    conversations: list[ConversationFact] = field(default_factory=list)
    # contact_id -> times it was seen at
    sightings: list[tuple[str, datetime]] = field(default_factory=list)
    # contact_id, display_name, at, key: what a contact event says the contact is called
    names: list[tuple[str, str | None, datetime, str]] = field(default_factory=list)
    # deleted_contact_id, preserved_contact_id, at, key
    merges: list[tuple[str, str, datetime, str]] = field(default_factory=list)
    # contact_id, at
    deletions: list[tuple[str, datetime]] = field(default_factory=list)

    def contact_ids(self) -> set[str]:
        ids = {contact for contact, _ in self.sightings}
        ids.update(contact for contact, _, _, _ in self.names)
        ids.update(fact.contact_id for fact in self.identities if fact.contact_id)
        for deleted, preserved, _, _ in self.merges:
            ids.update((deleted, preserved))
        ids.update(contact for contact, _ in self.deletions)
        return ids


def collect(items: list[tuple[Callback, dict[str, Any]]]) -> Facts:
    """The facts of every callback in ``items`` (pairs of a callback and its decoded payload)."""
    facts = Facts()
    for callback, payload in items:
        _collect_one(facts, callback, payload)
    return facts


def subjects(trigger: Trigger, payload: dict[str, Any]) -> tuple[list[str], str | None]:
    """The contact ids a callback names and its channel identity: what erasure finds archived callbacks by."""
    body = payload.get(BODY_KEYS.get(trigger, ""))
    if not isinstance(body, dict):
        return [], None
    candidates = [body.get("contact_id")]
    for name, field_name in _SUBJECT_FIELDS:
        value = body.get(name)
        if isinstance(value, dict):
            candidates.append(value.get(field_name))
    contacts = sorted({candidate for candidate in candidates if isinstance(candidate, str) and candidate})
    channel_identity = body.get("channel_identity")
    identity = _id(channel_identity.get("identity")) if isinstance(channel_identity, dict) else None
    return contacts, identity or _id(body.get("identity"))


def _collect_one(facts: Facts, callback: Callback, payload: dict[str, Any]) -> None:
    trigger, key = callback.trigger, callback.key
    if trigger is Trigger.MESSAGE_INBOUND:
        _message(facts, callback, payload)
    elif trigger is Trigger.MESSAGE_DELIVERY:
        _delivery(facts, callback, payload)
    elif trigger in _CONVERSATION_EVENTS:
        name, event = _CONVERSATION_EVENTS[trigger]
        notification = _object(payload.get(name))
        conversation = _object(notification.get("conversation"))
        conversation_id = _id(conversation.get("id"))
        if conversation_id:
            at = _when(callback, payload)
            contact_id = _id(conversation.get("contact_id"))
            app_id = _id(conversation.get("app_id")) or _id(payload.get("app_id"))
            channel = _id(conversation.get("active_channel"))
            facts.conversations.append(ConversationFact(conversation_id, contact_id, app_id, event, channel, at, key))
            if contact_id:
                facts.sightings.append((contact_id, at))
    elif trigger in _CONTACT_EVENTS:
        contact = _object(_object(payload.get(_CONTACT_EVENTS[trigger])).get("contact"))
        at = _when(callback, payload)
        contact_id = _contact(facts, contact, at, key)
        if contact_id and trigger is Trigger.CONTACT_DELETE:
            facts.deletions.append((contact_id, at))
    elif trigger is Trigger.CONTACT_MERGE:
        notification = _object(payload.get("contact_merge_notification"))
        at = _when(callback, payload)
        preserved = _contact(facts, _object(notification.get("preserved_contact")), at, key)
        deleted = _id(_object(notification.get("deleted_contact")).get("id"))
        if preserved and deleted and preserved != deleted:
            facts.merges.append((deleted, preserved, at, key))


def _message(facts: Facts, callback: Callback, payload: dict[str, Any]) -> None:
    message = _object(payload.get("message"))
    message_id = _id(message.get("id"))
    if not message_id:
        return
    at = _when(callback, payload, message.get("accept_time"))
    channel, identity, identity_app = _channel_identity(message.get("channel_identity"))
    contact_id = _id(message.get("contact_id"))
    conversation_id = _id(message.get("conversation_id"))
    app_id = _id(payload.get("app_id"))
    kind, text, media_url = _content(message.get("contact_message"))
    facts.messages.append(
        MessageFact(
            message_id=message_id,
            app_id=app_id,
            contact_id=contact_id,
            conversation_id=conversation_id,
            channel=channel,
            identity=identity,
            kind=kind,
            text=text,
            media_url=media_url,
            sent_at=at,
            processing_mode=_id(message.get("processing_mode")),
            referral=parse_referral(message.get("metadata")),
        )
    )
    _seen(facts, callback, at, channel, identity, identity_app, contact_id, conversation_id, app_id)


def _delivery(facts: Facts, callback: Callback, payload: dict[str, Any]) -> None:
    report = _object(payload.get("message_delivery_report"))
    message_id, status = _id(report.get("message_id")), _id(report.get("status"))
    if not (message_id and status):
        return
    at = _when(callback, payload)
    channel, identity, identity_app = _channel_identity(report.get("channel_identity"))
    contact_id = _id(report.get("contact_id"))
    conversation_id = _id(report.get("conversation_id"))
    app_id = _id(payload.get("app_id"))
    facts.deliveries.append(
        DeliveryFact(
            message_id=message_id,
            status=status,
            app_id=app_id,
            contact_id=contact_id,
            conversation_id=conversation_id,
            channel=channel,
            identity=identity,
            reason_code=_id(_object(report.get("reason")).get("code")),
            reported_at=at,
            processing_mode=_id(report.get("processing_mode")),
        )
    )
    _seen(facts, callback, at, channel, identity, identity_app, contact_id, conversation_id, app_id)


def _seen(
    facts: Facts,
    callback: Callback,
    at: datetime,
    channel: str | None,
    identity: str | None,
    identity_app: str | None,
    contact_id: str | None,
    conversation_id: str | None,
    app_id: str | None,
) -> None:
    if channel and identity:
        facts.identities.append(IdentityFact(channel, identity, identity_app, contact_id, at, callback.key))
    if contact_id:
        facts.sightings.append((contact_id, at))
    if conversation_id:
        facts.conversations.append(
            ConversationFact(conversation_id, contact_id, app_id, "activity", channel, at, callback.key)
        )


def _contact(facts: Facts, contact: dict[str, Any], at: datetime, key: str) -> str | None:
    contact_id = _id(contact.get("id"))
    if not contact_id:
        return None
    facts.sightings.append((contact_id, at))
    if "display_name" in contact:
        name = contact.get("display_name")
        facts.names.append((contact_id, name if isinstance(name, str) and name else None, at, key))
    identities = contact.get("channel_identities")
    for item in identities if isinstance(identities, list) else ():
        channel, identity, identity_app = _channel_identity(item)
        if channel and identity:
            facts.identities.append(IdentityFact(channel, identity, identity_app, contact_id, at, key))
    return contact_id


def _content(contact_message: object) -> tuple[str, str | None, str | None]:
    """(kind, text, media URL) of a ``contact_message``."""
    content = _object(contact_message)
    for name, value in content.items():
        if name == "reply_to":
            continue
        kind = _KINDS.get(name, name.removesuffix("_message"))
        body = _object(value)
        text = _text(body.get("text")) or _text(body.get("caption"))
        media_url = _text(body.get("url")) if kind in ("media", "media_card") else None
        return kind, text, media_url
    return "unknown", None, None


def _channel_identity(value: object) -> tuple[str | None, str | None, str | None]:
    channel_identity = _object(value)
    return (
        _id(channel_identity.get("channel")),
        _id(channel_identity.get("identity")),
        _id(channel_identity.get("app_id")),
    )


def _when(callback: Callback, payload: dict[str, Any], fallback: object = None) -> datetime:
    """The callback's time: ``event_time``, else the given fallback, else ``accepted_time``, else when received."""
    return (
        parse_time(payload.get("event_time"))
        or parse_time(fallback)
        or parse_time(payload.get("accepted_time"))
        or callback.received_at
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
    """An id or enum value; Sinch's empty strings become ``None``."""
    return value if isinstance(value, str) and value else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
