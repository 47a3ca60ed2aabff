"""The usage ledger's reads and writes: reservations, one final status per row, the cache."""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import aiosqlite

from bot.ledger.busy import LedgerBusy, retry_busy
from bot.ledger.db import Database, Dialect, SqliteDatabase
from bot.ledger.limits import BudgetExhausted, BudgetScope, Ceilings, QuotaExceeded, Whose
from bot.ledger.migrations import migrate
from bot.ledger.periods import day_start, next_reset, to_db_time, utc_now

__all__ = [
    "FinalStatus",
    "LedgerBusy",
    "LedgerInUse",
    "NewGeneration",
    "QuotaExceeded",
    "UpstreamAnswer",
    "UsageLedger",
    "connect",
    "open_ledger",
]

_ERROR_MESSAGE_LIMIT: Final = 1000
# The reservation runs before the interaction is acknowledged, within Discord's 3 s: it may
# wait this long for another process's write lock, then the member is told to try again.
RESERVE_LOCK_WAIT_S: Final = 1.2
# A final status must not be lost to a lock someone else holds: wait much longer for it.
FINISH_LOCK_WAIT_S: Final = 60.0
# Start-up (migrations, stale rows) and admin writes: nobody is waiting within 3 s.
SLOW_LOCK_WAIT_S: Final = 10.0

# On a shared database, a pending row this old belongs to a process that is gone for good (a
# generation's every timeout and retry end long before): any process's start may close it.
ABANDONED_AFTER: Final = timedelta(hours=6)
DEFAULT_INSTANCE_ID: Final = "default"

# The statuses a row can end in; see migration 3 for what each says.
FINAL_STATUSES: Final = frozenset({"delivered", "failed", "interrupted", "interrupted_delivery"})

# Images counted against the operator's per-member limit since :day_start: every server and
# DM, and no server's reset gives any of them back.
_OPERATOR_IMAGES: Final = (
    "(SELECT COALESCE(SUM(quota_images), 0) FROM generations "
    "WHERE user_id = :user_id AND created_at >= :day_start)"
)
# Images counted against a server's own per-member limit: that server's, except those made
# before an admin gave the member's day back there (the rows stay for reports and cost).
_SERVER_IMAGES: Final = (
    "(SELECT COALESCE(SUM(g.quota_images), 0) FROM generations AS g "
    "WHERE g.user_id = :user_id AND g.guild_id = :guild_id AND g.created_at >= :day_start "
    "AND NOT EXISTS (SELECT 1 FROM quota_resets AS r WHERE r.guild_id = g.guild_id "
    "AND r.user_id = g.user_id AND r.reset_at > g.created_at))"
)
# Spend since :day_start: billed calls at their cost, running ones at their reservation.
_USER_SPEND: Final = (
    "(SELECT COALESCE(SUM(spend_usd), 0) FROM generations "
    "WHERE user_id = :user_id AND created_at >= :day_start)"
)
_SERVER_SPEND: Final = (
    "(SELECT COALESCE(SUM(spend_usd), 0) FROM generations "
    "WHERE guild_id = :guild_id AND created_at >= :day_start)"
)
_BOT_SPEND: Final = (
    "(SELECT COALESCE(SUM(spend_usd), 0) FROM generations WHERE created_at >= :day_start)"
)


def _budget_ok(spend: str, budget: str) -> str:
    # Nothing more once a budget is reached, and never a request whose estimate passes it.
    return (
        f"(CAST({budget} AS DOUBLE PRECISION) IS NULL "
        f"OR ({spend} < {budget} AND {spend} + :reserved <= {budget}))"
    )


# Composed once, at import, from the constants above: no value ever enters the SQL text.
# The checks and the insert are one statement, so concurrent requests cannot both slip under
# on SQLite (one writer at a time); on PostgreSQL, `reserve` runs it under advisory locks.
# The casts give PostgreSQL each parameter's type where nothing around it says.
_RESERVE: Final = (
    "INSERT INTO generations (created_at, user_id, guild_id, channel_id, model, size, "
    "quality, n_requested, status, request_id, reserved_usd, options_json, parent_id, private, "
    "kind, reference_count, instance_id) "
    "SELECT CAST(:created_at AS TEXT), CAST(:user_id AS BIGINT), CAST(:guild_id AS BIGINT), "
    "CAST(:channel_id AS BIGINT), CAST(:model AS TEXT), CAST(:size AS TEXT), "
    "CAST(:quality AS TEXT), CAST(:n AS INTEGER), 'pending', CAST(:request_id AS TEXT), "
    "CAST(:reserved AS DOUBLE PRECISION), CAST(:options_json AS TEXT), "
    "CAST(:parent_id AS BIGINT), CAST(:private AS INTEGER), CAST(:kind AS TEXT), "
    "CAST(:reference_count AS INTEGER), CAST(:instance_id AS TEXT) "
    "WHERE (CAST(:operator_images AS BIGINT) IS NULL "
    "OR " + _OPERATOR_IMAGES + " + :n <= :operator_images) "
    "AND (CAST(:server_images AS BIGINT) IS NULL "
    "OR " + _SERVER_IMAGES + " + :n <= :server_images) "
    "AND " + _budget_ok(_USER_SPEND, ":user_budget") + " "
    "AND " + _budget_ok(_SERVER_SPEND, ":server_budget") + " "
    "AND " + _budget_ok(_BOT_SPEND, ":bot_budget")
)
_CLOSE_STALE: Final = (
    "UPDATE generations SET "
    "status = CASE billed WHEN 1 THEN 'interrupted_delivery' ELSE 'interrupted' END, "
    "error_code = 'interrupted', "
    "error_message = 'the bot stopped before this generation finished', "
    "finished_at = :now WHERE status = 'pending' "
)
_COUNTS: Final = "SELECT " + ", ".join(
    (_OPERATOR_IMAGES, _SERVER_IMAGES, _USER_SPEND, _SERVER_SPEND, _BOT_SPEND)
)


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
    reserved_usd: float = 0.0
    """The estimated cost reserved against every budget until the call is settled."""
    options_json: str | None = None
    """The validated options, to run the request again."""
    parent_id: int | None = None
    """The generation this one reran, if any."""
    private: bool = False
    kind: str = "generation"
    """'generation' (from text) or 'edit' (from reference images)."""
    reference_count: int = 0


@dataclass(frozen=True, slots=True)
class UpstreamAnswer:
    """What upstream's answer says, written while the row is still pending.

    From this moment the call is billed: a crash before the final status still leaves a row
    that the next start can mark as billed.
    """

    attempts: int
    upstream_request_id: str | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None
    price_source: str | None
    price_as_of: str | None


@dataclass(frozen=True, slots=True)
class FinalStatus:
    """The one final status of a row: what happened, and what the member received."""

    status: str
    images_delivered: int = 0
    error_code: str | None = None
    error_message: str | None = None
    attempts: int | None = None
    upstream_request_id: str | None = None
    answer: UpstreamAnswer | None = None
    """Upstream's answer again when the call was billed: the final write then carries the
    billing too, so it is not lost when `record_answer` could not be written."""
    revised_prompt: str | None = None
    result_channel_id: int | None = None
    result_message_id: int | None = None
    queue_ms: int | None = None
    upstream_ms: int | None = None
    upload_ms: int | None = None

    def __post_init__(self) -> None:
        if self.status not in FINAL_STATUSES:
            raise ValueError(f"not a final status: {self.status}")


@dataclass(frozen=True, slots=True)
class DailyCounts:
    """What today (UTC) counts so far against each daily limit for one member."""

    operator_images: int
    """The member's images across every server and DM."""
    server_images: int
    """The member's images in the server, after its resets (0 outside a server)."""
    user_spend_usd: float
    server_spend_usd: float
    bot_spend_usd: float


class LedgerInUse(RuntimeError):
    """Another bot process has this SQLite file open; the message says what to do."""

    def __init__(self, message: str, *, holder: str) -> None:
        super().__init__(message)
        self.holder = holder


class _ProcessLock:
    """An exclusive lock beside the database file for the life of one bot process.

    Two processes on one SQLite file would each take the other's rows in flight for stale
    ones at start-up and break the quota; PostgreSQL is the way to run several. flock is
    released by the kernel when the process dies, so a crash never leaves a stale lock.
    """

    def __init__(self, database: Path) -> None:
        self._path = database.with_name(database.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LedgerInUse(
                f"another imagine-bot process (pid {holder}) is using {self._path.with_suffix('')}"
                "; one SQLite file serves one process. Stop the other process, or give this "
                "one its own DATABASE_PATH.",
                holder=holder,
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _db_day(now: datetime) -> str:
    return to_db_time(day_start(now))


class UsageLedger:
    """The process's writer, a reader for reports, and every query of the generations.

    On SQLite these are two connections to one file; on PostgreSQL both are the pool.
    """

    def __init__(
        self,
        db: Database,
        clock: Callable[[], datetime] = utc_now,
        *,
        reader: Database | None = None,
        instance_id: str = DEFAULT_INSTANCE_ID,
    ) -> None:
        self._db = db
        self._reader = reader or db
        self._clock = clock
        self.instance_id = instance_id

    @property
    def connection(self) -> Database:
        """The writer, for modules that add their own writes (limits, prices)."""
        return self._db

    @property
    def reader(self) -> Database:
        """The reader: a long report on it never delays a reservation."""
        return self._reader

    def now(self) -> datetime:
        """The ledger's notion of now (a test can set the clock)."""
        return self._clock()

    async def mark_stale_pending(self) -> int:
        """At start-up: rows this instance left pending died with it; give each its end.

        A row whose call upstream had answered was billed: it ends `interrupted_delivery`,
        with its cost; the others end `interrupted`, free. One process owns a SQLite file, so
        there every pending row is this process's. On PostgreSQL only this instance's rows
        (its INSTANCE_ID), and any left pending longer than ABANDONED_AFTER by an instance
        that never came back: never the rows in flight of another live process.
        """
        now = self.now()
        if self._db.dialect is Dialect.POSTGRESQL:
            sql = _CLOSE_STALE + "AND (instance_id = :me OR created_at < :abandoned)"
            params = {
                "now": to_db_time(now),
                "me": self.instance_id,
                "abandoned": to_db_time(now - ABANDONED_AFTER),
            }
        else:
            sql, params = _CLOSE_STALE, {"now": to_db_time(now)}

        async def write() -> int:
            return await self._db.execute(sql, params)

        return await retry_busy(write, timeout_s=SLOW_LOCK_WAIT_S, what="stale rows")

    async def counts(self, user_id: int, guild_id: int | None) -> DailyCounts:
        """Today's counts for the member: their images (both scopes) and the spends."""
        params = {"user_id": user_id, "guild_id": guild_id, "day_start": _db_day(self.now())}
        (row,) = await self._db.execute_fetchall(_COUNTS, params)
        return DailyCounts(int(row[0]), int(row[1]), float(row[2]), float(row[3]), float(row[4]))

    async def reserve(self, entry: NewGeneration, ceilings: Ceilings) -> int:
        """Write the pending row if every limit allows it; return its id or raise the refusal.

        Raises QuotaExceeded or BudgetExhausted naming the first limit that refused, or
        LedgerBusy when another process held the write lock too long.
        """
        now = self.now()
        params = {
            "created_at": to_db_time(now),
            "user_id": entry.user_id,
            "guild_id": entry.guild_id,
            "channel_id": entry.channel_id,
            "model": entry.model,
            "size": entry.size,
            "quality": entry.quality,
            "n": entry.n_requested,
            "request_id": entry.request_id,
            "reserved": entry.reserved_usd,
            "options_json": entry.options_json,
            "parent_id": entry.parent_id,
            "private": int(entry.private),
            "kind": entry.kind,
            "reference_count": entry.reference_count,
            "instance_id": self.instance_id,
            "day_start": _db_day(now),
            "operator_images": ceilings.operator_daily_images,
            "server_images": ceilings.server_daily_images if entry.guild_id else None,
            "user_budget": ceilings.user_daily_budget_usd,
            "server_budget": ceilings.server_daily_budget_usd if entry.guild_id else None,
            "bot_budget": ceilings.bot_daily_budget_usd,
        }

        # On PostgreSQL two processes' statements can interleave: each reservation first takes
        # a transaction-scoped advisory lock per total it checks (the member's; the server's
        # and the bot's when they have a budget), so the sums it reads include every row an
        # earlier holder inserted. Chosen over a counters table because the sums over the rows
        # stay the only record: resets, refunds at the final status and settled costs need no
        # second bookkeeping to keep in step. Only reservations that share a total queue.
        keys = [f"user:{entry.user_id}"]
        if params["server_budget"] is not None:
            keys.append(f"guild:{entry.guild_id}")
        if params["bot_budget"] is not None:
            keys.append("bot")

        async def write() -> int | None:
            async with self._db.serialized(keys, wait_s=RESERVE_LOCK_WAIT_S) as db:
                return await db.insert(_RESERVE, params)

        # A refusal is read back after the insert; a row finishing in between can make the
        # read find room again, so the pair is tried a few times before giving up.
        for _ in range(3):
            row_id = await retry_busy(write, timeout_s=RESERVE_LOCK_WAIT_S, what="reservation")
            if row_id is not None:
                return row_id
            refusal = self._refusal(
                entry, ceilings, await self.counts(entry.user_id, entry.guild_id), now
            )
            if refusal is not None:
                raise refusal
        # Rows kept finishing between each refused insert and its diagnosis: ask for a retry.
        raise LedgerBusy("the daily counts kept changing while the reservation was checked")

    @staticmethod
    def _refusal(
        entry: NewGeneration, ceilings: Ceilings, counts: DailyCounts, now: datetime
    ) -> QuotaExceeded | BudgetExhausted | None:
        """The first limit, in the order the reservation checks them, that refuses `entry`."""
        resets = next_reset(now)
        n = entry.n_requested
        images = [(ceilings.operator_daily_images, counts.operator_images, Whose.OPERATOR)]
        budgets = [(ceilings.user_daily_budget_usd, counts.user_spend_usd, BudgetScope.USER)]
        if entry.guild_id is not None:
            images.append((ceilings.server_daily_images, counts.server_images, Whose.SERVER))
            budgets.append(
                (ceilings.server_daily_budget_usd, counts.server_spend_usd, BudgetScope.SERVER)
            )
        budgets.append((ceilings.bot_daily_budget_usd, counts.bot_spend_usd, BudgetScope.BOT))
        for limit, used, whose in images:
            if limit is not None and used + n > limit:
                return QuotaExceeded(limit, used, n, resets, whose=whose)
        for budget, spent, scope in budgets:
            if budget is not None and (spent >= budget or spent + entry.reserved_usd > budget):
                return BudgetExhausted(scope, budget, spent, entry.reserved_usd, resets)
        return None

    async def record_answer(self, row_id: int, answer: UpstreamAnswer) -> None:
        """Mark a pending row billed, with the tokens and cost upstream's answer reports."""

        async def write() -> None:
            await self._db.execute(
                "UPDATE generations SET billed = 1, attempts = ?, upstream_request_id = ?, "
                "input_tokens = ?, output_tokens = ?, total_tokens = ?, cost_usd = ?, "
                "price_source = ?, price_as_of = ? WHERE id = ? AND status = 'pending'",
                (
                    answer.attempts,
                    answer.upstream_request_id,
                    answer.input_tokens,
                    answer.output_tokens,
                    answer.total_tokens,
                    answer.cost_usd,
                    answer.price_source,
                    answer.price_as_of,
                    row_id,
                ),
            )

        await retry_busy(write, timeout_s=FINISH_LOCK_WAIT_S, what="upstream answer")

    async def finish(self, row_id: int, final: FinalStatus, *, latency_ms: int) -> bool:
        """Write the row's one final status; False when it already had one (nothing changes)."""
        message = final.error_message[:_ERROR_MESSAGE_LIMIT] if final.error_message else None
        answer = final.answer

        async def write() -> bool:
            changed = await self._db.execute(
                "UPDATE generations SET status = :status, images_delivered = :images, "
                "error_code = :code, error_message = :message, latency_ms = :latency, "
                "attempts = COALESCE(:attempts, attempts), "
                "upstream_request_id = COALESCE(:upstream_id, upstream_request_id), "
                "billed = CASE WHEN billed = 1 THEN 1 ELSE :billed END, "
                "input_tokens = COALESCE(:input_tokens, input_tokens), "
                "output_tokens = COALESCE(:output_tokens, output_tokens), "
                "total_tokens = COALESCE(:total_tokens, total_tokens), "
                "cost_usd = COALESCE(:cost, cost_usd), "
                "price_source = COALESCE(:price_source, price_source), "
                "price_as_of = COALESCE(:price_as_of, price_as_of), "
                "revised_prompt = :revised_prompt, result_channel_id = :result_channel_id, "
                "result_message_id = :result_message_id, queue_ms = :queue_ms, "
                "upstream_ms = :upstream_ms, upload_ms = :upload_ms, "
                "finished_at = :now WHERE id = :id AND status = 'pending'",
                {
                    "revised_prompt": final.revised_prompt,
                    "result_channel_id": final.result_channel_id,
                    "result_message_id": final.result_message_id,
                    "queue_ms": final.queue_ms,
                    "upstream_ms": final.upstream_ms,
                    "upload_ms": final.upload_ms,
                    "billed": int(answer is not None),
                    "input_tokens": answer.input_tokens if answer else None,
                    "output_tokens": answer.output_tokens if answer else None,
                    "total_tokens": answer.total_tokens if answer else None,
                    "cost": answer.cost_usd if answer else None,
                    "price_source": answer.price_source if answer else None,
                    "price_as_of": answer.price_as_of if answer else None,
                    "status": final.status,
                    "images": final.images_delivered,
                    "code": final.error_code,
                    "message": message,
                    "latency": latency_ms,
                    "attempts": final.attempts,
                    "upstream_id": final.upstream_request_id,
                    "now": to_db_time(self.now()),
                    "id": row_id,
                },
            )
            return changed == 1

        return await retry_busy(write, timeout_s=FINISH_LOCK_WAIT_S, what="final status")

    async def status_of(self, row_id: int) -> str | None:
        """The row's status, or None when there is no such row."""
        row = await self._db.fetchone("SELECT status FROM generations WHERE id = ?", (row_id,))
        return str(row[0]) if row else None

    async def price_cache(self) -> dict[str, tuple[str, str]]:
        """The cached catalog prices: model -> (price JSON, fetched_at)."""
        rows = await self._db.execute_fetchall("SELECT model, price, fetched_at FROM price_cache")
        return {str(row[0]): (str(row[1]), str(row[2])) for row in rows}

    async def save_price_cache(self, prices: Mapping[str, str], fetched_at: datetime) -> None:
        """Replace the cached catalog prices with a fresh fetch (model -> price JSON)."""
        stamp = to_db_time(fetched_at)

        async def write() -> None:
            # Upsert the fresh ones, then drop models the catalog no longer prices: each
            # statement leaves a usable cache, so no transaction is needed.
            await self._db.executemany(
                "INSERT INTO price_cache (model, price, fetched_at) VALUES (?, ?, ?) "
                "ON CONFLICT (model) DO UPDATE SET price = excluded.price, "
                "fetched_at = excluded.fetched_at",
                [(model, price, stamp) for model, price in prices.items()],
            )
            await self._db.execute("DELETE FROM price_cache WHERE fetched_at < ?", (stamp,))

        await retry_busy(write, timeout_s=SLOW_LOCK_WAIT_S, what="price cache")

    async def get_meta(self, key: str) -> str | None:
        """A stored bookkeeping value, such as the last synced command hash."""
        row = await self._db.fetchone("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row[0]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        """Store a bookkeeping value."""

        async def write() -> None:
            await self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

        await retry_busy(write, timeout_s=SLOW_LOCK_WAIT_S, what="meta")


async def connect(path: Path) -> aiosqlite.Connection:
    """Open the database file (creating its folder) for writing, migrated, crash safe."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: every statement commits on its own unless a BEGIN says otherwise.
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        await db.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode keeps committed rows through a process crash (kill -9).
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA foreign_keys = ON")
        # Migrations may wait for a lock: nobody is waiting on them within 3 s.
        await db.execute(f"PRAGMA busy_timeout = {int(SLOW_LOCK_WAIT_S * 1000)}")
        await migrate(db)
        # From now on a locked database fails at once and retry_busy waits on the event loop,
        # so the one database thread is never held by another process's lock.
        await db.execute("PRAGMA busy_timeout = 0")
    except BaseException:
        await db.close()
        raise
    return db


async def connect_reader(uri: str) -> aiosqlite.Connection:
    """A read-only connection to an existing database (a `file:` URI), for reports."""
    db = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    try:
        # Readers in WAL mode never wait for the writer; a short wait covers a checkpoint.
        await db.execute("PRAGMA busy_timeout = 1000")
        await db.execute("PRAGMA query_only = ON")
    except BaseException:
        await db.close()
        raise
    return db


def _read_only_uri(path: Path) -> str:
    # Once, at start: resolving the path touches the file system.
    return f"{path.resolve().as_uri()}?mode=ro"


@asynccontextmanager
async def open_ledger(
    path: Path, clock: Callable[[], datetime] = utc_now, *, instance_id: str = DEFAULT_INSTANCE_ID
) -> AsyncIterator[UsageLedger]:
    """Own the database for the life of the block: the process lock and both connections.

    Raises LedgerInUse when another bot process has the file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    reader_uri = _read_only_uri(path)
    lock = _ProcessLock(path)
    lock.acquire()
    try:
        db = await connect(path)
        try:
            reader = await connect_reader(reader_uri)
            try:
                yield UsageLedger(
                    SqliteDatabase(db, path),
                    clock,
                    reader=SqliteDatabase(reader, path),
                    instance_id=instance_id,
                )
            finally:
                await reader.close()
        finally:
            await db.close()
    finally:
        lock.release()
