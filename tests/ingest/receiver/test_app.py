"""The receiver over HTTP, publishing into the real RabbitMQ."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractConnection
from aiohttp import web
from aiohttp.test_utils import TestClient
from support import ReceiverFactory, fixture_bytes, fixture_names, signature_vectors, take_all

from ingest.callback import Trigger
from ingest.envelope import RECEIVED_AT_HEADER, UNVERIFIED_APP_ID, VERIFIED_APP_ID
from ingest.receiver.signature import signed_headers
from ingest.topology import Topology

Client = TestClient[web.Request, web.Application]

ROUTING = {
    "00_seed_ctwa_media_card.json": ("message.inbound", "MESSAGE_INBOUND:01EKJ1534NWK5R02TGWEJN13HA"),
    "01_inbound_ctwa_referral.json": ("message.inbound", "MESSAGE_INBOUND:01K94FXHR0TEWH0AVNH9DN65R6"),
    "02_inbound_reply_no_referral.json": ("message.inbound", "MESSAGE_INBOUND:01K94FXMNRRHEM3E2MSH4DMDZS"),
    "03_delivery_delivered.json": ("message.delivery", "MESSAGE_DELIVERY:01K94FXNN0X9G8FGVSQE8Z5379:DELIVERED"),
    "04_contact_merge.json": (
        "contact.merge",
        "CONTACT_MERGE:01K94FXJQ8PPG2X7R5JQC42EJ5:01K94FXPM8AV4RRXG07HN7JVAX",
    ),
    "05_conversation_start.json": ("conversation.start", "CONVERSATION_START:01K94FXKPGE6RHXQAQPDH4AFAX"),
    "06_inbound_dispatch_sms.json": ("message.inbound", "MESSAGE_INBOUND:01K94FXQKG0GB6KC9QA0MZ17QK"),
    "07_delivery_failed_dispatch.json": ("message.delivery", "MESSAGE_DELIVERY:01K94FXSJ0SQWW7FE4N1EE043E:FAILED"),
    "08_contact_create_signed.json": ("contact.create", "CONTACT_CREATE:01FJA8B466Y0R2GNXD78MD9SM1"),
}


def test_every_fixture_has_an_expected_route() -> None:
    assert sorted(ROUTING) == fixture_names()


async def test_every_fixture_is_confirmed_and_arrives_byte_identical(
    receiver: Client, amqp: AbstractConnection, topology: Topology
) -> None:
    for name in fixture_names():
        response = await receiver.post("/webhooks/sinch", data=fixture_bytes(name))
        assert response.status == 200, await response.text()
        answer = await response.json()
        assert answer == {"status": "accepted", "trigger": ROUTING[name][1].split(":")[0], "key": ROUTING[name][1]}

    messages = await take_all(amqp, topology.queue)
    assert [m.message_id for m in messages] == [ROUTING[name][1] for name in fixture_names()]
    for name, message in zip(fixture_names(), messages, strict=True):
        assert message.body == fixture_bytes(name)
        assert message.routing_key == ROUTING[name][0]
        assert message.delivery_mode == 2
        assert message.content_type == "application/json"
        assert message.type == ROUTING[name][1].split(":")[0]
        assert message.app_id == UNVERIFIED_APP_ID
        assert message.timestamp is not None
        assert abs(message.timestamp.timestamp() - time.time()) < 60


async def test_unknown_trigger_is_accepted_and_routed_as_unknown(
    receiver: Client, amqp: AbstractConnection, topology: Topology
) -> None:
    body = b'{"app_id":"01K94FXGRR71HFE865V215DE1C","shiny_new_notification":{"id":"X1"}}'
    response = await receiver.post("/webhooks/sinch", data=body)
    assert response.status == 200
    assert (await response.json())["trigger"] == "UNKNOWN"
    [message] = await take_all(amqp, topology.queue)
    assert message.body == body
    assert message.routing_key == Trigger.UNKNOWN.routing_key


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"message": {"id": ', "invalid_json"),
        (b"[]", "not_object"),
        (b'[{"message": {}}]', "not_object"),
        (b'"message"', "not_object"),
        (b"", "empty_body"),
        (b'{"message": {"id": "\xe9"}}', "not_utf8"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_400(
    receiver: Client, amqp: AbstractConnection, topology: Topology, body: bytes, reason: str
) -> None:
    response = await receiver.post("/webhooks/sinch", data=body)
    assert response.status == 400
    assert (await response.json())["error"] == reason
    assert await take_all(amqp, topology.queue) == []


async def test_oversize_is_413_and_the_limit_itself_is_accepted(
    start_receiver: ReceiverFactory, amqp: AbstractConnection, topology: Topology
) -> None:
    client = await start_receiver(max_body_bytes=4096)
    head = b'{"app_id":"A","pad":"'
    at_limit = head + b"x" * (4096 - len(head) - 2) + b'"}'
    assert len(at_limit) == 4096
    response = await client.post("/webhooks/sinch", data=at_limit)
    assert response.status == 200
    response = await client.post("/webhooks/sinch", data=at_limit[:-2] + b'x"}')
    assert response.status == 413
    assert (await response.json())["error"] == "too_large"

    async def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 1000

    response = await client.post("/webhooks/sinch", data=chunks())  # chunked: no Content-Length
    assert response.status == 413
    [message] = await take_all(amqp, topology.queue)
    assert message.body == at_limit


async def test_any_content_type_is_accepted(receiver: Client) -> None:
    # A 4xx is never retried by Sinch; refusing a real callback for its Content-Type would lose it.
    body = fixture_bytes("03_delivery_delivered.json")
    for content_type in ("application/json", "application/json; charset=utf-8", "text/plain", ""):
        response = await receiver.post("/webhooks/sinch", data=body, headers={"Content-Type": content_type})
        assert response.status == 200


async def test_signed_callbacks(start_receiver: ReceiverFactory, amqp: AbstractConnection, topology: Topology) -> None:
    vectors = signature_vectors()
    secrets = tuple(v["secret"] for v in vectors)
    for vector in vectors:
        now = int(vector["headers"]["x-sinch-webhook-signature-timestamp"]) + 30.25
        client = await start_receiver(clock=lambda now=now: float(now), webhook_secrets=secrets)
        body = fixture_bytes(vector["body_file"])
        response = await client.post("/webhooks/sinch", data=body, headers=vector["headers"])
        assert response.status == 200, await response.text()
        [message] = await take_all(amqp, topology.queue)
        assert message.body == body
        assert message.app_id == VERIFIED_APP_ID
        assert message.timestamp == datetime.fromtimestamp(int(now), UTC)  # AMQP's: whole seconds
        received_at = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds")
        assert message.headers[RECEIVED_AT_HEADER] == received_at  # to the millisecond


@pytest.fixture
async def signed_receiver(start_receiver: ReceiverFactory) -> tuple[Client, float]:
    now = 1_762_161_247.0
    client = await start_receiver(clock=lambda: now, webhook_secrets=("old-secret", "new-secret"))
    return client, now


def _signed(body: bytes, secret: str, timestamp: float, nonce: str = "01K94FXRJRF3F55Z488YAGVDCK") -> dict[str, str]:
    return signed_headers(body, secret, nonce, int(timestamp))


async def test_rotated_secrets_both_sign(signed_receiver: tuple[Client, float]) -> None:
    client, now = signed_receiver
    body = fixture_bytes("01_inbound_ctwa_referral.json")
    for secret in ("old-secret", "new-secret"):
        response = await client.post("/webhooks/sinch", data=body, headers=_signed(body, secret, now))
        assert response.status == 200


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("tampered_body", "bad_signature"),
        ("tampered_nonce", "bad_signature"),
        ("tampered_timestamp", "bad_signature"),
        ("wrong_secret", "bad_signature"),
        ("missing_signature", "missing_header"),
        ("missing_nonce", "missing_header"),
        ("missing_timestamp", "missing_header"),
        ("stale", "stale_timestamp"),
        ("future", "stale_timestamp"),
        ("unsigned", "missing_header"),
    ],
)
async def test_a_bad_signature_is_401_with_a_reason_and_nothing_is_queued(
    signed_receiver: tuple[Client, float],
    amqp: AbstractConnection,
    topology: Topology,
    change: str,
    reason: str,
) -> None:
    client, now = signed_receiver
    body = fixture_bytes("02_inbound_reply_no_referral.json")
    headers = _signed(body, "new-secret", now)
    sent = body
    if change == "tampered_body":
        sent = body.replace(b"payment link", b"payment lynx")
    elif change == "tampered_nonce":
        headers["x-sinch-webhook-signature-nonce"] = "01K94FXRJRF3F55Z488YAGVDCX"
    elif change == "tampered_timestamp":
        headers["x-sinch-webhook-signature-timestamp"] = str(int(now) - 1)
    elif change == "wrong_secret":
        headers = _signed(body, "guessed", now)
    elif change == "missing_signature":
        del headers["x-sinch-webhook-signature"]
    elif change.startswith("missing_"):
        del headers[f"x-sinch-webhook-signature-{change.removeprefix('missing_')}"]
    elif change == "stale":
        headers = _signed(body, "new-secret", now - 301)
    elif change == "future":
        headers = _signed(body, "new-secret", now + 301)
    elif change == "unsigned":
        headers = {}
    response = await client.post("/webhooks/sinch", data=sent, headers=headers)
    assert response.status == 401
    answer = await response.json()
    assert answer["error"] == reason
    assert answer["detail"]
    assert await take_all(amqp, topology.queue) == []


async def test_signature_is_checked_before_the_body_is_parsed(signed_receiver: tuple[Client, float]) -> None:
    client, now = signed_receiver
    response = await client.post("/webhooks/sinch", data=b"not json", headers=_signed(b"not json", "x", now))
    assert response.status == 401
    response = await client.post("/webhooks/sinch", data=b"not json", headers=_signed(b"not json", "old-secret", now))
    assert response.status == 400


async def test_upper_case_signature_headers_verify(signed_receiver: tuple[Client, float]) -> None:
    client, now = signed_receiver
    body = fixture_bytes("05_conversation_start.json")
    headers = {name.upper(): value for name, value in _signed(body, "old-secret", now).items()}
    response = await client.post("/webhooks/sinch", data=body, headers=headers)
    assert response.status == 200


async def test_health_readiness_and_metrics(receiver: Client) -> None:
    assert (await receiver.get("/healthz")).status == 200
    ready = await receiver.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["status"] == "ready"
    await receiver.post("/webhooks/sinch", data=fixture_bytes("03_delivery_delivered.json"))
    await receiver.post("/webhooks/sinch", data=b"[]")
    text = await (await receiver.get("/metrics")).text()
    assert 'ctwa_receiver_accepted_total{trigger="MESSAGE_DELIVERY"} 1.0' in text
    assert 'ctwa_receiver_rejected_total{reason="not_object",status="400"} 1.0' in text
    assert "ctwa_receiver_publish_confirm_seconds_count 1.0" in text
    assert "ctwa_receiver_in_flight 0.0" in text
    assert "ctwa_receiver_broker_ready 1.0" in text
