"""Supervised background work: named tasks logged when they fail, restarted, stopped cleanly.

A bare `asyncio.create_task` that raises stops silently, and whoever awaits it at shutdown
gets its exception back, in the middle of closing everything else. A `Supervisor` logs each
failure with its traceback when it happens, restarts the work after a backoff when asked to,
and at close cancels and awaits every task without re-raising anything: a clean shutdown
never turns into a traceback or a non-zero exit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

log = logging.getLogger(__name__)

TaskFactory = Callable[[], Awaitable[None]]
"""Makes one run of the work; called again for each restart."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before restarting failed work: doubling from `first_s` to `max_s`."""

    first_s: float = 1.0
    max_s: float = 300.0
    healthy_after_s: float = 60.0
    """A run at least this long counts as healthy: its failure waits `first_s` again."""

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row (1 for the first)."""
        # The exponent is capped so that a task failing for days cannot overflow a float.
        return float(min(self.first_s * 2 ** min(max(failures - 1, 0), 64), self.max_s))


def _stop_requested() -> bool:
    # A CancelledError with no cancellation request came from inside the work (a future it
    # awaited was cancelled), not from whoever owns the task.
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


class Supervisor:
    """Owns a set of named background tasks, from `start` until `close`."""

    def __init__(
        self,
        *,
        backoff: Backoff | None = None,
        stop_timeout_s: float = 5.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backoff = backoff or Backoff()
        self._stop_timeout_s = stop_timeout_s
        self._sleep = sleep
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False
        self._stopper: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def names(self) -> frozenset[str]:
        """The names of the tasks still running."""
        return frozenset(self._tasks)

    def start(self, name: str, factory: TaskFactory, *, restart: bool = True) -> None:
        """Run `factory()` in the background under `name`; restart it after failures if asked."""
        if self._closing:
            raise RuntimeError(f"cannot start {name!r}: the supervisor is closed")
        if name in self._tasks:
            raise ValueError(f"a background task named {name!r} is already running")
        task = asyncio.create_task(self._supervise(name, factory, restart), name=name)
        self._tasks[name] = task
        task.add_done_callback(lambda done: self._forget(name, done))

    async def close(self) -> None:
        """Cancel and await every task; never raises what they raised. Safe to call again."""
        self._closing = True
        if self._stopper is None:
            self._stopper = asyncio.create_task(self._stop_all(), name="supervisor-close")
        # Shielded: a caller cancelled mid-close does not leave the tasks half stopped.
        await asyncio.shield(self._stopper)

    # --- Running ------------------------------------------------------------------------------

    async def _supervise(self, name: str, factory: TaskFactory, restart: bool) -> None:
        failures = 0
        while True:
            started = self._clock()
            error = await self._run_once(factory)
            if error is None:
                log.info("background task %s finished", name)
                return
            healthy = self._clock() - started >= self._backoff.healthy_after_s
            failures = 1 if healthy else failures + 1
            again = restart and not (self._closing or _stop_requested())
            delay = self._backoff.delay(failures)
            outcome = f"restarting in {delay:g} s" if again else "not restarting"
            log.error("background task %s failed; %s", name, outcome, exc_info=error)
            if not again:
                return
            await self._sleep(delay)

    @staticmethod
    async def _run_once(factory: TaskFactory) -> BaseException | None:
        """One run of the work: the exception it failed with, or None when it returned."""
        try:
            await factory()
        except asyncio.CancelledError as error:
            if _stop_requested():
                raise
            return error
        except Exception as error:
            return error
        return None

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
        # Retrieved so asyncio never logs "exception was never retrieved" at exit; the work's
        # own failures were caught and logged in _supervise, so this is only a crash of ours.
        if not task.cancelled() and (crash := task.exception()) is not None:
            log.error("supervising %s crashed", name, exc_info=crash)

    # --- Stopping -----------------------------------------------------------------------------

    async def _stop_all(self) -> None:
        # Two rounds: work that swallows one cancellation (a cleanup that catches too much)
        # gets a second; past that it is left behind with a warning rather than hang the exit.
        for last_round in (False, True):
            tasks = {task: name for name, task in self._tasks.items() if not task.done()}
            if not tasks:
                return
            for task in tasks:
                task.cancel()
            _, pending = await asyncio.wait(tasks, timeout=self._stop_timeout_s)
            for task in pending:
                log.warning(
                    "background task %s still running %g s after cancellation; %s",
                    tasks[task],
                    self._stop_timeout_s,
                    "leaving it" if last_round else "cancelling it again",
                )
