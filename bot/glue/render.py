"""How results and reports look in Discord: embeds and short texts."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import discord

from bot.core.catalog import CATALOG
from bot.core.cometapi import GenerationResult
from bot.core.pricing import ModelPrice, TokenPrice
from bot.core.service import Allowance, OperatorLimits
from bot.core.validation import GenerationRequest, ImagineOptions, InvalidOption, validate
from bot.ledger.limits import (
    BudgetExhausted,
    BudgetScope,
    ChannelNotAllowed,
    GuildLimits,
    LimitChange,
    LimitRefused,
    MemberBlocked,
    ModelNotAllowed,
    ModerationNotAllowed,
    PromptBlocked,
    QuotaExceeded,
    RoleNotAllowed,
    TooManyImages,
)
from bot.ledger.reports import CURRENCY, Report, cost_cell, usd
from bot.ledger.results import StoredGeneration

_COLOUR: Final = discord.Colour.blurple()
_PROMPT_SHOWN: Final = 1000
_FIELD_VALUE: Final = 1024
_DESCRIPTION: Final = 4096


def role_ids(user: discord.User | discord.Member) -> tuple[int, ...]:
    """A member's role ids (with @everyone, whose id is the server's); none in DMs."""
    return tuple(role.id for role in user.roles) if isinstance(user, discord.Member) else ()


def count(number: int, noun: str) -> str:
    """ "1 image", "3 images": reports read as sentences."""
    return f"{number:,} {noun}" if number == 1 else f"{number:,} {noun}s"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def discord_time(moment: datetime, style: str = "t") -> str:
    """A timestamp every reader sees in their own time zone."""
    return f"<t:{int(moment.timestamp())}:{style}>"


@dataclass(frozen=True, slots=True)
class ResultLink:
    """The result a new generation came from (a reroll, an edited prompt)."""

    generation_id: int
    url: str | None
    """A jump link to its message, when the message is known."""


def jump_url(guild_id: int | None, channel_id: int, message_id: int) -> str:
    """Discord's link to a message; `@me` stands for a DM."""
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def result_url(row: StoredGeneration) -> str | None:
    """The jump link to a generation's result message, while that message is there."""
    if row.result_channel_id and row.result_message_id and not row.deleted_at:
        return jump_url(row.guild_id, row.result_channel_id, row.result_message_id)
    return None


def result_embed(
    request: GenerationRequest,
    result: GenerationResult,
    elapsed_s: float,
    note: str | None = None,
    parent: ResultLink | None = None,
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
    if parent is not None:
        source = f"[this result]({parent.url})" if parent.url else "a result no longer posted"
        embed.add_field(name="Made again from", value=source, inline=False)
    embed.set_footer(text=f"{count(len(result.images), 'image')} in {elapsed_s:.1f} s")
    return embed


def quota_message(error: QuotaExceeded) -> str:
    """Why a request was refused for a daily image limit, whose limit, and when it resets."""
    left = max(error.limit - error.used, 0)
    whose = (
        f"this server's limit of {error.limit} images per member"
        if error.server_limit
        else f"the bot's limit of {error.limit} images per member (all servers together)"
    )
    return (
        f"\u26a0\ufe0f Daily limit reached: you have used {error.used} images today under "
        f"{whose} and asked for {error.requested} (you have {left} left). "
        f"The limit resets at 00:00 UTC, {discord_time(error.resets_at, 'R')}."
    )


_BUDGET_TEXT: Final = {
    BudgetScope.USER: "Your daily budget on this bot (set by its operator)",
    BudgetScope.SERVER: "This server's daily budget",
    BudgetScope.BOT: "The bot's daily budget (set by its operator, for every server)",
}


def refusal_message(error: LimitRefused) -> str:
    """Why a limit refused the request, naming the limit, and what the user can do."""
    if isinstance(error, QuotaExceeded):
        return quota_message(error)
    if isinstance(error, BudgetExhausted):
        what = _BUDGET_TEXT[error.scope]
        spent = f"{usd(error.spent_usd)} of {usd(error.budget_usd)} {CURRENCY} (estimated)"
        if error.spent_usd >= error.budget_usd:
            state = f"is used up: {spent} spent or reserved today"
        else:
            state = (
                f"has too little left for this request, estimated at {usd(error.needed_usd)}: "
                f"{spent} spent or reserved today. A smaller request may fit"
            )
        return (
            f"\u26a0\ufe0f {what} {state}. It resets at 00:00 UTC, "
            f"{discord_time(error.resets_at, 'R')}."
        )
    if isinstance(error, RoleNotAllowed):
        roles = ", ".join(f"<@&{role}>" for role in error.roles[:10])
        return f"\u26a0\ufe0f In this server /imagine is for members with these roles: {roles}."
    if isinstance(error, ChannelNotAllowed):
        where = ", ".join(f"<#{channel}>" for channel in error.channels[:10])
        return f"\u26a0\ufe0f /imagine works only in these channels of this server: {where}."
    if isinstance(error, ModerationNotAllowed):
        if error.switched_on:
            return (
                "\u26a0\ufe0f `moderation` low works only in this server's age-restricted channels."
            )
        return "\u26a0\ufe0f This server does not allow `moderation` low; leave it empty."
    if isinstance(error, PromptBlocked):
        # Never echo the term: the member knows their prompt, the channel need not.
        return (
            "\u26a0\ufe0f Your prompt contains a word or phrase this server does not allow. "
            "Nothing was sent or charged."
        )
    if isinstance(error, MemberBlocked):
        return "\u26a0\ufe0f A server admin has blocked you from making images in this server."
    if isinstance(error, ModelNotAllowed):
        return (
            f"\u26a0\ufe0f This server allows only these models: {', '.join(error.allowed)}. "
            f"Pick one of them instead of {error.model}."
        )
    if isinstance(error, TooManyImages):
        return (
            f"\u26a0\ufe0f This server allows at most {count(error.max_n, 'image')} per request; "
            f"you asked for {error.requested}."
        )
    return f"\u26a0\ufe0f Refused by {error.limit_name}."


def _model_lines(report: Report) -> str:
    return "\n".join(
        f"**{line.model}**: {count(line.images, 'image')}, {count(line.requests, 'request')}, "
        f"{line.failures:,} failed, {cost_cell(line.cost)}"
        for line in report.by_model[:15]
    )


def _totals_fields(embed: discord.Embed, report: Report) -> None:
    totals = report.totals
    embed.add_field(name="Images", value=f"{totals.images:,}")
    edits = f" ({count(totals.edits, 'edit')})" if totals.edits else ""
    embed.add_field(name="Requests", value=f"{totals.requests:,}{edits}")
    embed.add_field(name="Failed", value=f"{totals.failures:,}")
    embed.add_field(name="Cost", value=totals.cost.summary(), inline=False)
    if totals.undelivered.requests:
        embed.add_field(
            name="Billed, not delivered", value=totals.undelivered.summary(), inline=False
        )
    if report.by_model:
        embed.add_field(
            name="By model", value=_clip(_model_lines(report), _FIELD_VALUE), inline=False
        )
    if totals.total_tokens:
        embed.add_field(
            name="Tokens",
            value=f"{totals.input_tokens:,} in \u00b7 {totals.output_tokens:,} out "
            f"\u00b7 {totals.total_tokens:,} total",
            inline=False,
        )


def allowance_text(allowance: Allowance) -> str:
    """A member's day: each daily limit that applies, what it left, and when they reset."""
    parts: list[str] = []
    if allowance.operator_limit is not None:
        if allowance.operator_used is None:
            parts.append(
                f"the bot's limit of {allowance.operator_limit:,} images per member per day "
                "also applies, counted across servers"
            )
        else:
            left = max(allowance.operator_limit - allowance.operator_used, 0)
            parts.append(
                f"{left:,} of {allowance.operator_limit:,} images left today under the bot's "
                "limit (all servers together)"
            )
    if allowance.server_limit is not None and allowance.server_used is not None:
        left = max(allowance.server_limit - allowance.server_used, 0)
        parts.append(
            f"{left:,} of {allowance.server_limit:,} images left today under this server's limit"
        )
    elif allowance.server_used is not None:
        parts.append(
            f"{allowance.server_used:,} images today in this server, which sets no daily limit"
        )
    if not parts:
        used = allowance.operator_used or 0
        return f"No daily limit. {used:,} images today."
    text = "; ".join(parts)
    return (
        f"{text[0].upper()}{text[1:]}. Resets {discord_time(allowance.resets_at, 'R')} (00:00 UTC)."
    )


def member_report_embed(
    report: Report, title: str, allowance: Allowance, *, blocked: bool = False
) -> discord.Embed:
    """One member's usage: /usage shows one's own, /usage-admin user anyone's in the server."""
    embed = discord.Embed(title=_clip(f"{title}: {report.window.label}", 256), colour=_COLOUR)
    _totals_fields(embed, report)
    embed.add_field(name="Today's allowance", value=allowance_text(allowance), inline=False)
    if blocked:
        embed.add_field(name="Blocked", value="Blocked from making images here.", inline=False)
    return embed


def server_report_embed(report: Report, guild_name: str) -> discord.Embed:
    """A server's usage: totals, by model, the top members; the chart is attached beside it."""
    embed = discord.Embed(
        title=_clip(f"Image usage in {guild_name}: {report.window.label}", 256), colour=_COLOUR
    )
    _totals_fields(embed, report)
    if report.top_users:
        lines = [
            f"{rank}. <@{line.user_id}>: {count(line.images, 'image')}, "
            f"{count(line.requests, 'request')}, "
            f"{usd(line.cost_usd)}"
            for rank, line in enumerate(report.top_users, start=1)
        ]
        embed.add_field(
            name="Top members", value=_clip("\n".join(lines), _FIELD_VALUE), inline=False
        )
    return embed


def _price_text(price: ModelPrice) -> str:
    if price.price is None:
        return f"**{price.model}**: no price"
    if isinstance(price.price, TokenPrice):
        amount = (
            f"${price.price.input_per_million:g} in / ${price.price.output_per_million:g} out "
            "per M tokens"
        )
    elif price.price.variants:
        amount = ", ".join(f"{key} ${value:g}" for key, value in price.price.variants)
    else:
        amount = f"${price.price.per_image:g} per image"
    source = price.source.value if price.source else "?"
    return f"**{price.model}**: {amount} ({source}, {price.as_of})"


def _operator_text(operator: OperatorLimits) -> str:
    parts = []
    if operator.user_daily_images is not None:
        parts.append(f"{operator.user_daily_images:,} images per member per day")
    if operator.user_daily_budget_usd is not None:
        parts.append(f"{usd(operator.user_daily_budget_usd)} per member per day")
    if operator.bot_daily_budget_usd is not None:
        parts.append(f"{usd(operator.bot_daily_budget_usd)} per day for the whole bot")
    if not parts:
        return "none"
    return (
        "; ".join(parts)
        + f" ({CURRENCY}, estimated; counted across every server; a server's limits can only "
        "tighten these)"
    )


def limits_embed(
    limits: GuildLimits,
    *,
    operator: OperatorLimits,
    blocked: tuple[int, ...],
    changes: tuple[LimitChange, ...],
    prices: tuple[ModelPrice, ...],
    blocked_terms: tuple[str, ...] = (),
    channels: tuple[int, ...] = (),
    allowed_roles: tuple[int, ...] = (),
    role_allowances: tuple[tuple[int, int], ...] = (),
    moderation_low: bool = False,
    keep_prompts: bool = True,
) -> discord.Embed:
    """The server's limits, the operator's ceilings, blocks, latest changes and prices."""
    embed = discord.Embed(title="Limits in this server", colour=_COLOUR)
    embed.add_field(name="The bot operator's limits", value=_operator_text(operator), inline=False)
    if not limits.user_daily_images:
        daily = "none of this server's own"
    else:
        daily = f"{limits.user_daily_images:,} images per member per day in this server"
    embed.add_field(name="Daily images per member", value=daily, inline=False)
    budget = (
        "none"
        if limits.daily_budget_usd is None
        else f"{usd(limits.daily_budget_usd)} {CURRENCY} per day (estimated cost, running "
        "requests reserved)"
    )
    embed.add_field(name="Daily budget", value=budget, inline=False)
    models = "all" if limits.allowed_models is None else ", ".join(limits.allowed_models)
    embed.add_field(name="Allowed models", value=models, inline=False)
    embed.add_field(
        name="Images per request",
        value="each model's maximum" if limits.max_n is None else f"at most {limits.max_n}",
        inline=False,
    )
    embed.add_field(
        name="Daily images by role (the highest of a member's roles)",
        value=_clip(
            ", ".join(f"<@&{role}>: {images:,}" for role, images in role_allowances) or "none",
            _FIELD_VALUE,
        ),
        inline=False,
    )
    embed.add_field(
        name="Roles that may use /imagine",
        value=_clip(", ".join(f"<@&{role}>" for role in allowed_roles) or "everyone", _FIELD_VALUE),
        inline=False,
    )
    embed.add_field(
        name="Prompts in the usage log",
        value="kept (who generated what, with links)" if keep_prompts else "not kept",
        inline=False,
    )
    embed.add_field(
        name="Moderation low",
        value="allowed in age-restricted channels" if moderation_low else "not allowed",
        inline=False,
    )
    embed.add_field(
        name="Channels for /imagine",
        value=_clip(", ".join(f"<#{c}>" for c in channels) or "every channel", _FIELD_VALUE),
        inline=False,
    )
    embed.add_field(
        name="Blocked words and phrases",
        value=_clip(", ".join(f"||{term}||" for term in blocked_terms) or "none", _FIELD_VALUE),
        inline=False,
    )
    embed.add_field(
        name="Blocked members",
        value=_clip(", ".join(f"<@{user}>" for user in blocked) or "none", _FIELD_VALUE),
        inline=False,
    )
    if changes:
        lines = [
            f"{change.created_at[:16].replace('T', ' ')} <@{change.actor_id}> {change.action.value}"
            + (f" <@{change.target_id}>" if change.target_id else "")
            + (
                f": {change.old_value or 'default'} \u2192 {change.new_value or 'default'}"
                if change.target_id is None
                else ""
            )
            for change in changes
        ]
        embed.add_field(
            name="Latest changes (UTC)", value=_clip("\n".join(lines), _FIELD_VALUE), inline=False
        )
    embed.add_field(
        name="Prices (USD, estimates)",
        value=_clip("\n".join(_price_text(price) for price in prices), _FIELD_VALUE),
        inline=False,
    )
    return embed


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value / 1000:.1f} s"


def details_embed(row: StoredGeneration) -> discord.Embed:
    """Everything about one generation, for the member who pressed Details (privately)."""
    options = ImagineOptions.from_json(row.options_json) if row.options_json else None
    prompt = options.prompt if options else "(not kept for results older than the buttons)"
    embed = discord.Embed(
        title=f"Generation {row.id}", description=_clip(prompt, _DESCRIPTION), colour=_COLOUR
    )
    if row.revised_prompt:
        embed.add_field(
            name="Revised prompt", value=_clip(row.revised_prompt, _FIELD_VALUE), inline=False
        )
    sent = {"model": row.model}
    if options is not None and row.model in CATALOG:
        with suppress(InvalidOption):
            sent = validate(options, row.model).payload()
        sent.pop("prompt", None)
    embed.add_field(
        name="Sent to the image service",
        value=_clip(", ".join(f"{key}={value}" for key, value in sent.items()), _FIELD_VALUE),
        inline=False,
    )
    embed.add_field(
        name="Status", value=row.status + (f" ({row.error_code})" if row.error_code else "")
    )
    embed.add_field(name="Images", value=f"{row.images_delivered} of {row.n_requested}")
    if row.total_tokens is not None:
        embed.add_field(
            name="Tokens",
            value=f"{row.input_tokens or 0:,} in \u00b7 {row.output_tokens or 0:,} out",
        )
    cost = "no price" if row.cost_usd is None and row.billed else usd(row.cost_usd or 0)
    embed.add_field(name="Estimated cost", value=f"{cost} {CURRENCY}")
    embed.add_field(
        name="Time",
        value=f"waiting {_ms(row.queue_ms)} \u00b7 image service {_ms(row.upstream_ms)} "
        f"\u00b7 upload {_ms(row.upload_ms)}",
        inline=False,
    )
    ids = f"`{row.request_id}`" + (
        f" (image service: `{row.upstream_request_id}`)" if row.upstream_request_id else ""
    )
    embed.add_field(name="Request id", value=ids, inline=False)
    if row.parent_id is not None:
        embed.add_field(name="Made again from", value=f"generation {row.parent_id}")
    return embed


def history_embed(rows: tuple[StoredGeneration, ...]) -> discord.Embed:
    """A member's own latest generations, each with a jump link when its message is known."""
    embed = discord.Embed(title="Your latest generations", colour=_COLOUR)
    if not rows:
        embed.description = "No generations yet."
        return embed
    lines = []
    for row in rows:
        when = datetime.fromisoformat(row.created_at.replace("Z", "+00:00"))
        url = result_url(row)
        link = f"[result]({url})" if url else ("deleted" if row.deleted_at else "no message")
        lines.append(
            f"{discord_time(when, 'f')} \u00b7 {row.model} \u00b7 {row.size} \u00b7 "
            f"{row.status} \u00b7 {link}"
        )
    embed.description = _clip("\n".join(lines), _DESCRIPTION)
    return embed
