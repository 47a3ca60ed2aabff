"""/usage: a member's own numbers."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.app_commands import Choice
from discord.ext import commands

from bot.ledger.periods import Period
from bot.ledger.store import UsageLedger
from bot.render import usage_embed

PERIOD_CHOICES = [Choice(name=period.label, value=period.value) for period in Period]


class UsageCog(commands.Cog):
    """The /usage command."""

    def __init__(self, ledger: UsageLedger, daily_limit: int) -> None:
        self._ledger = ledger
        self._daily_limit = daily_limit

    @app_commands.command(name="usage", description="Your image generations and today's allowance")
    @app_commands.describe(period="Which period to count (default: the last 30 days)")
    @app_commands.choices(period=PERIOD_CHOICES)
    async def usage(self, interaction: discord.Interaction, period: str | None = None) -> None:
        """Show the caller's report, visible only to them."""
        try:
            chosen = Period(period) if period else Period.DAYS_30
        except ValueError:
            await interaction.response.send_message(
                f"`{period}` is not a period. Use one of: {', '.join(p.value for p in Period)}.",
                ephemeral=True,
            )
            return
        report = await self._ledger.user_report(interaction.user.id, chosen, self._daily_limit)
        await interaction.response.send_message(
            embed=usage_embed(report, interaction.user.display_name),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )
