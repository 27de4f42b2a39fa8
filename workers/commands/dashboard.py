"""``ctwa dashboard``: the page of which ad brought which people, conversations and sales (``workers.dashboard``)."""

from __future__ import annotations

import argparse

from ingest.settings import Settings
from workers.commands.command import Subcommands, complain
from workers.dashboard.app import Refused, run

__all__ = ["register"]


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "dashboard",
        help="serve the attribution dashboard: which ad brought which people, conversations and sales",
        description="A read-only page and its JSON API (docs/dashboard.md) on CTWA_DASHBOARD_HOST:"
        "CTWA_DASHBOARD_PORT, behind HTTP Basic (CTWA_DASHBOARD_USERS), reading CTWA_DASHBOARD_DATABASE_URL.",
    )
    parser.set_defaults(run=_run)


def _run(settings: Settings, args: argparse.Namespace) -> int:
    try:
        run(settings)
    except Refused as refused:
        return complain("dashboard", str(refused))
    return 0
