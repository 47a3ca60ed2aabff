"""/usage: a member's own numbers, as /usage-admin user shows them to admins."""

from __future__ import annotations

from typing import Final

import discord
from discord import app_commands
from discord.app_commands import Choice
from discord.ext import commands

from bot.core.service import GenerationService
from bot.glue.render import role_ids
from bot.glue.report_embeds import PERIOD_LABELS, member_report_embed
from bot.glue.translator import messages_for
from bot.i18n import N_, Localizer
from bot.ledger.periods import Period
from bot.ledger.reports import Scope, build_report, window_for

# The English names are the catalog's msgids: the translator gives Discord the others.
PERIOD_CHOICES = [Choice(name=PERIOD_LABELS[period], value=period.value) for period in Period]
# The option names of /usage and /usage-admin, listed for the catalog (see imagine.OPTION_NAMES).
OPTION_NAMES: Final = (N_("period"), N_("start"), N_("end"), N_("member"))


class UsageCog(commands.Cog):
    """The /usage command."""

    def __init__(self, service: GenerationService, localizer: Localizer) -> None:
        self._service = service
        self._localizer = localizer

    @app_commands.command(
        name=N_("usage"), description=N_("Your image generations and today's allowance")
    )
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.allowed_installs(guilds=True, users=False)
    @app_commands.describe(period=N_("Which period to count (default: the last 30 days)"))
    @app_commands.choices(period=PERIOD_CHOICES)
    async def usage(self, interaction: discord.Interaction, period: str | None = None) -> None:
        """Show the caller's report, visible only to them."""
        tr = messages_for(self._localizer, interaction)
        try:
            chosen = Period(period) if period else Period.DAYS_30
        except ValueError:
            await interaction.response.send_message(
                tr.gettext(
                    "`period` can't be that. Use one of: {periods}.",
                    periods=", ".join(p.value for p in Period),
                ),
                ephemeral=True,
            )
            return
        ledger = self._service.ledger
        user_id = interaction.user.id
        window = window_for(chosen, ledger.now())
        report = await build_report(ledger.reader, Scope(user_id=user_id), window)
        allowance = await self._service.allowance(
            user_id, interaction.guild_id, own=True, role_ids=role_ids(interaction.user)
        )
        embed = member_report_embed(tr, report, tr.gettext("Your image usage"), allowance)
        await interaction.response.send_message(
            embed=embed, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )
