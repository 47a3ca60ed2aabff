"""The ledger survives kill -9 in the middle of a write burst with every committed row kept."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bot.ledger.store import open_ledger

ROOT = Path(__file__).parents[2]

# The child runs each row's whole life through the real ledger (reserve, upstream's answer,
# final status) and prints each step once its write returned (autocommit: returned means
# committed); the parent kills it without warning mid-burst.
WRITER = """
import asyncio, sys
from pathlib import Path
from bot.ledger.limits import Ceilings
from bot.ledger.store import FinalStatus, NewGeneration, UpstreamAnswer, open_ledger

async def main() -> None:
    async with open_ledger(Path(sys.argv[1])) as ledger:
        for i in range(1_000_000):
            row = await ledger.reserve(
                NewGeneration(i % 7, 1, 2, "gpt-image-1", "auto", "auto", 1, f"r{i}", 0.2),
                Ceilings(),
            )
            await ledger.record_answer(
                row, UpstreamAnswer(1, f"u{i}", 1, 2, 3, 0.1, "builtin", "2026-11-21")
            )
            print("answered", row, flush=True)
            await ledger.finish(row, FinalStatus("delivered", 1), latency_ms=i)
            print("finished", row, flush=True)

asyncio.run(main())
"""


def test_kill_9_mid_burst_loses_no_committed_row(tmp_path: Path) -> None:
    """Every step the writer reported as committed is there, and the file is sound.

    A row upstream had answered stays billed even if the bot died before its final status:
    the next start closes it as interrupted_delivery with its cost, never as a free row.
    """
    database = tmp_path / "usage.db"
    answered: list[int] = []
    finished: list[int] = []

    def note(line: str) -> None:
        step, row = line.split()
        (answered if step == "answered" else finished).append(int(row))

    with subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", WRITER, str(database)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        deadline = time.monotonic() + 30
        while len(finished) < 300 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            note(line)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        # Lines already printed but not yet read were committed too.
        for line in child.stdout.read().splitlines():
            note(line)
    assert len(finished) >= 300, "the writer did not get going"

    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {
            row[0]: row[1:]
            for row in db.execute("SELECT id, status, billed, cost_usd FROM generations")
        }
    assert [row for row in answered if row not in stored] == []
    # Each reported row was finished before it was printed.
    assert all(stored[row] == ("delivered", 1, 0.1) for row in finished)
    # A row answered but not (reported) finished was billed before the kill.
    assert all(stored[row][1:] == (1, 0.1) for row in answered)

    async def restart() -> int:
        async with open_ledger(database) as ledger:
            return await ledger.mark_stale_pending()

    asyncio.run(restart())
    with sqlite3.connect(database) as db:
        statuses = dict(db.execute("SELECT id, status FROM generations").fetchall())
        billed_lost = db.execute(
            "SELECT COUNT(*) FROM generations WHERE billed = 1 AND status = 'interrupted'"
        ).fetchone()[0]
    assert all(statuses[row] in {"delivered", "interrupted_delivery"} for row in answered)
    assert billed_lost == 0
    assert "pending" not in statuses.values()
