"""Measures how late the event loop wakes up, the best single sign of blocking work on it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class LoopLagMonitor:
    """Samples the loop's wake-up delay and logs the worst one every reporting window."""

    def __init__(
        self,
        *,
        report_every_s: float,
        sample_every_s: float = 0.02,
        log_lines: bool = True,
        on_window: Callable[[float], None] | None = None,
    ) -> None:
        self._report_every_s = report_every_s
        self._sample_every_s = sample_every_s
        self._log_lines = log_lines
        self._on_window = on_window
        self.worst_ms = 0.0

    async def run(self) -> None:
        """Sample until cancelled; one log line per window with the window's worst lag."""
        window_start = time.perf_counter()
        window_worst = 0.0
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self._sample_every_s)
            lag_ms = max((time.perf_counter() - before - self._sample_every_s) * 1000, 0.0)
            window_worst = max(window_worst, lag_ms)
            self.worst_ms = max(self.worst_ms, lag_ms)
            if time.perf_counter() - window_start < self._report_every_s:
                continue
            if self._on_window is not None:
                self._on_window(window_worst / 1000)
            if self._log_lines:
                log.info(
                    "event loop lag window_s=%.1f max_ms=%.1f worst_since_start_ms=%.1f",
                    self._report_every_s,
                    window_worst,
                    self.worst_ms,
                )
            window_start = time.perf_counter()
            window_worst = 0.0
