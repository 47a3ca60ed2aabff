"""Actions on a result (reroll, edit the prompt, details, delete) and /history. Glue only.

A press is an interaction like any other: it is acknowledged within 3 s, every refusal is
private, and nothing is billed for a refused press. A reroll or an edited prompt is a new
generation of the member who pressed, under their limits, through the same path as /imagine.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import replace
from typing import Final

import discord
from discord import app_commands, ui
from discord.app_commands import Range
from discord.ext import commands

from bot.core.catalog import CATALOG, largest_size
from bot.core.service import GenerationService
from bot.core.validation import ImagineOptions, InvalidOption, validate
from bot.glue.cogs.imagine import ImagineCog
from bot.glue.errors import answer
from bot.glue.remix import message_images
from bot.glue.render import ResultLink, details_embed, history_embed, result_url
from bot.glue.result_view import ACTIONS_COG
from bot.glue.translator import messages_for
from bot.i18n import N_, Localizer, Messages
from bot.ledger.results import HISTORY_MAX, StoredGeneration, history, mark_deleted
from bot.ledger.results import stored_generation as read_generation

log = logging.getLogger(__name__)

# A modal's text input holds at most 4,000 characters (Discord's component limits).
MODAL_TEXT_MAX: Final = 4000
# /history's option names, listed for the catalog (see imagine.OPTION_NAMES).
OPTION_NAMES: Final = (N_("count"),)


def _can_moderate(interaction: discord.Interaction) -> bool:
    permissions = interaction.permissions
    return permissions.manage_messages or permissions.administrator


def _shown_size(message: discord.Message | None, stored: str) -> str:
    """The result's real size: its first image's, since `auto` says nothing of its shape."""
    if message is not None and message.attachments:
        first = message.attachments[0]
        if first.width and first.height:
            return f"{first.width}x{first.height}"
    return stored


class EditPromptModal(ui.Modal):
    """The prompt (and size and quality where the model has them), prefilled."""

    def __init__(
        self,
        actions: ResultActions,
        row: StoredGeneration,
        options: ImagineOptions,
        tr: Messages,
    ) -> None:
        # Unique per opening: discord.py keeps open modals by custom_id alone, and two
        # members may edit from the same result at once.
        super().__init__(
            title=tr.gettext("Edit the prompt"),
            custom_id=f"imagine:edit-form:{row.id}:{secrets.token_hex(4)}",
        )
        self._actions = actions
        self._row = row
        self._options = options
        spec = CATALOG[row.model]
        self.prompt: ui.TextInput[EditPromptModal] = ui.TextInput(
            label=tr.gettext("Prompt"),
            style=discord.TextStyle.paragraph,
            default=options.prompt,
            max_length=min(MODAL_TEXT_MAX, spec.prompt_limit),
        )
        self.add_item(self.prompt)
        self.size: ui.TextInput[EditPromptModal] | None = None
        self.quality: ui.TextInput[EditPromptModal] | None = None
        if len(spec.sizes) > 1 or spec.custom_sizes is not None:
            self.size = ui.TextInput(
                label=tr.gettext("Size"), default=options.size, required=False, max_length=20
            )
            self.add_item(self.size)
        if len(spec.qualities) > 1:
            self.quality = ui.TextInput(
                label=tr.gettext("Quality"), default=options.quality, required=False, max_length=20
            )
            self.add_item(self.quality)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Validate exactly as /imagine does, then generate for the member who submitted."""
        options = ImagineOptions(
            prompt=self.prompt.value,
            model=self._options.model,
            size=(self.size.value.strip() or None) if self.size else self._options.size,
            quality=(self.quality.value.strip() or None) if self.quality else self._options.quality,
            n=self._options.n,
            style=self._options.style,
            background=self._options.background,
            output_format=self._options.output_format,
            output_compression=self._options.output_compression,
        )
        await self._actions.generate_from(interaction, self._row, options)


class ResultActions(commands.Cog, name=ACTIONS_COG):
    """The buttons' handlers and /history."""

    def __init__(
        self,
        service: GenerationService,
        imagine: ImagineCog,
        default_model: str,
        localizer: Localizer,
    ) -> None:
        self._service = service
        self._imagine = imagine
        self._default_model = default_model
        self._localizer = localizer

    async def press(
        self, action: str, interaction: discord.Interaction, generation_id: int
    ) -> None:
        """One press of a result's button."""
        tr = messages_for(self._localizer, interaction)
        row = await read_generation(self._service.ledger.reader, generation_id)
        if row is None:
            await answer(interaction, tr.gettext("This result is no longer in the bot's log."))
            return
        if action == "details":
            await answer(interaction, embed=details_embed(tr, row))
        elif action == "delete":
            await self._delete(interaction, row)
        elif action == "remix":
            if interaction.message is None:
                await answer(interaction, tr.gettext("This result's message is gone."))
                return
            await self._imagine.open_remix(interaction, interaction.message, private=row.private)
        elif action == "larger":
            await self._larger(interaction, row)
        elif action in ("reroll", "edit") and row.kind == "edit":
            await answer(
                interaction,
                tr.gettext(
                    "An edit's images are not kept by the bot, so it cannot run again by itself: "
                    "use Remix on a result, or /imagine with the images."
                ),
            )
        elif action in ("reroll", "edit"):
            options = await self._options_of(interaction, row)
            if options is None:
                return
            if action == "reroll":
                await self.generate_from(interaction, row, options)
            elif len(options.prompt) > MODAL_TEXT_MAX:
                await answer(
                    interaction,
                    tr.gettext(
                        "This prompt is longer than a form can hold ({limit} characters): "
                        "use /imagine to change it.",
                        limit=tr.number(MODAL_TEXT_MAX),
                    ),
                )
            else:
                await interaction.response.send_modal(EditPromptModal(self, row, options, tr))
        else:
            await answer(interaction, tr.gettext("This button is not one the bot knows."))

    async def _options_of(
        self, interaction: discord.Interaction, row: StoredGeneration
    ) -> ImagineOptions | None:
        """The stored request, or None after saying privately why it cannot run again."""
        tr = messages_for(self._localizer, interaction)
        if row.model not in CATALOG:
            await answer(
                interaction,
                tr.gettext(
                    "The model {model} is no longer offered, so this cannot run again.",
                    model=row.model,
                ),
            )
            return None
        if row.options_json is None:
            await answer(
                interaction,
                tr.gettext(
                    "This result's request is not kept (an older result, or a server that keeps "
                    "no prompts). Use /imagine instead."
                ),
            )
            return None
        try:
            return ImagineOptions.from_json(row.options_json)
        except ValueError:
            log.warning("unreadable stored options generation=%s", row.id)
            await answer(
                interaction, tr.gettext("This result's request cannot be read back. Use /imagine.")
            )
            return None

    async def generate_from(
        self, interaction: discord.Interaction, row: StoredGeneration, options: ImagineOptions
    ) -> None:
        """A new generation from a result, billed to whoever asked for it."""
        try:
            request = validate(options, self._default_model)
        except InvalidOption as error:
            await answer(interaction, f"\u26a0\ufe0f {error.message}")
            return
        url = result_url(row)
        await self._imagine.run_request(
            interaction,
            request,
            private=row.private,
            parent=ResultLink(row.id, None if row.private else url),
        )

    async def _larger(self, interaction: discord.Interaction, row: StoredGeneration) -> None:
        """The result again at the model's largest size of its shape, from its own image."""
        tr = messages_for(self._localizer, interaction)
        spec = CATALOG.get(row.model)
        if spec is None or spec.edit is None:
            await answer(
                interaction,
                tr.gettext(
                    "{model} cannot render an image again larger: only models that edit can.",
                    model=row.model,
                ),
            )
            return
        images = message_images(interaction.message, 1) if interaction.message else []
        current = _shown_size(interaction.message, row.size)
        target = largest_size(spec.sizes, current)
        if target is None or target == current:
            await answer(
                interaction,
                tr.gettext(
                    "This result is already the largest size {model} makes.", model=row.model
                ),
            )
            return
        options = await self._options_of(interaction, row) if images else None
        if not images:
            await answer(
                interaction, tr.gettext("This result's image is no longer there to enlarge.")
            )
            return
        if options is None:
            return
        larger = replace(
            options,
            size=target,
            n=1,
            # Keep the picture as it is where the model can be told to (OpenAI's schema).
            input_fidelity="high" if spec.edit.takes_input_fidelity else None,
        )
        await self._imagine.run_edit(
            interaction,
            larger,
            images,
            None,
            private=row.private,
            parent=ResultLink(row.id, None if row.private else result_url(row)),
        )

    async def _delete(self, interaction: discord.Interaction, row: StoredGeneration) -> None:
        tr = messages_for(self._localizer, interaction)
        if interaction.user.id != row.user_id and not _can_moderate(interaction):
            await answer(
                interaction,
                tr.gettext(
                    "Only the member who asked for this result, or a member with Manage "
                    "Messages, can delete it."
                ),
            )
            return
        # DEFERRED_UPDATE: for a component, the original response is the result message
        # itself, which works for private results too.
        await interaction.response.defer()
        try:
            await interaction.delete_original_response()
        except discord.NotFound:
            pass
        except discord.HTTPException as error:
            await answer(
                interaction,
                tr.gettext(
                    "Discord would not delete the message (HTTP {status}).", status=error.status
                ),
            )
            return
        await mark_deleted(
            self._service.ledger.connection, row.id, interaction.user.id, self._service.ledger.now()
        )
        log.info("result deleted generation=%s by=%s", row.id, interaction.user.id)

    @app_commands.command(
        name=N_("history"), description=N_("Your latest generations, only to you")
    )
    # The catalog cannot fill in a description: HISTORY_MAX is written out (a test checks).
    @app_commands.describe(count=N_("How many (default 10, at most 25)"))
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.allowed_installs(guilds=True, users=False)
    async def history_command(
        self, interaction: discord.Interaction, count: Range[int, 1, HISTORY_MAX] = 10
    ) -> None:
        """One's own last generations with jump links; nothing of other members."""
        rows = await history(self._service.ledger.reader, interaction.user.id, count)
        await answer(
            interaction, embed=history_embed(messages_for(self._localizer, interaction), rows)
        )
