"""The loop-lag monitor sees a blocking call and reports it."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bot.loopwatch import LoopLagMonitor


async def test_blocking_the_loop_shows_as_lag(caplog: pytest.LogCaptureFixture) -> None:
    """A 150 ms blocking sleep on the loop is measured as at least ~100 ms of lag."""
    caplog.set_level(logging.INFO, logger="bot.loopwatch")
    monitor = LoopLagMonitor(report_every_s=0.1, sample_every_s=0.01)
    task = asyncio.create_task(monitor.run())
    await asyncio.sleep(0.05)
    time.sleep(0.15)  # noqa: ASYNC251  (the point is to block the loop)
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert monitor.worst_ms >= 100
    assert any("event loop lag" in record.getMessage() for record in caplog.records)
