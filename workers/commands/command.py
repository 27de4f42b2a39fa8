"""What every command module shares: how it adds itself to ``ctwa``, and how it is handed what it needs.

A command module defines ``register(subcommands)``, which adds its parser — arguments, help, and the handler to
run as ``run``. A handler takes the settings and the parsed arguments and returns the exit status. A command
that works on the database says so with :func:`on_database`: it is handed an engine made here, once, from the
settings (address, statement cache), and disposed when it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

from ingest.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["FORMATS", "Handler", "Subcommands", "complain", "on_database"]

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[Settings, argparse.Namespace], int]
DatabaseWork: TypeAlias = Callable[[argparse.Namespace, "AsyncEngine"], Awaitable[int]]

# How rows are printed (workers.commands.output): a table at a terminal and CSV otherwise, unless asked.
FORMATS = ("auto", "table", "csv", "json")


def on_database(application_name: str) -> Callable[[DatabaseWork], Handler]:
    """A handler running ``work(args, engine)`` on one connection to the settings' database, named
    ``application_name`` in ``pg_stat_activity``."""

    def handler_of(work: DatabaseWork) -> Handler:
        def handler(settings: Settings, args: argparse.Namespace) -> int:
            # Imported here: a command that needs no database (the receiver) never loads SQLAlchemy.
            from workers.runtime.database import engine_for

            async def run() -> int:
                engine = engine_for(settings, application_name, connections=1)
                try:
                    return await work(args, engine)
                finally:
                    await engine.dispose()

            return asyncio.run(run())

        return handler

    return handler_of


def complain(command: str, message: str, status: int = 2) -> int:
    """Say on stderr why ``ctwa {command}`` stops, and give the exit status to return."""
    print(f"ctwa {command}: {message}", file=sys.stderr)
    return status
