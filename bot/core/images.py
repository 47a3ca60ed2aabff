"""Image bytes: decoding base64, recognising formats, checking they decode, fitting Discord.

The CPU-heavy functions (verify_image, shrink_to_fit, prepare_for_upload) are for a worker
thread; the limits and the packing into messages are cheap arithmetic.
"""

from __future__ import annotations

import binascii
import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from PIL import Image


class UnusableImage(ValueError):
    """An image the bot cannot deliver; the subclass says why."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        # Which image of a request (0-based), when the check ran over a list.
        self.index = index


class NotAnImage(UnusableImage):
    """Bytes that are no format Discord can show, or base64 that does not decode."""


class CorruptImage(UnusableImage):
    """The bytes start as a known format but the image does not decode (truncated, damaged)."""


class ImageTooLarge(UnusableImage):
    """An image that cannot be made small enough for the upload limit."""


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


# ---------------------------------------------------------------------------------------------
# Does it decode?
# ---------------------------------------------------------------------------------------------

# What Pillow raises for damaged data: OSError ("image file is truncated", "broken data stream",
# "could not create decoder object"), SyntaxError ("broken PNG file", a bad chunk CRC),
# struct.error and EOFError from short headers, ValueError from nonsense fields, and
# DecompressionBombError for a header claiming a huge canvas.
_DECODE_ERRORS: Final = (
    OSError,
    SyntaxError,
    struct.error,
    EOFError,
    ValueError,
    Image.DecompressionBombError,
)

_PIL_NAMES: Final = {PNG: "PNG", JPEG: "JPEG", WEBP: "WEBP", GIF: "GIF"}


def verify_image(data: bytes, image_format: ImageFormat) -> None:
    """Raise CorruptImage unless `data` decodes as `image_format`.

    Per format, the cheapest check that catches truncation and damage:
    - PNG: verify() checks every chunk's CRC-32 up to IEND, so a cut or a flipped bit fails
      (only a cut inside IEND's own CRC passes, with every pixel present). Measured at 0.6 ms
      for 1 MiB and 1.6 ms for 4 MiB, where a full decode takes 30 ms and 112 ms. It does not
      inflate the data, so only an encoder writing bad deflate data with correct CRCs passes,
      which no transport fault produces.
    - JPEG: has no checksum and verify() does nothing, so the entropy data is decoded; draft
      mode decodes at 1/8 scale, which still reads every byte (a cut is "truncated") at about
      60% of the full cost.
    - WebP, GIF: full decode of every frame (libwebp checks the RIFF length when opening).
    CPU-heavy for JPEG, WebP and GIF: run it in a thread.
    """
    name = _PIL_NAMES[image_format]
    try:
        with Image.open(io.BytesIO(data), formats=[name]) as opened:
            if image_format == PNG:
                opened.verify()
            elif image_format == JPEG:
                opened.draft(None, (1, 1))
                opened.load()
            else:
                _load_every_frame(opened)
    except _DECODE_ERRORS as error:
        raise CorruptImage(f"the {name} image does not decode: {error}") from error


def _load_every_frame(image: Image.Image) -> None:
    # An animation cut short still shows its first frames: each frame is decoded to find it.
    for frame in range(getattr(image, "n_frames", 1)):
        image.seek(frame)
        image.load()


# ---------------------------------------------------------------------------------------------
# Fitting one image
# ---------------------------------------------------------------------------------------------


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


def _decoded(data: bytes, image_format: ImageFormat) -> Image.Image:
    """The pixels, in a mode WebP can encode; CorruptImage when they do not decode."""
    name = _PIL_NAMES[image_format]
    try:
        with Image.open(io.BytesIO(data), formats=[name]) as opened:
            opened.load()
            return opened.convert("RGBA" if "A" in opened.getbands() else "RGB")
    except _DECODE_ERRORS as error:
        raise CorruptImage(f"the {name} image does not decode: {error}") from error


def shrink_to_fit(data: bytes, image_format: ImageFormat, limit: int) -> FittedImage:
    """The image unchanged when it fits, else re-encoded as WebP (then downscaled) until it does.

    Raises CorruptImage when an image to shrink does not decode, ImageTooLarge when even the
    smallest step is over `limit`. Checks nothing about an image that already fits (that is
    verify_image's job). CPU-heavy: run it in a thread.
    """
    if len(data) <= limit:
        return FittedImage(data, image_format, None)
    image = _decoded(data, image_format)
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
    raise ImageTooLarge(f"the image cannot be made smaller than {limit} bytes")


# ---------------------------------------------------------------------------------------------
# Discord's limits on one request, and packing images into messages
# ---------------------------------------------------------------------------------------------

# Attachments per message: the multipart schemas of Discord's OpenAPI description define
# files[0]..files[9] and `attachments` has maxItems 10 (shared/specs/api-notes.md, C.2).
MAX_ATTACHMENTS: Final = 10

# The whole request body, multipart overhead included. Discord documents no number and answers
# 413 / 40005 "Request entity too large" above it: @sapphire/discord-utilities has
# MaximumRequestSize = 25_000_000, disboxapp/web#50 measured a 26,214,400-byte ceiling and
# Discord.Net#2001 checks the collective size. The lowest is used.
MAX_REQUEST_BYTES: Final = 25_000_000

# What a request carries besides the files' bytes, as upper bounds:
# - once per request, payload_json and the closing boundary: an embed of at most 6000
#   characters and content of at most 2000, each character at most 12 bytes once JSON-escaped
#   (discord.py's json.dumps uses ensure_ascii; a non-BMP character is two \uXXXX escapes),
#   is 96,000 bytes; the rest (keys, allowed_mentions, 25 field objects) is well under 35 KB.
# - per file, the part's boundary and headers (name="files[n]", filename, Content-Type) and
#   its attachments[] entry in payload_json: about 200 bytes with our short file names.
# Measured through discord.py 2.7 against the fake: 10 files with a 5996-character embed and
# 2000-character content, all emoji, carried 98,539 bytes besides the files (allowance 141,312);
# with a typical embed, 2,663.
REQUEST_ALLOWANCE: Final = 128 * 1024
ATTACHMENT_ALLOWANCE: Final = 1024

# The most one image may weigh and still go out in a request of its own.
_ONE_IMAGE_BUDGET: Final = MAX_REQUEST_BYTES - REQUEST_ALLOWANCE - ATTACHMENT_ALLOWANCE


def upload_limit(per_file_limit: int) -> int:
    """The size one image must be fitted to: the per-file limit, or less if a request is smaller.

    A boosted server's per-file limit (up to 100 MiB) is larger than a whole request may be.
    Applying it twice gives the same number.
    """
    return min(per_file_limit, _ONE_IMAGE_BUDGET)


def request_size(images: Sequence[FittedImage]) -> int:
    """An upper bound on the bytes of one message request carrying `images`."""
    return (
        REQUEST_ALLOWANCE
        + len(images) * ATTACHMENT_ALLOWANCE
        + sum(len(image.data) for image in images)
    )


def pack_messages(images: Sequence[FittedImage]) -> list[tuple[FittedImage, ...]]:
    """Split images, in order, into messages Discord accepts: at most 10 files, under 25 MB each.

    Greedy: a message takes the next image while both limits allow, which for an order that
    must be kept gives the fewest messages. Raises ValueError for an image too large for any
    request (it was not fitted to upload_limit).
    """
    messages: list[tuple[FittedImage, ...]] = []
    current: list[FittedImage] = []
    for index, image in enumerate(images):
        if len(image.data) > _ONE_IMAGE_BUDGET:
            raise ValueError(
                f"image {index + 1} is {len(image.data)} bytes, over upload_limit's "
                f"{_ONE_IMAGE_BUDGET}: fit it first"
            )
        if current and (
            len(current) == MAX_ATTACHMENTS or request_size([*current, image]) > MAX_REQUEST_BYTES
        ):
            messages.append(tuple(current))
            current = []
        current.append(image)
    if current:
        messages.append(tuple(current))
    return messages


# ---------------------------------------------------------------------------------------------
# The whole list, in one worker thread
# ---------------------------------------------------------------------------------------------


class SourceImage(Protocol):
    """Image bytes and their sniffed format (cometapi's GeneratedImage is one)."""

    @property
    def data(self) -> bytes: ...

    @property
    def format(self) -> ImageFormat: ...


def prepare_for_upload(images: Sequence[SourceImage], per_file_limit: int) -> list[FittedImage]:
    """Verify every image, shrink those over upload_limit(per_file_limit); same order.

    Raises CorruptImage or ImageTooLarge whose message and `index` name the image. Verifying
    first means a damaged image is never delivered, and never reaches the re-encoder.
    CPU-heavy: run the whole call in one worker thread.
    """
    limit = upload_limit(per_file_limit)
    count = len(images)
    fitted: list[FittedImage] = []
    for index, image in enumerate(images):
        try:
            verify_image(image.data, image.format)
            fitted.append(shrink_to_fit(image.data, image.format, limit))
        except (CorruptImage, ImageTooLarge) as error:
            raise type(error)(f"image {index + 1} of {count}: {error}", index=index) from error
    return fitted
