"""Composition root: settings, logging, HTTP session, database, bot; then run until stopped.

`python -m bot` runs the bot.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

import aiohttp
import discord
from pydantic import ValidationError

from bot import __version__
from bot.client import ImagineBot, point_discord_at
from bot.cometapi import CometAPIClient
from bot.docs import model_table_block
from bot.ledger.store import open_ledger
from bot.logs import configure_logging
from bot.service import GenerationService
from bot.settings import Settings, describe_settings_error

log = logging.getLogger("bot")

USER_AGENT = f"imagine-bot/{__version__} (+https://github.com/imagine-bot)"


def load_settings() -> Settings | None:
    """Read the settings, printing what is missing or wrong instead of a traceback."""
    try:
        return Settings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as error:
        print(describe_settings_error(error), file=sys.stderr)
        return None


async def run_bot(settings: Settings) -> int:
    """Own the session, the database and the bot for the life of the process."""
    point_discord_at(settings.discord_api_base_url)
    async with (
        aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}) as session,
        open_ledger(settings.database_path) as ledger,
    ):
        stale = await ledger.mark_stale_pending()
        if stale:
            log.warning("marked %d generation(s) of an earlier run as interrupted", stale)
        client = CometAPIClient(
            session,
            base_url=settings.cometapi_base_url,
            api_key=settings.cometapi_key,
            timeout_s=settings.cometapi_timeout_s,
        )
        service = GenerationService(
            client,
            ledger,
            max_concurrent=settings.max_concurrent_generations,
            daily_limit=settings.user_daily_image_limit,
        )
        bot = ImagineBot(
            service, default_model=settings.default_model, guild_ids=settings.discord_guild_ids
        )
        stopping: list[asyncio.Task[None]] = []

        async def shut_down(signal_name: str) -> None:
            log.info("%s received: finishing generations in flight, then stopping", signal_name)
            service.stop_accepting()
            interrupted = await service.drain(settings.shutdown_grace_s)
            if interrupted:
                log.warning("interrupted %d generation(s) still running", interrupted)
            await bot.close()

        def on_signal(signum: int) -> None:
            if not stopping:
                name = signal.Signals(signum).name
                stopping.append(asyncio.create_task(shut_down(name)))

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            async with bot:
                await bot.start(settings.discord_token.get_secret_value())
        except discord.LoginFailure:
            log.error("Discord refused DISCORD_TOKEN: check the bot token in .env")
            return 1
        except (aiohttp.ClientConnectionError, discord.GatewayNotFound) as error:
            log.error(
                "cannot reach Discord at %s: %s",
                settings.discord_api_base_url,
                type(error).__name__,
            )
            return 1
        if stopping:
            await stopping[0]
        log.info("stopped cleanly")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog="python -m bot", description="imagine-bot")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("run", help="run the bot (the default)")
    commands.add_parser("models", help="print the model table the README shows")
    args = parser.parse_args(argv)
    if args.command == "models":
        print(model_table_block())
        return 0
    settings = load_settings()
    if settings is None:
        return 2
    configure_logging(
        settings.log_level,
        [settings.discord_token.get_secret_value(), settings.cometapi_key.get_secret_value()],
    )
    return asyncio.run(run_bot(settings))


if __name__ == "__main__":
    sys.exit(main())
