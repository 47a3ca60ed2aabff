"""Open the ledger where DATABASE_URL points: a SQLite file, or PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

from bot.ledger.periods import utc_now
from bot.ledger.postgres import open_postgres_ledger, shown_url
from bot.ledger.store import UsageLedger, open_ledger

SQLITE_PREFIX = "sqlite:///"


def is_postgres(url: str) -> bool:
    """Whether the URL names a PostgreSQL database."""
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> Path:
    """The file a sqlite:/// URL names (relative to the working folder, as DATABASE_PATH)."""
    if not url.startswith(SQLITE_PREFIX):
        raise ValueError("not a sqlite:/// URL")
    return Path(url.removeprefix(SQLITE_PREFIX))


def shown(url: str) -> str:
    """The URL as a log line or a message may show it (no password)."""
    return shown_url(url) if is_postgres(url) else url


@asynccontextmanager
async def open_storage(
    url: str, clock: Callable[[], datetime] = utc_now, *, instance_id: str
) -> AsyncIterator[UsageLedger]:
    """The ledger for the life of the block, on whichever backend the URL names."""
    if is_postgres(url):
        async with open_postgres_ledger(url, clock, instance_id=instance_id) as ledger:
            yield ledger
    else:
        async with open_ledger(sqlite_path(url), clock, instance_id=instance_id) as ledger:
            yield ledger
