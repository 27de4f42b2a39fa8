"""A fake of Meta's Conversions API for Business Messaging, ``POST /{version}/{dataset_id}/events``, served over real
HTTP on 127.0.0.1 for the conversions sender's tests.

It checks a request as Meta does and counts the events Meta would count, in ``counted``: Meta does not deduplicate
business-messaging events, so a test proves exactly-once by reading that every ``event_id`` was counted once. A test
scripts what comes back (an error, a short count, a slow or lost answer) with ``then`` and ``always``.
https://developers.facebook.com/docs/marketing-api/conversions-api/business-messaging/
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import string
import time
from collections import Counter, deque
from collections.abc import Collection
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web

from ingest.settings import Settings

EVENT_NAMES = frozenset(
    {
        "Purchase",
        "LeadSubmitted",
        "InitiateCheckout",
        "AddToCart",
        "ViewContent",
        "OrderCreated",
        "OrderShipped",
        "OrderDelivered",
        "OrderCanceled",
        "OrderReturned",
        "CartAbandoned",
        "QualifiedLead",
        "RatingProvided",
        "ReviewProvided",
    }
)
MAX_EVENTS = 1000
MAX_AGE = 7 * 24 * 3600
MAX_AHEAD = 5 * 60  # a clock a little ahead of Meta's is tolerated, an event dated tomorrow is not
_CURRENCY = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class Ok:
    """A valid request is counted in full and answered 200."""


@dataclass(frozen=True)
class Short:
    """A valid request of which Meta counts, and acknowledges, only the first ``received`` events."""

    received: int


@dataclass(frozen=True)
class Error:
    """Meta's error answer, counting nothing. Left out of it when None, as Meta does: ``subcode``, ``is_transient``."""

    http: int
    code: int
    subcode: int | None = None
    message: str = "An unexpected error has occurred. Please retry your request later."
    type: str = "OAuthException"
    is_transient: bool | None = None
    user_title: str = ""
    user_msg: str = ""


@dataclass(frozen=True)
class Plain:
    """A non-JSON answer, as a proxy or load balancer in front of Meta gives; nothing is counted."""

    http: int
    text: str = ""


@dataclass(frozen=True)
class Slow:
    """Meta counts at receipt, as ``then`` says, and answers ``seconds`` later: an answer a client may never read."""

    seconds: float
    then: Behaviour = Ok()


@dataclass(frozen=True)
class Drop:
    """The request is read (and counted if ``counted`` and valid), then the connection closes without an answer."""

    counted: bool


Behaviour = Ok | Short | Error | Plain | Slow | Drop


def transient(http: int = 500) -> Error:
    return Error(http, 2, is_transient=True)


def throttled(code: int = 4) -> Error:
    return Error(400, code, message=f"(#{code}) Application request limit reached", is_transient=True)


def token_expired() -> Error:
    return Error(401, 190, 463, "Error validating access token: Session has expired.")


def permission_missing() -> Error:
    return Error(403, 10, message="(#10) Application does not have permission for this action")


def no_dataset(dataset_id: str = "1234567890") -> Error:
    message = (
        f"Unsupported post request. Object with ID '{dataset_id}' does not exist, cannot be loaded due to missing"
        " permissions, or does not support this operation."
    )
    return Error(400, 100, 33, message, "GraphMethodException")


def invalid_parameter(detail: str = "data[0]: invalid", subcode: int | None = None) -> Error:
    return Error(400, 100, subcode, f"Invalid parameter: {detail}", user_title="Invalid parameter", user_msg=detail)


def restricted_region() -> Error:
    # Meta's docs name this refusal only by its title, so the title is all the fake can give.
    title = "Messaging Event Within Messaging Restrictive Region"
    return Error(400, 100, message=f"Invalid parameter: {title}", user_title=title, user_msg=title)


def server_error(status: int = 502) -> Plain:
    return Plain(status, f"{status} {HTTPStatus(status).phrase}")


def too_many_requests() -> Plain:
    return Plain(429, "429 Too Many Requests")


@dataclass
class Request:
    """One request as the fake received it; ``answered_with`` is None when dropped, or while a slow answer waits."""

    path: str
    authorization: str | None
    dataset_id: str
    body: dict[str, Any] | None
    behaviour: str
    events: list[Any] = field(default_factory=list)
    partner_agent: str | None = None
    test_event_code: str | None = None
    answered_with: int | None = None
    answer: dict[str, Any] | str | None = None


class FakeMeta:
    """Meta's Graph API for one dataset — and those added with ``dataset``, each with its own token and WABA — on a
    free port of ``host`` (127.0.0.1) while the ``async with`` lasts.

    Each request takes the next behaviour queued with ``then``, or ``Ok()`` when none is queued; a behaviour set
    with ``always`` answers every request instead, leaving the queue untouched, until ``always(None)``.
    """

    def __init__(
        self,
        *,
        token: str = "test-token",
        dataset_id: str = "1234567890",
        waba_id: str = "waba-1",
        version: str = "v25.0",
        invalid_clids: Collection[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.port = 0
        self.token = token
        self.dataset_id = dataset_id
        self.waba_id = waba_id
        self.version = version
        self.invalid_clids = frozenset(invalid_clids)
        self.url = ""
        self.counted: Counter[str] = Counter()
        self.counted_in: dict[str, Counter[str]] = {}  # per dataset
        self.requests: list[Request] = []
        self._datasets: dict[str, tuple[str, str]] = {}  # those added: dataset id → (token, WABA)
        self._queue: deque[Behaviour] = deque()
        self._always: Behaviour | None = None
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeMeta:
        app = web.Application()
        app.router.add_post("/{version}/{dataset_id}/events", self._events)
        # A slow answer still waiting at the end of a test is cut short rather than awaited.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        host, self.port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{self.port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def settings(self, database_url: str, **more: Any) -> Settings:
        """A sender's settings aimed at this fake: its URL, version, dataset, token and WABA; ``more`` besides."""
        return Settings(
            database_url=database_url,
            meta_graph_url=self.url,
            meta_api_version=self.version,
            meta_dataset_id=self.dataset_id,
            meta_access_token=self.token,
            meta_waba_id=self.waba_id,
            **more,
        )

    def dataset(self, dataset_id: str, *, token: str, waba_id: str) -> None:
        """Take events for ``dataset_id`` too, with its own token and WhatsApp Business Account."""
        self._datasets[dataset_id] = (token, waba_id)

    def then(self, *behaviours: Behaviour) -> None:
        """Queue behaviours, one for each of the next requests."""
        self._queue.extend(behaviours)

    def always(self, behaviour: Behaviour | None) -> None:
        """Answer every request with ``behaviour``, ahead of the queue; None goes back to the queue."""
        self._always = behaviour

    async def wait_requests(self, n: int, timeout: float = 10) -> None:  # noqa: ASYNC109 (a deadline in the call reads best in a test)
        """Wait until at least ``n`` requests have arrived (answered or not)."""
        try:
            async with asyncio.timeout(timeout):
                while len(self.requests) < n:
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(f"{len(self.requests)} requests after {timeout}s, not {n}") from None

    def _next(self) -> Behaviour:
        if self._always is not None:
            return self._always
        return self._queue.popleft() if self._queue else Ok()

    async def _events(self, request: web.Request) -> web.StreamResponse:
        body = _json_object(await request.read())
        behaviour = self._next()
        data = body.get("data") if body is not None else None
        record = Request(
            request.path,
            request.headers.get("Authorization"),
            request.match_info["dataset_id"],
            body,
            type(behaviour).__name__,
            data if isinstance(data, list) else [],
            _string(body, "partner_agent"),
            _string(body, "test_event_code"),
        )
        self.requests.append(record)
        self._arrived.set()
        delay = 0.0
        while isinstance(behaviour, Slow):
            delay += behaviour.seconds
            behaviour = behaviour.then
        status, answer = self._answer(behaviour, request, body)
        if delay:
            await asyncio.sleep(delay)
        if isinstance(behaviour, Drop):
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never written: aiohttp gives up on a closed connection
        record.answered_with, record.answer = status, answer
        if isinstance(answer, str):
            return web.Response(status=status, text=answer)
        return web.json_response(answer, status=status)

    def _answer(
        self, behaviour: Behaviour, request: web.Request, body: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any] | str]:
        if isinstance(behaviour, Plain):
            return behaviour.http, behaviour.text
        if isinstance(behaviour, Error):
            return _error(behaviour)
        if isinstance(behaviour, Drop) and not behaviour.counted:
            return 0, ""
        events = self._check(request, body)
        if isinstance(events, Error):
            return _error(events)
        received = behaviour.received if isinstance(behaviour, Short) else len(events)
        self.counted.update(event["event_id"] for event in events[:received])
        dataset = self.counted_in.setdefault(request.match_info["dataset_id"], Counter())
        dataset.update(event["event_id"] for event in events[:received])
        return 200, {"events_received": received, "messages": [], "fbtrace_id": _trace()}

    def _check(self, request: web.Request, body: dict[str, Any] | None) -> list[dict[str, Any]] | Error:
        dataset_id = request.match_info["dataset_id"]
        token, waba_id = self._datasets.get(dataset_id, (self.token, self.waba_id))
        if request.headers.get("Authorization") != f"Bearer {token}":
            return Error(401, 190, message="Invalid OAuth access token - Cannot parse access token")
        if request.match_info["version"] != self.version or (
            dataset_id != self.dataset_id and dataset_id not in self._datasets
        ):
            return no_dataset(dataset_id)
        if body is None:
            return invalid_parameter("the body must be a JSON object")
        data = body.get("data")
        if not isinstance(data, list) or not data:
            return invalid_parameter("data: a non-empty list of events is required")
        if len(data) > MAX_EVENTS:
            return invalid_parameter(f"data: {len(data)} events, at most {MAX_EVENTS} in one request")
        for key in ("partner_agent", "test_event_code"):
            if key in body and not isinstance(body[key], str):
                return invalid_parameter(f"{key}: must be a string")
        now = time.time()
        for index, event in enumerate(data):
            if (problem := self._problem(event, now, waba_id)) is not None:
                subcode, detail = problem
                return invalid_parameter(f"data[{index}]{detail}", subcode)
        return data

    def _problem(self, event: Any, now: float, waba_id: str) -> tuple[int | None, str] | None:
        """What Meta refuses in one event: the error subcode and where, or None for a valid event."""
        if not isinstance(event, dict):
            return None, ": an event must be a JSON object"
        name, at = event.get("event_name"), event.get("event_time")
        if not isinstance(name, str) or name not in EVENT_NAMES:
            return 2804066, f".event_name: {name!r} is not an event name for business messaging"
        if not isinstance(at, int) or isinstance(at, bool):
            return None, f".event_time: {at!r} is not Unix seconds"
        if at < now - MAX_AGE:
            return None, f".event_time: {at} is more than 7 days in the past"
        if at > now + MAX_AHEAD:
            return None, f".event_time: {at} is in the future"
        if not isinstance(event.get("event_id"), str) or not event["event_id"]:
            return None, ".event_id: a non-empty string is required"
        if event.get("action_source") != "business_messaging":
            return None, ".action_source: must be 'business_messaging'"
        if event.get("messaging_channel") != "whatsapp":
            return None, ".messaging_channel: must be 'whatsapp'"
        user = event.get("user_data")
        clid = user.get("ctwa_clid") if isinstance(user, dict) else None
        if not isinstance(user, dict) or not isinstance(clid, str) or not clid:
            return None, ".user_data.ctwa_clid: a non-empty string is required"
        if clid in self.invalid_clids:
            return 2804087, f".user_data.ctwa_clid: {clid!r} is not a click on this business's ads"
        if user.get("whatsapp_business_account_id") != waba_id:
            return None, ".user_data.whatsapp_business_account_id: not the WhatsApp Business Account of this dataset"
        custom = event.get("custom_data", {})
        if not isinstance(custom, dict):
            return None, ".custom_data: must be a JSON object"
        currency, value = custom.get("currency", "EUR"), custom.get("value", 0)
        if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
            return None, f".custom_data.currency: {currency!r} is not an ISO 4217 code"
        if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
            return None, f".custom_data.value: {value!r} is not an amount"
        return None


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _string(body: dict[str, Any] | None, key: str) -> str | None:
    value = body.get(key) if body is not None else None
    return value if isinstance(value, str) else None


def _error(error: Error) -> tuple[int, dict[str, Any]]:
    fields: dict[str, Any] = {"message": error.message, "type": error.type, "code": error.code}
    if error.subcode is not None:
        fields["error_subcode"] = error.subcode
    fields |= {"error_user_title": error.user_title, "error_user_msg": error.user_msg, "fbtrace_id": _trace()}
    if error.is_transient is not None:
        fields["is_transient"] = error.is_transient
    return error.http, {"error": fields}


def _trace() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(23))
