"""The fake Meta the conversions sender is tested against: it refuses what Meta refuses, counts what Meta counts, and
answers as scripted, over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from meta import (
    Behaviour,
    Drop,
    Error,
    FakeMeta,
    Short,
    Slow,
    invalid_parameter,
    no_dataset,
    permission_missing,
    restricted_region,
    server_error,
    throttled,
    token_expired,
    too_many_requests,
    transient,
)


@pytest.fixture
async def meta() -> AsyncIterator[FakeMeta]:
    async with FakeMeta(invalid_clids={"not-a-click"}) as meta:
        yield meta


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def event(event_id: str, /, **changes: Any) -> dict[str, Any]:
    return {
        "event_name": "Purchase",
        "event_time": int(time.time()) - 60,
        "event_id": event_id,
        "action_source": "business_messaging",
        "messaging_channel": "whatsapp",
        "user_data": {"whatsapp_business_account_id": "waba-1", "ctwa_clid": f"clid-{event_id}"},
        "custom_data": {"currency": "EUR", "value": 59.9},
    } | changes


async def post(
    session: aiohttp.ClientSession,
    meta: FakeMeta,
    events: list[dict[str, Any]],
    *,
    token: str = "test-token",
    dataset_id: str = "1234567890",
    seconds: float = 10,
) -> tuple[int, Any]:
    async with session.post(
        f"{meta.url}/v25.0/{dataset_id}/events",
        json={"data": events, "partner_agent": "ctwa-ingest"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=seconds),
    ) as response:
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def test_a_valid_batch_is_counted_and_answered(meta: FakeMeta, session: aiohttp.ClientSession) -> None:
    status, answer = await post(session, meta, [event("a"), event("b"), event("c")])
    assert status == 200
    assert answer["events_received"] == 3
    assert answer["messages"] == []
    assert answer["fbtrace_id"].isalnum()
    assert meta.counted == {"a": 1, "b": 1, "c": 1}
    [request] = meta.requests
    assert (request.authorization, request.partner_agent, request.test_event_code) == (
        "Bearer test-token",
        "ctwa-ingest",
        None,
    )
    assert [e["event_id"] for e in request.events] == ["a", "b", "c"]
    assert (request.behaviour, request.answered_with) == ("Ok", 200)


@pytest.mark.parametrize(
    ("changes", "subcode", "says"),
    [
        ({"event_name": "Lead"}, 2804066, "event_name"),
        ({"event_time": int(time.time()) - 8 * 24 * 3600}, None, "event_time"),
        ({"event_time": int(time.time()) + 3600}, None, "event_time"),
        ({"event_id": ""}, None, "event_id"),
        ({"action_source": "website"}, None, "action_source"),
        ({"user_data": {"whatsapp_business_account_id": "waba-1"}}, None, "user_data.ctwa_clid"),
        (
            {"user_data": {"whatsapp_business_account_id": "waba-1", "ctwa_clid": "not-a-click"}},
            2804087,
            "user_data.ctwa_clid",
        ),
        (
            {"user_data": {"whatsapp_business_account_id": "waba-2", "ctwa_clid": "x"}},
            None,
            "user_data.whatsapp_business_account_id",
        ),
        ({"custom_data": {"currency": "eur", "value": 1}}, None, "custom_data.currency"),
        ({"custom_data": {"currency": "EUR", "value": -1}}, None, "custom_data.value"),
    ],
)
async def test_one_bad_event_fails_the_whole_request(
    meta: FakeMeta, session: aiohttp.ClientSession, changes: dict[str, Any], subcode: int | None, says: str
) -> None:
    status, answer = await post(session, meta, [event("a"), event("b", **changes), event("c")])
    assert status == 400
    assert answer["error"]["code"] == 100
    assert answer["error"].get("error_subcode") == subcode
    assert f"data[1].{says}" in answer["error"]["message"]
    assert f"data[1].{says}" in answer["error"]["error_user_msg"]
    assert answer["error"]["fbtrace_id"]
    assert not meta.counted
    assert meta.requests[0].answered_with == 400


async def test_at_most_1000_events_in_a_request(meta: FakeMeta, session: aiohttp.ClientSession) -> None:
    status, answer = await post(session, meta, [event(str(n)) for n in range(1001)])
    assert (status, answer["error"]["code"]) == (400, 100)
    assert not meta.counted
    status, answer = await post(session, meta, [event(str(n)) for n in range(1000)])
    assert (status, answer["events_received"]) == (200, 1000)
    status, answer = await post(session, meta, [])
    assert (status, answer["error"]["code"]) == (400, 100)


async def test_a_wrong_token_is_refused_until_the_token_is_set(meta: FakeMeta, session: aiohttp.ClientSession) -> None:
    status, answer = await post(session, meta, [event("a")], token="old")
    assert (status, answer["error"]["code"], answer["error"]["type"]) == (401, 190, "OAuthException")
    meta.token = "old"
    status, _ = await post(session, meta, [event("a")], token="old")
    assert status == 200
    assert meta.counted == {"a": 1}


async def test_a_wrong_dataset_does_not_exist(meta: FakeMeta, session: aiohttp.ClientSession) -> None:
    status, answer = await post(session, meta, [event("a")], dataset_id="42")
    assert (status, answer["error"]["code"], answer["error"]["error_subcode"]) == (400, 100, 33)
    assert "does not exist" in answer["error"]["message"]
    assert not meta.counted


async def test_short_counts_only_the_first_events(meta: FakeMeta, session: aiohttp.ClientSession) -> None:
    meta.then(Short(1))
    status, answer = await post(session, meta, [event("a"), event("b")])
    assert (status, answer["events_received"]) == (200, 1)
    assert meta.counted == {"a": 1}


@pytest.mark.parametrize(
    ("error", "status", "code", "subcode"),
    [
        (transient(), 500, 2, None),
        (transient(503), 503, 2, None),
        (throttled(), 400, 4, None),
        (throttled(80004), 400, 80004, None),
        (token_expired(), 401, 190, 463),
        (permission_missing(), 403, 10, None),
        (no_dataset(), 400, 100, 33),
        (invalid_parameter(), 400, 100, None),
        (restricted_region(), 400, 100, None),
    ],
)
async def test_scripted_errors_count_nothing(
    meta: FakeMeta, session: aiohttp.ClientSession, error: Error, status: int, code: int, subcode: int | None
) -> None:
    meta.then(error)
    answered, answer = await post(session, meta, [event("a")])
    assert (answered, answer["error"]["code"], answer["error"].get("error_subcode")) == (status, code, subcode)
    assert answer["error"].get("is_transient") is error.is_transient
    assert answer["error"]["fbtrace_id"]
    assert not meta.counted


@pytest.mark.parametrize(
    ("behaviour", "answer"),
    [(server_error(), (502, "502 Bad Gateway")), (too_many_requests(), (429, "429 Too Many Requests"))],
)
async def test_plain_answers_are_not_json(
    meta: FakeMeta, session: aiohttp.ClientSession, behaviour: Behaviour, answer: tuple[int, str]
) -> None:
    meta.then(behaviour)
    assert await post(session, meta, [event("a")]) == answer
    assert not meta.counted


async def test_slow_counts_at_receipt_and_answers_later(meta: FakeMeta, session: aiohttp.ClientSession) -> None:
    meta.then(Slow(0.3), Slow(0.3))
    sending = asyncio.create_task(post(session, meta, [event("a")]))
    await meta.wait_requests(1)
    assert meta.counted == {"a": 1}
    assert meta.requests[0].answered_with is None
    assert (await sending)[0] == 200
    assert meta.requests[0].answered_with == 200
    with pytest.raises(TimeoutError):  # the client gives up; Meta has counted it all the same
        await post(session, meta, [event("b")], seconds=0.1)
    assert meta.counted == {"a": 1, "b": 1}


@pytest.mark.parametrize("counted", [True, False])
async def test_drop_closes_the_connection_without_an_answer(
    meta: FakeMeta, session: aiohttp.ClientSession, counted: bool
) -> None:
    meta.then(Drop(counted))
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(session, meta, [event("a")])
    assert meta.counted == ({"a": 1} if counted else {})
    assert (meta.requests[0].behaviour, meta.requests[0].answered_with) == ("Drop", None)
    assert (await post(session, meta, [event("b")]))[0] == 200


async def test_then_queues_and_always_overrides(meta: FakeMeta, session: aiohttp.ClientSession) -> None:
    meta.then(transient(), Short(0))
    meta.always(permission_missing())
    assert [(await post(session, meta, [event("a")]))[0] for _ in range(2)] == [403, 403]
    meta.always(None)
    assert [(await post(session, meta, [event("a")]))[0] for _ in range(3)] == [500, 200, 200]
    assert [request.behaviour for request in meta.requests] == ["Error", "Error", "Error", "Short", "Ok"]
    assert meta.counted == {"a": 1}


async def test_wait_requests_gives_up(meta: FakeMeta) -> None:
    with pytest.raises(AssertionError, match="0 requests"):
        await meta.wait_requests(1, timeout=0.05)


async def test_leaving_does_not_wait_for_a_slow_answer(session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    async with FakeMeta() as meta:
        meta.then(Slow(60))
        sending = asyncio.create_task(post(session, meta, [event("a")]))
        await meta.wait_requests(1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await sending
    assert time.monotonic() - started < 5
