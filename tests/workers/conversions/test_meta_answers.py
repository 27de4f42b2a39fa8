"""What an answer of Meta means for the events of its request, as Meta's error table sorts them."""

from __future__ import annotations

import json

import pytest

from workers.conversions.meta import Outcome, verdict_of


def error(code: int, subcode: int | None = None, message: str = "x", **extra: object) -> str:
    return json.dumps({"error": {"message": message, "code": code, "error_subcode": subcode, **extra}})


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, json.dumps({"events_received": 3, "fbtrace_id": "T"}), Outcome.COUNTED),
        (200, json.dumps({"events_received": 0}), Outcome.RETRY),  # nothing counted: safe to send again
        (200, json.dumps({"events_received": 2}), Outcome.UNKNOWN),  # which two? can't be known
        (200, "not json", Outcome.UNKNOWN),
        (500, error(2, is_transient=True), Outcome.RETRY),
        (400, error(1), Outcome.RETRY),
        (400, error(80004), Outcome.THROTTLED),
        (400, error(4), Outcome.THROTTLED),
        (400, error(613), Outcome.THROTTLED),
        (429, "", Outcome.THROTTLED),
        (502, "<html>bad gateway</html>", Outcome.RETRY),
        (401, error(190), Outcome.PARK),
        (403, error(10), Outcome.PARK),
        (403, error(200), Outcome.PARK),
        (400, error(100, 33, "Object with ID '1' does not exist"), Outcome.PARK),
        (400, error(100, None, "Unsupported post request. Object with ID '1' does not exist"), Outcome.PARK),
        (400, error(100, 2804066), Outcome.REFUSED),
        (400, error(100, 2804087), Outcome.REFUSED),
        (400, error(100), Outcome.REFUSED),
        (400, error(2804050, None, "Messaging Event Within Messaging Restrictive Region"), Outcome.REFUSED),
    ],
)
def test_answers_are_sorted_as_metas_table_says(status: int, body: str, outcome: Outcome) -> None:
    assert verdict_of(status, body, 3).outcome is outcome


def test_a_refusal_keeps_metas_code_subcode_message_and_trace() -> None:
    body = json.dumps(
        {
            "error": {
                "message": "Invalid parameter",
                "code": 100,
                "error_subcode": 2804066,
                "fbtrace_id": "AbC",
                "error_user_msg": "event_name Lead is not allowed",
            }
        }
    )
    verdict = verdict_of(400, body, 1)
    assert (verdict.code, verdict.subcode, verdict.fbtrace_id) == (100, 2804066, "AbC")
    assert verdict.reason == "event_name Lead is not allowed"
