"""`/usage-admin limits show`: every limit, block and price in force, in the admin's language."""

from __future__ import annotations

from datetime import datetime

import discord

from bot.core.pricing import ModelPrice, TokenPrice
from bot.core.service import OperatorLimits
from bot.glue.render import COLOUR, FIELD_VALUE, clip
from bot.i18n import Messages
from bot.ledger.limits import GuildLimits, LimitChange
from bot.ledger.reports import CURRENCY


def _price_text(tr: Messages, price: ModelPrice) -> str:
    if price.price is None:
        return tr.gettext("**{model}**: no price", model=price.model)
    if isinstance(price.price, TokenPrice):
        amount = tr.gettext(
            "{input} in / {output} out per M tokens",
            input=tr.price(price.price.input_per_million),
            output=tr.price(price.price.output_per_million),
        )
    elif price.price.variants:
        amount = ", ".join(f"{key} {tr.price(value)}" for key, value in price.price.variants)
    else:
        amount = tr.gettext("{amount} per image", amount=tr.price(price.price.per_image or 0))
    # The source names where the price came from (an identifier, as in the export).
    source = price.source.value if price.source else "?"
    return f"**{price.model}**: {amount} ({source}, {tr.iso_day(str(price.as_of))})"


def _operator_text(tr: Messages, operator: OperatorLimits) -> str:
    parts = []
    if operator.user_daily_images is not None:
        parts.append(
            tr.gettext(
                "{images} images per member per day", images=tr.number(operator.user_daily_images)
            )
        )
    if operator.user_daily_budget_usd is not None:
        parts.append(
            tr.gettext("{amount} per member per day", amount=tr.usd(operator.user_daily_budget_usd))
        )
    if operator.bot_daily_budget_usd is not None:
        parts.append(
            tr.gettext(
                "{amount} per day for the whole bot", amount=tr.usd(operator.bot_daily_budget_usd)
            )
        )
    if not parts:
        return tr.gettext("none")
    return tr.gettext(
        "{limits} ({currency}, estimated; counted across every server; a server's limits can "
        "only tighten these)",
        limits=tr.gettext("; ").join(parts),
        currency=CURRENCY,
    )


def _change_line(tr: Messages, change: LimitChange) -> str:
    try:
        when = tr.minute(datetime.fromisoformat(change.created_at.replace("Z", "+00:00")))
    except ValueError:
        when = change.created_at[:16].replace("T", " ")
    # The action is the audit log's identifier (daily_images, block...), kept as stored.
    line = f"{when} <@{change.actor_id}> {change.action.value}"
    if change.target_id:
        return f"{line} <@{change.target_id}>"
    default = tr.gettext("default")
    return f"{line}: {change.old_value or default} \u2192 {change.new_value or default}"


def limits_embed(
    tr: Messages,
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
    embed = discord.Embed(title=tr.gettext("Limits in this server"), colour=COLOUR)
    embed.add_field(
        name=tr.gettext("The bot operator's limits"),
        value=_operator_text(tr, operator),
        inline=False,
    )
    if not limits.user_daily_images:
        daily = tr.gettext("none of this server's own")
    else:
        daily = tr.gettext(
            "{images} images per member per day in this server",
            images=tr.number(limits.user_daily_images),
        )
    embed.add_field(name=tr.gettext("Daily images per member"), value=daily, inline=False)
    budget = (
        tr.gettext("none")
        if limits.daily_budget_usd is None
        else tr.gettext(
            "{amount} {currency} per day (estimated cost, running requests reserved)",
            amount=tr.usd(limits.daily_budget_usd),
            currency=CURRENCY,
        )
    )
    embed.add_field(name=tr.gettext("Daily budget"), value=budget, inline=False)
    models = (
        tr.gettext("all") if limits.allowed_models is None else ", ".join(limits.allowed_models)
    )
    embed.add_field(name=tr.gettext("Allowed models"), value=models, inline=False)
    embed.add_field(
        name=tr.gettext("Images per request"),
        value=tr.gettext("each model's maximum")
        if limits.max_n is None
        else tr.gettext("at most {n}", n=limits.max_n),
        inline=False,
    )
    by_role = ", ".join(f"<@&{role}>: {tr.number(count)}" for role, count in role_allowances)
    embed.add_field(
        name=tr.gettext("Daily images by role (the highest of a member's roles)"),
        value=clip(by_role or tr.gettext("none"), FIELD_VALUE),
        inline=False,
    )
    embed.add_field(
        name=tr.gettext("Roles that may use /imagine"),
        value=clip(
            ", ".join(f"<@&{role}>" for role in allowed_roles) or tr.gettext("everyone"),
            FIELD_VALUE,
        ),
        inline=False,
    )
    embed.add_field(
        name=tr.gettext("Prompts in the usage log"),
        value=tr.gettext("kept (who generated what, with links)")
        if keep_prompts
        else tr.gettext("not kept"),
        inline=False,
    )
    embed.add_field(
        name=tr.gettext("Moderation low"),
        value=tr.gettext("allowed in age-restricted channels")
        if moderation_low
        else tr.gettext("not allowed"),
        inline=False,
    )
    embed.add_field(
        name=tr.gettext("Channels for /imagine"),
        value=clip(
            ", ".join(f"<#{c}>" for c in channels) or tr.gettext("every channel"), FIELD_VALUE
        ),
        inline=False,
    )
    embed.add_field(
        name=tr.gettext("Blocked words and phrases"),
        value=clip(
            ", ".join(f"||{term}||" for term in blocked_terms) or tr.gettext("none"), FIELD_VALUE
        ),
        inline=False,
    )
    embed.add_field(
        name=tr.gettext("Blocked members"),
        value=clip(", ".join(f"<@{user}>" for user in blocked) or tr.gettext("none"), FIELD_VALUE),
        inline=False,
    )
    if changes:
        embed.add_field(
            name=tr.gettext("Latest changes (UTC)"),
            value=clip("\n".join(_change_line(tr, change) for change in changes), FIELD_VALUE),
            inline=False,
        )
    embed.add_field(
        name=tr.gettext("Prices (USD, estimates)"),
        value=clip("\n".join(_price_text(tr, price) for price in prices), FIELD_VALUE),
        inline=False,
    )
    return embed
