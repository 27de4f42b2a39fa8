"""``ctwa receiver``: the service Sinch posts its callbacks to (``ingest.receiver``)."""

from __future__ import annotations

import argparse

from ingest.apps import AppsFileError
from ingest.receiver.app import run
from ingest.settings import Settings
from workers.commands.command import Subcommands, complain

__all__ = ["register"]


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("receiver", help="serve POST /webhooks/sinch and publish callbacks to RabbitMQ")
    parser.set_defaults(run=_run)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        run(settings)
    except AppsFileError as error:
        return complain("receiver", f"CTWA_APPS_FILE: {error}")
    return 0
