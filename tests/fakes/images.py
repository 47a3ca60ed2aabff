"""Real, decodable image bytes for tests, distinct per ``seed``.

Every factory is deterministic: the same arguments give the same bytes, and different seeds give
different bytes, so a test can tell which generated image ended up in which Discord attachment.
"""

from __future__ import annotations

import io
import math
import random
from typing import Final, Literal

from PIL import Image, ImageDraw

ImageFormat = Literal["png", "jpeg", "webp", "gif"]

# Pillow's format names; "jpg" is accepted because humans and file extensions use it.
_PIL_FORMAT: Final[dict[str, str]] = {
    "png": "PNG",
    "jpeg": "JPEG",
    "jpg": "JPEG",
    "webp": "WEBP",
    "gif": "GIF",
}

MIME_TYPES: Final[dict[str, str]] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
}

# WebP cannot encode anything larger than this on either side.
_WEBP_MAX_SIDE: Final = 16383


def _normalise(fmt: str) -> str:
    key = fmt.lower().lstrip(".")
    if key not in _PIL_FORMAT:
        raise ValueError(f"unsupported image format {fmt!r}; use one of {sorted(_PIL_FORMAT)}")
    return "jpeg" if key == "jpg" else key


def _pattern(width: int, height: int, seed: int, mode: str) -> Image.Image:
    """A cheap-to-compress picture whose pixels depend on ``seed``.

    Flat rectangles keep files small at any size; the seed is also stamped into the first pixels
    so two seeds can never produce identical pixel data, even if the rectangles happened to match.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    rng = random.Random(seed)

    def colour() -> tuple[int, ...]:
        rgb = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        # Alpha stays well away from fully transparent so the picture remains visible.
        return (*rgb, rng.randrange(64, 256)) if mode == "RGBA" else rgb

    img = Image.new(mode, (width, height), colour())
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, x1 = sorted((rng.randrange(width), rng.randrange(width)))
        y0, y1 = sorted((rng.randrange(height), rng.randrange(height)))
        draw.rectangle((x0, y0, x1, y1), fill=colour())
    for i, byte in enumerate(seed.to_bytes(8, "big", signed=True)):
        if i >= width * height:
            break
        px = (byte, 255 - byte, (byte * 7) % 256)
        img.putpixel((i % width, i // width), (*px, 255) if mode == "RGBA" else px)
    return img


def _encode(img: Image.Image, fmt: str, **params: int | bool) -> bytes:
    key = _normalise(fmt)
    if key == "jpeg" and img.mode != "RGB":
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=_PIL_FORMAT[key], **params)
    return buf.getvalue()


def make_image(fmt: str, width: int = 64, height: int = 64, seed: int = 0) -> bytes:
    """An opaque ``fmt`` image (png, jpeg/jpg, webp or gif) of ``width`` x ``height``."""
    return _encode(_pattern(width, height, seed, "RGB"), fmt)


def make_png(width: int = 64, height: int = 64, seed: int = 0) -> bytes:
    return make_image("png", width, height, seed)


def make_jpeg(width: int = 64, height: int = 64, seed: int = 0) -> bytes:
    return make_image("jpeg", width, height, seed)


def make_webp(width: int = 64, height: int = 64, seed: int = 0) -> bytes:
    return make_image("webp", width, height, seed)


def make_transparent_png(width: int = 64, height: int = 64, seed: int = 0) -> bytes:
    """An RGBA PNG with a fully transparent border, like a ``background: transparent`` result."""
    img = _pattern(width, height, seed, "RGBA")
    # A transparent frame guarantees the alpha channel is really used, so code that flattens
    # or drops alpha is visible to a test.
    draw = ImageDraw.Draw(img)
    border = max(1, min(width, height) // 8)
    for box in (
        (0, 0, width - 1, border - 1),
        (0, height - border, width - 1, height - 1),
        (0, 0, border - 1, height - 1),
        (width - border, 0, width - 1, height - 1),
    ):
        draw.rectangle(box, fill=(0, 0, 0, 0))
    return _encode(img, "png")


def make_transparent_webp(width: int = 64, height: int = 64, seed: int = 0) -> bytes:
    img = Image.open(io.BytesIO(make_transparent_png(width, height, seed)))
    return _encode(img, "webp", lossless=True)


def _noise(width: int, height: int, seed: int) -> Image.Image:
    # randbytes + frombytes is orders of magnitude faster than setting pixels one by one.
    data = random.Random(seed).randbytes(width * height * 3)
    return Image.frombytes("RGB", (width, height), data)


def _dims_for_pixels(pixels: int, max_side: int | None = None) -> tuple[int, int]:
    pixels = max(pixels, 1)
    width = max(1, math.isqrt(pixels))
    if max_side is not None:
        width = min(width, max_side)
    height = max(1, math.ceil(pixels / width))
    if max_side is not None and height > max_side:
        raise ValueError(f"{pixels} pixels do not fit in {max_side}x{max_side}")
    return width, height


def _encode_noise(fmt: str, pixels: int, seed: int) -> bytes:
    key = _normalise(fmt)
    width, height = _dims_for_pixels(pixels, _WEBP_MAX_SIDE if key == "webp" else None)
    img = _noise(width, height, seed)
    if key == "png":
        # Random data does not compress, so skip zlib's work: the file size is then predictable
        # and a 10+ MiB image takes milliseconds instead of seconds.
        return _encode(img, key, compress_level=0)
    if key == "jpeg":
        return _encode(img, key, quality=95, subsampling=0)
    if key == "webp":
        return _encode(img, key, lossless=True, method=0, quality=0)
    return _encode(img.convert("P"), key)


def make_image_of_size(fmt: str, approx_bytes: int, seed: int = 0) -> bytes:
    """A valid ``fmt`` noise image whose encoded size is within a few percent of ``approx_bytes``.

    Noise defeats compression, so the encoded size tracks the pixel count; the pixel count is
    calibrated on a small sample and then corrected once against the real encoding.
    """
    if approx_bytes < 1024:
        raise ValueError("approx_bytes must be at least 1024; tiny images have fixed overheads")
    key = _normalise(fmt)
    sample_pixels = 128 * 128
    per_pixel = len(_encode_noise(key, sample_pixels, seed)) / sample_pixels
    pixels = int(approx_bytes / per_pixel)
    data = _encode_noise(key, pixels, seed)
    for _ in range(3):
        error = (len(data) - approx_bytes) / approx_bytes
        if abs(error) <= 0.01:
            break
        pixels = max(1, int(pixels * approx_bytes / len(data)))
        data = _encode_noise(key, pixels, seed)
    return data


def sniff_format(data: bytes) -> str | None:
    """The image format named by the magic bytes, or None if it is not a known image."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None
