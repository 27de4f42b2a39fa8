"""The ``callbacks`` archive: decoding broker messages into callbacks, and storing a batch of them at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ingest.callback import Callback, InvalidCallback, Trigger, read
from ingest.envelope import BATCH_CONTENT_TYPE, VERIFIED_APP_ID, InvalidEnvelope, unpack
from workers.engine.facts import parse_time, subjects

__all__ = ["Incoming", "Rejected", "decode", "insert"]


@dataclass(slots=True)
class Incoming:
    """One decoded callback, with the message it came in (``None`` when it comes from elsewhere, e.g. a replay)."""

    callback: Callback
    payload: dict[str, Any]
    message: AbstractIncomingMessage | None = None


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

    The trigger and business key are derived from each body again with the receiver's own code, so a message put
    on the queue by anything else (a redrive, a hand-published fix) is keyed exactly like the original.
    """
    if message.content_type == BATCH_CONTENT_TYPE:
        try:
            carried = list(unpack(message.body))
        except InvalidEnvelope as error:
            return [], [Rejected(message, None, "invalid_batch", f"invalid_batch: {error}")]
    else:
        received_at = message.timestamp or datetime.now(UTC)
        verified = message.app_id == VERIFIED_APP_ID
        carried = [Callback(message.body, Trigger.UNKNOWN, "", received_at, verified)]
    items, rejected = [], []
    for carried_callback in carried:
        received_at = carried_callback.received_at
        if received_at.tzinfo is None:
            received_at = received_at.replace(tzinfo=UTC)
        try:
            callback, payload = read(carried_callback.body, received_at, carried_callback.signature_verified)
        except InvalidCallback as error:
            reason = f"{error.reason}: {error.detail}"
            rejected.append(Rejected.set_aside(message, carried_callback, error.reason, reason))
            continue
        items.append(Incoming(callback, payload, message))
    return items, rejected


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# One statement per batch: the bodies as one text array, the rest as one JSON document (as the projections
# pass their rows), zipped by position; out come the keys that were new. A key already archived is a duplicate.
_INSERT = text(
    """
    INSERT INTO callbacks (
        key, trigger, app_id, project_id, event_time, accepted_time, received_at, signature_verified, payload,
        contact_ids, identity
    )
    SELECT key, trigger, app_id, project_id, event_time, accepted_time, received_at, signature_verified,
           payload::jsonb, contact_ids, identity
    FROM ROWS FROM (
        json_to_recordset(CAST(:rows AS json)) AS (
            key text, trigger text, app_id text, project_id text, event_time timestamptz,
            accepted_time timestamptz, received_at timestamptz, signature_verified boolean, contact_ids text[],
            identity text
        ),
        unnest(CAST(:payloads AS text[]))
    ) AS batch(
        key, trigger, app_id, project_id, event_time, accepted_time, received_at, signature_verified, contact_ids,
        identity, payload
    )
    ON CONFLICT (key) DO NOTHING
    RETURNING key
    """
)


async def insert(connection: AsyncConnection, batch: Sequence[Incoming]) -> set[str]:
    """Archive ``batch`` (keys unique within it); return the keys that were not archived before."""
    rows = []
    for item in batch:
        payload, callback = item.payload, item.callback
        contacts, identity = subjects(callback.trigger, payload)
        rows.append(
            {
                "key": callback.key,
                "trigger": callback.trigger,
                "app_id": _text_or_none(payload.get("app_id")),
                "project_id": _text_or_none(payload.get("project_id")),
                "event_time": parse_time(payload.get("event_time")),
                "accepted_time": parse_time(payload.get("accepted_time")),
                "received_at": callback.received_at,
                "signature_verified": callback.signature_verified,
                "contact_ids": contacts or None,
                "identity": identity,
            }
        )
    result = await connection.execute(
        _INSERT,
        {"rows": orjson.dumps(rows).decode(), "payloads": [item.callback.body.decode("utf-8") for item in batch]},
    )
    return set(result.scalars())
