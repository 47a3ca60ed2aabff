"""One generation from reservation to ledger row: quota, concurrency, upstream, bookkeeping.

Nothing here knows Discord; the /imagine cog is the glue that calls it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime

from bot.core.cometapi import CometAPIClient, GenerationResult, UpstreamError
from bot.core.pricing import PriceBook
from bot.core.validation import GenerationRequest
from bot.ledger.limits import OPEN_POLICY, LimitsStore, Policy
from bot.ledger.periods import next_reset
from bot.ledger.store import NewGeneration, UsageLedger

log = logging.getLogger(__name__)

QueuedCallback = Callable[[int], Awaitable[None]]


def _log_outcome(level: int, reservation: Reservation, outcome: str, extra: str) -> None:
    """One structured line per step of a generation, with the fields operators grep for."""
    log.log(
        level,
        "generation outcome=%s request_id=%s guild=%s user=%s model=%s latency_ms=%d %s",
        outcome,
        reservation.request_id,
        reservation.requester.guild_id,
        reservation.requester.user_id,
        reservation.request.model,
        reservation.elapsed_ms(),
        extra,
    )


class ShuttingDown(Exception):
    """The bot is stopping and takes no new generations."""


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, and where."""

    user_id: int
    guild_id: int | None
    channel_id: int | None


@dataclass(frozen=True, slots=True)
class Allowance:
    """A member's daily image limit where they are, and how much of it today used."""

    used: int
    limit: int
    """0 means unlimited."""
    server_limit: bool
    """Whether the limit is the server's own rather than the bot's USER_DAILY_IMAGE_LIMIT."""
    resets_at: datetime

    @property
    def remaining(self) -> int | None:
        """Images left today, or None when there is no limit."""
        return None if self.limit == 0 else max(self.limit - self.used, 0)


@dataclass(slots=True)
class Reservation:
    """A generation with its pending ledger row."""

    row_id: int
    request: GenerationRequest
    requester: Requester
    request_id: str
    started: float = field(default_factory=time.monotonic)

    def elapsed_ms(self) -> int:
        """Milliseconds since the reservation was made."""
        return int((time.monotonic() - self.started) * 1000)


class GenerationService:
    """Runs generations under the process-wide concurrency cap and records each one."""

    def __init__(
        self,
        client: CometAPIClient,
        ledger: UsageLedger,
        *,
        max_concurrent: int,
        daily_limit: int,
        prices: PriceBook | None = None,
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._limits = LimitsStore(ledger.connection, ledger.now)
        self._prices = prices or PriceBook()
        self._slots = asyncio.Semaphore(max_concurrent)
        self._waiting = 0
        self._daily_limit = daily_limit
        self._accepting = True
        self._running: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def daily_limit(self) -> int:
        """Images per user per UTC day; 0 means unlimited."""
        return self._daily_limit

    @property
    def ledger(self) -> UsageLedger:
        """The usage ledger this service writes to."""
        return self._ledger

    @property
    def limits(self) -> LimitsStore:
        """The per-server limits this service enforces."""
        return self._limits

    @property
    def prices(self) -> PriceBook:
        """The prices the service estimates costs with."""
        return self._prices

    async def _policy(self, requester: Requester) -> Policy:
        if requester.guild_id is None:
            return OPEN_POLICY
        return await self._limits.policy(requester.guild_id, requester.user_id)

    def _effective_limit(self, policy: Policy) -> tuple[int, bool]:
        # A server's own per-member limit replaces the bot's and counts that server's images.
        own = policy.limits.user_daily_images
        return (self._daily_limit, False) if own is None else (own, True)

    async def allowance(self, user_id: int, guild_id: int | None) -> Allowance:
        """The member's daily limit where they are, and what today used of it."""
        policy = await self._policy(Requester(user_id, guild_id, None))
        limit, server_limit = self._effective_limit(policy)
        used = await self._ledger.images_today(user_id, guild_id if server_limit else None)
        return Allowance(used, limit, server_limit, next_reset(self._ledger.now()))

    async def reserve(self, request: GenerationRequest, requester: Requester) -> Reservation:
        """Write the pending row, or raise ShuttingDown or the LimitRefused that stopped it.

        The server's limits are read here, on every request, so an admin's change applies to
        the next one: blocked member, allowed models and images per request first, then the
        daily image limit and the daily budget, checked and reserved in one statement.
        """
        if not self._accepting:
            raise ShuttingDown
        policy = await self._policy(requester)
        refusal = policy.refusal(request.model, request.n)
        if refusal is not None:
            raise refusal
        daily_limit, server_limit = self._effective_limit(policy)
        request_id = uuid.uuid4().hex[:12]
        row_id = await self._ledger.reserve(
            NewGeneration(
                user_id=requester.user_id,
                guild_id=requester.guild_id,
                channel_id=requester.channel_id,
                model=request.model,
                size=request.shown_size,
                quality=request.shown_quality,
                n_requested=request.n,
                request_id=request_id,
            ),
            daily_limit,
            guild_scoped=server_limit,
            daily_budget_usd=policy.limits.daily_budget_usd,
        )
        return Reservation(row_id, request, requester, request_id)

    async def release(self, reservation: Reservation) -> None:
        """Give back a reservation that never reached upstream."""
        await self._ledger.release(reservation.row_id)

    @asynccontextmanager
    async def _slot(self, on_queued: QueuedCallback | None) -> AsyncIterator[None]:
        if self._slots.locked() and on_queued is not None:
            self._waiting += 1
            try:
                await on_queued(self._waiting)
                await self._slots.acquire()
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    @asynccontextmanager
    async def tracking(self) -> AsyncIterator[None]:
        """Mark the current task as a generation in flight, for graceful shutdown."""
        task = asyncio.current_task()
        assert task is not None
        self._running.add(task)
        self._idle.clear()
        try:
            yield
        finally:
            self._running.discard(task)
            if not self._running:
                self._idle.set()

    async def generate(
        self, reservation: Reservation, on_queued: QueuedCallback | None = None
    ) -> GenerationResult:
        """Call upstream within a concurrency slot; a failure is recorded and re-raised."""
        request = reservation.request
        async with self._slot(on_queued):
            try:
                result = await self._client.generate(request)
            except UpstreamError as error:
                await self.record_failure(reservation, error.kind.value, error.detail)
                raise
        _log_outcome(
            logging.INFO,
            reservation,
            "upstream_ok",
            f"images={len(result.images)} attempts={result.attempts}",
        )
        return result

    async def record_delivery(
        self, reservation: Reservation, result: GenerationResult, delivered: int
    ) -> None:
        """Complete the row once the images reached the user, with its estimated cost."""
        usage = result.usage
        request = reservation.request
        input_tokens = usage.input_tokens if usage else None
        output_tokens = usage.output_tokens if usage else None
        estimate = self._prices.estimate(
            request.model,
            size=request.shown_size,
            quality=request.shown_quality,
            images=delivered,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        _log_outcome(
            logging.INFO,
            reservation,
            "ok",
            f"images={delivered} cost_usd={estimate.cost_usd} "
            f"tokens={usage.total_tokens if usage else None}",
        )
        await self._ledger.complete(
            reservation.row_id,
            images_delivered=delivered,
            latency_ms=reservation.elapsed_ms(),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=usage.total_tokens if usage else None,
            cost_usd=estimate.cost_usd,
            price_source=estimate.source.value if estimate.source else None,
            price_as_of=estimate.as_of.isoformat() if estimate.as_of else None,
        )

    async def record_failure(self, reservation: Reservation, code: str, message: str) -> None:
        """Mark the row failed, which gives the reservation back to the user's allowance."""
        _log_outcome(logging.WARNING, reservation, "failed", f"code={code} detail={message!r}")
        await self._ledger.fail(
            reservation.row_id,
            error_code=code,
            error_message=message,
            latency_ms=reservation.elapsed_ms(),
        )

    async def record_interrupted(self, reservation: Reservation) -> None:
        """Mark the row interrupted by a shutdown; the user's allowance gets it back."""
        _log_outcome(logging.WARNING, reservation, "interrupted", "code=interrupted")
        await self._ledger.interrupt(reservation.row_id, latency_ms=reservation.elapsed_ms())

    def stop_accepting(self) -> None:
        """Refuse new generations from now on."""
        self._accepting = False

    async def drain(self, grace_s: float) -> int:
        """Wait up to `grace_s` for generations in flight; cancel the rest and return how many."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        leftovers = list(self._running)
        for task in leftovers:
            task.cancel()
        if leftovers:
            await asyncio.wait(leftovers, timeout=5)
        return len(leftovers)
