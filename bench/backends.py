"""SQLite beside PostgreSQL: reservations and reports, `python -m bench.backends [--smoke]`.

1. Reservations. Each process (a real OS process, multiprocessing's spawn start method)
   opens its own ledger through the bot's `open_storage` and runs 16 asyncio tasks, each a
   loop of `reserve` then `finish` (delivered, billed at its estimate), for 8 s. Members ask
   with Zipf-like activity (5,000 members at home in 50 guilds), 1, 2 or 4 images at a time,
   under the operator's daily limit of 50 images per member; a member refused stops asking,
   as a told member would. The processes start together at a barrier, each after a warm-up
   that fills its connection pool, so their counts cover the same 8 s of wall clock.
   Reported per backend and number of processes: reservations answered per second (granted
   or refused, summed over the processes), p50 and p99 of the time around `reserve` alone
   (waiting for a pool connection and the locks included, as the bot waits), and afterwards,
   from the rows: members at the limit and over it (must be none) and rows left pending.
   Two variants: member limits only, and with a bot-wide daily budget (set far above what
   the run spends, so it never refuses): on PostgreSQL every reservation then takes the one
   bot-wide advisory lock and sums today's spend under it, so reservations run one at a
   time across every process. That is the honest cost of a bot budget; on SQLite every
   reservation is one at a time anyway (one writer per file). Every run starts on an empty
   database, so the sums grow from nothing to the run's own rows (shown as "rows today").

   SQLite runs one process only: the bot refuses a second process on one file (`LedgerInUse`,
   from the lock file beside it) by design, so its 2- and 4-process rows read "n/a".

2. Reports at 1,000,000 rows. The rows of bench/reports.py (its generator: 1,000 users, 50
   guilds, a year) go into SQLite by its builder (the schema-2 file migrated by the bot) and
   into PostgreSQL by COPY (`copy_records_to_table`, the indexes dropped and built again
   after, as the SQLite builder does), then VACUUM ANALYZE: statistics for the planner, and
   the visibility map that lets the server reports' covering index be read without the table,
   the steady state autovacuum keeps a running database in. The reports of both are checked
   to agree. Then /usage (a member, 30 days), /usage-admin user (a member in a guild they
   use) and /usage-admin server (the largest guild) are timed as the cogs run them (as
   bench/reports.py does), 25 times each on each backend: median, p95, PostgreSQL / SQLite.

PostgreSQL is the throwaway cluster of tests/pg.py (fsync, synchronous_commit and
full_page_writes off, so a commit never waits for the disk, as SQLite's WAL with
synchronous=NORMAL does not either); the server shares the machine's cores with the
benchmark's processes. Without PostgreSQL's binaries the PostgreSQL half is skipped, saying
so (with CI=true tests/pg.py fails instead). The tables are Markdown, for the README. A full
run takes about five minutes on 2 cores, two of them building the SQLite file (its builder
is the slow part; the reservation runs take about a minute and a half).

`--smoke` runs every step tiny (2,000 rows, 0.5 s runs of 4 tasks, 1 and 2 processes, 3
repeats) in about 15 s, so CI notices when the benchmark stops working; its figures mean
nothing. Exit status 1 when a member went over their limit, a row stayed pending, the rows
do not match the grants or the two backends' reports disagree.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import multiprocessing
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from threading import BrokenBarrierError
from typing import TYPE_CHECKING, Any, Final

import asyncpg
import pytest

from bench import reports
from bot.ledger.busy import LedgerBusy
from bot.ledger.limits import BudgetExhausted, Ceilings, LimitsStore, QuotaExceeded
from bot.ledger.periods import Period, day_start, to_db_time
from bot.ledger.reports import Report, Scope, build_report, daily_series, window_for
from bot.ledger.storage import SQLITE_PREFIX, open_storage
from bot.ledger.store import (
    FinalStatus,
    LedgerInUse,
    NewGeneration,
    UpstreamAnswer,
    UsageLedger,
    open_ledger,
)
from tests.pg import PgCluster, cluster_folder, start_cluster, stop_cluster

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

OPERATOR_DAILY_IMAGES: Final = 50
# Far above what any run spends: the budget is checked (and locked) but never refuses.
BOT_DAILY_BUDGET_USD: Final = 1_000_000.0
PRICE_PER_IMAGE_USD: Final = 0.04
IMAGES_PER_REQUEST: Final = (1, 1, 1, 2, 4)
MEMBER_BASE: Final = 300_000_000_000_000_000
GUILD_BASE: Final = 900_000_000_000_000_000
# Warm-up reservations are made by members of their own, below MEMBER_BASE, so they never
# take from a measured member's allowance.
WARM_UP_BASE: Final = MEMBER_BASE - 1_000_000
# Generous: spawning a process and importing the bot takes a second or two.
START_TIMEOUT_S: Final = 120.0
# The bot's day is UTC; a fixed date (with the real time of day) keeps every process of a run,
# and the audit after it, on one day even when a run crosses midnight.
BENCH_DATE: Final = datetime(2026, 11, 21, tzinfo=UTC)
# The columns of bench/reports.py's rows, in its order, and `billed`, which its schema-2 rows
# leave to migration 3 (an "ok" row was billed) and the PostgreSQL schema needs at once.
REPORT_COLUMNS: Final = (
    "created_at",
    "user_id",
    "guild_id",
    "channel_id",
    "model",
    "size",
    "quality",
    "n_requested",
    "images_delivered",
    "status",
    "error_code",
    "error_message",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "request_id",
    "cost_usd",
    "price_source",
    "price_as_of",
    "billed",
)
NOT_APPLICABLE: Final = "n/a (one process per SQLite file, by design)"


@dataclass(frozen=True)
class Sizes:
    """How long and how big each part is."""

    seconds: float = 8.0
    tasks: int = 16
    process_counts: tuple[int, ...] = (1, 2, 4)
    members: int = 5_000
    guilds: int = 50
    rows: int = 1_000_000
    users: int = 1_000
    report_guilds: int = 50
    days: int = 365
    repeats: int = 25


SMOKE: Final = Sizes(
    seconds=0.5,
    tasks=4,
    process_counts=(1, 2),
    members=200,
    guilds=5,
    rows=2_000,
    users=50,
    report_guilds=5,
    days=30,
    repeats=3,
)


def progress(text: str) -> None:
    """A line on stderr, so stdout carries only the figures."""
    print(text, file=sys.stderr, flush=True)


def bench_clock() -> datetime:
    """The ledger's clock in every process: BENCH_DATE at the real time of day."""
    now = datetime.now(UTC)
    return now.replace(year=BENCH_DATE.year, month=BENCH_DATE.month, day=BENCH_DATE.day)


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def sqlite_url(path: Path) -> str:
    """The DATABASE_URL of a SQLite file, as an operator would write it."""
    return SQLITE_PREFIX + str(path)


# --------------------------------------------------------------------------------------------
# 1. Reservations: one worker process
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What every process of one run does; sent to each spawned process."""

    url: str
    tasks: int
    seconds: float
    members: int
    guilds: int
    bot_budget: bool

    def ceilings(self) -> Ceilings:
        return Ceilings(
            operator_daily_images=OPERATOR_DAILY_IMAGES,
            bot_daily_budget_usd=BOT_DAILY_BUDGET_USD if self.bot_budget else None,
        )


@dataclass
class Tally:
    """One process's answers: those inside the measured window, and every grant."""

    latencies_ms: list[float] = field(default_factory=list)
    refused: int = 0
    busy: int = 0
    granted_total: int = 0
    """Every row this process wrote, warm-up and the last ones after the window included."""


class Members:
    """Who asks next: Zipf-like activity, each member at home in one guild."""

    def __init__(self, count: int, guilds: int, rng: random.Random) -> None:
        # Homes from a fixed seed: every process agrees where a member belongs.
        homes = random.Random(3)
        guild_weights = [1 / (rank + 1) ** 0.8 for rank in range(guilds)]
        self.home = homes.choices(range(guilds), weights=guild_weights, k=count)
        self._cumulative = list(accumulate(1 / (rank + 1) ** 0.8 for rank in range(count)))
        self._rng = rng
        self._refused: set[int] = set()
        self._count = count

    def pick(self) -> int | None:
        """A member still asking, or None once every one was refused."""
        while len(self._refused) < self._count:
            (member,) = self._rng.choices(range(self._count), cum_weights=self._cumulative)
            if member not in self._refused:
                return member
        return None

    def refused(self, member: int) -> None:
        """A member told they reached their limit stops asking for today."""
        self._refused.add(member)


def new_generation(user_id: int, guild_id: int, n: int, request_id: str) -> NewGeneration:
    """A request as the service reserves it, its estimate reserved against the budgets."""
    return NewGeneration(
        user_id=user_id,
        guild_id=guild_id,
        channel_id=guild_id + 1,
        model="gpt-image-1",
        size="1024x1024",
        quality="auto",
        n_requested=n,
        request_id=request_id,
        reserved_usd=PRICE_PER_IMAGE_USD * n,
    )


def delivered(n: int) -> FinalStatus:
    """Every image reached the member; the call billed at the estimate, in the same write."""
    answer = UpstreamAnswer(
        attempts=1,
        upstream_request_id=None,
        input_tokens=None,
        output_tokens=None,
        total_tokens=None,
        cost_usd=PRICE_PER_IMAGE_USD * n,
        price_source="builtin",
        price_as_of="2026-01-01",
    )
    return FinalStatus("delivered", images_delivered=n, answer=answer)


async def warm_up(ledger: UsageLedger, load: Load, index: int) -> int:
    """Reservations from every task at once, twice: the pool holds its connections and each
    connection has the statements prepared. Returns the rows written."""

    async def one(task: int) -> None:
        entry = new_generation(WARM_UP_BASE + index * 1000 + task, GUILD_BASE, 1, "warm")
        row = await ledger.reserve(entry, load.ceilings())
        await ledger.finish(row, delivered(1), latency_ms=0)

    rounds = 2
    for _ in range(rounds):
        await asyncio.gather(*(one(task) for task in range(load.tasks)))
    return rounds * load.tasks


async def ask(
    ledger: UsageLedger,
    load: Load,
    members: Members,
    rng: random.Random,
    end: float,
    tally: Tally,
    name: str,
) -> None:
    """One task: reserve, then settle the row, until the window ends."""
    ceilings = load.ceilings()
    serial = 0
    while time.perf_counter() < end and (member := members.pick()) is not None:
        serial += 1
        n = rng.choice(IMAGES_PER_REQUEST)
        guild = GUILD_BASE + members.home[member]
        entry = new_generation(MEMBER_BASE + member, guild, n, f"{name}-{serial}")
        row: int | None = None
        started = time.perf_counter()
        try:
            row = await ledger.reserve(entry, ceilings)
            outcome = "granted"
        except (QuotaExceeded, BudgetExhausted):
            outcome = "refused"
            members.refused(member)
        except LedgerBusy:
            outcome = "busy"
        finished = time.perf_counter()
        if row is not None:
            tally.granted_total += 1
        # Only answers inside the window count, so every process covers the same seconds.
        if finished <= end:
            tally.latencies_ms.append((finished - started) * 1000)
            tally.refused += outcome == "refused"
            tally.busy += outcome == "busy"
        if row is not None:
            # Settled after the window too: no row may stay pending.
            await ledger.finish(row, delivered(n), latency_ms=0)


async def work(load: Load, index: int, barrier: Barrier) -> Tally:
    """One process: open the ledger, warm up, wait for the others, then ask for `seconds`."""
    async with open_storage(load.url, bench_clock, instance_id=f"bench-{index}") as ledger:
        tally = Tally(granted_total=await warm_up(ledger, load, index))
        await asyncio.to_thread(barrier.wait, START_TIMEOUT_S)
        end = time.perf_counter() + load.seconds
        members = Members(load.members, load.guilds, random.Random(1000 + index))
        await asyncio.gather(
            *(
                ask(
                    ledger,
                    load,
                    members,
                    random.Random(index * 100 + task),
                    end,
                    tally,
                    f"{index}.{task}",
                )
                for task in range(load.tasks)
            )
        )
        return tally


def worker(load: Load, index: int, barrier: Barrier, results: Queue[Any]) -> None:
    """The spawned process's entry: its tally, or its traceback, onto the queue."""
    try:
        tally = asyncio.run(work(load, index, barrier))
        results.put((index, tally, None))
    except BaseException:
        # Let the parent and the other workers stop waiting at the barrier.
        barrier.abort()
        results.put((index, None, traceback.format_exc()))


# --------------------------------------------------------------------------------------------
# 1. Reservations: one run of 1, 2 or 4 processes, and the audit after it
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Audit:
    """What the rows say after a run."""

    at_limit: int
    over_limit: int
    pending: int
    rows_today: int


@dataclass(frozen=True)
class LoadResult:
    """One line of the reservations table."""

    backend: str
    limits: str
    processes: int
    per_second: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    refused: int = 0
    busy: int = 0
    audit: Audit | None = None
    granted_total: int = 0
    second_open_refused: bool | None = None


async def audit(url: str) -> Audit:
    """From the rows: who reached the member limit, who passed it, what stayed pending."""
    async with open_storage(url, bench_clock, instance_id="bench-audit") as ledger:
        since = to_db_time(day_start(bench_clock()))
        sums = await ledger.reader.execute_fetchall(
            "SELECT user_id, SUM(quota_images) FROM generations "
            "WHERE created_at >= ? AND user_id >= ? GROUP BY user_id",
            (since, MEMBER_BASE),
        )
        counts = await ledger.reader.fetchone(
            "SELECT COUNT(*), SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) "
            "FROM generations WHERE created_at >= ?",
            (since,),
        )
    assert counts is not None
    images = [int(row[1]) for row in sums]
    return Audit(
        at_limit=sum(1 for total in images if total == OPERATOR_DAILY_IMAGES),
        over_limit=sum(1 for total in images if total > OPERATOR_DAILY_IMAGES),
        pending=int(counts[1] or 0),
        rows_today=int(counts[0]),
    )


async def _second_open_refused(path: Path) -> bool:
    try:
        async with open_ledger(path, bench_clock):
            return False
    except LedgerInUse:
        return True


def second_open_refused(path: Path) -> bool:
    """Whether the bot refuses a second process on the file a worker has open."""
    return asyncio.run(_second_open_refused(path))


def run_processes(
    load: Load, processes: int, during: Callable[[], bool] | None = None
) -> tuple[list[Tally], bool | None]:
    """Start `processes` workers together; their tallies, and what `during` saw meanwhile.

    `during` runs in this process once every worker is past its warm-up and asking.
    """
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes + 1)
    results: Queue[Any] = context.Queue()
    children = [
        context.Process(target=worker, args=(load, index, barrier, results), daemon=True)
        for index in range(processes)
    ]
    for child in children:
        child.start()
    seen: bool | None = None
    try:
        try:
            barrier.wait(START_TIMEOUT_S)
            seen = during() if during is not None else None
        except BrokenBarrierError:
            pass  # a worker failed before the start: its traceback is on the queue
        answers = [results.get(timeout=START_TIMEOUT_S + load.seconds) for _ in children]
    finally:
        for child in children:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    failures = [error for _, _, error in answers if error is not None]
    if failures:
        raise RuntimeError("a reservation worker failed:\n" + "\n".join(failures))
    return [tally for _, tally, _ in answers], seen


def measure_load(
    backend: str, url: str, limits: str, processes: int, sizes: Sizes, sqlite_file: Path | None
) -> LoadResult:
    """One run on a fresh database; its figures and the audit of its rows."""
    load = Load(url, sizes.tasks, sizes.seconds, sizes.members, sizes.guilds, limits == BOT)
    # While the worker has the file, a second bot process must be refused.
    during = None if sqlite_file is None else functools.partial(second_open_refused, sqlite_file)
    tallies, refused_second = run_processes(load, processes, during)
    latencies = sorted(ms for tally in tallies for ms in tally.latencies_ms)
    return LoadResult(
        backend=backend,
        limits=limits,
        processes=processes,
        per_second=len(latencies) / sizes.seconds,
        p50_ms=percentile(latencies, 0.50) if latencies else None,
        p99_ms=percentile(latencies, 0.99) if latencies else None,
        refused=sum(tally.refused for tally in tallies),
        busy=sum(tally.busy for tally in tallies),
        audit=asyncio.run(audit(url)),
        granted_total=sum(tally.granted_total for tally in tallies),
        second_open_refused=refused_second,
    )


MEMBERS_ONLY: Final = "member limits only"
BOT: Final = "with a bot-wide budget"


def reservation_results(sizes: Sizes, scratch: Path, cluster: PgCluster | None) -> list[LoadResult]:
    """Every run of part 1, each on an empty database: SQLite, then PostgreSQL."""
    results: list[LoadResult] = []
    for limits in (MEMBERS_ONLY, BOT):
        for processes in sizes.process_counts:
            if processes > 1:
                results.append(LoadResult("SQLite", limits, processes))
                continue
            path = scratch / f"reserve-{len(results)}.db"
            progress(f"reservations: SQLite, {limits}, 1 process, {sizes.seconds:g} s")
            results.append(measure_load("SQLite", sqlite_url(path), limits, 1, sizes, path))
        if cluster is None:
            continue
        for processes in sizes.process_counts:
            progress(
                f"reservations: PostgreSQL, {limits}, {processes} process(es), {sizes.seconds:g} s"
            )
            url = asyncio.run(cluster.fresh_database())
            results.append(measure_load("PostgreSQL", url, limits, processes, sizes, None))
    return results


def fmt(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def loads_table(results: Sequence[LoadResult], sizes: Sizes) -> str:
    """Part 1 as Markdown, each rate also as a ratio to SQLite's with the same limits."""
    sqlite_rate = {
        r.limits: r.per_second for r in results if r.backend == "SQLite" and r.per_second
    }
    lines = [
        f"Reservations: {sizes.tasks} tasks per process, {sizes.seconds:g} s, reserve + finish "
        f"loops; operator limit {OPERATOR_DAILY_IMAGES} images per member per day; p50 / p99 "
        "of `reserve` alone.",
        "",
        "| backend | limits | processes | reservations/s | p50 ms | p99 ms | vs SQLite "
        "| refused / busy | members at / over the limit | rows today |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.per_second is None:
            empty = " |" * 6
            lines.append(f"| {r.backend} | {r.limits} | {r.processes} | {NOT_APPLICABLE} |{empty}")
            continue
        assert r.audit is not None
        base = sqlite_rate.get(r.limits)
        ratio = f"{r.per_second / base:.2f}x" if base else ""
        lines.append(
            f"| {r.backend} | {r.limits} | {r.processes} | {fmt(r.per_second, 0)} "
            f"| {fmt(r.p50_ms, 2)} | {fmt(r.p99_ms, 2)} | {ratio} | {r.refused} / {r.busy} "
            f"| {r.audit.at_limit} / {r.audit.over_limit} | {r.audit.rows_today:,} |"
        )
    return "\n".join(lines)


def load_problems(results: Sequence[LoadResult]) -> list[str]:
    """What the audits found wrong; empty when every run was exact."""
    problems = []
    for r in results:
        if r.audit is None:
            continue
        where = f"{r.backend}, {r.limits}, {r.processes} processes"
        if r.audit.over_limit:
            problems.append(f"{where}: {r.audit.over_limit} members over their daily limit")
        if r.audit.pending:
            problems.append(f"{where}: {r.audit.pending} rows left pending")
        if r.audit.rows_today != r.granted_total:
            problems.append(f"{where}: {r.audit.rows_today:,} rows for {r.granted_total:,} grants")
        if r.second_open_refused is False:
            problems.append(f"{where}: a second process opened the SQLite file")
    return problems


def exactness_line(results: Sequence[LoadResult]) -> str:
    """One sentence on what the audits checked, for under the table."""
    audited = [r for r in results if r.audit is not None]
    at_limit = sum(r.audit.at_limit for r in audited if r.audit)
    over = sum(r.audit.over_limit for r in audited if r.audit)
    pending = sum(r.audit.pending for r in audited if r.audit)
    refused = [r.second_open_refused for r in audited if r.second_open_refused is not None]
    second = "refused with LedgerInUse" if refused and all(refused) else "NOT refused"
    return (
        f"Exactness, from the rows after each run: {over} members over the limit "
        f"({at_limit} reached exactly {OPERATOR_DAILY_IMAGES} across the runs), {pending} rows "
        "left pending, one row per grant. A second process opening the SQLite file during a "
        f"run: {second}."
    )


# --------------------------------------------------------------------------------------------
# 2. Reports at 1,000,000 rows
# --------------------------------------------------------------------------------------------


def postgres_rows(sizes: Sizes) -> Iterator[tuple[object, ...]]:
    """bench/reports.py's rows as PostgreSQL's schema has them, as migration 3 maps them.

    An "ok" row became "delivered" and billed; its failed and interrupted rows (the only
    others it makes) were never billed.
    """
    guilds = reports.guild_ids(sizes.report_guilds)
    for row in reports.rows(sizes.rows, sizes.users, guilds, sizes.days):
        if len(row) != len(REPORT_COLUMNS) - 1:
            raise SystemExit("bench/reports.py's rows changed shape: update REPORT_COLUMNS")
        ok = row[9] == "ok"
        yield (*row[:9], "delivered" if ok else row[9], *row[10:], int(ok))


async def build_postgres(url: str, sizes: Sizes) -> float:
    """COPY the rows in with the indexes dropped, build them again, VACUUM ANALYZE; seconds."""
    started = time.perf_counter()
    connection = await asyncpg.connect(url)
    try:
        indexes = await connection.fetch(
            "SELECT c.relname, pg_get_indexdef(c.oid) FROM pg_index AS x "
            "JOIN pg_class AS c ON c.oid = x.indexrelid "
            "WHERE x.indrelid = 'generations'::regclass AND NOT x.indisprimary"
        )
        async with connection.transaction():
            # Only the build's speed: the indexes come out the same with less memory.
            await connection.execute("SET LOCAL maintenance_work_mem = '512MB'")
            for name, _ in indexes:
                await connection.execute(f'DROP INDEX "{name}"')
            await connection.copy_records_to_table(
                "generations", records=postgres_rows(sizes), columns=list(REPORT_COLUMNS)
            )
            for _, sql in indexes:
                await connection.execute(sql)
        await connection.execute("VACUUM ANALYZE generations")
    finally:
        await connection.close()
    return time.perf_counter() - started


async def postgres_size_mb(url: str) -> float:
    connection = await asyncpg.connect(url)
    try:
        size = await connection.fetchval("SELECT pg_total_relation_size('generations')")
    finally:
        await connection.close()
    return int(size) / 1e6


def sqlite_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6


@dataclass(frozen=True)
class Opened:
    """One backend's ledger, open for the reports."""

    backend: str
    ledger: UsageLedger
    limits: LimitsStore


Command = Callable[[Opened, int, int], Awaitable[None]]
WINDOW: Final = window_for(Period.DAYS_30, reports.NOW)


# Each as its cog runs it (bot/glue/cogs/usage.py, admin.py), less the Discord parts, as
# bench/reports.py times them.
async def usage(opened: Opened, guild: int, user: int) -> None:
    await build_report(opened.ledger.reader, Scope(user_id=user), WINDOW)
    await reports.allowance_reads(opened.ledger, opened.limits, user, guild)


async def admin_user(opened: Opened, guild: int, user: int) -> None:
    await build_report(opened.ledger.reader, Scope(guild, user), WINDOW)
    await reports.allowance_reads(opened.ledger, opened.limits, user, guild)
    await opened.limits.policy(guild, user)


async def admin_server(opened: Opened, guild: int, user: int) -> None:
    scope = Scope(guild_id=guild)
    await build_report(opened.ledger.reader, scope, WINDOW)
    await daily_series(opened.ledger.reader, scope, WINDOW, reports.NOW.date())


@asynccontextmanager
async def opened_backend(backend: str, url: str) -> AsyncIterator[Opened]:
    async with open_storage(url, lambda: reports.NOW, instance_id="bench-reports") as ledger:
        yield Opened(backend, ledger, LimitsStore(ledger.connection, ledger.now))


def same_report(a: Report, b: Report) -> bool:
    """Whether two backends' reports say the same (costs to a millionth of a dollar)."""
    x, y = a.totals, b.totals
    counted = ("images", "requests", "failures", "input_tokens", "output_tokens", "edits")
    return (
        all(getattr(x, name) == getattr(y, name) for name in counted)
        and math.isclose(x.cost.usd, y.cost.usd, abs_tol=1e-6)
        and [line.model for line in a.by_model] == [line.model for line in b.by_model]
        and [line.user_id for line in a.top_users] == [line.user_id for line in b.top_users]
    )


async def members_with_guilds(opened: Opened, sizes: Sizes) -> tuple[list[tuple[int, int]], int]:
    """Random members, each with a guild they use; and the largest guild."""
    reader = opened.ledger.reader
    rng = random.Random(11)
    pairs: list[tuple[int, int]] = []
    while len(pairs) < sizes.repeats:
        user = reports.USER_BASE + rng.randrange(sizes.users)
        row = await reader.fetchone(
            "SELECT guild_id FROM generations WHERE user_id = ? AND guild_id IS NOT NULL "
            "ORDER BY created_at DESC LIMIT 1",
            (user,),
        )
        if row is not None:
            pairs.append((int(row[0]), user))
    largest = await reader.fetchone(
        "SELECT guild_id FROM generations WHERE guild_id IS NOT NULL "
        "GROUP BY guild_id ORDER BY COUNT(*) DESC LIMIT 1"
    )
    assert largest is not None
    return pairs, int(largest[0])


async def disagreements(
    backends: Sequence[Opened], pairs: list[tuple[int, int]], largest: int
) -> list[str]:
    """The reports on which the backends disagree, over all time and 30 days."""
    guild, user = pairs[0]
    everything = window_for(Period.ALL, reports.NOW)
    checks = [
        ("the largest guild, all time", Scope(guild_id=largest), everything),
        ("a member, 30 days", Scope(user_id=user), WINDOW),
        ("a member in a guild, 30 days", Scope(guild, user), WINDOW),
        ("every row, all time", Scope(), everything),
    ]
    found = []
    for name, scope, window in checks:
        first, *others = [await build_report(b.ledger.reader, scope, window) for b in backends]
        if not all(same_report(first, other) for other in others):
            found.append(f"the backends' reports disagree on {name}")
    return found


async def time_commands(
    backends: Sequence[Opened], pairs: list[tuple[int, int]], largest: int
) -> dict[str, dict[str, list[float]]]:
    """Milliseconds per command and backend, the same members on each."""
    cases: list[tuple[str, Command, list[tuple[int, int]]]] = [
        ("/usage (a member, 30 days)", usage, pairs),
        ("/usage-admin user (a member in a guild, 30 days)", admin_user, pairs),
        (
            "/usage-admin server (the largest guild, 30 days)",
            admin_server,
            [(largest, 0)] * len(pairs),
        ),
    ]
    samples: dict[str, dict[str, list[float]]] = {}
    for name, command, arguments in cases:
        for opened in backends:
            # One untimed pass reads the pages in, as a running bot has them.
            await command(opened, *arguments[0])
            samples.setdefault(name, {})[opened.backend] = [
                await reports.timed(functools.partial(command, opened, g, u)) for g, u in arguments
            ]
    return samples


@dataclass
class ReportRun:
    """Part 2's figures."""

    build_s: dict[str, float] = field(default_factory=dict)
    size_mb: dict[str, float] = field(default_factory=dict)
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


async def compare_reports(sizes: Sizes, scratch: Path, cluster: PgCluster | None) -> ReportRun:
    """Build the rows into both backends, check they agree, time the commands on each."""
    run = ReportRun()
    path = scratch / "reports.db"
    progress(f"reports: building {sizes.rows:,} rows into SQLite (bench/reports.py's builder)")
    # The builder runs its own event loop (the bot's migrations): in a thread, off this one.
    run.build_s["SQLite"] = await asyncio.to_thread(
        reports.build,
        path,
        sizes.rows,
        sizes.users,
        reports.guild_ids(sizes.report_guilds),
        sizes.days,
    )
    run.size_mb["SQLite"] = sqlite_size_mb(path)
    urls = {"SQLite": sqlite_url(path)}
    if cluster is not None:
        progress(f"reports: copying {sizes.rows:,} rows into PostgreSQL")
        urls["PostgreSQL"] = await cluster.fresh_database()
        run.build_s["PostgreSQL"] = await build_postgres(urls["PostgreSQL"], sizes)
        run.size_mb["PostgreSQL"] = await postgres_size_mb(urls["PostgreSQL"])
    async with (
        opened_backend("SQLite", urls["SQLite"]) as sqlite_side,
        _maybe_postgres(urls.get("PostgreSQL")) as postgres_side,
    ):
        backends = [sqlite_side, *([postgres_side] if postgres_side else [])]
        for opened in backends:
            await reports.check_rows_counted(opened.ledger, sizes.rows)
        pairs, largest = await members_with_guilds(sqlite_side, sizes)
        run.problems = await disagreements(backends, pairs, largest)
        progress(f"reports: timing each command {sizes.repeats} times on each backend")
        run.samples = await time_commands(backends, pairs, largest)
    return run


@asynccontextmanager
async def _maybe_postgres(url: str | None) -> AsyncIterator[Opened | None]:
    if url is None:
        yield None
        return
    async with opened_backend("PostgreSQL", url) as opened:
        yield opened


def reports_table(run: ReportRun, sizes: Sizes) -> str:
    """Part 2 as Markdown: median and p95 on each backend, and their ratio."""
    backends = list(run.build_s)
    lines = [
        f"Reports on {sizes.rows:,} rows ({sizes.users:,} members, {sizes.report_guilds} guilds, "
        f"{sizes.days} days), {sizes.repeats} runs of each command after one untimed pass.",
        "",
        "| build | " + " | ".join(backends) + " |",
        "|---|" + "---:|" * len(backends),
        "| load, indexes, statistics (s) | "
        + " | ".join(f"{run.build_s[b]:.1f}" for b in backends)
        + " |",
        "| table and indexes on disk (MB) | "
        + " | ".join(f"{run.size_mb[b]:.0f}" for b in backends)
        + " |",
        "",
    ]
    header = "| command | " + " | ".join(f"{b} median / p95 ms" for b in backends)
    if len(backends) > 1:
        header += " | PostgreSQL / SQLite (median)"
    lines += [header + " |", "|---|" + "---:|" * (len(backends) + (len(backends) > 1))]
    for name, by_backend in run.samples.items():
        medians = {b: statistics.median(by_backend[b]) for b in backends}
        cells = [
            f"{medians[b]:.2f} / {percentile(sorted(by_backend[b]), 0.95):.2f}" for b in backends
        ]
        if len(backends) > 1:
            cells.append(f"{medians['PostgreSQL'] / medians['SQLite']:.2f}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The cluster, the machine, the run
# --------------------------------------------------------------------------------------------


@contextmanager
def postgres_cluster() -> Iterator[PgCluster | None]:
    """tests/pg.py's throwaway cluster for the block, stopped and removed even on error.

    None, having said why, when PostgreSQL's binaries are missing (with CI=true tests/pg.py
    fails instead: CI must never pass by skipping).
    """
    folder = cluster_folder()
    try:
        try:
            cluster, data, bindir = start_cluster(folder)
        except pytest.skip.Exception as why:
            print(f"The PostgreSQL half is skipped: {why}")
            yield None
            return
        try:
            asyncio.run(cluster.prepare_template())
            yield cluster
        finally:
            stop_cluster(data, bindir)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def server_settings(cluster: PgCluster) -> dict[str, str]:
    connection = await asyncpg.connect(cluster.url())
    try:
        names = (
            "server_version",
            "fsync",
            "synchronous_commit",
            "shared_buffers",
            "work_mem",
            "max_parallel_workers_per_gather",
        )
        return {name: str(await connection.fetchval(f"SHOW {name}")) for name in names}
    finally:
        await connection.close()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_table(cluster: PgCluster | None) -> str:
    """The machine and the versions, as Markdown."""
    import aiosqlite

    lines = [
        "| machine | |",
        "|---|---|",
        f"| CPU | {os.cpu_count()} cores, {cpu_model()} |",
        f"| OS | {platform.platform()} |",
        f"| Python | {platform.python_version()} |",
        f"| SQLite | {sqlite3.sqlite_version} (aiosqlite {aiosqlite.__version__}), WAL, "
        "synchronous=NORMAL |",
    ]
    if cluster is None:
        lines.append("| PostgreSQL | not installed: skipped |")
    else:
        s = asyncio.run(server_settings(cluster))
        lines.append(
            f"| PostgreSQL | {s['server_version']} (asyncpg {asyncpg.__version__}), same "
            f"machine; fsync={s['fsync']}, synchronous_commit={s['synchronous_commit']}, "
            f"shared_buffers={s['shared_buffers']}, work_mem={s['work_mem']}, "
            f"max_parallel_workers_per_gather={s['max_parallel_workers_per_gather']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Both parts, their tables, and 1 if any check failed."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.backends",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--smoke", action="store_true", help="every step tiny; judges nothing")
    parser.add_argument("--seconds", type=float, default=Sizes.seconds, help="per load run")
    parser.add_argument("--rows", type=int, default=Sizes.rows, help="rows for the reports")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else replace(Sizes(), seconds=args.seconds, rows=args.rows)
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench-backends-") as scratch,
        postgres_cluster() as cluster,
    ):
        print(machine_table(cluster))
        print()
        loads = reservation_results(sizes, Path(scratch), cluster)
        print(loads_table(loads, sizes))
        print()
        print(exactness_line(loads))
        print()
        run = asyncio.run(compare_reports(sizes, Path(scratch), cluster))
        print(reports_table(run, sizes))
    problems = load_problems(loads) + run.problems
    print()
    if args.smoke:
        print("Smoke run: tiny sizes, the figures mean nothing.")
    print(f"Whole run: {time.perf_counter() - started:.0f} s.")
    for problem in problems:
        print(f"error: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
