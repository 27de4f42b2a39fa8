from __future__ import annotations

from datetime import UTC, datetime

import pytest
from support import fixture_bytes, fixture_names

from ingest.callback import Callback, Trigger
from ingest.envelope import InvalidEnvelope, pack, unpack


def _callbacks() -> list[Callback]:
    moment = datetime(2025, 11, 3, 9, 14, 7, 123000, tzinfo=UTC)
    return [
        Callback(fixture_bytes(name), Trigger.MESSAGE_INBOUND, f"KEY:{n}", moment, n % 2 == 0)
        for n, name in enumerate(fixture_names())
    ] + [Callback(b'{"odd": "\\u00e9 \xc3\xa9 \\n"}', Trigger.UNKNOWN, "UNKNOWN:sha256:x", moment, False)]


def test_a_batch_carries_each_callback_exactly() -> None:
    callbacks = _callbacks()
    assert list(unpack(pack(callbacks))) == callbacks


def test_an_empty_batch_is_empty() -> None:
    assert list(unpack(b"")) == []


@pytest.mark.parametrize("cut", [1, 3, 10, -1, -5])
def test_a_cut_batch_is_refused(cut: int) -> None:
    body = pack(_callbacks()[:2])
    with pytest.raises(InvalidEnvelope):
        list(unpack(body[:cut]))


def test_a_record_with_a_broken_header_is_refused() -> None:
    header, raw = b'{"key": "K"}', b"{}"
    body = len(header).to_bytes(4, "big") + header + len(raw).to_bytes(4, "big") + raw
    with pytest.raises(InvalidEnvelope):
        list(unpack(body))
