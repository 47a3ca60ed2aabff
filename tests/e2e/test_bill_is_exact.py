"""The bill is exact: limits only tighten, one final status per row, spend as billed.

Each test reproduces one of the faults the "bill is exact" issue measured, through the real
bot and both loopback fakes, and would fail on the code that had the fault.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Harness, fakes, process_env, run_bot
from tests.fakes.discord_payloads import MANAGER_PERMISSIONS
from tests.fakes.fake_cometapi import Reply
from tests.fakes.fake_discord import ROUTE_ORIGINAL_PATCH, InteractionHandle
from tests.fakes.images import make_png

ADMIN = 5000
MEMBER = 6000


def rows(database: Path, columns: str = "status, images_delivered, billed") -> list[Any]:
    """The ledger's rows in order, read with plain sqlite3 as an operator would."""
    with sqlite3.connect(database) as db:
        return db.execute(f"SELECT {columns} FROM generations ORDER BY id").fetchall()  # noqa: S608


async def admin(
    bot: Harness, subcommand: list[str] | str, options: dict[str, object], **kw: Any
) -> Any:
    """Run a /usage-admin subcommand as a server manager; return its first answer's JSON."""
    handle = await bot.discord.invoke(
        "usage-admin",
        options,
        subcommand=subcommand,
        user_id=kw.pop("user_id", ADMIN),
        permissions=MANAGER_PERMISSIONS,
        **kw,
    )
    final = await handle.wait_for(
        lambda r: r.route.endswith("/callback") or bool(r.files), timeout=10
    )
    body = final.json
    # A first answer carries the message under "data"; a follow-up is the message itself.
    return body["data"] if "data" in body and "type" in body else body


async def outcome(handle: InteractionHandle) -> str:
    """What the member finally sees: a private refusal's text, or the edited message's text."""
    callback = await handle.wait_for_callback()
    if callback.json["type"] == 4:
        return str(callback.json["data"]["content"])

    def settled(request: Any) -> bool:
        content = str(request.json.get("content") or "") if request.json else ""
        return (
            request.route == ROUTE_ORIGINAL_PATCH
            and request.ok
            and (bool(request.files) or (bool(content) and "\u23f3" not in content))
        )

    final = await handle.wait_for(settled, timeout=15)
    return "images" if final.files else str(final.json.get("content"))


# 1. A server admin cannot lift the operator's limits ---------------------------------------


async def test_a_server_cannot_lift_the_operators_daily_image_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """USER_DAILY_IMAGE_LIMIT=1: a server's "0 = unlimited" and its reset-day give nothing back."""
    database = tmp_path / "usage.db"
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, database, monkeypatch, user_daily_image_limit=1) as bot,
    ):
        await admin(bot, ["limits", "daily-images"], {"images": 0})
        first = await bot.imagine(prompt="one", user_id=MEMBER, model="dall-e-3")
        assert await outcome(first) == "images"
        refused = []
        for _ in range(2):
            await admin(bot, ["limits", "reset-day"], {"member": MEMBER})
            handle = await bot.imagine(prompt="more", user_id=MEMBER, model="dall-e-3")
            refused.append(await outcome(handle))
        assert all("the bot's limit of 1 images per member" in text for text in refused), refused
        assert len(comet.calls) == 1
    assert rows(database) == [("delivered", 1, 1)]


async def test_a_servers_own_limit_tightens_the_operators(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Operator 5, server 1: the server's limit stops the second image and names itself."""
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, tmp_path / "usage.db", monkeypatch, user_daily_image_limit=5) as bot,
    ):
        await admin(bot, ["limits", "daily-images"], {"images": 1})
        assert await outcome(await bot.imagine(prompt="a", user_id=MEMBER)) == "images"
        text = await outcome(await bot.imagine(prompt="b", user_id=MEMBER))
        assert "this server's limit of 1 images" in text


# 2. A damaged image upstream returned is never posted, and the row says so -----------------


@pytest.mark.parametrize("limit", [10 * 1024 * 1024, 2048], ids=["under-limit", "over-limit"])
async def test_a_truncated_png_is_not_posted_and_is_billed_not_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """Under the limit it used to be posted as is; over it Pillow's OSError left it pending."""
    database = tmp_path / "usage.db"
    truncated = make_png(256, 256, seed=3)[:-200]
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, database, monkeypatch, user_daily_image_limit=3) as bot,
    ):
        comet.queue(Reply.b64([truncated]))
        handle = await bot.imagine(prompt="cat", user_id=MEMBER, attachment_size_limit=limit)
        text = await outcome(handle)
        assert "damaged image" in text
        assert "Nothing was charged" not in text
        assert not any(request.files for request in handle.requests)
        await asyncio.sleep(0.1)
    assert rows(database, "status, error_code, billed, quota_images") == [
        ("failed", "corrupt_image", 1, 0)
    ]


# 3. Shutdown during delivery ----------------------------------------------------------------


async def test_sigterm_during_a_slow_upload_records_the_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload outlives the grace: it may finish, and the row says delivered, not free."""
    database = tmp_path / "usage.db"
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, database, monkeypatch, shutdown_grace_s=0.2) as bot,
    ):
        fake.route_delays[ROUTE_ORIGINAL_PATCH] = 1.5
        handle = await bot.imagine(prompt="slow upload", user_id=MEMBER)
        await comet.wait_for_calls(1)
        await handle.wait_for_callback()
        await asyncio.sleep(0.3)  # upstream answered; the PATCH with the image is in flight
        assert await bot.stop() == 0
        assert (await handle.wait_for(lambda r: bool(r.files))).files
    assert rows(database) == [("delivered", 1, 1)]


async def test_shutdown_while_queued_closes_the_row_as_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request waiting for a slot (reserved, never sent) is seen by the drain and freed."""
    database = tmp_path / "usage.db"
    async with (
        fakes() as (fake, comet),
        run_bot(
            fake,
            comet,
            database,
            monkeypatch,
            shutdown_grace_s=0.3,
            max_concurrent_generations=1,
        ) as bot,
    ):
        comet.queue(Reply.hang())
        running = await bot.imagine(prompt="hangs", user_id=MEMBER)
        await comet.wait_for_calls(1)
        queued = await bot.imagine(prompt="waits", user_id=MEMBER + 1)
        await queued.wait_for_callback()
        assert await bot.stop() == 0
        for handle in (running, queued):
            final = await handle.wait_for(lambda r: "restarted" in str(r.json.get("content") or ""))
            assert "do not count" in final.json["content"]
    assert rows(database) == [("interrupted", 0, 0), ("interrupted", 0, 0)]
    assert len(comet.calls) == 1


# 4. Budgets reserve spend, and billed calls count ----------------------------------------------


async def test_concurrent_requests_cannot_overshoot_a_server_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$0.05 and dall-e-3 at $0.04: of three at once, one runs; the others are refused."""
    database = tmp_path / "usage.db"
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, database, monkeypatch) as bot,
    ):
        await admin(bot, ["limits", "budget"], {"usd": 0.05})
        comet.default = Reply.auto(latency=0.5)
        handles = [
            await bot.imagine(prompt=f"p{i}", user_id=MEMBER + i, model="dall-e-3")
            for i in range(3)
        ]
        texts = [await outcome(handle) for handle in handles]
        assert texts.count("images") == 1, texts
        assert all("daily budget" in text for text in texts if text != "images")
        assert len(comet.calls) == 1
    assert rows(database, "status, cost_usd") == [("delivered", pytest.approx(0.04))]


async def test_an_operator_bot_budget_covers_every_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BOT_DAILY_BUDGET_USD=0.05: the second $0.04 image is refused even in another server."""
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, tmp_path / "usage.db", monkeypatch, bot_daily_budget_usd=0.05) as bot,
    ):
        assert await outcome(await bot.imagine(prompt="a", model="dall-e-3")) == "images"
        text = await outcome(
            await bot.imagine(prompt="b", model="dall-e-3", user_id=MEMBER, dm=True)
        )
        assert "The bot's daily budget" in text


async def test_billed_images_discord_refused_cost_money_not_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Discord refuses the upload: the member keeps their images, the spend is counted."""
    database = tmp_path / "usage.db"
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, database, monkeypatch) as bot,
    ):
        fake.fail_next(ROUTE_ORIGINAL_PATCH, 403, {"message": "Missing Access", "code": 50001})
        handle = await bot.imagine(prompt="refused", user_id=MEMBER, model="dall-e-3")
        text = await outcome(handle)
        assert "would not accept them" in text
        server = await bot.discord.invoke(
            "usage-admin",
            {"period": "today"},
            subcommand="server",
            user_id=ADMIN,
            permissions=MANAGER_PERMISSIONS,
        )
        report = (await server.wait_for(lambda r: bool(r.files), timeout=10)).json
        fields = {
            f["name"]: f["value"] for f in (report.get("embeds") or [{}])[0].get("fields", [])
        }
        assert "Billed, not delivered" in fields, report
        assert "$0.0400" in fields["Billed, not delivered"]
        # The injected refusal was the test's doing.
        fake.violations[:] = []
    assert rows(database, "status, error_code, billed, cost_usd, quota_images") == [
        ("failed", "delivery_failed", 1, pytest.approx(0.04), 0)
    ]


# 5. Admin views show only the admin's server --------------------------------------------------


async def test_admin_user_view_shows_only_this_servers_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three images in a DM; the admin's view in the server says 0, never "3 images today"."""
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, tmp_path / "usage.db", monkeypatch, user_daily_image_limit=5) as bot,
    ):
        handle = await bot.discord.invoke(
            "imagine", {"prompt": "dm", "model": "dall-e-2", "n": 3}, user_id=MEMBER, dm=True
        )
        assert (await handle.wait_for(lambda r: bool(r.files))).files
        report = await admin(bot, "user", {"member": MEMBER, "period": "today"})
        text = str(report)
        assert "0 images today in this server" in text
        assert "3" not in "".join(
            f["value"] for f in report["embeds"][0]["fields"] if f["name"] == "Today's allowance"
        )
        own = await bot.discord.invoke("usage", {"period": "today"}, user_id=MEMBER)
        mine = str((await own.wait_for_callback()).json)
        assert "2 of 5 images left today under the bot's limit" in mine


# 11. The acknowledgement never waits on another process's lock ------------------------------


async def test_a_locked_database_is_answered_privately_within_three_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection holds the write lock: a private "busy" answer in time, nothing sent."""
    database = tmp_path / "usage.db"
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, database, monkeypatch) as bot,
    ):
        holder = sqlite3.connect(database, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            handles = [await bot.imagine(prompt=f"p{i}", user_id=MEMBER + i) for i in range(4)]
            callbacks = [await handle.wait_for_callback(timeout=5) for handle in handles]
            took = time.monotonic() - started
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        for callback in callbacks:
            assert callback.json["type"] == 4
            assert callback.json["data"]["flags"] & 64
            assert "busy" in callback.json["data"]["content"]
        assert took < 3
        assert comet.calls == []
        # With the lock gone the next request goes through.
        assert await outcome(await bot.imagine(prompt="now", user_id=MEMBER)) == "images"


# 12. One SQLite file, one process -------------------------------------------------------------


async def test_a_second_process_on_the_same_file_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second `python -m bot` exits 2 with a clear message; the first's row stays pending."""
    database = tmp_path / "usage.db"
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, database, monkeypatch, shutdown_grace_s=0.2) as bot,
    ):
        comet.queue(Reply.auto(latency=5.0))
        handle = await bot.imagine(prompt="in flight", user_id=MEMBER)
        await comet.wait_for_calls(1)
        env = process_env(fake, comet, DATABASE_PATH=str(database))
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await asyncio.wait_for(second.communicate(), 30)
        assert second.returncode == 2
        assert "another imagine-bot process" in stderr.decode()
        assert "Traceback" not in stderr.decode()
        assert rows(database, "status") == [("pending",)]
        assert (await handle.wait_for(lambda r: bool(r.files))).files
    assert rows(database) == [("delivered", 1, 1)]


# 6. Retries are consistent and traceable -----------------------------------------------------


async def test_a_connection_dropped_before_any_byte_is_retried_and_traced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Dropped before the answer (the same risk as a 502): retried, and both ids are kept."""
    caplog.set_level("INFO")
    database = tmp_path / "usage.db"
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, database, monkeypatch) as bot,
    ):
        comet.queue(Reply.disconnect(), Reply.auto())
        assert await outcome(await bot.imagine(prompt="again", user_id=MEMBER)) == "images"
        sent = [call.client_request_id for call in comet.calls]
        answered = comet.calls[-1].upstream_request_id
    ((status, attempts, request_id, upstream_id),) = rows(
        database, "status, attempts, request_id, upstream_request_id"
    )
    assert (status, attempts) == ("delivered", 2)
    assert sent == [request_id, request_id]
    assert upstream_id == answered
    delivered = [r.getMessage() for r in caplog.records if "outcome=delivered" in r.getMessage()]
    assert len(delivered) == 1
    assert f"request_id={request_id}" in delivered[0]
    assert f"upstream_request_id={answered}" in delivered[0]
    assert "attempts=2" in delivered[0]


# 8. One member cannot fill every slot ---------------------------------------------------------


def _prompts(comet: Any) -> list[str]:
    return [str(call.json["prompt"]) for call in comet.calls if call.json]


async def test_members_are_served_in_turn_and_see_their_place_move(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slot: A fires three, B one; B goes second, and A's last sees its position move."""
    async with (
        fakes() as (fake, comet),
        run_bot(
            fake, comet, tmp_path / "usage.db", monkeypatch, max_concurrent_generations=1
        ) as bot,
    ):
        comet.default = Reply.auto(latency=1.2)
        a1 = await bot.imagine(prompt="a1", user_id=MEMBER)
        await comet.wait_for_calls(1)
        a2 = await bot.imagine(prompt="a2", user_id=MEMBER)
        a3 = await bot.imagine(prompt="a3", user_id=MEMBER)
        await a3.wait_for_callback()
        b1 = await bot.imagine(prompt="b1", user_id=MEMBER + 1)
        for handle in (a1, a2, a3, b1):
            await handle.wait_for(lambda r: bool(r.files), timeout=20)
        assert _prompts(comet) == ["a1", "b1", "a2", "a3"]
        shown = [
            str(r.json.get("content"))
            for r in a3.requests
            if r.route == ROUTE_ORIGINAL_PATCH and "Queued" in str(r.json.get("content"))
        ]
        assert any("ahead of yours" in text for text in shown), shown
        assert "yours is next" in shown[-1], shown


async def test_a_member_at_their_cap_waits_while_others_use_free_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two slots, one per member: A's second waits although a slot is free; B's goes at once."""
    async with (
        fakes() as (fake, comet),
        run_bot(
            fake,
            comet,
            tmp_path / "usage.db",
            monkeypatch,
            max_concurrent_generations=2,
            max_concurrent_per_user=1,
        ) as bot,
    ):
        comet.default = Reply.auto(latency=0.8)
        handles = [await bot.imagine(prompt="a1", user_id=MEMBER)]
        await comet.wait_for_calls(1)
        handles.append(await bot.imagine(prompt="a2", user_id=MEMBER))
        await handles[-1].wait_for_callback()
        handles.append(await bot.imagine(prompt="b1", user_id=MEMBER + 1))
        for handle in handles:
            await handle.wait_for(lambda r: bool(r.files), timeout=20)
        assert _prompts(comet) == ["a1", "b1", "a2"]
        assert bot.app.service.slots.running == 0


# 9. A message's uploads fit the whole request --------------------------------------------------


async def test_ten_large_images_are_split_so_every_request_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten 4 MB PNGs (40 MB) on a 10 MiB server: several messages, each under 25 MB."""
    from tests.fakes.images import make_image_of_size

    images = [make_image_of_size("png", 4_000_000, seed=seed) for seed in range(10)]
    database = tmp_path / "usage.db"
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, database, monkeypatch) as bot,
    ):
        comet.queue(Reply.b64(images))
        handle = await bot.imagine(prompt="ten", user_id=MEMBER, model="gpt-image-1", n=10)
        await handle.wait_for(lambda r: bool(r.files))
        await asyncio.sleep(0.5)
        uploads = [r for r in handle.requests if r.files]
        assert len(uploads) >= 2
        assert all(r.size < 25_000_000 for r in uploads)
        assert [f.data for r in uploads for f in r.files] == images
    assert rows(database) == [("delivered", 10, 1)]


# 10. Background work is supervised ------------------------------------------------------------


async def test_a_failing_price_refresh_is_logged_and_never_breaks_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The refresh raising ("no such table") is logged when it happens; the bot still exits 0."""
    database = tmp_path / "usage.db"
    from bot.ledger.store import open_ledger

    async with open_ledger(database):
        pass
    with sqlite3.connect(database) as db:
        db.execute("DROP TABLE price_cache")
    async with fakes() as (fake, comet), run_bot(fake, comet, database, monkeypatch) as bot:
        for _ in range(100):
            if any("price-refresh" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
        failures = [r for r in caplog.records if "price-refresh" in r.getMessage()]
        assert failures
        assert failures[0].levelname == "ERROR"
        assert failures[0].exc_info
        assert await bot.stop() == 0
