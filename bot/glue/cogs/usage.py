"""/usage: a member's own numbers, as /usage-admin user shows them to admins."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.app_commands import Choice
from discord.ext import commands

from bot.core.service import GenerationService
from bot.glue.render import member_report_embed, role_ids
from bot.ledger.periods import Period
from bot.ledger.reports import Scope, build_report, window_for

PERIOD_CHOICES = [Choice(name=period.label, value=period.value) for period in Period]


class UsageCog(commands.Cog):
    """The /usage command."""

    def __init__(self, service: GenerationService) -> None:
        self._service = service

    @app_commands.command(name="usage", description="Your image generations and today's allowance")
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.allowed_installs(guilds=True, users=False)
    @app_commands.describe(period="Which period to count (default: the last 30 days)")
    @app_commands.choices(period=PERIOD_CHOICES)
    async def usage(self, interaction: discord.Interaction, period: str | None = None) -> None:
        """Show the caller's report, visible only to them."""
        try:
            chosen = Period(period) if period else Period.DAYS_30
        except ValueError:
            await interaction.response.send_message(
                f"`period` can't be that. Use one of: {', '.join(p.value for p in Period)}.",
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
        embed = member_report_embed(report, "Your image usage", allowance)
        await interaction.response.send_message(
            embed=embed, ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )
