"""/usage-admin through the real bot and the fake Discord: who may use it, and what it answers.

Discord would not show /usage-admin to a member without Manage Server, but a server can change
that default, so these tests deliver it anyway and check the bot refuses by itself. Where a
property lives only in the database (a refused change changed nothing, the audit log), the
tests read the SQLite file they gave the bot with plain sqlite3.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bot.charts import CHART_SIZE
from tests.e2e.harness import Harness, fakes, run_bot
from tests.fakes import discord_payloads as p
from tests.fakes.discord_payloads import (
    ADMINISTRATOR,
    MANAGE_GUILD,
    MANAGER_PERMISSIONS,
    MEMBER_PERMISSIONS,
    SEND_MESSAGES,
)
from tests.fakes.fake_discord import InteractionHandle, RecordedRequest

ADMIN = 5100
MEMBER = 6100
MEMBER_USER = p.user(MEMBER, "member", global_name="Member One")
EPHEMERAL = p.MESSAGE_FLAG_EPHEMERAL
PRICES_AS_OF = "2026-11-21"
# After the bot's answer, how long to keep listening for anything else it might send.
SETTLE_S = 0.3

READ_COMMANDS: list[tuple[str | list[str], dict[str, Any]]] = [
    ("user", {"member": MEMBER_USER}),
    ("server", {}),
    ("export", {}),
    (["limits", "show"], {}),
]
WRITE_COMMANDS: list[tuple[list[str], dict[str, Any]]] = [
    (["limits", "daily-images"], {"images": 1}),
    (["limits", "budget"], {"usd": 1.5}),
    (["limits", "models"], {"models": "dall-e-3"}),
    (["limits", "max-n"], {"n": 2}),
    (["limits", "block"], {"member": MEMBER_USER}),
    (["limits", "unblock"], {"member": MEMBER_USER}),
    (["limits", "reset-day"], {"member": MEMBER_USER}),
]


@pytest.fixture
async def bot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    """A running bot whose database holds one generation: MEMBER made 3 dall-e-2 images.

    A price file fixes dall-e-2 at $0.02 an image as of PRICES_AS_OF, so reports show a cost
    that does not depend on the catalog fetch racing the generation.
    """
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps({"as_of": PRICES_AS_OF, "models": {"dall-e-2": {"per_image": 0.02}}})
    )
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, tmp_path / "usage.db", monkeypatch, price_file=prices) as harness,
    ):
        handle = await harness.imagine(prompt="three boats", model="dall-e-2", n=3, user_id=MEMBER)
        final = await handle.wait_for(lambda r: bool(r.files), timeout=10)
        assert len(final.files) == 3
        await harness.settled()
        yield harness


def database(bot: Harness) -> Path:
    return Path(bot.app.settings.database_path)


def rows(bot: Harness, sql: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(database(bot))) as db:
        return db.execute(sql).fetchall()


async def usage_admin(
    bot: Harness,
    subcommand: str | list[str],
    options: dict[str, Any] | None = None,
    *,
    user_id: int = ADMIN,
    permissions: int = MANAGER_PERMISSIONS,
    dm: bool = False,
) -> tuple[InteractionHandle, list[RecordedRequest]]:
    """Dispatch /usage-admin and return everything the bot sent for it once it went quiet."""
    handle = await bot.discord.invoke(
        "usage-admin",
        options or {},
        subcommand=subcommand,
        user_id=user_id,
        permissions=permissions,
        dm=dm,
    )
    callback = await handle.wait_for_callback()
    if callback.json["type"] == 5:
        await handle.wait_for_final(timeout=10)
    await asyncio.sleep(SETTLE_S)
    return handle, handle.requests


def fields(embed: dict[str, Any]) -> dict[str, str]:
    return {field["name"]: field["value"] for field in embed["fields"]}


def assert_private_refusal(
    handle: InteractionHandle, sent: list[RecordedRequest], words: str, case: object = None
) -> None:
    """Exactly one answer: an ephemeral message with these words, no data, mentioning no one.

    `case` names the invocation in a failure message.
    """
    assert [request.route for request in sent] == ["POST /interactions/{id}/{token}/callback"], case
    body = sent[0].json
    assert body["type"] == 4, case
    data = body["data"]
    assert data["flags"] & EPHEMERAL, case
    assert handle.ephemeral, case
    assert words in data["content"], case
    assert data["allowed_mentions"]["parse"] == [], case
    assert not data.get("embeds"), case
    assert not sent[0].files, case
    # The seeded usage is 3 images; a refusal must not leak that number.
    assert "3" not in data["content"], case


PERMISSION_CASES = [
    (0, False),
    (SEND_MESSAGES, False),
    (MEMBER_PERMISSIONS, False),
    (MANAGE_GUILD, True),
    (MANAGE_GUILD | SEND_MESSAGES, True),
    (ADMINISTRATOR, True),
    ((1 << 41) - 1 - MANAGE_GUILD - ADMINISTRATOR, False),
]


async def test_only_manage_server_or_administrator_sees_other_members(bot: Harness) -> None:
    """Manage Server or Administrator, and no other permission, opens a member's report."""
    for permissions, allowed in PERMISSION_CASES:
        handle, sent = await usage_admin(
            bot, "user", {"member": MEMBER_USER}, permissions=permissions
        )
        if allowed:
            assert len(sent) == 1, permissions
            assert fields(sent[0].json["data"]["embeds"][0])["Images"] == "3", permissions
        else:
            assert_private_refusal(
                handle, sent, "You need the Manage Server permission", permissions
            )


@pytest.mark.parametrize("permissions", [0, SEND_MESSAGES])
async def test_members_without_manage_server_are_refused(bot: Harness, permissions: int) -> None:
    """The interaction arrives although Discord should hide it: no report, no defer, no data."""
    for subcommand, options in READ_COMMANDS:
        handle, sent = await usage_admin(
            bot, subcommand, options, user_id=MEMBER, permissions=permissions
        )
        assert_private_refusal(handle, sent, "You need the Manage Server permission", subcommand)


async def limits_shown(bot: Harness) -> dict[str, str]:
    """The fields of `limits show` as an admin sees them."""
    _, sent = await usage_admin(bot, ["limits", "show"])
    return fields(sent[0].json["data"]["embeds"][0])


async def test_limits_cannot_be_changed_without_manage_server(bot: Harness) -> None:
    """Every refused limit command changes nothing: no limit, block, reset or audit row."""
    before = await limits_shown(bot)
    for subcommand, options in WRITE_COMMANDS:
        handle, sent = await usage_admin(
            bot, subcommand, options, user_id=MEMBER, permissions=SEND_MESSAGES
        )
        assert_private_refusal(handle, sent, "Manage Server", subcommand)
    for table in ("guild_limits", "guild_blocks", "quota_resets", "limit_changes"):
        assert rows(bot, f"SELECT * FROM {table}") == [], table  # noqa: S608
    # And what an admin sees afterwards is what they saw before: nobody blocked, no changes.
    after = await limits_shown(bot)
    assert after == before
    assert after["Blocked members"] == "none"
    assert "Latest changes (UTC)" not in after


@pytest.mark.parametrize("permissions", [0, MANAGER_PERMISSIONS])
async def test_direct_messages_are_refused(bot: Harness, permissions: int) -> None:
    """Outside a server there are no server limits or reports, whatever the permissions."""
    handle, sent = await usage_admin(bot, "server", dm=True, permissions=permissions)
    assert_private_refusal(handle, sent, "only in a server")


async def test_an_admin_sees_a_members_report(bot: Harness) -> None:
    """Manage Server: the member's numbers in this server, privately, with the cost."""
    handle, sent = await usage_admin(bot, "user", {"member": MEMBER_USER})
    assert len(sent) == 1
    assert sent[0].json["type"] == 4
    data = sent[0].json["data"]
    assert data["flags"] & EPHEMERAL
    assert handle.ephemeral
    assert data["allowed_mentions"]["parse"] == []
    embed = data["embeds"][0]
    assert embed["title"] == "Image usage of Member One in this server: the last 30 days"
    shown = fields(embed)
    assert shown["Images"] == "3"
    assert shown["Requests"] == "1"
    # 3 dall-e-2 images at the price file's $0.02.
    assert shown["Cost"] == f"$0.0600 USD (estimated, prices as of {PRICES_AS_OF})"


async def test_an_admin_gets_the_server_report_with_its_chart(bot: Harness) -> None:
    """Deferred privately, then the report with a PNG chart of the expected size attached."""
    handle, sent = await usage_admin(bot, "server")
    assert [request.route for request in sent] == [
        "POST /interactions/{id}/{token}/callback",
        "POST /webhooks/{app}/{token}",
    ]
    assert sent[0].json == {"type": 5, "data": {"flags": EPHEMERAL}}
    followup = sent[1]
    assert followup.json["flags"] & EPHEMERAL
    assert handle.ephemeral
    assert followup.json["allowed_mentions"]["parse"] == []
    embed = followup.json["embeds"][0]
    assert embed["image"]["url"] == "attachment://usage-chart.png"
    shown = fields(embed)
    assert shown["Images"] == "3"
    assert shown["Top members"].startswith(f"1. <@{MEMBER}>: 3 images")
    (chart,) = followup.files
    assert chart.filename == "usage-chart.png"
    with Image.open(io.BytesIO(chart.data)) as image:
        assert (image.format, image.size) == ("PNG", CHART_SIZE)


async def test_an_admin_exports_a_csv(bot: Harness) -> None:
    """Deferred privately; one CSV attachment with the header and the member's one row."""
    handle, sent = await usage_admin(bot, "export", {"period": "all"})
    assert sent[0].json == {"type": 5, "data": {"flags": EPHEMERAL}}
    assert len(sent) == 2
    followup = sent[1]
    assert handle.ephemeral
    assert "1 row(s), one per generation." in followup.json["content"]
    (attachment,) = followup.files
    assert attachment.filename == f"usage-{bot.discord.guild_id}-all_time.csv"
    text = attachment.data.decode()
    assert text.splitlines()[0].startswith("created_at,user_id,guild_id,")
    (row,) = csv.DictReader(io.StringIO(text))
    assert int(row["user_id"]) == MEMBER
    assert int(row["guild_id"]) == bot.discord.guild_id
    assert (row["model"], row["n"], row["images"]) == ("dall-e-2", "3", "3")
    # The row is the database's: the same status the ledger recorded for the generation.
    assert rows(bot, "SELECT user_id, model, images_delivered, status FROM generations") == [
        (MEMBER, "dall-e-2", 3, row["status"])
    ]
    assert float(row["cost_usd"]) == pytest.approx(0.06)
    assert (row["price_source"], row["price_as_of"]) == ("file", PRICES_AS_OF)


@pytest.mark.parametrize(
    ("options", "label"),
    [
        ({}, "the_last_30_days"),
        ({"start": "2026-01-01", "end": "2026-01-31"}, None),
    ],
)
async def test_export_names_are_safe_file_names(
    bot: Harness, options: dict[str, Any], label: str | None
) -> None:
    """The period's label becomes letters, digits, dashes and underscores in the file name."""
    _, sent = await usage_admin(bot, "export", options)
    (attachment,) = sent[-1].files
    name = attachment.filename
    assert name is not None
    assert re.fullmatch(r"usage-[0-9]+-[A-Za-z0-9_-]+\.csv(\.gz)?", name), name
    if label is not None:
        assert name == f"usage-{bot.discord.guild_id}-{label}.csv"


async def test_a_limit_set_by_an_admin_is_logged_and_refuses_the_next_request(
    bot: Harness,
) -> None:
    """Set through the command: shown and audited, and the member's next request names it."""
    handle, sent = await usage_admin(bot, ["limits", "daily-images"], {"images": 3})
    assert handle.ephemeral
    shown = fields(sent[0].json["data"]["embeds"][0])
    assert shown["Daily images per member"] == "3 images per member per day in this server"
    assert f"<@{ADMIN}> daily_images: default \u2192 3" in shown["Latest changes (UTC)"]
    guild = bot.discord.guild_id
    assert rows(bot, "SELECT guild_id, user_daily_images, updated_by FROM guild_limits") == [
        (guild, 3, ADMIN)
    ]
    assert rows(
        bot, "SELECT guild_id, actor_id, action, target_id, old_value, new_value FROM limit_changes"
    ) == [(guild, ADMIN, "daily_images", None, None, "3")]

    refused = await bot.imagine(prompt="one more", model="dall-e-3", user_id=MEMBER)
    callback = await refused.wait_for_callback()
    assert callback.json["type"] == 4
    assert callback.json["data"]["flags"] & EPHEMERAL
    assert "this server's limit of 3" in callback.json["data"]["content"]
    await asyncio.sleep(SETTLE_S)
    assert len(bot.comet.calls) == 1  # only the seeding generation went upstream
