"""The usage ledger on real SQLite files: migrations, rows, the quota, reports."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite
import pytest

from bot.ledger.db import SqliteDatabase
from bot.ledger.limits import Ceilings, QuotaExceeded, Whose
from bot.ledger.migrations import SCHEMA_VERSION, SchemaTooNew, migrate
from bot.ledger.periods import Period
from bot.ledger.reports import Report, Scope, build_report, window_for
from bot.ledger.store import FinalStatus, UsageLedger, connect, open_ledger
from tests.conftest import Clock, add_row, answer, generation, write_row


def limit(images: int) -> Ceilings:
    """The operator's per-member daily image limit alone."""
    return Ceilings(operator_daily_images=images)


async def user_report(ledger: UsageLedger, user_id: int, period: Period) -> Report:
    """The report /usage shows, over the ledger's read-only connection and clock."""
    window = window_for(period, ledger.now())
    return await build_report(ledger.reader, Scope(user_id=user_id), window)


async def images_today(ledger: UsageLedger, user_id: int) -> int:
    """What the operator's daily image limit counts for the member today."""
    return (await ledger.counts(user_id, None)).operator_images


async def test_migrates_an_empty_file_and_creates_its_folder(tmp_path: Path) -> None:
    """A new file gets the whole schema and its version."""
    path = tmp_path / "nested" / "usage.db"
    async with open_ledger(path):
        pass
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {
        "generations",
        "meta",
        "generations_by_user",
        "generations_by_guild",
        "generations_by_time",
        "generations_pending",
    } <= tables


async def test_reopening_an_existing_file_keeps_its_rows(tmp_path: Path, clock: Clock) -> None:
    """Migrations run once; a restart sees the rows of the last run."""
    path = tmp_path / "usage.db"
    async with open_ledger(path, clock) as first:
        await add_row(first, generation(), tokens=(1, 2))
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


async def test_rows_carry_every_column(ledger: UsageLedger, clock: Clock) -> None:
    """A delivered generation stores what the issue lists, its reservation and its trace ids."""
    row = await ledger.reserve(generation(n=2, reserved_usd=0.3), Ceilings())
    await ledger.record_answer(
        row, answer(0.25, as_of="2026-11-20", tokens=(16, 208), attempts=2, upstream_request_id="u")
    )
    clock.now += timedelta(seconds=3)
    assert await ledger.finish(row, FinalStatus("delivered", images_delivered=2), latency_ms=1234)
    stored = await ledger.connection.fetchone(
        "SELECT created_at, user_id, guild_id, channel_id, model, size, quality, n_requested, "
        "images_delivered, status, error_code, latency_ms, input_tokens, output_tokens, "
        "total_tokens, request_id, billed, attempts, upstream_request_id, reserved_usd, "
        "cost_usd, price_source, price_as_of, finished_at, quota_images, spend_usd "
        "FROM generations"
    )
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
        "delivered",
        None,
        1234,
        16,
        208,
        224,
        "req",
        1,
        2,
        "u",
        0.3,
        0.25,
        "builtin",
        "2026-11-20",
        "2026-11-21T12:00:03.000000Z",
        2,
        0.25,
    )
    assert await ledger.status_of(row) == "delivered"
    assert await ledger.status_of(row + 1) is None


async def test_quota_counts_pending_and_delivered_not_failed(ledger: UsageLedger) -> None:
    """Failures give their reservation back; pending ones hold it."""
    await add_row(ledger, generation(n=2), ceilings=limit(5))
    await add_row(ledger, generation(n=3), "failed", ceilings=limit(5))
    await add_row(ledger, generation(n=3), "pending", ceilings=limit(5))  # 2 + 3 = 5
    assert await images_today(ledger, 1) == 5
    with pytest.raises(QuotaExceeded) as caught:
        await ledger.reserve(generation(n=1), limit(5))
    assert (caught.value.limit, caught.value.used, caught.value.requested) == (5, 5, 1)
    assert caught.value.whose is Whose.OPERATOR
    assert caught.value.resets_at == datetime(2026, 11, 22, tzinfo=UTC)
    assert await images_today(ledger, 2) == 0  # another user is unaffected
    await ledger.reserve(generation(user_id=2, n=5), limit(5))


async def test_quota_resets_at_midnight_utc(ledger: UsageLedger, clock: Clock) -> None:
    """Yesterday's images do not count today."""
    clock.now = datetime(2026, 11, 21, 23, 59, 59, tzinfo=UTC)
    await ledger.reserve(generation(n=3), limit(3))
    with pytest.raises(QuotaExceeded):
        await ledger.reserve(generation(), limit(3))
    clock.now = datetime(2026, 11, 22, 0, 0, 0, tzinfo=UTC)
    await ledger.reserve(generation(n=3), limit(3))


async def test_concurrent_reservations_cannot_exceed_the_limit(ledger: UsageLedger) -> None:
    """Twenty simultaneous requests of one user against a limit of 7: exactly 7 pass."""
    results = await asyncio.gather(
        *(ledger.reserve(generation(), limit(7)) for _ in range(20)), return_exceptions=True
    )
    passed = [result for result in results if isinstance(result, int)]
    refused = [result for result in results if isinstance(result, QuotaExceeded)]
    assert (len(passed), len(refused)) == (7, 13)


async def test_concurrent_reservations_from_two_connections(tmp_path: Path, clock: Clock) -> None:
    """Even two connections cannot overshoot: the check is inside the insert.

    (The process lock keeps a second bot off the file; two bare connections stand for a
    writer that ignores it.) With busy_timeout 0 the loser of each write lock retries.
    """
    path = tmp_path / "usage.db"
    first_db = await connect(path)
    second_db = await connect(path)
    try:
        first = UsageLedger(SqliteDatabase(first_db, path), clock)
        second = UsageLedger(SqliteDatabase(second_db, path), clock)
        results = await asyncio.gather(
            *(
                ledger.reserve(generation(), limit(5))
                for _ in range(10)
                for ledger in (first, second)
            ),
            return_exceptions=True,
        )
    finally:
        await first_db.close()
        await second_db.close()
    assert sum(isinstance(result, int) for result in results) == 5
    assert sum(isinstance(result, QuotaExceeded) for result in results) == 15


async def test_interrupted_generations_are_requests_not_images(ledger: UsageLedger) -> None:
    """One interrupted before upstream answered stays as a request and a failure, costs no image.

    (The old `release`, which deleted a reservation, is gone: every reserved row now ends in
    a final status and stays.)
    """
    await add_row(ledger, generation(n=2), "interrupted")
    totals = (await user_report(ledger, 1, Period.ALL)).totals
    assert (totals.requests, totals.failures, totals.images) == (1, 1, 0)
    assert await images_today(ledger, 1) == 0


async def test_stale_pending_rows_are_marked_interrupted(ledger: UsageLedger) -> None:
    """Rows a dead process left pending stop holding quota at start-up."""
    await ledger.reserve(generation(n=4), Ceilings())
    assert await ledger.mark_stale_pending() == 1
    assert await images_today(ledger, 1) == 0
    rows = await ledger.connection.execute_fetchall("SELECT status FROM generations")
    assert [row[0] for row in rows] == ["interrupted"]


async def test_user_report_numbers(ledger: UsageLedger, clock: Clock) -> None:
    """Images, requests, failures, by model and tokens, hand-computed, within the period."""
    start = clock.now

    async def add(
        days_ago: float, model: str, images: int, tokens: int | None, ok: bool = True
    ) -> None:
        clock.now = start - timedelta(days=days_ago)
        await add_row(
            ledger,
            generation(model=model, n=max(images, 1)),
            "delivered" if ok else "failed",
            received=images if ok else None,
            tokens=(tokens, tokens) if tokens else None,
        )

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
    assert await images_today(ledger, 1) == 3

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


async def test_price_cache_round_trip(ledger: UsageLedger) -> None:
    """A fresh fetch replaces the cache: new prices upserted, models no longer priced dropped."""
    first = datetime(2026, 11, 20, tzinfo=UTC)
    await ledger.save_price_cache({"a": "1", "b": "2"}, first)
    await ledger.save_price_cache({"b": "3"}, first + timedelta(days=1))
    assert await ledger.price_cache() == {"b": ("3", "2026-11-21T00:00:00.000000Z")}


async def test_write_row_helper_writes_through_the_public_api(ledger: UsageLedger) -> None:
    """The shared helper's pending row is a plain reservation the ledger can still finish."""
    row = await write_row(ledger, generation(), None)
    assert await ledger.status_of(row) == "pending"
    assert await ledger.finish(row, FinalStatus("interrupted"), latency_ms=1)
