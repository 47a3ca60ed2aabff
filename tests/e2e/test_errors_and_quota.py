"""Upstream errors in plain words, the daily quota under concurrency, /usage, restarts."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.harness import Harness, fakes, run_bot
from tests.fakes.fake_cometapi import Reply


def ledger_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT user_id, model, n_requested, images_delivered, status, error_code "
            "FROM generations ORDER BY id"
        ).fetchall()


@pytest.mark.parametrize(
    ("replies", "shown", "code"),
    [
        (
            [
                Reply.error(
                    400,
                    "Your request was rejected by the safety system.",
                    code="content_policy_violation",
                )
            ],
            "rejected by the safety system",
            "bad_request",
        ),
        ([Reply.error(401, "invalid api key")], "not set up correctly", "configuration"),
        ([Reply.error(429, "slow down")] * 3, "busy", "rate_limited"),
        ([Reply.error(503, "overloaded")] * 3, "internal error", "upstream_error"),
        ([Reply.raw(200, b"<html>oops</html>")], "not a usable image", "bad_response"),
    ],
    ids=["content-policy", "auth", "rate-limit", "5xx", "garbage"],
)
async def test_upstream_errors_are_shown_in_plain_words(
    bot: Harness, tmp_path: Path, replies: list[Reply], shown: str, code: str
) -> None:
    """The thinking message becomes the error; the ledger row says failed with the code."""
    bot.comet.queue(*replies)
    handle = await bot.imagine(prompt="a boat")
    final = await handle.wait_for_final()
    assert shown in final.json["content"]
    assert "invalid api key" not in final.json["content"]
    assert final.files == []
    await asyncio.sleep(0.05)
    assert ledger_rows(tmp_path / "usage.db") == [
        (
            handle.payload["member"]["user"]["id"] and int(handle.payload["member"]["user"]["id"]),
            "gpt-image-1",
            1,
            0,
            "failed",
            code,
        )
    ]


async def test_concurrent_requests_of_one_user_respect_the_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Limit 2, five simultaneous requests of one user: two images, three private refusals."""
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, tmp_path / "usage.db", monkeypatch, user_daily_image_limit=2) as bot,
    ):
        comet.default = Reply.auto(latency=0.3)
        handles = await asyncio.gather(
            *(bot.imagine(prompt=f"cat {i}", user_id=4242) for i in range(5))
        )
        callbacks = await asyncio.gather(*(h.wait_for_callback() for h in handles))
        deferred = [h for h, c in zip(handles, callbacks, strict=True) if c.json["type"] == 5]
        refused = [c for c in callbacks if c.json["type"] == 4]
        assert (len(deferred), len(refused)) == (2, 3)
        for callback in refused:
            assert callback.json["data"]["flags"] & 64
            assert "Daily limit reached" in callback.json["data"]["content"]
            assert "00:00 UTC" in callback.json["data"]["content"]
        finals = await asyncio.gather(*(h.wait_for_final() for h in deferred))
        assert all(len(final.files) == 1 for final in finals)
        assert len(comet.calls) == 2


async def test_failed_generation_gives_the_quota_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Limit 1: a failure does not use it up, the next request succeeds."""
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, tmp_path / "usage.db", monkeypatch, user_daily_image_limit=1) as bot,
    ):
        comet.queue(Reply.error(400, "nope"))
        first = await bot.imagine(prompt="one", user_id=7)
        assert "nope" in (await first.wait_for_final()).json["content"]
        second = await bot.imagine(prompt="two", user_id=7)
        assert len((await second.wait_for_final()).files) == 1
        third = await bot.imagine(prompt="three", user_id=7)
        assert (await third.wait_for_callback()).json["type"] == 4


async def test_usage_numbers_and_restart_keep_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/usage after a few generations, and again after a restart on the same database."""
    database = tmp_path / "usage.db"
    async with fakes() as (fake, comet):
        async with run_bot(fake, comet, database, monkeypatch, user_daily_image_limit=10) as bot:
            for options in ({"n": 2}, {"model": "dall-e-3"}):
                handle = await bot.imagine(prompt="x", user_id=99, **options)
                await handle.wait_for_final()
            comet.queue(Reply.error(400, "refused"))
            await (await bot.imagine(prompt="x", user_id=99)).wait_for_final()
            await asyncio.sleep(0.05)
            report = await bot.discord.invoke("usage", {"period": "today"}, user_id=99)
            first = (await report.wait_for_callback()).json["data"]
        async with run_bot(fake, comet, database, monkeypatch, user_daily_image_limit=10) as bot:
            report = await bot.discord.invoke("usage", {"period": "today"}, user_id=99)
            second = (await report.wait_for_callback()).json["data"]
        # The restart found the same command payload and did not sync again.
        assert len(fake.command_puts) == 1
    assert first["flags"] & 64
    fields = {field["name"]: field["value"] for field in first["embeds"][0]["fields"]}
    assert (fields["Images"], fields["Requests"], fields["Failed"]) == ("3", "3", "1")
    assert "gpt-image-1**: 2 images" in fields["By model"]
    assert "dall-e-3**: 1 images" in fields["By model"]
    assert fields["Today's allowance"].startswith("7 of 10 images left today")
    assert second["embeds"] == first["embeds"]
