"""The tables users query, built from real callbacks in the real Postgres: every fixture, odd metadata, and delivery
statuses in any order."""

from __future__ import annotations

import itertools
import json

import pytest
from callbacks import delivery, inbound, referral
from sqlalchemy.ext.asyncio import AsyncEngine
from support import empty, fixture_bytes, fixture_names, rows, store, utc

LUCIA = "01K94FXJQ8PPG2X7R5JQC42EJ5"
MERGED_AWAY = "01K94FXPM8AV4RRXG07HN7JVAX"
CONVERSATION = "01K94FXKPGE6RHXQAQPDH4AFAX"


async def test_every_fixture_projects_as_documented(db: AsyncEngine) -> None:
    await store(db, [fixture_bytes(name) for name in fixture_names()])

    clicks = {row["message_id"]: row for row in await rows(db, "SELECT * FROM ad_clicks")}
    assert set(clicks) == {"01K94FXHR0TEWH0AVNH9DN65R6", "01EKJ1534NWK5R02TGWEJN13HA"}
    summer = clicks["01K94FXHR0TEWH0AVNH9DN65R6"]
    assert summer["source_id"] == "120214875530910427"
    assert summer["source_type"] == "ad"
    assert summer["ctwa_clid"] == "ARAkLkQx3v9fZp0WcJ8m1s_T2uYb7nHq4eR6dA5gK0oLzVtN3yXwCbS1"
    assert summer["headline"] == "Summer bundle -20%"
    assert summer["body"] == "Chat with us to get your discount code"
    assert summer["media_type"] == "image"
    assert summer["image_url"] == "https://scontent.example.net/v/t45.1-9/ad_img.jpg"
    assert (summer["video_url"], summer["thumbnail_url"]) == (None, None)
    assert summer["welcome_text"] == "Hi there! How can we help?"
    assert summer["source_url"] == "https://fb.me/8xQmT2pLw"
    assert (summer["channel"], summer["identity"]) == ("WHATSAPP", "34611223344")
    assert (summer["contact_id"], summer["conversation_id"]) == (LUCIA, CONVERSATION)
    assert summer["app_id"] == "01K94FXGRR71HFE865V215DE1C"
    assert summer["clicked_at"] == utc("2025-11-03T09:14:07Z")  # the callback's event_time
    assert (
        summer["referral"]
        == json.loads(json.loads(fixture_bytes("01_inbound_ctwa_referral.json"))["message"]["metadata"])["referral"]
    )
    seed = clicks["01EKJ1534NWK5R02TGWEJN13HA"]
    assert (seed["source_id"], seed["ctwa_clid"], seed["headline"]) == ("<SOURCE_ID>", "<CLICK_ID>", "Our new product")

    messages = {row["message_id"]: row for row in await rows(db, "SELECT * FROM messages")}
    assert set(messages) == {
        "01K94FXHR0TEWH0AVNH9DN65R6",
        "01K94FXMNRRHEM3E2MSH4DMDZS",
        "01K94FXQKG0GB6KC9QA0MZ17QK",
        "01EKJ1534NWK5R02TGWEJN13HA",
    }
    reply = messages["01K94FXMNRRHEM3E2MSH4DMDZS"]
    assert (reply["kind"], reply["text"], reply["has_referral"]) == (
        "text",
        "Great, please send the payment link",
        False,
    )
    assert reply["sent_at"] == utc("2025-11-03T09:20:40Z")
    card = messages["01EKJ1534NWK5R02TGWEJN13HA"]
    assert (card["kind"], card["text"], card["has_referral"]) == ("media_card", "Check out my product!", True)
    assert card["media_url"].endswith("Sinch-logo-Events.png")
    dispatch = messages["01K94FXQKG0GB6KC9QA0MZ17QK"]
    assert (dispatch["contact_id"], dispatch["conversation_id"]) == (None, None)  # "" on the wire
    assert (dispatch["channel"], dispatch["identity"], dispatch["processing_mode"]) == (
        "SMS",
        "447700900123",
        "DISPATCH",
    )

    reports = {row["message_id"]: row for row in await rows(db, "SELECT * FROM delivery_reports")}
    assert reports["01K94FXNN0X9G8FGVSQE8Z5379"]["status"] == "DELIVERED"
    assert reports["01K94FXNN0X9G8FGVSQE8Z5379"]["reported_at"] == utc("2025-11-03T09:15:02Z")
    failed = reports["01K94FXSJ0SQWW7FE4N1EE043E"]
    assert (failed["status"], failed["reason_code"], failed["contact_id"]) == (
        "FAILED",
        "OUTSIDE_ALLOWED_SENDING_WINDOW",
        None,
    )
    statuses = {row["message_id"]: row["status"] for row in await rows(db, "SELECT * FROM message_status")}
    assert statuses == {"01K94FXNN0X9G8FGVSQE8Z5379": "DELIVERED", "01K94FXSJ0SQWW7FE4N1EE043E": "FAILED"}

    contacts = {row["contact_id"]: row for row in await rows(db, "SELECT * FROM contacts")}
    assert contacts[LUCIA]["display_name"] == "Lucía G."  # from the merge, the latest word on her
    assert contacts[LUCIA]["first_seen_at"] == utc("2025-11-03T09:14:07Z")
    assert contacts[LUCIA]["last_seen_at"] == utc("2025-11-03T10:02:19.006Z")
    assert contacts[MERGED_AWAY]["merged_into_contact_id"] == LUCIA
    assert contacts[MERGED_AWAY]["display_name"] is None
    assert contacts["01FJA8B466Y0R2GNXD78MD9SM1"]["display_name"] == "New Test Contact"
    assert await rows(db, "SELECT deleted_contact_id, preserved_contact_id FROM contact_merges") == [
        {"deleted_contact_id": MERGED_AWAY, "preserved_contact_id": LUCIA}
    ]

    identities = {(row["channel"], row["identity"]): row for row in await rows(db, "SELECT * FROM channel_identities")}
    assert identities[("WHATSAPP", "34611223344")]["contact_id"] == LUCIA
    assert identities[("SMS", "34611223344")]["contact_id"] == LUCIA
    assert identities[("SMS", "447700900123")]["contact_id"] is None  # DISPATCH: known by identity only
    assert identities[("SMS", "48123456789")]["contact_id"] == "01FJA8B466Y0R2GNXD78MD9SM1"
    assert all(row["app_id"] is None for row in identities.values())

    conversation = (await rows(db, "SELECT * FROM conversations WHERE conversation_id = :id", id=CONVERSATION))[0]
    assert (conversation["contact_id"], conversation["active_channel"]) == (LUCIA, "WHATSAPP")
    assert conversation["started_at"] == utc("2025-11-03T09:14:07Z")
    assert conversation["last_activity_at"] == utc("2025-11-03T09:20:40Z")
    assert conversation["stopped_at"] is None


async def test_a_dispatch_message_from_an_ad_is_an_ad_click_keyed_by_identity(db: AsyncEngine) -> None:
    await store(db, [inbound("M1", 0, identity="34600000001", metadata=referral("777", "CLID-1"))])
    [click] = await rows(db, "SELECT * FROM ad_clicks")
    assert (click["source_id"], click["ctwa_clid"]) == ("777", "CLID-1")
    assert (click["contact_id"], click["conversation_id"], click["identity"]) == (None, None, "34600000001")
    [identity] = await rows(db, "SELECT contact_id, identity FROM channel_identities")
    assert identity == {"contact_id": None, "identity": "34600000001"}


@pytest.mark.parametrize(
    "metadata",
    ["", "plain text", "[1,2]", '{"lead": 1}', '{"referral": "x"}', '{"referral": {"headline": "no ids"}}', "{"],
)
async def test_odd_metadata_stores_the_message_and_no_click(db: AsyncEngine, metadata: str) -> None:
    await store(db, [inbound("M1", 0, identity="1", contact="C1", conversation="V1", metadata=metadata)])
    assert [row["has_referral"] for row in await rows(db, "SELECT has_referral FROM messages")] == [False]
    assert await rows(db, "SELECT * FROM ad_clicks") == []


async def test_a_status_ad_click_has_no_click_id(db: AsyncEngine) -> None:
    await store(db, [inbound("M1", 0, identity="1", metadata=referral("555", None, source_type="ad"))])
    [click] = await rows(db, "SELECT source_id, ctwa_clid FROM ad_clicks")
    assert click == {"source_id": "555", "ctwa_clid": None}


@pytest.mark.parametrize(
    ("statuses", "current"),
    [
        (["QUEUED_ON_CHANNEL", "DELIVERED", "READ"], "READ"),
        (["QUEUED_ON_CHANNEL", "READ"], "READ"),  # a channel may skip DELIVERED
        (["QUEUED_ON_CHANNEL", "DELIVERED"], "DELIVERED"),
        (["QUEUED_ON_CHANNEL", "FAILED"], "FAILED"),
        (["QUEUED_ON_CHANNEL", "SWITCHING_CHANNEL", "DELIVERED"], "DELIVERED"),
        (["QUEUED_ON_CHANNEL", "SOMETHING_NEW"], "QUEUED_ON_CHANNEL"),
    ],
)
async def test_message_status_never_moves_backwards_in_any_order(
    db: AsyncEngine, statuses: list[str], current: str
) -> None:
    reports = [delivery("OUT1", status, minute, identity="1") for minute, status in enumerate(statuses)]
    for order in itertools.permutations(reports):
        await empty(db)
        await store(db, list(order), batch_size=1)
        assert [row["status"] for row in await rows(db, "SELECT status FROM message_status")] == [current]
