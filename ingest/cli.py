"""``ctwa``: one console script, a subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date

from ingest import __version__
from ingest.logs import setup_logging
from ingest.settings import Settings, SettingsError, load_settings

__all__ = ["main"]


def _receiver(settings: Settings, args: argparse.Namespace) -> int:
    from ingest.receiver import run

    run(settings)
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from workers.worker import run

    run(settings, drain=args.drain)
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from workers.migrate import downgrade, upgrade

    owner = settings.migrate_database_url or settings.database_url
    if args.down is not None:
        downgrade(owner, args.down)
    else:
        upgrade(owner, app_url=settings.database_url)
    return 0


def _report(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from workers import report

    since, until = report.default_range()
    since, until = args.since or since, args.until or until
    if since > until:
        print("ctwa report: --since is after --until", file=sys.stderr)
        return 2
    if args.what == "people":
        rows = asyncio.run(report.people(settings.database_url, since, until, args.limit))
        report.render(rows, report.PEOPLE_COLUMNS, args.format)
    elif args.daily:
        rows = asyncio.run(report.daily(settings.database_url, since, until))
        report.render(rows[: args.limit] if args.limit else rows, report.DAILY_COLUMNS, args.format)
    else:
        rows = asyncio.run(report.ads(settings.database_url, since, until))
        report.render(rows[: args.limit] if args.limit else rows, report.AD_COLUMNS, args.format)
    return 0


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio
    import json

    from ingest import simulator

    people = args.people
    if args.count is not None:
        people = max(people, args.count // 5 + 1)
    elif args.duration is not None and args.rate > 0:
        people = max(people, int(args.rate * args.duration) // 5 + 1)
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
    return 0 if not any(400 <= status < 500 for status in summary.statuses) else 1


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctwa",
        description="Ingest Sinch Conversation API callbacks and attribute Click-to-WhatsApp ads. "
        "Settings come from CTWA_* environment variables (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    receiver = commands.add_parser("receiver", help="serve POST /webhooks/sinch and publish callbacks to RabbitMQ")
    receiver.set_defaults(run=_receiver)

    worker = commands.add_parser("worker", help="consume callbacks from RabbitMQ and store them in Postgres")
    worker.add_argument("--drain", action="store_true", help="exit once the queue is empty (tests, backfills)")
    worker.set_defaults(run=_worker)

    migrate = commands.add_parser("migrate", help="create the database if missing and migrate it to the latest schema")
    migrate.add_argument("--down", metavar="REVISION", help="migrate down to REVISION instead ('base': no tables)")
    migrate.set_defaults(run=_migrate)

    report = commands.add_parser(
        "report",
        help="which ads brought which people: ad performance, or (report people) each person's first and last ad",
        description="Ad performance over a range of UTC days (default: the last 30), or with 'people' each "
        "person's first- and last-touch ad. A table at a terminal, CSV when piped; --format to choose.",
    )
    report.add_argument("what", nargs="?", choices=("ads", "people"), default="ads")
    report.add_argument("--since", type=_day, metavar="YYYY-MM-DD", help="first UTC day (default: 29 days ago)")
    report.add_argument("--until", type=_day, metavar="YYYY-MM-DD", help="last UTC day, included (default: today)")
    report.add_argument("--daily", action="store_true", help="one row per ad per day")
    report.add_argument("--format", choices=("auto", "table", "csv", "json"), default="auto")
    report.add_argument("--limit", type=int, metavar="N", help="at most N rows")
    report.set_defaults(run=_report)

    simulate = commands.add_parser(
        "simulate",
        help="send realistic, signed Sinch traffic to a receiver (the demo and the load generator)",
        description="People click ads, write, get replies and delivery reports; contacts merge; CONVERSATION and "
        "DISPATCH apps. Sent as Sinch sends: signed, some twice, some re-serialised, out of order, retried on 5xx.",
    )
    simulate.add_argument("--url", help="the receiver's webhook URL (default: this machine, CTWA_HTTP_PORT)")
    simulate.add_argument("--rate", type=float, default=50.0, help="callbacks per second; 0: as fast as possible")
    amount = simulate.add_mutually_exclusive_group()
    amount.add_argument("--count", type=int, help="send this many callbacks")
    amount.add_argument("--duration", type=float, help="send for this many seconds")
    simulate.add_argument("--people", type=int, default=100, help="people in the scenario (at least)")
    simulate.add_argument("--ads", type=int, default=5, help="ads in the scenario")
    simulate.add_argument("--seed", type=int, default=1, help="the same seed sends the same traffic")
    simulate.add_argument("--duplicates", type=float, default=0.1, help="share of callbacks sent twice as is")
    simulate.add_argument(
        "--reserialised", type=float, default=0.05, help="share retried re-serialised, with another accepted_time"
    )
    simulate.add_argument("--disorder", type=int, default=20, help="how far a callback may overtake others")
    simulate.add_argument("--concurrency", type=int, default=16)
    simulate.add_argument("--secret", help="signing secret (default: the first of CTWA_WEBHOOK_SECRETS)")
    simulate.add_argument("--json", action="store_true", help="print a JSON summary, with the expected numbers")
    simulate.set_defaults(run=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, read the settings, set up logging, run the subcommand."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"ctwa: {error}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    code: int = args.run(settings, args)
    return code
