"""The usage ledger on real SQLite files: migrations, rows, the quota, reports."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import pytest

from bot.ledger.migrations import SCHEMA_VERSION, SchemaTooNew, migrate
from bot.ledger.periods import Period
from bot.ledger.reports import Report, Scope, build_report, window_for
from bot.ledger.store import NewGeneration, QuotaExceeded, UsageLedger, connect, open_ledger


class Clock:
    """A settable clock for the ledger."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 21, 12, 0, tzinfo=UTC))


@pytest.fixture
async def ledger(tmp_path: Path, clock: Clock) -> AsyncIterator[UsageLedger]:
    async with open_ledger(tmp_path / "sub" / "usage.db", clock) as opened:
        yield opened


async def user_report(ledger: UsageLedger, user_id: int, period: Period) -> Report:
    """The report /usage shows, over the ledger's own connection and clock."""
    window = window_for(period, ledger.now())
    return await build_report(ledger.connection, Scope(user_id=user_id), window)


def generation(user_id: int = 1, n: int = 1, model: str = "gpt-image-1") -> NewGeneration:
    return NewGeneration(
        user_id=user_id,
        guild_id=10,
        channel_id=20,
        model=model,
        size="1024x1024",
        quality="auto",
        n_requested=n,
        request_id="req",
    )


async def test_migrates_an_empty_file_and_creates_its_folder(tmp_path: Path) -> None:
    """A new file gets the whole schema and its version."""
    path = tmp_path / "nested" / "usage.db"
    async with open_ledger(path):
        pass
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"generations", "meta", "generations_by_user", "generations_by_guild"} <= tables


async def test_reopening_an_existing_file_keeps_its_rows(tmp_path: Path, clock: Clock) -> None:
    """Migrations run once; a restart sees the rows of the last run."""
    path = tmp_path / "usage.db"
    async with open_ledger(path, clock) as first:
        row = await first.reserve(generation(), 0)
        await first.complete(
            row, images_delivered=1, latency_ms=5, input_tokens=1, output_tokens=2, total_tokens=3
        )
    async with open_ledger(path, clock) as second:
        report = await user_report(second, 1, Period.ALL)
    totals = report.totals
    assert (totals.images, totals.requests, totals.total_tokens) == (1, 1, 3)


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file from a newer bot is not touched."""
    path = tmp_path / "usage.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    async with aiosqlite.connect(path) as db:
        with pytest.raises(SchemaTooNew):
            await migrate(db)


async def test_rows_carry_every_column(ledger: UsageLedger) -> None:
    """A completed generation stores what the issue lists."""
    row = await ledger.reserve(generation(n=2), 0)
    await ledger.complete(
        row,
        images_delivered=2,
        latency_ms=1234,
        input_tokens=16,
        output_tokens=208,
        total_tokens=224,
    )
    async with ledger.connection.execute(
        "SELECT created_at, user_id, guild_id, channel_id, model, size, quality, n_requested, "
        "images_delivered, status, error_code, latency_ms, input_tokens, output_tokens, "
        "total_tokens FROM generations"
    ) as cursor:
        stored = await cursor.fetchone()
    assert stored is not None
    assert tuple(stored) == (
        "2026-11-21T12:00:00.000000Z",
        1,
        10,
        20,
        "gpt-image-1",
        "1024x1024",
        "auto",
        2,
        2,
        "ok",
        None,
        1234,
        16,
        208,
        224,
    )


async def test_quota_counts_pending_and_delivered_not_failed(ledger: UsageLedger) -> None:
    """Failures give their reservation back; pending ones hold it."""
    ok = await ledger.reserve(generation(n=2), 5)
    await ledger.complete(
        ok,
        images_delivered=2,
        latency_ms=1,
        input_tokens=None,
        output_tokens=None,
        total_tokens=None,
    )
    failed = await ledger.reserve(generation(n=3), 5)
    await ledger.fail(failed, error_code="timeout", error_message="slow", latency_ms=9)
    await ledger.reserve(generation(n=3), 5)  # pending: 2 + 3 = 5
    assert await ledger.images_today(1) == 5
    with pytest.raises(QuotaExceeded) as caught:
        await ledger.reserve(generation(n=1), 5)
    assert (caught.value.limit, caught.value.used) == (5, 5)
    assert caught.value.resets_at == datetime(2026, 11, 22, tzinfo=UTC)
    assert await ledger.images_today(2) == 0  # another user is unaffected


async def test_quota_resets_at_midnight_utc(ledger: UsageLedger, clock: Clock) -> None:
    """Yesterday's images do not count today."""
    clock.now = datetime(2026, 11, 21, 23, 59, 59, tzinfo=UTC)
    await ledger.reserve(generation(n=3), 3)
    with pytest.raises(QuotaExceeded):
        await ledger.reserve(generation(), 3)
    clock.now = datetime(2026, 11, 22, 0, 0, 0, tzinfo=UTC)
    await ledger.reserve(generation(n=3), 3)


async def test_concurrent_reservations_cannot_exceed_the_limit(ledger: UsageLedger) -> None:
    """Twenty simultaneous requests of one user against a limit of 7: exactly 7 pass."""
    results = await asyncio.gather(
        *(ledger.reserve(generation(), 7) for _ in range(20)), return_exceptions=True
    )
    passed = [result for result in results if isinstance(result, int)]
    refused = [result for result in results if isinstance(result, QuotaExceeded)]
    assert (len(passed), len(refused)) == (7, 13)


async def test_concurrent_reservations_from_two_connections(tmp_path: Path, clock: Clock) -> None:
    """Even two processes' connections cannot overshoot: the check is inside the insert."""
    path = tmp_path / "usage.db"
    first_db = await connect(path)
    second_db = await connect(path)
    try:
        first, second = UsageLedger(first_db, clock), UsageLedger(second_db, clock)
        results = await asyncio.gather(
            *(ledger.reserve(generation(), 5) for _ in range(10) for ledger in (first, second)),
            return_exceptions=True,
        )
    finally:
        await first_db.close()
        await second_db.close()
    assert sum(isinstance(result, int) for result in results) == 5


async def test_release_and_interrupt(ledger: UsageLedger) -> None:
    """A released reservation disappears; an interrupted one stays but costs nothing."""
    released = await ledger.reserve(generation(n=2), 0)
    await ledger.release(released)
    interrupted = await ledger.reserve(generation(n=2), 0)
    await ledger.interrupt(interrupted, latency_ms=3)
    totals = (await user_report(ledger, 1, Period.ALL)).totals
    assert (totals.requests, totals.failures) == (1, 1)
    assert await ledger.images_today(1) == 0


async def test_stale_pending_rows_are_marked_interrupted(ledger: UsageLedger) -> None:
    """Rows a dead process left pending stop holding quota at start-up."""
    await ledger.reserve(generation(n=4), 0)
    assert await ledger.mark_stale_pending() == 1
    assert await ledger.images_today(1) == 0
    async with ledger.connection.execute("SELECT status FROM generations") as cursor:
        assert [row[0] for row in await cursor.fetchall()] == ["interrupted"]


async def test_user_report_numbers(ledger: UsageLedger, clock: Clock) -> None:
    """Images, requests, failures, by model and tokens, hand-computed, within the period."""
    start = clock.now

    async def add(
        days_ago: float, model: str, images: int, tokens: int | None, ok: bool = True
    ) -> None:
        clock.now = start - timedelta(days=days_ago)
        row = await ledger.reserve(generation(model=model, n=max(images, 1)), 0)
        if ok:
            await ledger.complete(
                row,
                images_delivered=images,
                latency_ms=1,
                input_tokens=tokens,
                output_tokens=tokens,
                total_tokens=tokens * 2 if tokens else None,
            )
        else:
            await ledger.fail(row, error_code="bad_request", error_message="no", latency_ms=1)

    await add(0, "gpt-image-1", 2, 10)
    await add(0.1, "dall-e-3", 1, None)
    await add(3, "gpt-image-1", 1, 5)
    await add(3, "dall-e-3", 1, None, ok=False)
    await add(20, "dall-e-2", 4, None)
    await add(40, "dall-e-2", 9, None)
    clock.now = start

    week = await user_report(ledger, 1, Period.DAYS_7)
    assert (week.totals.images, week.totals.requests, week.totals.failures) == (4, 4, 1)
    assert [(m.model, m.images, m.requests) for m in week.by_model] == [
        ("gpt-image-1", 3, 2),
        ("dall-e-3", 1, 2),
    ]
    tokens = (week.totals.input_tokens, week.totals.output_tokens, week.totals.total_tokens)
    assert tokens == (15, 15, 30)
    assert await ledger.images_today(1) == 3

    month = await user_report(ledger, 1, Period.DAYS_30)
    assert (month.totals.images, month.totals.requests) == (8, 5)
    everything = await user_report(ledger, 1, Period.ALL)
    assert everything.totals.images == 17
    today = await user_report(ledger, 1, Period.TODAY)
    assert (today.totals.images, today.totals.requests) == (3, 2)


async def test_meta_round_trip(ledger: UsageLedger) -> None:
    """Bookkeeping values are stored and replaced."""
    assert await ledger.get_meta("k") is None
    await ledger.set_meta("k", "1")
    await ledger.set_meta("k", "2")
    assert await ledger.get_meta("k") == "2"
