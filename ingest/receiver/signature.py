"""Sinch webhook signatures: HMAC-SHA256 over the raw body, the nonce and the timestamp; which secrets verify a
callback (`Signatures`: its own app's, from the apps file, or the deployment's)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from multidict import CIMultiDictProxy

from ingest.apps import Apps

__all__ = [
    "ALGORITHM",
    "ALGORITHM_HEADER",
    "NONCE_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SignatureError",
    "Signatures",
    "Verifier",
    "sign",
    "signed_headers",
]

SIGNATURE_HEADER = "x-sinch-webhook-signature"
TIMESTAMP_HEADER = "x-sinch-webhook-signature-timestamp"
NONCE_HEADER = "x-sinch-webhook-signature-nonce"
ALGORITHM_HEADER = "x-sinch-webhook-signature-algorithm"
ALGORITHM = "HmacSHA256"

_HEADERS = (SIGNATURE_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, ALGORITHM_HEADER)


class SignatureError(Exception):
    """The request is not signed by any configured secret. ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def sign(body: bytes, secret: str, nonce: str, timestamp: str) -> str:
    """``base64(HMAC_SHA256(secret, body + "." + nonce + "." + timestamp))``, as Sinch computes it."""
    digest = hmac.digest(secret.encode("utf-8"), _signed_bytes(body, nonce, timestamp), "sha256")
    return base64.b64encode(digest).decode("ascii")


def signed_headers(body: bytes, secret: str, nonce: str, timestamp: int) -> dict[str, str]:
    """The four headers Sinch sends with a signed callback."""
    return {
        SIGNATURE_HEADER: sign(body, secret, nonce, str(timestamp)),
        TIMESTAMP_HEADER: str(timestamp),
        NONCE_HEADER: nonce,
        ALGORITHM_HEADER: ALGORITHM,
    }


class Verifier:
    """Checks signatures against any of the configured secrets (rotation), within a time window."""

    def __init__(self, secrets: Sequence[str], tolerance_s: int) -> None:
        if not secrets or not all(secrets):
            # An empty secret would be a key anyone can sign with.
            raise ValueError("at least one secret, and no empty one, is needed")
        # Keyed once: each check copies the keyed state instead of deriving the key again.
        self._keyed = [hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256) for secret in secrets]
        self._tolerance_s = tolerance_s

    def verify(self, body: bytes, headers: CIMultiDictProxy[str], now: float) -> None:
        """Raise `SignatureError` unless a configured secret signed these exact bytes near ``now``."""
        signature, timestamp, nonce, algorithm = (_single(headers, name) for name in _HEADERS)
        if not (signature and timestamp and nonce):
            missing = [name for name, value in zip(_HEADERS, (signature, timestamp, nonce), strict=False) if not value]
            raise SignatureError("missing_header", f"missing {', '.join(missing)}")
        if algorithm is not None and algorithm != ALGORITHM:
            raise SignatureError("unsupported_algorithm", f"{ALGORITHM_HEADER} must be {ALGORITHM}")
        if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
            raise SignatureError("bad_timestamp", f"{TIMESTAMP_HEADER} must be Unix seconds")
        if abs(now - int(timestamp)) > self._tolerance_s:
            raise SignatureError("stale_timestamp", f"the timestamp is more than {self._tolerance_s} s from now")
        try:
            given = binascii.a2b_base64(_raw(signature), strict_mode=True)
        except binascii.Error:
            raise SignatureError("bad_signature", "the signature is not base64") from None

        signed = _signed_bytes(body, nonce, timestamp)
        # Every secret is tried, matched or not, so timing tells nothing about which one signed.
        matched = False
        for keyed in self._keyed:
            mac = keyed.copy()
            mac.update(signed)
            matched |= hmac.compare_digest(mac.digest(), given)
        if not matched:
            raise SignatureError("bad_signature", "the signature does not match")


class Signatures:
    """Which secrets verify a callback.

    Without an apps file, the deployment's secrets (``CTWA_WEBHOOK_SECRETS``) verify every callback. With one, a
    callback of an app in the file is verified by that app's secrets only; a callback of an app not in it by the
    deployment's secrets if there are any (a secret valid for every app not in the file), else refused
    (``unknown_app``)."""

    def __init__(self, secrets: Sequence[str], tolerance_s: int, apps: Apps | None = None) -> None:
        self.apps = apps
        self._default = Verifier(secrets, tolerance_s) if secrets else None
        self._by_app = (
            {} if apps is None else {app.id: Verifier(app.webhook_secrets, tolerance_s) for app in apps.by_id.values()}
        )

    @property
    def per_app(self) -> bool:
        """Whether the app a callback names decides which secrets verify it (an apps file is loaded)."""
        return self.apps is not None

    def verify(self, body: bytes, headers: CIMultiDictProxy[str], now: float, app_id: object = None) -> None:
        """Raise `SignatureError` unless a secret that may sign for ``app_id`` signed these bytes near ``now``."""
        verifier = self._by_app.get(app_id) if isinstance(app_id, str) else None
        if verifier is None:
            verifier = self._default
        if verifier is None:
            shown = repr(app_id) if isinstance(app_id, str) and len(app_id) <= 64 else "no app_id"
            raise SignatureError("unknown_app", f"the callback's app ({shown}) is not one of this deployment's apps")
        verifier.verify(body, headers, now)


def _signed_bytes(body: bytes, nonce: str, timestamp: str) -> bytes:
    # Body first, then nonce, then timestamp (shared/sinch-callbacks.md §5).
    return b".".join((body, _raw(nonce), _raw(timestamp)))


def _single(headers: CIMultiDictProxy[str], name: str) -> str | None:
    values = headers.getall(name, ())
    if len(values) > 1:
        raise SignatureError("duplicate_header", f"{name} is given more than once")
    return values[0] if values else None


def _raw(header_value: str) -> bytes:
    # aiohttp decodes header bytes as UTF-8 with surrogateescape; this gives back the bytes that were sent.
    return header_value.encode("utf-8", "surrogateescape")
