"""The usage ledger's reads and writes: reservations, completions, reports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import aiosqlite

from bot.ledger.limits import BudgetExhausted, QuotaExceeded
from bot.ledger.migrations import migrate
from bot.ledger.periods import day_start, next_reset, to_db_time, utc_now

# QuotaExceeded lives with the other refusals in limits.py; importing it from here still works.
__all__ = [
    "NewGeneration",
    "QuotaExceeded",
    "UsageLedger",
    "connect",
    "open_ledger",
]

_ERROR_MESSAGE_LIMIT: Final = 1000

# Images counted against a member's daily limit since :day_start: delivered and pending ones,
# in one guild when :scope_guild is set (a server with its own limit counts only its own
# images), everywhere otherwise. Images made in a guild before an admin gave the member's day
# back there (quota_resets) no longer count; the rows stay for reports and cost.
_QUOTA_USED: Final = (
    "(SELECT COALESCE(SUM(g.quota_images), 0) FROM generations AS g "
    "WHERE g.user_id = :user_id AND g.created_at >= :day_start "
    "AND (:scope_guild IS NULL OR g.guild_id = :scope_guild) "
    "AND NOT EXISTS (SELECT 1 FROM quota_resets AS r WHERE r.guild_id = g.guild_id "
    "AND r.user_id = g.user_id AND r.reset_at > g.created_at))"
)
# A guild's estimated spend since :day_start, on generations that delivered.
_SPENT_TODAY: Final = (
    "(SELECT COALESCE(SUM(cost_usd), 0) FROM generations "
    "WHERE guild_id = :guild_id AND created_at >= :day_start AND status = 'ok')"
)
_INSERT_PENDING: Final = (
    "INSERT INTO generations (created_at, user_id, guild_id, channel_id, model, size, "
    "quality, n_requested, status, request_id) "
    "SELECT :created_at, :user_id, :guild_id, :channel_id, :model, :size, :quality, :n, "
    "'pending', :request_id "
)
# Composed once, at import, from the constants above: no value ever enters the SQL text.
# The checks and the insert are one statement, so concurrent requests cannot both slip under.
_RESERVE: Final = (
    _INSERT_PENDING
    + "WHERE (:daily_limit = 0 OR "
    + _QUOTA_USED
    + " + :n <= :daily_limit) AND (:budget IS NULL OR "
    + _SPENT_TODAY
    + " < :budget)"
)
_SELECT_QUOTA_USED: Final = "SELECT " + _QUOTA_USED
_SELECT_SPENT_TODAY: Final = "SELECT " + _SPENT_TODAY


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

    async def images_today(self, user_id: int, guild_id: int | None = None) -> int:
        """Images counted against the user's allowance today (UTC): in `guild_id`, or everywhere."""
        params = {
            "user_id": user_id,
            "scope_guild": guild_id,
            "day_start": to_db_time(day_start(self.now())),
        }
        async with self._db.execute(_SELECT_QUOTA_USED, params) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def spent_today(self, guild_id: int) -> float:
        """The guild's estimated spend today (UTC) in US dollars, delivered generations only."""
        params = {"guild_id": guild_id, "day_start": to_db_time(day_start(self.now()))}
        async with self._db.execute(_SELECT_SPENT_TODAY, params) as cursor:
            row = await cursor.fetchone()
        return float(row[0]) if row else 0.0

    async def reserve(
        self,
        entry: NewGeneration,
        daily_limit: int,
        *,
        guild_scoped: bool = False,
        daily_budget_usd: float | None = None,
    ) -> int:
        """Write the pending row if the limits allow it; return its id or raise the refusal.

        `daily_limit` (0 = none) counts the user's images today everywhere, or only in the
        entry's guild when `guild_scoped`; `daily_budget_usd` refuses once the guild's
        estimated spend today has reached it. Raises QuotaExceeded or BudgetExhausted.
        """
        now = self.now()
        scope_guild = entry.guild_id if guild_scoped else None
        budget = daily_budget_usd if entry.guild_id is not None else None
        cursor = await self._db.execute(
            _RESERVE,
            {
                "created_at": to_db_time(now),
                "user_id": entry.user_id,
                "guild_id": entry.guild_id,
                "channel_id": entry.channel_id,
                "model": entry.model,
                "size": entry.size,
                "quality": entry.quality,
                "n": entry.n_requested,
                "request_id": entry.request_id,
                "daily_limit": daily_limit,
                "scope_guild": scope_guild,
                "day_start": to_db_time(day_start(now)),
                "budget": budget,
            },
        )
        if cursor.rowcount == 1 and cursor.lastrowid is not None:
            return cursor.lastrowid
        used = await self.images_today(entry.user_id, scope_guild)
        if (
            budget is not None
            and entry.guild_id is not None
            and (daily_limit == 0 or used + entry.n_requested <= daily_limit)
        ):
            spent = await self.spent_today(entry.guild_id)
            raise BudgetExhausted(budget, spent, next_reset(now))
        raise QuotaExceeded(
            daily_limit,
            used,
            entry.n_requested,
            next_reset(now),
            server_limit=guild_scoped,
        )

    async def complete(
        self,
        row_id: int,
        *,
        images_delivered: int,
        latency_ms: int,
        input_tokens: int | None,
        output_tokens: int | None,
        total_tokens: int | None,
        cost_usd: float | None = None,
        price_source: str | None = None,
        price_as_of: str | None = None,
    ) -> None:
        """Record a generation that delivered its images, with its estimated cost."""
        await self._db.execute(
            "UPDATE generations SET status = 'ok', images_delivered = ?, latency_ms = ?, "
            "input_tokens = ?, output_tokens = ?, total_tokens = ?, cost_usd = ?, "
            "price_source = ?, price_as_of = ? WHERE id = ?",
            (
                images_delivered,
                latency_ms,
                input_tokens,
                output_tokens,
                total_tokens,
                cost_usd,
                price_source,
                price_as_of,
                row_id,
            ),
        )

    async def fail(
        self, row_id: int, *, error_code: str, error_message: str, latency_ms: int | None
    ) -> None:
        """Record a failed generation; it no longer counts against the quota, and costs nothing."""
        await self._db.execute(
            "UPDATE generations SET status = 'failed', images_delivered = 0, error_code = ?, "
            "error_message = ?, latency_ms = ?, cost_usd = NULL WHERE id = ?",
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

    async def price_cache(self) -> dict[str, tuple[str, str]]:
        """The cached catalog prices: model -> (price JSON, fetched_at)."""
        async with self._db.execute("SELECT model, price, fetched_at FROM price_cache") as cursor:
            rows = await cursor.fetchall()
        return {str(row[0]): (str(row[1]), str(row[2])) for row in rows}

    async def save_price_cache(self, prices: Mapping[str, str], fetched_at: datetime) -> None:
        """Replace the cached catalog prices with a fresh fetch (model -> price JSON)."""
        stamp = to_db_time(fetched_at)
        # Upsert the fresh ones, then drop models the catalog no longer prices: each statement
        # leaves a usable cache, so no transaction is needed on the shared connection.
        await self._db.executemany(
            "INSERT INTO price_cache (model, price, fetched_at) VALUES (?, ?, ?) "
            "ON CONFLICT (model) DO UPDATE SET price = excluded.price, "
            "fetched_at = excluded.fetched_at",
            [(model, price, stamp) for model, price in prices.items()],
        )
        await self._db.execute("DELETE FROM price_cache WHERE fetched_at < ?", (stamp,))

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
