"""``ctwa dashboard``: the page of which ad brought which people, conversations and sales (``workers.dashboard``)."""

from __future__ import annotations

import argparse
import getpass
import sys

from ingest.settings import Settings
from workers.commands.command import Subcommands, complain
from workers.dashboard.access import hash_password
from workers.dashboard.app import Refused, run

__all__ = ["register"]


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "dashboard",
        help="serve the attribution dashboard: which ad brought which people, conversations and sales",
        description="A read-only page and its JSON API (docs/dashboard.md) on CTWA_DASHBOARD_HOST:"
        "CTWA_DASHBOARD_PORT, behind HTTP Basic (CTWA_DASHBOARD_USERS), reading CTWA_DASHBOARD_DATABASE_URL.",
    )
    parser.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password (asked for, or from standard input) and print its hash for CTWA_DASHBOARD_USERS "
        "(name:HASH), then exit",
    )
    parser.set_defaults(run=_run)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    if args.hash_password:
        password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\r\n")
        if not password:
            return complain("dashboard", "no password given")
        print(hash_password(password))
        return 0
    try:
        run(settings)
    except Refused as refused:
        return complain("dashboard", str(refused))
    return 0
