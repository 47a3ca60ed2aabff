"""Another process holding SQLite's write lock: waits happen on the event loop, never in SQLite.

A plain `sqlite3` connection holding BEGIN IMMEDIATE stands for a backup, a `sqlite3` shell
or any other writer. The ledger's connection runs with busy_timeout 0, so its one database
thread is never stuck in SQLite's own wait: a reservation gives up after RESERVE_LOCK_WAIT_S
with LedgerBusy while everything else keeps running, a final status waits until the lock
goes, and reads go on.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from bot.ledger.busy import LedgerBusy, is_busy, retry_busy
from bot.ledger.periods import Period
from bot.ledger.reports import Scope, build_report, window_for
from bot.ledger.store import RESERVE_LOCK_WAIT_S, FinalStatus, UsageLedger
from tests.conftest import NO_CEILINGS, add_row, answer, generation


@pytest.fixture
def ledger(sqlite_ledger: UsageLedger) -> UsageLedger:
    """SQLite's file locks are what this file is about: SQLite only (PostgreSQL's waits are
    in test_postgres.py)."""
    return sqlite_ledger


class WriteLock:
    """Another connection's write lock on the database, held until `release`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        self.held = True

    def release(self) -> None:
        if self.held:
            self.connection.execute("COMMIT")
            self.held = False


@contextmanager
def write_locked(path: Path) -> Iterator[WriteLock]:
    """Another connection holds the database's write lock until released or the block ends."""
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        lock = WriteLock(other)
        try:
            yield lock
        finally:
            lock.release()


class Ticker:
    """A coroutine that counts its turns on the event loop, every 10 ms, until stopped."""

    def __init__(self) -> None:
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.ticks += 1

    def __enter__(self) -> Ticker:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_a_reservation_gives_up_with_ledger_busy_without_blocking_the_loop(
    ledger: UsageLedger, ledger_path: Path
) -> None:
    """LedgerBusy after about RESERVE_LOCK_WAIT_S; meanwhile other coroutines keep running.

    The ticker would make no progress while the event loop was held, and a read on the same
    connection would wait behind a write stuck in SQLite's own busy wait.
    """
    existing = await add_row(ledger, generation())
    with write_locked(ledger_path), Ticker() as ticker:
        started = time.monotonic()
        reserve = asyncio.ensure_future(ledger.reserve(generation(), NO_CEILINGS))
        await asyncio.sleep(RESERVE_LOCK_WAIT_S / 3)
        ticks_while_waiting = ticker.ticks
        # The writer connection's thread is free between tries: a read on it goes through
        # while the reservation is still waiting for the lock.
        assert await ledger.status_of(existing) == "delivered"
        assert not reserve.done()
        with pytest.raises(LedgerBusy, match="locked"):
            await reserve
        waited = time.monotonic() - started
    assert waited >= RESERVE_LOCK_WAIT_S
    assert waited < RESERVE_LOCK_WAIT_S + 5  # it does give up (not FINISH_LOCK_WAIT_S)
    assert ticks_while_waiting >= 5
    assert ticker.ticks > ticks_while_waiting
    # Nothing was reserved, and the ledger works again once the lock is gone.
    rows = await ledger.connection.execute_fetchall("SELECT COUNT(*) FROM generations")
    assert list(rows) == [(1,)]
    await ledger.reserve(generation(), NO_CEILINGS)


async def test_a_reservation_waits_for_a_short_lock(ledger: UsageLedger, ledger_path: Path) -> None:
    """A lock released within RESERVE_LOCK_WAIT_S costs a wait, not a refusal."""
    with write_locked(ledger_path) as lock:
        reserve = asyncio.ensure_future(ledger.reserve(generation(), NO_CEILINGS))
        await asyncio.sleep(0.2)
        assert not reserve.done()
        lock.release()
        row = await reserve
    assert await ledger.status_of(row) == "pending"


@pytest.mark.parametrize("step", ["record_answer", "finish"])
async def test_settling_a_row_waits_for_the_lock_and_is_written(
    ledger: UsageLedger, ledger_path: Path, step: str
) -> None:
    """Upstream's answer and the final status wait past the reservation's wait, then succeed."""
    row = await ledger.reserve(generation(reserved_usd=0.5), NO_CEILINGS)
    if step == "finish":
        await ledger.record_answer(row, answer(0.2))
    with write_locked(ledger_path) as lock, Ticker() as ticker:
        if step == "finish":
            write = ledger.finish(row, FinalStatus("delivered", 1), latency_ms=5)
        else:
            write = ledger.record_answer(row, answer(0.2))
        settling = asyncio.ensure_future(write)
        await asyncio.sleep(RESERVE_LOCK_WAIT_S + 0.3)
        assert not settling.done()
        assert ticker.ticks >= 5
        lock.release()
        await asyncio.wait_for(settling, timeout=10)
    assert await ledger.status_of(row) == ("delivered" if step == "finish" else "pending")
    assert (await ledger.counts(1, 10)).user_spend_usd == pytest.approx(0.2)


async def test_the_reader_reads_while_another_process_holds_the_lock(
    ledger: UsageLedger, ledger_path: Path
) -> None:
    """Reports on the read-only connection do not wait for writers (WAL)."""
    await add_row(ledger, generation(n=2), cost=0.1)
    with write_locked(ledger_path) as lock:
        # Not yet committed, so invisible to every other connection.
        lock.connection.execute("INSERT INTO meta (key, value) VALUES ('uncommitted', 'x')")
        window = window_for(Period.ALL, ledger.now())
        report = await asyncio.wait_for(
            build_report(ledger.reader, Scope(guild_id=10), window), timeout=RESERVE_LOCK_WAIT_S
        )
        rows = await ledger.reader.execute_fetchall("SELECT key FROM meta")
    assert (report.totals.images, report.totals.requests) == (2, 1)
    assert list(rows) == []


async def test_the_reader_cannot_write(ledger: UsageLedger) -> None:
    """The reader is read-only: a report can never change the ledger."""
    with pytest.raises(sqlite3.OperationalError, match="readonly database"):
        await ledger.reader.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")


async def test_retry_busy_passes_other_errors_through_at_once() -> None:
    """Only "locked"/"busy" errors are retried; anything else is raised on the first try."""
    tries = 0

    async def broken() -> None:
        nonlocal tries
        tries += 1
        raise sqlite3.OperationalError("no such table: nowhere")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await retry_busy(broken, timeout_s=5)
    assert tries == 1
    assert is_busy(sqlite3.OperationalError("database is locked"))
    assert not is_busy(sqlite3.OperationalError("disk I/O error"))
