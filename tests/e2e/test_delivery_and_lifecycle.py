"""Queueing, fitting Discord's upload limit, token expiry, shutdown, unexpected errors."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.harness import Harness, fakes, run_bot
from tests.fakes.fake_cometapi import Reply
from tests.fakes.images import make_image_of_size, make_png


async def test_requests_beyond_the_concurrency_cap_are_told_they_are_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MAX_CONCURRENT_GENERATIONS=1: the second request shows it waits, then completes."""
    async with (
        fakes() as (fake, comet),
        run_bot(
            fake, comet, tmp_path / "usage.db", monkeypatch, max_concurrent_generations=1
        ) as bot,
    ):
        comet.default = Reply.auto(latency=0.4)
        first = await bot.imagine(prompt="first")
        await comet.wait_for_calls(1)
        second = await bot.imagine(prompt="second")
        queued = await second.wait_for_final()
        assert "Queued" in queued.json["content"]
        for handle in (first, second):
            await handle.wait_for(lambda r: bool(r.files))
        assert comet.max_in_flight == 1


async def test_an_image_over_the_upload_limit_is_re_encoded_to_fit(bot: Harness) -> None:
    """A 3 MiB PNG for a 1 MiB limit arrives as WebP under the limit, and the embed says so."""
    limit = 1024 * 1024
    big = make_image_of_size("png", 3 * limit, seed=5)
    bot.comet.queue(Reply.b64([big]))
    handle = await bot.imagine(prompt="noise", attachment_size_limit=limit)
    final = await handle.wait_for_final(timeout=30)
    (attachment,) = final.files
    assert len(attachment.data) <= limit
    assert attachment.data[8:12] == b"WEBP"
    assert attachment.filename.endswith(".webp")
    notes = [f["value"] for f in final.json["embeds"][0]["fields"] if f["name"] == "Note"]
    assert notes
    assert "re-encoded" in notes[0]


async def test_expired_token_delivers_in_the_channel_mentioning_only_the_user(
    bot: Harness,
) -> None:
    """After 15 minutes the interaction token is dead: the images go to the channel."""
    image = make_png(seed=9)
    bot.comet.queue(Reply.b64([image], latency=0.3))
    handle = await bot.imagine(prompt="late", user_id=321)
    await handle.wait_for_callback()
    handle.expire()
    channel_id = int(handle.payload["channel_id"])
    posted = await bot.discord.wait_for_request(
        lambda r: r.method == "POST" and r.path.endswith(f"/channels/{channel_id}/messages")
    )
    assert [file.data for file in posted.files] == [image]
    assert "<@321>" in posted.json["content"]
    assert [str(user) for user in posted.json["allowed_mentions"]["users"]] == ["321"]
    assert posted.json["allowed_mentions"]["parse"] == []
    # The test expired the token early, so the bot's clock could not know: its one attempt
    # on the dead token (answered 401, which triggers the channel fallback) is expected.
    expected = [v for v in bot.discord.violations if "used after it expired" in v]
    assert len(expected) == 1
    bot.discord.violations.remove(expected[0])


async def test_shutdown_interrupts_a_hanging_generation_and_tells_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generation still running after the grace period is told so and costs no quota."""
    database = tmp_path / "usage.db"
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, database, monkeypatch, shutdown_grace_s=0.3) as bot,
    ):
        comet.queue(Reply.hang())
        handle = await bot.imagine(prompt="never")
        await comet.wait_for_calls(1)
        assert await bot.stop() == 0
        final = await handle.wait_for_final()
        assert "restarted before your images were ready" in final.json["content"]
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT status FROM generations").fetchall() == [("interrupted",)]


async def test_shutdown_lets_a_generation_within_the_grace_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-flight work finishes; new requests during shutdown are refused politely."""
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, tmp_path / "usage.db", monkeypatch, shutdown_grace_s=5) as bot,
    ):
        comet.queue(Reply.auto(latency=0.5))
        handle = await bot.imagine(prompt="almost done")
        await comet.wait_for_calls(1)
        bot.app.request_shutdown("test")
        late = await bot.imagine(prompt="too late")
        assert "restarting" in (await late.wait_for_callback()).json["data"]["content"]
        final = await handle.wait_for(lambda r: bool(r.files))
        assert len(final.files) == 1
        assert await asyncio.wait_for(bot.run_task, 10) == 0


async def test_an_unexpected_error_is_answered_with_an_error_id(
    bot: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken database mid-flight: the user gets an error id that the log also carries."""
    with sqlite3.connect(tmp_path / "usage.db") as db:
        db.execute("DROP TABLE generations")
    handle = await bot.imagine(prompt="boom")
    callback = await handle.wait_for_callback()
    content = callback.json["data"]["content"]
    assert "error id" in content
    error_id = content.split("`")[1]
    assert any(error_id in record.getMessage() and record.exc_info for record in caplog.records)
    assert bot.comet.calls == []


async def test_expired_token_and_no_channel_permission_is_logged_and_not_counted(
    bot: Harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Token dead and the channel refuses the bot: a failed row, a log line, quota given back."""
    caplog.set_level(logging.INFO)
    bot.comet.queue(Reply.b64([make_png(seed=4)], latency=0.3))
    bot.discord.fail_next(
        "POST /channels/{channel}/messages",
        403,
        {"message": "Missing Permissions", "code": 50013},
    )
    handle = await bot.imagine(prompt="nowhere to go")
    await handle.wait_for_callback()
    handle.expire()
    await bot.discord.wait_for_request(lambda r: r.route == "POST /channels/{channel}/messages")
    await asyncio.sleep(0.1)
    with sqlite3.connect(tmp_path / "usage.db") as db:
        rows = db.execute("SELECT status, error_code, quota_images FROM generations").fetchall()
    assert rows == [("failed", "delivery_failed", 0)]
    assert any(
        "outcome=failed" in r.getMessage() and "HTTP 403" in r.getMessage() for r in caplog.records
    )
    # Both dead ends were the test's doing: the early expiry and the injected 403.
    bot.discord.violations[:] = [v for v in bot.discord.violations if "expired" not in v]
