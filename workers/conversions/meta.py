"""Meta's Conversions API for Business Messaging: one request of events, and what its answer means for them.

The answer is sorted as ``docs/conversions.md`` (after Meta's error table) says: counted; not counted and worth
retrying (Meta's trouble, a throttle, a server or transport error before anything reached Meta); a configuration
Meta refuses (token, permission, dataset: park); an event Meta refuses for good; or unknown — the request may have
reached Meta and no answer came back, so whether it counted the events can't be known.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

__all__ = ["Event", "MetaClient", "Outcome", "Verdict", "verdict_of"]

log = logging.getLogger(__name__)

_THROTTLED_CODES = frozenset({4, 17, 32, 341, 613, *range(80000, 80015)})
_TRANSIENT_CODES = frozenset({1, 2})
_CONFIGURATION_CODES = frozenset({190, 10, 33, *range(200, 300)})


class Outcome(enum.Enum):
    COUNTED = "counted"  # Meta counted every event of the request
    RETRY = "retry"  # nothing counted; may succeed later (Meta's trouble, a server or transport error)
    THROTTLED = "throttled"  # nothing counted; Meta asks us to slow down
    PARK = "park"  # nothing counted; the token, a permission or the dataset is wrong: no request can succeed
    REFUSED = "refused"  # nothing counted; an event of the request can never be taken
    UNKNOWN = "unknown"  # the request may have reached Meta, whose answer was lost or says it counted only some


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str  # for the log, the metric's label and the row's last_error: never holds the token
    received: int = 0
    fbtrace_id: str | None = None
    code: int | None = None
    subcode: int | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A conversion as Meta takes it, attributed to its click."""

    id: int
    event_id: str
    event_name: str
    event_time: datetime
    ctwa_clid: str
    value: Decimal | None
    currency: str | None
    custom_data: Mapping[str, Any] | None
    app_id: str | None = None  # its click's app: whose Meta setup it goes to (never sent to Meta)

    def payload(self, waba_id: str) -> dict[str, Any]:
        custom = dict(self.custom_data or {})
        if self.currency is not None:
            custom["currency"] = self.currency
        if self.value is not None:  # left out when unknown, rather than sent as 0
            custom["value"] = float(self.value)
        event: dict[str, Any] = {
            "event_name": self.event_name,
            "event_time": int(self.event_time.timestamp()),
            "event_id": self.event_id,
            "action_source": "business_messaging",
            "messaging_channel": "whatsapp",
            "user_data": {"whatsapp_business_account_id": waba_id, "ctwa_clid": self.ctwa_clid},
        }
        if custom:
            event["custom_data"] = custom
        return event


class MetaClient:
    """Posts events to ``{graph_url}/{version}/{dataset_id}/events``, the token in a header (never in a URL)."""

    def __init__(
        self,
        *,
        graph_url: str,
        version: str,
        dataset_id: str,
        access_token: str,
        waba_id: str,
        partner_agent: str | None = None,
        test_event_code: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = f"{graph_url.rstrip('/')}/{version}/{dataset_id}/events"
        self._headers = {"Authorization": f"Bearer {access_token}", "Content-Type": "application/json"}
        self._waba_id = waba_id
        self._extra = {
            name: value
            for name, value in (("partner_agent", partner_agent), ("test_event_code", test_event_code))
            if value
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0))
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> MetaClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout, raise_for_status=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, events: Sequence[Event]) -> Verdict:
        """Post ``events`` (at most 1,000) in one request; what came of it."""
        assert self._session is not None, "use MetaClient as an async context manager"
        body = orjson.dumps({"data": [event.payload(self._waba_id) for event in events], **self._extra})
        try:
            async with self._session.post(self.url, data=body, headers=self._headers) as response:
                status = response.status
                text = await response.text()
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            # No connection was made: nothing reached Meta.
            return Verdict(Outcome.RETRY, f"no connection: {type(error).__name__}")
        except (aiohttp.ClientError, TimeoutError) as error:
            return Verdict(Outcome.UNKNOWN, f"sent, no answer: {type(error).__name__}")
        return verdict_of(status, text, len(events))


def verdict_of(status: int, text: str, sent: int) -> Verdict:
    """What an HTTP answer of ``status`` with body ``text`` means for a request of ``sent`` events."""
    try:
        body = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        body = None
    if status == 200:
        received = body.get("events_received") if isinstance(body, dict) else None
        trace = body.get("fbtrace_id") if isinstance(body, dict) else None
        if not isinstance(received, int):
            return Verdict(Outcome.UNKNOWN, "HTTP 200 without events_received")
        if received >= sent:
            return Verdict(Outcome.COUNTED, "counted", received, trace)
        if received == 0:
            return Verdict(Outcome.RETRY, f"Meta counted none of {sent}", 0, trace)
        return Verdict(Outcome.UNKNOWN, f"Meta counted {received} of {sent}, not saying which", received, trace)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        if status == 429:
            return Verdict(Outcome.THROTTLED, "HTTP 429")
        return Verdict(Outcome.RETRY, f"HTTP {status}")
    code = error.get("code") if isinstance(error.get("code"), int) else None
    subcode = error.get("error_subcode") if isinstance(error.get("error_subcode"), int) else None
    message = str(error.get("error_user_msg") or error.get("message") or f"HTTP {status}")[:500]
    trace = error.get("fbtrace_id") if isinstance(error.get("fbtrace_id"), str) else None

    def verdict(outcome: Outcome) -> Verdict:
        return Verdict(outcome, message, 0, trace, code, subcode)

    if code in _THROTTLED_CODES or status == 429:
        return verdict(Outcome.THROTTLED)
    if code in _TRANSIENT_CODES or error.get("is_transient") is True or status >= 500:
        return verdict(Outcome.RETRY)
    if code in _CONFIGURATION_CODES or subcode == 33 or status in (401, 403):
        return verdict(Outcome.PARK)
    if code == 100 and "does not exist" in str(error.get("message", "")):
        return verdict(Outcome.PARK)
    if code == 100 or "Restrictive Region" in message or "Restrictive Region" in str(error.get("message", "")):
        return verdict(Outcome.REFUSED)
    return verdict(Outcome.RETRY)
