"""The gettext catalogs in Discord: command localizations, and each reader's language.

Discord asks nothing at run time for command names: the bot sends every translation with
the commands at sync, and clients show the one of their own language. Messages are chosen
per interaction: the member's locale, then the server's, then English.
"""

from __future__ import annotations

import discord
from discord import app_commands

from bot.i18n import SOURCE_LANGUAGE, Localizer, Messages, language_of


class CatalogTranslator(app_commands.Translator):
    """discord.py's translator over the bot's catalogs (names, descriptions, choices)."""

    def __init__(self, localizer: Localizer) -> None:
        self.localizer = localizer

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        """The catalog's translation, or None to leave Discord the English source."""
        language = language_of(locale.value)
        if language is None or language == SOURCE_LANGUAGE:
            return None
        return self.localizer.messages(language).lookup(string.message)


def messages_for(localizer: Localizer, interaction: discord.Interaction) -> Messages:
    """The language to answer `interaction` in: the member's, the server's, or English."""
    server = interaction.guild_locale
    return localizer.choose(interaction.locale.value, server.value if server else None)


def tree_messages(interaction: discord.Interaction) -> Messages | None:
    """The reader's messages through the command tree's translator, where no cog is at hand.

    The tree's error handler and a button that lost its cog have only the interaction; the
    catalogs they need are the translator's, installed on the tree at start.
    """
    tree = getattr(interaction.client, "tree", None)
    translator = getattr(tree, "translator", None)
    if isinstance(translator, CatalogTranslator):
        return messages_for(translator.localizer, interaction)
    return None
