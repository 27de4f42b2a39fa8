"""The Click-to-WhatsApp referral: escaped JSON inside ``message.metadata``, read defensively."""

from __future__ import annotations

from typing import Any, TypedDict

import orjson

__all__ = ["Referral", "parse_referral"]


class Referral(TypedDict):
    """An ad click: the referral of an inbound message that names an ad (``source_id``) or a click (``ctwa_clid``).

    The keys are the ``ad_clicks`` columns that come from the referral; ``referral`` is the referral as sent."""

    ctwa_clid: str | None
    source_id: str | None
    source_type: str | None
    source_url: str | None
    headline: str | None
    body: str | None
    media_type: str | None
    image_url: str | None
    video_url: str | None
    thumbnail_url: str | None
    welcome_text: str | None
    referral: dict[str, Any]


def parse_referral(metadata: object) -> Referral | None:
    """The ad click in ``message.metadata``, or ``None``.

    ``metadata`` may be anything: ``""``, plain text, a JSON array, JSON without a referral, a referral that is not
    an object, or one missing any key. None of that is an error; it is just not an ad click. A referral with
    neither ``source_id`` nor ``ctwa_clid`` is not one either (Status ads have no ``ctwa_clid``, but a source).
    """
    if not isinstance(metadata, str) or not metadata.lstrip().startswith("{"):
        return None
    try:
        decoded = orjson.loads(metadata)
    except orjson.JSONDecodeError:
        return None
    referral = decoded.get("referral") if isinstance(decoded, dict) else None
    if not isinstance(referral, dict):
        return None
    source_id, ctwa_clid = _text(referral.get("source_id")), _text(referral.get("ctwa_clid"))
    if source_id is None and ctwa_clid is None:
        return None
    welcome = referral.get("welcome_message")
    return {
        "ctwa_clid": ctwa_clid,
        "source_id": source_id,
        "source_type": _text(referral.get("source_type")),
        "source_url": _text(referral.get("source_url")),
        "headline": _text(referral.get("headline")),
        "body": _text(referral.get("body")),
        "media_type": _text(referral.get("media_type")),
        "image_url": _text(referral.get("image_url")),
        "video_url": _text(referral.get("video_url")),
        "thumbnail_url": _text(referral.get("thumbnail_url")),
        "welcome_text": _text(welcome.get("text")) if isinstance(welcome, dict) else None,
        "referral": referral,
    }


def _text(value: object) -> str | None:
    """A string field; an ad id sent as a JSON number still counts, anything else does not."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
