"""Broker messages as the worker reads them: the callbacks a message carries, each decoded once, and those that
can never be stored, with why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from aio_pika.abc import AbstractIncomingMessage

from ingest.callback import Callback, Incoming, InvalidCallback, read
from ingest.envelope import BATCH_CONTENT_TYPE, VERIFIED_APP_ID, InvalidEnvelope, received_at, unpack

__all__ = ["Rejected", "decode"]


@dataclass(slots=True)
class Rejected:
    """A callback — or a whole message, when ``callback`` is None — that can never be stored, and why."""

    message: AbstractIncomingMessage
    callback: Callback | None
    code: str  # short, for the metric label
    reason: str  # for the dead-letter header: what an operator needs to decide on a redrive

    @classmethod
    def set_aside(cls, message: AbstractIncomingMessage, callback: Callback, code: str, reason: str) -> Rejected:
        """``callback`` set aside: alone when its message is a batch, else the message as it came."""
        batched = message.content_type == BATCH_CONTENT_TYPE
        return cls(message, callback if batched else None, code, reason)


def decode(message: AbstractIncomingMessage) -> tuple[list[Incoming], list[Rejected]]:
    """The callbacks a message carries — one, or a batch (ingest.envelope) — and those that can never be stored.

    The trigger and business key are derived from each body with the receiver's own code, so a message put on the
    queue by anything else (a redrive, a hand-published fix) is keyed exactly like the original.
    """
    if message.content_type != BATCH_CONTENT_TYPE:
        received = received_at(message.timestamp, message.headers) or datetime.now(UTC)
        try:
            return [read(message.body, received, message.app_id == VERIFIED_APP_ID)], []
        except InvalidCallback as error:
            return [], [Rejected(message, None, error.reason, f"{error.reason}: {error.detail}")]
    try:
        carried = list(unpack(message.body))
    except InvalidEnvelope as error:
        return [], [Rejected(message, None, "invalid_batch", f"invalid_batch: {error}")]
    items, rejected = [], []
    for callback in carried:
        try:
            items.append(read(callback.body, _aware(callback.received_at), callback.signature_verified))
        except InvalidCallback as error:
            rejected.append(Rejected(message, callback, error.reason, f"{error.reason}: {error.detail}"))
    return items, rejected


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
