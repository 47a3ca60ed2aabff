"""/imagine: validate, reserve, defer, generate, deliver."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Final, Protocol, runtime_checkable

import discord
from discord import app_commands
from discord.app_commands import Choice, Range
from discord.ext import commands

from bot.core.catalog import BACKGROUNDS, CATALOG, DISCORD_MAX_STRING, OUTPUT_FORMATS, STYLES
from bot.core.cometapi import ErrorKind, GeneratedImage, GenerationResult, UpstreamError
from bot.core.images import FittedImage, NotAnImage, fit_to_limit
from bot.core.service import GenerationService, Requester, Reservation, ShuttingDown
from bot.core.validation import ImagineOptions, InvalidOption, validate
from bot.glue.errors import answer
from bot.glue.render import count, refusal_message, result_embed
from bot.glue.suggest import suggest_qualities, suggest_sizes
from bot.ledger.limits import LimitRefused

log = logging.getLogger(__name__)

MAX_ATTACHMENTS: Final = 10


@runtime_checkable
class TellsOwner(Protocol):
    """A client that can warn the bot's owner (the cog must not import the client)."""

    async def tell_owner(self, text: str) -> None:
        """Send the owner a notice."""


class DeliveryImpossible(Exception):
    """Neither the interaction nor the channel can carry the images any more."""


def batched(items: list[FittedImage], size: int) -> list[tuple[FittedImage, ...]]:
    """Split images into messages of at most `size` attachments."""
    return [tuple(items[start : start + size]) for start in range(0, len(items), size)]


def as_files(images: tuple[FittedImage, ...], model: str) -> list[discord.File]:
    """Fresh discord.File objects: discord.py closes them after each request."""
    return [
        discord.File(io.BytesIO(image.data), filename=f"{model}-{i + 1}.{image.format.extension}")
        for i, image in enumerate(images)
    ]


async def fit_images(images: list[GeneratedImage], limit: int) -> list[FittedImage]:
    """Make every image fit Discord's upload limit; re-encoding runs off the event loop."""
    if all(len(image.data) <= limit for image in images):
        return [FittedImage(image.data, image.format, None) for image in images]
    return await asyncio.to_thread(
        lambda: [fit_to_limit(image.data, image.format, limit) for image in images]
    )


_NO_MENTIONS: Final = discord.AllowedMentions.none()


def _choices(values: tuple[str, ...]) -> list[Choice[str]]:
    return [Choice(name=value, value=value) for value in values]


MODEL_CHOICES: Final = [Choice(name=name, value=name) for name in CATALOG]


class ImagineCog(commands.Cog):
    """The /imagine command."""

    def __init__(self, service: GenerationService, default_model: str) -> None:
        self._service = service
        self._default_model = default_model

    @app_commands.command(
        name="imagine", description="Create images from a text prompt with CometAPI's image models"
    )
    @app_commands.describe(
        prompt="What the image should show",
        model="Which image model to use (the bot's default model when left empty)",
        size="Image size as WIDTHxHEIGHT; suggestions follow the chosen model",
        quality="Image quality; suggestions follow the chosen model",
        n="How many images to make (dall-e-3 and qwen-image make one at a time)",
        style="dall-e-3 only: vivid (dramatic) or natural (more realistic)",
        background="gpt-image models only: transparent needs png or webp",
        output_format="gpt-image models only: the image file format",
        output_compression="gpt-image models with jpeg or webp only: compression level, 0-100",
    )
    @app_commands.choices(
        model=MODEL_CHOICES,
        style=_choices(STYLES),
        background=_choices(BACKGROUNDS),
        output_format=_choices(OUTPUT_FORMATS),
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: Range[str, 1, DISCORD_MAX_STRING],
        model: str | None = None,
        size: str | None = None,
        quality: str | None = None,
        n: Range[int, 1, 10] | None = None,
        style: str | None = None,
        background: str | None = None,
        output_format: str | None = None,
        output_compression: Range[int, 0, 100] | None = None,
    ) -> None:
        """Validate and reserve first (refusals are ephemeral), then defer and generate."""
        options = ImagineOptions(
            prompt=prompt,
            model=model,
            size=size,
            quality=quality,
            n=n,
            style=style,
            background=background,
            output_format=output_format,
            output_compression=output_compression,
        )
        try:
            request = validate(options, self._default_model)
        except InvalidOption as error:
            await self._refuse(interaction, f"\u26a0\ufe0f {error.message}")
            return
        requester = Requester(interaction.user.id, interaction.guild_id, interaction.channel_id)
        try:
            reservation = await self._service.reserve(request, requester)
        except LimitRefused as error:
            await self._refuse(interaction, refusal_message(error))
            return
        except ShuttingDown:
            await self._refuse(
                interaction, "The bot is restarting and takes no new requests. Try again shortly."
            )
            return
        try:
            await interaction.response.defer(thinking=True)
        except discord.HTTPException:
            await self._service.release(reservation)
            log.warning("could not acknowledge interaction request_id=%s", reservation.request_id)
            return
        async with self._service.tracking():
            await self._generate_and_deliver(interaction, reservation)

    async def _generate_and_deliver(
        self, interaction: discord.Interaction, reservation: Reservation
    ) -> None:
        async def show_queued(position: int) -> None:
            await self._edit(
                interaction,
                f"\u23f3 Queued: the bot is busy, {count(position, 'request')} waiting "
                "including yours. "
                "Your images start as soon as a slot frees up.",
            )

        try:
            result = await self._service.generate(reservation, on_queued=show_queued)
        except UpstreamError as error:
            await self._edit(interaction, f"\u274c {error.user_message}")
            if error.kind is ErrorKind.CONFIGURATION:
                log.error("CometAPI refused the bot's API key: check COMETAPI_KEY (%s)", error)
                await self._tell_owner(interaction, error)
            return
        except asyncio.CancelledError:
            await asyncio.shield(self._interrupted(interaction, reservation))
            raise
        await self._deliver(interaction, reservation, result)

    async def _tell_owner(self, interaction: discord.Interaction, error: UpstreamError) -> None:
        client = interaction.client
        if isinstance(client, TellsOwner):
            await client.tell_owner(
                f"\u26a0\ufe0f imagine-bot: CometAPI refused the bot's API key "
                f"(HTTP {error.status}). Every /imagine fails until COMETAPI_KEY is fixed. "
                "(This notice is sent at most once an hour.)"
            )

    async def _deliver(
        self, interaction: discord.Interaction, reservation: Reservation, result: GenerationResult
    ) -> None:
        request = reservation.request
        try:
            fitted = await fit_images(result.images, interaction.filesize_limit)
        except NotAnImage as error:
            await self._service.record_failure(reservation, "image_too_large", str(error))
            await self._edit(interaction, "\u274c The image is too large for Discord to accept.")
            return
        notes = sorted({image.note for image in fitted if image.note})
        embed = result_embed(
            request, result, reservation.elapsed_ms() / 1000, note="; ".join(notes) or None
        )
        batches = list(batched(fitted, MAX_ATTACHMENTS))
        try:
            if interaction.is_expired():
                await self._deliver_to_channel(interaction, request.model, embed, batches)
            else:
                await self._deliver_to_interaction(interaction, request.model, embed, batches)
        except (discord.HTTPException, DeliveryImpossible) as error:
            detail = (
                f"Discord refused the images: HTTP {error.status}"
                if isinstance(error, discord.HTTPException)
                else str(error)
            )
            await self._service.record_failure(reservation, "delivery_failed", detail)
            await self._edit(
                interaction,
                "\u274c The images were made but Discord would not accept them. "
                "They do not count against your allowance.",
            )
            return
        await self._service.record_delivery(reservation, result, len(fitted))

    async def _deliver_to_interaction(
        self,
        interaction: discord.Interaction,
        model: str,
        embed: discord.Embed,
        batches: list[tuple[FittedImage, ...]],
    ) -> None:
        try:
            await interaction.edit_original_response(
                content=None,
                embed=embed,
                attachments=as_files(batches[0], model),
                allowed_mentions=_NO_MENTIONS,
            )
            for batch in batches[1:]:
                await interaction.followup.send(
                    files=as_files(batch, model), allowed_mentions=_NO_MENTIONS, wait=True
                )
        except discord.HTTPException as error:
            # 401/50027: the 15-minute interaction token ran out while the images were made.
            if error.status != 401:
                raise
            await self._deliver_to_channel(interaction, model, embed, batches)

    async def _deliver_to_channel(
        self,
        interaction: discord.Interaction,
        model: str,
        embed: discord.Embed,
        batches: list[tuple[FittedImage, ...]],
    ) -> None:
        channel = interaction.channel
        if not isinstance(channel, discord.abc.Messageable):
            raise DeliveryImpossible("the interaction expired and there is no channel to post in")
        user = interaction.user
        mention_only_requester = discord.AllowedMentions(
            everyone=False, roles=False, users=[user], replied_user=False
        )
        for index, batch in enumerate(batches):
            if index == 0:
                await channel.send(
                    content=f"{user.mention}, your /imagine images are ready.",
                    embed=embed,
                    files=as_files(batch, model),
                    allowed_mentions=mention_only_requester,
                )
            else:
                await channel.send(files=as_files(batch, model), allowed_mentions=_NO_MENTIONS)

    async def _interrupted(
        self, interaction: discord.Interaction, reservation: Reservation
    ) -> None:
        await self._service.record_interrupted(reservation)
        await self._edit(
            interaction,
            "\u26a0\ufe0f The bot restarted before your images were ready. "
            "They do not count against your allowance; please try again.",
        )

    async def _refuse(self, interaction: discord.Interaction, text: str) -> None:
        await answer(interaction, text)

    async def _edit(self, interaction: discord.Interaction, text: str) -> None:
        try:
            await interaction.edit_original_response(
                content=text, embed=None, attachments=[], allowed_mentions=_NO_MENTIONS
            )
        except discord.HTTPException as error:
            log.warning("could not update the user's message: HTTP %s", error.status)

    @imagine.autocomplete("size")
    async def _size_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[Choice[str]]:
        spec = CATALOG.get(interaction.namespace.model or "") or CATALOG[self._default_model]
        return [Choice(name=name, value=value) for name, value in suggest_sizes(spec, current)]

    @imagine.autocomplete("quality")
    async def _quality_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[Choice[str]]:
        spec = CATALOG.get(interaction.namespace.model or "") or CATALOG[self._default_model]
        return [Choice(name=name, value=value) for name, value in suggest_qualities(spec, current)]
