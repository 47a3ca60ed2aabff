"""The ledger on PostgreSQL: the pool, the migrations, and this instance's claim on its rows."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

import asyncpg

from bot.ledger.db import PostgresDatabase
from bot.ledger.periods import utc_now
from bot.ledger.pg_migrations import migrate_postgres
from bot.ledger.store import LedgerInUse, UsageLedger

log = logging.getLogger(__name__)

# Reservations, finishes and reports of one process share the pool; a report holds one
# connection for a moment, so a few more than the busiest moment's writers is plenty.
POOL_MIN: Final = 2
POOL_MAX: Final = 10
CONNECT_TIMEOUT_S: Final = 10.0


class StorageUnavailable(RuntimeError):
    """The database could not be opened; the message names where, never the password."""


def shown_url(url: str) -> str:
    """The URL as a log line or a message may show it: the password left out."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    user = f"{parts.username}@" if parts.username else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


def _password(url: str) -> str | None:
    return urlsplit(url).password


async def open_pool(
    url: str, *, min_size: int = POOL_MIN, max_size: int = POOL_MAX
) -> asyncpg.Pool:
    """A connected pool, or StorageUnavailable saying where it could not connect and why."""
    try:
        return await asyncpg.create_pool(
            url, min_size=min_size, max_size=max_size, timeout=CONNECT_TIMEOUT_S
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
        text = str(error)
        secret = _password(url)
        if secret:
            text = text.replace(secret, "[redacted]")
        # `from None`: asyncpg's own exception may carry the DSN in its arguments.
        raise StorageUnavailable(
            f"cannot connect to {shown_url(url)}: {type(error).__name__}: {text}"
        ) from None


@asynccontextmanager
async def _instance_claim(pool: asyncpg.Pool, instance_id: str) -> AsyncIterator[None]:
    """Hold a session advisory lock on the instance id for the life of the process.

    A second process started with the same INSTANCE_ID would take this one's rows in flight
    for stale ones; it is refused instead. PostgreSQL drops the lock with the connection, so a
    killed process never leaves it behind.
    """
    async with pool.acquire() as connection:
        claimed = await connection.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", f"instance:{instance_id}"
        )
        if not claimed:
            raise LedgerInUse(
                f"another imagine-bot process runs with INSTANCE_ID {instance_id!r} on this "
                "database; give each process its own INSTANCE_ID (or SHARD_IDS).",
                holder=instance_id,
            )
        try:
            yield
        finally:
            await connection.execute(
                "SELECT pg_advisory_unlock(hashtextextended($1, 0))", f"instance:{instance_id}"
            )


@asynccontextmanager
async def open_postgres_ledger(
    url: str, clock: Callable[[], datetime] = utc_now, *, instance_id: str
) -> AsyncIterator[UsageLedger]:
    """Own the pool for the life of the block: migrated, this instance's rows claimed."""
    pool = await open_pool(url)
    try:
        async with pool.acquire() as connection:
            old = await migrate_postgres(connection)
        if old == 0:
            log.info("created the ledger's tables on %s", shown_url(url))
        async with _instance_claim(pool, instance_id):
            db = PostgresDatabase(pool)
            yield UsageLedger(db, clock, reader=db, instance_id=instance_id)
    finally:
        await pool.close()
