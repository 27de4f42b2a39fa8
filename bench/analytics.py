"""Analytics benchmark: 1,000,000 ad clicks, 5,000,000 messages and 50,000 conversion events loaded with COPY,
then the attribution views and ``ctwa report`` queried for a 30-day range — and, in the same run, the same
answers computed straight from ``ad_clicks`` without the rollups the workers keep.

    python bench/analytics.py [--clicks 1000000] [--messages 5000000] [--conversions 50000] [--replies 0] [--repeat 5]

The data: 90 days, 400 ads (one in ten a post, one in five without a click id), about 500,000 people with a
skewed number of clicks each, two thirds of them contacts and the rest known by phone number only (DISPATCH).
Each conversion event follows a click with a click id by 2 hours to 7 days and names the click's person; most
are sent, some pending, failed or unattributed (those without their click, as the sender leaves them), and
purchases carry a value in EUR, USD or GBP. With ``--replies``, the business's replies to those people, each with
its delivery reports (delivered and read, delivered, or failed), for the dashboard's engagement figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import asyncpg
from sqlalchemy import make_url, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import create_async_engine

from workers.commands.migrate import upgrade
from workers.commands.report import ADS_REPORT, DAILY_REPORT, SETTINGS
from workers.engine import rollups

SERVER_URL = os.environ.get("CTWA_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
START = datetime(2025, 8, 1, tzinfo=UTC)
DAYS = 90
SINCE = date(2025, 9, 1)
UNTIL = SINCE + timedelta(days=29)

# `ctwa report`'s statements, run as the command runs them: in a transaction, after its SETTINGS.
REPORTS = {
    "ctwa report (per ad over the 30 days)": str(ADS_REPORT),
    "ctwa report --daily (per ad and day)": str(DAILY_REPORT),
}
VIEWS = {
    "ad_performance_daily, 30 days": (
        "SELECT * FROM ad_performance_daily WHERE day BETWEEN :since AND :until ORDER BY day, clicks DESC"
    ),
    "person_attribution, 30 days": (
        "SELECT * FROM person_attribution WHERE last_clicked_at >= :start AND last_clicked_at < :end "
        "ORDER BY last_clicked_at DESC"
    ),
    "ad_conversions_daily, 30 days": (
        "SELECT * FROM ad_conversions_daily WHERE day BETWEEN :since AND :until ORDER BY day, conversions DESC"
    ),
}

# The same questions without rollups: what the views would cost if they read ad_clicks directly.
WITHOUT_ROLLUPS = {
    "ad_performance_daily, 30 days": """
        WITH firsts AS (
            SELECT DISTINCT ON (person_key) person_key, message_id FROM ad_clicks
            WHERE person_key IS NOT NULL ORDER BY person_key, clicked_at, message_id
        ), clicks AS (
            SELECT (clicked_at AT TIME ZONE 'UTC')::date AS day, * FROM ad_clicks
            WHERE clicked_at >= :start AND clicked_at < :end
        )
        SELECT day, source_id, max(headline), count(*) AS clicks, count(DISTINCT clicks.person_key) AS people,
               count(firsts.message_id) AS new_people, count(DISTINCT conversation_id) AS conversations
        FROM clicks LEFT JOIN firsts USING (message_id) GROUP BY day, source_id
    """,
    "person_attribution, 30 days": """
        SELECT * FROM (
            SELECT DISTINCT ON (person_key) person_key, contact_id, source_id AS first_source_id,
                   clicked_at AS first_clicked_at,
                   last_value(source_id) OVER person AS last_source_id,
                   last_value(clicked_at) OVER person AS last_clicked_at, count(*) OVER person AS clicks
            FROM ad_clicks WHERE person_key IS NOT NULL
            WINDOW person AS (PARTITION BY person_key ORDER BY clicked_at, message_id
                              ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
            ORDER BY person_key, clicked_at, message_id
        ) AS touches
        WHERE last_clicked_at >= :start AND last_clicked_at < :end
    """,
}


# The one Sinch app of the data: the dashboard benchmark measures its figures chosen as an app too.
APP_ID = "01K94FXGRR71HFE865V215DE1C"


def _clicks(rng: random.Random, count: int, people: int) -> Iterator[tuple[object, ...]]:
    ads = [
        (f"1202{n:06d}", f"Creative {n}", "post" if n % 10 == 0 else "ad", rng.choice(["image", "video"]))
        for n in range(400)
    ]
    for n in range(count):
        person = int(rng.random() ** 2 * people)
        contact = f"C{person:08d}" if person % 3 else None
        source_id, headline, source_type, media_type = ads[int(rng.random() ** 1.5 * len(ads))]
        clid = f"ARclid{n:010d}" if source_type == "ad" and n % 5 else None
        at = START + timedelta(seconds=rng.uniform(0, DAYS * 86400))
        yield (
            f"MC{n:010d}",
            clid,
            source_id,
            source_type,
            "https://fb.me/ad",
            headline,
            "Chat with us",
            media_type,
            None,
            None,
            None,
            "Hi!",
            APP_ID,
            "WHATSAPP",
            f"34{person:09d}",
            contact,
            f"V{person:08d}" if contact else None,
            at,
            f'{{"source_id": "{source_id}"}}',
        )


def _messages(rng: random.Random, count: int, people: int) -> Iterator[tuple[object, ...]]:
    for n in range(count):
        person = int(rng.random() ** 2 * people)
        contact = f"C{person:08d}" if person % 3 else None
        at = START + timedelta(seconds=rng.uniform(0, DAYS * 86400))
        yield (
            f"MM{n:010d}",
            APP_ID,
            contact,
            f"V{person:08d}" if contact else None,
            "WHATSAPP",
            f"34{person:09d}",
            "text",
            "hello",
            None,
            at,
            False,
            "CONVERSATION" if contact else "DISPATCH",
        )


# Weights: what the sender left the events in, the currencies of purchases.
_STATUSES = {"sent": 85, "pending": 5, "failed": 5, "unattributed": 5}
_CURRENCIES = {"EUR": 6, "USD": 3, "GBP": 1}


def _conversions(rng: random.Random, count: int, clicks: list[asyncpg.Record]) -> Iterator[tuple[object, ...]]:
    """Conversion events as the sender leaves them, each after a click of ``clicks`` (those with a click id)."""
    for n in range(count):
        click = clicks[rng.randrange(len(clicks))]
        at = click["clicked_at"] + timedelta(hours=2 * 84 ** rng.random())
        status = rng.choices(list(_STATUSES), list(_STATUSES.values()))[0]
        attributed = status != "unattributed"
        purchase = rng.random() < 0.6
        yield (
            f"E{n:010d}",
            "Purchase" if purchase else "LeadSubmitted",
            at,
            click["contact_id"],
            None if click["contact_id"] else click["channel"],
            None if click["contact_id"] else click["identity"],
            click["ctwa_clid"] if n % 3 == 0 else None,
            Decimal(rng.randrange(500, 20_000)) / 100 if purchase else None,
            rng.choices(list(_CURRENCIES), list(_CURRENCIES.values()))[0] if purchase else None,
            at + timedelta(minutes=5),
            status,
            0 if status == "unattributed" else 1,
            at + timedelta(minutes=6),
            at + timedelta(minutes=6) if status == "sent" else None,
            click["ctwa_clid"] if attributed else None,
            click["message_id"] if attributed else None,
            "(#100) Invalid parameter" if status == "failed" else None,
        )


# What became of the business's replies: delivered and read, delivered only, or failed.
_REPLY_FATES = {("DELIVERED", "READ"): 6, ("DELIVERED",): 3, ("FAILED",): 1}


def _replies(rng: random.Random, count: int, people: int) -> Iterator[tuple[object, ...]]:
    """Delivery reports of ``count`` replies of the business to its people: each reply's reports a few seconds to
    an hour apart."""
    for n in range(count):
        person = int(rng.random() ** 2 * people)
        contact = f"C{person:08d}" if person % 3 else None
        at = START + timedelta(seconds=rng.uniform(0, DAYS * 86400))
        for status in rng.choices(list(_REPLY_FATES), list(_REPLY_FATES.values()))[0]:
            at += timedelta(seconds=rng.uniform(2, 3600))
            yield (
                f"MR{n:010d}",
                status,
                APP_ID,
                "WHATSAPP",
                f"34{person:09d}",
                contact,
                f"V{person:08d}" if contact else None,
                at,
                "CONVERSATION" if contact else "DISPATCH",
            )


async def load(url: str, clicks: int, messages: int, conversions: int, replies: int = 0) -> None:
    rng = random.Random(7)
    people = 500_000
    connection = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        started = time.perf_counter()
        await connection.copy_records_to_table(
            "ad_clicks",
            records=_clicks(rng, clicks, people),
            columns=[
                "message_id",
                "ctwa_clid",
                "source_id",
                "source_type",
                "source_url",
                "headline",
                "body",
                "media_type",
                "image_url",
                "video_url",
                "thumbnail_url",
                "welcome_text",
                "app_id",
                "channel",
                "identity",
                "contact_id",
                "conversation_id",
                "clicked_at",
                "referral",
            ],
        )
        print(f"COPY {clicks:,} ad clicks: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        started = time.perf_counter()
        await connection.copy_records_to_table(
            "messages",
            records=_messages(rng, messages, people),
            columns=[
                "message_id",
                "app_id",
                "contact_id",
                "conversation_id",
                "channel",
                "identity",
                "kind",
                "text",
                "media_url",
                "sent_at",
                "has_referral",
                "processing_mode",
            ],
        )
        print(f"COPY {messages:,} messages: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        if replies:
            started = time.perf_counter()
            await connection.copy_records_to_table(
                "delivery_reports",
                records=_replies(rng, replies, people),
                columns=[
                    "message_id",
                    "status",
                    "app_id",
                    "channel",
                    "identity",
                    "contact_id",
                    "conversation_id",
                    "reported_at",
                    "processing_mode",
                ],
            )
            print(f"COPY the reports of {replies:,} replies: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        # Contacts, one in a thousand deleted, so person_attribution has erasures to leave out.
        await connection.copy_records_to_table(
            "contacts",
            records=(
                (f"C{person:08d}", START, START + timedelta(days=DAYS), START if person % 1000 == 1 else None)
                for person in range(people)
                if person % 3
            ),
            columns=["contact_id", "first_seen_at", "last_seen_at", "deleted_at"],
        )
        if conversions:
            started = time.perf_counter()
            attributable = await connection.fetch(
                "SELECT message_id, ctwa_clid, clicked_at, contact_id, channel, identity FROM ad_clicks "
                "WHERE ctwa_clid IS NOT NULL ORDER BY message_id"
            )
            await connection.copy_records_to_table(
                "conversion_events",
                records=_conversions(rng, conversions, attributable),
                columns=[
                    "event_id",
                    "event_name",
                    "event_time",
                    "contact_id",
                    "channel",
                    "identity",
                    "ctwa_clid",
                    "value",
                    "currency",
                    "recorded_at",
                    "status",
                    "attempts",
                    "next_attempt_at",
                    "sent_at",
                    "sent_ctwa_clid",
                    "click_message_id",
                    "last_error",
                ],
            )
            print(f"COPY {conversions:,} conversion events: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    finally:
        await connection.close()


async def prepare(url: str) -> None:
    engine = create_async_engine(url)
    started = time.perf_counter()
    async with engine.begin() as connection:
        await rollups.rebuild(connection)
    print(f"rollups built from ad_clicks: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    async with engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text("VACUUM ANALYZE"))
    await engine.dispose()


async def measure(url: str, sql: str, repeat: int, settings: str | None = None) -> tuple[float, float, int]:
    """Run ``sql`` ``repeat`` times, fetching every row (as a client program does) — after ``settings`` in the same
    transaction, if given; median and slowest seconds."""
    params = {
        "since": SINCE,
        "until": UNTIL,
        "start": datetime.combine(SINCE, datetime.min.time(), UTC),
        "end": datetime.combine(UNTIL + timedelta(days=1), datetime.min.time(), UTC),
    }
    statement = text(sql).bindparams(**{name: value for name, value in params.items() if f":{name}" in sql})
    compiled = statement.compile(dialect=postgresql.asyncpg.dialect())
    positional = [compiled.params[name] for name in compiled.positiontup or ()]
    connection = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    times, rows = [], 0
    try:
        for _ in range(repeat):
            started = time.perf_counter()
            if settings is None:
                rows = len(await connection.fetch(str(compiled), *positional))
            else:
                async with connection.transaction():
                    await connection.execute(settings)
                    rows = len(await connection.fetch(str(compiled), *positional))
            times.append(time.perf_counter() - started)
    finally:
        await connection.close()
    return statistics.median(times), max(times), rows


async def drop(url: str) -> None:
    admin = create_async_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    await admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clicks", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=5_000_000)
    parser.add_argument("--conversions", type=int, default=50_000, help="conversion events (0: none)")
    parser.add_argument("--replies", type=int, default=0, help="the business's replies, with their delivery reports")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database (ctwa_bench_analytics)")
    parser.add_argument("--reuse", action="store_true", help="query the database a --keep run left")
    args = parser.parse_args()
    url = make_url(SERVER_URL).set(database="ctwa_bench_analytics").render_as_string(hide_password=False)
    if not args.reuse:
        asyncio.run(drop(url))
        upgrade(url)
        asyncio.run(load(url, args.clicks, args.messages, args.conversions, args.replies))
        asyncio.run(prepare(url))

    print(
        f"\n{platform.node()}: {os.cpu_count()} cores, {args.clicks:,} clicks, {args.messages:,} messages, "
        f"{args.conversions:,} conversion events, range {SINCE} .. {UNTIL}, {args.repeat} runs each\n"
    )
    print("| query | rows | median | slowest | without rollups (median) |")
    print("|---|---:|---:|---:|---:|")
    runs = [(name, sql, SETTINGS) for name, sql in REPORTS.items()] + [(name, sql, None) for name, sql in VIEWS.items()]
    for name, sql, settings in runs:
        median, slowest, rows = asyncio.run(measure(url, sql, args.repeat, settings))
        naive = ""
        if name in WITHOUT_ROLLUPS:
            seconds, _, _ = asyncio.run(measure(url, WITHOUT_ROLLUPS[name], max(1, args.repeat // 2)))
            naive = f"{seconds * 1000:,.0f} ms"
        print(f"| {name} | {rows:,} | {median * 1000:,.0f} ms | {slowest * 1000:,.0f} ms | {naive} |")
    if not args.keep:
        asyncio.run(drop(url))


if __name__ == "__main__":
    main()
