"""The real bot, in-process, against the fake Discord and the fake CometAPI on loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import pytest

from bot.app import App, assemble
from bot.core.cometapi import RetryPolicy
from bot.settings import Settings
from tests.fakes.discord_payloads import MANAGER_PERMISSIONS
from tests.fakes.fake_cometapi import FakeCometAPI
from tests.fakes.fake_discord import FakeDiscord, InteractionHandle

COMET_KEY = "sk-e2e-comet-key-0123456789"
ROOT = Path(__file__).parents[2]
EPHEMERAL = 1 << 6
# The member with Manage Server that admin() acts as.
ADMIN = 5000
FAST_RETRY = RetryPolicy(base_delay_s=0.01, max_delay_s=0.02, retry_after_cap_s=0.05)


@dataclass
class Harness:
    """One running bot and the two fakes it talks to."""

    discord: FakeDiscord
    comet: FakeCometAPI
    app: App
    run_task: asyncio.Task[int]

    async def imagine(self, **options: Any) -> InteractionHandle:
        """Dispatch /imagine with these options (user and guild via `as_user`, `guild_id`)."""
        kwargs = {key: options.pop(key) for key in list(options) if key in _INTERACTION_KWARGS}
        return await self.discord.invoke("imagine", options, **kwargs)

    async def settled(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until no generation is in flight, so every row has its final status.

        The member sees the images before the bot writes the row's final status: a test
        that reads reports right after the upload must wait for this.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        while self.app.service.in_flight:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("generations still in flight")
            await asyncio.sleep(0.01)

    async def stop(self) -> int:
        """Shut the bot down like SIGTERM does and return its exit status."""
        self.app.request_shutdown("test finished")
        return await asyncio.wait_for(self.run_task, timeout=15)


_INTERACTION_KWARGS = {
    "user_id",
    "username",
    "guild_id",
    "channel_id",
    "permissions",
    "attachment_size_limit",
    "dm",
    "roles",
    # The member's Discord locale ("ja", "de", "en-US"); the server's is its GuildSpec's.
    "locale",
}


def e2e_settings(
    fake: FakeDiscord, comet: FakeCometAPI, database: Path, **overrides: Any
) -> Settings:
    """Settings that point the whole bot at the two fakes."""
    values: dict[str, Any] = {
        "discord_token": fake.token,
        "cometapi_key": COMET_KEY,
        "cometapi_base_url": comet.base_url,
        "discord_api_base_url": fake.api_base_url,
        "database_path": database,
        "default_model": "gpt-image-1",
        "cometapi_timeout_s": 10,
        "shutdown_grace_s": 2,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@asynccontextmanager
async def run_bot(
    fake: FakeDiscord,
    comet: FakeCometAPI,
    database: Path,
    monkeypatch: pytest.MonkeyPatch,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """Start the real bot against the fakes; stop it and check both fakes saw no violation."""
    # The bot repoints discord.py's class-wide URLs; monkeypatch restores them afterwards.
    monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
    gateway = discord.gateway.DiscordWebSocket
    monkeypatch.setattr(gateway, "DEFAULT_GATEWAY", gateway.DEFAULT_GATEWAY)
    settings = e2e_settings(fake, comet, database, **overrides)
    async with assemble(settings, retry=FAST_RETRY) as app:
        task = asyncio.create_task(app.run())
        ready = asyncio.create_task(app.bot.wait_until_ready())
        done, _ = await asyncio.wait({task, ready}, timeout=10, return_when="FIRST_COMPLETED")
        if ready not in done:
            ready.cancel()
            raise AssertionError(
                f"bot did not become ready: {task.result() if task.done() else 'timeout'}"
            )
        harness = Harness(fake, comet, app, task)
        try:
            yield harness
        finally:
            if not task.done():
                assert await harness.stop() == 0
    fake.assert_clean()
    assert comet.violations == []


@asynccontextmanager
async def fakes() -> AsyncIterator[tuple[FakeDiscord, FakeCometAPI]]:
    """A fresh fake Discord and fake CometAPI."""
    async with FakeDiscord() as fake, FakeCometAPI(api_key=COMET_KEY) as comet:
        yield fake, comet


def modal_inputs(modal: dict[str, Any]) -> dict[str, str]:
    """A modal's text inputs: label -> custom_id (classic action rows or Label wrappers)."""
    found: dict[str, str] = {}

    def walk(component: dict[str, Any], label: str | None) -> None:
        if component.get("type") == 4:
            found[component.get("label") or label or ""] = component["custom_id"]
        for child in component.get("components", []):
            walk(child, label)
        if "component" in component:
            walk(component["component"], component.get("label"))

    for top in modal.get("components", []):
        walk(top, None)
    return found


def process_env(fake: FakeDiscord, comet: FakeCometAPI, **settings: str) -> dict[str, str]:
    """The environment of a `python -m bot` process pointed at the fakes, plus `settings`."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": fake.token,
        "COMETAPI_KEY": COMET_KEY,
        "COMETAPI_BASE_URL": comet.base_url,
        "DISCORD_API_BASE_URL": fake.api_base_url,
        **settings,
    }


async def result_of(bot: Harness, handle: InteractionHandle) -> dict[str, Any]:
    """The posted result message of an /imagine (or a button's new generation)."""
    await handle.wait_for(lambda r: bool(r.files), timeout=15)
    await bot.settled()
    message = handle.original
    assert message is not None
    return message


async def private_text(handle: InteractionHandle) -> str:
    """The text of an immediate, private (ephemeral) answer."""
    callback = await handle.wait_for_callback()
    assert callback.json["type"] == 4
    assert callback.json["data"]["flags"] & EPHEMERAL
    return str(callback.json["data"]["content"])


async def admin(bot: Harness, subcommand: list[str] | str, options: dict[str, object]) -> str:
    """Run a /usage-admin subcommand as ADMIN; the answer's data as text."""
    handle = await bot.discord.invoke(
        "usage-admin",
        options,
        subcommand=subcommand,
        user_id=ADMIN,
        permissions=MANAGER_PERMISSIONS,
    )
    callback = await handle.wait_for_callback()
    return str(callback.json["data"])
