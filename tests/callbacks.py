"""Build Sinch callbacks for tests, shaped like the examples in fixtures/sinch (the wire format, not ours)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

APP = "01K94FXGRR71HFE865V215DE1C"
T0 = datetime(2025, 11, 3, 9, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


def referral(source_id: str | None, clid: str | None = None, **extra: str) -> str:
    fields: dict[str, Any] = {"source_type": "ad", "headline": f"Ad {source_id}", "source_url": "https://fb.me/x"}
    if source_id is not None:
        fields["source_id"] = source_id
    if clid is not None:
        fields["ctwa_clid"] = clid
    return json.dumps({"referral": fields | extra})


def inbound(
    message_id: str,
    minute: float,
    *,
    identity: str,
    contact: str = "",
    conversation: str = "",
    text: str = "hello",
    metadata: str = "",
    channel: str = "WHATSAPP",
    app: str = APP,
) -> bytes:
    return _encode(
        {
            "app_id": app,
            "accepted_time": at(minute + 0.01),
            "event_time": at(minute),
            "message": {
                "id": message_id,
                "direction": "TO_APP",
                "contact_message": {"text_message": {"text": text}},
                "channel_identity": {"channel": channel, "identity": identity, "app_id": ""},
                "conversation_id": conversation,
                "contact_id": contact,
                "metadata": metadata,
                "accept_time": at(minute + 0.005),
                "processing_mode": "CONVERSATION" if contact else "DISPATCH",
            },
            "message_metadata": "",
        }
    )


def delivery(
    message_id: str, status: str, minute: float, *, identity: str, contact: str = "", conversation: str = ""
) -> bytes:
    report: dict[str, Any] = {
        "message_id": message_id,
        "conversation_id": conversation,
        "status": status,
        "channel_identity": {"channel": "WHATSAPP", "identity": identity, "app_id": ""},
        "contact_id": contact,
        "metadata": "",
        "processing_mode": "CONVERSATION" if contact else "DISPATCH",
    }
    if status == "FAILED":
        report["reason"] = {"code": "RECIPIENT_NOT_REACHABLE", "description": "", "sub_code": "UNSPECIFIED_SUB_CODE"}
    return _encode(
        {"app_id": APP, "accepted_time": at(minute + 0.01), "event_time": at(minute), "message_delivery_report": report}
    )


def contact_object(contact: str, name: str, identities: list[str]) -> dict[str, Any]:
    return {
        "id": contact,
        "channel_identities": [{"channel": "WHATSAPP", "identity": identity, "app_id": ""} for identity in identities],
        "channel_priority": ["WHATSAPP"],
        "display_name": name,
        "email": f"{name.lower().replace(' ', '.')}@example.com",
        "external_id": f"crm-{contact[-4:]}",
        "metadata": "",
        "language": "EN_US",
    }


def contact_event(kind: str, contact: str, minute: float, *, name: str, identities: list[str]) -> bytes:
    return _encode(
        {
            "app_id": APP,
            "accepted_time": at(minute),
            f"contact_{kind}_notification": {"contact": contact_object(contact, name, identities)},
            "message_metadata": "",
        }
    )


def merge(preserved: str, deleted: str, minute: float, *, name: str, identities: list[str]) -> bytes:
    return _encode(
        {
            "app_id": APP,
            "accepted_time": at(minute),
            "contact_merge_notification": {
                "preserved_contact": contact_object(preserved, name, identities),
                "deleted_contact": contact_object(deleted, "Unknown", []),
            },
            "message_metadata": "",
        }
    )


def conversation_event(kind: str, conversation: str, contact: str, minute: float) -> bytes:
    return _encode(
        {
            "app_id": APP,
            "accepted_time": at(minute),
            f"conversation_{kind}_notification": {
                "conversation": {
                    "id": conversation,
                    "app_id": APP,
                    "contact_id": contact,
                    "active": kind == "start",
                    "active_channel": "WHATSAPP",
                    "metadata": "",
                    "metadata_json": {},
                    "correlation_id": "",
                }
            },
            "message_metadata": "",
        }
    )
