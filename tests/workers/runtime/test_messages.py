"""Broker messages as the worker reads them: a one-callback message or a batch, each callback decoded once, and what
can never be stored set aside — a callback alone when its batch can be read, else the whole message."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aio_pika.abc import AbstractIncomingMessage
from support import fixture_bytes, inbound_bodies, key_of

from ingest.callback import Callback, Trigger
from ingest.envelope import BATCH_CONTENT_TYPE, RECEIVED_AT_HEADER, UNVERIFIED_APP_ID, VERIFIED_APP_ID, pack
from workers.runtime.messages import decode

RECEIVED = datetime(2025, 11, 3, 9, 14, 9, tzinfo=UTC)


@dataclass
class Delivered:
    """What `decode` reads of a delivered message. aio-pika's own IncomingMessage needs a channel to exist; this
    is the same data without one."""

    body: bytes
    content_type: str | None = "application/json"
    timestamp: datetime | None = RECEIVED
    app_id: str | None = UNVERIFIED_APP_ID
    headers: dict[str, Any] | None = None


def delivered(body: bytes, **properties: Any) -> AbstractIncomingMessage:
    return cast(AbstractIncomingMessage, Delivered(body, **properties))


def callback(body: bytes, received_at: datetime = RECEIVED, verified: bool = True) -> Callback:
    return Callback(body, Trigger.MESSAGE_INBOUND, key_of(body), received_at, verified)


def test_a_one_callback_message_is_its_callback() -> None:
    body = fixture_bytes("03_delivery_delivered.json")
    message = delivered(body, app_id=VERIFIED_APP_ID)
    [item], rejected = decode(message)
    assert rejected == []
    assert item.callback == Callback(
        body, Trigger.MESSAGE_DELIVERY, "MESSAGE_DELIVERY:01K94FXNN0X9G8FGVSQE8Z5379:DELIVERED", RECEIVED, True
    )
    assert item.payload == json.loads(body)


@pytest.mark.parametrize("app_id", [UNVERIFIED_APP_ID, None, "anything else"])
def test_only_the_verified_app_id_says_the_signature_was_checked(app_id: str | None) -> None:
    [item], _ = decode(delivered(fixture_bytes("03_delivery_delivered.json"), app_id=app_id))
    assert item.callback.signature_verified is False


def test_a_message_without_a_zone_or_a_time_is_received_in_utc() -> None:
    body = fixture_bytes("01_inbound_ctwa_referral.json")
    [naive], _ = decode(delivered(body, timestamp=datetime(2025, 11, 3, 9, 14, 9)))
    assert naive.callback.received_at == RECEIVED
    before = datetime.now(UTC)
    [untimed], _ = decode(delivered(body, timestamp=None))
    assert before <= untimed.callback.received_at <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("header", "received"),
    [
        ("2025-11-03T09:14:09.123+00:00", RECEIVED + timedelta(milliseconds=123)),
        (b"2025-11-03T09:14:09.123+00:00", RECEIVED + timedelta(milliseconds=123)),
        ("2025-11-03T09:14:09.123", RECEIVED + timedelta(milliseconds=123)),  # no zone: UTC
        (None, RECEIVED),  # published before the header existed, or by hand: the whole-second timestamp
        ("not a time", RECEIVED),
        (17, RECEIVED),
    ],
)
def test_a_one_callback_message_is_received_when_its_header_says(header: object, received: datetime) -> None:
    headers = {} if header is None else {RECEIVED_AT_HEADER: header}
    [item], _ = decode(delivered(fixture_bytes("03_delivery_delivered.json"), headers=headers))
    assert item.callback.received_at == received


def test_a_batch_is_each_of_its_callbacks_with_what_its_header_says() -> None:
    bodies = inbound_bodies(3)
    carried = [
        callback(bodies[0], RECEIVED, True),
        callback(bodies[1], RECEIVED + timedelta(seconds=1), False),
        callback(bodies[2], RECEIVED + timedelta(seconds=2), True),
    ]
    # The message's own properties say nothing about the callbacks in it.
    message = delivered(pack(carried), content_type=BATCH_CONTENT_TYPE, timestamp=None, app_id=None)
    items, rejected = decode(message)
    assert rejected == []
    assert [item.callback for item in items] == carried
    assert [item.payload for item in items] == [json.loads(body) for body in bodies]


def test_a_record_of_a_batch_that_is_not_json_is_set_aside_alone() -> None:
    good = [callback(body) for body in inbound_bodies(2)]
    bad = Callback(b"{not json", Trigger.UNKNOWN, "UNKNOWN:sha256:bad", RECEIVED, True)
    message = delivered(pack([good[0], bad, good[1]]), content_type=BATCH_CONTENT_TYPE)
    items, [rejected] = decode(message)
    assert [item.callback for item in items] == good
    assert rejected.message is message
    assert rejected.callback == bad  # the header's key, to dead-letter it under
    assert rejected.code == "invalid_json"
    assert rejected.reason.startswith("invalid_json: the body is not valid JSON")


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_a_batch_that_cannot_be_read_is_set_aside_whole(cut: int) -> None:
    body = pack([callback(body) for body in inbound_bodies(3)])[:-cut]
    message = delivered(body, content_type=BATCH_CONTENT_TYPE)
    items, [rejected] = decode(message)
    assert items == []  # not even the records before the break
    assert (rejected.message, rejected.callback, rejected.code) == (message, None, "invalid_batch")
    assert rejected.reason == "invalid_batch: a record is cut short"


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"not json at all", "invalid_json"), (b"[1, 2, 3]", "not_object"), (b"", "empty_body")],
)
def test_a_one_callback_message_that_is_not_a_callback_is_set_aside_whole(body: bytes, code: str) -> None:
    message = delivered(body)
    items, [rejected] = decode(message)
    assert items == []
    assert (rejected.message, rejected.callback, rejected.code) == (message, None, code)
    assert rejected.reason.startswith(f"{code}: ")
