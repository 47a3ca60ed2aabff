"""One SQLite file serves one bot process: a second one is refused, naming the first's pid."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from bot.ledger.store import LedgerInUse, open_ledger
from tests.conftest import Clock, add_row, generation

ROOT = Path(__file__).parents[2]

# Opens the ledger, says so, and holds it until killed.
HOLDER = """
import asyncio, sys
from pathlib import Path
from bot.ledger.store import open_ledger

async def main() -> None:
    async with open_ledger(Path(sys.argv[1])):
        print("open", flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_second_open_in_this_process_is_refused_until_the_first_closes(
    tmp_path: Path, clock: Clock
) -> None:
    """LedgerInUse names the holder's pid and the file; once closed, the file opens again."""
    path = tmp_path / "usage.db"
    async with open_ledger(path, clock) as first:
        await add_row(first, generation())
        with pytest.raises(LedgerInUse) as caught:
            async with open_ledger(path, clock):
                pass
        message = str(caught.value)
        assert f"pid {os.getpid()}" in message
        assert str(path) in message
        assert "DATABASE_PATH" in message
        # The refused open touched nothing: the first keeps working.
        await add_row(first, generation())
    async with open_ledger(path, clock) as second:
        rows = await second.reader.execute_fetchall("SELECT COUNT(*) FROM generations")
    assert list(rows) == [(2,)]


async def test_another_file_beside_it_is_not_locked(tmp_path: Path, clock: Clock) -> None:
    """The lock is per database file."""
    async with open_ledger(tmp_path / "a.db", clock), open_ledger(tmp_path / "b.db", clock):
        pass


async def test_another_process_is_named_and_its_death_frees_the_file(
    tmp_path: Path, clock: Clock
) -> None:
    """A bot in another process holds the file: refused with its pid; kill -9 frees it."""
    path = tmp_path / "usage.db"
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        str(path),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), timeout=30)
        assert line.strip() == b"open"
        with pytest.raises(LedgerInUse, match=f"pid {holder.pid}\\)"):
            async with open_ledger(path, clock):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        await asyncio.wait_for(holder.wait(), timeout=10)
    # The kernel drops a dead process's lock: no stale lock file blocks the restart.
    async with open_ledger(path, clock) as ledger:
        await add_row(ledger, generation())
