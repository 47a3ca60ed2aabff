"""Assembly of the running bot: who owns the session, the database and the bot, and shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import discord

from bot import __version__
from bot.core.cometapi import CometAPIClient, RetryPolicy
from bot.core.pricing import PriceBook, catalog_url, keep_prices_fresh, load_price_file
from bot.core.service import GenerationService, OperatorLimits
from bot.core.slots import FairSlots
from bot.glue.client import DISCORD_API_BASE, ImagineBot, point_discord_at
from bot.glue.remix import ReferenceFetcher
from bot.i18n import Localizer
from bot.ledger.storage import open_storage
from bot.ledger.store import UsageLedger
from bot.loopwatch import LoopLagMonitor
from bot.metrics import HealthChecks, Metrics, MetricsServer
from bot.observe import GenerationWatch, database_answers
from bot.settings import Settings
from bot.supervise import Supervisor

log = logging.getLogger("bot")

USER_AGENT = f"imagine-bot/{__version__}"
# With metrics on and LOOP_LAG_LOG_S off, the lag gauge is the worst of each such window.
METRICS_LAG_WINDOW_S = 5.0


@dataclass
class App:
    """The process's resources, built once and closed by `assemble`."""

    settings: Settings
    session: aiohttp.ClientSession
    ledger: UsageLedger
    service: GenerationService
    bot: ImagineBot
    _stopping: asyncio.Task[None] | None = field(default=None, init=False)

    async def shut_down(self, reason: str) -> None:
        """Stop taking generations, let those in flight finish within the grace, then close."""
        log.info("%s: finishing generations in flight, then stopping", reason)
        self.service.stop_accepting()
        interrupted = await self.service.drain(self.settings.shutdown_grace_s)
        if interrupted:
            log.warning("interrupted %d generation(s) still running", interrupted)
        await self.bot.close()

    def request_shutdown(self, reason: str) -> None:
        """Start shutting down once, however many signals arrive."""
        if self._stopping is None:
            self._stopping = asyncio.create_task(self.shut_down(reason))

    async def run(self) -> int:
        """Log in and run until closed; return the process exit status."""
        try:
            await self.bot.start(self.settings.discord_token.get_secret_value())
        except discord.LoginFailure:
            log.error("Discord refused DISCORD_TOKEN: check the bot token in .env")
            return 1
        except (aiohttp.ClientConnectionError, discord.GatewayNotFound) as error:
            where = self.settings.discord_api_base_url
            log.error("cannot reach Discord at %s: %s", where, type(error).__name__)
            return 1
        if self._stopping is not None:
            await self._stopping
        log.info("stopped cleanly")
        return 0


@asynccontextmanager
async def assemble(settings: Settings, *, retry: RetryPolicy | None = None) -> AsyncIterator[App]:
    """Open the session and the database, build the bot; close all of it on exit."""
    point_discord_at(settings.discord_api_base_url)
    # Read before anything opens: a bad PRICE_FILE stops the start with PriceFileError, a
    # translation with the wrong placeholders with CatalogError.
    prices = PriceBook(load_price_file(settings.price_file) if settings.price_file else None)
    localizer = Localizer.load()
    async with (
        aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT},
            # aiohttp caps a session at 100 connections by default, which split a burst of
            # 200 generations into two upstream waves; the generation semaphore is the cap.
            connector=aiohttp.TCPConnector(limit=0),
        ) as session,
        open_storage(settings.storage_url, instance_id=settings.instance) as ledger,
    ):
        stale = await ledger.mark_stale_pending()
        if stale:
            log.warning("closed %d generation(s) an earlier run left pending", stale)
        metrics = Metrics() if settings.metrics_port else None
        watch = GenerationWatch(metrics) if metrics else None
        client = CometAPIClient(
            session,
            base_url=settings.cometapi_base_url,
            api_key=settings.cometapi_key,
            timeout_s=settings.cometapi_timeout_s,
            retry=retry,
        )
        service = GenerationService(
            client,
            ledger,
            slots=FairSlots(settings.max_concurrent_generations, settings.max_concurrent_per_user),
            operator=OperatorLimits(
                user_daily_images=settings.user_daily_image_limit or None,
                user_daily_budget_usd=settings.user_daily_budget_usd,
                bot_daily_budget_usd=settings.bot_daily_budget_usd,
            ),
            prices=prices,
            observer=watch,
        )
        bot = ImagineBot(
            service,
            default_model=settings.default_model,
            guild_ids=settings.discord_guild_ids,
            fetcher=ReferenceFetcher(session, settings.discord_api_base_url),
            custom_gateway=settings.discord_api_base_url != DISCORD_API_BASE,
            shard_count=settings.shard_count,
            shard_ids=settings.shard_ids,
            syncs_commands=settings.syncs_commands,
            localizer=localizer,
        )
        try:
            async with Supervisor() as background:
                # Cached prices at once, then CometAPI's catalog now and daily; never blocks
                # the start, and a failure is logged and retried, never silent.
                url = catalog_url(settings.cometapi_base_url)
                background.start(
                    "price-refresh", lambda: keep_prices_fresh(session, url, ledger, prices)
                )
                lag_window = settings.loop_lag_log_s
                if lag_window > 0 or metrics:
                    monitor = LoopLagMonitor(
                        report_every_s=lag_window or METRICS_LAG_WINDOW_S,
                        log_lines=lag_window > 0,
                        on_window=metrics.observe_loop_lag if metrics else None,
                    )
                    background.start("loop-lag", monitor.run)
                async with AsyncExitStack() as exposed:
                    if metrics and watch and settings.metrics_port:
                        metrics.track(
                            queue_depth=lambda: service.slots.waiting,
                            in_flight=lambda: service.in_flight,
                        )
                        await exposed.enter_async_context(
                            MetricsServer(
                                metrics,
                                health_checks(bot, ledger, watch),
                                host=settings.metrics_host,
                                port=settings.metrics_port,
                            )
                        )
                        log.info(
                            "metrics and health on http://%s:%d/metrics and /healthz",
                            settings.metrics_host,
                            settings.metrics_port,
                        )
                    yield App(settings, session, ledger, service, bot)
        finally:
            if not bot.is_closed():
                await bot.close()
            client.close()


def health_checks(bot: ImagineBot, ledger: UsageLedger, watch: GenerationWatch) -> HealthChecks:
    """What /healthz asks: the gateway, the database and the image API's view of the key."""

    async def gateway() -> tuple[bool, str]:
        connected = bot.is_ready() and not bot.is_closed()
        return connected, "connected" if connected else "not connected"

    async def database() -> tuple[bool, str]:
        return await database_answers(ledger.reader)

    return HealthChecks(gateway=gateway, database=database, image_api=watch.image_api)


async def run_until_signalled(settings: Settings) -> int:
    """The whole life of the process: assemble, run, stop on SIGTERM or SIGINT."""
    async with assemble(settings) as app:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            name = signal.Signals(signum).name
            loop.add_signal_handler(signum, app.request_shutdown, f"{name} received")
        return await app.run()
