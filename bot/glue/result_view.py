"""The buttons under every result: reroll, edit the prompt, remix, larger, details, delete.

Each button is a discord.py `DynamicItem` whose custom_id carries the generation's id, so a
press works after a restart and weeks later with no view kept in memory: the id is all the
handler needs, and it reads the rest from the ledger.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Final, Protocol, runtime_checkable

import discord
from discord import ui

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

    def __init__(self, generation_id: int) -> None:
        super().__init__(
            ui.Button(
                style=self.style,
                label=self.label,
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
            await interaction.response.send_message(
                "This button cannot be used right now.", ephemeral=True
            )
            return
        await handler.press(self.action, interaction, self.generation_id)


class RerollButton(_ResultButton, template=r"imagine:reroll:(?P<id>[0-9]{1,20})"):
    """🔁 The same request again, for whoever presses it."""

    action = "reroll"
    emoji = "\U0001f501"
    label = "Reroll"


class EditButton(_ResultButton, template=r"imagine:edit:(?P<id>[0-9]{1,20})"):
    """✏️ A form prefilled with the prompt, then a new generation."""

    action = "edit"
    emoji = "\u270f\ufe0f"
    label = "Edit prompt"


class LargerButton(_ResultButton, template=r"imagine:larger:(?P<id>[0-9]{1,20})"):
    """The result rendered again at the model's largest size, through the edit route."""

    action = "larger"
    emoji = "\u2b06\ufe0f"
    label = "Larger"


class DetailsButton(_ResultButton, template=r"imagine:details:(?P<id>[0-9]{1,20})"):
    """Details: everything about the generation, privately."""

    action = "details"
    emoji = "\u2139\ufe0f"
    label = "Details"


class RemixButton(_ResultButton, template=r"imagine:remix:(?P<id>[0-9]{1,20})"):
    """A remix form with this result's images as the references."""

    action = "remix"
    emoji = "\U0001f3a8"
    label = "Remix"


class DeleteButton(_ResultButton, template=r"imagine:delete:(?P<id>[0-9]{1,20})"):
    """🗑️ Remove the result message (the requester or a moderator)."""

    action = "delete"
    emoji = "\U0001f5d1\ufe0f"
    label = "Delete"
    style = discord.ButtonStyle.danger


BUTTONS: Final = (
    RerollButton,
    EditButton,
    RemixButton,
    LargerButton,
    DetailsButton,
    DeleteButton,
)


def result_view(generation_id: int) -> ui.View:
    """The buttons for a result (discord.py lays them out in rows of 5); nothing is kept."""
    view = ui.View(timeout=None)
    for button in BUTTONS:
        view.add_item(button(generation_id))
    return view
