"""/usage-admin: reports, exports and limits for a server's admins. Glue only.

Discord hides the group from members without Manage Server (default_permissions), but that
is a default a server can change and a client can skip, so the cog's `interaction_check`
checks the invoker's permissions again, in one place, before any callback of the group runs.
Every view is scoped to the admin's own server: nothing a member did elsewhere shows here.
"""

from __future__ import annotations

import asyncio
import io
import logging
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Final

import discord
from discord import app_commands
from discord.app_commands import Choice, Range
from discord.ext import commands

from bot.charts import daily_chart_png
from bot.core.catalog import CATALOG, MAX_N_OPTION
from bot.core.service import GenerationService
from bot.glue.cogs.usage import PERIOD_CHOICES
from bot.glue.errors import answer
from bot.glue.limits_embed import limits_embed
from bot.glue.render import role_ids
from bot.glue.report_embeds import (
    export_notice,
    member_report_embed,
    server_report_embed,
    window_label,
)
from bot.glue.translator import messages_for
from bot.i18n import N_, Localizer, Messages
from bot.ledger.db import Database
from bot.ledger.export import MAX_PARTS, ExportTooLarge, export_csv
from bot.ledger.limits import (
    MAX_DAILY_IMAGES,
    MODERATION_LOW_FLAG,
    PROMPTS_NOT_KEPT_FLAG,
    InvalidLimit,
    check_models,
)
from bot.ledger.reports import BadPeriod, Scope, Window, build_report, daily_series, parse_window

log = logging.getLogger(__name__)

_NO_MENTIONS: Final = discord.AllowedMentions.none()
_ATTACHMENTS_PER_MESSAGE: Final = 10
CHART_FILENAME: Final = "usage-chart.png"
# /usage-admin's option names beyond /usage's, listed for the catalog (see imagine.OPTION_NAMES).
OPTION_NAMES: Final = (
    N_("images"),
    N_("usd"),
    N_("models"),
    N_("role"),
    N_("term"),
    N_("channel"),
    N_("allowed"),
    N_("keep"),
)

Member = discord.Member | discord.User


def can_see_others(permissions_value: int) -> bool:
    """Whether these channel permissions may read other members' usage and set limits."""
    permissions = discord.Permissions(permissions_value)
    return permissions.manage_guild or permissions.administrator


def export_name(guild_id: int, window: Window) -> str:
    """A file name for an export: the guild and the period, in safe characters."""
    label = "".join(c if c.isalnum() or c == "-" else "_" for c in window.label.lower())
    return f"usage-{guild_id}-{label.strip('_')}"


class AdminCog(commands.Cog):
    """The /usage-admin group."""

    usage_admin = app_commands.Group(
        name=N_("usage-admin"),
        description=N_("Usage reports, exports and limits for this server (Manage Server only)"),
        default_permissions=discord.Permissions(manage_guild=True),
        allowed_contexts=app_commands.AppCommandContext(
            guild=True, dm_channel=False, private_channel=False
        ),
        allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
    )
    limits = app_commands.Group(
        name=N_("limits"), description=N_("View and set this server's limits"), parent=usage_admin
    )

    def __init__(self, service: GenerationService, localizer: Localizer) -> None:
        self._service = service
        self._localizer = localizer

    @property
    def _db(self) -> Database:
        # Reports and exports read on their own read-only connection: a long one never
        # delays a reservation on the writer.
        return self._service.ledger.reader

    def _tr(self, interaction: discord.Interaction) -> Messages:
        return messages_for(self._localizer, interaction)

    def _now(self) -> datetime:
        return self._service.ledger.now()

    async def _reply(
        self,
        interaction: discord.Interaction,
        text: str | None = None,
        *,
        embed: discord.Embed | None = None,
    ) -> None:
        await answer(interaction, text, embed=embed)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        """The one permission check of the whole /usage-admin group: servers, Manage Server."""
        if interaction.guild_id is None:
            raise app_commands.NoPrivateMessage
        if not can_see_others(interaction.permissions.value):
            log.warning(
                "usage-admin refused: no Manage Server user=%s guild=%s",
                interaction.user.id,
                interaction.guild_id,
            )
            raise app_commands.MissingPermissions(["manage_guild"])
        return True

    @staticmethod
    def _guild(interaction: discord.Interaction) -> int:
        # interaction_check let only server interactions through.
        assert interaction.guild_id is not None
        return interaction.guild_id

    async def _window(
        self,
        interaction: discord.Interaction,
        period: str | None,
        start: str | None,
        end: str | None,
    ) -> Window | None:
        try:
            return parse_window(period, start, end, self._now())
        except BadPeriod as error:
            # English: the ledger's reading of a period says what works, for the command
            # line too, and carries no parts to rebuild it from.
            await self._reply(interaction, f"\u26a0\ufe0f {error}")
            return None

    # --- reports ---------------------------------------------------------------------------

    @usage_admin.command(name=N_("user"), description=N_("A member's image usage in this server"))
    @app_commands.describe(
        member=N_("Whose usage to show"),
        period=N_("Which period (default: the last 30 days)"),
        start=N_("Or a first day, YYYY-MM-DD (UTC)"),
        end=N_("And a last day, YYYY-MM-DD (UTC)"),
    )
    @app_commands.choices(period=PERIOD_CHOICES)
    async def user(
        self,
        interaction: discord.Interaction,
        member: Member,
        period: str | None = None,
        start: str | None = None,
        end: str | None = None,
    ) -> None:
        """Show one member's report in this server, as /usage shows one's own."""
        guild_id = self._guild(interaction)
        window = await self._window(interaction, period, start, end)
        if window is None:
            return
        report = await build_report(self._db, Scope(guild_id, member.id), window)
        allowance = await self._service.allowance(
            member.id, guild_id, own=False, role_ids=role_ids(member)
        )
        policy = await self._service.limits.policy(guild_id, member.id)
        tr = self._tr(interaction)
        title = tr.gettext("Image usage of {member} in this server", member=member.display_name)
        embed = member_report_embed(tr, report, title, allowance, blocked=policy.blocked)
        await self._reply(interaction, embed=embed)

    @usage_admin.command(
        name=N_("server"), description=N_("This server's image usage, with a chart")
    )
    @app_commands.describe(
        period=N_("Which period (default: the last 30 days)"),
        start=N_("Or a first day, YYYY-MM-DD (UTC)"),
        end=N_("And a last day, YYYY-MM-DD (UTC)"),
    )
    @app_commands.choices(period=PERIOD_CHOICES)
    async def server(
        self,
        interaction: discord.Interaction,
        period: str | None = None,
        start: str | None = None,
        end: str | None = None,
    ) -> None:
        """Totals, per model, top members and images per day stacked by model."""
        guild_id = self._guild(interaction)
        window = await self._window(interaction, period, start, end)
        if window is None:
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        scope = Scope(guild_id=guild_id)
        report = await build_report(self._db, scope, window)
        series = await daily_series(self._db, scope, window, self._now().date())
        tr = self._tr(interaction)
        # A guild not in the cache (no guilds intent yet) has no name.
        name = getattr(interaction.guild, "name", None) or tr.gettext("this server")
        # Drawing is CPU work: off the event loop.
        png = await asyncio.to_thread(
            daily_chart_png,
            series,
            window_label(tr, window),
            tr=tr,
            fallback=(window_label(self._localizer.english, window), self._localizer.english),
        )
        embed = server_report_embed(tr, report, name)
        embed.set_image(url=f"attachment://{CHART_FILENAME}")
        await interaction.followup.send(
            embed=embed,
            file=discord.File(io.BytesIO(png), filename=CHART_FILENAME),
            ephemeral=True,
            allowed_mentions=_NO_MENTIONS,
        )

    @usage_admin.command(
        name=N_("export"), description=N_("This server's generations as a CSV file")
    )
    @app_commands.describe(
        period=N_("Which period (default: the last 30 days)"),
        start=N_("Or a first day, YYYY-MM-DD (UTC)"),
        end=N_("And a last day, YYYY-MM-DD (UTC)"),
    )
    @app_commands.choices(period=PERIOD_CHOICES)
    async def export(
        self,
        interaction: discord.Interaction,
        period: str | None = None,
        start: str | None = None,
        end: str | None = None,
    ) -> None:
        """One CSV row per generation; gzip'd or split when it would not fit one upload."""
        guild_id = self._guild(interaction)
        window = await self._window(interaction, period, start, end)
        if window is None:
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        tr = self._tr(interaction)
        with tempfile.TemporaryDirectory(prefix="imagine-export-") as folder:
            try:
                result = await export_csv(
                    self._db,
                    Scope(guild_id=guild_id),
                    window,
                    Path(folder),
                    name=export_name(guild_id, window),
                    limit_bytes=interaction.filesize_limit,
                )
            except ExportTooLarge:
                await self._reply(
                    interaction,
                    tr.gettext(
                        "\u26a0\ufe0f The export is larger than {parts} uploads. "
                        "Choose a shorter period (start/end dates).",
                        parts=MAX_PARTS,
                    ),
                )
                return
            files = list(result.files)
            for first in range(0, len(files), _ATTACHMENTS_PER_MESSAGE):
                batch = files[first : first + _ATTACHMENTS_PER_MESSAGE]
                await interaction.followup.send(
                    tr.gettext(
                        "Usage export, {period}: {notice}",
                        period=window_label(tr, window),
                        notice=export_notice(tr, result),
                    )
                    if first == 0
                    else "",
                    files=[discord.File(path, filename=path.name) for path in batch],
                    ephemeral=True,
                    allowed_mentions=_NO_MENTIONS,
                )
        log.info(
            "usage export guild=%s by=%s rows=%d files=%d",
            guild_id,
            interaction.user.id,
            result.rows,
            len(files),
        )

    @usage_admin.command(
        name=N_("forget"), description=N_("Remove a member's prompts in this server")
    )
    @app_commands.describe(member=N_("Whose prompts to remove; their counts and costs stay"))
    async def forget(self, interaction: discord.Interaction, member: Member) -> None:
        """Remove the member's prompts (and revised prompts) from this server's rows."""
        guild_id = self._guild(interaction)
        rows = await self._service.limits.forget_prompts(guild_id, member.id, interaction.user.id)
        log.info(
            "prompts forgotten guild=%s user=%s by=%s rows=%d",
            guild_id,
            member.id,
            interaction.user.id,
            rows,
        )
        tr = self._tr(interaction)
        await self._reply(
            interaction,
            tr.gettext(
                "Removed the prompts of {member} from {rows} generation(s) in this "
                "server. Their counts and costs stay in the log.",
                member=member.mention,
                rows=tr.number(rows),
            ),
        )

    # --- limits ----------------------------------------------------------------------------

    async def _show_limits(self, interaction: discord.Interaction, guild_id: int) -> None:
        store = self._service.limits
        policy = await store.policy(guild_id, interaction.user.id)
        embed = limits_embed(
            self._tr(interaction),
            await store.limits(guild_id),
            operator=self._service.operator,
            blocked=await store.blocked_members(guild_id),
            changes=await store.recent_changes(guild_id),
            prices=self._service.prices.table(),
            blocked_terms=await store.blocked_terms(guild_id),
            channels=await store.allowed_channels(guild_id),
            allowed_roles=policy.allowed_roles,
            role_allowances=policy.role_allowances,
            moderation_low=MODERATION_LOW_FLAG in policy.flags,
            keep_prompts=PROMPTS_NOT_KEPT_FLAG not in policy.flags,
        )
        await self._reply(interaction, embed=embed)

    def _logged(self, interaction: discord.Interaction, what: str) -> None:
        log.info(
            "limits changed guild=%s by=%s: %s", interaction.guild_id, interaction.user.id, what
        )

    @limits.command(
        name=N_("show"), description=N_("This server's limits, blocks and latest changes")
    )
    async def limits_show(self, interaction: discord.Interaction) -> None:
        """Show every limit, the blocked members, the latest changes and the prices."""
        await self._show_limits(interaction, self._guild(interaction))

    @limits.command(name=N_("daily-images"), description=N_("Images per member per UTC day here"))
    @app_commands.describe(
        images=N_("Images per member per day, 0 = unlimited; leave empty for the bot's default")
    )
    async def limits_daily_images(
        self,
        interaction: discord.Interaction,
        images: Range[int, 0, MAX_DAILY_IMAGES] | None = None,
    ) -> None:
        """Set or clear this server's per-member daily image limit."""
        guild_id = self._guild(interaction)
        await self._service.limits.set_daily_images(guild_id, images, interaction.user.id)
        self._logged(interaction, f"daily_images={images}")
        await self._show_limits(interaction, guild_id)

    @limits.command(name=N_("budget"), description=N_("A daily budget for the whole server"))
    @app_commands.describe(usd=N_("US dollars of estimated cost per UTC day; leave empty for none"))
    async def limits_budget(
        self, interaction: discord.Interaction, usd: Range[float, 0.01, 1_000_000.0] | None = None
    ) -> None:
        """Set or clear the server's daily budget in estimated cost."""
        guild_id = self._guild(interaction)
        await self._service.limits.set_daily_budget(guild_id, usd, interaction.user.id)
        self._logged(interaction, f"daily_budget_usd={usd}")
        await self._show_limits(interaction, guild_id)

    @limits.command(name=N_("models"), description=N_("Which models members may use here"))
    @app_commands.describe(
        models=N_("Comma-separated model names; leave empty (or all) for every model")
    )
    async def limits_models(
        self, interaction: discord.Interaction, models: str | None = None
    ) -> None:
        """Set or clear the models allowed in this server."""
        guild_id = self._guild(interaction)
        try:
            allowed = check_models(models)
        except InvalidLimit as error:
            await self._reply(interaction, f"\u26a0\ufe0f {error}")
            return
        await self._service.limits.set_allowed_models(guild_id, allowed, interaction.user.id)
        self._logged(interaction, f"allowed_models={allowed}")
        await self._show_limits(interaction, guild_id)

    @limits_models.autocomplete("models")
    async def _models_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[Choice[str]]:
        chosen, _, typing = current.rpartition(",")
        prefix = f"{chosen}," if chosen else ""
        taken = {name.strip() for name in chosen.split(",")}
        return [
            Choice(name=f"{prefix}{name}"[:100], value=f"{prefix}{name}"[:100])
            for name in CATALOG
            if name not in taken and name.startswith(typing.strip())
        ][:25]

    @limits.command(
        name=N_("max-n"), description=N_("The most images one request may ask for here")
    )
    @app_commands.describe(n=N_("Images per request; leave empty for each model's own maximum"))
    async def limits_max_n(
        self, interaction: discord.Interaction, n: Range[int, 1, MAX_N_OPTION] | None = None
    ) -> None:
        """Set or clear the cap on images per request."""
        guild_id = self._guild(interaction)
        await self._service.limits.set_max_n(guild_id, n, interaction.user.id)
        self._logged(interaction, f"max_n={n}")
        await self._show_limits(interaction, guild_id)

    @limits.command(name=N_("block"), description=N_("Stop a member making images in this server"))
    @app_commands.describe(member=N_("Who to block"))
    async def limits_block(self, interaction: discord.Interaction, member: Member) -> None:
        """Block a member here; their next request is refused."""
        guild_id = self._guild(interaction)
        changed = await self._service.limits.block(guild_id, member.id, interaction.user.id)
        self._logged(interaction, f"block user={member.id} changed={changed}")
        tr = self._tr(interaction)
        await self._reply(
            interaction,
            tr.gettext("{member} is blocked from making images here.", member=member.mention)
            if changed
            else tr.gettext("{member} was already blocked.", member=member.mention),
        )

    @limits.command(name=N_("unblock"), description=N_("Let a blocked member make images again"))
    @app_commands.describe(member=N_("Who to unblock"))
    async def limits_unblock(self, interaction: discord.Interaction, member: Member) -> None:
        """Lift a member's block here."""
        guild_id = self._guild(interaction)
        changed = await self._service.limits.unblock(guild_id, member.id, interaction.user.id)
        self._logged(interaction, f"unblock user={member.id} changed={changed}")
        tr = self._tr(interaction)
        await self._reply(
            interaction,
            tr.gettext("{member} may make images here again.", member=member.mention)
            if changed
            else tr.gettext("{member} was not blocked.", member=member.mention),
        )

    @limits.command(
        name=N_("block-word"), description=N_("Refuse prompts with this word or phrase here")
    )
    @app_commands.describe(term=N_("A word or phrase; any case or accents, whole words only"))
    async def limits_block_word(
        self, interaction: discord.Interaction, term: Range[str, 1, 100]
    ) -> None:
        """Block a word or phrase in prompts here; checked before anything is billed."""
        guild_id = self._guild(interaction)
        try:
            changed = await self._service.limits.add_blocked_term(
                guild_id, term, interaction.user.id
            )
        except InvalidLimit as error:
            await self._reply(interaction, f"\u26a0\ufe0f {error}")
            return
        self._logged(interaction, f"block_term changed={changed}")
        tr = self._tr(interaction)
        await self._reply(
            interaction,
            tr.gettext("Prompts with that word or phrase are now refused here.")
            if changed
            else tr.gettext("That word or phrase was already blocked."),
        )

    @limits.command(name=N_("unblock-word"), description=N_("Allow a blocked word or phrase again"))
    @app_commands.describe(term=N_("The word or phrase to allow again"))
    async def limits_unblock_word(
        self, interaction: discord.Interaction, term: Range[str, 1, 100]
    ) -> None:
        """Remove a blocked word or phrase here."""
        guild_id = self._guild(interaction)
        changed = await self._service.limits.remove_blocked_term(
            guild_id, term, interaction.user.id
        )
        self._logged(interaction, f"unblock_term changed={changed}")
        tr = self._tr(interaction)
        await self._reply(
            interaction,
            tr.gettext("That word or phrase is allowed again.")
            if changed
            else tr.gettext("It was not blocked."),
        )

    @limits.command(name=N_("channel-allow"), description=N_("Let /imagine work in this channel"))
    @app_commands.describe(channel=N_("Once any channel is listed, /imagine works only in those"))
    async def limits_channel_allow(
        self, interaction: discord.Interaction, channel: discord.TextChannel
    ) -> None:
        """Add a channel to where /imagine works here (none listed: everywhere)."""
        guild_id = self._guild(interaction)
        changed = await self._service.limits.set_channel(
            guild_id, channel.id, True, interaction.user.id
        )
        self._logged(interaction, f"allow_channel channel={channel.id} changed={changed}")
        await self._show_limits(interaction, guild_id)

    @limits.command(
        name=N_("channel-remove"), description=N_("Stop /imagine working in this channel")
    )
    @app_commands.describe(channel=N_("A channel listed with channel-allow"))
    async def limits_channel_remove(
        self, interaction: discord.Interaction, channel: discord.TextChannel
    ) -> None:
        """Remove a channel from where /imagine works here."""
        guild_id = self._guild(interaction)
        changed = await self._service.limits.set_channel(
            guild_id, channel.id, False, interaction.user.id
        )
        self._logged(interaction, f"disallow_channel channel={channel.id} changed={changed}")
        await self._show_limits(interaction, guild_id)

    @limits.command(
        name=N_("role-images"), description=N_("Daily images for members with this role")
    )
    @app_commands.describe(
        role=N_("The role"),
        images=N_("Images per member per day; a member gets their best role's; empty removes it"),
    )
    async def limits_role_images(
        self,
        interaction: discord.Interaction,
        role: discord.Role,
        images: Range[int, 0, MAX_DAILY_IMAGES] | None = None,
    ) -> None:
        """Set or remove a role's daily image allowance here (never above the bot's limit)."""
        guild_id = self._guild(interaction)
        await self._service.limits.set_role_images(guild_id, role.id, images, interaction.user.id)
        self._logged(interaction, f"role_images role={role.id} images={images}")
        await self._show_limits(interaction, guild_id)

    @limits.command(
        name=N_("roles-allow"), description=N_("Let members with this role use /imagine")
    )
    @app_commands.describe(role=N_("Once any role is listed, only members with a listed role may"))
    async def limits_roles_allow(
        self, interaction: discord.Interaction, role: discord.Role
    ) -> None:
        """Add a role to those that may use /imagine here (none listed: everyone)."""
        guild_id = self._guild(interaction)
        await self._service.limits.set_allowed_role(guild_id, role.id, True, interaction.user.id)
        self._logged(interaction, f"allow_role role={role.id}")
        await self._show_limits(interaction, guild_id)

    @limits.command(name=N_("roles-remove"), description=N_("Remove a role from those that may"))
    @app_commands.describe(role=N_("A role listed with roles-allow"))
    async def limits_roles_remove(
        self, interaction: discord.Interaction, role: discord.Role
    ) -> None:
        """Remove a role from those that may use /imagine here."""
        guild_id = self._guild(interaction)
        await self._service.limits.set_allowed_role(guild_id, role.id, False, interaction.user.id)
        self._logged(interaction, f"disallow_role role={role.id}")
        await self._show_limits(interaction, guild_id)

    @limits.command(
        name=N_("moderation-low"), description=N_("Allow moderation low in NSFW channels")
    )
    @app_commands.describe(
        allowed=N_("On: members may ask for low in age-restricted channels only")
    )
    async def limits_moderation_low(self, interaction: discord.Interaction, allowed: bool) -> None:
        """Switch `moderation: low` on or off here; it never works outside NSFW channels."""
        guild_id = self._guild(interaction)
        await self._service.limits.set_flag(
            guild_id, MODERATION_LOW_FLAG, allowed, interaction.user.id
        )
        self._logged(interaction, f"moderation_low={allowed}")
        await self._show_limits(interaction, guild_id)

    @limits.command(
        name=N_("keep-prompts"), description=N_("Keep members' prompts in the usage log")
    )
    @app_commands.describe(keep=N_("Off: prompts are not stored (results cannot be rerolled)"))
    async def limits_keep_prompts(self, interaction: discord.Interaction, keep: bool) -> None:
        """Choose whether this server's prompts are kept (default: kept)."""
        guild_id = self._guild(interaction)
        await self._service.limits.set_flag(
            guild_id, PROMPTS_NOT_KEPT_FLAG, not keep, interaction.user.id
        )
        self._logged(interaction, f"keep_prompts={keep}")
        await self._show_limits(interaction, guild_id)

    @limits.command(name=N_("reset-day"), description=N_("Give a member today's images back"))
    @app_commands.describe(member=N_("Whose daily count to reset"))
    async def limits_reset_day(self, interaction: discord.Interaction, member: Member) -> None:
        """Today's images the member made here stop counting against the daily limit."""
        guild_id = self._guild(interaction)
        await self._service.limits.reset_day(guild_id, member.id, interaction.user.id)
        self._logged(interaction, f"reset_day user={member.id}")
        await self._reply(
            interaction,
            self._tr(interaction).gettext(
                "{member}'s images made here today no longer count against this "
                "server's own daily limit. The bot operator's limits still count them, and the "
                "usage log keeps every row.",
                member=member.mention,
            ),
        )
