"""The types of the commands' arguments: each reads one command-line value or says, for argparse, what it expected."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from workers.conversions.status import STATUSES

__all__ = ["age", "amount", "conversion_status", "day", "json_value", "moment", "parse_age"]

_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}


def parse_age(value: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``2w``."""
    match = re.fullmatch(r"(\d+)([mhdw])", value.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"not an age like 90d, 12h, 30m or 2w: {value!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def age(value: str) -> timedelta:
    try:
        return parse_age(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def moment(value: str) -> datetime:
    """A date or a time, ISO 8601; UTC unless it names a zone."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or time (YYYY-MM-DD[THH:MM]): {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def conversion_status(value: str) -> str:
    if value not in STATUSES:
        raise argparse.ArgumentTypeError(f"not a status ({', '.join(STATUSES)}): {value!r}")
    return value


def amount(value: str) -> Decimal:
    """An amount in currency units: finite."""
    try:
        parsed = Decimal(value)
    except ArithmeticError:
        parsed = Decimal("NaN")
    if not parsed.is_finite():
        raise argparse.ArgumentTypeError(f"not an amount in currency units (59.9): {value!r}")
    return parsed


def json_value(value: str) -> object:
    try:
        return json.loads(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}): {value!r}") from None
