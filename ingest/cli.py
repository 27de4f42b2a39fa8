"""``ctwa``: one console script, a subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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
