from __future__ import annotations

import json

import pytest

from workers.engine.referral import parse_referral

FULL = {
    "source_url": "https://fb.me/8xQmT2pLw",
    "source_id": "120214875530910427",
    "source_type": "ad",
    "headline": "Summer bundle -20%",
    "body": "Chat with us",
    "media_type": "video",
    "video_url": "https://example.net/v.mp4",
    "thumbnail_url": "https://example.net/t.jpg",
    "ctwa_clid": "ARAkLk",
    "welcome_message": {"text": "Hi there!"},
}


def test_a_full_referral() -> None:
    referral = parse_referral(json.dumps({"referral": FULL}))
    assert referral is not None
    assert (referral["source_id"], referral["ctwa_clid"], referral["media_type"]) == (
        "120214875530910427",
        "ARAkLk",
        "video",
    )
    assert (referral["video_url"], referral["thumbnail_url"], referral["image_url"]) == (
        FULL["video_url"],
        FULL["thumbnail_url"],
        None,
    )
    assert referral["welcome_text"] == "Hi there!"
    assert referral["referral"] == FULL


@pytest.mark.parametrize(
    "metadata",
    [
        "",
        "plain text from a send",
        "[1, 2, 3]",
        '["referral"]',
        "{",
        '{"lead_id": "L-88213"}',
        '{"referral": "not an object"}',
        '{"referral": null}',
        '{"referral": [{"source_id": "1"}]}',
        '{"referral": {}}',
        '{"referral": {"headline": "no ids at all", "source_type": "ad"}}',
        '{"referral": {"source_id": "", "ctwa_clid": ""}}',
        None,
        42,
        {"referral": FULL},  # metadata is a string on the wire; an object is not read
    ],
)
def test_metadata_that_is_not_an_ad_click(metadata: object) -> None:
    assert parse_referral(metadata) is None


def test_a_status_ad_has_no_click_id_but_is_a_click() -> None:
    referral = parse_referral(json.dumps({"referral": {"source_id": "9", "source_type": "ad", "headline": "H"}}))
    assert referral is not None
    assert (referral["source_id"], referral["ctwa_clid"]) == ("9", None)


def test_a_click_id_alone_is_a_click() -> None:
    referral = parse_referral(json.dumps({"referral": {"ctwa_clid": "C"}}))
    assert referral is not None
    assert (referral["source_id"], referral["ctwa_clid"], referral["headline"]) == (None, "C", None)


def test_wrong_types_in_fields_are_dropped_not_fatal() -> None:
    referral = parse_referral(
        json.dumps(
            {
                "referral": {
                    "source_id": 120214875530910427,
                    "headline": ["a"],
                    "body": {"x": 1},
                    "media_type": True,
                    "welcome_message": "hello",
                }
            }
        )
    )
    assert referral is not None
    assert referral["source_id"] == "120214875530910427"
    assert (referral["headline"], referral["body"], referral["media_type"], referral["welcome_text"]) == (
        None,
        None,
        None,
        None,
    )
