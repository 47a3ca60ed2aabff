"""How results, refusals and a generation's details look in Discord, in the reader's language.

Reports are in `report_embeds.py`, the limits page in `limits_embed.py`; every function takes
the reader's `Messages`, so nothing here decides a language.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import discord

from bot.core.catalog import CATALOG
from bot.core.cometapi import ErrorKind, GenerationResult, UpstreamError
from bot.core.validation import GenerationRequest, ImagineOptions, InvalidOption, validate
from bot.i18n import N_, SOURCE_LANGUAGE, Messages
from bot.ledger.limits import (
    BudgetExhausted,
    BudgetScope,
    ChannelNotAllowed,
    LimitRefused,
    MemberBlocked,
    ModelNotAllowed,
    ModerationNotAllowed,
    PromptBlocked,
    QuotaExceeded,
    RoleNotAllowed,
    TooManyImages,
)
from bot.ledger.reports import CURRENCY
from bot.ledger.results import StoredGeneration

COLOUR: Final = discord.Colour.blurple()
_PROMPT_SHOWN: Final = 1000
FIELD_VALUE: Final = 1024
DESCRIPTION: Final = 4096


def role_ids(user: discord.User | discord.Member) -> tuple[int, ...]:
    """A member's role ids (with @everyone, whose id is the server's); none in DMs."""
    return tuple(role.id for role in user.roles) if isinstance(user, discord.Member) else ()


def clip(text: str, limit: int) -> str:
    """`text` cut to Discord's `limit` characters, with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def discord_time(moment: datetime, style: str = "t") -> str:
    """A timestamp every reader sees in their own time zone (and their client's language)."""
    return f"<t:{int(moment.timestamp())}:{style}>"


def images(tr: Messages, number: int) -> str:
    """ "1 image", "3 images": reports read as sentences."""
    return tr.ngettext("{n} image", "{n} images", number)


def requests(tr: Messages, number: int) -> str:
    """ "1 request", "3 requests"."""
    return tr.ngettext("{n} request", "{n} requests", number)


def tokens_text(tr: Messages, inputs: int, outputs: int, total: int) -> str:
    """Token counts in, out and in total."""
    return tr.gettext(
        "{input} in \u00b7 {output} out \u00b7 {total} total",
        input=tr.number(inputs),
        output=tr.number(outputs),
        total=tr.number(total),
    )


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
    tr: Messages,
    request: GenerationRequest,
    result: GenerationResult,
    elapsed_s: float,
    note: str | None = None,
    parent: ResultLink | None = None,
) -> discord.Embed:
    """The embed that goes with delivered images."""
    embed = discord.Embed(description=clip(request.prompt, _PROMPT_SHOWN), colour=COLOUR)
    embed.add_field(name=tr.gettext("Model"), value=request.model)
    embed.add_field(name=tr.gettext("Size"), value=request.shown_size)
    embed.add_field(name=tr.gettext("Quality"), value=request.shown_quality)
    revised = next((image.revised_prompt for image in result.images if image.revised_prompt), None)
    if revised:
        embed.add_field(
            name=tr.gettext("Revised prompt"), value=clip(revised, FIELD_VALUE), inline=False
        )
    usage = result.usage
    if usage and usage.total_tokens is not None:
        embed.add_field(
            name=tr.gettext("Tokens"),
            value=tokens_text(
                tr, usage.input_tokens or 0, usage.output_tokens or 0, usage.total_tokens
            ),
        )
    if note:
        embed.add_field(name=tr.gettext("Note"), value=clip(note, FIELD_VALUE), inline=False)
    if parent is not None:
        source = (
            tr.gettext("[this result]({url})", url=parent.url)
            if parent.url
            else tr.gettext("a result no longer posted")
        )
        embed.add_field(name=tr.gettext("Made again from"), value=source, inline=False)
    embed.set_footer(
        text=tr.ngettext(
            "{n} image in {seconds} s",
            "{n} images in {seconds} s",
            len(result.images),
            seconds=tr.decimal(elapsed_s),
        )
    )
    return embed


def quota_message(error: QuotaExceeded, tr: Messages | None = None) -> str:
    """Why a request was refused for a daily image limit, whose limit, and when it resets."""
    tr = tr or Messages(SOURCE_LANGUAGE)
    left = max(error.limit - error.used, 0)
    whose = (
        tr.gettext("this server's limit of {limit} images per member", limit=error.limit)
        if error.server_limit
        else tr.gettext(
            "the bot's limit of {limit} images per member (all servers together)",
            limit=error.limit,
        )
    )
    return tr.gettext(
        "\u26a0\ufe0f Daily limit reached: you have used {used} images today under "
        "{whose} and asked for {requested} (you have {left} left). "
        "The limit resets at 00:00 UTC, {resets}.",
        used=error.used,
        whose=whose,
        requested=error.requested,
        left=left,
        resets=discord_time(error.resets_at, "R"),
    )


_BUDGET_TEXT: Final = {
    BudgetScope.USER: N_("Your daily budget on this bot (set by its operator)"),
    BudgetScope.SERVER: N_("This server's daily budget"),
    BudgetScope.BOT: N_("The bot's daily budget (set by its operator, for every server)"),
}


def _budget_message(error: BudgetExhausted, tr: Messages) -> str:
    spent = tr.gettext(
        "{spent} of {budget} {currency} (estimated)",
        spent=tr.usd(error.spent_usd),
        budget=tr.usd(error.budget_usd),
        currency=CURRENCY,
    )
    if error.spent_usd >= error.budget_usd:
        state = tr.gettext("is used up: {spent} spent or reserved today", spent=spent)
    else:
        state = tr.gettext(
            "has too little left for this request, estimated at {needed}: "
            "{spent} spent or reserved today. A smaller request may fit",
            needed=tr.usd(error.needed_usd),
            spent=spent,
        )
    return tr.gettext(
        "\u26a0\ufe0f {what} {state}. It resets at 00:00 UTC, {resets}.",
        what=tr.gettext(_BUDGET_TEXT[error.scope]),
        state=state,
        resets=discord_time(error.resets_at, "R"),
    )


def refusal_message(error: LimitRefused, tr: Messages | None = None) -> str:
    """Why a limit refused the request, naming the limit, and what the user can do.

    Rendered from the refusal's attributes, never its English `str()`, so each reader gets
    their language; English when no reader's language is given.
    """
    tr = tr or Messages(SOURCE_LANGUAGE)
    if isinstance(error, QuotaExceeded):
        return quota_message(error, tr)
    if isinstance(error, BudgetExhausted):
        return _budget_message(error, tr)
    if isinstance(error, RoleNotAllowed):
        roles = ", ".join(f"<@&{role}>" for role in error.roles[:10])
        return tr.gettext(
            "\u26a0\ufe0f In this server /imagine is for members with these roles: {roles}.",
            roles=roles,
        )
    if isinstance(error, ChannelNotAllowed):
        where = ", ".join(f"<#{channel}>" for channel in error.channels[:10])
        return tr.gettext(
            "\u26a0\ufe0f /imagine works only in these channels of this server: {channels}.",
            channels=where,
        )
    if isinstance(error, ModerationNotAllowed):
        if error.switched_on:
            return tr.gettext(
                "\u26a0\ufe0f `moderation` low works only in this server's age-restricted channels."
            )
        return tr.gettext(
            "\u26a0\ufe0f This server does not allow `moderation` low; leave it empty."
        )
    if isinstance(error, PromptBlocked):
        # Never echo the term: the member knows their prompt, the channel need not.
        return tr.gettext(
            "\u26a0\ufe0f Your prompt contains a word or phrase this server does not allow. "
            "Nothing was sent or charged."
        )
    if isinstance(error, MemberBlocked):
        return tr.gettext(
            "\u26a0\ufe0f A server admin has blocked you from making images in this server."
        )
    if isinstance(error, ModelNotAllowed):
        return tr.gettext(
            "\u26a0\ufe0f This server allows only these models: {allowed}. "
            "Pick one of them instead of {model}.",
            allowed=", ".join(error.allowed),
            model=error.model,
        )
    if isinstance(error, TooManyImages):
        return tr.gettext(
            "\u26a0\ufe0f This server allows at most {images} per request; "
            "you asked for {requested}.",
            images=images(tr, error.max_n),
            requested=error.requested,
        )
    return tr.gettext("\u26a0\ufe0f Refused by {limit}.", limit=error.limit_name)


_UPSTREAM_TEXT: Final = {
    ErrorKind.BAD_REQUEST: N_("The image service refused this request"),
    ErrorKind.CONFIGURATION: N_(
        "The bot's connection to the image service needs attention from the bot's owner, "
        "who has been told. Nothing was charged"
    ),
    ErrorKind.MODEL_NOT_FOUND: N_("The image service does not offer this model right now"),
    ErrorKind.TOO_LARGE: N_("The request was too large for the image service"),
    ErrorKind.RATE_LIMITED: N_(
        "The image service is busy (rate limited) and did not accept the request after "
        "several tries. Please try again in a minute"
    ),
    ErrorKind.UNAVAILABLE: N_(
        "The image service is overloaded right now and stayed busy after several tries. "
        "Please try again in a minute"
    ),
    ErrorKind.UPSTREAM_ERROR: N_(
        "The image service had an internal error and did not recover after several tries. "
        "Please try again later"
    ),
    ErrorKind.TIMEOUT: N_("The image service took too long to answer, so the bot gave up waiting"),
    ErrorKind.CONNECTION: N_("The bot could not reach the image service. Please try again later"),
    ErrorKind.BAD_RESPONSE: N_("The image service sent back something that is not a usable image"),
    ErrorKind.DOWNLOAD_FAILED: N_("The image was made, but the bot could not download it"),
}


def upstream_message(error: UpstreamError, tr: Messages) -> str:
    """`UpstreamError.user_message` in the reader's language (the service's words stay as sent).

    Built from the error's kind, as the core builds its English one; a kind the core adds
    later falls back to the core's English text until it is in the catalog.
    """
    text = _UPSTREAM_TEXT.get(error.kind)
    if text is None:
        return error.user_message
    if error.upstream_message and error.kind is not ErrorKind.CONFIGURATION:
        return tr.gettext(
            "{text}. The image service said: {said}",
            text=tr.gettext(text),
            said=error.upstream_message,
        )
    return tr.gettext("{text}.", text=tr.gettext(text))


def _ms(tr: Messages, value: int | None) -> str:
    return "-" if value is None else tr.gettext("{seconds} s", seconds=tr.decimal(value / 1000))


def details_embed(tr: Messages, row: StoredGeneration) -> discord.Embed:
    """Everything about one generation, for the member who pressed Details (privately)."""
    options = ImagineOptions.from_json(row.options_json) if row.options_json else None
    prompt = (
        options.prompt if options else tr.gettext("(not kept for results older than the buttons)")
    )
    embed = discord.Embed(
        title=tr.gettext("Generation {id}", id=row.id),
        description=clip(prompt, DESCRIPTION),
        colour=COLOUR,
    )
    if row.revised_prompt:
        embed.add_field(
            name=tr.gettext("Revised prompt"),
            value=clip(row.revised_prompt, FIELD_VALUE),
            inline=False,
        )
    sent = {"model": row.model}
    if options is not None and row.model in CATALOG:
        with suppress(InvalidOption):
            sent = validate(options, row.model).payload()
        sent.pop("prompt", None)
    embed.add_field(
        name=tr.gettext("Sent to the image service"),
        value=clip(", ".join(f"{key}={value}" for key, value in sent.items()), FIELD_VALUE),
        inline=False,
    )
    # The status and error code are the usage log's identifiers, the same in every language.
    embed.add_field(
        name=tr.gettext("Status"),
        value=row.status + (f" ({row.error_code})" if row.error_code else ""),
    )
    embed.add_field(
        name=tr.gettext("Images"),
        value=tr.gettext(
            "{delivered} of {requested}", delivered=row.images_delivered, requested=row.n_requested
        ),
    )
    if row.total_tokens is not None:
        embed.add_field(
            name=tr.gettext("Tokens"),
            value=tr.gettext(
                "{input} in \u00b7 {output} out",
                input=tr.number(row.input_tokens or 0),
                output=tr.number(row.output_tokens or 0),
            ),
        )
    cost = (
        tr.gettext("no price") if row.cost_usd is None and row.billed else tr.usd(row.cost_usd or 0)
    )
    embed.add_field(name=tr.gettext("Estimated cost"), value=f"{cost} {CURRENCY}")
    embed.add_field(
        name=tr.gettext("Time"),
        value=tr.gettext(
            "waiting {queue} \u00b7 image service {upstream} \u00b7 upload {upload}",
            queue=_ms(tr, row.queue_ms),
            upstream=_ms(tr, row.upstream_ms),
            upload=_ms(tr, row.upload_ms),
        ),
        inline=False,
    )
    ids = f"`{row.request_id}`" + (
        tr.gettext(" (image service: `{id}`)", id=row.upstream_request_id)
        if row.upstream_request_id
        else ""
    )
    embed.add_field(name=tr.gettext("Request id"), value=ids, inline=False)
    if row.parent_id is not None:
        embed.add_field(
            name=tr.gettext("Made again from"),
            value=tr.gettext("generation {id}", id=row.parent_id),
        )
    return embed


def history_embed(tr: Messages, rows: tuple[StoredGeneration, ...]) -> discord.Embed:
    """A member's own latest generations, each with a jump link when its message is known."""
    embed = discord.Embed(title=tr.gettext("Your latest generations"), colour=COLOUR)
    if not rows:
        embed.description = tr.gettext("No generations yet.")
        return embed
    lines = []
    for row in rows:
        when = datetime.fromisoformat(row.created_at.replace("Z", "+00:00"))
        url = result_url(row)
        if url:
            link = tr.gettext("[result]({url})", url=url)
        else:
            link = tr.gettext("deleted") if row.deleted_at else tr.gettext("no message")
        lines.append(
            f"{discord_time(when, 'f')} \u00b7 {row.model} \u00b7 {row.size} \u00b7 "
            f"{row.status} \u00b7 {link}"
        )
    embed.description = clip("\n".join(lines), DESCRIPTION)
    return embed
