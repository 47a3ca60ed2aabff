"""Report and export speed on a year of usage: `python -m bench.reports [--smoke]`.

Builds a database of 1,000,000 generations (1,000 users, 50 guilds, 365 days) in a temporary
folder, then times, as the bot runs them (aiosqlite; reports on the ledger's read-only
connection, limits and counts on its writer, as the cogs and the service do), the database
work of /usage, /usage-admin user and /usage-admin server for 30 days, and exports 100,000
rows of one guild in a child process whose peak resident memory (ru_maxrss of the finished
child, from getrusage(RUSAGE_CHILDREN)) is printed.

The database is built as an operator's file would have been: the schema of migrations 1-2,
rows of exactly those columns loaded in bulk (a million rows through the bot's own writes
would take minutes), then the bot's own `connect()` migrates it to today's schema. A later
migration therefore applies to the benchmark's rows as it does to real ones, and a check
that the reports count every row stops the run if it did not.

Guild sizes follow a Zipf-like curve (the largest has about 15% of the rows), so the server
figures are shown for the largest guild, the worst case, as well as a typical one.

`--smoke` runs every step on a tiny database once, in seconds, so CI notices when the
benchmark stops working; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import functools
import itertools
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.core.catalog import CATALOG
from bot.core.pricing import CostEstimate, PriceBook
from bot.ledger.export import export_to_files
from bot.ledger.limits import LimitsStore
from bot.ledger.migrations import MIGRATIONS
from bot.ledger.periods import Period
from bot.ledger.reports import Scope, Window, build_report, daily_series, window_for
from bot.ledger.store import UsageLedger, connect, open_ledger

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
# Discord's upload limit for bots in a server without boosts.
UPLOAD_LIMIT = 10 * 1024 * 1024
# The schema the bulk rows are written in: their columns all exist from migration 2 on.
BULK_SCHEMA_VERSION = 2
USER_BASE = 100_000_000_000_000_000
# Error code and message of a generation cut short, and of one upstream never answered, as
# the bot of schema 2 wrote them (the migrations carry them on).
INTERRUPTED = ("interrupted", "the bot stopped before this generation finished")
FAILED = ("timeout", "no answer in time")


@dataclass(frozen=True)
class Sizes:
    """How big the database is and how often each command is timed."""

    rows: int = 1_000_000
    users: int = 1_000
    guilds: int = 50
    days: int = 365
    repeats: int = 25
    all_time_repeats: int = 5
    export_rows: int = 100_000


SMOKE = Sizes(
    rows=5_000, users=50, guilds=5, days=30, repeats=3, all_time_repeats=1, export_rows=1_000
)

_INSERT = (
    "INSERT INTO generations (created_at, user_id, guild_id, channel_id, model, size, quality, "
    "n_requested, images_delivered, status, error_code, error_message, latency_ms, "
    "input_tokens, output_tokens, total_tokens, request_id, cost_usd, price_source, "
    "price_as_of) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Share of requests per model: the cheap and default ones most.
_MODEL_WEIGHTS = {
    "dall-e-3": 30,
    "dall-e-2": 5,
    "gpt-image-1": 20,
    "gpt-image-1-mini": 20,
    "gpt-image-1.5": 10,
    "gpt-image-2": 10,
    "qwen-image": 5,
}


def guild_ids(count: int) -> list[int]:
    """Snowflake-sized guild ids, largest guild first."""
    return [900_000_000_000_000_000 + index for index in range(count)]


def _picker(rng: random.Random, weights: list[float]) -> Callable[[], int]:
    """A fast weighted choice of an index: one random number and a bisection."""
    cumulative = list(itertools.accumulate(weights))
    total = cumulative[-1]
    return lambda: bisect.bisect_right(cumulative, rng.random() * total)


def rows(
    count: int, users: int, guild_list: Sequence[int], days: int, seed: int = 7
) -> Iterator[tuple[object, ...]]:
    """`count` generations in time order over `days` days up to NOW, priced as the bot would.

    `guild_list` is largest first: the guilds' shares of users fall off like a Zipf curve.
    """
    rng = random.Random(seed)
    prices = PriceBook()

    # The bot's own estimate, remembered: a few hundred distinct inputs make a million rows.
    @functools.cache
    def estimate_for(
        model: str, size: str, quality: str, n: int, tokens_in: int | None, tokens_out: int | None
    ) -> CostEstimate:
        return prices.estimate(
            model,
            size=size,
            quality=quality,
            images=n,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
        )

    pick_guild = _picker(rng, [1 / (rank + 1) ** 0.8 for rank in range(len(guild_list))])
    home = [guild_list[pick_guild()] for _ in range(users)]
    models = list(_MODEL_WEIGHTS)
    pick_model = _picker(rng, list(_MODEL_WEIGHTS.values()))
    start = NOW - timedelta(days=days)
    day_prefix = [(start.date() + timedelta(days=day)).isoformat() for day in range(days + 1)]
    span_us = days * 86_400_000_000
    offset_us = (start - datetime(start.year, start.month, start.day, tzinfo=UTC)) // timedelta(
        microseconds=1
    )
    for index in range(count):
        # Times in order, formatted as to_db_time does, without a datetime per row.
        moment = offset_us + span_us * index // count
        day, rest = divmod(moment, 86_400_000_000)
        seconds, micros = divmod(rest, 1_000_000)
        hours, seconds = divmod(seconds, 3600)
        minutes, seconds = divmod(seconds, 60)
        created = f"{day_prefix[day]}T{hours:02d}:{minutes:02d}:{seconds:02d}.{micros:06d}Z"
        user = rng.randrange(users)
        where = rng.random()
        guild = home[user] if where < 0.95 else (rng.choice(guild_list) if where < 0.98 else None)
        model = models[pick_model()]
        spec = CATALOG[model]
        n = 1 if spec.max_n == 1 else rng.choice((1, 1, 1, 2, 4))
        size = spec.default_size or spec.sizes[0]
        quality = spec.default_quality or "default"
        roll = rng.random()
        status = "ok" if roll < 0.94 else ("failed" if roll < 0.99 else "interrupted")
        ok = status == "ok"
        tokens_in = 20 + int(rng.random() * 100) if spec.returns_usage and ok else None
        tokens_out = 1056 * n if tokens_in is not None else None
        estimate = estimate_for(model, size, quality, n, tokens_in, tokens_out)
        error_code, error_message = (
            (None, None) if ok else (INTERRUPTED if status == "interrupted" else FAILED)
        )
        yield (
            created,
            USER_BASE + user,
            guild,
            800_000_000_000_000_000,
            model,
            size,
            quality,
            n,
            n if ok else 0,
            status,
            error_code,
            error_message,
            3000 + int(rng.random() * 57000),
            tokens_in,
            tokens_out,
            None if tokens_in is None or tokens_out is None else tokens_in + tokens_out,
            f"{rng.getrandbits(48):012x}",
            estimate.cost_usd if ok else None,
            estimate.source.value if ok and estimate.source else None,
            estimate.as_of.isoformat() if ok and estimate.as_of else None,
        )


def _create_bulk_schema(db: sqlite3.Connection) -> None:
    """Migrations 1-2, each as `migrate` runs it: the schema the bulk rows are written in."""
    for version in range(1, BULK_SCHEMA_VERSION + 1):
        db.executescript(
            f"BEGIN IMMEDIATE;\n{MIGRATIONS[version - 1]}\nPRAGMA user_version = {version};\n"
            "COMMIT;"
        )


def _load(db: sqlite3.Connection, generated: Iterator[tuple[object, ...]]) -> None:
    """Load every row in one transaction, the indexes dropped for it and built again after.

    SQLite builds an index from sorted data much faster than it grows one row by row, and the
    result is the schema the migrations made.
    """
    indexes = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
        "AND tbl_name = 'generations' AND sql IS NOT NULL"
    ).fetchall()
    db.execute("BEGIN")
    for name, _ in indexes:
        db.execute(f'DROP INDEX "{name}"')
    db.executemany(_INSERT, generated)
    for _, sql in indexes:
        db.execute(sql)
    db.execute("COMMIT")


async def _migrate_as_the_bot_does(path: Path) -> None:
    """Open the file with the bot's own `connect`, which brings it to today's schema."""
    db = await connect(path)
    await db.close()


def build(
    path: Path,
    count: int,
    users: int,
    guild_list: Sequence[int],
    days: int,
) -> float:
    """Write `count` generations as a schema-2 file, then migrate it as the bot would; seconds."""
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        # The bulk load needs no crash safety; the bot's connect sets WAL again after.
        db.execute("PRAGMA journal_mode = DELETE")
        db.execute("PRAGMA synchronous = OFF")
        _create_bulk_schema(db)
        _load(db, rows(count, users, guild_list, days))
    finally:
        db.close()
    asyncio.run(_migrate_as_the_bot_does(path))
    return time.perf_counter() - started


async def check_rows_counted(ledger: UsageLedger, count: int) -> None:
    """Stop the run if today's reports do not see every row built (a migration lost them)."""
    report = await build_report(ledger.reader, Scope(), window_for(Period.ALL, ledger.now()))
    totals = report.totals
    if totals.requests != count or totals.images <= 0 or not totals.cost.priced:
        raise SystemExit(
            f"the reports see {totals.requests:,} requests and {totals.images:,} images with "
            f"cost {totals.cost.summary()} in a database of {count:,} rows: the bulk rows no "
            "longer migrate into what the bot writes; update bench/reports.py"
        )


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    """Milliseconds one awaited call takes."""
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


def describe(samples: list[float]) -> str:
    """Median, 95th percentile and maximum of a list of milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"median {statistics.median(ordered):6.2f} ms  p95 {p95:6.2f} ms  max {ordered[-1]:6.2f} ms"
    )


async def allowance_reads(
    ledger: UsageLedger, limits: LimitsStore, user: int, guild: int | None
) -> None:
    """The reads of GenerationService.allowance: the server's policy, then today's counts."""
    if guild is not None:
        await limits.policy(guild, user)
    await ledger.counts(user, guild)


async def measure(path: Path, sizes: Sizes) -> tuple[int, str]:
    """Time the three commands' database work; return the largest guild and its export start."""
    rng = random.Random(11)
    guild_list = guild_ids(sizes.guilds)
    async with open_ledger(path, clock=lambda: NOW) as ledger:
        await check_rows_counted(ledger, sizes.rows)
        print("the reports count every row")
        # Reports read where the cogs read them, on the ledger's read-only connection; limits
        # where the service reads them, on the writer.
        reader = ledger.reader
        limits = LimitsStore(ledger.connection, ledger.now)
        window = window_for(Period.DAYS_30, NOW)

        rows = await reader.execute_fetchall(
            "SELECT guild_id, COUNT(*) FROM generations WHERE guild_id IS NOT NULL "
            "GROUP BY guild_id ORDER BY 2 DESC"
        )
        counts = [(int(row[0]), int(row[1])) for row in rows]
        largest, largest_rows = counts[0]
        typical, typical_rows = counts[len(counts) // 2]
        print(f"guild rows over the year: largest {largest_rows:,}, median {typical_rows:,}")

        # Each as its cog runs it (bot/glue/cogs/usage.py, admin.py), less the Discord parts.
        async def usage(guild: int, user: int) -> None:
            await build_report(reader, Scope(user_id=user), window)
            await allowance_reads(ledger, limits, user, guild)

        async def admin_user(guild: int, user: int) -> None:
            await build_report(reader, Scope(guild, user), window)
            await allowance_reads(ledger, limits, user, guild)
            await limits.policy(guild, user)

        async def admin_server(guild: int, span: Window = window) -> None:
            await build_report(reader, Scope(guild_id=guild), span)
            await daily_series(reader, Scope(guild_id=guild), span, NOW.date())

        # One untimed pass reads the pages in, as a running bot has them.
        await admin_server(largest)
        repeats = sizes.repeats
        user_ids = [USER_BASE + rng.randrange(sizes.users) for _ in range(repeats)]
        guild_picks = [rng.choice(guild_list) for _ in range(repeats)]
        pairs = list(zip(guild_picks, user_ids, strict=True))
        results = {
            "/usage (30d)": [await timed(lambda g=g, u=u: usage(g, u)) for g, u in pairs],
            "/usage-admin user (30d)": [
                await timed(lambda g=g, u=u: admin_user(g, u)) for g, u in pairs
            ],
            "/usage-admin server (30d), random guild": [
                await timed(lambda g=g: admin_server(g)) for g in guild_picks
            ],
            "/usage-admin server (30d), largest guild": [
                await timed(lambda: admin_server(largest)) for _ in range(repeats)
            ],
            "/usage-admin server (30d), median guild": [
                await timed(lambda: admin_server(typical)) for _ in range(repeats)
            ],
            "/usage-admin server (all), largest guild": [
                await timed(lambda: admin_server(largest, window_for(Period.ALL, NOW)))
                for _ in range(sizes.all_time_repeats)
            ],
        }
        for name, samples in results.items():
            print(f"{name:<42} {describe(samples)}")

        # The export window starts at the largest guild's export_rows-th newest row (or its
        # first row, in a small run).
        row = await reader.fetchone(
            "SELECT created_at FROM generations WHERE guild_id = ? "
            "ORDER BY created_at DESC LIMIT 1 OFFSET ?",
            (largest, min(sizes.export_rows, largest_rows) - 1),
        )
        assert row is not None
        return largest, str(row[0])


def export_child(database: Path, guild: int, since: str, folder: Path) -> None:
    """In the child process: export the guild's rows since `since`, print what it made."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    window = Window(datetime.fromisoformat(since.replace("Z", "+00:00")), None, "bench")
    result = export_to_files(
        database, Scope(guild_id=guild), window, folder, "export", UPLOAD_LIMIT
    )
    seconds = time.perf_counter() - started
    sizes = ", ".join(f"{path.name} {path.stat().st_size / 1e6:.1f} MB" for path in result.files)
    print(f"export: {result.rows:,} rows in {seconds:.2f} s -> {sizes}")
    print(
        f"export child: peak RSS before the export (interpreter and imports) {before / 1024:.1f} MB"
    )


def export_in_child(database: Path, guild: int, since: str) -> None:
    """Run the export in a child process and print its peak resident memory."""
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.reports",
                "--export-child",
                str(database),
                str(guild),
                since,
                folder,
            ],
            check=True,
        )
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"export peak RSS (child process, ru_maxrss): {peak_kb / 1024:.1f} MB")


def main(argv: list[str] | None = None) -> int:
    """Build the database, then print the timings and the export's peak memory."""
    parser = argparse.ArgumentParser(prog="python -m bench.reports", description=__doc__)
    parser.add_argument("--rows", type=int, default=Sizes.rows)
    parser.add_argument("--users", type=int, default=Sizes.users)
    parser.add_argument("--guilds", type=int, default=Sizes.guilds)
    parser.add_argument("--days", type=int, default=Sizes.days)
    parser.add_argument("--smoke", action="store_true", help="a tiny database, every step once")
    parser.add_argument("--keep", type=Path, help="build the database here and keep it")
    parser.add_argument("--export-child", nargs=4, metavar=("DB", "GUILD", "SINCE", "DIR"))
    args = parser.parse_args(argv)
    if args.export_child:
        database, guild, since, folder = args.export_child
        export_child(Path(database), int(guild), since, Path(folder))
        return 0
    sizes = (
        SMOKE
        if args.smoke
        else replace(Sizes(), rows=args.rows, users=args.users, guilds=args.guilds, days=args.days)
    )
    with tempfile.TemporaryDirectory(prefix="bench-reports-") as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "usage.db"
        for leftover in folder.glob("usage.db*"):
            leftover.unlink()
        print(
            f"building {sizes.rows:,} generations, {sizes.users:,} users, {sizes.guilds} "
            f"guilds, {sizes.days} days{' (smoke: figures mean nothing)' if args.smoke else ''}"
            " ..."
        )
        seconds = build(path, sizes.rows, sizes.users, guild_ids(sizes.guilds), sizes.days)
        print(f"built and migrated in {seconds:.1f} s, {path.stat().st_size / 1e6:.0f} MB")
        largest, since = asyncio.run(measure(path, sizes))
        export_in_child(path, largest, since)
    return 0


if __name__ == "__main__":
    sys.exit(main())
