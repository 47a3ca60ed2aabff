"""One final status per row: `finish` writes it once; start-up closes what a dead process left."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.ledger.store import FinalStatus, UsageLedger
from tests.conftest import NO_CEILINGS, Clock, add_row, answer, generation

_COLUMNS = (
    "status, images_delivered, error_code, error_message, latency_ms, attempts, "
    "upstream_request_id, finished_at, billed, cost_usd, spend_usd, quota_images"
)


async def stored(ledger: UsageLedger, row: int) -> tuple[object, ...]:
    (values,) = await ledger.connection.execute_fetchall(
        f"SELECT {_COLUMNS} FROM generations WHERE id = ?",  # noqa: S608 (a constant)
        (row,),
    )
    return tuple(values)


FINALS = {
    "delivered": FinalStatus("delivered", images_delivered=2),
    "failed": FinalStatus("failed", error_code="timeout", error_message="slow", attempts=3),
    "interrupted": FinalStatus("interrupted", error_code="interrupted"),
    "interrupted_delivery": FinalStatus(
        "interrupted_delivery", images_delivered=1, error_code="interrupted"
    ),
    "delivery_failed": FinalStatus(
        "failed", images_delivered=1, error_code="delivery_failed", upstream_request_id="other"
    ),
}


@pytest.mark.parametrize("first", list(FINALS))
@pytest.mark.parametrize("second", list(FINALS))
async def test_finish_writes_exactly_one_final_status(
    ledger: UsageLedger, clock: Clock, first: str, second: str
) -> None:
    """The first `finish` wins; a second returns False and changes nothing, even its time."""
    row = await ledger.reserve(generation(n=2, reserved_usd=0.2), NO_CEILINGS)
    await ledger.record_answer(row, answer(0.1))
    assert await ledger.finish(row, FINALS[first], latency_ms=10)
    before = await stored(ledger, row)
    clock.now += timedelta(minutes=5)
    assert not await ledger.finish(row, FINALS[second], latency_ms=99)
    assert await stored(ledger, row) == before
    assert before[0] == FINALS[first].status


async def test_an_answer_after_the_final_status_changes_nothing(ledger: UsageLedger) -> None:
    """A late record_answer (the row already closed, unbilled) neither bills nor re-prices it."""
    row = await ledger.reserve(generation(reserved_usd=0.2), NO_CEILINGS)
    assert await ledger.finish(row, FINALS["interrupted"], latency_ms=1)
    before = await stored(ledger, row)
    await ledger.record_answer(row, answer(0.5, upstream_request_id="late"))
    assert await stored(ledger, row) == before


async def test_finishing_a_row_that_does_not_exist_is_false(ledger: UsageLedger) -> None:
    """Nothing to close, nothing written."""
    assert not await ledger.finish(12345, FINALS["delivered"], latency_ms=1)


async def test_finish_keeps_upstream_ids_unless_given(ledger: UsageLedger) -> None:
    """attempts and upstream_request_id come from the answer; a final status may set them."""
    kept = await ledger.reserve(generation(), NO_CEILINGS)
    await ledger.record_answer(kept, answer(0.1, attempts=2, upstream_request_id="u-1"))
    await ledger.finish(kept, FinalStatus("delivered", images_delivered=1), latency_ms=1)
    failed = await ledger.reserve(generation(), NO_CEILINGS)
    await ledger.finish(failed, FINALS["failed"], latency_ms=1)
    ids = await ledger.connection.execute_fetchall(
        "SELECT attempts, upstream_request_id FROM generations ORDER BY id"
    )
    assert [tuple(row) for row in ids] == [(2, "u-1"), (3, None)]


async def test_long_error_messages_are_cut(ledger: UsageLedger) -> None:
    """An error message is kept to its first 1000 characters."""
    row = await ledger.reserve(generation(), NO_CEILINGS)
    await ledger.finish(row, FinalStatus("failed", error_message="x" * 5000), latency_ms=1)
    assert len(str((await stored(ledger, row))[3])) == 1000


@pytest.mark.parametrize("status", ["pending", "ok", "cancelled", ""])
def test_only_final_statuses_can_be_written(status: str) -> None:
    """`pending` is where a row starts; v2's `ok` is `delivered` now."""
    with pytest.raises(ValueError, match="not a final status"):
        FinalStatus(status)


async def test_stale_pending_rows_end_by_whether_upstream_had_answered(
    ledger: UsageLedger, clock: Clock
) -> None:
    """Billed pending rows end interrupted_delivery, keeping their cost; others end interrupted.

    Rows that already had a final status are left alone, and a second start finds nothing.
    """
    unbilled = await add_row(ledger, generation(n=2, reserved_usd=0.3), "pending")
    billed = await add_row(ledger, generation(n=2, reserved_usd=0.3), "answered", cost=0.2)
    done = await add_row(ledger, generation(n=1, reserved_usd=0.1), "delivered", cost=0.1)
    done_before = await stored(ledger, done)
    counts = await ledger.counts(1, 10)
    assert (counts.operator_images, counts.user_spend_usd) == (5, pytest.approx(0.6))

    clock.now += timedelta(hours=1)
    assert await ledger.mark_stale_pending() == 2
    assert await ledger.mark_stale_pending() == 0

    assert await ledger.status_of(unbilled) == "interrupted"
    assert await ledger.status_of(billed) == "interrupted_delivery"
    assert await stored(ledger, done) == done_before
    unbilled_row, billed_row = await stored(ledger, unbilled), await stored(ledger, billed)
    # billed, cost_usd, spend_usd, quota_images
    assert unbilled_row[8:] == (0, None, 0.0, 0)
    assert billed_row[8:] == (1, 0.2, 0.2, 0)
    assert unbilled_row[7] == billed_row[7] == "2026-11-21T13:00:00.000000Z"
    counts = await ledger.counts(1, 10)
    assert (counts.operator_images, counts.user_spend_usd) == (1, pytest.approx(0.3))
