"""What the generation lifecycle writes to the ledger, for every way a generation ends.

`GenerationService.start` reserves the row; the `Generation` it hands out records upstream's
answer (the call is billed from then on) and writes exactly one final status however the
block ends. The real service, ledger and CometAPI client run against the fake CometAPI on
127.0.0.1 (the `comet` fixture), which answers like the model would unless a test scripts it.
"""

from __future__ import annotations

import asyncio

import pytest

from bot.core.cometapi import ErrorKind, UpstreamError
from bot.core.service import GenerationService, Requester
from bot.core.validation import GenerationRequest, ImagineOptions, validate
from bot.ledger.periods import Period
from bot.ledger.reports import Scope, build_report, window_for
from bot.ledger.store import UsageLedger
from tests.fakes.fake_cometapi import Cdn, FakeCometAPI, Reply
from tests.fakes.images import make_png

WHO = Requester(1, 10, 20)


def dalle(n: int = 2) -> GenerationRequest:
    """dall-e-2 1024x1024: $0.02 an image built in, so n images reserve and cost n x $0.02."""
    return validate(ImagineOptions(prompt="a cat", model="dall-e-2", n=n), "dall-e-3")


async def row(ledger: UsageLedger) -> tuple[object, ...]:
    """The only row: status, images received, billed, error, cost, spend, images counted."""
    (values,) = await ledger.reader.execute_fetchall(
        "SELECT status, images_delivered, billed, error_code, cost_usd, spend_usd, quota_images, "
        "reserved_usd, upstream_request_id FROM generations"
    )
    return tuple(values)


async def attempts(ledger: UsageLedger) -> object:
    """The only row's count of POSTs to upstream."""
    ((value,),) = await ledger.reader.execute_fetchall("SELECT attempts FROM generations")
    return value


async def test_a_reservation_holds_the_estimate_and_the_images(
    service: GenerationService, ledger: UsageLedger
) -> None:
    """Inside the block, before upstream: pending, n images counted, the estimate reserved."""
    async with service.start(dalle(), WHO) as generation:
        assert await row(ledger) == ("pending", 0, 0, None, None, 0.04, 2, 0.04, None)
        await generation.fail("not_sent", "test")


async def test_delivered(
    service: GenerationService, ledger: UsageLedger, comet: FakeCometAPI
) -> None:
    """Every image reached the member: delivered, billed at the answer's cost."""
    async with service.start(dalle(), WHO) as generation:
        result = await generation.call_upstream()
        assert (await row(ledger))[:3] == ("pending", 0, 1)  # billed before delivery
        generation.sent(len(result.images))
        await generation.delivered()
    (call,) = comet.calls
    assert call.client_request_id == generation.request_id
    assert [image.data for image in result.images] == call.served_images
    assert await row(ledger) == (
        "delivered",
        2,
        1,
        None,
        0.04,
        0.04,
        2,
        0.04,
        call.upstream_request_id,
    )


async def test_upstream_refused(
    service: GenerationService, ledger: UsageLedger, comet: FakeCometAPI
) -> None:
    """An upstream error before any answer: failed with its kind, free."""
    comet.default = Reply.error(429, "Rate limit reached", retry_after=0)
    async with service.start(dalle(), WHO) as generation:
        with pytest.raises(UpstreamError) as raised:
            await generation.call_upstream()
    assert (raised.value.kind, raised.value.billed) == (ErrorKind.RATE_LIMITED, False)
    assert len(comet.calls) == 3  # the first try and both retries, all refused
    assert await row(ledger) == (
        "failed",
        0,
        0,
        "rate_limited",
        None,
        0.0,
        0,
        0.04,
        comet.calls[-1].upstream_request_id,
    )
    assert await attempts(ledger) == 3


@pytest.mark.parametrize(("sent", "code"), [(0, "delivery_failed"), (1, "delivery_failed")])
async def test_delivery_failed_after_upstream_answered(
    service: GenerationService, ledger: UsageLedger, sent: int, code: str
) -> None:
    """Discord refused (some of) the images: billed spend, only received images counted."""
    async with service.start(dalle(), WHO) as generation:
        await generation.call_upstream()
        generation.sent(sent)
        await generation.fail(code, "Discord refused the images")
    assert (await row(ledger))[:7] == ("failed", sent, 1, code, 0.04, 0.04, sent)


async def test_an_exception_in_the_block_is_internal_error(
    service: GenerationService, ledger: UsageLedger
) -> None:
    """An unhandled exception still ends the row, billed if upstream had answered."""

    async def run() -> None:
        async with service.start(dalle(), WHO) as generation:
            await generation.call_upstream()
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await run()
    assert (await row(ledger))[:4] == ("failed", 0, 1, "internal_error")


async def test_a_block_that_says_nothing_is_failed(
    service: GenerationService, ledger: UsageLedger
) -> None:
    """Ending the block without a final status is a bug in the caller: failed, not pending."""
    async with service.start(dalle(), WHO):
        pass
    assert (await row(ledger))[:4] == ("failed", 0, 0, "no_final_status")


async def test_cancelled_while_upstream_works_is_interrupted_free(
    service: GenerationService, ledger: UsageLedger, comet: FakeCometAPI
) -> None:
    """A shutdown before upstream answered: interrupted, no spend, no images."""
    comet.queue(Reply.hang())

    async def run() -> None:
        async with service.start(dalle(), WHO) as generation:
            await generation.call_upstream()

    task = asyncio.ensure_future(run())
    await comet.wait_for_calls(1)  # the request is at upstream, which never answers
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await row(ledger))[:7] == ("interrupted", 0, 0, "interrupted", None, 0.0, 0)


async def test_cancelled_while_uploading_is_interrupted_delivery(
    service: GenerationService, ledger: UsageLedger
) -> None:
    """A shutdown mid-upload: billed, with the images Discord confirmed."""
    uploading = asyncio.Event()

    async def run() -> None:
        async with service.start(dalle(), WHO) as generation:
            await generation.call_upstream()
            generation.uploading()
            generation.sent(1)
            uploading.set()
            await asyncio.sleep(60)

    task = asyncio.ensure_future(run())
    await uploading.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (await row(ledger))[:7] == ("interrupted_delivery", 1, 1, "interrupted", 0.04, 0.04, 1)


async def test_a_download_failure_after_upstream_answered_is_billed(
    service: GenerationService, ledger: UsageLedger, comet: FakeCometAPI
) -> None:
    """CometAPI answered 200 with image URLs; fetching them failed: the call was billed."""
    comet.queue(Reply.url([make_png(seed=1), make_png(seed=2)], cdn=Cdn.not_found()))
    async with service.start(dalle(), WHO) as generation:
        with pytest.raises(UpstreamError) as raised:
            await generation.call_upstream()
    assert (raised.value.kind, raised.value.billed) == (ErrorKind.DOWNLOAD_FAILED, True)
    (call,) = comet.calls
    assert call.status == 200
    assert len(call.served_urls) == 2
    assert all(comet.cdn.hits(url) >= 1 for url in call.served_urls)  # the bot did try
    # Billed at the price of the n images upstream made, under upstream's id for the call.
    assert await row(ledger) == (
        "failed",
        0,
        1,
        "download_failed",
        0.04,
        0.04,
        0,
        0.04,
        call.upstream_request_id,
    )


async def test_an_unusable_200_is_billed(
    service: GenerationService, ledger: UsageLedger, comet: FakeCometAPI
) -> None:
    """A 200 whose body holds no usable image still cost money: failed, billed."""
    comet.queue(Reply.json({"created": 1, "data": [{"revised_prompt": "neither b64 nor url"}]}))
    async with service.start(dalle(), WHO) as generation:
        with pytest.raises(UpstreamError) as raised:
            await generation.call_upstream()
    assert (raised.value.kind, raised.value.billed) == (ErrorKind.BAD_RESPONSE, True)
    assert (await row(ledger))[:7] == ("failed", 0, 1, "bad_response", 0.04, 0.04, 0)


async def test_a_billed_unpriced_call_is_not_reported_as_free(
    service: GenerationService, ledger: UsageLedger, comet: FakeCometAPI
) -> None:
    """qwen-image has no price: its billed, undelivered call must not read as "$0.00"."""
    qwen = validate(ImagineOptions(prompt="a cat", model="qwen-image"), "dall-e-3")
    async with service.start(qwen, WHO) as generation:
        await generation.call_upstream()
        await generation.fail("delivery_failed", "Discord refused the images")
    assert [call.status for call in comet.calls] == [200]
    assert (await row(ledger))[:5] == ("failed", 0, 1, "delivery_failed", None)
    report = await build_report(
        ledger.reader, Scope(guild_id=10), window_for(Period.ALL, ledger.now())
    )
    assert report.totals.undelivered.requests == 1
    assert "no price" in report.totals.cost.summary()
