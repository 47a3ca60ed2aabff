"""One generation's life, from its reservation to its one final status in the ledger.

A `Generation` is handed out by `GenerationService.start` (an async context manager) once the
ledger has reserved its images and estimated cost. Whatever ends the block, `BaseException`
included, exactly one final status is written:

- `delivered`: the member received `images_sent` images;
- `failed` with a code: said by the caller (`fail`), by upstream's error, or `internal_error`
  for an exception nobody handled;
- `interrupted`: the bot stopped (cancellation) before upstream answered: free;
- `interrupted_delivery`: the bot stopped while uploading images upstream had made: billed,
  and the row says how many images the member is known to have received.

From the moment upstream answers the row is marked billed with the answer's cost, so even a
crash before the final status leaves a row the next start closes as billed. Nothing here
knows Discord: the glue reports what it delivered through `sent` and `delivered`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from bot.core.cometapi import CometAPIClient, GenerationResult, TokenUsage, UpstreamError
from bot.core.pricing import PriceBook
from bot.core.slots import FairSlots
from bot.core.validation import GenerationRequest
from bot.ledger.busy import LedgerBusy
from bot.ledger.store import FinalStatus, UpstreamAnswer, UsageLedger

log = logging.getLogger(__name__)

PositionCallback = Callable[[int], Awaitable[None]]


class Phase(StrEnum):
    """Where a generation is in its life."""

    RESERVED = "reserved"
    QUEUED = "queued"
    UPSTREAM = "upstream"
    DELIVERING = "delivering"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked, and where."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    parent_channel_id: int | None = None
    """For a thread: the channel it is in (a server's allowed channels cover their threads)."""
    role_ids: tuple[int, ...] = ()
    """The member's roles in the server (empty in DMs), for role allowances and access."""
    age_restricted: bool = False
    """Whether the channel is age-restricted (NSFW), where a server may allow moderation low."""


@dataclass(slots=True)
class Timings:
    """Where a generation's time went, in milliseconds (0 until the step happened)."""

    queue_ms: int = 0
    upstream_ms: int = 0
    upload_ms: int = 0


FinishedObserver = Callable[["Generation"], None]
"""Told of every generation once its final status is set (metrics, health)."""


@dataclass(frozen=True, slots=True)
class GenerationDeps:
    """What every generation of the process shares; the service builds it once."""

    client: CometAPIClient
    ledger: UsageLedger
    prices: PriceBook
    slots: FairSlots
    observer: FinishedObserver | None = None


@dataclass(eq=False)
class Generation:
    """One generation with its pending ledger row; the service's `start` hands it out."""

    row_id: int
    request: GenerationRequest
    requester: Requester
    request_id: str
    _deps: GenerationDeps
    keep_prompt: bool = True
    """False where the server keeps no prompts: the revised prompt is not stored either."""
    started: float = field(default_factory=time.monotonic)
    phase: Phase = Phase.RESERVED
    result: GenerationResult | None = None
    images_sent: int = 0
    timings: Timings = field(default_factory=Timings)
    final: FinalStatus | None = None
    _upload_started: float | None = None
    _answer: UpstreamAnswer | None = None

    @property
    def billed(self) -> bool:
        """Whether upstream answered (a 200), so the call costs money whatever follows."""
        return self._answer is not None

    @property
    def finished(self) -> bool:
        """Whether the final status is written."""
        return self.final is not None

    def elapsed_ms(self) -> int:
        """Milliseconds since the reservation."""
        return int((time.monotonic() - self.started) * 1000)

    async def call_upstream(self, on_position: PositionCallback | None = None) -> GenerationResult:
        """Wait for a fair slot, then generate; an upstream failure is this row's final status."""
        self._expect(Phase.RESERVED)
        self.phase = Phase.QUEUED
        queued_at = time.monotonic()
        async with self._deps.slots.acquire(self.requester.user_id, on_position=on_position):
            self.timings.queue_ms = _ms_since(queued_at)
            self.phase = Phase.UPSTREAM
            called_at = time.monotonic()
            try:
                result = await self._call()
            except UpstreamError as error:
                self.timings.upstream_ms = _ms_since(called_at)
                if error.billed:
                    # Upstream made the images (a 200) that the bot could not use.
                    await self._record_answer(
                        self.request.n, error.usage, error.attempts, error.upstream_request_id
                    )
                await self._finish(
                    FinalStatus(
                        "failed",
                        error_code=error.kind.value,
                        error_message=error.detail,
                        attempts=error.attempts,
                        upstream_request_id=error.upstream_request_id,
                    )
                )
                raise
            self.timings.upstream_ms = _ms_since(called_at)
        self.result = result
        self.phase = Phase.DELIVERING
        await self._record_answer(
            len(result.images), result.usage, result.attempts, result.upstream_request_id
        )
        return result

    async def _call(self) -> GenerationResult:
        request = self.request
        if request.is_edit:
            return await self._deps.client.edit(
                fields=request.edit_fields(),
                images=request.references,
                mask=request.mask,
                request_id=self.request_id,
            )
        return await self._deps.client.generate(request, request_id=self.request_id)

    def uploading(self) -> None:
        """The glue starts sending images to the member (for the upload timing)."""
        if self._upload_started is None:
            self._upload_started = time.monotonic()

    def sent(self, images: int) -> None:
        """The glue confirms that `images` more images reached the member."""
        self.images_sent += images

    async def delivered(
        self, *, channel_id: int | None = None, message_id: int | None = None
    ) -> None:
        """Final status: the member received the images `sent` counted, in that message."""
        self._expect(Phase.DELIVERING)
        await self._finish(
            FinalStatus(
                "delivered",
                images_delivered=self.images_sent,
                result_channel_id=channel_id,
                result_message_id=message_id,
            )
        )

    async def fail(self, code: str, message: str) -> None:
        """Final status: failed with `code`; billed if upstream had already answered."""
        await self._finish(
            FinalStatus(
                "failed", images_delivered=self.images_sent, error_code=code, error_message=message
            )
        )

    async def close(self, error: BaseException | None) -> None:
        """Write the final status the way the block ended, unless one was written already."""
        if self.finished:
            return
        if error is None:
            log.error("generation ended without a final status request_id=%s", self.request_id)
            await self.fail("no_final_status", "the generation ended without saying how")
        elif isinstance(error, Exception):
            await self.fail("internal_error", f"{type(error).__name__} after {self.phase.value}")
        elif self.billed:
            # Cancelled (a shutdown) or interrupted mid-upload: what Discord got is unknown
            # beyond the images it confirmed, and upstream billed the call either way.
            await self._finish(
                FinalStatus(
                    "interrupted_delivery",
                    images_delivered=self.images_sent,
                    error_code="interrupted",
                    error_message=(
                        f"the bot stopped after upstream answered: {self.images_sent} of "
                        f"{len(self.result.images) if self.result else 0} images confirmed "
                        "delivered, the rest may or may not have reached the member"
                    ),
                )
            )
        else:
            await self._finish(
                FinalStatus(
                    "interrupted",
                    error_code="interrupted",
                    error_message=f"the bot stopped while the generation was {self.phase.value}",
                )
            )

    async def _record_answer(
        self,
        images: int,
        usage: TokenUsage | None,
        attempts: int,
        upstream_request_id: str | None,
    ) -> None:
        request = self.request
        estimate = self._deps.prices.estimate(
            request.model,
            size=request.shown_size,
            quality=request.shown_quality,
            images=images,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
        )
        self._answer = UpstreamAnswer(
            attempts=attempts,
            upstream_request_id=upstream_request_id,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            cost_usd=estimate.cost_usd,
            price_source=estimate.source.value if estimate.source else None,
            price_as_of=estimate.as_of.isoformat() if estimate.as_of else None,
        )
        try:
            await self._deps.ledger.record_answer(self.row_id, self._answer)
        except LedgerBusy:
            # The final status carries the answer again; nothing is lost if that one lands.
            log.error("could not mark the row billed yet request_id=%s", self.request_id)
        self._log(
            logging.INFO,
            "upstream_ok" if self.result else "upstream_unusable",
            f"images={images} cost_usd={estimate.cost_usd} "
            f"tokens={usage.total_tokens if usage else None}",
        )

    async def _finish(self, final: FinalStatus) -> None:
        if self.finished:
            return
        self.phase = Phase.FINISHED
        if self._upload_started is not None:
            self.timings.upload_ms = _ms_since(self._upload_started)
        revised = (
            next(
                (image.revised_prompt for image in self.result.images if image.revised_prompt), None
            )
            if self.result and self.keep_prompt
            else None
        )
        final = replace(
            final,
            answer=self._answer,
            revised_prompt=revised,
            queue_ms=self.timings.queue_ms,
            upstream_ms=self.timings.upstream_ms,
            upload_ms=self.timings.upload_ms if self._upload_started is not None else None,
        )
        self.final = final
        self._tell_observer()
        level = logging.INFO if final.status == "delivered" else logging.WARNING
        detail = f"images={final.images_delivered} billed={int(self.billed)}"
        if final.error_code:
            detail += f" code={final.error_code} detail={final.error_message!r}"
        self._log(level, final.status, detail)
        try:
            # Shielded: a second cancellation (a hurried shutdown) must not lose the status.
            await asyncio.shield(
                self._deps.ledger.finish(self.row_id, final, latency_ms=self.elapsed_ms())
            )
        except LedgerBusy:
            log.error(
                "could not write the final status request_id=%s: the database stayed locked; "
                "the next start closes the row",
                self.request_id,
            )

    @property
    def cost_usd(self) -> float | None:
        """The estimated cost of upstream's answer, when it was billed."""
        return self._answer.cost_usd if self._answer else None

    def _tell_observer(self) -> None:
        observer = self._deps.observer
        if observer is None:
            return
        try:
            observer(self)
        except Exception:
            # Metrics must never change a generation's outcome.
            log.exception("generation observer failed request_id=%s", self.request_id)

    def _expect(self, phase: Phase) -> None:
        if self.phase is not phase:
            raise RuntimeError(f"generation is {self.phase.value}, not {phase.value}")

    def _log(self, level: int, outcome: str, extra: str) -> None:
        """One structured line per step, with the fields operators grep for."""
        answer = self._answer
        attempts = answer.attempts if answer else (self.final.attempts if self.final else None)
        upstream_id = (
            answer.upstream_request_id
            if answer
            else (self.final.upstream_request_id if self.final else None)
        )
        log.log(
            level,
            "generation outcome=%s request_id=%s upstream_request_id=%s attempts=%s guild=%s "
            "user=%s model=%s latency_ms=%d queue_ms=%d upstream_ms=%d %s",
            outcome,
            self.request_id,
            upstream_id,
            attempts,
            self.requester.guild_id,
            self.requester.user_id,
            self.request.model,
            self.elapsed_ms(),
            self.timings.queue_ms,
            self.timings.upstream_ms,
            extra,
        )


def _ms_since(moment: float) -> int:
    return int((time.monotonic() - moment) * 1000)
