"""A bare discord.py bot whose /imagine only defers: `python -m bench.baseline_bot`.

The floor for acknowledging a burst of interactions: whatever this bot needs to parse and
dispatch INTERACTION_CREATE and post the deferral is discord.py's (and the machine's) cost,
not ours. bench/bot_bench.py starts it against the same fake Discord as the real bot, in the
same run, and prints our acknowledgement times as a ratio to this one's.

It is built like the real bot where that costs time per interaction (bot/glue/client.py):
an AutoShardedBot with only the guilds intent, pointed at the fake by discord.py's REST base
(`discord.http.Route.BASE`) and the gateway the REST API names, the same log format on
stderr, the same loop-lag monitor (LOOP_LAG_LOG_S) and the same ready line. It has no
database, no service and no upstream: the command defers and does nothing else.

Settings from the environment: DISCORD_TOKEN, DISCORD_API_BASE_URL, LOOP_LAG_LOG_S (0 = off),
LOG_LEVEL. SIGTERM or SIGINT closes it with exit status 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from contextlib import suppress

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.loopwatch import LoopLagMonitor

log = logging.getLogger("baseline")


@app_commands.command(name="imagine", description="Defer and do nothing (benchmark baseline)")
@app_commands.describe(prompt="Ignored")
async def imagine(interaction: discord.Interaction, prompt: str) -> None:
    """Acknowledge as the real /imagine does (a public "thinking"), then stop."""
    await interaction.response.defer(thinking=True)


class BaselineBot(commands.AutoShardedBot):
    """The real bot's client settings, with one command and nothing behind it."""

    def __init__(self) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=intents,
            allowed_mentions=discord.AllowedMentions.none(),
            guild_ready_timeout=0.5,
        )
        self._announced_ready = False

    async def setup_hook(self) -> None:
        """Follow the gateway the REST base names (as follow_gateway_of does), then sync."""
        _, url, _ = await self.http.get_bot_gateway()
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
        self.tree.add_command(imagine)
        # The real bot syncs on its first start too; the fake then types the options.
        await self.tree.sync()

    async def on_ready(self) -> None:
        """The line the benchmark waits for, worded as the real bot's."""
        if self._announced_ready:
            return
        self._announced_ready = True
        log.info(
            "ready as %s (id %s) in %d guilds with %d shard(s)",
            self.user,
            self.user.id if self.user else "?",
            len(self.guilds),
            self.shard_count or 1,
        )


def configure_logging(level: str) -> None:
    """stderr, in the real bot's format, so the benchmark reads both alike."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("discord.gateway").setLevel(logging.WARNING)


async def run(token: str, lag_every_s: float) -> int:
    """Log in, run until SIGTERM/SIGINT, close; the exit status."""
    bot = BaselineBot()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: asyncio.ensure_future(bot.close()))
    monitor = None
    if lag_every_s > 0:
        monitor = asyncio.create_task(LoopLagMonitor(report_every_s=lag_every_s).run())
    try:
        async with bot:
            await bot.start(token)
    finally:
        if monitor is not None:
            monitor.cancel()
            with suppress(asyncio.CancelledError):
                await monitor
    log.info("stopped cleanly")
    return 0


def main() -> int:
    """Read the environment, point discord.py at the API base, run."""
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    base = os.environ.get("DISCORD_API_BASE_URL")
    if base:
        # The real bot's point_discord_at: the library's one switch for its REST base.
        discord.http.Route.BASE = base.rstrip("/")
    token = os.environ["DISCORD_TOKEN"]
    return asyncio.run(run(token, float(os.environ.get("LOOP_LAG_LOG_S", "0"))))


if __name__ == "__main__":
    sys.exit(main())
