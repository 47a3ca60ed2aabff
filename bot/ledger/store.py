"""The usage ledger's reads and writes: reservations, completions, reports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import aiosqlite

from bot.ledger.migrations import migrate
from bot.ledger.periods import Period, day_start, next_reset, to_db_time, utc_now

_ERROR_MESSAGE_LIMIT: Final = 1000


class QuotaExceeded(Exception):
    """The user's daily image allowance would be exceeded."""

    def __init__(self, limit: int, used: int, requested: int, resets_at: datetime) -> None:
        super().__init__(f"daily limit {limit} reached (used {used}, requested {requested})")
        self.limit = limit
        self.used = used
        self.requested = requested
        self.resets_at = resets_at


@dataclass(frozen=True, slots=True)
class NewGeneration:
    """What is known about a generation before it is sent upstream."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    model: str
    size: str
    quality: str
    n_requested: int
    request_id: str


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """One model's line in a report."""

    model: str
    images: int
    requests: int


@dataclass(frozen=True, slots=True)
class UsageReport:
    """A member's usage over a period."""

    period: Period
    images: int
    requests: int
    failures: int
    by_model: tuple[ModelUsage, ...]
    input_tokens: int
    output_tokens: int
    total_tokens: int
    images_today: int
    daily_limit: int
    resets_at: datetime

    @property
    def remaining_today(self) -> int | None:
        """Images left today, or None when there is no limit."""
        if self.daily_limit == 0:
            return None
        return max(self.daily_limit - self.images_today, 0)


class UsageLedger:
    """The one database connection of the process and every query the bot makes on it."""

    def __init__(self, db: aiosqlite.Connection, clock: Callable[[], datetime] = utc_now) -> None:
        self._db = db
        self._clock = clock

    @property
    def connection(self) -> aiosqlite.Connection:
        """The underlying connection, for modules that add their own queries."""
        return self._db

    def now(self) -> datetime:
        """The ledger's notion of now (a test can set the clock)."""
        return self._clock()

    async def mark_stale_pending(self) -> int:
        """At start-up: rows still pending belong to a process that died; mark them interrupted."""
        cursor = await self._db.execute(
            "UPDATE generations SET status = 'interrupted', error_code = 'interrupted', "
            "error_message = 'the bot stopped before this generation finished' "
            "WHERE status = 'pending'"
        )
        return cursor.rowcount

    async def images_today(self, user_id: int) -> int:
        """Images counted against the user's allowance today (UTC)."""
        since = to_db_time(day_start(self.now()))
        async with self._db.execute(
            "SELECT COALESCE(SUM(quota_images), 0) FROM generations "
            "WHERE user_id = ? AND created_at >= ?",
            (user_id, since),
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def reserve(self, entry: NewGeneration, daily_limit: int) -> int:
        """Write the pending row if the allowance has room; return its id or raise QuotaExceeded.

        The check and the insert are one statement, so concurrent requests of one user
        cannot both slip under the limit.
        """
        now = self.now()
        cursor = await self._db.execute(
            "INSERT INTO generations (created_at, user_id, guild_id, channel_id, model, size, "
            "quality, n_requested, status, request_id) "
            "SELECT ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ? "
            "WHERE ? = 0 OR (SELECT COALESCE(SUM(quota_images), 0) FROM generations "
            "WHERE user_id = ? AND created_at >= ?) + ? <= ?",
            (
                to_db_time(now),
                entry.user_id,
                entry.guild_id,
                entry.channel_id,
                entry.model,
                entry.size,
                entry.quality,
                entry.n_requested,
                entry.request_id,
                daily_limit,
                entry.user_id,
                to_db_time(day_start(now)),
                entry.n_requested,
                daily_limit,
            ),
        )
        if cursor.rowcount == 1 and cursor.lastrowid is not None:
            return cursor.lastrowid
        used = await self.images_today(entry.user_id)
        raise QuotaExceeded(daily_limit, used, entry.n_requested, next_reset(now))

    async def complete(
        self,
        row_id: int,
        *,
        images_delivered: int,
        latency_ms: int,
        input_tokens: int | None,
        output_tokens: int | None,
        total_tokens: int | None,
    ) -> None:
        """Record a generation that delivered its images."""
        await self._db.execute(
            "UPDATE generations SET status = 'ok', images_delivered = ?, latency_ms = ?, "
            "input_tokens = ?, output_tokens = ?, total_tokens = ? WHERE id = ?",
            (images_delivered, latency_ms, input_tokens, output_tokens, total_tokens, row_id),
        )

    async def fail(
        self, row_id: int, *, error_code: str, error_message: str, latency_ms: int | None
    ) -> None:
        """Record a failed generation; it no longer counts against the quota."""
        await self._db.execute(
            "UPDATE generations SET status = 'failed', images_delivered = 0, error_code = ?, "
            "error_message = ?, latency_ms = ? WHERE id = ?",
            (error_code, error_message[:_ERROR_MESSAGE_LIMIT], latency_ms, row_id),
        )

    async def interrupt(self, row_id: int, *, latency_ms: int | None) -> None:
        """Record a generation cut short by a shutdown; like a failure it costs no quota."""
        await self._db.execute(
            "UPDATE generations SET status = 'interrupted', error_code = 'interrupted', "
            "error_message = 'the bot stopped before this generation finished', latency_ms = ? "
            "WHERE id = ? AND status = 'pending'",
            (latency_ms, row_id),
        )

    async def release(self, row_id: int) -> None:
        """Drop a reservation whose request never reached upstream."""
        await self._db.execute(
            "DELETE FROM generations WHERE id = ? AND status = 'pending'", (row_id,)
        )

    async def user_report(self, user_id: int, period: Period, daily_limit: int) -> UsageReport:
        """The member's numbers for the period, and what is left of today's allowance."""
        now = self.now()
        start = period.start(now)
        since = to_db_time(start) if start else ""
        async with self._db.execute(
            "SELECT model, "
            "SUM(CASE WHEN status = 'ok' THEN images_delivered ELSE 0 END), COUNT(*), "
            "SUM(CASE WHEN status IN ('failed', 'interrupted') THEN 1 ELSE 0 END), "
            "COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
            "COALESCE(SUM(total_tokens), 0) "
            "FROM generations WHERE user_id = ? AND created_at >= ? "
            "GROUP BY model ORDER BY 2 DESC, model",
            (user_id, since),
        ) as cursor:
            rows = list(await cursor.fetchall())
        return UsageReport(
            period=period,
            images=sum(int(row[1]) for row in rows),
            requests=sum(int(row[2]) for row in rows),
            failures=sum(int(row[3]) for row in rows),
            by_model=tuple(ModelUsage(str(row[0]), int(row[1]), int(row[2])) for row in rows),
            input_tokens=sum(int(row[4]) for row in rows),
            output_tokens=sum(int(row[5]) for row in rows),
            total_tokens=sum(int(row[6]) for row in rows),
            images_today=await self.images_today(user_id),
            daily_limit=daily_limit,
            resets_at=next_reset(now),
        )

    async def get_meta(self, key: str) -> str | None:
        """A stored bookkeeping value, such as the last synced command hash."""
        async with self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        """Store a bookkeeping value."""
        await self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


async def connect(path: Path) -> aiosqlite.Connection:
    """Open the database file (creating its folder), tuned for one writer and crash safety."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: every statement commits on its own unless a BEGIN says otherwise.
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode keeps committed rows through a process crash (kill -9).
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA busy_timeout = 5000")
        await db.execute("PRAGMA foreign_keys = ON")
        await migrate(db)
    except BaseException:
        await db.close()
        raise
    return db


@asynccontextmanager
async def open_ledger(
    path: Path, clock: Callable[[], datetime] = utc_now
) -> AsyncIterator[UsageLedger]:
    """Open the ledger for the life of the block, and close it after."""
    db = await connect(path)
    try:
        yield UsageLedger(db, clock)
    finally:
        await db.close()
