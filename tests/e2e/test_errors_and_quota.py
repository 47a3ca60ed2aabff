"""Upstream errors in plain words, the daily quota under concurrency, /usage, restarts."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.harness import COMET_KEY, Harness, fakes, run_bot
from tests.fakes.fake_cometapi import Cdn, Reply
from tests.fakes.fake_discord import InteractionHandle
from tests.fakes.images import make_png


def ledger_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT user_id, model, n_requested, images_delivered, status, error_code "
            "FROM generations ORDER BY id"
        ).fetchall()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


FAULTS: list[tuple[str, list[Reply], str, str]] = [
    (
        "400-content-policy",
        [Reply.error(400, "Rejected by the safety system.", code="content_policy_violation")],
        "refused this request. The image service said: Rejected by the safety system.",
        "bad_request",
    ),
    (
        "503-overloaded",
        [Reply.error(503, "The engine is currently overloaded, please try again later")] * 3,
        "overloaded right now and stayed busy after several tries. Please try again in a "
        "minute. The image service said: The engine is currently overloaded",
        "upstream_unavailable",
    ),
    ("401", [Reply.error(401, f"invalid token {COMET_KEY}")], "needs attention", "configuration"),
    ("403", [Reply.error(403, "key blocked")], "needs attention", "configuration"),
    (
        "404-model",
        [Reply.error(404, "model not found")],
        "does not offer this model",
        "model_not_found",
    ),
    ("413", [Reply.error(413, "payload too large")], "too large", "request_too_large"),
    ("429-after-retries", [Reply.error(429, "slow down")] * 3, "busy", "rate_limited"),
    ("5xx-after-retries", [Reply.error(500, "boom")] * 3, "internal error", "upstream_error"),
    (
        "non-json",
        [Reply.raw(200, b"<html>proxy page</html>")],
        "not a usable image",
        "bad_response",
    ),
    ("no-data", [Reply.json({"created": 1})], "not a usable image", "bad_response"),
    (
        "no-image-field",
        [Reply.json({"created": 1, "data": [{}]})],
        "not a usable image",
        "bad_response",
    ),
    (
        "bad-base64",
        [Reply.json({"created": 1, "data": [{"b64_json": "%%%"}]})],
        "not a usable image",
        "bad_response",
    ),
    (
        "not-an-image",
        [Reply.json({"created": 1, "data": [{"b64_json": _b64(b"hello")}]})],
        "not a usable image",
        "bad_response",
    ),
    (
        "url-404",
        [Reply.url([make_png()], cdn=Cdn.not_found())],
        "could not download",
        "download_failed",
    ),
    (
        "url-too-big",
        [Reply.url([make_png()], cdn=Cdn.huge(60 * 1024 * 1024))],
        "could not download",
        "download_failed",
    ),
    (
        "url-not-image",
        [Reply.url([make_png()], cdn=Cdn.non_image())],
        "could not download",
        "download_failed",
    ),
]


async def _assert_fault(
    bot: Harness, database: Path, caplog: pytest.LogCaptureFixture, shown: str, code: str
) -> InteractionHandle:
    handle = await bot.imagine(prompt="a boat")
    final = await handle.wait_for_final(timeout=10)
    content = final.json["content"]
    assert shown in content
    assert final.files == []
    assert COMET_KEY not in content
    assert "HTTP" not in content  # no internals
    await asyncio.sleep(0.05)
    user_id = int(handle.payload["member"]["user"]["id"])
    assert ledger_rows(database) == [(user_id, "gpt-image-1", 1, 0, "failed", code)]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "outcome=failed request_id=" in logged
    assert f"code={code}" in logged
    assert "request_id=" in logged
    return handle


@pytest.mark.parametrize(
    ("replies", "shown", "code"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS]
)
async def test_upstream_faults_are_answered_logged_and_leak_nothing(
    bot: Harness,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    replies: list[Reply],
    shown: str,
    code: str,
) -> None:
    """Each fault: plain words for the user, a failed row with its code, a log line, no secret."""
    caplog.set_level(logging.INFO)
    bot.comet.queue(*replies)
    await _assert_fault(bot, tmp_path / "usage.db", caplog, shown, code)
    if code == "configuration":
        owner = int(bot.discord.owner["id"])
        (notice,) = bot.discord.dm_messages(owner)
        assert "COMETAPI_KEY" in notice["content"]


async def test_a_second_key_failure_does_not_spam_the_owner(bot: Harness) -> None:
    """The owner hears about a refused key once an hour, not once per request."""
    bot.comet.queue(Reply.error(401, "bad key"), Reply.error(401, "bad key"))
    for _ in range(2):
        await (await bot.imagine(prompt="x")).wait_for_final()
    assert len(bot.discord.dm_messages(int(bot.discord.owner["id"]))) == 1


async def test_timeout_is_reported_and_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Upstream never answers: after COMETAPI_TIMEOUT_S the user is told; one call only."""
    caplog.set_level(logging.INFO)
    database = tmp_path / "usage.db"
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, database, monkeypatch, cometapi_timeout_s=0.5) as bot,
    ):
        comet.queue(Reply.hang())
        await _assert_fault(bot, database, caplog, "took too long", "timeout")
        assert len(comet.calls) == 1


async def test_connection_refused_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens at COMETAPI_BASE_URL: retried, then the user is told plainly."""
    caplog.set_level(logging.INFO)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    database = tmp_path / "usage.db"
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, database, monkeypatch, cometapi_base_url=dead) as bot,
    ):
        await _assert_fault(bot, database, caplog, "could not reach", "connection_failed")


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
    assert "dall-e-3**: 1 image, 1 request, 0 failed" in fields["By model"]
    assert fields["Today's allowance"].startswith("7 of 10 images left today")
    assert second["embeds"] == first["embeds"]
