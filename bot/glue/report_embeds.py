"""Usage reports in Discord (/usage, /usage-admin user, server, export), in the reader's language.

The ledger builds the numbers and keeps English texts for the command line; these render the
same values with the reader's words, number signs and day format.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import discord

from bot.core.service import Allowance
from bot.glue.render import (
    COLOUR,
    FIELD_VALUE,
    clip,
    discord_time,
    images,
    requests,
    tokens_text,
)
from bot.i18n import N_, Messages
from bot.ledger.export import ExportResult
from bot.ledger.periods import Period
from bot.ledger.reports import CURRENCY, Cost, Report, Undelivered, Window

PERIOD_LABELS: Final = {
    Period.TODAY: N_("today (UTC)"),
    Period.DAYS_7: N_("the last 7 days"),
    Period.DAYS_30: N_("the last 30 days"),
    Period.ALL: N_("all time"),
}
"""The periods' names in reports and in /usage's choices (English: the ledger's labels)."""


def window_label(tr: Messages, window: Window) -> str:
    """A report's period in the reader's words, its days in the reader's format.

    The ledger labels a window in English only; its start and end say everything, and a
    named period keeps the ledger's label, which identifies it.
    """
    for period, label in PERIOD_LABELS.items():
        if window.label == period.label:
            return tr.gettext(label)
    first = window.start.date() if window.start else None
    # The end is exclusive: midnight after the last day.
    last = (window.end - timedelta(days=1)).date() if window.end else None
    if first and last:
        if first == last:
            return tr.gettext("{day} (UTC)", day=tr.day(first))
        return tr.gettext("{start} to {end} (UTC)", start=tr.day(first), end=tr.day(last))
    if first:
        return tr.gettext("since {start} (UTC)", start=tr.day(first))
    if last:
        return tr.gettext("up to {end} (UTC)", end=tr.day(last))
    return tr.gettext(PERIOD_LABELS[Period.ALL])


def cost_summary(tr: Messages, cost: Cost) -> str:
    """One line: amount, currency, "estimated", the prices' date, and what had no price."""
    if not cost.priced and not cost.unpriced_images:
        return tr.gettext("{amount} {currency} (estimated)", amount=tr.usd(0), currency=CURRENCY)
    parts: list[str] = []
    if cost.priced and cost.prices_from and cost.prices_to:
        dates = (
            tr.iso_day(cost.prices_from)
            if cost.prices_from == cost.prices_to
            else tr.gettext(
                "{start} to {end}",
                start=tr.iso_day(cost.prices_from),
                end=tr.iso_day(cost.prices_to),
            )
        )
        parts.append(
            tr.gettext(
                "{amount} {currency} (estimated, prices as of {dates})",
                amount=tr.usd(cost.usd),
                currency=CURRENCY,
                dates=dates,
            )
        )
    if cost.unpriced_images:
        parts.append(
            tr.gettext("no price for {count} image(s)", count=tr.number(cost.unpriced_images))
        )
    return "; ".join(parts)


def cost_cell(tr: Messages, cost: Cost) -> str:
    """A short cost for a list line: the amount, "no price", or both."""
    if not cost.priced:
        return tr.gettext("no price") if cost.unpriced_images else tr.usd(0)
    if cost.unpriced_images:
        return tr.gettext(
            "{amount} + {count} unpriced",
            amount=tr.usd(cost.usd),
            count=tr.number(cost.unpriced_images),
        )
    return tr.usd(cost.usd)


def undelivered_summary(tr: Messages, undelivered: Undelivered) -> str:
    """How many billed calls never reached the member, and their part of the cost."""
    return tr.ngettext(
        "{n} call, {amount} {currency} (estimated, included in the cost)",
        "{n} calls, {amount} {currency} (estimated, included in the cost)",
        undelivered.requests,
        amount=tr.usd(undelivered.usd),
        currency=CURRENCY,
    )


def _model_lines(tr: Messages, report: Report) -> str:
    return "\n".join(
        tr.gettext(
            "**{model}**: {images}, {requests}, {failures} failed, {cost}",
            model=line.model,
            images=images(tr, line.images),
            requests=requests(tr, line.requests),
            failures=tr.number(line.failures),
            cost=cost_cell(tr, line.cost),
        )
        for line in report.by_model[:15]
    )


def _totals_fields(tr: Messages, embed: discord.Embed, report: Report) -> None:
    totals = report.totals
    embed.add_field(name=tr.gettext("Images"), value=tr.number(totals.images))
    edits = tr.ngettext(" ({n} edit)", " ({n} edits)", totals.edits) if totals.edits else ""
    embed.add_field(name=tr.gettext("Requests"), value=f"{tr.number(totals.requests)}{edits}")
    embed.add_field(name=tr.gettext("Failed"), value=tr.number(totals.failures))
    embed.add_field(name=tr.gettext("Cost"), value=cost_summary(tr, totals.cost), inline=False)
    if totals.undelivered.requests:
        embed.add_field(
            name=tr.gettext("Billed, not delivered"),
            value=undelivered_summary(tr, totals.undelivered),
            inline=False,
        )
    if report.by_model:
        embed.add_field(
            name=tr.gettext("By model"),
            value=clip(_model_lines(tr, report), FIELD_VALUE),
            inline=False,
        )
    if totals.total_tokens:
        embed.add_field(
            name=tr.gettext("Tokens"),
            value=tokens_text(tr, totals.input_tokens, totals.output_tokens, totals.total_tokens),
            inline=False,
        )


def allowance_text(tr: Messages, allowance: Allowance) -> str:
    """A member's day: each daily limit that applies, what it left, and when they reset."""
    parts: list[str] = []
    if allowance.operator_limit is not None:
        if allowance.operator_used is None:
            parts.append(
                tr.gettext(
                    "the bot's limit of {limit} images per member per day also applies, "
                    "counted across servers",
                    limit=tr.number(allowance.operator_limit),
                )
            )
        else:
            left = max(allowance.operator_limit - allowance.operator_used, 0)
            parts.append(
                tr.gettext(
                    "{left} of {limit} images left today under the bot's limit "
                    "(all servers together)",
                    left=tr.number(left),
                    limit=tr.number(allowance.operator_limit),
                )
            )
    if allowance.server_limit is not None and allowance.server_used is not None:
        left = max(allowance.server_limit - allowance.server_used, 0)
        parts.append(
            tr.gettext(
                "{left} of {limit} images left today under this server's limit",
                left=tr.number(left),
                limit=tr.number(allowance.server_limit),
            )
        )
    elif allowance.server_used is not None:
        parts.append(
            tr.gettext(
                "{used} images today in this server, which sets no daily limit",
                used=tr.number(allowance.server_used),
            )
        )
    resets = discord_time(allowance.resets_at, "R")
    if not parts:
        return tr.gettext(
            "No daily limit. {used} images today.", used=tr.number(allowance.operator_used or 0)
        )
    # The parts are clauses of one sentence; the catalog joins them and closes it.
    text = tr.gettext("; ").join(parts)
    return tr.gettext(
        "{limits}. Resets {resets} (00:00 UTC).", limits=text[0].upper() + text[1:], resets=resets
    )


def member_report_embed(
    tr: Messages, report: Report, title: str, allowance: Allowance, *, blocked: bool = False
) -> discord.Embed:
    """One member's usage: /usage shows one's own, /usage-admin user anyone's in the server."""
    heading = tr.gettext("{title}: {period}", title=title, period=window_label(tr, report.window))
    embed = discord.Embed(title=clip(heading, 256), colour=COLOUR)
    _totals_fields(tr, embed, report)
    embed.add_field(
        name=tr.gettext("Today's allowance"), value=allowance_text(tr, allowance), inline=False
    )
    if blocked:
        embed.add_field(
            name=tr.gettext("Blocked"),
            value=tr.gettext("Blocked from making images here."),
            inline=False,
        )
    return embed


def server_report_embed(tr: Messages, report: Report, guild_name: str) -> discord.Embed:
    """A server's usage: totals, by model, the top members; the chart is attached beside it."""
    heading = tr.gettext(
        "Image usage in {server}: {period}",
        server=guild_name,
        period=window_label(tr, report.window),
    )
    embed = discord.Embed(title=clip(heading, 256), colour=COLOUR)
    _totals_fields(tr, embed, report)
    if report.top_users:
        lines = [
            tr.gettext(
                "{rank}. <@{user}>: {images}, {requests}, {cost}",
                rank=rank,
                user=line.user_id,
                images=images(tr, line.images),
                requests=requests(tr, line.requests),
                cost=tr.usd(line.cost_usd),
            )
            for rank, line in enumerate(report.top_users, start=1)
        ]
        embed.add_field(
            name=tr.gettext("Top members"), value=clip("\n".join(lines), FIELD_VALUE), inline=False
        )
    return embed


def export_notice(tr: Messages, result: ExportResult) -> str:
    """What the admin is told about an export's files."""
    text = tr.gettext("{rows} row(s), one per generation.", rows=tr.number(result.rows))
    if result.split:
        text += tr.gettext(
            " Too large for one upload, so split into {parts} gzip'd CSV parts, "
            "each with the header row.",
            parts=len(result.files),
        )
    elif result.compressed:
        text += tr.gettext(
            " Compressed with gzip to fit Discord's upload limit (open it with any unzip tool)."
        )
    return text
