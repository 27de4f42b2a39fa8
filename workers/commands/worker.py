"""``ctwa worker``: the service that stores the queue's callbacks in Postgres (``workers.runtime``)."""

from __future__ import annotations

import argparse

from ingest.settings import Settings
from workers.commands.command import Subcommands
from workers.runtime.worker import run

__all__ = ["register"]


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("worker", help="consume callbacks from RabbitMQ and store them in Postgres")
    parser.add_argument("--drain", action="store_true", help="exit once the queue is empty (tests, backfills)")
    parser.set_defaults(run=_run)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    run(settings, drain=args.drain)
    return 0
