"""The two message formats: a callback alone, and the batch envelope — one AMQP message carrying several
callbacks, each with its raw bytes unchanged (docs/broker.md#messages).

A one-callback message is the raw body, its trigger's routing key, and what the receiver learned about it in
standard AMQP properties (`Single`) — a headers table costs the receiver and the broker together a fifth of their
CPU per callback — but for one header, `RECEIVED_AT_HEADER`: the AMQP ``timestamp`` holds whole seconds only, so
the receive time goes in a header too, to the millisecond (`received_at` reads either).

A batch message has ``content_type`` `BATCH_CONTENT_TYPE` and routing key ``batch``. Its body is a sequence of
records, one per callback, each::

    4 bytes   length of the header, big-endian
    header    compact JSON: {"key": business key, "trigger": trigger, "received_at": ISO-8601 time (ms),
                             "verified": whether its signature was checked}
    4 bytes   length of the body, big-endian
    body      the callback's raw bytes, exactly as received

Length-prefixed, so bodies are carried as they are — no escaping to do when building one, no re-encoding when
reading one. A message carrying a single callback keeps the one-callback format (docs/broker.md).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from ingest.callback import Callback, Trigger

__all__ = [
    "BATCH_CONTENT_TYPE",
    "BATCH_ROUTING_KEY",
    "RECEIVED_AT_HEADER",
    "UNVERIFIED_APP_ID",
    "VERIFIED_APP_ID",
    "InvalidEnvelope",
    "Single",
    "pack",
    "received_at",
    "unpack",
]

BATCH_CONTENT_TYPE = "application/vnd.ctwa.batch"
BATCH_ROUTING_KEY = "batch"
# The app-id property of a one-callback message says whether its signature was verified.
VERIFIED_APP_ID = "ctwa-receiver/signature-verified"
UNVERIFIED_APP_ID = "ctwa-receiver/signature-not-checked"
# The receive time of a one-callback message, ISO 8601 to the millisecond (its `timestamp` keeps whole seconds).
RECEIVED_AT_HEADER = "x-received-at"
_LENGTH = struct.Struct(">I")


class Single(NamedTuple):
    """A message carrying one callback alone: its routing key and AMQP properties (it is also persistent).

    The receiver publishes it and the worker dead-letters a callback of a batch as one, each with its own client
    library, which spell the property names their own ways; this names them as AMQP does."""

    routing_key: str
    content_type: str
    message_id: str
    type: str
    timestamp: datetime
    app_id: str
    headers: dict[str, Any]

    @classmethod
    def of(cls, callback: Callback) -> Single:
        app_id = VERIFIED_APP_ID if callback.signature_verified else UNVERIFIED_APP_ID
        return cls(
            callback.trigger.routing_key,
            "application/json",
            callback.key,
            str(callback.trigger),
            callback.received_at,
            app_id,
            {RECEIVED_AT_HEADER: _iso(callback.received_at)},
        )


def received_at(timestamp: datetime | None, headers: Mapping[str, object] | None) -> datetime | None:
    """When a one-callback message was received: its `RECEIVED_AT_HEADER`, or (a message published before the
    header, or by hand) its whole-second ``timestamp``; in UTC where the time carries no zone."""
    header = (headers or {}).get(RECEIVED_AT_HEADER)
    moment = timestamp
    if isinstance(header, str | bytes):
        with suppress(ValueError):
            moment = datetime.fromisoformat(header.decode() if isinstance(header, bytes) else header)
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


class InvalidEnvelope(ValueError):
    """A batch message whose records can't be read."""


def pack(callbacks: Sequence[Callback]) -> bytes:
    """The body of a batch message carrying ``callbacks``."""
    parts: list[bytes] = []
    for callback in callbacks:
        header = orjson.dumps(
            {
                "key": callback.key,
                "trigger": callback.trigger,
                "received_at": _iso(callback.received_at),
                "verified": callback.signature_verified,
            }
        )
        parts += (_LENGTH.pack(len(header)), header, _LENGTH.pack(len(callback.body)), callback.body)
    return b"".join(parts)


def unpack(body: bytes) -> Iterator[Callback]:
    """The callbacks of a batch message, in order; `InvalidEnvelope` where its framing is broken."""
    view, offset = memoryview(body), 0
    while offset < len(body):
        header, offset = _chunk(view, offset)
        raw, offset = _chunk(view, offset)
        try:
            fields = orjson.loads(header)
            trigger = Trigger(fields["trigger"])
            received_at = datetime.fromisoformat(fields["received_at"])
            callback = Callback(raw, trigger, str(fields["key"]), received_at, bool(fields["verified"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise InvalidEnvelope(f"a record's header can't be read: {error}") from None
        yield callback


def _chunk(view: memoryview, offset: int) -> tuple[bytes, int]:
    if offset + _LENGTH.size > len(view):
        raise InvalidEnvelope("a record is cut short")
    (length,) = _LENGTH.unpack_from(view, offset)
    start, end = offset + _LENGTH.size, offset + _LENGTH.size + length
    if end > len(view):
        raise InvalidEnvelope("a record is cut short")
    return bytes(view[start:end]), end
