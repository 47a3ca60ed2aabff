"""Fair generation slots: a process-wide cap, a per-user cap, and turns between users.

One member firing sixteen requests must not make everyone else wait behind them. A
`FairSlots` lets at most `total` generations run at once and at most `per_user` for any one
user, and serves the users who have requests waiting in turn; within one user, requests are
served first come, first served.

The rotation. Every user with a request waiting or running holds a place in it. Granting a
slot sends that user to the back. A user who arrives with nothing waiting or running joins
at the end of the current round, just ahead of the user served last: so with one request of
A running, fifteen more of A waiting and one of B arriving, B goes next, then A again. A user
at their per-user cap is skipped but keeps their place, and is first once one of theirs
finishes. Every grant moves its user behind everyone waiting, so nobody is passed over for
more than one round.

The position rule. A waiter's position is where it stands in the order the rotation would
serve everyone waiting now, if no one else arrived or left and every generation took the
same time, so that the one that started first finishes first. That last assumption is what
makes the per-user cap count: a user at their cap gets their next turn only when the
simulation lets one of theirs finish. Position 1 means "next to be served". Positions are
estimates; they are recomputed at every grant, release, arrival and departure.

Position reports never delay a grant. The grant is decided and recorded synchronously, in the
release or arrival that freed or found the slot. Positions are recomputed in a callback
scheduled on the loop, and each waiter's `on_position` is awaited in that waiter's own task,
one call at a time and at most one per `min_update_interval_s`. When the slot is granted (or
the waiter is cancelled), that task is cancelled without being awaited: a position message
still in flight is abandoned, not allowed to hold a granted slot idle, and the generation's
own next message supersedes it.

Nothing here knows Discord.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType

log = logging.getLogger(__name__)

PositionCallback = Callable[[int], Awaitable[None]]
"""Told a waiter's position in the order of service; 1 means next."""

# A user's place in the rotation; the smallest is served first. A grant gives (grant, 1, 0),
# a newcomer (last grant so far, 0, arrival): just ahead of the user served last.
_Key = tuple[int, int, int]


class _State(Enum):
    WAITING = "waiting"
    GRANTED = "granted"
    DONE = "done"


@dataclass(eq=False, slots=True)
class _Waiter:
    """One `acquire`: waiting for its turn, then holding a slot, then done."""

    user_id: int
    on_position: PositionCallback | None
    future: asyncio.Future[None]
    state: _State = _State.WAITING
    latest: int | None = None
    """The position the waiter should be told."""
    sent: int | None = None
    """The position last reported to it."""
    sent_at: float | None = None
    notifier: asyncio.Task[None] | None = None

    @property
    def live(self) -> bool:
        """Waiting, and its task not cancelled (a cancelled one cleans up when it next runs)."""
        return self.state is _State.WAITING and not self.future.done()


@dataclass(eq=False, slots=True)
class _User:
    """A user with requests waiting or running, and their place in the rotation."""

    key: _Key
    queue: deque[_Waiter] = field(default_factory=deque)
    running: int = 0

    def head(self) -> _Waiter | None:
        """The user's oldest live waiter."""
        return next((waiter for waiter in self.queue if waiter.live), None)


class FairSlots:
    """Generation slots shared fairly between users; see the module docstring for the rules."""

    def __init__(
        self,
        total: int,
        per_user: int,
        *,
        min_update_interval_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if total < 1 or per_user < 1:
            raise ValueError("total and per_user must be at least 1")
        if min_update_interval_s < 0:
            raise ValueError("min_update_interval_s must be >= 0")
        self._total = total
        self._per_user = per_user
        self._interval = min_update_interval_s
        # The throttle measures with `clock` and waits with `sleep`: inject both together.
        self._clock = clock
        self._sleep = sleep
        self._users: dict[int, _User] = {}
        self._grants: dict[_Waiter, None] = {}
        """The slots held, oldest grant first (a dict keeps order and removes in O(1))."""
        self._waiting = 0
        self._granted_so_far = 0
        self._arrivals = 0
        self._refresh: asyncio.Handle | None = None
        self._notifiers: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot (a cancelled one counts until its task has cleaned up)."""
        return self._waiting

    @property
    def running(self) -> int:
        """Slots held now."""
        return len(self._grants)

    def running_for(self, user_id: int) -> int:
        """Slots the user holds now."""
        user = self._users.get(user_id)
        return 0 if user is None else user.running

    def acquire(
        self, user_id: int, *, on_position: PositionCallback | None = None
    ) -> AbstractAsyncContextManager[None]:
        """A slot for `user_id`, held for the `async with` block; each call is entered once.

        `on_position` is awaited when the request has to wait and then whenever its position
        changes, throttled; an exception from it is logged and the wait goes on.
        """
        return _Slot(self, user_id, on_position)

    # --- Waiting and granting ---------------------------------------------------------------

    def _enqueue(self, user_id: int, on_position: PositionCallback | None) -> _Waiter:
        user = self._users.get(user_id)
        if user is None:
            user = _User(key=(self._granted_so_far, 0, self._arrivals))
            self._arrivals += 1
            self._users[user_id] = user
        waiter = _Waiter(user_id, on_position, asyncio.get_running_loop().create_future())
        user.queue.append(waiter)
        self._waiting += 1
        self._dispatch()
        return waiter

    async def _wait(self, waiter: _Waiter) -> None:
        # Awaiting a future that is already done does not suspend: a free slot costs no turn
        # of the loop.
        try:
            await waiter.future
        except BaseException:
            self._abandon(waiter)
            raise

    def _abandon(self, waiter: _Waiter) -> None:
        """Clean up after a waiter whose task was cancelled (or failed) while waiting."""
        if waiter.state is _State.GRANTED:
            # Granted in the same turn of the loop as the cancellation: pass the slot on.
            self._release(waiter)
            return
        if waiter.state is _State.WAITING:
            user = self._users[waiter.user_id]
            user.queue.remove(waiter)
            self._waiting -= 1
            waiter.state = _State.DONE
            self._stop_notifier(waiter)
            self._forget_if_idle(waiter.user_id, user)
            self._dispatch()

    def _release(self, waiter: _Waiter) -> None:
        """Give a held slot back and grant it to whoever's turn it is."""
        if waiter.state is not _State.GRANTED:
            return
        waiter.state = _State.DONE
        del self._grants[waiter]
        user = self._users[waiter.user_id]
        user.running -= 1
        self._forget_if_idle(waiter.user_id, user)
        self._dispatch()

    def _dispatch(self) -> None:
        """Grant every free slot that someone can take; positions are refreshed soon after."""
        while len(self._grants) < self._total:
            chosen = self._next_turn()
            if chosen is None:
                break
            self._grant(*chosen)
        self._positions_changed()

    def _next_turn(self) -> tuple[_User, _Waiter] | None:
        """The first user in the rotation below their cap with a live waiter, and that waiter."""
        best: tuple[_User, _Waiter] | None = None
        for user in self._users.values():
            if user.running >= self._per_user or (best is not None and user.key > best[0].key):
                continue
            head = user.head()
            if head is not None:
                best = (user, head)
        return best

    def _grant(self, user: _User, waiter: _Waiter) -> None:
        user.queue.remove(waiter)
        self._waiting -= 1
        self._granted_so_far += 1
        user.key = (self._granted_so_far, 1, 0)
        user.running += 1
        waiter.state = _State.GRANTED
        self._grants[waiter] = None
        waiter.future.set_result(None)
        self._stop_notifier(waiter)

    def _forget_if_idle(self, user_id: int, user: _User) -> None:
        # A user with nothing waiting or running has no place to keep; forgetting bounds memory.
        if user.running == 0 and not user.queue:
            del self._users[user_id]

    # --- Positions --------------------------------------------------------------------------

    def _positions_changed(self) -> None:
        # One recomputation per turn of the loop, however many grants and releases it saw.
        if self._refresh is None and self._waiting:
            self._refresh = asyncio.get_running_loop().call_soon(self._refresh_positions)

    def _refresh_positions(self) -> None:
        self._refresh = None
        for waiter, position in self._service_order().items():
            if waiter.on_position is None or position == waiter.latest:
                continue
            waiter.latest = position
            if waiter.notifier is None:
                task = asyncio.create_task(self._notify(waiter, waiter.on_position))
                waiter.notifier = task
                self._notifiers.add(task)
                task.add_done_callback(self._notifiers.discard)

    def _service_order(self) -> dict[_Waiter, int]:
        """Every live waiter's position under the rule in the module docstring."""
        free = self._total - len(self._grants)
        finishing = deque(waiter.user_id for waiter in self._grants)  # oldest first
        running = {user_id: user.running for user_id, user in self._users.items()}
        keys = {user_id: user.key for user_id, user in self._users.items()}
        pending = {
            user_id: deque(waiter for waiter in user.queue if waiter.live)
            for user_id, user in self._users.items()
        }
        turns = [(keys[u], u) for u in pending if pending[u] and running[u] < self._per_user]
        heapq.heapify(turns)
        capped = {u for u in pending if pending[u] and running[u] >= self._per_user}
        granted = self._granted_so_far
        order: dict[_Waiter, int] = {}
        while turns or capped:
            if free == 0 or not turns:
                if not finishing:
                    break  # cannot happen: a full or capped state always has a slot held
                done = finishing.popleft()
                free += 1
                running[done] -= 1
                if done in capped and running[done] < self._per_user:
                    capped.discard(done)
                    heapq.heappush(turns, (keys[done], done))
                continue
            _, user_id = heapq.heappop(turns)
            order[pending[user_id].popleft()] = len(order) + 1
            granted += 1
            free -= 1
            running[user_id] += 1
            finishing.append(user_id)
            keys[user_id] = (granted, 1, 0)
            if not pending[user_id]:
                continue
            if running[user_id] < self._per_user:
                heapq.heappush(turns, (keys[user_id], user_id))
            else:
                capped.add(user_id)
        return order

    async def _notify(self, waiter: _Waiter, on_position: PositionCallback) -> None:
        """Tell one waiter its latest position, one call at a time, throttled."""
        try:
            while waiter.live and waiter.latest is not None and waiter.latest != waiter.sent:
                quiet = self._quiet_left(waiter)
                if quiet > 0:
                    await self._sleep(quiet)
                    continue  # the position may have changed, or the wait ended, meanwhile
                position = waiter.latest
                waiter.sent, waiter.sent_at = position, self._clock()
                try:
                    await on_position(position)
                except Exception:
                    log.exception(
                        "queue position callback failed user=%s position=%d",
                        waiter.user_id,
                        position,
                    )
        finally:
            waiter.notifier = None

    def _quiet_left(self, waiter: _Waiter) -> float:
        if waiter.sent_at is None:
            return 0.0
        return waiter.sent_at + self._interval - self._clock()

    @staticmethod
    def _stop_notifier(waiter: _Waiter) -> None:
        # Not awaited: see the module docstring for why a call in flight is abandoned.
        if waiter.notifier is not None:
            waiter.notifier.cancel()


class _Slot(AbstractAsyncContextManager[None]):
    """The `async with` form of one acquire: wait for the turn, then release on any exit."""

    __slots__ = ("_on_position", "_slots", "_user_id", "_waiter")

    def __init__(
        self, slots: FairSlots, user_id: int, on_position: PositionCallback | None
    ) -> None:
        self._slots = slots
        self._user_id = user_id
        self._on_position = on_position
        self._waiter: _Waiter | None = None

    async def __aenter__(self) -> None:
        if self._waiter is not None:
            raise RuntimeError("a slot from acquire() can be entered only once")
        self._waiter = self._slots._enqueue(self._user_id, self._on_position)
        await self._slots._wait(self._waiter)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Synchronous on purpose: nothing can interrupt the release, whatever ended the block.
        if self._waiter is not None:
            self._slots._release(self._waiter)
