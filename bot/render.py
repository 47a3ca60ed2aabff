"""How results and reports look in Discord: embeds and short texts."""

from __future__ import annotations

from datetime import datetime
from typing import Final

import discord

from bot.cometapi import GenerationResult
from bot.ledger.store import QuotaExceeded, UsageReport
from bot.validation import GenerationRequest

_COLOUR: Final = discord.Colour.blurple()
_PROMPT_SHOWN: Final = 1000
_FIELD_VALUE: Final = 1024


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def discord_time(moment: datetime, style: str = "t") -> str:
    """A timestamp every reader sees in their own time zone."""
    return f"<t:{int(moment.timestamp())}:{style}>"


def result_embed(
    request: GenerationRequest, result: GenerationResult, elapsed_s: float, note: str | None = None
) -> discord.Embed:
    """The embed that goes with delivered images."""
    embed = discord.Embed(description=_clip(request.prompt, _PROMPT_SHOWN), colour=_COLOUR)
    embed.add_field(name="Model", value=request.model)
    embed.add_field(name="Size", value=request.shown_size)
    embed.add_field(name="Quality", value=request.shown_quality)
    revised = next((image.revised_prompt for image in result.images if image.revised_prompt), None)
    if revised:
        embed.add_field(name="Revised prompt", value=_clip(revised, _FIELD_VALUE), inline=False)
    usage = result.usage
    if usage and usage.total_tokens is not None:
        embed.add_field(
            name="Tokens",
            value=f"{usage.input_tokens or 0:,} in \u00b7 {usage.output_tokens or 0:,} out "
            f"\u00b7 {usage.total_tokens:,} total",
        )
    if note:
        embed.add_field(name="Note", value=_clip(note, _FIELD_VALUE), inline=False)
    embed.set_footer(text=f"{len(result.images)} image(s) in {elapsed_s:.1f} s")
    return embed


def quota_message(error: QuotaExceeded) -> str:
    """Why a request was refused for the daily limit, and when it resets."""
    left = max(error.limit - error.used, 0)
    return (
        f"\u26a0\ufe0f Daily limit reached: you have used {error.used} of your {error.limit} "
        f"images today and asked for {error.requested} (you have {left} left). "
        f"The limit resets at 00:00 UTC, {discord_time(error.resets_at, 'R')}."
    )


def usage_embed(report: UsageReport, who: str) -> discord.Embed:
    """A member's usage report."""
    embed = discord.Embed(title=f"Image usage of {who}: {report.period.label}", colour=_COLOUR)
    embed.add_field(name="Images", value=f"{report.images:,}")
    embed.add_field(name="Requests", value=f"{report.requests:,}")
    embed.add_field(name="Failed", value=f"{report.failures:,}")
    if report.by_model:
        lines = [
            f"**{line.model}**: {line.images:,} images, {line.requests:,} requests"
            for line in report.by_model[:15]
        ]
        embed.add_field(name="By model", value=_clip("\n".join(lines), _FIELD_VALUE), inline=False)
    if report.total_tokens:
        embed.add_field(
            name="Tokens",
            value=f"{report.input_tokens:,} in \u00b7 {report.output_tokens:,} out "
            f"\u00b7 {report.total_tokens:,} total",
            inline=False,
        )
    remaining = report.remaining_today
    if remaining is None:
        allowance = f"No daily limit. {report.images_today:,} images today."
    else:
        allowance = (
            f"{remaining:,} of {report.daily_limit:,} images left today; "
            f"resets {discord_time(report.resets_at, 'R')} (00:00 UTC)."
        )
    embed.add_field(name="Today's allowance", value=allowance, inline=False)
    return embed
