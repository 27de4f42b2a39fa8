"""The callback contract both sides share: which trigger a body is, and its business key."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

import orjson

__all__ = ["Callback", "Incoming", "InvalidCallback", "Trigger", "business_key", "identify", "parse_body", "read"]


class Trigger(StrEnum):
    """Sinch's webhook triggers, and ``UNKNOWN`` for a body whose trigger key is not (yet) known."""

    MESSAGE_INBOUND = "MESSAGE_INBOUND"
    MESSAGE_INBOUND_SMART_CONVERSATION_REDACTION = "MESSAGE_INBOUND_SMART_CONVERSATION_REDACTION"
    MESSAGE_SUBMIT = "MESSAGE_SUBMIT"
    MESSAGE_DELIVERY = "MESSAGE_DELIVERY"
    EVENT_INBOUND = "EVENT_INBOUND"
    EVENT_DELIVERY = "EVENT_DELIVERY"
    CONVERSATION_START = "CONVERSATION_START"
    CONVERSATION_STOP = "CONVERSATION_STOP"
    CONVERSATION_DELETE = "CONVERSATION_DELETE"
    CONTACT_CREATE = "CONTACT_CREATE"
    CONTACT_UPDATE = "CONTACT_UPDATE"
    CONTACT_DELETE = "CONTACT_DELETE"
    CONTACT_MERGE = "CONTACT_MERGE"
    CONTACT_IDENTITIES_DUPLICATION = "CONTACT_IDENTITIES_DUPLICATION"
    CAPABILITY = "CAPABILITY"
    OPT_IN = "OPT_IN"
    OPT_OUT = "OPT_OUT"
    CHANNEL_EVENT = "CHANNEL_EVENT"
    UNSUPPORTED = "UNSUPPORTED"
    SMART_CONVERSATION = "SMART_CONVERSATION"
    RECORD_NOTIFICATION = "RECORD_NOTIFICATION"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def named(cls, name: str) -> Trigger:
        """The trigger called ``name``; ``UNKNOWN`` for a name not (yet) known."""
        try:
            return cls(name)
        except ValueError:
            return cls.UNKNOWN

    @property
    def routing_key(self) -> str:
        """Topic routing key: ``MESSAGE_INBOUND`` → ``message.inbound``, so ``message.#`` binds all messages."""
        return _ROUTING_KEYS[self]


_ROUTING_KEYS = {trigger: trigger.value.lower().replace("_", ".") for trigger in Trigger}


# The key in the body that tells the trigger; there is no trigger field on the wire.
# Looked up in this order, so a body carrying several keys always gets the same trigger.
TRIGGER_KEYS: Mapping[str, Trigger] = {
    "message": Trigger.MESSAGE_INBOUND,
    "message_delivery_report": Trigger.MESSAGE_DELIVERY,
    "message_redaction": Trigger.MESSAGE_INBOUND_SMART_CONVERSATION_REDACTION,
    "message_submit_notification": Trigger.MESSAGE_SUBMIT,
    "event": Trigger.EVENT_INBOUND,
    "event_delivery_report": Trigger.EVENT_DELIVERY,
    "conversation_start_notification": Trigger.CONVERSATION_START,
    "conversation_stop_notification": Trigger.CONVERSATION_STOP,
    "conversation_delete_notification": Trigger.CONVERSATION_DELETE,
    "contact_create_notification": Trigger.CONTACT_CREATE,
    "contact_update_notification": Trigger.CONTACT_UPDATE,
    "contact_delete_notification": Trigger.CONTACT_DELETE,
    "contact_merge_notification": Trigger.CONTACT_MERGE,
    "duplicated_contact_identities_notification": Trigger.CONTACT_IDENTITIES_DUPLICATION,
    "capability_notification": Trigger.CAPABILITY,
    "opt_in_notification": Trigger.OPT_IN,
    "opt_out_notification": Trigger.OPT_OUT,
    "channel_event_notification": Trigger.CHANNEL_EVENT,
    "unsupported_callback": Trigger.UNSUPPORTED,
    "smart_conversation_notification": Trigger.SMART_CONVERSATION,
    "record_notification": Trigger.RECORD_NOTIFICATION,
}

# Where each trigger's business key lives (shared/conventions.md). Triggers not listed here are keyed by
# the SHA-256 of the raw body: two different updates of one contact are two callbacks, not one.
_KEY_PATHS: Mapping[Trigger, tuple[tuple[str, ...], ...]] = {
    Trigger.MESSAGE_INBOUND: (("message", "id"),),
    Trigger.MESSAGE_DELIVERY: (
        ("message_delivery_report", "message_id"),
        ("message_delivery_report", "status"),
    ),
    Trigger.MESSAGE_SUBMIT: (("message_submit_notification", "message_id"),),
    Trigger.EVENT_INBOUND: (("event", "id"),),
    Trigger.EVENT_DELIVERY: (("event_delivery_report", "event_id"), ("event_delivery_report", "status")),
    Trigger.CAPABILITY: (("capability_notification", "request_id"),),
    Trigger.OPT_IN: (("opt_in_notification", "request_id"),),
    Trigger.OPT_OUT: (("opt_out_notification", "request_id"),),
    Trigger.CONVERSATION_START: (("conversation_start_notification", "conversation", "id"),),
    Trigger.CONVERSATION_STOP: (("conversation_stop_notification", "conversation", "id"),),
    Trigger.CONVERSATION_DELETE: (("conversation_delete_notification", "conversation", "id"),),
    Trigger.CONTACT_CREATE: (("contact_create_notification", "contact", "id"),),
    Trigger.CONTACT_DELETE: (("contact_delete_notification", "contact", "id"),),
    Trigger.CONTACT_MERGE: (
        ("contact_merge_notification", "preserved_contact", "id"),
        ("contact_merge_notification", "deleted_contact", "id"),
    ),
}

# AMQP's message-id is a short string: at most 255 bytes.
_MAX_KEY_BYTES = 255


class InvalidCallback(ValueError):
    """A body that can never be a callback. ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Callback(NamedTuple):
    """One accepted callback: the raw bytes exactly as received, and what the receiver learned about them."""

    body: bytes
    trigger: Trigger
    key: str
    received_at: datetime
    signature_verified: bool


class Incoming(NamedTuple):
    """A callback with its body parsed: what the workers store."""

    callback: Callback
    payload: dict[str, Any]


def read(body: bytes, received_at: datetime, signature_verified: bool) -> Incoming:
    """The callback a raw body is — its trigger and business key — with its parsed payload.

    Raises `InvalidCallback` for a body that can never be one (`parse_body`).
    """
    payload = parse_body(body)
    trigger = identify(payload)
    return Incoming(
        Callback(body, trigger, business_key(trigger, payload, body), received_at, signature_verified), payload
    )


def parse_body(body: bytes) -> dict[str, Any]:
    """Decode a request body that must be one JSON object (RFC 8259: UTF-8, no NaN)."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        if not body.strip():
            raise InvalidCallback("empty_body", "the body is empty") from None
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCallback("not_utf8", "the body is not valid UTF-8") from None
        raise InvalidCallback("invalid_json", f"the body is not valid JSON: {error.msg}") from None
    if not isinstance(payload, dict):
        raise InvalidCallback("not_object", f"the body must be a JSON object, not {_json_type(payload)}")
    return payload


def identify(payload: Mapping[str, Any]) -> Trigger:
    """The trigger, known by which trigger key the body carries; ``UNKNOWN`` when none is known."""
    for name, trigger in TRIGGER_KEYS.items():
        if name in payload:
            return trigger
    return Trigger.UNKNOWN


def business_key(trigger: Trigger, payload: Mapping[str, Any], body: bytes) -> str:
    """What makes two deliveries the same callback, e.g. ``MESSAGE_DELIVERY:<message_id>:DELIVERED``.

    A retry re-serialised by Sinch has the same key. Without the ids the key needs, the key is the
    SHA-256 of the raw body.
    """
    parts = _key_parts(payload, _KEY_PATHS.get(trigger, ()))
    if parts is None:
        return f"{trigger}:sha256:{hashlib.sha256(body).hexdigest()}"
    key = f"{trigger}:{':'.join(parts)}"
    encoded = key.encode("utf-8")
    if len(encoded) > _MAX_KEY_BYTES:
        # Hash the key, not the body: a re-serialised retry must still map to the same key.
        return f"{trigger}:sha256k:{hashlib.sha256(encoded).hexdigest()}"
    return key


def _key_parts(payload: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]) -> list[str] | None:
    parts = []
    for path in paths:
        part = _string_at(payload, path)
        if part is None:
            return None
        parts.append(part)
    return parts or None


def _string_at(payload: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    node: Any = payload
    for name in path:
        if not isinstance(node, dict):
            return None
        node = node.get(name)
    return node if isinstance(node, str) and node else None


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
