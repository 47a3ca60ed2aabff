"""What operators see of a running bot: generations as metrics, and the /healthz checks."""

from __future__ import annotations

import time
from typing import Final

from bot.core.cometapi import ErrorKind
from bot.core.generation import Generation
from bot.ledger.db import Database
from bot.metrics import Metrics

_UPSTREAM_KINDS: Final = frozenset(kind.value for kind in ErrorKind)


def _seconds(milliseconds: int | None) -> float | None:
    return None if milliseconds is None else milliseconds / 1000


class GenerationWatch:
    """Turns each finished generation into metrics and remembers whether the key works."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.key_refused_at: float | None = None

    def __call__(self, generation: Generation) -> None:
        """One generation got its final status."""
        final = generation.final
        if final is None:
            return
        request = generation.request
        timings = generation.timings
        self._metrics.generation_finished(
            request.model,
            "edit" if request.is_edit else "generation",
            final.status,
            queue_s=_seconds(timings.queue_ms),
            upstream_s=_seconds(timings.upstream_ms) if timings.upstream_ms else None,
            upload_s=_seconds(final.upload_ms),
            cost_usd=generation.cost_usd,
            attempts=final.attempts or (final.answer.attempts if final.answer else None),
        )
        code = final.error_code
        if code in _UPSTREAM_KINDS:
            self._metrics.upstream_error(code)
        if code == ErrorKind.CONFIGURATION.value:
            self.key_refused_at = time.monotonic()
        elif generation.billed:
            # An answer from upstream: the key works again.
            self.key_refused_at = None

    async def image_api(self) -> tuple[bool, str]:
        """Health: the image API did not refuse the key on the latest call that reached it."""
        if self.key_refused_at is None:
            return True, "the key was not refused"
        return False, "the image API refused COMETAPI_KEY on the latest call"


async def database_answers(db: Database) -> tuple[bool, str]:
    """Health: a read on the report connection comes back."""
    row = await db.fetchone("SELECT 1")
    return (row is not None and row[0] == 1), "reads"
