"""Writes that never hold the database thread while another process holds SQLite's lock.

The connection runs with busy_timeout 0: a write that meets another writer's lock fails at
once, and the retry waits here, on the event loop, instead of inside SQLite on the one thread
every query of the process shares. So a long lock held by a backup or a `sqlite3` shell delays
only the writes that need it, each up to its own deadline, never the acknowledgement of an
interaction behind them.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_FIRST_WAIT_S: Final = 0.02
_MAX_WAIT_S: Final = 0.25


class LedgerBusy(Exception):
    """Another process held the database's write lock past the write's deadline."""


def is_busy(error: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock (SQLITE_BUSY/LOCKED)."""
    text = str(error).lower()
    return "database is locked" in text or "database table is locked" in text or "busy" in text


async def retry_busy(
    write: Callable[[], Awaitable[T]], *, timeout_s: float, what: str = "write"
) -> T:
    """Run `write`, trying again while the database is locked, for at most `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    wait = _FIRST_WAIT_S
    tries = 0
    while True:
        tries += 1
        try:
            return await write()
        except sqlite3.OperationalError as error:
            if not is_busy(error):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning(
                    "database locked by another process: gave up %s after %d tries", what, tries
                )
                raise LedgerBusy(f"the database stayed locked for {timeout_s:g}s") from error
            await asyncio.sleep(min(wait, left))
            wait = min(wait * 2, _MAX_WAIT_S)
