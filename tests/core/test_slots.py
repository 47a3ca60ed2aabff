"""Fair slots: turns between users, the per-user cap, queue positions, cancellation safety."""

from __future__ import annotations

import asyncio
import logging
import random
from contextlib import AsyncExitStack

import pytest

from bot.core.slots import FairSlots

A, B, C = 1, 2, 3


async def settle(turns: int = 50) -> None:
    """Let every ready task and callback run; no wall-clock time is involved."""
    for _ in range(turns):
        await asyncio.sleep(0)


class FakeTime:
    """A clock and a sleep that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay, future))
        await future

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, future in list(self._sleepers):
            if deadline <= self.now:
                self._sleepers.remove((deadline, future))
                if not future.done():
                    future.set_result(None)


class Job:
    """A request that takes a slot and holds it until `finish()`, recording its positions."""

    def __init__(self, slots: FairSlots, user: int, served: list[Job] | None = None) -> None:
        self.user = user
        self.positions: list[int] = []
        self.granted = False
        self._release = asyncio.Event()
        self._served = served if served is not None else []
        self.task = asyncio.create_task(self._run(slots))

    async def _report(self, position: int) -> None:
        self.positions.append(position)

    async def _run(self, slots: FairSlots) -> None:
        async with slots.acquire(self.user, on_position=self._report):
            self.granted = True
            self._served.append(self)
            await self._release.wait()

    async def finish(self) -> None:
        """Release the slot and let the next grant and position reports happen."""
        self._release.set()
        await self.task
        await settle()


async def queue(slots: FairSlots, users: list[int], served: list[Job]) -> list[Job]:
    """Start one job per entry of `users`, in order, and let them all reach the queue."""
    jobs = []
    for user in users:
        jobs.append(Job(slots, user, served))
        await settle(3)
    await settle()
    return jobs


async def drain(served: list[Job], finished: int = 0) -> None:
    """Finish jobs in the order they are granted, from `served[finished]`, until none runs."""
    while finished < len(served):
        await served[finished].finish()
        finished += 1


# --- Turns -----------------------------------------------------------------------------------


async def test_a_single_request_is_served_second_after_sixteen_of_another_user() -> None:
    """A fires 16 requests, then B one: B gets the second slot, not the seventeenth."""
    slots = FairSlots(total=1, per_user=16)
    order: list[int] = []

    async def request(user: int) -> None:
        async with slots.acquire(user):
            order.append(user)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(request(A)) for _ in range(16)]
    tasks.append(asyncio.create_task(request(B)))
    await asyncio.gather(*tasks)
    assert order == [A, B] + [A] * 15


async def test_users_queued_behind_a_holder_alternate() -> None:
    """Three users with three requests each, all waiting: served A, B, C, A, B, C, ..."""
    slots = FairSlots(total=1, per_user=3)
    served: list[Job] = []
    holder = Job(slots, 99)
    await settle()
    await queue(slots, [A, A, A, B, B, B, C, C, C], served)
    await holder.finish()
    await drain(served)
    assert [job.user for job in served] == [A, B, C] * 3


async def test_within_one_user_requests_are_first_come_first_served() -> None:
    """One user's requests are granted in the order they were made."""
    slots = FairSlots(total=1, per_user=1)
    served: list[Job] = []
    jobs = await queue(slots, [A, A, A, A], served)
    await drain(served)
    assert served == jobs


async def test_no_user_ever_runs_more_than_the_per_user_cap() -> None:
    """Checked at every grant; the process-wide cap too, and it is reached (no idle slot)."""
    slots = FairSlots(total=4, per_user=2)
    seen: list[tuple[int, int]] = []
    rng = random.Random(7)

    async def request(user: int) -> None:
        async with slots.acquire(user):
            seen.append((slots.running_for(user), slots.running))
            for _ in range(rng.randrange(6)):
                await asyncio.sleep(0)

    users = [A] * 8 + [B] * 3 + [C] * 5
    await asyncio.gather(*(request(user) for user in users))
    assert len(seen) == len(users)
    assert max(per_user for per_user, _ in seen) == 2
    assert max(total for _, total in seen) == 4


async def test_a_user_at_the_cap_is_skipped_until_one_of_theirs_finishes() -> None:
    """A free slot goes to B while A is at the cap; A is next once A's first finishes."""
    slots = FairSlots(total=2, per_user=1)
    served: list[Job] = []
    first_a, second_a, only_b = await queue(slots, [A, A, B], served)
    assert (first_a.granted, second_a.granted, only_b.granted) == (True, False, True)
    assert slots.running_for(A) == 1
    await first_a.finish()
    assert second_a.granted
    await only_b.finish()
    await second_a.finish()
    assert slots.running == 0


# --- Positions -------------------------------------------------------------------------------


async def test_positions_go_down_as_others_finish() -> None:
    """Each waiter is told where it stands when it starts waiting and at each change."""
    slots = FairSlots(total=1, per_user=1, min_update_interval_s=0)
    served: list[Job] = []
    holder = Job(slots, 99, served)
    await settle()
    first, second, third = await queue(slots, [A, B, C], served)
    assert (first.positions, second.positions, third.positions) == ([1], [2], [3])
    await holder.finish()
    assert third.positions == [3, 2]
    await first.finish()
    assert third.positions == [3, 2, 1]
    await second.finish()
    await third.finish()
    assert holder.positions == []  # served at once: never told a position
    assert (first.positions, second.positions, third.positions) == ([1], [2, 1], [3, 2, 1])


async def test_positions_count_the_per_user_cap() -> None:
    """A's second waiter cannot run beside A's first, so C is between A's two waiters."""
    slots = FairSlots(total=2, per_user=1, min_update_interval_s=0)
    served: list[Job] = []
    await queue(slots, [A, B], served)  # both running: the slots are full
    second_a, only_c, third_a = await queue(slots, [A, C, A], served)
    assert (second_a.positions, only_c.positions, third_a.positions) == ([1], [2], [3])
    await drain(served)
    assert slots.running == 0


async def test_position_reports_are_throttled_and_send_the_latest() -> None:
    """At most one report per interval; a change in the quiet time is sent when it ends."""
    time = FakeTime()
    slots = FairSlots(
        total=1, per_user=1, min_update_interval_s=2.0, clock=time.clock, sleep=time.sleep
    )
    served: list[Job] = []
    holder = Job(slots, 99, served)
    await settle()
    first, _, _, last = await queue(slots, [A, B, C, 4], served)
    assert last.positions == [4]
    await holder.finish()
    await first.finish()
    assert last.positions == [4]  # went 4 -> 3 -> 2 inside the quiet interval
    time.advance(1.9)
    await settle()
    assert last.positions == [4]
    time.advance(0.1)
    await settle()
    assert last.positions == [4, 2]  # the latest position, not the 3 in between
    time.advance(10.0)
    await settle()
    assert last.positions == [4, 2]  # nothing changed: nothing sent
    await drain(served, 2)
    assert slots.running == 0


async def test_reports_to_one_waiter_never_overlap() -> None:
    """A slow callback is not called again until it returns; then it gets the latest."""
    slots = FairSlots(total=1, per_user=1, min_update_interval_s=0)
    gate = asyncio.Event()
    active: list[int] = []
    calls: list[int] = []
    overlapped = False

    async def slow(position: int) -> None:
        nonlocal overlapped
        overlapped = overlapped or bool(active)
        active.append(position)
        calls.append(position)
        await gate.wait()
        active.remove(position)

    served: list[Job] = []
    holder = Job(slots, 99, served)
    await settle()
    first, second = await queue(slots, [A, B], served)
    async with AsyncExitStack() as stack:
        task = asyncio.create_task(stack.enter_async_context(slots.acquire(C, on_position=slow)))
        await settle()
        await holder.finish()
        await first.finish()
        assert calls == [3]  # position is now 1, but the first call has not returned
        gate.set()
        await settle()
        assert calls == [3, 1]
        await second.finish()
        await task
        assert slots.running_for(C) == 1
    assert not overlapped
    assert slots.running == 0


async def test_a_failing_callback_is_logged_and_the_wait_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The callback raising does not lose the slot, nor later reports."""
    caplog.set_level(logging.ERROR, logger="bot.core.slots")
    slots = FairSlots(total=1, per_user=1, min_update_interval_s=0)
    calls: list[int] = []

    async def broken(position: int) -> None:
        calls.append(position)
        raise RuntimeError("Discord said no")

    served: list[Job] = []
    holder = Job(slots, 99, served)
    await settle()
    first = Job(slots, A, served)
    await settle()
    entered = asyncio.Event()

    async def request() -> None:
        async with slots.acquire(B, on_position=broken):
            entered.set()

    task = asyncio.create_task(request())
    await settle()
    assert calls == [2]
    assert any("queue position callback failed" in r.getMessage() for r in caplog.records)
    await holder.finish()
    assert calls == [2, 1]
    await first.finish()
    await task
    assert entered.is_set()
    assert slots.running == 0


async def test_a_callback_that_hangs_does_not_delay_the_grant() -> None:
    """The slot is granted while a report is still in flight; the report is abandoned."""
    slots = FairSlots(total=1, per_user=1)
    hang = asyncio.Event()
    started = asyncio.Event()

    async def stuck(position: int) -> None:
        started.set()
        await hang.wait()

    holder = Job(slots, 99)
    await settle()
    entered = asyncio.Event()

    async def request() -> None:
        async with slots.acquire(A, on_position=stuck):
            entered.set()

    task = asyncio.create_task(request())
    await settle()
    assert started.is_set()
    await holder.finish()
    await task
    assert entered.is_set()
    await settle()
    assert asyncio.all_tasks() == {asyncio.current_task()}


# --- Cancellation and exits ------------------------------------------------------------------


async def test_a_waiter_cancelled_while_waiting_leaves_no_trace() -> None:
    """It is no longer counted, and the slot it waited for goes to the next in line."""
    slots = FairSlots(total=1, per_user=1, min_update_interval_s=0)
    served: list[Job] = []
    holder = Job(slots, 99, served)
    await settle()
    cancelled, after = await queue(slots, [A, B], served)
    assert slots.waiting == 2
    cancelled.task.cancel()
    await settle()
    assert cancelled.task.cancelled()
    assert slots.waiting == 1
    assert after.positions == [2, 1]
    await holder.finish()
    assert after.granted
    await after.finish()
    assert (slots.running, slots.waiting, slots.running_for(A)) == (0, 0, 0)


async def test_a_waiter_cancelled_just_after_its_grant_passes_the_slot_on() -> None:
    """Granted and cancelled in the same turn of the loop: the slot is not swallowed."""
    slots = FairSlots(total=1, per_user=1)
    held = slots.acquire(99)
    await held.__aenter__()
    waiter = Job(slots, A)
    await settle()
    await held.__aexit__(None, None, None)  # grants A's waiter, which has not resumed yet
    waiter.task.cancel()
    await settle()
    assert waiter.task.cancelled()
    assert not waiter.granted
    assert (slots.running, slots.waiting) == (0, 0)


class Abort(BaseException):
    """Not an Exception: the slot must be released for these too."""


@pytest.mark.parametrize("error", [ValueError("upstream broke"), Abort()])
async def test_an_exception_inside_the_block_releases_the_slot(error: BaseException) -> None:
    """Whatever leaves the block, the slot is free afterwards."""
    slots = FairSlots(total=1, per_user=1)
    held: list[int] = []

    async def fail_inside() -> None:
        async with slots.acquire(A):
            held.append(slots.running_for(A))
            raise error

    with pytest.raises(type(error)):
        await fail_inside()
    assert held == [1]
    assert (slots.running, slots.running_for(A)) == (0, 0)


async def test_a_slot_is_entered_only_once() -> None:
    """Re-entering the same acquire() is a programming error, not a second slot."""
    slots = FairSlots(total=2, per_user=2)
    slot = slots.acquire(A)
    async with slot:
        with pytest.raises(RuntimeError):
            await slot.__aenter__()
    assert slots.running == 0


def test_caps_below_one_are_refused() -> None:
    """No slot at all would make every request wait forever."""
    with pytest.raises(ValueError, match="at least 1"):
        FairSlots(total=0, per_user=1)
    with pytest.raises(ValueError, match="at least 1"):
        FairSlots(total=1, per_user=0)


@pytest.mark.parametrize("seed", range(8))
async def test_random_cancellations_leave_every_slot_free(
    seed: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Hundreds of requests, cancelled at random points: the caps hold and nothing leaks."""
    caplog.set_level(logging.CRITICAL, logger="bot.core.slots")  # the broken callbacks
    rng = random.Random(seed)
    total, per_user = 3, 2
    slots = FairSlots(total, per_user, min_update_interval_s=0)
    violations: list[str] = []

    async def on_position(position: int) -> None:
        if rng.random() < 0.2:
            raise RuntimeError("report failed")
        await asyncio.sleep(0)

    async def request(user: int) -> None:
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
        callback = on_position if rng.random() < 0.7 else None
        async with slots.acquire(user, on_position=callback):
            if slots.running > total or slots.running_for(user) > per_user:
                violations.append(f"user {user}: {slots.running_for(user)}/{slots.running}")
            for _ in range(rng.randrange(5)):
                await asyncio.sleep(0)
            if rng.random() < 0.1:
                raise ValueError("generation failed")

    tasks = [asyncio.create_task(request(rng.randrange(6))) for _ in range(300)]
    for _ in range(100_000):  # a bound, so a lost wake-up fails instead of hanging
        pending = [task for task in tasks if not task.done()]
        if not pending:
            break
        for task in pending:
            if rng.random() < 0.02:
                task.cancel()
        await asyncio.sleep(0)
    await settle()
    assert all(task.done() for task in tasks)
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)  # retrieves every error
    assert {type(outcome) for outcome in outcomes} <= {
        type(None),
        ValueError,
        asyncio.CancelledError,
    }
    assert violations == []
    assert any(task.cancelled() for task in tasks)
    assert (slots.running, slots.waiting) == (0, 0)
    # Every slot is free: `total` users each get one at once, without waiting.
    async with AsyncExitStack() as stack:
        for user in range(total):
            await stack.enter_async_context(slots.acquire(100 + user))
        assert (slots.running, slots.waiting) == (total, 0)
    assert slots.running == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}
