"""Realistic Sinch callbacks with unique ids, for benchmarks: inbound messages (about 30 % from a
Click-to-WhatsApp ad), replies, delivery reports and conversation starts, as Sinch serialises them."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
APP_ID = "01K94FXGRR71HFE865V215DE1C"
PROJECT_ID = "5b0f7a3c-2d41-4e8a-9c6f-1a2b3c4d5e6f"
TEXTS = [
    "Hi! Is the summer bundle still available?",
    "Great, please send the payment link",
    "Do you ship to Valencia?",
    "What sizes do you have?",
    "Thanks!",
]
ADS = [
    ("120214875530910427", "Summer bundle -20%", "image"),
    ("120214875530910428", "New arrivals", "video"),
    ("120214875530910429", "Free shipping this week", "image"),
]


def ulid(rng: random.Random) -> str:
    return "".join(rng.choice(_ALPHABET) for _ in range(26))


def _time(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def callbacks(count: int, seed: int = 1) -> Iterator[dict[str, object]]:
    """``count`` callbacks, every one with its own business key."""
    rng = random.Random(seed)
    start = datetime(2025, 11, 3, 9, 0, tzinfo=UTC)
    for n in range(count):
        moment = start + timedelta(milliseconds=250 * n)
        identity = f"346{rng.randrange(10**8):08d}"
        channel_identity = {"channel": "WHATSAPP", "identity": identity, "app_id": ""}
        envelope: dict[str, object] = {
            "app_id": APP_ID,
            "accepted_time": _time(moment + timedelta(milliseconds=120)),
            "event_time": _time(moment),
            "project_id": PROJECT_ID,
        }
        kind = rng.random()
        if kind < 0.6:
            metadata = ""
            if kind < 0.3:
                source_id, headline, media_type = rng.choice(ADS)
                referral = {
                    "source_url": "https://fb.me/8xQmT2pLw",
                    "source_id": source_id,
                    "source_type": "ad",
                    "headline": headline,
                    "body": "Chat with us to get your discount code",
                    "media_type": media_type,
                    f"{media_type}_url": f"https://scontent.example.net/v/t45.1-9/{source_id}.jpg",
                    "ctwa_clid": "AR" + "".join(rng.choice(_ALPHABET) for _ in range(50)),
                    "welcome_message": {"text": "Hi there! How can we help?"},
                }
                metadata = json.dumps({"referral": referral}, separators=(",", ":"))
            envelope["message"] = {
                "id": ulid(rng),
                "direction": "TO_APP",
                "contact_message": {"text_message": {"text": rng.choice(TEXTS)}},
                "channel_identity": channel_identity,
                "conversation_id": ulid(rng),
                "contact_id": ulid(rng),
                "metadata": metadata,
                "accept_time": _time(moment + timedelta(milliseconds=100)),
                "sender_id": "34910000000",
                "processing_mode": "CONVERSATION",
                "injected": False,
            }
            envelope["message_metadata"] = ""
            envelope["correlation_id"] = ""
        elif kind < 0.95:
            envelope["message_delivery_report"] = {
                "message_id": ulid(rng),
                "conversation_id": ulid(rng),
                "status": rng.choice(["QUEUED_ON_CHANNEL", "DELIVERED", "READ"]),
                "channel_identity": channel_identity,
                "contact_id": ulid(rng),
                "metadata": "",
                "processing_mode": "CONVERSATION",
            }
            envelope["message_metadata"] = ""
        else:
            envelope["conversation_start_notification"] = {
                "conversation": {
                    "id": ulid(rng),
                    "app_id": APP_ID,
                    "contact_id": ulid(rng),
                    "active": True,
                    "active_channel": "WHATSAPP",
                    "last_received": _time(moment),
                    "metadata": "",
                    "metadata_json": {},
                    "correlation_id": "",
                }
            }
        yield envelope
