"""The Discord client: an AutoShardedBot that loads the cogs and syncs commands only on change."""

from __future__ import annotations

import hashlib
import json
import logging
import time

import discord
import yarl
from discord.ext import commands

from bot.core.service import GenerationService
from bot.glue.cogs.actions import ResultActions
from bot.glue.cogs.admin import AdminCog
from bot.glue.cogs.imagine import ImagineCog
from bot.glue.cogs.usage import UsageCog
from bot.glue.errors import ImagineTree
from bot.glue.remix import ReferenceFetcher
from bot.glue.result_view import BUTTONS
from bot.glue.translator import CatalogTranslator
from bot.i18n import Localizer

log = logging.getLogger(__name__)


DISCORD_API_BASE = "https://discord.com/api/v10"
OWNER_NOTICE_EVERY_S = 3600.0


def point_discord_at(api_base_url: str) -> None:
    """Send every REST call (and so the gateway lookup) to `api_base_url`.

    discord.py builds each request URL from the class attribute `Route.BASE`; setting it is
    the library's one switch for a REST proxy or a test double.
    """
    discord.http.Route.BASE = api_base_url.rstrip("/")


async def follow_gateway_of(bot: discord.AutoShardedClient) -> None:
    """Make reconnects after an invalid session use the gateway our REST base names.

    AutoShardedClient connects first to the URL from GET /gateway/bot, but after an
    invalidated session discord.py falls back to the class-wide DEFAULT_GATEWAY, which
    would leave a proxy (or a test double) for the real Discord.
    """
    _, url, _ = await bot.http.get_bot_gateway()
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)


class ImagineBot(commands.AutoShardedBot):
    """The bot: shard count and gateway URL come from GET /gateway/bot."""

    def __init__(
        self,
        service: GenerationService,
        *,
        default_model: str,
        guild_ids: tuple[int, ...],
        fetcher: ReferenceFetcher,
        custom_gateway: bool = False,
        shard_count: int | None = None,
        shard_ids: tuple[int, ...] = (),
        syncs_commands: bool = True,
        localizer: Localizer | None = None,
    ) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        # The bot never joins voice: discord.py's start-up warnings about missing voice
        # libraries (PyNaCl, davey) would only alarm operators. These class flags are the
        # library's own warn-once switches, read when a client is built.
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=intents,
            tree_cls=ImagineTree,
            # The bot echoes prompts: it must never ping anyone.
            allowed_mentions=discord.AllowedMentions.none(),
            # Interactions work before the guild cache is complete, so waiting the default
            # 2 s after the last GUILD_CREATE only delays the ready line.
            guild_ready_timeout=0.5,
            # Unset, discord.py asks GET /gateway/bot for the count; set, this process runs
            # its slice of the shards (all of them when SHARD_IDS is empty).
            shard_count=shard_count,
            shard_ids=list(shard_ids) if shard_ids else None,  # type: ignore[arg-type]
        )
        self._syncs_commands = syncs_commands
        self._custom_gateway = custom_gateway
        self._fetcher = fetcher
        self._service = service
        self._default_model = default_model
        self._guild_ids = guild_ids
        self._announced_ready = False
        self._owner_told_at: float | None = None
        # Read once at start (a bad catalog stops the start here, not a message later) and
        # handed to every cog: nothing looks the catalogs up globally.
        self._localizer = localizer or Localizer.load()

    async def setup_hook(self) -> None:
        """Add the cogs, then sync the commands where their payload changed."""
        if self._custom_gateway:
            await follow_gateway_of(self)
        # Before the sync: the translator gives Discord the commands' ja and de names.
        await self.tree.set_translator(CatalogTranslator(self._localizer))
        localizer = self._localizer
        imagine = ImagineCog(self._service, self._default_model, self._fetcher, localizer)
        await self.add_cog(imagine)
        self.tree.add_command(imagine.remix_menu)
        await self.add_cog(ResultActions(self._service, imagine, self._default_model, localizer))
        # The buttons under results: matched by custom_id, so they work after a restart.
        self.add_dynamic_items(*BUTTONS)
        await self.add_cog(UsageCog(self._service, localizer))
        await self.add_cog(AdminCog(self._service, localizer))
        # With shards split over processes, only the one running shard 0 registers the
        # commands: every process would otherwise sync at once at each rollout.
        if self._syncs_commands:
            await self.sync_commands_if_changed()
        else:
            log.info("commands are registered by the process that runs shard 0")

    async def _command_payload(self, guild: discord.Object | None) -> list[dict[str, object]]:
        # With its localizations, as sync sends it: a changed translation must sync again.
        translator = self.tree.translator
        commands = self.tree.get_commands(guild=guild)
        if translator is None:
            return [command.to_dict(self.tree) for command in commands]
        return [await command.get_translated_payload(self.tree, translator) for command in commands]

    async def sync_commands_if_changed(self) -> None:
        """Sync globally, or to DISCORD_GUILD_IDS, when the payload differs from the last sync.

        Discord rate-limits command creation per day; a restart with unchanged commands
        should cost nothing.
        """
        scopes: list[discord.Object | None]
        if self._guild_ids:
            scopes = [discord.Object(id=guild_id) for guild_id in self._guild_ids]
            for scope in scopes:
                assert scope is not None
                self.tree.copy_global_to(guild=scope)
        else:
            scopes = [None]
        ledger = self._service.ledger
        for scope in scopes:
            payload = json.dumps(await self._command_payload(scope), sort_keys=True)
            digest = hashlib.sha256(payload.encode()).hexdigest()
            where = f"guild:{scope.id}" if scope else "global"
            key = f"commands:{self.application_id}:{where}"
            if await ledger.get_meta(key) == digest:
                log.info("commands unchanged, not syncing scope=%s", where)
                continue
            synced = await self.tree.sync(guild=scope)
            await ledger.set_meta(key, digest)
            log.info("commands synced scope=%s count=%d", where, len(synced))

    async def tell_owner(self, text: str) -> None:
        """DM the application's owner about a problem only they can fix, at most once an hour."""
        now = time.monotonic()
        if self._owner_told_at is not None and now - self._owner_told_at < OWNER_NOTICE_EVERY_S:
            return
        self._owner_told_at = now
        application = self.application
        owner_id = application.owner.id if application else None
        if application and application.team and application.team.owner_id:
            owner_id = application.team.owner_id
        if owner_id is None:
            log.error("no application owner to tell: %s", text)
            return
        try:
            channel = await self.create_dm(discord.Object(id=owner_id))
            await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        except discord.HTTPException as error:
            log.error("could not DM the bot's owner (HTTP %s): %s", error.status, text)

    async def on_ready(self) -> None:
        """Say once that the bot is up, with its name and how many guilds it is in."""
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
