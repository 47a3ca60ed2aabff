"""Image bytes: decoding base64, recognising formats, naming files."""

from __future__ import annotations

import binascii
import io
from dataclasses import dataclass
from typing import Final

from PIL import Image


class NotAnImage(ValueError):
    """Bytes that are not an image format Discord can show."""


@dataclass(frozen=True, slots=True)
class ImageFormat:
    """A format Discord displays inline, and the file extension it is attached with."""

    name: str
    extension: str


PNG: Final = ImageFormat("png", "png")
JPEG: Final = ImageFormat("jpeg", "jpg")
WEBP: Final = ImageFormat("webp", "webp")
GIF: Final = ImageFormat("gif", "gif")


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


# Base64 characters decoded per call (a multiple of 4), about 1 ms of work. The decoder holds
# the GIL for a whole call, so one call for a 4 MiB image would keep the event loop's thread
# waiting 20 ms or more; between calls the GIL can go to it.
_DECODE_PIECE: Final = 256 * 1024


def decode_b64_image(text: str | bytes | memoryview) -> bytes:
    """Decode an API's b64_json field strictly, so corrupt data fails here and not in Discord.

    Exactly what b64decode(validate=True) accepts, without its copy of the text into bytes.
    """
    try:
        if len(text) <= 2 * _DECODE_PIECE:
            return binascii.a2b_base64(text, strict_mode=True)
        view = memoryview(text.encode("ascii") if isinstance(text, str) else text)
        # Every piece but the last is whole groups of 4 data characters, which decode on their
        # own; the last (one to two pieces long) holds any padding and is checked as strictly.
        last = (len(view) // _DECODE_PIECE - 1) * _DECODE_PIECE
        parts = []
        for start in range(0, last, _DECODE_PIECE):
            piece = view[start : start + _DECODE_PIECE]
            if piece[-1] == ord("="):
                raise binascii.Error("padding before the end")
            parts.append(binascii.a2b_base64(piece, strict_mode=True))
        parts.append(binascii.a2b_base64(view[last:], strict_mode=True))
        return b"".join(parts)
    except (binascii.Error, ValueError) as error:
        raise NotAnImage("the base64 image data does not decode") from error


@dataclass(frozen=True, slots=True)
class FittedImage:
    """An image that fits an upload limit, and what was done to make it fit."""

    data: bytes
    format: ImageFormat
    note: str | None


# Stepped quality first (keeps every pixel), then smaller sizes; WebP keeps transparency.
_QUALITY_STEPS: Final = (90, 80, 70, 60)
_SCALE_STEP: Final = 0.75
_MIN_EDGE: Final = 256


def _encode_webp(image: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=quality, method=4)
    return out.getvalue()


def fit_to_limit(data: bytes, image_format: ImageFormat, limit: int) -> FittedImage:
    """Return the image unchanged when it fits, else re-encoded (then downscaled) until it does.

    CPU-heavy: run it in a thread.
    """
    if len(data) <= limit:
        return FittedImage(data, image_format, None)
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        image = opened.convert("RGBA" if "A" in opened.getbands() else "RGB")
    for quality in _QUALITY_STEPS:
        encoded = _encode_webp(image, quality)
        if len(encoded) <= limit:
            return FittedImage(
                encoded, WEBP, f"re-encoded as WebP (quality {quality}) to fit Discord's limit"
            )
    while min(image.size) > _MIN_EDGE:
        width, height = (max(1, int(side * _SCALE_STEP)) for side in image.size)
        image = image.resize((width, height), Image.Resampling.LANCZOS)
        encoded = _encode_webp(image, _QUALITY_STEPS[-1])
        if len(encoded) <= limit:
            return FittedImage(
                encoded, WEBP, f"re-encoded as WebP and scaled to {width}x{height} to fit"
            )
    raise NotAnImage("the image cannot be made small enough for Discord")
