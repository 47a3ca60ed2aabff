"""Supervised background work: failures logged and restarted, shutdown quiet and complete."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest

from bot.supervise import Backoff, Supervisor


async def settle(turns: int = 30) -> None:
    """Let every ready task run; no wall-clock time is involved."""
    for _ in range(turns):
        await asyncio.sleep(0)


class Sleeps:
    """A fake sleep recording each delay; returns at once for the first `free` calls, then
    waits until cancelled, so a task that keeps failing cannot spin the test forever."""

    def __init__(self, free: int = 1_000) -> None:
        self.delays: list[float] = []
        self._free = free

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if len(self.delays) > self._free:
            await asyncio.Event().wait()
        await asyncio.sleep(0)


class Clock:
    """A clock that moves only when the work says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def forever() -> None:
    await asyncio.Event().wait()


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "bot.supervise" and r.levelno == level]


def assert_no_tasks_left() -> None:
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_a_failure_is_logged_when_it_happens_and_the_task_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One ERROR line naming the task, with the traceback, before the restart."""
    caplog.set_level(logging.INFO, logger="bot.supervise")
    sleeps = Sleeps(free=0)  # the backoff waits until the test has looked
    runs = 0

    async def refresh() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise sqlite3.OperationalError("database is locked")
        await forever()

    supervisor = Supervisor(sleep=sleeps)
    supervisor.start("price-refresh", refresh)
    await settle()
    [failure] = records(caplog, logging.ERROR)
    assert failure.getMessage() == "background task price-refresh failed; restarting in 1 s"
    assert failure.exc_info is not None
    assert isinstance(failure.exc_info[1], sqlite3.OperationalError)
    assert (runs, sleeps.delays) == (1, [1.0])
    await supervisor.close()
    assert supervisor.names == frozenset()

    sleeps = Sleeps()
    runs = 0
    async with Supervisor(sleep=sleeps) as supervisor:
        supervisor.start("price-refresh", refresh)
        await settle()
        assert runs == 2
        assert supervisor.names == {"price-refresh"}
    assert_no_tasks_left()


async def test_a_task_that_keeps_failing_backs_off_up_to_the_cap() -> None:
    """The wait doubles from the first delay and stays at the cap."""
    sleeps = Sleeps(free=6)

    async def broken() -> None:
        raise RuntimeError("still broken")

    async with Supervisor(backoff=Backoff(first_s=1, max_s=8), sleep=sleeps) as supervisor:
        supervisor.start("broken", broken)
        await settle(60)
    assert sleeps.delays == [1, 2, 4, 8, 8, 8, 8]
    assert_no_tasks_left()


async def test_the_backoff_resets_after_a_run_that_lasted() -> None:
    """A failure after a healthy run waits the first delay again."""
    sleeps = Sleeps(free=4)
    clock = Clock()
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 4:
            clock.now += 120  # this run lasted two minutes before failing
        raise RuntimeError(f"failure {runs}")

    backoff = Backoff(first_s=1, max_s=300, healthy_after_s=60)
    async with Supervisor(backoff=backoff, sleep=sleeps, clock=clock) as supervisor:
        supervisor.start("flaky", flaky)
        await settle(60)
    assert sleeps.delays == [1, 2, 4, 1, 2]


def test_backoff_delays_double_and_cap_without_overflow() -> None:
    """The delay after the n-th failure in a row, for the defaults of 1 s to 5 min."""
    backoff = Backoff()
    assert [backoff.delay(n) for n in (1, 2, 3, 9, 10)] == [1, 2, 4, 256, 300]
    assert backoff.delay(10**6) == 300


async def test_a_task_that_returns_is_logged_and_not_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Returning is finishing: INFO, no restart, no longer listed."""
    caplog.set_level(logging.INFO, logger="bot.supervise")
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    async with Supervisor(sleep=Sleeps()) as supervisor:
        supervisor.start("warm-up", once)
        await settle()
        assert supervisor.names == frozenset()
    assert runs == 1
    assert [r.getMessage() for r in records(caplog, logging.INFO)] == [
        "background task warm-up finished"
    ]


async def test_a_failed_task_without_restart_is_logged_and_never_re_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """restart=False: logged once, not run again, and close() does not raise it."""
    runs = 0

    async def broken() -> None:
        nonlocal runs
        runs += 1
        raise sqlite3.OperationalError("database is locked")

    supervisor = Supervisor(sleep=Sleeps())
    supervisor.start("price-refresh", broken, restart=False)
    await settle()
    await supervisor.close()
    assert runs == 1
    assert [r.getMessage() for r in records(caplog, logging.ERROR)] == [
        "background task price-refresh failed; not restarting"
    ]
    assert_no_tasks_left()


async def test_close_cancels_every_task_and_swallows_what_they_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A task whose cleanup fails on cancellation: logged, not raised, not restarted."""
    cancelled: list[str] = []

    async def refresh() -> None:
        try:
            await forever()
        finally:
            cancelled.append("price-refresh")
            raise sqlite3.OperationalError("database is locked")

    async def monitor() -> None:
        try:
            await forever()
        finally:
            cancelled.append("loop-lag")

    supervisor = Supervisor(sleep=Sleeps())
    supervisor.start("price-refresh", refresh)
    supervisor.start("loop-lag", monitor)
    await settle()
    await supervisor.close()
    assert sorted(cancelled) == ["loop-lag", "price-refresh"]
    [failure] = records(caplog, logging.ERROR)
    assert failure.getMessage() == "background task price-refresh failed; not restarting"
    assert supervisor.names == frozenset()
    assert_no_tasks_left()


async def test_leaving_the_context_with_an_error_still_closes_and_keeps_the_error() -> None:
    """The body's own exception propagates; the supervisor adds none and suppresses none."""

    async def fail_inside() -> None:
        async with Supervisor(sleep=Sleeps()) as supervisor:
            supervisor.start("idle", forever)
            await settle()
            raise LookupError("the body failed")

    with pytest.raises(LookupError, match="the body failed"):
        await fail_inside()
    assert_no_tasks_left()


async def test_a_task_that_ignores_one_cancellation_still_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After the bounded wait: a warning, a second cancellation, and the task is gone."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        try:
            await forever()
        except asyncio.CancelledError:
            swallowed += 1  # the bug under test: a cleanup that catches too much
        await forever()

    supervisor = Supervisor(sleep=Sleeps(), stop_timeout_s=0.01)
    supervisor.start("stubborn", stubborn)
    await settle()
    await supervisor.close()
    assert swallowed == 1
    [warning] = records(caplog, logging.WARNING)
    assert warning.getMessage() == (
        "background task stubborn still running 0.01 s after cancellation; cancelling it again"
    )
    assert supervisor.names == frozenset()
    assert_no_tasks_left()


async def test_close_is_idempotent_and_final() -> None:
    """Closing twice, even at once, is fine; starting after close is refused."""
    supervisor = Supervisor(sleep=Sleeps())
    supervisor.start("idle", forever)
    await settle()
    await asyncio.gather(supervisor.close(), supervisor.close())
    await supervisor.close()
    with pytest.raises(RuntimeError, match="closed"):
        supervisor.start("late", forever)
    assert_no_tasks_left()


async def test_two_tasks_cannot_share_a_name() -> None:
    """Names identify tasks in the logs; a duplicate would make them ambiguous."""
    async with Supervisor(sleep=Sleeps()) as supervisor:
        supervisor.start("idle", forever)
        with pytest.raises(ValueError, match="already running"):
            supervisor.start("idle", forever)


async def test_a_cancelled_error_from_inside_the_work_is_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No one cancelled the task, so it must not end silently: logged and restarted."""
    runs = 0

    async def leaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise asyncio.CancelledError  # e.g. a future it awaited was cancelled
        await forever()

    async with Supervisor(sleep=Sleeps()) as supervisor:
        supervisor.start("leaky", leaky)
        await settle()
        assert runs == 2
    [failure] = records(caplog, logging.ERROR)
    assert failure.getMessage() == "background task leaky failed; restarting in 1 s"
