"""Who may see the dashboard, and what every response carries.

Every path — the page, its files, ``/api`` — needs one of ``CTWA_DASHBOARD_USERS``'s ``name:password`` pairs as
HTTP Basic. Each is compared in constant time, and every pair is compared whatever matched, so the time an answer
takes says nothing of which name or how much of a password was right.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.typedefs import Middleware

__all__ = ["HEADERS", "Users", "guard"]

# No script, style, image or connection from anywhere but the dashboard itself; never framed; types as sent.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

_REALM = 'Basic realm="ctwa", charset="UTF-8"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Users:
    """The pairs allowed in. Kept as digests, so that comparisons take the same time whatever their lengths."""

    def __init__(self, pairs: Iterable[str]) -> None:
        self._digests = [hashlib.sha256(pair.encode()).digest() for pair in pairs]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def allow(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header holds one of the pairs."""
        offered = _basic(authorization)
        if offered is None:
            offered = b"\x00"  # compared all the same, matching nothing
        digest = hashlib.sha256(offered).digest()
        allowed = False
        for known in self._digests:
            allowed |= hmac.compare_digest(digest, known)
        return allowed and offered != b"\x00"


def _basic(authorization: str | None) -> bytes | None:
    """``name:password`` of a Basic ``Authorization`` header, or ``None``."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        return base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


def guard(users: Users) -> Middleware:
    """A middleware: ``401`` without a pair of ``users`` (when there are users: without, the dashboard listens on
    loopback only), and the security headers on every answer."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not users or users.allow(request.headers.get("Authorization")):
            try:
                response = await handler(request)
            except web.HTTPException as error:  # 404, 405: with the headers too
                error.headers.update(HEADERS)
                raise
        else:
            response = web.json_response(
                {"error": "unauthorized", "detail": "this dashboard needs a user and password"},
                status=401,
                headers={"WWW-Authenticate": _REALM},
            )
        response.headers.update(HEADERS)
        return response

    return middleware
