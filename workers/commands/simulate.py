"""``ctwa simulate``: realistic, signed Sinch traffic for a receiver — the demo and the load generator
(``workers.tools.simulator``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from ingest.settings import Settings
from workers.commands.command import Subcommands
from workers.tools import simulator

__all__ = ["register"]


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "simulate",
        help="send realistic, signed Sinch traffic to a receiver (the demo and the load generator)",
        description="People click ads, write, get replies and delivery reports; contacts merge; CONVERSATION and "
        "DISPATCH apps. Sent as Sinch sends: signed, some twice, some re-serialised, out of order, retried on 5xx.",
    )
    parser.add_argument("--url", help="the receiver's webhook URL (default: this machine, CTWA_HTTP_PORT)")
    parser.add_argument("--rate", type=float, default=50.0, help="callbacks per second; 0: as fast as possible")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--count", type=int, help="send this many callbacks")
    amount.add_argument("--duration", type=float, help="send for this many seconds")
    parser.add_argument("--people", type=int, default=100, help="people in the scenario (at least)")
    parser.add_argument("--ads", type=int, default=5, help="ads in the scenario")
    parser.add_argument("--seed", type=int, default=1, help="the same seed sends the same traffic")
    parser.add_argument("--duplicates", type=float, default=0.1, help="share of callbacks sent twice as is")
    parser.add_argument(
        "--reserialised", type=float, default=0.05, help="share retried re-serialised, with another accepted_time"
    )
    parser.add_argument("--disorder", type=int, default=20, help="how far a callback may overtake others")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--secret", help="signing secret (default: the first of CTWA_WEBHOOK_SECRETS)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary, with the expected numbers")
    parser.set_defaults(run=_run)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    people = simulator.people_for(args.people, count=args.count, rate=args.rate, duration=args.duration)
    story = simulator.scenario(seed=args.seed, people=people, ads=args.ads)
    callbacks = story.callbacks[: args.count] if args.count is not None else story.callbacks
    secret = args.secret if args.secret is not None else next(iter(settings.webhook_secrets), None)
    url = args.url or f"http://127.0.0.1:{settings.http_port}/webhooks/sinch"
    print(
        f"ctwa simulate: {len(callbacks)} callbacks of {people} people on {args.ads} ads to {url} "
        f"({'signed' if secret else 'unsigned'}, {f'{args.rate:g}/s' if args.rate > 0 else 'as fast as possible'})",
        file=sys.stderr,
    )
    summary = asyncio.run(
        simulator.send(
            url,
            callbacks,
            secret=secret or None,
            rate=args.rate,
            concurrency=args.concurrency,
            duration=args.duration,
            duplicates=args.duplicates,
            reserialised=args.reserialised,
            disorder=args.disorder,
            seed=args.seed,
            progress=sys.stderr,
        )
    )
    simulator.print_summary(summary)
    if args.json:
        print(json.dumps(summary.as_dict(), indent=2))
    # A 4xx can never succeed (a wrong secret, say): the run failed.
    return 0 if not any(400 <= status < 500 for status in summary.statuses) else 1
