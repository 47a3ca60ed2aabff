"""The real process: `python -m bot` against the fakes, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from tests.e2e.harness import COMET_KEY, fakes, process_env
from tests.fakes.fake_cometapi import Reply


async def _read_until(stream: asyncio.StreamReader, marker: str, seen: list[str]) -> None:
    while True:
        line = (await stream.readline()).decode()
        if not line:
            raise AssertionError("process ended before: " + marker + "\n" + "".join(seen))
        seen.append(line)
        if marker in line:
            return


async def test_sigterm_mid_generation_exits_cleanly_within_ten_seconds(tmp_path: Path) -> None:
    """Ready line, a generation in flight, SIGTERM: exit 0 in time, no traceback, no secret."""
    async with fakes() as (fake, comet):
        # The first request's failure echoes the key, as a misbehaving upstream might.
        comet.queue(Reply.error(500, f"internal error for key {COMET_KEY}"), Reply.hang())
        env = process_env(
            fake,
            comet,
            DATABASE_PATH=str(tmp_path / "usage.db"),
            SHUTDOWN_GRACE_S="1",
            LOOP_LAG_LOG_S="0.2",
        )
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
        )
        assert process.stderr is not None
        lines: list[str] = []
        try:
            await asyncio.wait_for(_read_until(process.stderr, "ready as", lines), 20)
            ready_after = time.monotonic() - started
            handle = await fake.invoke("imagine", {"prompt": "forever"})
            await comet.wait_for_calls(2, timeout=10)
            process.send_signal(signal.SIGTERM)
            stopping = time.monotonic()
            rest = await asyncio.wait_for(process.stderr.read(), 15)
            code = await asyncio.wait_for(process.wait(), 5)
            took = time.monotonic() - stopping
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        log = "".join(lines) + rest.decode()
        final = await handle.wait_for_final()
    assert code == 0, log
    assert took < 1 + 10, took
    assert "Traceback" not in log
    assert "voice will NOT be supported" not in log
    # Nothing before the ready line is a warning: a clean start reads clean.
    assert "WARNING" not in "".join(lines).split("ready as")[0], lines
    assert fake.token not in log
    assert COMET_KEY not in log
    assert "stopped cleanly" in log
    assert "event loop lag window_s=0.2" in log
    assert "cometapi retry attempt=1" in log  # the line that carried the echoed key
    assert "restarted before your images were ready" in final.json["content"]
    assert ready_after < 20
