"""Reference images for edits: fetched from Discord's CDN, checked before anything is billed."""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Final, Protocol, TypeVar

import aiohttp
from PIL import Image
from yarl import URL

from bot.core.images import ImageFormat, NotAnImage, sniff_format

# Hosts Discord serves attachments and proxied embed images from; pass them as `allowed_hosts`
# so a crafted embed URL cannot make the bot fetch from anywhere else.
DISCORD_CDN_HOSTS: Final = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
MAX_REDIRECTS: Final = 3
_CHUNK: Final = 64 * 1024
# File names and content types of what may be an image, to pick a message's references. The
# format itself is always sniffed from the bytes after download; these only choose candidates.
_IMAGE_SUFFIXES: Final = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})


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


class ReferenceRefused(ValueError):
    """An attachment that cannot be used; the message names it and the rule it broke."""

    def __init__(self, name: str, rule: str) -> None:
        self.name = name
        self.rule = rule
        self.message = f"`{_shown(name)}` {rule}"
        super().__init__(self.message)


def _shown(name: str, limit: int = 60) -> str:
    flat = " ".join(name.split()).replace("`", "'")
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def _megabytes(count: int) -> str:
    return f"{count / 1_000_000:g} MB"


class AttachmentLike(Protocol):
    """What a discord.Attachment (or an embed's image, as AttachmentInfo) tells about a file."""

    @property
    def url(self) -> str: ...
    @property
    def filename(self) -> str: ...
    @property
    def content_type(self) -> str | None: ...
    @property
    def size(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """An attachment's or embed image's metadata, as the glue reads it from a message."""

    url: str
    filename: str
    content_type: str | None = None
    size: int | None = None

    @classmethod
    def from_url(cls, url: str, content_type: str | None = None) -> AttachmentInfo:
        """An embed image, which has only a URL: its name is the URL's last path segment."""
        name = PurePosixPath(URL(url).path).name or "image"
        return cls(url=url, filename=name, content_type=content_type)


_Item = TypeVar("_Item", bound=AttachmentLike)


def looks_like_image(item: AttachmentLike) -> bool:
    """Whether the metadata says image (content type, else the file name's suffix)."""
    if item.content_type:
        return item.content_type.split(";")[0].strip().lower().startswith("image/")
    return PurePosixPath(item.filename.lower()).suffix in _IMAGE_SUFFIXES


def pick_references(items: Iterable[_Item], limit: int) -> list[_Item]:
    """The first `limit` of a message's images, in message order, to use as references.

    Files that are plainly not images (a .txt, a video) are skipped; whether a picked file
    really is an allowed image is decided after download, from its bytes.
    """
    picked: list[_Item] = []
    for item in items:
        if len(picked) >= limit:
            break
        if looks_like_image(item):
            picked.append(item)
    return picked


def _check_url(url: URL, name: str, allowed_hosts: frozenset[str] | None) -> None:
    if url.scheme not in ("http", "https") or not url.host:
        raise ReferenceRefused(name, "is not a link the bot can download (http or https only)")
    if allowed_hosts is not None and url.host.lower() not in allowed_hosts:
        raise ReferenceRefused(name, f"is not on Discord's CDN ({url.host})")


def read_reference(name: str, data: bytes) -> ReferenceImage:
    """Sniff and measure downloaded bytes; refuses what is not a readable image."""
    try:
        image_format = sniff_format(data)
    except NotAnImage:
        raise ReferenceRefused(name, "is not an image") from None
    try:
        with warnings.catch_warnings():
            # Only the header is read; a huge declared size is fine until it is decoded.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise ReferenceRefused(name, "is damaged: it could not be read as an image") from None
    return ReferenceImage(name=name, data=data, format=image_format, width=width, height=height)


async def fetch_reference(
    session: aiohttp.ClientSession,
    url: str,
    name: str,
    *,
    max_bytes: int,
    timeout_s: float,
    allowed_hosts: frozenset[str] | None = None,
) -> ReferenceImage:
    """Download one attachment, within `max_bytes` and `timeout_s` in all, and read it.

    Only http(s); redirects are followed by hand (up to MAX_REDIRECTS), each hop checked like
    the first. The size cap is enforced on a declared Content-Length and while streaming, so
    an oversized file is never held whole. Every failure is a ReferenceRefused naming `name`.
    """
    target = URL(url)
    _check_url(target, name, allowed_hosts)
    too_large = f"is larger than {_megabytes(max_bytes)}"
    gone = "could not be downloaded (it may have been deleted)"
    try:
        async with asyncio.timeout(timeout_s):
            for _hop in range(MAX_REDIRECTS + 1):
                async with session.get(target, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308):
                        location = response.headers.get("Location")
                        if not location:
                            raise ReferenceRefused(name, gone)
                        target = target.join(URL(location))
                        _check_url(target, name, allowed_hosts)
                        continue
                    if response.status != 200:
                        raise ReferenceRefused(name, gone)
                    declared = response.content_length
                    if declared is not None and declared > max_bytes:
                        raise ReferenceRefused(name, too_large)
                    data = bytearray()
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        data += chunk
                        if len(data) > max_bytes:
                            raise ReferenceRefused(name, too_large)
                    break
            else:
                raise ReferenceRefused(name, f"{gone}: too many redirects")
    except ReferenceRefused:
        raise
    except TimeoutError:
        raise ReferenceRefused(
            name, f"took too long to download (over {timeout_s:g} seconds)"
        ) from None
    except (aiohttp.ClientError, ValueError):
        raise ReferenceRefused(name, gone) from None
    return read_reference(name, bytes(data))
