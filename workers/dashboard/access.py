"""Who may see the dashboard, and what every response carries.

Every path — the page, its files, ``/api`` — needs one of ``CTWA_DASHBOARD_USERS``'s users as HTTP Basic: a
``name:password`` pair, or ``name:scrypt:…``, the password's scrypt hash (``ctwa dashboard --hash-password``
makes one), so that the setting need not hold the password itself. Pairs are compared in constant time, and every
pair whatever matched, so the time an answer takes says nothing of which name or how much of a password was right.
A hash is checked once per password and remembered (as a digest) while the dashboard runs; a wrong password costs
one scrypt whatever the name, so its time says nothing of whether the name exists either.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

__all__ = ["HEADERS", "Users", "guard", "hash_password"]

# No script, style, image or connection from anywhere but the dashboard itself; never framed; types as sent.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

_REALM = 'Basic realm="ctwa", charset="UTF-8"'

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# scrypt's cost: about 16 MB and 50 ms a check here — once per password while the dashboard runs.
_SCRYPT = "scrypt"
_N, _R, _P = 2**14, 8, 1
_MEMORY = 2**26  # at most 64 MB a check: a hash asking more is refused at start
_REMEMBERED = 256  # checked passwords kept (as digests of name:password); forgotten all at once past this


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


@dataclass(frozen=True, slots=True)
class _Hashed:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, secret: str) -> _Hashed:
        """``scrypt:N:r:p:SALT:KEY`` (base64url); ``ValueError`` without saying more: it is a secret."""
        parts = secret.split(":")
        try:
            if len(parts) != 6 or parts[0] != _SCRYPT:
                raise ValueError
            hashed = cls(int(parts[1]), int(parts[2]), int(parts[3]), _unb64(parts[4]), _unb64(parts[5]))
            if hashed.n < 2 or hashed.n & (hashed.n - 1) or not 0 < hashed.r * hashed.p < 2**20 or len(hashed.key) < 16:
                raise ValueError
            if 128 * hashed.r * hashed.n > _MEMORY:
                raise ValueError
        except (ValueError, binascii.Error):
            raise ValueError("not scrypt:N:r:p:SALT:KEY (ctwa dashboard --hash-password makes one)") from None
        return hashed

    def verify(self, password: bytes) -> bool:
        key = hashlib.scrypt(password, salt=self.salt, n=self.n, r=self.r, p=self.p, maxmem=2**26, dklen=len(self.key))
        return hmac.compare_digest(key, self.key)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The hashed form of ``password`` for ``CTWA_DASHBOARD_USERS`` (after ``name:``)."""
    salt = salt or secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return ":".join([_SCRYPT, str(_N), str(_R), str(_P), _b64(salt), _b64(key)])


# Checked when a wrong password names no hashed user, so that it takes a hashed user's time.
_NOBODY = _Hashed.parse(hash_password(secrets.token_urlsafe(16)))


class Users:
    """The users allowed in: pairs kept as digests, so that comparisons take the same time whatever their lengths;
    hashed passwords by name."""

    def __init__(self, pairs: Iterable[str]) -> None:
        self._digests: list[bytes] = []
        self._hashed: dict[bytes, _Hashed] = {}
        for number, pair in enumerate(pairs, 1):
            name, _, secret = pair.partition(":")
            if secret.startswith(f"{_SCRYPT}:"):
                try:
                    self._hashed[name.encode()] = _Hashed.parse(secret)
                except ValueError as error:
                    raise ValueError(f"CTWA_DASHBOARD_USERS: user {number}'s hash is {error}") from None
            else:
                self._digests.append(_digest(pair.encode()))
        self._checked: set[bytes] = set()

    def __bool__(self) -> bool:
        return bool(self._digests or self._hashed)

    async def allow(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header holds a user's name and password."""
        offered = _basic(authorization)
        if offered is None:
            offered = b"\x00"  # compared all the same, matching nothing
        digest = _digest(offered)
        allowed = False
        for known in (*self._digests, *self._checked):
            allowed |= hmac.compare_digest(digest, known)
        if allowed or offered == b"\x00" or not self._hashed:
            return allowed and offered != b"\x00"
        name, _, password = offered.partition(b":")
        hashed = self._hashed.get(name)
        right = await asyncio.to_thread((hashed or _NOBODY).verify, password)
        if right and hashed is not None:
            if len(self._checked) >= _REMEMBERED:
                self._checked.clear()
            self._checked.add(digest)
            return True
        return False


def _digest(pair: bytes) -> bytes:
    return hashlib.sha256(pair).digest()


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
        if not users or await users.allow(request.headers.get("Authorization")):
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
