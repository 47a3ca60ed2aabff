"""What a result's buttons and /history read back: the stored request, its message, deletion."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest

from bot.core.validation import ImagineOptions, validate
from bot.ledger.export import export_csv
from bot.ledger.periods import Period
from bot.ledger.reports import Scope, build_report, window_for
from bot.ledger.results import HISTORY_MAX, history, mark_deleted, stored_generation
from bot.ledger.store import FinalStatus, UsageLedger
from tests.conftest import Clock, answer, generation, write_row


async def test_a_delivered_row_reads_back_with_its_request_and_message(
    ledger: UsageLedger,
) -> None:
    """The options to reroll, the parent, the message and the time split all come back."""
    request = validate(ImagineOptions(prompt="a fox", model="dall-e-3", style="natural"), "x")
    entry = replace(
        generation(model="dall-e-3"), options_json=request.options().to_json(), parent_id=None
    )
    parent = await write_row(ledger, entry, FinalStatus("delivered", images_delivered=1))
    child = await write_row(
        ledger,
        replace(entry, parent_id=parent, private=True),
        FinalStatus(
            "delivered",
            images_delivered=1,
            revised_prompt="a red fox",
            result_channel_id=20,
            result_message_id=555,
            queue_ms=1,
            upstream_ms=2,
            upload_ms=3,
        ),
        upstream=answer(0.04),
    )
    stored = await stored_generation(ledger.reader, child)
    assert stored is not None
    assert stored.options_json is not None
    assert ImagineOptions.from_json(stored.options_json) == request.options()
    assert (stored.parent_id, stored.private, stored.billed) == (parent, True, True)
    assert (stored.result_channel_id, stored.result_message_id) == (20, 555)
    assert (stored.queue_ms, stored.upstream_ms, stored.upload_ms) == (1, 2, 3)
    assert stored.revised_prompt == "a red fox"
    assert await stored_generation(ledger.reader, child + 100) is None


async def test_history_lists_only_the_members_own_rows_newest_first(
    ledger: UsageLedger, clock: Clock
) -> None:
    """Another member's rows never appear; the count is capped."""
    ids = []
    for minute, user in enumerate((1, 2, 1, 1)):
        clock.at(f"2026-11-21T12:0{minute}:00")
        ids.append(
            await write_row(
                ledger,
                generation(user_id=user, request_id=f"r{minute}"),
                FinalStatus("delivered", images_delivered=1),
            )
        )
    mine = await history(ledger.reader, 1, 10)
    assert [row.id for row in mine] == [ids[3], ids[2], ids[0]]
    assert [row.id for row in await history(ledger.reader, 1, 2)] == [ids[3], ids[2]]
    assert len(await history(ledger.reader, 1, 10_000)) <= HISTORY_MAX


async def test_a_deletion_is_recorded_once_and_the_row_stays(
    ledger: UsageLedger, clock: Clock
) -> None:
    """The row keeps counting; a second delete of the same result changes nothing."""
    row = await write_row(ledger, generation(), FinalStatus("delivered", images_delivered=1))
    assert await mark_deleted(ledger.connection, row, 77, clock())
    assert not await mark_deleted(ledger.connection, row, 78, clock())
    stored = await stored_generation(ledger.reader, row)
    assert stored is not None
    assert stored.deleted_at is not None
    assert (stored.status, stored.images_delivered) == ("delivered", 1)


def test_options_round_trip_and_ignore_unknown_keys() -> None:
    """JSON from a newer bot with an extra key still reads; a missing prompt does not."""
    options = ImagineOptions(prompt="p \u2603", model="gpt-image-2", n=2, output_compression=0)
    assert ImagineOptions.from_json(options.to_json()) == options
    assert ImagineOptions.from_json('{"prompt": "x", "future": 1}') == ImagineOptions(prompt="x")
    with pytest.raises(ValueError, match="no prompt"):
        ImagineOptions.from_json('{"model": "dall-e-3"}')


async def test_edits_are_counted_apart_in_reports_and_the_export(
    ledger: UsageLedger, tmp_path: Path
) -> None:
    """An edit with two references: the report counts it as an edit, the CSV says so."""
    await write_row(ledger, generation(), FinalStatus("delivered", images_delivered=1))
    await write_row(
        ledger,
        replace(generation(request_id="e"), kind="edit", reference_count=2),
        FinalStatus("delivered", images_delivered=1),
    )
    window = window_for(Period.TODAY, ledger.now())
    report = await build_report(ledger.reader, Scope(guild_id=10), window)
    assert (report.totals.requests, report.totals.edits) == (2, 1)
    result = await export_csv(
        ledger.reader, Scope(guild_id=10), window, tmp_path, name="e", limit_bytes=10_000_000
    )
    with result.files[0].open(encoding="utf-8", newline="") as handle:
        parsed = list(csv.DictReader(handle))
    assert [(row["kind"], row["references"]) for row in parsed] == [
        ("generation", "0"),
        ("edit", "2"),
    ]
