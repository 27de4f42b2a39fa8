"""``ctwa dlq``: look at what could not be stored, send it back once fixed, or drop it.

Messages are read from the dead-letter queue without being removed: they are held unacknowledged while a command
looks at them, and go back to the queue, in order, when its channel closes — except those a redrive acknowledged
after the main exchange confirmed their copy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from ingest.broker import connect
from ingest.settings import Settings
from ingest.topology import Topology
from workers.commands import output
from workers.commands.command import FORMATS, Subcommands, complain
from workers.runtime.consumer import AT_HEADER, HISTORY_HEADER, REASON_HEADER, copy_of
from workers.tools.progress import Progress

__all__ = ["DeadLetter", "DeadLetters", "register"]


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("dlq", help="inspect, redrive or purge the dead letters")
    parser.set_defaults(run=_run)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="how many dead letters, by reason, first and last seen")
    listing.add_argument("--format", choices=FORMATS, default="auto")
    show = actions.add_parser("show", help="one dead letter: its reasons, properties and body")
    show.add_argument("position", type=int, help="its place in the queue, from 1 (see list)")
    redrive = actions.add_parser("redrive", help="send dead letters back to the main queue, once the cause is fixed")
    redrive.add_argument("--reason", help="only those whose reason contains this text")
    purge = actions.add_parser("purge", help="drop every dead letter")
    purge.add_argument("--yes", action="store_true", help="yes, drop them")


def _run(settings: Settings, args: argparse.Namespace) -> int:
    dead_letters = DeadLetters(settings.amqp_urls, Topology(settings.amqp_prefix, settings.delivery_limit))
    if args.action == "list":
        rows = asyncio.run(dead_letters.summary())
        output.render(rows, ("count", "reason", "first_seen", "last_seen", "first_position"), args.format)
        if sys.stderr.isatty() or args.format in ("table", "auto"):
            print(f"{sum(row['count'] for row in rows)} dead letters", file=sys.stderr)
    elif args.action == "show":
        if not asyncio.run(dead_letters.show(args.position, sys.stdout)):
            return complain("dlq", f"no dead letter {args.position}", 1)
    elif args.action == "redrive":
        sent = asyncio.run(dead_letters.redrive(args.reason, sys.stderr))
        print(f"{sent} dead letters sent back to the main queue", file=sys.stderr)
    elif not args.yes:
        print("ctwa dlq purge drops every dead letter for good; add --yes to do it", file=sys.stderr)
        return 2
    else:
        print(f"{asyncio.run(dead_letters.purge())} dead letters dropped", file=sys.stderr)
    return 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    position: int  # 1-based, in queue order
    message: AbstractIncomingMessage

    @property
    def reason(self) -> str:
        reason = (self.message.headers or {}).get(REASON_HEADER)
        if isinstance(reason, str | bytes) and reason:
            return reason.decode() if isinstance(reason, bytes) else reason
        death = self._death()
        return f"rabbitmq: {death.get('reason', 'unknown')}" if death else "unknown"

    @property
    def history(self) -> list[str]:
        history = (self.message.headers or {}).get(HISTORY_HEADER)
        return [item.decode() if isinstance(item, bytes) else str(item) for item in history or []]  # type: ignore[union-attr]

    @property
    def dead_lettered_at(self) -> datetime | None:
        stamp = (self.message.headers or {}).get(AT_HEADER)
        if isinstance(stamp, str):
            return datetime.fromisoformat(stamp)
        death = self._death().get("time")
        return death.replace(tzinfo=death.tzinfo or UTC) if isinstance(death, datetime) else None

    def _death(self) -> dict[str, Any]:
        deaths = (self.message.headers or {}).get("x-death")
        return dict(deaths[0]) if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict) else {}


class DeadLetters:
    """The dead-letter queue of ``topology`` on the broker at ``url``."""

    def __init__(self, urls: Sequence[str], topology: Topology) -> None:
        self._urls = urls
        self._topology = topology

    @asynccontextmanager
    async def _held(self) -> AsyncIterator[tuple[AbstractChannel, list[DeadLetter]]]:
        """Every dead letter, held unacknowledged; back in the queue when this ends, unless acknowledged."""
        async with await connect(self._urls, "ctwa-dlq") as connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await self._topology.declare(channel)
            queue = await channel.get_queue(self._topology.dead_letter_queue)
            letters: list[DeadLetter] = []
            while (message := await queue.get(no_ack=False, fail=False, timeout=10)) is not None:
                letters.append(DeadLetter(len(letters) + 1, message))
            yield channel, letters
            await channel.close()  # what was not acknowledged goes back, in order

    async def summary(self) -> list[dict[str, Any]]:
        """Dead letters grouped by reason: how many, first and last dead-lettered."""
        async with self._held() as (_, letters):
            groups: dict[str, list[DeadLetter]] = defaultdict(list)
            for letter in letters:
                groups[letter.reason].append(letter)
        rows = []
        for reason, group in groups.items():
            times = [letter.dead_lettered_at for letter in group if letter.dead_lettered_at]
            rows.append(
                {
                    "count": len(group),
                    "reason": reason,
                    "first_seen": min(times) if times else None,
                    "last_seen": max(times) if times else None,
                    "first_position": group[0].position,
                }
            )
        return sorted(rows, key=lambda row: (-row["count"], row["reason"]))

    async def show(self, position: int, out: TextIO) -> bool:
        """Print the dead letter at ``position`` (1-based); whether there is one."""
        async with self._held() as (_, letters):
            if not 1 <= position <= len(letters):
                return False
            letter = letters[position - 1]
            message = letter.message
            out.write(f"dead letter {position} of {len(letters)}\n")
            out.write(f"  reason:          {letter.reason}\n")
            for earlier in letter.history[:-1]:
                out.write(f"  earlier reason:  {earlier}\n")
            out.write(f"  dead-lettered:   {letter.dead_lettered_at or ''}\n")
            out.write(f"  message id:      {message.message_id or ''}\n")
            out.write(f"  routing key:     {message.routing_key or ''}\n")
            out.write(f"  type:            {message.type or ''}\n")
            out.write(f"  received:        {message.timestamp or ''}\n")
            out.write(f"  app id:          {message.app_id or ''}\n")
            out.write("  body:\n")
            try:
                out.write(json.dumps(json.loads(message.body), indent=2, ensure_ascii=False) + "\n")
            except (ValueError, UnicodeDecodeError):
                out.write(repr(message.body) + "\n")
            return True

    async def redrive(self, reason: str | None, progress: TextIO | None) -> int:
        """Publish the dead letters (those whose reason contains ``reason``) back to the main exchange, each
        confirmed before its dead copy is acknowledged; how many were sent."""
        async with self._held() as (channel, letters):
            chosen = [letter for letter in letters if reason is None or reason.lower() in letter.reason.lower()]
            exchange = await channel.get_exchange(self._topology.exchange)
            meter = Progress(progress, total=len(chosen), unit="dead letters")
            for done, letter in enumerate(chosen, 1):
                message = letter.message
                headers = dict(message.headers or {})
                headers.pop(REASON_HEADER, None)
                headers.pop("x-death", None)
                headers["x-ctwa-redriven-at"] = datetime.now(UTC).isoformat()
                await exchange.publish(
                    copy_of(message, headers), message.routing_key or "unknown", mandatory=True, timeout=10
                )
                await message.ack()
                meter.update(done)
            meter.finish(len(chosen))
            return len(chosen)

    async def purge(self) -> int:
        """Drop every dead letter; how many there were."""
        async with await connect(self._urls, "ctwa-dlq") as connection:
            channel = await connection.channel()
            await self._topology.declare(channel)
            queue = await channel.get_queue(self._topology.dead_letter_queue)
            result = await queue.purge()
            return int(result.message_count or 0)
