from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from sinch.domains.conversation.sinch_events.v1.conversation_sinch_event import ConversationSinchEvent
from support import fixture_bytes, signature_vectors

from ingest.receiver.signature import SignatureError, Verifier, sign, signed_headers

VECTORS = signature_vectors()


def _headers(pairs: dict[str, str] | list[tuple[str, str]]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def _verify(body: bytes, headers: dict[str, str] | list[tuple[str, str]], secrets: tuple[str, ...], now: float) -> None:
    Verifier(secrets, tolerance_s=300).verify(body, _headers(headers), now)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["body_file"])
def test_sinch_vectors_verify(vector: dict[str, Any]) -> None:
    body = fixture_bytes(vector["body_file"])
    now = int(vector["headers"]["x-sinch-webhook-signature-timestamp"]) + 12
    _verify(body, vector["headers"], (vector["secret"],), now)


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["body_file"])
def test_sign_reproduces_the_vectors(vector: dict[str, Any]) -> None:
    headers = vector["headers"]
    body = fixture_bytes(vector["body_file"])
    signature = sign(
        body,
        vector["secret"],
        headers["x-sinch-webhook-signature-nonce"],
        headers["x-sinch-webhook-signature-timestamp"],
    )
    assert signature == headers["x-sinch-webhook-signature"]


def test_signatures_made_here_validate_with_the_sinch_sdk() -> None:
    body = fixture_bytes("01_inbound_ctwa_referral.json")
    headers = signed_headers(body, "s3cr3t-ünïcode", "01K94FXRJRF3F55Z488YAGVDCK", 1_762_161_247)
    assert ConversationSinchEvent("s3cr3t-ünïcode").validate_authentication_header(headers, body)
    assert not ConversationSinchEvent("another").validate_authentication_header(headers, body)


@pytest.fixture
def signed() -> tuple[bytes, dict[str, str], float]:
    vector = VECTORS[1]
    now = float(vector["headers"]["x-sinch-webhook-signature-timestamp"])
    return fixture_bytes(vector["body_file"]), dict(vector["headers"]), now


SECRET = VECTORS[1]["secret"]


def _reason(call: Any) -> str:
    with pytest.raises(SignatureError) as raised:
        call()
    return raised.value.reason


def test_tampered_body_nonce_or_timestamp_fail(signed: tuple[bytes, dict[str, str], float]) -> None:
    body, headers, now = signed
    assert _reason(lambda: _verify(body.replace(b"STOP", b"STAR"), headers, (SECRET,), now)) == "bad_signature"
    assert _reason(lambda: _verify(body + b" ", headers, (SECRET,), now)) == "bad_signature"
    nonce = {**headers, "x-sinch-webhook-signature-nonce": headers["x-sinch-webhook-signature-nonce"][:-1] + "L"}
    assert _reason(lambda: _verify(body, nonce, (SECRET,), now)) == "bad_signature"
    later = str(int(headers["x-sinch-webhook-signature-timestamp"]) + 1)
    stamp = {**headers, "x-sinch-webhook-signature-timestamp": later}
    assert _reason(lambda: _verify(body, stamp, (SECRET,), now)) == "bad_signature"


def test_wrong_secret_fails_and_any_configured_secret_passes(signed: tuple[bytes, dict[str, str], float]) -> None:
    body, headers, now = signed
    assert _reason(lambda: _verify(body, headers, ("not-it",), now)) == "bad_signature"
    _verify(body, headers, ("old-secret", SECRET), now)
    _verify(body, headers, (SECRET, "new-secret"), now)


@pytest.mark.parametrize(
    "missing",
    ["x-sinch-webhook-signature", "x-sinch-webhook-signature-timestamp", "x-sinch-webhook-signature-nonce"],
)
def test_missing_header_fails(signed: tuple[bytes, dict[str, str], float], missing: str) -> None:
    body, headers, now = signed
    del headers[missing]
    assert _reason(lambda: _verify(body, headers, (SECRET,), now)) == "missing_header"


def test_empty_header_counts_as_missing(signed: tuple[bytes, dict[str, str], float]) -> None:
    body, headers, now = signed
    headers["x-sinch-webhook-signature"] = ""
    assert _reason(lambda: _verify(body, headers, (SECRET,), now)) == "missing_header"


def test_algorithm_header_is_optional_but_must_be_hmac_sha256(signed: tuple[bytes, dict[str, str], float]) -> None:
    body, headers, now = signed
    _verify(body, {k: v for k, v in headers.items() if k != "x-sinch-webhook-signature-algorithm"}, (SECRET,), now)
    headers["x-sinch-webhook-signature-algorithm"] = "HmacSHA1"
    assert _reason(lambda: _verify(body, headers, (SECRET,), now)) == "unsupported_algorithm"


@pytest.mark.parametrize("offset", [-301, 301, -10_000_000])
def test_stale_or_future_timestamp_fails(signed: tuple[bytes, dict[str, str], float], offset: int) -> None:
    body, headers, now = signed
    assert _reason(lambda: _verify(body, headers, (SECRET,), now - offset)) == "stale_timestamp"


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_timestamp_at_the_edge_of_the_window_passes(signed: tuple[bytes, dict[str, str], float], offset: int) -> None:
    body, headers, now = signed
    _verify(body, headers, (SECRET,), now + offset)


@pytest.mark.parametrize("timestamp", ["", "abc", "1.5e9", "-1762161247", "١٧٦٢١٦١٢٤٧", "9" * 40])
def test_malformed_timestamp_fails(signed: tuple[bytes, dict[str, str], float], timestamp: str) -> None:
    body, headers, now = signed
    headers["x-sinch-webhook-signature-timestamp"] = timestamp
    assert _reason(lambda: _verify(body, headers, (SECRET,), now)) in {"bad_timestamp", "missing_header"}


def test_header_names_are_case_insensitive(signed: tuple[bytes, dict[str, str], float]) -> None:
    body, headers, now = signed
    _verify(body, {name.upper(): value for name, value in headers.items()}, (SECRET,), now)
    _verify(body, {name.title(): value for name, value in headers.items()}, (SECRET,), now)


def test_a_duplicated_header_fails_even_when_one_copy_is_right(signed: tuple[bytes, dict[str, str], float]) -> None:
    body, headers, now = signed
    pairs = [*headers.items(), ("X-Sinch-Webhook-Signature", "AAAA")]
    assert _reason(lambda: _verify(body, pairs, (SECRET,), now)) == "duplicate_header"


def test_non_ascii_signature_fails_cleanly(signed: tuple[bytes, dict[str, str], float]) -> None:
    body, headers, now = signed
    headers["x-sinch-webhook-signature"] = "ÿ\udcff" + headers["x-sinch-webhook-signature"][2:]
    assert _reason(lambda: _verify(body, headers, (SECRET,), now)) == "bad_signature"


@pytest.mark.parametrize("secrets", [(), ("",), ("real", "")])
def test_an_empty_secret_is_refused(secrets: tuple[str, ...]) -> None:
    # An empty secret would be a key anyone can sign with.
    with pytest.raises(ValueError, match="no empty one"):
        Verifier(secrets, tolerance_s=300)


def test_malformed_base64_signature_fails(signed: tuple[bytes, dict[str, str], float]) -> None:
    body, headers, now = signed
    for bad in (
        "not base64!",
        headers["x-sinch-webhook-signature"].rstrip("="),
        "=" + headers["x-sinch-webhook-signature"],
    ):
        headers["x-sinch-webhook-signature"] = bad
        assert _reason(lambda: _verify(body, headers, (SECRET,), now)) == "bad_signature"
