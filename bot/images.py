"""Image bytes: decoding base64, recognising formats, naming files."""

from __future__ import annotations

import binascii
from base64 import b64decode
from dataclasses import dataclass
from typing import Final


class NotAnImage(ValueError):
    """Bytes that are not an image format Discord can show."""


@dataclass(frozen=True, slots=True)
class ImageFormat:
    """A format Discord displays inline, with its MIME type and file extension."""

    name: str
    mime: str
    extension: str


PNG: Final = ImageFormat("png", "image/png", "png")
JPEG: Final = ImageFormat("jpeg", "image/jpeg", "jpg")
WEBP: Final = ImageFormat("webp", "image/webp", "webp")
GIF: Final = ImageFormat("gif", "image/gif", "gif")


def sniff_format(data: bytes | bytearray | memoryview) -> ImageFormat:
    """The format the magic bytes say, or NotAnImage; headers and file names can lie."""
    head = bytes(data[:12])
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return GIF
    raise NotAnImage("the bytes are not a PNG, JPEG, WebP or GIF image")


def decode_b64_image(text: str) -> bytes:
    """Decode an API's b64_json field strictly, so corrupt data fails here and not in Discord."""
    try:
        return b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise NotAnImage("the base64 image data does not decode") from error
