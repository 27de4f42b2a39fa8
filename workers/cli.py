"""``ctwa``: one console script, a subcommand per job.

Each subcommand is defined whole — arguments, help, what it runs — by its module in ``workers.commands``
(``register``, see ``workers.commands.command``); this module only assembles them. Only the module of the command
being run is imported, so that ``ctwa receiver`` does not load SQLAlchemy and Alembic (a third more memory, twice
the start-up time); ``ctwa --help`` imports them all.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ingest import __version__
from ingest.logs import setup_logging
from ingest.settings import READS, SettingsError, load_settings

__all__ = ["COMMANDS", "build_parser", "main"]

log = logging.getLogger("workers.cli")

# Subcommand → the module that defines it, in the order `ctwa --help` lists them.
COMMANDS = {
    "receiver": "workers.commands.receiver",
    "worker": "workers.commands.worker",
    "migrate": "workers.commands.migrate",
    "report": "workers.commands.report",
    "simulate": "workers.commands.simulate",
    "dlq": "workers.commands.dlq",
    "replay": "workers.commands.replay",
    "prune": "workers.commands.prune",
    "conversions": "workers.commands.conversions",
    "dashboard": "workers.commands.dashboard",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``ctwa``: with every subcommand, or with ``command`` alone."""
    parser = argparse.ArgumentParser(
        prog="ctwa",
        description="Ingest Sinch Conversation API callbacks and attribute Click-to-WhatsApp ads. "
        "Settings come from CTWA_* environment variables (see the README).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(module).register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, read the settings, set up logging, run the subcommand."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    named = next((argument for argument in arguments if not argument.startswith("-")), None)
    args = build_parser(named if named in COMMANDS else None).parse_args(arguments)
    ignored: list[str] = []
    try:
        # Each service checks only the settings it reads: another one's bad value never keeps it from starting.
        settings = load_settings(READS.get(args.command), ignored)
    except SettingsError as error:
        print(f"ctwa {args.command}: {error}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    for problem in ignored:
        log.warning("a setting this command does not read is invalid, and ignored", extra={"problem": problem})
    code: int = args.run(settings, args)
    return code
