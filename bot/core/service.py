"""Hands out generations: the limits that apply, the reservation, and the drain at shutdown.

Nothing here knows Discord; the /imagine cog is the glue that calls it. Each generation's
life from its reservation to its final status is owned by `bot.core.generation.Generation`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from bot.core.cometapi import CometAPIClient
from bot.core.generation import (
    FinishedObserver,
    Generation,
    GenerationDeps,
    Phase,
    Requester,
)
from bot.core.pricing import PriceBook
from bot.core.slots import FairSlots
from bot.core.validation import GenerationRequest
from bot.ledger.limits import (
    OPEN_POLICY,
    PROMPTS_NOT_KEPT_FLAG,
    Ceilings,
    LimitsStore,
    Policy,
    PromptBlocked,
)
from bot.ledger.periods import next_reset
from bot.ledger.store import NewGeneration, UsageLedger

__all__ = ["Allowance", "GenerationService", "OperatorLimits", "Requester", "ShuttingDown"]

log = logging.getLogger(__name__)

# After the grace, uploads already under way get this much longer before they are cancelled:
# cutting one off leaves the member with images the ledger cannot confirm.
DELIVERY_GRACE_S: Final = 10.0
_CANCEL_WAIT_S: Final = 5.0


class ShuttingDown(Exception):
    """The bot is stopping and takes no new generations."""


@dataclass(frozen=True, slots=True)
class OperatorLimits:
    """The operator's ceilings, from the settings; None means no such limit."""

    user_daily_images: int | None = None
    user_daily_budget_usd: float | None = None
    bot_daily_budget_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Allowance:
    """A member's daily image limits where they are, and what today used of each.

    `None` for a count means it is not shown (an admin never sees what a member did in
    other servers); `None` for a limit means there is none.
    """

    operator_limit: int | None
    operator_used: int | None
    server_limit: int | None
    server_used: int | None
    resets_at: datetime

    @property
    def remaining(self) -> int | None:
        """Images left today under every limit shown, or None when none limits them."""
        left = [
            max(limit - used, 0)
            for limit, used in (
                (self.operator_limit, self.operator_used),
                (self.server_limit, self.server_used),
            )
            if limit is not None and used is not None
        ]
        return min(left) if left else None


class GenerationService:
    """Reserves generations under every limit and sees each one through to its end."""

    def __init__(
        self,
        client: CometAPIClient,
        ledger: UsageLedger,
        *,
        slots: FairSlots,
        operator: OperatorLimits | None = None,
        prices: PriceBook | None = None,
        observer: FinishedObserver | None = None,
    ) -> None:
        self._ledger = ledger
        self._limits = LimitsStore(ledger.connection, ledger.now)
        self._prices = prices or PriceBook()
        self._operator = operator or OperatorLimits()
        self._deps = GenerationDeps(client, ledger, self._prices, slots, observer)
        self._accepting = True
        self._live: dict[Generation, asyncio.Task[object]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def operator(self) -> OperatorLimits:
        """The operator's limits in force."""
        return self._operator

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

    @property
    def slots(self) -> FairSlots:
        """The fair generation slots (for metrics and tests)."""
        return self._deps.slots

    @property
    def in_flight(self) -> int:
        """Generations reserved and not yet finished."""
        return len(self._live)

    async def _policy(self, requester: Requester) -> Policy:
        if requester.guild_id is None:
            return OPEN_POLICY
        return await self._limits.policy(requester.guild_id, requester.user_id)

    def _ceilings(self, policy: Policy, role_ids: tuple[int, ...]) -> Ceilings:
        return Ceilings(
            operator_daily_images=self._operator.user_daily_images,
            # The server's (or the member's roles') limit applies beside the operator's: a 0
            # or a generous role never lifts the operator's ceiling.
            server_daily_images=policy.daily_images_for(role_ids),
            user_daily_budget_usd=self._operator.user_daily_budget_usd,
            server_daily_budget_usd=policy.limits.daily_budget_usd,
            bot_daily_budget_usd=self._operator.bot_daily_budget_usd,
        )

    async def allowance(
        self,
        user_id: int,
        guild_id: int | None,
        *,
        own: bool,
        role_ids: tuple[int, ...] = (),
    ) -> Allowance:
        """The member's daily limits here; `own` is False for an admin looking at a member.

        An admin sees only what the member did in the admin's server: the count across
        servers behind the operator's limit is the member's own business.
        """
        policy = await self._policy(Requester(user_id, guild_id, None))
        ceilings = self._ceilings(policy, role_ids)
        counts = await self._ledger.counts(user_id, guild_id)
        in_server = guild_id is not None
        return Allowance(
            operator_limit=ceilings.operator_daily_images,
            operator_used=counts.operator_images if own else None,
            server_limit=ceilings.server_daily_images if in_server else None,
            server_used=counts.server_images if in_server else None,
            resets_at=next_reset(self._ledger.now()),
        )

    @asynccontextmanager
    async def start(
        self,
        request: GenerationRequest,
        requester: Requester,
        *,
        parent_id: int | None = None,
        private: bool = False,
    ) -> AsyncIterator[Generation]:
        """Reserve a generation and own it for the block; its final status is always written.

        Raises ShuttingDown, the LimitRefused that stopped it, or LedgerBusy, all before
        anything is reserved. `parent_id` names the generation a reroll reran; `private`
        results are shown only to the requester. The server's limits are read on every
        request, so an admin's change applies to the next one: the rules on who, where and
        what first, then every daily limit and budget, checked and reserved in one statement.
        """
        generation = await self._reserve(request, requester, parent_id, private)
        task = asyncio.current_task()
        assert task is not None
        self._live[generation] = task
        self._idle.clear()
        try:
            yield generation
        except BaseException as error:
            await asyncio.shield(generation.close(error))
            raise
        else:
            await asyncio.shield(generation.close(None))
        finally:
            self._live.pop(generation, None)
            if not self._live:
                self._idle.set()

    async def _reserve(
        self,
        request: GenerationRequest,
        requester: Requester,
        parent_id: int | None,
        private: bool,
    ) -> Generation:
        if not self._accepting:
            raise ShuttingDown
        policy = await self._policy(requester)
        refusal = policy.refusal(
            request.model,
            request.n,
            channels=(requester.channel_id, requester.parent_channel_id),
            prompt=request.prompt,
            role_ids=requester.role_ids,
            moderation=request.moderation,
            age_restricted=requester.age_restricted,
        )
        if isinstance(refusal, PromptBlocked):
            # Kept apart from generations, for the server's admins: the term is not shown
            # to the channel, only recorded here.
            log.info(
                "prompt refused by a blocked term guild=%s user=%s",
                requester.guild_id,
                requester.user_id,
            )
            await self._limits.record_refused(
                requester.guild_id,
                requester.user_id,
                requester.channel_id,
                "blocked_term",
                refusal.term,
            )
        if refusal is not None:
            raise refusal
        request_id = uuid.uuid4().hex[:16]
        keep_prompt = PROMPTS_NOT_KEPT_FLAG not in policy.flags
        reserved = self._prices.reservation(
            request.model,
            size=request.shown_size,
            quality=request.shown_quality,
            n=request.n,
            prompt=request.prompt,
            references=len(request.references),
        )
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
                reserved_usd=reserved,
                # A server can choose not to keep prompts: then nothing of it is stored.
                options_json=request.options().to_json() if keep_prompt else None,
                parent_id=parent_id,
                private=private,
                kind="edit" if request.is_edit else "generation",
                reference_count=len(request.references),
            ),
            self._ceilings(policy, requester.role_ids),
        )
        # A shutdown that began while the row was written must still see it: checked again.
        generation = Generation(
            row_id,
            request,
            requester,
            request_id,
            self._deps,
            keep_prompt=keep_prompt,
        )
        if not self._accepting:
            await generation.fail("shutting_down", "the bot began stopping during the reservation")
            raise ShuttingDown
        return generation

    def stop_accepting(self) -> None:
        """Refuse new generations from now on."""
        self._accepting = False

    async def drain(self, grace_s: float) -> int:
        """Wait up to `grace_s` for generations in flight, then cancel; return how many.

        Uploads under way get DELIVERY_GRACE_S more before they are cut off.
        """
        with suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        cancelled = self._cancel(lambda g: g.phase is not Phase.DELIVERING)
        if self._live:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=DELIVERY_GRACE_S)
        # Only the uploads are left to cut off: the others were cancelled above.
        cancelled += self._cancel(lambda g: g.phase is Phase.DELIVERING)
        if self._live:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=_CANCEL_WAIT_S)
        return cancelled

    def _cancel(self, which: Callable[[Generation], bool]) -> int:
        chosen = [task for generation, task in self._live.items() if which(generation)]
        for task in chosen:
            task.cancel()
        return len(chosen)
