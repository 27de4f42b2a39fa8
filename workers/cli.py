"""``ctwa``: one console script, a subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from ingest import __version__
from ingest.logs import setup_logging
from ingest.settings import Settings, SettingsError, load_settings

__all__ = ["main"]


def _receiver(settings: Settings, args: argparse.Namespace) -> int:
    from ingest.receiver.app import run

    run(settings)
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from workers.runtime.worker import run

    run(settings, drain=args.drain)
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from workers.commands.migrate import downgrade, upgrade

    owner = settings.migrate_database_url or settings.database_url
    if args.down is not None:
        downgrade(owner, args.down)
    else:
        upgrade(owner, app_url=settings.database_url)
    return 0


def _report(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from workers.commands import output, report

    since, until = report.default_range()
    since, until = args.since or since, args.until or until
    if since > until:
        print("ctwa report: --since is after --until", file=sys.stderr)
        return 2
    cache = settings.database_statement_cache
    if args.what == "people":
        rows = asyncio.run(report.people(settings.database_url, since, until, args.limit, statement_cache=cache))
        output.render(rows, report.PEOPLE_COLUMNS, args.format)
    elif args.daily:
        rows = asyncio.run(report.daily(settings.database_url, since, until, statement_cache=cache))
        output.render(rows[: args.limit] if args.limit else rows, report.DAILY_COLUMNS, args.format)
    else:
        rows = asyncio.run(report.ads(settings.database_url, since, until, statement_cache=cache))
        output.render(rows[: args.limit] if args.limit else rows, report.AD_COLUMNS, args.format)
    return 0


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from workers.tools import simulator

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


def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from ingest.topology import Topology
    from workers.commands import output
    from workers.commands.dlq import DeadLetters

    dead_letters = DeadLetters(settings.amqp_urls, Topology(settings.amqp_prefix, settings.delivery_limit))
    if args.action == "list":
        rows = asyncio.run(dead_letters.summary())
        output.render(rows, ("count", "reason", "first_seen", "last_seen", "first_position"), args.format)
        if sys.stderr.isatty() or args.format in ("table", "auto"):
            print(f"{sum(row['count'] for row in rows)} dead letters", file=sys.stderr)
    elif args.action == "show":
        if not asyncio.run(dead_letters.show(args.position, sys.stdout)):
            print(f"ctwa dlq: no dead letter {args.position}", file=sys.stderr)
            return 1
    elif args.action == "redrive":
        sent = asyncio.run(dead_letters.redrive(args.reason, sys.stderr))
        print(f"{sent} dead letters sent back to the main queue", file=sys.stderr)
    elif args.action == "purge":
        if not args.yes:
            print("ctwa dlq purge drops every dead letter for good; add --yes to do it", file=sys.stderr)
            return 2
        print(f"{asyncio.run(dead_letters.purge())} dead letters dropped", file=sys.stderr)
    return 0


def _replay(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from workers.commands.replay import ReplayRefused, replay

    if args.all == (args.since is not None or args.until is not None or bool(args.trigger)):
        print("ctwa replay: say what to replay: --since (with --until, --trigger), or --all alone", file=sys.stderr)
        return 2
    try:
        count = asyncio.run(
            replay(
                settings.database_url,
                since=args.since,
                until=args.until,
                triggers=args.trigger or (),
                everything=args.all,
                progress=sys.stderr,
                statement_cache=settings.database_statement_cache,
            )
        )
    except ReplayRefused as refused:
        print(f"ctwa replay: {refused}", file=sys.stderr)
        return 1
    print(f"{count} callbacks re-projected", file=sys.stderr)
    return 0


def _prune(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from workers.commands.prune import prune

    count = asyncio.run(
        prune(
            settings.database_url,
            args.archive_older_than,
            progress=sys.stderr,
            statement_cache=settings.database_statement_cache,
        )
    )
    print(f"{count} archived callbacks deleted; the tables built from them stay", file=sys.stderr)
    return 0


def _conversions_send(settings: Settings, args: argparse.Namespace) -> int:
    from workers.conversions.sender import ConfigurationMissing, run

    try:
        return run(settings, drain=args.drain)
    except ConfigurationMissing as error:
        print(f"ctwa conversions send: {error}", file=sys.stderr)
        return 2


def _conversions_add(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from workers.commands import conversions

    if args.contact_id is not None and (args.channel is not None or args.identity is not None):
        print("ctwa conversions add: give --contact-id, or --channel and --identity, not both", file=sys.stderr)
        return 2
    names = ("event_id", "event_name", "contact_id", "channel", "identity", "ctwa_clid", "value", "currency")
    event = {name: getattr(args, name) for name in names} | {
        "event_time": args.time or datetime.now(UTC),
        "custom_data": args.custom_data,
    }
    try:
        new = asyncio.run(
            conversions.add(settings.database_url, event, statement_cache=settings.database_statement_cache)
        )
    except conversions.Refused as refused:
        print(f"ctwa conversions add: refused: {refused}", file=sys.stderr)
        return 2
    print(f"{args.event_id}: {'recorded' if new else 'already recorded; left as it was'}")
    return 0


def _conversions_status(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from workers.commands import conversions

    summary = asyncio.run(conversions.summary(settings.database_url, statement_cache=settings.database_statement_cache))
    conversions.print_summary(summary, args.format, sys.stdout)
    return 1 if summary["parked"] else 0


def _conversions_list(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from workers.commands import conversions, output

    if args.limit < 0:
        print("ctwa conversions list: --limit is a number of events (0: all)", file=sys.stderr)
        return 2
    rows = asyncio.run(
        conversions.events(
            settings.database_url,
            args.status or (),
            args.limit or None,
            statement_cache=settings.database_statement_cache,
        )
    )
    output.render(rows, conversions.EVENT_COLUMNS, args.format)
    return 0


def _conversions_retry(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from workers.commands import conversions

    if (refusal := conversions.retry_refusal(args.status)) is not None:
        print(f"ctwa conversions retry: {args.status} events are not sent again: {refusal}", file=sys.stderr)
        return 2
    if args.status == "unconfirmed":
        print(
            "ctwa conversions retry: warning: Meta may have counted unconfirmed events already (their request "
            "reached it, its answer never came back); each one it did will count twice",
            file=sys.stderr,
        )
    count = asyncio.run(
        conversions.retry(
            settings.database_url, args.status, args.event_id or (), statement_cache=settings.database_statement_cache
        )
    )
    print(f"{count} {args.status} events set back to pending")
    return 0


def _moment(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or time (YYYY-MM-DD[THH:MM]): {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _age(value: str) -> timedelta:
    from workers.commands.prune import parse_age

    try:
        return parse_age(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _conversion_status(value: str) -> str:
    from workers.engine.schema import CONVERSION_STATUSES

    if value not in CONVERSION_STATUSES:
        raise argparse.ArgumentTypeError(f"not a status ({', '.join(CONVERSION_STATUSES)}): {value!r}")
    return value


def _amount(value: str) -> Decimal:
    try:
        amount = Decimal(value)
    except ArithmeticError:
        amount = Decimal("NaN")
    if not amount.is_finite():
        raise argparse.ArgumentTypeError(f"not an amount in currency units (59.9): {value!r}")
    return amount


def _json(value: str) -> object:
    try:
        return json.loads(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error}): {value!r}") from None


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
        help="which ads brought which people: ad performance and conversions, or (report people) each person's "
        "first and last ad",
        description="Ad performance over a range of UTC days (default: the last 30) — clicks, people, conversations, "
        "conversions, their value per currency and the people converted — or with 'people' each person's first- and "
        "last-touch ad. A table at a terminal, CSV when piped; --format to choose.",
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

    dlq = commands.add_parser("dlq", help="inspect, redrive or purge the dead letters")
    dlq.set_defaults(run=_dlq)
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="how many dead letters, by reason, first and last seen")
    listing.add_argument("--format", choices=("auto", "table", "csv", "json"), default="auto")
    show = actions.add_parser("show", help="one dead letter: its reasons, properties and body")
    show.add_argument("position", type=int, help="its place in the queue, from 1 (see list)")
    redrive = actions.add_parser("redrive", help="send dead letters back to the main queue, once the cause is fixed")
    redrive.add_argument("--reason", help="only those whose reason contains this text")
    purge = actions.add_parser("purge", help="drop every dead letter")
    purge.add_argument("--yes", action="store_true", help="yes, drop them")

    replay = commands.add_parser(
        "replay",
        help="run the projections again from the callbacks archive (after a fix), or rebuild them all",
        description="Re-project the archived callbacks received in a range (UTC), or with --all empty every table "
        "built from the archive and rebuild it. Idempotent; batched; safe while workers run.",
    )
    replay.add_argument("--since", type=_moment, metavar="WHEN", help="from this date or time (received)")
    replay.add_argument("--until", type=_moment, metavar="WHEN", help="up to this date or time, excluded")
    replay.add_argument("--trigger", action="append", help="only callbacks of this trigger (repeatable)")
    replay.add_argument("--all", action="store_true", help="empty every projection and rebuild it from the archive")
    replay.set_defaults(run=_replay)

    prune = commands.add_parser("prune", help="delete old callbacks from the archive; the tables stay")
    prune.add_argument("--archive-older-than", type=_age, required=True, metavar="AGE", help="e.g. 90d, 12h, 2w")
    prune.set_defaults(run=_prune)

    conversions = commands.add_parser(
        "conversions",
        help="send conversions to Meta's Conversions API, record them, see what the senders did, retry them",
        description="Conversion events for Meta's Conversions API (table conversion_events, docs/conversions.md).",
    )
    conversions_commands = conversions.add_subparsers(dest="conversions_command", required=True, metavar="ACTION")

    conversion_send = conversions_commands.add_parser(
        "send",
        help="send recorded conversions to Meta, exactly once (a service; several may run side by side)",
        description="Send the pending events of conversion_events to Meta's Conversions API (CTWA_META_*), each "
        "once: docs/conversions.md. Exit 2 when a CTWA_META_* setting it needs is missing.",
    )
    conversion_send.add_argument(
        "--drain",
        action="store_true",
        help="exit once nothing is pending: 0, or 1 if Meta refuses the token, a permission or the dataset",
    )
    conversion_send.set_defaults(run=_conversions_send)

    conversion_add = conversions_commands.add_parser(
        "add",
        help="record a conversion (a second add of its event id changes nothing)",
        description="Record a conversion, as the business's own INSERT would: exit 0 whether it is new or was "
        "recorded already (left as it was); exit 2, saying why, when Meta could never take it.",
    )
    conversion_add.add_argument("--event-id", required=True, help="your id of the conversion; unique")
    conversion_add.add_argument("--name", dest="event_name", required=True, help="Purchase, LeadSubmitted, …")
    conversion_add.add_argument(
        "--time",
        type=_moment,
        metavar="WHEN",
        help="when it happened, ISO 8601; UTC unless a zone is given (default: now)",
    )
    conversion_add.add_argument("--contact-id", help="the person, as a Sinch contact id")
    conversion_add.add_argument("--channel", help="the person, as a channel identity: WHATSAPP, …")
    conversion_add.add_argument("--identity", help="… and the identity (a phone number)")
    conversion_add.add_argument("--ctwa-clid", help="the ad click, when you know it")
    conversion_add.add_argument("--value", type=_amount, help="in currency units, not cents: 59.9")
    conversion_add.add_argument("--currency", help="ISO 4217: EUR")
    conversion_add.add_argument("--custom-data", type=_json, metavar="JSON", help='sent as is: \'{"order_id": "42"}\'')
    conversion_add.set_defaults(run=_conversions_add)

    conversion_status = conversions_commands.add_parser(
        "status",
        help="events per status, the oldest pending, whether the senders are parked; exit 1 when they are",
        description="Events per status, the oldest one pending, whether the senders are parked (Meta refused the "
        "token, a permission or the dataset) and why, their last request and last success. Exit 0; exit 1 when "
        "the senders are parked, so a health check can run it.",
    )
    conversion_status.add_argument("--format", choices=("table", "json"), default="table")
    conversion_status.set_defaults(run=_conversions_status)

    conversion_list = conversions_commands.add_parser(
        "list",
        help="the events, newest first, and what the senders did with each",
        description="The events, newest first (by event time). The person shows as contact_id only: no identity "
        "(a phone number) and no custom data, so a listing carries no personal data.",
    )
    conversion_list.add_argument(
        "--status", type=_conversion_status, action="append", metavar="STATUS", help="only these (repeatable)"
    )
    conversion_list.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (default 100; 0: all)")
    conversion_list.add_argument("--format", choices=("auto", "table", "csv", "json"), default="auto")
    conversion_list.set_defaults(run=_conversions_list)

    conversion_retry = conversions_commands.add_parser(
        "retry",
        help="send failed, unconfirmed or unattributed events again",
        description="Set events back to pending, due now, their error cleared (attempts kept). Only failed, "
        "unconfirmed (Meta may have counted those already: each one it did will count twice) and unattributed "
        "ones; sent, expired, erased, pending and sending events are refused (exit 2).",
    )
    conversion_retry.add_argument(
        "--status", type=_conversion_status, required=True, help="failed, unconfirmed or unattributed"
    )
    conversion_retry.add_argument("--event-id", action="append", help="only this event (repeatable)")
    conversion_retry.set_defaults(run=_conversions_retry)
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
