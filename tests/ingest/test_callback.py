from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from support import fixture_bytes

from ingest.callback import InvalidCallback, Trigger, business_key, identify, parse_body


def _key(payload: dict[str, Any]) -> str:
    body = json.dumps(payload).encode()
    return business_key(identify(payload), payload, body)


@pytest.mark.parametrize(
    ("fixture", "trigger", "key"),
    [
        ("00_seed_ctwa_media_card.json", Trigger.MESSAGE_INBOUND, "MESSAGE_INBOUND:01EKJ1534NWK5R02TGWEJN13HA"),
        ("01_inbound_ctwa_referral.json", Trigger.MESSAGE_INBOUND, "MESSAGE_INBOUND:01K94FXHR0TEWH0AVNH9DN65R6"),
        ("02_inbound_reply_no_referral.json", Trigger.MESSAGE_INBOUND, "MESSAGE_INBOUND:01K94FXMNRRHEM3E2MSH4DMDZS"),
        (
            "03_delivery_delivered.json",
            Trigger.MESSAGE_DELIVERY,
            "MESSAGE_DELIVERY:01K94FXNN0X9G8FGVSQE8Z5379:DELIVERED",
        ),
        (
            "04_contact_merge.json",
            Trigger.CONTACT_MERGE,
            "CONTACT_MERGE:01K94FXJQ8PPG2X7R5JQC42EJ5:01K94FXPM8AV4RRXG07HN7JVAX",
        ),
        ("05_conversation_start.json", Trigger.CONVERSATION_START, "CONVERSATION_START:01K94FXKPGE6RHXQAQPDH4AFAX"),
        ("06_inbound_dispatch_sms.json", Trigger.MESSAGE_INBOUND, "MESSAGE_INBOUND:01K94FXQKG0GB6KC9QA0MZ17QK"),
        (
            "07_delivery_failed_dispatch.json",
            Trigger.MESSAGE_DELIVERY,
            "MESSAGE_DELIVERY:01K94FXSJ0SQWW7FE4N1EE043E:FAILED",
        ),
        ("08_contact_create_signed.json", Trigger.CONTACT_CREATE, "CONTACT_CREATE:01FJA8B466Y0R2GNXD78MD9SM1"),
    ],
)
def test_fixtures_have_their_trigger_and_business_key(fixture: str, trigger: Trigger, key: str) -> None:
    body = fixture_bytes(fixture)
    payload = parse_body(body)
    assert identify(payload) is trigger
    assert business_key(trigger, payload, body) == key


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        ({"message_submit_notification": {"message_id": "M1"}}, "MESSAGE_SUBMIT:M1"),
        ({"event": {"id": "E1"}}, "EVENT_INBOUND:E1"),
        ({"event_delivery_report": {"event_id": "E1", "status": "DELIVERED"}}, "EVENT_DELIVERY:E1:DELIVERED"),
        ({"opt_in_notification": {"request_id": "R1"}}, "OPT_IN:R1"),
        ({"opt_out_notification": {"request_id": "R1"}}, "OPT_OUT:R1"),
        ({"capability_notification": {"request_id": "R2"}}, "CAPABILITY:R2"),
        ({"conversation_stop_notification": {"conversation": {"id": "C1"}}}, "CONVERSATION_STOP:C1"),
        ({"conversation_delete_notification": {"conversation": {"id": "C1"}}}, "CONVERSATION_DELETE:C1"),
        ({"contact_delete_notification": {"contact": {"id": "K1"}}}, "CONTACT_DELETE:K1"),
    ],
)
def test_business_keys_of_the_other_keyed_triggers(payload: dict[str, Any], key: str) -> None:
    assert _key(payload) == key


@pytest.mark.parametrize(
    "payload",
    [
        {"contact_update_notification": {"contact": {"id": "K1"}}},
        {"channel_event_notification": {"channel_event": {"channel": "WHATSAPP"}}},
        {"brand_new_trigger_notification": {"id": "X"}},
        {"message": {"id": ""}},
        {"message": {"id": 12345}},
        {"message": "not an object"},
        {"message_delivery_report": {"message_id": "M1"}},
        {"contact_merge_notification": {"preserved_contact": {"id": "A"}}},
    ],
)
def test_without_the_ids_a_key_needs_the_key_is_the_body_hash(payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    trigger = identify(payload)
    assert business_key(trigger, payload, body) == f"{trigger}:sha256:{hashlib.sha256(body).hexdigest()}"


def test_a_reserialised_retry_has_the_same_key() -> None:
    body = fixture_bytes("03_delivery_delivered.json")
    payload = parse_body(body)
    payload["accepted_time"] = "2025-11-03T09:15:09.001Z"
    retried = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    assert business_key(identify(payload), payload, retried) == business_key(
        identify(parse_body(body)), parse_body(body), body
    )


def test_an_oversized_id_gives_a_bounded_key_that_still_ignores_serialisation() -> None:
    payload = {"message": {"id": "ü" * 300}}
    key = _key(payload)
    assert len(key.encode()) <= 255
    assert key.startswith("MESSAGE_INBOUND:sha256k:")
    assert key == business_key(Trigger.MESSAGE_INBOUND, payload, json.dumps(payload, indent=2).encode())


def test_unknown_trigger_and_routing_keys() -> None:
    assert identify({"app_id": "A"}) is Trigger.UNKNOWN
    assert Trigger.UNKNOWN.routing_key == "unknown"
    assert Trigger.MESSAGE_INBOUND.routing_key == "message.inbound"
    assert Trigger.CONTACT_MERGE.routing_key == "contact.merge"


def test_a_body_with_several_trigger_keys_always_gets_the_same_trigger() -> None:
    both = {"message_delivery_report": {}, "message": {}}
    assert identify(both) is identify(dict(reversed(both.items()))) is Trigger.MESSAGE_INBOUND


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty_body"),
        (b"  \r\n", "empty_body"),
        (b"{", "invalid_json"),
        (b'{"a": NaN}', "invalid_json"),
        (b'{"a": "\\ud800"}', "invalid_json"),
        (b"[" * 5000, "invalid_json"),
        (b'{"a": "\xff"}', "not_utf8"),
        (b"[{}]", "not_object"),
        (b'"text"', "not_object"),
        (b"null", "not_object"),
        (b"42", "not_object"),
        (b"true", "not_object"),
    ],
)
def test_bodies_that_can_never_be_a_callback(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidCallback) as raised:
        parse_body(body)
    assert raised.value.reason == reason
