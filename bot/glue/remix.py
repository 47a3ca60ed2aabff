"""Reference images from Discord: the command's attachments, a message's images, the form.

Fetching is bounded by the catalog's per-image cap and a time limit; everything is checked
before anything is reserved or sent upstream, and every refusal names the attachment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import discord
from discord import ui

from bot.core.catalog import CATALOG, MASK_MAX_BYTES, ModelSpec, editing_models
from bot.core.references import (
    DISCORD_CDN_HOSTS,
    AttachmentInfo,
    AttachmentLike,
    ReferenceImage,
    ReferenceRefused,
    fetch_reference,
    pick_references,
)
from bot.i18n import Messages

FETCH_TIMEOUT_S: Final = 20.0
# Discord's own limit on a text input's value (component reference).
_PROMPT_INPUT_MAX: Final = 4000


class ReferenceFetcher:
    """Downloads members' images with the process's one session, from Discord's CDN only."""

    def __init__(self, session: aiohttp.ClientSession, discord_api_base_url: str) -> None:
        self._session = session
        host = urlsplit(discord_api_base_url).hostname
        # A REST proxy or a test double serves attachments from its own host.
        self._hosts: frozenset[str] = DISCORD_CDN_HOSTS | ({host} if host else frozenset())

    async def fetch(
        self, items: Sequence[AttachmentLike], mask: AttachmentLike | None, spec: ModelSpec
    ) -> tuple[list[ReferenceImage], ReferenceImage | None]:
        """Fetch the references and the mask at once; a ReferenceRefused names the bad one."""
        edit = spec.edit
        per_image = edit.max_bytes if edit else MASK_MAX_BYTES
        mask_cap = edit.mask.max_bytes if edit and edit.mask else MASK_MAX_BYTES
        jobs = [self._one(item, per_image) for item in items]
        if mask is not None:
            jobs.append(self._one(mask, mask_cap))
        fetched = await asyncio.gather(*jobs)
        if mask is None:
            return list(fetched), None
        return list(fetched[:-1]), fetched[-1]

    async def _one(self, item: AttachmentLike, cap: int) -> ReferenceImage:
        # The declared size refuses at once what the download would refuse later.
        if item.size is not None and item.size > cap:
            raise ReferenceRefused(item.filename, f"is larger than {cap // 1_000_000} MB")
        return await fetch_reference(
            self._session,
            item.url,
            item.filename,
            max_bytes=cap,
            timeout_s=FETCH_TIMEOUT_S,
            allowed_hosts=self._hosts,
        )


# CometAPI's image-editing page recommends it for edits
# (https://apidoc.cometapi.com/api/image/openai/image-editing).
RECOMMENDED_EDIT_MODEL: Final = "gpt-image-2"


def edit_model(default_model: str) -> str:
    """The model an edit with no model named uses: the default if it edits, else CometAPI's."""
    if CATALOG[default_model].edit is not None:
        return default_model
    editing = editing_models()
    return RECOMMENDED_EDIT_MODEL if RECOMMENDED_EDIT_MODEL in editing else editing[0]


def message_images(message: discord.Message, limit: int) -> list[AttachmentLike]:
    """A message's images to use as references: attachments, then embed images, in order."""
    items: list[AttachmentLike] = [*message.attachments]
    for embed in message.embeds:
        for media in (embed.image, embed.thumbnail):
            if media.url and not any(media.url == getattr(i, "url", None) for i in items):
                items.append(AttachmentInfo.from_url(media.url))
    return pick_references(items, limit)


RemixCallback = Callable[[discord.Interaction, "RemixSource", str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RemixSource:
    """What a remix form starts from: the message's images and the model to use."""

    images: tuple[AttachmentLike, ...]
    model: str
    private: bool = False
    """Whether the remix stays with the requester (a private result's remix does)."""


class RemixModal(ui.Modal):
    """The prompt for a remix of a message's images."""

    def __init__(self, source: RemixSource, on_submit: RemixCallback, tr: Messages) -> None:
        super().__init__(title=tr.gettext("Remix with imagine"))
        self._source = source
        self._callback = on_submit
        limit = min(_PROMPT_INPUT_MAX, CATALOG[source.model].prompt_limit)
        self.prompt: ui.TextInput[RemixModal] = ui.TextInput(
            label=tr.gettext("What to make of the image"),
            style=discord.TextStyle.paragraph,
            placeholder=tr.gettext("e.g. as a watercolour"),
            max_length=limit,
        )
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Hand the prompt and the images to the /imagine path."""
        await self._callback(interaction, self._source, self.prompt.value)
