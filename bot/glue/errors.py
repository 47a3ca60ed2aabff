"""The command tree's error handler: every failure answered, every surprise logged with an id."""

from __future__ import annotations

import logging
import uuid

import discord
from discord import app_commands

from bot.glue.translator import tree_messages
from bot.i18n import SOURCE_LANGUAGE, Messages

log = logging.getLogger(__name__)


async def answer(
    interaction: discord.Interaction,
    text: str | None = None,
    *,
    embed: discord.Embed | None = None,
    ephemeral: bool = True,
) -> None:
    """Reply however the interaction still allows: first response, or a follow-up."""
    mentions = discord.AllowedMentions.none()
    # MISSING, not None, is discord.py's "no embed" for both calls.
    shown = embed if embed is not None else discord.utils.MISSING
    if interaction.response.is_done():
        await interaction.followup.send(
            text or "", embed=shown, ephemeral=ephemeral, allowed_mentions=mentions
        )
    else:
        await interaction.response.send_message(
            text, embed=shown, ephemeral=ephemeral, allowed_mentions=mentions
        )


class ImagineTree(app_commands.CommandTree[discord.Client]):
    """A tree whose on_error never leaves a user looking at "thinking…"."""

    async def on_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Map known errors to short messages; log everything else with an error id."""
        # The catalogs come with the tree's translator, installed at start.
        tr = tree_messages(interaction) or Messages(SOURCE_LANGUAGE)
        if isinstance(error, app_commands.CheckFailure):
            text = tr.gettext("You can't use this command here.")
            if isinstance(error, app_commands.MissingPermissions):
                text = tr.gettext(
                    "You need the Manage Server permission for this command. "
                    "/usage shows your own numbers."
                )
            elif isinstance(error, app_commands.NoPrivateMessage):
                text = tr.gettext("This command works only in a server.")
            await self._safe_answer(interaction, text)
            return
        if isinstance(error, app_commands.TransformerError):
            await self._safe_answer(
                interaction,
                tr.gettext("`{value}` is not a valid value here.", value=error.value),
            )
            return
        error_id = uuid.uuid4().hex[:8]
        command = interaction.command.qualified_name if interaction.command else "?"
        log.error(
            "unhandled error error_id=%s command=%s user=%s guild=%s",
            error_id,
            command,
            interaction.user.id,
            interaction.guild_id,
            exc_info=error,
        )
        await self._safe_answer(
            interaction,
            tr.gettext(
                "Something went wrong on the bot's side. Nothing was charged. "
                "(error id `{error_id}`; a server admin can find it in the bot's log)",
                error_id=error_id,
            ),
        )

    async def _safe_answer(self, interaction: discord.Interaction, text: str) -> None:
        try:
            await answer(interaction, text)
        except discord.HTTPException:
            log.warning("could not tell the user about an error (interaction gone)")
