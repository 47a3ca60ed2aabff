"""bot.core.images: verifying that images decode, fitting them, packing them into messages."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from PIL import Image

from bot.core import images
from bot.core.images import (
    ATTACHMENT_ALLOWANCE,
    GIF,
    JPEG,
    MAX_ATTACHMENTS,
    MAX_REQUEST_BYTES,
    PNG,
    REQUEST_ALLOWANCE,
    WEBP,
    CorruptImage,
    FittedImage,
    ImageFormat,
    ImageTooLarge,
    NotAnImage,
    pack_messages,
    prepare_for_upload,
    request_size,
    shrink_to_fit,
    sniff_format,
    upload_limit,
    verify_image,
)
from tests.fakes.images import make_image_of_size, make_png

MIB = 1024 * 1024
# The most one image may weigh: a request holding it alone is then exactly at the limit.
ONE_IMAGE_BUDGET = MAX_REQUEST_BYTES - REQUEST_ALLOWANCE - ATTACHMENT_ALLOWANCE


@dataclass(frozen=True)
class Source:
    """What the cog hands over: bytes and their sniffed format (like GeneratedImage)."""

    data: bytes
    format: ImageFormat


def noise(fmt: ImageFormat, size: int = 60_000, seed: int = 0) -> bytes:
    """A noise image of about `size` bytes: no compression, so a cut lands in pixel data."""
    return make_image_of_size(fmt.name, size, seed=seed)


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


def animated_gif(frames: int = 3) -> bytes:
    pictures = [Image.effect_noise((120, 120), 60 + 30 * i).convert("P") for i in range(frames)]
    out = io.BytesIO()
    pictures[0].save(out, format="GIF", save_all=True, append_images=pictures[1:], duration=100)
    return out.getvalue()


def fitted(size: int, tag: int = 0) -> FittedImage:
    # The packer only looks at lengths; the fill byte tells images apart in failure output.
    return FittedImage(bytes([tag % 256]) * size, PNG, None)


# -- verification -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", [PNG, JPEG, WEBP, GIF], ids=lambda f: f.name)
def test_a_valid_image_passes_verification(fmt: ImageFormat) -> None:
    verify_image(noise(fmt), fmt)


@pytest.mark.parametrize("fmt", [PNG, JPEG, WEBP, GIF], ids=lambda f: f.name)
@pytest.mark.parametrize("keep", [0.3, 0.9])
def test_a_truncated_image_is_corrupt(fmt: ImageFormat, keep: float) -> None:
    data = truncated(noise(fmt), keep)
    assert sniff_format(data) == fmt  # still looks like the format: only decoding can tell
    with pytest.raises(CorruptImage):
        verify_image(data, fmt)


def test_a_png_with_one_damaged_byte_is_corrupt() -> None:
    """A flipped bit inside IDAT breaks that chunk's CRC, which verify() checks."""
    damaged = bytearray(noise(PNG))
    damaged[len(damaged) // 2] ^= 0x01
    with pytest.raises(CorruptImage, match="does not decode"):
        verify_image(bytes(damaged), PNG)


def test_an_animation_cut_in_its_last_frame_is_corrupt() -> None:
    data = truncated(animated_gif(), 0.9)
    with Image.open(io.BytesIO(data)) as first_only:
        first_only.load()  # the first frame alone still decodes: only the later ones show it
    with pytest.raises(CorruptImage):
        verify_image(data, GIF)


def test_bytes_are_verified_as_the_sniffed_format_only() -> None:
    """A valid JPEG handed over as PNG does not pass: it is decoded as PNG or not at all."""
    jpeg = noise(JPEG)
    verify_image(jpeg, JPEG)
    with pytest.raises(CorruptImage):
        verify_image(jpeg, PNG)


def test_the_three_refusals_are_distinct_exceptions() -> None:
    assert not issubclass(CorruptImage, NotAnImage)
    assert not issubclass(ImageTooLarge, NotAnImage)
    assert not issubclass(ImageTooLarge, CorruptImage)
    with pytest.raises(NotAnImage):
        sniff_format(b"<html>not an image</html>")


# -- prepare_for_upload: verify, then shrink ------------------------------------------------


def test_a_truncated_png_under_the_limit_is_refused_as_corrupt() -> None:
    data = truncated(noise(PNG))
    with pytest.raises(CorruptImage):
        prepare_for_upload([Source(data, PNG)], per_file_limit=10 * MIB)


def test_a_truncated_png_over_the_limit_is_corrupt_and_no_oserror_escapes() -> None:
    data = truncated(noise(PNG, 200_000))
    limit = 50_000
    assert len(data) > limit
    with pytest.raises(CorruptImage):
        prepare_for_upload([Source(data, PNG)], per_file_limit=limit)
    # shrink_to_fit on its own (no verification first) refuses it the same way.
    with pytest.raises(CorruptImage):
        shrink_to_fit(data, PNG, limit)


def test_a_valid_png_under_the_limit_passes_unchanged() -> None:
    data = make_png(300, 200, seed=3)
    [result] = prepare_for_upload([Source(data, PNG)], per_file_limit=10 * MIB)
    assert result == FittedImage(data, PNG, None)


def test_the_refusal_names_which_image() -> None:
    good, bad = make_png(seed=1), truncated(noise(PNG, seed=2))
    sources = [Source(good, PNG), Source(bad, PNG), Source(good, PNG)]
    with pytest.raises(CorruptImage, match="image 2 of 3") as refused:
        prepare_for_upload(sources, per_file_limit=10 * MIB)
    assert refused.value.index == 1


def test_an_image_over_the_limit_is_re_encoded_under_it_with_a_note() -> None:
    data = noise(PNG, 300_000)
    limit = 200_000
    [result] = prepare_for_upload([Source(data, PNG)], per_file_limit=limit)
    assert result.format == WEBP
    assert sniff_format(result.data) == WEBP
    assert len(result.data) <= limit
    assert result.note is not None
    assert "re-encoded" in result.note


def test_an_image_that_cannot_get_small_enough_is_too_large() -> None:
    sources = [Source(make_png(seed=1), PNG), Source(noise(PNG, 100_000), PNG)]
    with pytest.raises(ImageTooLarge, match="image 2 of 2") as refused:
        prepare_for_upload(sources, per_file_limit=1_000)
    assert refused.value.index == 1


def test_images_are_fitted_to_the_request_capped_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a boosted server (100 MiB per file) images are fitted to what one request can carry."""
    limits: list[int] = []

    def record_limit(data: bytes, image_format: ImageFormat, limit: int) -> FittedImage:
        limits.append(limit)
        return FittedImage(data, image_format, None)

    monkeypatch.setattr(images, "shrink_to_fit", record_limit)
    prepare_for_upload([Source(make_png(), PNG)], per_file_limit=100 * MIB)
    assert limits == [ONE_IMAGE_BUDGET]


# -- the limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_file", "expected"),
    [
        pytest.param(10 * MIB, 10 * MIB, id="default-10MiB"),
        pytest.param(50 * MIB, ONE_IMAGE_BUDGET, id="tier2-50MiB"),
        pytest.param(100 * MIB, ONE_IMAGE_BUDGET, id="tier3-100MiB"),
    ],
)
def test_upload_limit_is_the_smaller_of_file_and_request_limits(
    per_file: int, expected: int
) -> None:
    assert upload_limit(per_file) == expected
    assert upload_limit(upload_limit(per_file)) == expected  # applying it twice is harmless


def test_an_image_at_the_upload_limit_fits_one_request() -> None:
    largest = fitted(upload_limit(100 * MIB))
    [message] = pack_messages([largest])
    assert request_size(message) <= MAX_REQUEST_BYTES


# -- pack_messages ------------------------------------------------------------------------


def assert_discord_accepts(messages: Sequence[tuple[FittedImage, ...]]) -> None:
    for message in messages:
        assert 1 <= len(message) <= MAX_ATTACHMENTS
        assert request_size(message) <= MAX_REQUEST_BYTES
        # The estimate must hold the files and at least the allowance for the rest.
        assert request_size(message) >= sum(len(image.data) for image in message) + (
            REQUEST_ALLOWANCE + len(message) * ATTACHMENT_ALLOWANCE
        )


def test_ten_9_mib_images_go_out_as_five_messages_of_two() -> None:
    ten = [fitted(9 * MIB, tag) for tag in range(10)]
    messages = pack_messages(ten)
    assert_discord_accepts(messages)
    assert [len(message) for message in messages] == [2] * 5


def test_one_24_mb_image_on_a_boosted_server_goes_alone_in_one_request() -> None:
    image = fitted(24_000_000)
    assert len(image.data) <= upload_limit(100 * MIB)
    messages = pack_messages([image])
    assert_discord_accepts(messages)
    assert messages == [(image,)]


def test_a_24_mib_image_is_over_the_request_limit_and_must_be_fitted_first() -> None:
    """24 MiB (25,165,824 bytes) is over 25,000,000 even alone: fitting shrinks it first."""
    image = fitted(24 * MIB)
    assert len(image.data) > upload_limit(100 * MIB)
    with pytest.raises(ValueError, match="fit it first"):
        pack_messages([image])


def test_packing_keeps_the_order_of_the_images() -> None:
    sizes = [5_000_000, 19_000_000, 300, 7_000_000, 7_000_000, 12_000_000, 10, 10]
    originals = [fitted(size, tag) for tag, size in enumerate(sizes)]
    messages = pack_messages(originals)
    flattened = [image for message in messages for image in message]
    assert len(flattened) == len(originals)
    assert all(a is b for a, b in zip(flattened, originals, strict=True))


KB = 1_000
MB = 1_000_000
# Two images whose request is exactly at the limit, files and allowance counted.
PAIR_AT_LIMIT = MAX_REQUEST_BYTES - REQUEST_ALLOWANCE - 2 * ATTACHMENT_ALLOWANCE


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        pytest.param([], [], id="nothing"),
        pytest.param([KB], [1], id="one-small"),
        pytest.param([KB] * 10, [10], id="ten-small-in-one"),
        pytest.param([KB] * 11, [10, 1], id="eleventh-starts-a-message"),
        pytest.param([KB] * 25, [10, 10, 5], id="twenty-five-small"),
        pytest.param([9 * MIB] * 3, [2, 1], id="third-9MiB-over-the-request"),
        pytest.param([12 * MB, 12 * MB], [2], id="24MB-together"),
        pytest.param([12_500_000, 12_500_000], [1, 1], id="25MB-files-plus-allowance-over"),
        pytest.param(
            [PAIR_AT_LIMIT // 2, PAIR_AT_LIMIT - PAIR_AT_LIMIT // 2], [2], id="exactly-at-limit"
        ),
        pytest.param(
            [PAIR_AT_LIMIT // 2, PAIR_AT_LIMIT - PAIR_AT_LIMIT // 2 + 1],
            [1, 1],
            id="one-byte-over-the-limit",
        ),
        pytest.param([ONE_IMAGE_BUDGET], [1], id="largest-image-alone"),
        pytest.param([ONE_IMAGE_BUDGET, 1], [1, 1], id="nothing-fits-beside-the-largest"),
        pytest.param([20 * MB] + [KB] * 9 + [5 * MB], [10, 1], id="big-then-small-fill-ten"),
        pytest.param([5 * MB, 19 * MB, 5 * MB], [2, 1], id="greedy-in-order"),
        pytest.param([5 * MB, 20 * MB, 4 * MB], [1, 2], id="later-pair-fits"),
    ],
)
def test_pack_messages_cases(sizes: list[int], expected: list[int]) -> None:
    originals = [fitted(size, tag) for tag, size in enumerate(sizes)]
    messages = pack_messages(originals)
    assert_discord_accepts(messages)
    assert [len(message) for message in messages] == expected
    assert [image for message in messages for image in message] == originals
