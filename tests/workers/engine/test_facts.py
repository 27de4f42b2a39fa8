"""What each callback says, read once — pure Python, no database: its archive row, the facts it implies, the facts a
batch keeps for the keys the archive found new, and which time a fact carries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from callbacks import at, contact_event
from support import fixture_bytes, fixture_names, incoming, key_of, utc

from workers.engine import facts
from workers.engine.facts import Facts

RECEIVED = datetime(2025, 11, 3, 12, 0, tzinfo=UTC)  # when `support.incoming` says the worker got a callback
LUCIA = "01K94FXJQ8PPG2X7R5JQC42EJ5"
MERGED_AWAY = "01K94FXPM8AV4RRXG07HN7JVAX"
CONVERSATION = "01K94FXKPGE6RHXQAQPDH4AFAX"
APP = "01K94FXGRR71HFE865V215DE1C"

# Each fixture's archive row, but its key, app and project (checked against the body): trigger, event_time,
# accepted_time, contact_ids, identity.
ARCHIVED: dict[str, tuple[str, str | None, str, list[str] | None, str | None]] = {
    "00_seed_ctwa_media_card.json": (
        "MESSAGE_INBOUND",
        "2020-10-01T12:10:53.991Z",
        "2020-10-01T12:10:55.073703Z",
        ["01EKA07N79THJ20WSN6AS30TMW"],
        "46712312312",
    ),
    "01_inbound_ctwa_referral.json": (
        "MESSAGE_INBOUND",
        "2025-11-03T09:14:07Z",
        "2025-11-03T09:14:08.120Z",
        [LUCIA],
        "34611223344",
    ),
    "02_inbound_reply_no_referral.json": (
        "MESSAGE_INBOUND",
        "2025-11-03T09:20:40Z",
        "2025-11-03T09:20:41.377Z",
        [LUCIA],
        "34611223344",
    ),
    "03_delivery_delivered.json": (
        "MESSAGE_DELIVERY",
        "2025-11-03T09:15:02Z",
        "2025-11-03T09:15:02.884Z",
        [LUCIA],
        "34611223344",
    ),
    "04_contact_merge.json": ("CONTACT_MERGE", None, "2025-11-03T10:02:19.006Z", [LUCIA, MERGED_AWAY], None),
    "05_conversation_start.json": ("CONVERSATION_START", None, "2025-11-03T09:14:08.133Z", [LUCIA], None),
    "06_inbound_dispatch_sms.json": (
        "MESSAGE_INBOUND",
        "2025-11-03T09:14:06Z",
        "2025-11-03T09:14:07.512Z",
        None,  # "" on the wire: DISPATCH mode names no contact
        "447700900123",
    ),
    "07_delivery_failed_dispatch.json": (
        "MESSAGE_DELIVERY",
        "2025-11-04T11:40:11.902Z",
        "2025-11-04T11:40:12.310Z",
        None,
        "4915112345678",
    ),
    "08_contact_create_signed.json": (
        "CONTACT_CREATE",
        None,
        "2021-10-18T17:49:13.813615Z",
        ["01FJA8B466Y0R2GNXD78MD9SM1"],
        None,
    ),
}


def read_fixtures() -> facts.Batch:
    return facts.read([incoming(fixture_bytes(name)) for name in fixture_names()])


def said_by(name: str) -> Facts:
    return facts.read([incoming(fixture_bytes(name))]).facts()


def test_every_fixture_has_an_expected_archive_row() -> None:
    assert sorted(ARCHIVED) == fixture_names()


def test_each_callback_gives_its_archive_row_and_payload_in_order() -> None:
    batch = read_fixtures()
    assert len(batch.archived) == len(batch.payloads) == len(batch.ends) == len(fixture_names())
    for name, archived, payload in zip(fixture_names(), batch.archived, batch.payloads, strict=True):
        body = fixture_bytes(name)
        wire = json.loads(body)
        trigger, event_time, accepted_time, contact_ids, identity = ARCHIVED[name]
        assert archived == {
            "key": key_of(body),
            "trigger": trigger,
            "app_id": wire["app_id"] or None,
            "project_id": wire["project_id"],
            "event_time": utc(event_time) if event_time else None,
            "accepted_time": utc(accepted_time),
            "received_at": RECEIVED,
            "signature_verified": False,
            "contact_ids": contact_ids,
            "identity": identity,
        }, name
        assert payload == body.decode()  # the payload as received, to the byte


def test_a_ctwa_inbound_message_is_a_message_from_an_ad_and_a_click() -> None:
    said = said_by("01_inbound_ctwa_referral.json")
    clicked = utc("2025-11-03T09:14:07Z")
    where = {
        "app_id": APP,
        "channel": "WHATSAPP",
        "identity": "34611223344",
        "contact_id": LUCIA,
        "conversation_id": CONVERSATION,
    }
    assert said.messages == [
        {
            "message_id": "01K94FXHR0TEWH0AVNH9DN65R6",
            **where,
            "kind": "text",
            "text": "Hi! Is the summer bundle still available?",
            "media_url": None,
            "sent_at": clicked,
            "has_referral": True,
            "processing_mode": "CONVERSATION",
        }
    ]
    [click] = said.clicks
    referral = json.loads(json.loads(fixture_bytes("01_inbound_ctwa_referral.json"))["message"]["metadata"])
    assert click == {
        "ctwa_clid": "ARAkLkQx3v9fZp0WcJ8m1s_T2uYb7nHq4eR6dA5gK0oLzVtN3yXwCbS1",
        "source_id": "120214875530910427",
        "source_type": "ad",
        "source_url": "https://fb.me/8xQmT2pLw",
        "headline": "Summer bundle -20%",
        "body": "Chat with us to get your discount code",
        "media_type": "image",
        "image_url": "https://scontent.example.net/v/t45.1-9/ad_img.jpg",
        "video_url": None,
        "thumbnail_url": None,
        "welcome_text": "Hi there! How can we help?",
        "referral": referral["referral"],
        "message_id": "01K94FXHR0TEWH0AVNH9DN65R6",
        **where,
        "clicked_at": clicked,
    }
    assert said.sightings == [{"contact_id": LUCIA, "at": clicked}]
    assert [(seen["channel"], seen["identity"], seen["contact_id"]) for seen in said.identities] == [
        ("WHATSAPP", "34611223344", LUCIA)
    ]
    assert [(seen["conversation_id"], seen["kind"]) for seen in said.conversations] == [(CONVERSATION, "activity")]
    assert (said.deliveries, said.merges, said.deletions, said.names) == ([], [], [], [])


def test_a_reply_without_a_referral_is_a_message_and_no_click() -> None:
    said = said_by("02_inbound_reply_no_referral.json")
    [message] = said.messages
    assert (message["text"], message["has_referral"]) == ("Great, please send the payment link", False)
    assert said.clicks == []


def test_delivery_reports_are_deliveries() -> None:
    assert said_by("03_delivery_delivered.json").deliveries == [
        {
            "message_id": "01K94FXNN0X9G8FGVSQE8Z5379",
            "status": "DELIVERED",
            "app_id": APP,
            "channel": "WHATSAPP",
            "identity": "34611223344",
            "contact_id": LUCIA,
            "conversation_id": CONVERSATION,
            "reason_code": None,
            "reported_at": utc("2025-11-03T09:15:02Z"),
            "processing_mode": "CONVERSATION",
        }
    ]
    failed = said_by("07_delivery_failed_dispatch.json")
    [delivery] = failed.deliveries
    assert (delivery["status"], delivery["reason_code"]) == ("FAILED", "OUTSIDE_ALLOWED_SENDING_WINDOW")
    assert (delivery["contact_id"], delivery["conversation_id"]) == (None, None)
    assert (failed.messages, failed.clicks, failed.sightings) == ([], [], [])


def test_a_contact_merge_is_a_merge() -> None:
    said = said_by("04_contact_merge.json")
    merged = utc("2025-11-03T10:02:19.006Z")  # no event_time: when Sinch accepted it
    assert said.merges == [
        {
            "deleted_contact_id": MERGED_AWAY,
            "preserved_contact_id": LUCIA,
            "merged_at": merged,
            "merge_key": f"CONTACT_MERGE:{LUCIA}:{MERGED_AWAY}",
        }
    ]
    assert said.names == [
        {"contact_id": LUCIA, "name": "Lucía G.", "at": merged, "key": f"CONTACT_MERGE:{LUCIA}:{MERGED_AWAY}"}
    ]
    assert said.deletions == []


def test_a_contact_delete_is_a_deletion() -> None:
    said = facts.read([incoming(contact_event("delete", "R", 30, name="Rosa", identities=["34699111222"]))]).facts()
    assert said.deletions == [{"contact_id": "R", "deleted_at": utc(at(30))}]
    assert [(seen["identity"], seen["contact_id"]) for seen in said.identities] == [("34699111222", "R")]
    assert said.merges == []


def test_an_unknown_trigger_is_archived_and_says_nothing() -> None:
    body = b'{"app_id": "A1", "accepted_time": "2025-11-03T09:00:00Z", "brand_new_notification": {"contact_id": "C"}}'
    batch = facts.read([incoming(body)])
    [archived] = batch.archived
    assert (archived["key"], archived["trigger"], archived["app_id"]) == (key_of(body), "UNKNOWN", "A1")
    assert archived["accepted_time"] == utc("2025-11-03T09:00:00Z")
    assert (archived["contact_ids"], archived["identity"]) == (None, None)
    assert batch.facts() == Facts()
    assert not batch.changes_contacts


def test_the_facts_of_a_batch_are_those_of_the_keys_asked_for() -> None:
    batch = read_fixtures()
    chosen = batch.facts(
        {key_of(fixture_bytes(name)) for name in ("01_inbound_ctwa_referral.json", "03_delivery_delivered.json")}
    )
    assert [message["message_id"] for message in chosen.messages] == ["01K94FXHR0TEWH0AVNH9DN65R6"]
    assert [click["message_id"] for click in chosen.clicks] == ["01K94FXHR0TEWH0AVNH9DN65R6"]
    assert [(report["message_id"], report["status"]) for report in chosen.deliveries] == [
        ("01K94FXNN0X9G8FGVSQE8Z5379", "DELIVERED")
    ]
    assert (chosen.merges, chosen.names, chosen.deletions) == ([], [], [])
    assert chosen.contact_ids() == {LUCIA}

    assert batch.facts(set()) == Facts()
    everything = batch.facts()
    assert everything == batch.facts({archived["key"] for archived in batch.archived})
    assert len(everything.messages) == 4
    assert len(everything.clicks) == 2
    assert len(everything.deliveries) == 2
    assert len(everything.merges) == 1
    assert batch.changes_contacts


def _inbound(**drop: bool) -> bytes:
    """The referral fixture without the times named in ``drop`` (``event_time``, ``accept_time``, …)."""
    payload: dict[str, Any] = json.loads(fixture_bytes("01_inbound_ctwa_referral.json"))
    for name in drop:
        payload.pop(name, None)
        payload["message"].pop(name, None)
    return json.dumps(payload).encode()


def _delivery(**drop: bool) -> bytes:
    payload: dict[str, Any] = json.loads(fixture_bytes("03_delivery_delivered.json"))
    for name in drop:
        payload.pop(name, None)
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (_inbound(), "2025-11-03T09:14:07Z"),  # the channel's event_time first
        (_inbound(event_time=True), "2025-11-03T09:14:08.101Z"),  # else the message's accept_time
        (_inbound(event_time=True, accept_time=True), "2025-11-03T09:14:08.120Z"),  # else Sinch's accepted_time
        (_inbound(event_time=True, accept_time=True, accepted_time=True), "2025-11-03T12:00:00Z"),  # else received_at
        (_delivery(), "2025-11-03T09:15:02Z"),
        (_delivery(event_time=True), "2025-11-03T09:15:02.884Z"),
        (_delivery(event_time=True, accepted_time=True), "2025-11-03T12:00:00Z"),
    ],
    ids=[
        "inbound-event_time",
        "inbound-accept_time",
        "inbound-accepted_time",
        "inbound-received_at",
        "delivery-event_time",
        "delivery-accepted_time",
        "delivery-received_at",
    ],
)
def test_the_time_of_a_fact(body: bytes, expected: str) -> None:
    said = facts.read([incoming(body)]).facts()
    times = [fact["sent_at"] for fact in said.messages]
    times += [fact["clicked_at"] for fact in said.clicks]
    times += [fact["reported_at"] for fact in said.deliveries]
    times += [fact["at"] for fact in said.sightings + said.identities + said.conversations]
    assert times
    assert set(times) == {utc(expected)}


def test_a_time_that_cannot_be_read_counts_as_absent() -> None:
    payload = json.loads(_inbound())
    payload["event_time"] = "yesterday"
    payload["message"]["accept_time"] = 42
    batch = facts.read([incoming(json.dumps(payload).encode())])
    [archived], said = batch.archived, batch.facts()
    assert archived["event_time"] is None
    assert said.messages[0]["sent_at"] == utc("2025-11-03T09:14:08.120Z")
