"""``ctwa simulate``: Sinch's own SDK accepts its callbacks, and the pipeline reports exactly what it sent."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime

from sinch.domains.conversation.sinch_events.v1.conversation_sinch_event import ConversationSinchEvent
from sqlalchemy.ext.asyncio import AsyncEngine
from support import ReceiverFactory

from ingest.callback import Trigger, identify, parse_body
from ingest.receiver.signature import signed_headers
from ingest.settings import Settings
from workers.runtime.worker import Worker
from workers.tools.simulator import scenario


def test_the_sinch_sdk_validates_its_signatures_and_parses_its_callbacks() -> None:
    story = scenario(seed=7, people=40, ads=4)
    sdk = ConversationSinchEvent("sim-secret")
    kinds = set()
    for callback in story.callbacks:
        headers = signed_headers(callback.body, "sim-secret", "01KSIMNONCE000000000000001", 1_762_161_247)
        assert sdk.validate_authentication_header(headers, callback.body)
        trigger = identify(parse_body(callback.body))
        kinds.add(trigger)
        if trigger in (Trigger.MESSAGE_INBOUND, Trigger.MESSAGE_DELIVERY):
            event = sdk.parse_event(callback.body)
            assert type(event).__name__ in {"MessageInboundEvent", "MessageDeliveryReceiptEvent"}
    assert {Trigger.MESSAGE_INBOUND, Trigger.MESSAGE_DELIVERY, Trigger.CONTACT_CREATE} <= kinds
    assert Trigger.CONVERSATION_START in kinds


def test_the_scenario_has_what_a_demo_needs() -> None:
    story = scenario(seed=3, people=300, ads=5)
    bodies = [json.loads(callback.body) for callback in story.callbacks]
    referrals = [
        json.loads(b["message"]["metadata"])["referral"] for b in bodies if b.get("message", {}).get("metadata")
    ]
    assert any("ctwa_clid" not in r for r in referrals)  # Status ads
    assert any(r["source_type"] == "post" for r in referrals)
    assert any(b.get("message", {}).get("processing_mode") == "DISPATCH" for b in bodies)
    assert any("contact_merge_notification" in b for b in bodies)
    assert any(b.get("message_delivery_report", {}).get("status") == "FAILED" for b in bodies)
    assert (
        scenario(seed=3, people=300, ads=5, start=datetime(2026, 1, 1, tzinfo=UTC)).callbacks
        == scenario(seed=3, people=300, ads=5, start=datetime(2026, 1, 1, tzinfo=UTC)).callbacks
    )


async def _ctwa(*args: str, env: dict[str, str]) -> tuple[str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    return out.decode(), err.decode()


async def test_simulate_receiver_worker_report_agree(
    start_receiver: ReceiverFactory, worker_settings: Settings, db: AsyncEngine
) -> None:
    receiver = await start_receiver(webhook_secrets=("sim-secret",))
    url = str(receiver.make_url("/webhooks/sinch"))
    out, err = await _ctwa(
        "simulate",
        "--url",
        url,
        "--count",
        "800",
        "--rate",
        "0",
        "--seed",
        "11",
        "--json",
        env={"CTWA_WEBHOOK_SECRETS": "sim-secret"},
    )
    sent = json.loads(out)
    assert "delivered:" in err  # the closing summary
    assert sent["statuses"] == {"200": sent["sent"]}  # every request accepted, signed and verified
    assert sent["duplicates"] + sent["reserialised"] > 0

    await asyncio.wait_for(Worker(worker_settings, drain=True).run(), 120)

    today = datetime.now(UTC).date().isoformat()
    printed, _ = await _ctwa(
        "report",
        "--since",
        today,
        "--until",
        today,
        "--format",
        "json",
        env={"CTWA_DATABASE_URL": worker_settings.database_url},
    )
    reported = {row["source_id"]: {"clicks": row["clicks"], "people": row["people"]} for row in json.loads(printed)}
    assert reported == sent["expected"]
    assert any(numbers["people"] < numbers["clicks"] for numbers in reported.values())
