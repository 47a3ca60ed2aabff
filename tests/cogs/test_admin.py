"""/usage-admin: the permission decision, and real interactions through the real command tree.

Each interaction is a real `discord.Interaction` built from the payload Discord sends; its
answers go over HTTP to a loopback server that records them. Discord would not deliver
/usage-admin to a member without Manage Server, but a server can change that default, so
these tests deliver it anyway and check the bot refuses by itself.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from discord.ext import commands
from PIL import Image
from pydantic import SecretStr

from bot.charts import CHART_SIZE
from bot.core.cometapi import CometAPIClient, GenerationResult
from bot.core.service import GenerationService, Requester
from bot.core.validation import ImagineOptions, validate
from bot.glue.cogs.admin import AdminCog, can_see_others, export_name
from bot.glue.errors import ImagineTree
from bot.ledger.limits import QuotaExceeded
from bot.ledger.periods import Period
from bot.ledger.reports import window_for
from bot.ledger.store import open_ledger

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
GUILD, CHANNEL, APP = 10, 30, 77
ADMIN, MEMBER = 100, 1
MANAGE_GUILD, ADMINISTRATOR, SEND_MESSAGES = 1 << 5, 1 << 3, 1 << 11
EPHEMERAL = 1 << 6


@pytest.mark.parametrize(
    ("permissions", "allowed"),
    [
        (0, False),
        (SEND_MESSAGES, False),
        (MANAGE_GUILD, True),
        (MANAGE_GUILD | SEND_MESSAGES, True),
        (ADMINISTRATOR, True),
        ((1 << 41) - 1 - MANAGE_GUILD - ADMINISTRATOR, False),
    ],
)
def test_who_can_see_other_members(permissions: int, allowed: bool) -> None:
    """Manage Server or Administrator, and nothing else, opens other members' data."""
    assert can_see_others(permissions) is allowed


def test_export_names_are_safe_file_names() -> None:
    """The period's label becomes letters, digits, dashes and underscores."""
    name = export_name(GUILD, window_for(Period.DAYS_30, NOW))
    assert name == "usage-10-the_last_30_days"


@dataclass
class Recorded:
    """One request the bot made to the loopback Discord."""

    method: str
    path: str
    payload: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)


class LoopbackDiscord:
    """Answers interaction callbacks and webhook follow-ups, and keeps what was sent."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []

    async def handle(self, request: web.Request) -> web.Response:
        payload: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                assert isinstance(part, aiohttp.BodyPartReader)
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                else:
                    files[part.filename or str(part.name)] = bytes(await part.read())
        elif request.can_read_body:
            payload = await request.json()
        self.requests.append(Recorded(request.method, request.path, payload, files))
        answer = (
            {"interaction": {"id": "1", "type": 2}}
            if request.path.endswith("/callback")
            else message_payload()
        )
        # Exactly Discord's header: discord.py parses JSON only when it reads this.
        return web.Response(
            body=json.dumps(answer).encode(), headers={"Content-Type": "application/json"}
        )


def message_payload() -> dict[str, Any]:
    return {
        "id": "555",
        "channel_id": str(CHANNEL),
        "type": 0,
        "content": "",
        "author": user_payload(APP),
        "attachments": [],
        "embeds": [],
        "mentions": [],
        "mention_roles": [],
        "pinned": False,
        "mention_everyone": False,
        "tts": False,
        "timestamp": "2026-11-21T12:00:00+00:00",
        "edited_timestamp": None,
        "flags": EPHEMERAL,
    }


def user_payload(user_id: int) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": f"user{user_id}",
        "discriminator": "0",
        "global_name": f"User {user_id}",
        "avatar": None,
    }


def member_payload(user_id: int, permissions: int) -> dict[str, Any]:
    return {
        "user": user_payload(user_id),
        "roles": [],
        "joined_at": "2026-01-01T00:00:00+00:00",
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "nick": None,
        "avatar": None,
        "permissions": str(permissions),
    }


def interaction_payload(
    subcommand: list[dict[str, Any]],
    *,
    invoker: int,
    permissions: int,
    in_guild: bool = True,
    resolved: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An APPLICATION_COMMAND interaction for /usage-admin, in a guild channel or a DM."""
    payload: dict[str, Any] = {
        "id": "1",
        "application_id": str(APP),
        "type": 2,
        "token": "interaction-token",
        "version": 1,
        "app_permissions": "0",
        "locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(GUILD)},
        "attachment_size_limit": 10 * 1024 * 1024,
        "data": {
            "id": "3",
            "name": "usage-admin",
            "type": 1,
            "options": subcommand,
            "resolved": resolved or {},
        },
    }
    if in_guild:
        payload |= {
            "guild_id": str(GUILD),
            "guild_locale": "en-US",
            "context": 0,
            "channel_id": str(CHANNEL),
            "channel": {
                "id": str(CHANNEL),
                "type": 0,
                "guild_id": str(GUILD),
                "name": "general",
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "parent_id": None,
                "topic": None,
                "last_message_id": None,
                "rate_limit_per_user": 0,
                "flags": 0,
            },
            "member": member_payload(invoker, permissions),
        }
    else:
        payload |= {
            "context": 1,
            "channel_id": "31",
            "channel": {"id": "31", "type": 1, "recipients": [user_payload(invoker)]},
            "user": user_payload(invoker),
        }
    return payload


def member_option(name: str, user_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A USER option and the resolved data Discord sends with it."""
    member = member_payload(user_id, 0)
    user = member.pop("user")
    return (
        {"type": 6, "name": name, "value": str(user_id)},
        {"users": {str(user_id): user}, "members": {str(user_id): member}},
    )


@dataclass
class Harness:
    """The admin cog on a real bot and database, with Discord on loopback."""

    bot: commands.Bot
    service: GenerationService
    discord: LoopbackDiscord

    async def run(self, payload: dict[str, Any]) -> list[Recorded]:
        """Deliver one interaction through the command tree; return what the bot sent."""
        start = len(self.discord.requests)
        interaction: discord.Interaction[commands.Bot] = discord.Interaction(
            data=payload,  # type: ignore[arg-type]
            state=self.bot._connection,
        )
        await self.bot.tree._call(interaction)
        return self.discord.requests[start:]


@pytest.fixture
async def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    fake = LoopbackDiscord()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        monkeypatch.setattr(discord.http.Route, "BASE", str(server.make_url("/api/v10")))
        async with open_ledger(tmp_path / "usage.db", lambda: NOW) as ledger:
            client = CometAPIClient(
                session, base_url="http://127.0.0.1:9/v1", api_key=SecretStr("k"), timeout_s=1
            )
            service = GenerationService(client, ledger, max_concurrent=1, daily_limit=0)
            intents = discord.Intents.none()
            intents.guilds = True
            bot = commands.Bot(command_prefix="!", intents=intents, tree_cls=ImagineTree)
            # What logging in would set: the bot's own user, and the HTTP session that
            # interactions answer through.
            bot._connection.user = discord.ClientUser(
                state=bot._connection,
                data=user_payload(APP) | {"bot": True},  # type: ignore[arg-type]
            )
            bot.http._HTTPClient__session = session  # type: ignore[attr-defined]
            await bot.add_cog(AdminCog(service))
            # Usage to report: the member made 3 dall-e-3 images today in the guild.
            reservation = await service.reserve(
                validate(ImagineOptions(prompt="p", model="dall-e-2", n=3), "dall-e-3"),
                Requester(MEMBER, GUILD, CHANNEL),
            )
            await service.record_delivery(reservation, GenerationResult([], None, 1), 3)
            yield Harness(bot, service, fake)


SERVER = [{"type": 1, "name": "server", "options": []}]


def user_command(target: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    option, resolved = member_option("member", target)
    return [{"type": 1, "name": "user", "options": [option]}], resolved


def assert_private_refusal(sent: list[Recorded], words: str) -> None:
    """Exactly one answer: an ephemeral message with these words, mentioning no one."""
    assert len(sent) == 1
    assert sent[0].path.endswith("/callback")
    assert sent[0].payload["type"] == 4
    data = sent[0].payload["data"]
    assert data["flags"] & EPHEMERAL
    assert words in data["content"]
    assert data["allowed_mentions"]["parse"] == []
    assert "embeds" not in data or not data["embeds"]


@pytest.mark.parametrize("permissions", [0, SEND_MESSAGES])
async def test_members_without_manage_server_are_refused(
    harness: Harness, permissions: int
) -> None:
    """The interaction arrives although Discord should hide it: no report, no defer, no data."""
    options, resolved = user_command(MEMBER)
    for payload in (
        interaction_payload(options, invoker=ADMIN, permissions=permissions, resolved=resolved),
        interaction_payload(SERVER, invoker=ADMIN, permissions=permissions),
        interaction_payload(
            [{"type": 1, "name": "export", "options": []}], invoker=ADMIN, permissions=permissions
        ),
    ):
        sent = await harness.run(payload)
        assert_private_refusal(sent, "You need the Manage Server permission")
        assert "3" not in sent[0].payload["data"]["content"]


async def test_limits_cannot_be_changed_without_manage_server(harness: Harness) -> None:
    """A refused limit change changes nothing."""
    payload = interaction_payload(
        [
            {
                "type": 2,
                "name": "limits",
                "options": [
                    {
                        "type": 1,
                        "name": "daily-images",
                        "options": [{"type": 4, "name": "images", "value": 1}],
                    }
                ],
            }
        ],
        invoker=MEMBER,
        permissions=SEND_MESSAGES,
    )
    assert_private_refusal(await harness.run(payload), "Manage Server")
    assert (await harness.service.limits.limits(GUILD)).user_daily_images is None


async def test_direct_messages_are_refused(harness: Harness) -> None:
    """Outside a server there are no server limits or reports."""
    sent = await harness.run(
        interaction_payload(SERVER, invoker=ADMIN, permissions=0, in_guild=False)
    )
    assert_private_refusal(sent, "only in a server")


async def test_an_admin_sees_a_members_report(harness: Harness) -> None:
    """Manage Server: the member's numbers in this server, privately, with the cost."""
    options, resolved = user_command(MEMBER)
    sent = await harness.run(
        interaction_payload(options, invoker=ADMIN, permissions=MANAGE_GUILD, resolved=resolved)
    )
    assert len(sent) == 1
    data = sent[0].payload["data"]
    assert data["flags"] & EPHEMERAL
    assert data["allowed_mentions"]["parse"] == []
    embed = data["embeds"][0]
    assert embed["title"] == "Image usage of User 1 in this server: the last 30 days"
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Images"] == "3"
    # dall-e-2 1024x1024 is $0.02 an image in the built-in table.
    assert fields["Cost"] == "$0.0600 USD (estimated, prices as of 2026-11-21)"


async def test_an_admin_gets_the_server_report_with_its_chart(harness: Harness) -> None:
    """Deferred privately, then the report with a PNG chart of the expected size attached."""
    sent = await harness.run(interaction_payload(SERVER, invoker=ADMIN, permissions=MANAGE_GUILD))
    assert [request.path.rsplit("/", 1)[-1] for request in sent] == [
        "callback",
        "interaction-token",
    ]
    assert sent[0].payload == {"type": 5, "data": {"flags": EPHEMERAL}}
    followup = sent[1]
    assert followup.payload["flags"] & EPHEMERAL
    embed = followup.payload["embeds"][0]
    assert embed["image"]["url"] == "attachment://usage-chart.png"
    fields = {field["name"]: field["value"] for field in embed["fields"]}
    assert fields["Images"] == "3"
    assert fields["Top members"].startswith(f"1. <@{MEMBER}>: 3 images")
    chart = followup.files["usage-chart.png"]
    with Image.open(io.BytesIO(chart)) as image:
        assert (image.format, image.size) == ("PNG", CHART_SIZE)


async def test_an_admin_exports_a_csv(harness: Harness) -> None:
    """The export arrives as a CSV attachment with the header and the member's row."""
    sent = await harness.run(
        interaction_payload(
            [
                {
                    "type": 1,
                    "name": "export",
                    "options": [{"type": 3, "name": "period", "value": "all"}],
                }
            ],
            invoker=ADMIN,
            permissions=MANAGE_GUILD,
        )
    )
    assert sent[0].payload == {"type": 5, "data": {"flags": EPHEMERAL}}
    ((name, body),) = sent[1].files.items()
    assert name == "usage-10-all_time.csv"
    lines = body.decode().splitlines()
    assert lines[0].startswith("created_at,user_id,guild_id,")
    assert len(lines) == 2
    assert "1 row(s), one per generation." in sent[1].payload["content"]


async def test_a_limit_set_by_an_admin_refuses_the_next_request(harness: Harness) -> None:
    """Set through the command: the member's next request names the server's limit."""
    payload = interaction_payload(
        [
            {
                "type": 2,
                "name": "limits",
                "options": [
                    {
                        "type": 1,
                        "name": "daily-images",
                        "options": [{"type": 4, "name": "images", "value": 3}],
                    }
                ],
            }
        ],
        invoker=ADMIN,
        permissions=MANAGE_GUILD,
    )
    sent = await harness.run(payload)
    fields = {f["name"]: f["value"] for f in sent[0].payload["data"]["embeds"][0]["fields"]}
    assert fields["Daily images per member"] == "3 images per member per day in this server"
    assert f"<@{ADMIN}> daily_images: default \u2192 3" in fields["Latest changes (UTC)"]
    with pytest.raises(QuotaExceeded) as caught:
        await harness.service.reserve(
            validate(ImagineOptions(prompt="p", model="dall-e-3"), "dall-e-3"),
            Requester(MEMBER, GUILD, CHANNEL),
        )
    assert caught.value.server_limit
