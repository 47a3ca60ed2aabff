"""The buttons under every result: reroll, edit the prompt, remix, larger, details, delete.

Each button is a discord.py `DynamicItem` whose custom_id carries the generation's id, so a
press works after a restart and weeks later with no view kept in memory: the id is all the
handler needs, and it reads the rest from the ledger.

A result message is posted once and seen by everyone in the channel, so its labels are in
the language of whoever asked for the generation; other readers see that language (the
answers to their own presses are in theirs). Discord has no per-reader button labels.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Final, Protocol, runtime_checkable

import discord
from discord import ui

from bot.glue.translator import tree_messages
from bot.i18n import N_, Messages

PREFIX: Final = "imagine"
ACTIONS_COG: Final = "ResultActions"


@runtime_checkable
class ResultActionHandler(Protocol):
    """What the buttons call; the actions cog implements it."""

    async def press(
        self, action: str, interaction: discord.Interaction, generation_id: int
    ) -> None:
        """Handle `action` on the result of `generation_id`."""


class _ResultButton(ui.DynamicItem[ui.Button[ui.View]], template=r"imagine:x:(?P<id>[0-9]{1,20})"):
    """One action on one result; subclasses name the action and how it looks."""

    action: ClassVar[str] = "x"
    emoji: ClassVar[str] = ""
    label: ClassVar[str] = ""
    style: ClassVar[discord.ButtonStyle] = discord.ButtonStyle.secondary

    def __init__(self, generation_id: int, tr: Messages | None = None) -> None:
        # A press rebuilds the button without a language: only its custom_id matters then.
        super().__init__(
            ui.Button(
                style=self.style,
                label=tr.gettext(self.label) if tr else self.label,
                emoji=self.emoji,
                custom_id=f"{PREFIX}:{self.action}:{generation_id}",
            )
        )
        self.generation_id = generation_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction,
        item: ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> Any:
        """Rebuild the button from a press: the id in the custom_id is all it needs."""
        return cls(int(match["id"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        """Hand the press to the actions cog."""
        client = interaction.client
        handler = client.get_cog(ACTIONS_COG) if hasattr(client, "get_cog") else None
        if not isinstance(handler, ResultActionHandler):
            text = N_("This button cannot be used right now.")
            tr = tree_messages(interaction)
            await interaction.response.send_message(
                tr.gettext(text) if tr else text, ephemeral=True
            )
            return
        await handler.press(self.action, interaction, self.generation_id)


class RerollButton(_ResultButton, template=r"imagine:reroll:(?P<id>[0-9]{1,20})"):
    """🔁 The same request again, for whoever presses it."""

    action = "reroll"
    emoji = "\U0001f501"
    label = N_("Reroll")


class EditButton(_ResultButton, template=r"imagine:edit:(?P<id>[0-9]{1,20})"):
    """✏️ A form prefilled with the prompt, then a new generation."""

    action = "edit"
    emoji = "\u270f\ufe0f"
    label = N_("Edit prompt")


class LargerButton(_ResultButton, template=r"imagine:larger:(?P<id>[0-9]{1,20})"):
    """The result rendered again at the model's largest size, through the edit route."""

    action = "larger"
    emoji = "\u2b06\ufe0f"
    label = N_("Larger")


class DetailsButton(_ResultButton, template=r"imagine:details:(?P<id>[0-9]{1,20})"):
    """Details: everything about the generation, privately."""

    action = "details"
    emoji = "\u2139\ufe0f"
    label = N_("Details")


class RemixButton(_ResultButton, template=r"imagine:remix:(?P<id>[0-9]{1,20})"):
    """A remix form with this result's images as the references."""

    action = "remix"
    emoji = "\U0001f3a8"
    label = N_("Remix")


class DeleteButton(_ResultButton, template=r"imagine:delete:(?P<id>[0-9]{1,20})"):
    """🗑️ Remove the result message (the requester or a moderator)."""

    action = "delete"
    emoji = "\U0001f5d1\ufe0f"
    label = N_("Delete")
    style = discord.ButtonStyle.danger


BUTTONS: Final = (
    RerollButton,
    EditButton,
    RemixButton,
    LargerButton,
    DetailsButton,
    DeleteButton,
)


def result_view(generation_id: int, tr: Messages) -> ui.View:
    """The buttons for a result (discord.py lays them out in rows of 5); nothing is kept.

    `tr` is the requester's language (see the module's docstring).
    """
    view = ui.View(timeout=None)
    for button in BUTTONS:
        view.add_item(button(generation_id, tr))
    return view
