"""Reference images for edits: fetched from Discord's CDN, checked before anything is billed."""

from __future__ import annotations

from dataclasses import dataclass

from bot.core.images import ImageFormat


@dataclass(frozen=True, slots=True)
class ReferenceImage:
    """One image (or mask) a member gave, fetched and checked: its bytes are what is sent."""

    name: str
    """The attachment's file name as the member sees it (for refusals that name it)."""
    data: bytes
    format: ImageFormat
    """Sniffed from the bytes, never from the name or the content type."""
    width: int
    height: int
