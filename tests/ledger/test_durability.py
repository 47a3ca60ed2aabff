"""The ledger survives kill -9 in the middle of a write burst with every committed row kept."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parents[2]

# The child writes rows through the real ledger and prints each id once its write returned
# (autocommit: returned means committed); the parent kills it without warning mid-burst.
WRITER = """
import asyncio, sys
from pathlib import Path
from bot.ledger.store import NewGeneration, open_ledger

async def main() -> None:
    async with open_ledger(Path(sys.argv[1])) as ledger:
        for i in range(1_000_000):
            row = await ledger.reserve(
                NewGeneration(i % 7, 1, 2, "gpt-image-1", "auto", "auto", 1, f"r{i}"), 0
            )
            await ledger.complete(row, images_delivered=1, latency_ms=i, input_tokens=1,
                                  output_tokens=2, total_tokens=3)
            print(row, flush=True)

asyncio.run(main())
"""


def test_kill_9_mid_burst_loses_no_committed_row(tmp_path: Path) -> None:
    """Every id the writer reported as committed is there, complete, and the file is sound."""
    database = tmp_path / "usage.db"
    committed: list[int] = []
    with subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", WRITER, str(database)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        deadline = time.monotonic() + 30
        while len(committed) < 300 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            committed.append(int(line))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        # Lines already printed but not yet read were committed too.
        committed.extend(int(line) for line in child.stdout.read().split())
    assert len(committed) >= 300, "the writer did not get going"

    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = dict(db.execute("SELECT id, status FROM generations").fetchall())
    missing = [row for row in committed if row not in stored]
    assert missing == []
    # Each reported row was completed before it was printed.
    assert all(stored[row] == "ok" for row in committed)
