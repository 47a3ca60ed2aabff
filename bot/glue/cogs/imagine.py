"""/imagine: validate, reserve, defer, generate, deliver. Glue only: the ledger is not written here.

The generation's life (its reservation, upstream call and one final status) belongs to
`bot.core.generation.Generation`; this cog tells it what Discord accepted.
"""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Final, Protocol, runtime_checkable

import discord
from discord import app_commands
from discord.app_commands import Choice, Range
from discord.ext import commands

from bot.core.catalog import (
    BACKGROUNDS,
    CATALOG,
    DISCORD_MAX_STRING,
    INPUT_FIDELITIES,
    MODERATION_LEVELS,
    OUTPUT_FORMATS,
    STYLES,
    editing_models,
)
from bot.core.cometapi import ErrorKind, GenerationResult, UpstreamError
from bot.core.generation import Generation, Phase, Requester
from bot.core.images import (
    CorruptImage,
    FittedImage,
    ImageTooLarge,
    pack_messages,
    prepare_for_upload,
)
from bot.core.references import AttachmentLike, ReferenceRefused
from bot.core.service import GenerationService, ShuttingDown
from bot.core.validation import GenerationRequest, ImagineOptions, InvalidOption, validate
from bot.glue.errors import answer
from bot.glue.remix import (
    ReferenceFetcher,
    RemixModal,
    RemixSource,
    edit_model,
    message_images,
)
from bot.glue.render import (
    ResultLink,
    refusal_message,
    result_embed,
    role_ids,
    upstream_message,
)
from bot.glue.result_view import result_view
from bot.glue.suggest import suggest_qualities, suggest_sizes
from bot.glue.translator import messages_for
from bot.i18n import N_, Localizer, Messages
from bot.ledger.busy import LedgerBusy
from bot.ledger.limits import LimitRefused

log = logging.getLogger(__name__)

# Images fetched within this long are checked before the acknowledgement (refusals stay
# private); the reservation may then still wait 1.2 s for a lock within Discord's 3 s.
FETCH_BEFORE_ACK_S: Final = 1.0


@runtime_checkable
class TellsOwner(Protocol):
    """A client that can warn the bot's owner (the cog must not import the client)."""

    async def tell_owner(self, text: str) -> None:
        """Send the owner a notice."""


class DeliveryImpossible(Exception):
    """Neither the interaction nor the channel can carry the images any more."""


def as_files(images: tuple[FittedImage, ...], model: str, first: int) -> list[discord.File]:
    """Fresh discord.File objects: discord.py closes them after each request."""
    return [
        discord.File(
            io.BytesIO(image.data), filename=f"{model}-{first + i + 1}.{image.format.extension}"
        )
        for i, image in enumerate(images)
    ]


def _age_restricted(channel: object) -> bool:
    # TextChannel.is_nsfw(), Thread.is_nsfw() (its parent's); DMs and unknown channels: no.
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def queue_text(tr: Messages, position: int) -> str:
    """The waiting message; position 1 is the next request to start."""
    ahead = position - 1
    where = (
        tr.gettext("yours is next")
        if ahead == 0
        else tr.ngettext("{n} request ahead of yours", "{n} requests ahead of yours", ahead)
    )
    return tr.gettext(
        "\u23f3 Queued: the bot is busy, {where}. Your images start as soon as a slot frees up.",
        where=where,
    )


_NO_MENTIONS: Final = discord.AllowedMentions.none()


def _choices(values: tuple[str, ...]) -> list[Choice[str]]:
    return [Choice(name=value, value=value) for value in values]


MODEL_CHOICES: Final = [Choice(name=name, value=name) for name in CATALOG]

# discord.py asks the translator for every option name (the callback's parameter names) and
# choice name; they are not string literals pybabel could find, so they are listed here for
# the catalog. Model names and file formats read the same in every language and are left
# out. tests/test_i18n.py fails when the tree asks for a string that is in neither.
OPTION_NAMES: Final = (
    N_("prompt"),
    N_("model"),
    N_("size"),
    N_("quality"),
    N_("n"),
    N_("style"),
    N_("background"),
    N_("output_format"),
    N_("output_compression"),
    N_("private"),
    N_("image"),
    N_("image2"),
    N_("image3"),
    N_("mask"),
    N_("input_fidelity"),
    N_("moderation"),
)
CHOICE_NAMES: Final = (
    N_("vivid"),
    N_("natural"),
    N_("auto"),
    N_("transparent"),
    N_("opaque"),
    N_("high"),
    N_("low"),
)


class ImagineCog(commands.Cog):
    """The /imagine command."""

    def __init__(
        self,
        service: GenerationService,
        default_model: str,
        fetcher: ReferenceFetcher,
        localizer: Localizer,
    ) -> None:
        self._service = service
        self._default_model = default_model
        self._fetcher = fetcher
        self._localizer = localizer
        self.remix_menu = app_commands.ContextMenu(
            name=N_("Remix with imagine"),
            callback=self._remix_message,
            allowed_contexts=app_commands.AppCommandContext(
                guild=True, dm_channel=True, private_channel=False
            ),
            allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
        )

    @app_commands.command(
        name=N_("imagine"),
        description=N_("Create images from a text prompt with CometAPI's image models"),
    )
    # Servers and the bot's DMs (where only the operator's limits apply). Not as a user-
    # installed app: it would run in servers whose admins never invited the bot, outside
    # every server limit.
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.allowed_installs(guilds=True, users=False)
    @app_commands.describe(
        prompt=N_("What the image should show"),
        model=N_("Which image model to use (the bot's default model when left empty)"),
        size=N_("Image size as WIDTHxHEIGHT; suggestions follow the chosen model"),
        quality=N_("Image quality; suggestions follow the chosen model"),
        n=N_("How many images to make (dall-e-3 and qwen-image make one at a time)"),
        style=N_("dall-e-3 only: vivid (dramatic) or natural (more realistic)"),
        background=N_("gpt-image models only: transparent needs png or webp"),
        output_format=N_("gpt-image models only: the image file format"),
        output_compression=N_("gpt-image models with jpeg or webp only: compression level, 0-100"),
        private=N_("Show the result only to you (default: everyone in the channel sees it)"),
        image=N_("A picture to start from (the request becomes an edit; GPT image models)"),
        image2=N_("A second reference picture"),
        image3=N_("A third reference picture"),
        mask=N_("PNG the size of the first picture: its transparent part is what changes"),
        input_fidelity=N_("How closely an edit keeps the references' details (gpt-image-1, 1.5)"),
        moderation=N_("gpt-image models: low filters less (only where the server allows it)"),
    )
    @app_commands.choices(
        model=MODEL_CHOICES,
        style=_choices(STYLES),
        background=_choices(BACKGROUNDS),
        output_format=_choices(OUTPUT_FORMATS),
        input_fidelity=_choices(INPUT_FIDELITIES),
        moderation=_choices(MODERATION_LEVELS),
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
        private: bool = False,
        image: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        mask: discord.Attachment | None = None,
        input_fidelity: str | None = None,
        moderation: str | None = None,
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
            input_fidelity=input_fidelity,
            moderation=moderation,
        )
        references = [item for item in (image, image2, image3) if item is not None]
        if references or mask is not None:
            await self.run_edit(interaction, options, references, mask, private=private)
            return
        try:
            request = validate(options, self._default_model)
        except InvalidOption as error:
            # English: the core words what a model takes and knows no catalog (README,
            # Languages); a refusal per option and rule would have to be rebuilt here.
            await self._refuse(interaction, f"\u26a0\ufe0f {error.message}")
            return
        await self.run_request(interaction, request, private=private)

    async def run_edit(
        self,
        interaction: discord.Interaction,
        options: ImagineOptions,
        references: Sequence[AttachmentLike],
        mask: AttachmentLike | None,
        *,
        private: bool,
        parent: ResultLink | None = None,
    ) -> None:
        """Fetch and check the images, then run the edit like any request.

        The images are fetched before the acknowledgement when that is quick, so a refusal
        stays private; a slow download is acknowledged first (within Discord's 3 s), and a
        refusal found after it replaces the bot's reply.
        """
        if options.model is None:
            # No model named: the bot's default if it edits, else one that does.
            options = replace(options, model=edit_model(self._default_model))
        spec = CATALOG.get(options.model or self._default_model)
        if spec is not None and spec.edit is None:
            await self._refuse(
                interaction,
                self.messages(interaction).gettext(
                    "\u26a0\ufe0f `model`: {model} does not edit images. Models that do: {models}.",
                    model=spec.name,
                    models=", ".join(editing_models()),
                ),
            )
            return
        if spec is None:
            try:
                validate(options, self._default_model)
            except InvalidOption as error:
                await self._refuse(interaction, f"\u26a0\ufe0f {error.message}")
            return
        fetching = asyncio.ensure_future(self._fetcher.fetch(references, mask, spec))
        deferred = False
        done, _ = await asyncio.wait({fetching}, timeout=FETCH_BEFORE_ACK_S)
        if not done:
            await interaction.response.defer(thinking=True, ephemeral=private)
            deferred = True
        try:
            images, mask_image = await fetching
            request = validate(options, self._default_model, references=images, mask=mask_image)
        except (ReferenceRefused, InvalidOption) as error:
            await self._refuse(interaction, f"\u26a0\ufe0f {error.message}")
            return
        await self.run_request(
            interaction, request, private=private, deferred=deferred, parent=parent
        )

    async def open_remix(
        self, interaction: discord.Interaction, message: discord.Message, *, private: bool = False
    ) -> None:
        """The remix form for a message's images, or a private word when it has none."""
        model = edit_model(self._default_model)
        edit = CATALOG[model].edit
        assert edit is not None
        images = message_images(message, edit.max_images)
        tr = self.messages(interaction)
        if not images:
            await self._refuse(interaction, tr.gettext("This message has no image to remix."))
            return
        source = RemixSource(tuple(images), model, private)
        await interaction.response.send_modal(RemixModal(source, self._remix_submitted, tr))

    async def _remix_message(
        self, interaction: discord.Interaction, message: discord.Message
    ) -> None:
        await self.open_remix(interaction, message)

    async def _remix_submitted(
        self, interaction: discord.Interaction, source: RemixSource, prompt: str
    ) -> None:
        options = ImagineOptions(prompt=prompt, model=source.model)
        await self.run_edit(interaction, options, source.images, None, private=source.private)

    async def run_request(
        self,
        interaction: discord.Interaction,
        request: GenerationRequest,
        *,
        private: bool = False,
        parent: ResultLink | None = None,
        deferred: bool = False,
    ) -> None:
        """Reserve for the member who asked, then acknowledge, generate and deliver.

        /imagine and every action on a result (reroll, edited prompt) come here, so each is
        a generation of the member who asked, under their limits. Refusals are private.
        """
        tr = self.messages(interaction)
        requester = Requester(
            interaction.user.id,
            interaction.guild_id,
            interaction.channel_id,
            parent_channel_id=getattr(interaction.channel, "parent_id", None),
            role_ids=role_ids(interaction.user),
            age_restricted=_age_restricted(interaction.channel),
        )
        async with AsyncExitStack() as stack:
            try:
                generation = await stack.enter_async_context(
                    self._service.start(
                        request,
                        requester,
                        parent_id=parent.generation_id if parent else None,
                        private=private,
                    )
                )
            except LimitRefused as error:
                await self._refuse(interaction, refusal_message(error, tr))
                return
            except ShuttingDown:
                await self._refuse(
                    interaction,
                    tr.gettext(
                        "The bot is restarting and takes no new requests. Try again shortly."
                    ),
                )
                return
            except LedgerBusy:
                log.warning("reservation refused: the database is locked by another process")
                await self._refuse(
                    interaction,
                    tr.gettext(
                        "\u26a0\ufe0f The bot's usage log is busy right now, so nothing was "
                        "started and nothing was charged. Please try again in a few seconds."
                    ),
                )
                return
            await self._run(
                interaction, generation, private=private, parent=parent, deferred=deferred
            )

    async def _run(
        self,
        interaction: discord.Interaction,
        generation: Generation,
        *,
        private: bool,
        parent: ResultLink | None,
        deferred: bool,
    ) -> None:
        """Acknowledge, generate and deliver; every unexpected failure is answered here."""
        try:
            # The defer fixes who sees everything after it: decided here, before anything.
            if not deferred:
                await interaction.response.defer(thinking=True, ephemeral=private)
        except discord.HTTPException as error:
            await generation.fail(
                "not_acknowledged", f"Discord refused the defer: HTTP {error.status}"
            )
            return
        try:
            await self._generate_and_deliver(interaction, generation, parent)
        except asyncio.CancelledError:
            await asyncio.shield(self._interrupted(interaction, generation))
            raise
        except Exception as error:
            error_id = uuid.uuid4().hex[:8]
            log.error(
                "unhandled error error_id=%s request_id=%s user=%s guild=%s",
                error_id,
                generation.request_id,
                interaction.user.id,
                interaction.guild_id,
                exc_info=error,
            )
            await generation.fail("internal_error", f"error_id={error_id} {type(error).__name__}")
            tr = self.messages(interaction)
            charged = (
                tr.gettext(
                    "The image service had already made (and billed) the images, so the call "
                    "counts as spend, but not against your images."
                )
                if generation.billed
                else tr.gettext("Nothing was charged.")
            )
            await self._edit(
                interaction,
                tr.gettext(
                    "\u274c Something went wrong on the bot's side. {charged} "
                    "(error id `{error_id}`; a server admin can find it in the bot's log)",
                    charged=charged,
                    error_id=error_id,
                ),
            )

    async def _generate_and_deliver(
        self, interaction: discord.Interaction, generation: Generation, parent: ResultLink | None
    ) -> None:
        # A queue notice still in flight when the slot is granted must not land after the
        # images (it clears attachments): notices and the first upload share a lock.
        notices = asyncio.Lock()
        tr = self.messages(interaction)

        async def show_position(position: int) -> None:
            async with notices:
                if generation.phase is Phase.QUEUED:
                    await self._edit(interaction, queue_text(tr, position))

        try:
            result = await generation.call_upstream(on_position=show_position)
        except UpstreamError as error:
            await self._edit(interaction, f"\u274c {upstream_message(error, tr)}")
            if error.kind is ErrorKind.CONFIGURATION:
                log.error("CometAPI refused the bot's API key: check COMETAPI_KEY (%s)", error)
                await self._tell_owner(interaction, error)
            return
        async with notices:
            await self._deliver(interaction, generation, result, parent)

    async def _tell_owner(self, interaction: discord.Interaction, error: UpstreamError) -> None:
        client = interaction.client
        # English: the owner reads the bot's logs and settings, which are English too, and
        # no interaction of theirs says which language they read.
        if isinstance(client, TellsOwner):
            await client.tell_owner(
                f"\u26a0\ufe0f imagine-bot: CometAPI refused the bot's API key "
                f"(HTTP {error.status}). Every /imagine fails until COMETAPI_KEY is fixed. "
                "(This notice is sent at most once an hour.)"
            )

    async def _deliver(
        self,
        interaction: discord.Interaction,
        generation: Generation,
        result: GenerationResult,
        parent: ResultLink | None,
    ) -> None:
        request = generation.request
        tr = self.messages(interaction)
        try:
            # Verifying and re-encoding are CPU work: one worker thread for the whole list.
            fitted = await asyncio.to_thread(
                prepare_for_upload, result.images, interaction.filesize_limit
            )
        except CorruptImage as error:
            await generation.fail("corrupt_image", str(error))
            await self._edit(
                interaction,
                tr.gettext(
                    "\u274c The image service sent back a damaged image, so the bot did not "
                    "post it. It does not count against your images; please try again."
                ),
            )
            return
        except ImageTooLarge as error:
            await generation.fail("image_too_large", str(error))
            await self._edit(
                interaction,
                tr.gettext(
                    "\u274c The image is too large for Discord to accept, even re-encoded. "
                    "It does not count against your images."
                ),
            )
            return
        notes = sorted({image.note for image in fitted if image.note})
        embed = result_embed(
            tr,
            request,
            result,
            generation.elapsed_ms() / 1000,
            note="; ".join(notes) or None,
            parent=parent,
        )
        messages = pack_messages(fitted)
        generation.uploading()
        try:
            if interaction.is_expired():
                first = await self._deliver_to_channel(interaction, generation, embed, messages)
            else:
                first = await self._deliver_to_interaction(interaction, generation, embed, messages)
        except (discord.HTTPException, DeliveryImpossible) as error:
            detail = (
                f"Discord refused the images: HTTP {error.status}"
                if isinstance(error, discord.HTTPException)
                else str(error)
            )
            await generation.fail("delivery_failed", detail)
            received = generation.images_sent
            await self._tell_failed_delivery(interaction, received)
            return
        await generation.delivered(channel_id=first.channel.id, message_id=first.id)

    async def _tell_failed_delivery(self, interaction: discord.Interaction, received: int) -> None:
        tr = self.messages(interaction)
        if received:
            text = tr.gettext(
                "\u274c Discord accepted only {received} of the images. Only the images you "
                "received count against your allowance.",
                received=received,
            )
        else:
            text = tr.gettext(
                "\u274c The images were made but Discord would not accept them. "
                "They do not count against your allowance."
            )
        if received:
            await self._follow_up(interaction, text, ephemeral=True)
        else:
            # Discord refused the upload, so the message still holds no image to keep.
            await self._edit(interaction, text)

    async def _deliver_to_interaction(
        self,
        interaction: discord.Interaction,
        generation: Generation,
        embed: discord.Embed,
        messages: list[tuple[FittedImage, ...]],
    ) -> discord.Message:
        """Post the result on the interaction; return its first message."""
        model = generation.request.model
        first = 0
        result: discord.Message | None = None
        try:
            for index, batch in enumerate(messages):
                if index == 0:
                    result = await interaction.edit_original_response(
                        content=None,
                        embed=embed,
                        attachments=as_files(batch, model, first),
                        view=result_view(generation.row_id, self.messages(interaction)),
                        allowed_mentions=_NO_MENTIONS,
                    )
                else:
                    await interaction.followup.send(
                        files=as_files(batch, model, first),
                        allowed_mentions=_NO_MENTIONS,
                        wait=True,
                    )
                generation.sent(len(batch))
                first += len(batch)
        except discord.HTTPException as error:
            # 401/50027: the 15-minute interaction token ran out while the images were made.
            if error.status != 401:
                raise
            rest = await self._deliver_to_channel(
                interaction, generation, embed if result is None else None, messages[index:]
            )
            return result or rest
        assert result is not None
        return result

    async def _deliver_to_channel(
        self,
        interaction: discord.Interaction,
        generation: Generation,
        embed: discord.Embed | None,
        messages: list[tuple[FittedImage, ...]],
    ) -> discord.Message:
        """Post the result in the channel, mentioning only the requester; return its first."""
        channel = interaction.channel
        if not isinstance(channel, discord.abc.Messageable):
            raise DeliveryImpossible("the interaction expired and there is no channel to post in")
        user = interaction.user
        model = generation.request.model
        mention_only_requester = discord.AllowedMentions(
            everyone=False, roles=False, users=[user], replied_user=False
        )
        first = generation.images_sent
        tr = self.messages(interaction)
        posted: discord.Message | None = None
        for index, batch in enumerate(messages):
            if index == 0:
                posted = await channel.send(
                    content=tr.gettext(
                        "{mention}, your /imagine images are ready.", mention=user.mention
                    ),
                    embed=embed or discord.utils.MISSING,
                    view=result_view(generation.row_id, tr),
                    files=as_files(batch, model, first),
                    allowed_mentions=mention_only_requester,
                )
            else:
                await channel.send(
                    files=as_files(batch, model, first), allowed_mentions=_NO_MENTIONS
                )
            generation.sent(len(batch))
            first += len(batch)
        assert posted is not None
        return posted

    async def _interrupted(self, interaction: discord.Interaction, generation: Generation) -> None:
        tr = self.messages(interaction)
        if generation.billed:
            text = tr.gettext(
                "\u26a0\ufe0f The bot restarted while sending your images; some may not have "
                "arrived. Only the images you received count against your allowance."
            )
        else:
            text = tr.gettext(
                "\u26a0\ufe0f The bot restarted before your images were ready. "
                "They do not count against your allowance; please try again."
            )
        if generation.billed:
            # An upload may have landed without the bot knowing: never edit it away.
            await self._follow_up(interaction, text, ephemeral=generation.images_sent > 0)
        else:
            await self._edit(interaction, text)

    def messages(self, interaction: discord.Interaction) -> Messages:
        """The language to answer this member in (theirs, else the server's, else English)."""
        return messages_for(self._localizer, interaction)

    async def _refuse(self, interaction: discord.Interaction, text: str) -> None:
        if interaction.response.is_done():
            # Already acknowledged (a slow image download): the reply becomes the refusal.
            await self._edit(interaction, text)
        else:
            await answer(interaction, text)

    async def _edit(self, interaction: discord.Interaction, text: str) -> None:
        try:
            await interaction.edit_original_response(
                content=text, embed=None, attachments=[], allowed_mentions=_NO_MENTIONS
            )
        except discord.HTTPException as error:
            log.warning("could not update the user's message: HTTP %s", error.status)

    async def _follow_up(
        self, interaction: discord.Interaction, text: str, *, ephemeral: bool
    ) -> None:
        """A new message beside the result, so images the member received stay.

        Ephemeral only when the result is known to be posted: the first follow-up after a
        defer takes the deferred message's place and its visibility.
        """
        try:
            await interaction.followup.send(
                text, ephemeral=ephemeral, allowed_mentions=_NO_MENTIONS, wait=True
            )
        except discord.HTTPException as error:
            log.warning("could not tell the user about the delivery: HTTP %s", error.status)

    @imagine.autocomplete("size")
    async def _size_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[Choice[str]]:
        spec = CATALOG.get(interaction.namespace.model or "") or CATALOG[self._default_model]
        suggestions = suggest_sizes(spec, current, self.messages(interaction))
        return [Choice(name=name, value=value) for name, value in suggestions]

    @imagine.autocomplete("quality")
    async def _quality_autocomplete(
        self, interaction: discord.Interaction, current: str
    ) -> list[Choice[str]]:
        spec = CATALOG.get(interaction.namespace.model or "") or CATALOG[self._default_model]
        return [Choice(name=name, value=value) for name, value in suggest_qualities(spec, current)]
