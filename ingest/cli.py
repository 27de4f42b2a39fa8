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

    if args.down is not None:
        downgrade(settings.database_url, args.down)
    else:
        upgrade(settings.database_url)
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
