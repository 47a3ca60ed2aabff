"""One final status on every exit path of a generation, against the fake CometAPI on loopback."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from bot.core.cometapi import CometAPIClient, RetryPolicy, UpstreamError
from bot.core.generation import Generation, Phase, Requester
from bot.core.service import GenerationService, OperatorLimits, ShuttingDown
from bot.core.slots import FairSlots
from bot.core.validation import GenerationRequest, ImagineOptions, validate
from bot.ledger.store import open_ledger
from tests.fakes.fake_cometapi import FakeCometAPI, Reply

KEY = "sk-generation-test-key-0123"
WHO = Requester(user_id=7, guild_id=70, channel_id=700)


@dataclass
class Rig:
    """A service on a real SQLite file, calling the fake CometAPI."""

    service: GenerationService
    comet: FakeCometAPI
    database: Path

    def rows(self) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.database) as db:
            return db.execute(
                "SELECT status, billed, error_code, images_delivered, cost_usd IS NOT NULL "
                "FROM generations ORDER BY id"
            ).fetchall()


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with (
        FakeCometAPI(api_key=KEY) as comet,
        aiohttp.ClientSession() as session,
        open_ledger(tmp_path / "usage.db") as ledger,
    ):
        client = CometAPIClient(
            session,
            base_url=comet.base_url,
            api_key=SecretStr(KEY),
            timeout_s=5,
            retry=RetryPolicy(base_delay_s=0.001, max_delay_s=0.002),
        )
        service = GenerationService(
            client, ledger, slots=FairSlots(2, 2), operator=OperatorLimits(user_daily_images=5)
        )
        yield Rig(service, comet, tmp_path / "usage.db")
        client.close()


def dall_e_3() -> GenerationRequest:
    return validate(ImagineOptions(prompt="a lighthouse", model="dall-e-3"), "dall-e-3")


class Boom(Exception):
    """An unexpected failure in the code that uses the generation."""


async def test_delivered_is_the_one_final_status(rig: Rig) -> None:
    """The normal path: delivered, billed, with a cost; a later fail changes nothing."""
    async with rig.service.start(dall_e_3(), WHO) as generation:
        await generation.call_upstream()
        generation.sent(1)
        await generation.delivered()
        await generation.fail("late", "too late")
    assert rig.rows() == [("delivered", 1, None, 1, 1)]


@pytest.mark.parametrize(
    ("after_upstream", "error", "expected"),
    [
        (False, Boom("x"), ("failed", 0, "internal_error", 0, 0)),
        (True, Boom("x"), ("failed", 1, "internal_error", 0, 1)),
        (False, asyncio.CancelledError(), ("interrupted", 0, "interrupted", 0, 0)),
        (True, asyncio.CancelledError(), ("interrupted_delivery", 1, "interrupted", 0, 1)),
        (True, KeyboardInterrupt(), ("interrupted_delivery", 1, "interrupted", 0, 1)),
    ],
    ids=["error-before", "error-after", "cancel-before", "cancel-after", "base-exception-after"],
)
async def test_every_exit_path_writes_one_final_status(
    rig: Rig, after_upstream: bool, error: BaseException, expected: tuple[object, ...]
) -> None:
    """Whatever ends the block, BaseException included, the row is closed and says if billed."""

    async def ends_with_the_error() -> None:
        async with rig.service.start(dall_e_3(), WHO) as generation:
            if after_upstream:
                await generation.call_upstream()
            raise error

    with pytest.raises(type(error)):
        await ends_with_the_error()
    assert rig.rows() == [expected]
    assert rig.service.in_flight == 0


async def test_a_block_that_forgets_the_status_is_closed_and_logged(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """A caller that returns without saying how it ended still leaves no pending row."""
    async with rig.service.start(dall_e_3(), WHO):
        pass
    assert rig.rows() == [("failed", 0, "no_final_status", 0, 0)]
    assert any("without a final status" in r.getMessage() for r in caplog.records)


async def test_an_upstream_error_is_the_final_status_with_its_attempts(rig: Rig) -> None:
    """Upstream's refusal is the row's end: failed with its kind, not billed, attempts kept."""
    rig.comet.queue(Reply.error(400, "Rejected by the safety system."))

    async def call() -> None:
        async with rig.service.start(dall_e_3(), WHO) as generation:
            await generation.call_upstream()

    with pytest.raises(UpstreamError):
        await call()
    with sqlite3.connect(rig.database) as db:
        row = db.execute("SELECT status, billed, error_code, attempts FROM generations").fetchone()
    assert row == ("failed", 0, "bad_request", 1)


async def test_a_crash_after_the_answer_leaves_a_billed_row_for_the_next_start(
    rig: Rig, tmp_path: Path
) -> None:
    """The row is marked billed the moment upstream answers, before any final status."""
    generation: Generation | None = None

    async def stuck_in_delivery() -> None:
        nonlocal generation
        async with rig.service.start(dall_e_3(), WHO) as generation:
            await generation.call_upstream()
            await asyncio.Event().wait()

    task = asyncio.create_task(stuck_in_delivery())
    for _ in range(200):
        if generation is not None and generation.phase is Phase.DELIVERING:
            break
        await asyncio.sleep(0.01)
    with sqlite3.connect(rig.database) as db:
        assert db.execute("SELECT status, billed FROM generations").fetchone() == ("pending", 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_drain_sees_a_request_from_its_reservation(rig: Rig) -> None:
    """Reserved but not yet calling upstream: the drain waits for it, then cancels it."""
    reserved = asyncio.Event()

    async def reserved_and_idle() -> None:
        async with rig.service.start(dall_e_3(), WHO):
            reserved.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(reserved_and_idle())
    await reserved.wait()
    rig.service.stop_accepting()
    assert await rig.service.drain(0.05) == 1
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.rows() == [("interrupted", 0, "interrupted", 0, 0)]

    async def start_another() -> None:
        async with rig.service.start(dall_e_3(), WHO):
            pass

    with pytest.raises(ShuttingDown):
        await start_another()
