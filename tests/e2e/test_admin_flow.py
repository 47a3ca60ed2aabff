"""/usage-admin through the real client: limits take effect on /imagine, permissions hold."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

import pytest

from tests.e2e.harness import Harness, fakes, run_bot
from tests.fakes.discord_payloads import MANAGER_PERMISSIONS, MEMBER_PERMISSIONS

ADMIN = 5000
MEMBER = 6000


async def admin(bot: Harness, subcommand: str | list[str], options: dict[str, object]) -> object:
    handle = await bot.discord.invoke(
        "usage-admin",
        options,
        subcommand=subcommand,
        user_id=ADMIN,
        permissions=MANAGER_PERMISSIONS,
    )
    final = await handle.wait_for(
        lambda r: r.route.endswith("/callback") or bool(r.files), timeout=10
    )
    return final.json


async def imagine_refusal(bot: Harness, **options: object) -> str:
    handle = await bot.imagine(prompt="x", user_id=MEMBER, **options)
    callback = await handle.wait_for_callback()
    assert callback.json["type"] == 4
    assert callback.json["data"]["flags"] & 64
    return str(callback.json["data"]["content"])


async def test_each_limit_refuses_the_next_request_and_names_itself(bot: Harness) -> None:
    """Models, max n, block: set by an admin, they stop a member's next /imagine."""
    await admin(bot, ["limits", "models"], {"models": "dall-e-3,gpt-image-2"})
    assert "allows only these models" in await imagine_refusal(bot, model="gpt-image-1")
    await admin(bot, ["limits", "models"], {})
    await admin(bot, ["limits", "max-n"], {"n": 2})
    assert "at most 2 images per request" in await imagine_refusal(bot, n=3)
    await admin(bot, ["limits", "block"], {"member": MEMBER})
    assert "blocked you" in await imagine_refusal(bot)
    await admin(bot, ["limits", "unblock"], {"member": MEMBER})
    handle = await bot.imagine(prompt="ok now", user_id=MEMBER)
    assert (await handle.wait_for(lambda r: bool(r.files))).files
    assert len(bot.comet.calls) == 1


async def test_limits_survive_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server's daily image limit set before a restart still applies after it."""
    database = tmp_path / "usage.db"
    async with fakes() as (fake, comet):
        async with run_bot(fake, comet, database, monkeypatch) as bot:
            await admin(bot, ["limits", "daily-images"], {"images": 1})
        async with run_bot(fake, comet, database, monkeypatch) as bot:
            handle = await bot.imagine(prompt="one", user_id=MEMBER)
            await handle.wait_for(lambda r: bool(r.files))
            assert "Daily limit reached" in await imagine_refusal(bot)


async def test_members_without_manage_server_are_refused(bot: Harness) -> None:
    """Even if Discord delivers the interaction, a plain member sees nobody else's data."""
    for subcommand, options in (
        ("user", {"member": ADMIN}),
        ("server", {}),
        ("export", {}),
        (["limits", "show"], {}),
    ):
        handle = await bot.discord.invoke(
            "usage-admin",
            options,
            subcommand=subcommand,
            user_id=MEMBER,
            permissions=MEMBER_PERMISSIONS,
        )
        callback = await handle.wait_for_callback()
        assert callback.json["data"]["flags"] & 64
        assert "Manage Server" in callback.json["data"]["content"]
        assert not callback.files


async def test_server_report_chart_and_export(bot: Harness) -> None:
    """After two generations the admin gets a PNG chart and a CSV with both rows."""
    for user in (MEMBER, MEMBER + 1):
        await (await bot.imagine(prompt="x", user_id=user)).wait_for(lambda r: bool(r.files))
    await bot.settled()
    report = await bot.discord.invoke(
        "usage-admin", {}, subcommand="server", user_id=ADMIN, permissions=MANAGER_PERMISSIONS
    )
    final = await report.wait_for(lambda r: bool(r.files), timeout=10)
    (chart,) = final.files
    assert chart.data.startswith(b"\x89PNG")
    export = await bot.discord.invoke(
        "usage-admin", {}, subcommand="export", user_id=ADMIN, permissions=MANAGER_PERMISSIONS
    )
    final = await export.wait_for(lambda r: bool(r.files), timeout=10)
    (attachment,) = final.files
    data = (
        gzip.decompress(attachment.data) if attachment.filename.endswith(".gz") else attachment.data
    )
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert sorted(int(row["user_id"]) for row in rows) == [MEMBER, MEMBER + 1]
    assert {row["status"] for row in rows} == {"delivered"}
