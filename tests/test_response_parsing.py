"""The fast in-place parse of image answers agrees with json.loads on every body."""

from __future__ import annotations

import base64
import json
import random

import pytest

from bot.core.cometapi import ErrorKind, GeneratedImage, UpstreamError, parse_images_response
from bot.core.images import NotAnImage, decode_b64_image
from tests.fakes.images import make_png


def _reference(body: bytes) -> list[bytes] | str:
    """What the plain whole-body parse accepts: PNG images, or else a bad response."""
    try:
        items = json.loads(body)["data"]
        assert isinstance(items, list)
        assert items
        images = [base64.b64decode(item["b64_json"], validate=True) for item in items]
    except Exception:  # any shape or decoding problem is a bad response for the bot too
        return "bad_response"
    png = b"\x89PNG\r\n\x1a\n"
    return images if all(image.startswith(png) for image in images) else "bad_response"


def _parsed(body: bytes) -> list[bytes] | str:
    try:
        decoded = parse_images_response(body).decoded
    except UpstreamError as error:
        if error.kind is not ErrorKind.BAD_RESPONSE:
            raise
        return "bad_response"
    return [item.data for item in decoded if isinstance(item, GeneratedImage)]


PNG = make_png(seed=1)
B64 = base64.b64encode(PNG).decode()
TRICKY = [
    # Ordinary answers, with and without spaces around the colon.
    f'{{"created":1,"data":[{{"b64_json":"{B64}"}}]}}',
    f'{{"created":1,"data":[{{"b64_json" : "{B64}"}},{{"b64_json":\n"{B64}"}}]}}',
    # The key text inside another string, and a revised prompt quoting it.
    f'{{"note":"\\"b64_json\\": \\"AAAA\\"","data":[{{"b64_json":"{B64}"}}]}}',
    f'{{"data":[{{"revised_prompt":"say \\"b64_json\\"","b64_json":"{B64}"}}]}}',
    # A duplicate key (JSON keeps the last), escapes inside the base64, an empty value.
    f'{{"data":[{{"b64_json":"AAAA","b64_json":"{B64}"}}]}}',
    f'{{"data":[{{"b64_json":"{B64[:8]}\\/{B64[8:]}"}}]}}',
    '{"data":[{"b64_json":""}]}',
    # A top-level b64_json that is not an item's, and truncated or broken bodies.
    f'{{"b64_json":"{B64}","data":[{{"b64_json":"{B64}"}}]}}',
    f'{{"data":[{{"b64_json":"{B64}"',
    f'{{"data":[{{"b64_json":"{B64}"}}]}} trailing',
    f'{{"data":[{{"b64_json":"{B64[:-4]}"}}]}}',
]


@pytest.mark.parametrize("text", TRICKY)
def test_in_place_parse_matches_json_loads(text: str) -> None:
    """Each tricky body gives the same images, or the same failure, as the plain parse."""
    body = text.encode()
    assert _parsed(body) == _reference(body)


def test_random_mutations_agree_with_json_loads() -> None:
    """A thousand random byte edits of a real answer: both parsers agree on every one."""
    rng = random.Random(7)
    base = f'{{"created":1,"data":[{{"b64_json":"{B64}","revised_prompt":"a \\"b\\""}}]}}'.encode()
    for _ in range(1000):
        body = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(body))
            body[position] = rng.choice(b'"\\:{}[], =A/+')
        assert _parsed(bytes(body)) == _reference(bytes(body)), bytes(body)


@pytest.mark.parametrize(
    "size", [1, 3, 4, 5, 256 * 1024 * 3 - 1, 256 * 1024 * 3, 256 * 1024 * 3 + 1, 2_000_000]
)
def test_piecewise_base64_decode_matches_strict_b64decode(size: int) -> None:
    """Large inputs are decoded in pieces; padding at any boundary is handled strictly."""
    data = random.Random(size).randbytes(size)
    text = base64.b64encode(data).decode()
    assert decode_b64_image(text) == data
    assert decode_b64_image(text.encode()) == data
    middle = (len(text) // 8) * 4  # a group boundary: padding there is never legal
    for corrupted in ("=" + text[1:], text[:middle] + "====" + text[middle:]):
        with pytest.raises(NotAnImage):
            decode_b64_image(corrupted)
    with pytest.raises(NotAnImage):
        decode_b64_image(text + "A")


# -- usage: OpenAI's fields, CometAPI's extra ones, and junk ------------------------------------

_DETAILS = {"image_tokens": 768, "text_tokens": 17, "cached_tokens_details": {}}
USAGE_TABLE = [
    # Only the chat-style names: they stand in, and the total is their sum.
    ({"prompt_tokens": 10, "completion_tokens": 20}, (10, 20, 30)),
    # Both, as CometAPI's edit sample has them: its zero chat counts lose to the real ones.
    (
        {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 981,
            "input_tokens": 785,
            "output_tokens": 196,
            "input_tokens_details": _DETAILS,
        },
        (785, 196, 981),
    ),
    # Extra and junk fields are ignored; a non-integer count is no count.
    (
        {
            "input_tokens": 5,
            "output_tokens": "7",
            "total_tokens": 12.0,
            "claude_cache_creation_5_m_tokens": "n/a",
            "claude_cache_creation_1_h_tokens": None,
            "prompt_tokens_details": {"cached_tokens_details": []},
            "input_tokens_details": "junk",
            "output_tokens_details": [1, 2],
            "completion_tokens": True,
            "surprise": {"nested": [1]},
        },
        (5, None, None),
    ),
    # Image token details alone: input tokens are image plus text tokens.
    ({"input_tokens_details": _DETAILS, "output_tokens": 196}, (785, 196, 981)),
    # A count that leaves the image tokens out is raised to what the details add up to.
    (
        {"prompt_tokens": 17, "input_tokens_details": _DETAILS, "completion_tokens": 196},
        (785, 196, 981),
    ),
    ({"input_tokens_details": {"image_tokens": "x", "text_tokens": 4}}, (4, None, None)),
    ({"output_tokens_details": {"image_tokens": 208, "text_tokens": 0}}, (None, 208, None)),
    ({}, (None, None, None)),
]


@pytest.mark.parametrize(("usage", "expected"), USAGE_TABLE)
def test_usage_is_read_tolerantly(usage: object, expected: tuple[int | None, ...]) -> None:
    body = json.dumps({"created": 1, "usage": usage, "data": [{"b64_json": B64}]}).encode()
    parsed = parse_images_response(body).usage
    assert parsed is not None
    assert (parsed.input_tokens, parsed.output_tokens, parsed.total_tokens) == expected


@pytest.mark.parametrize("usage", [None, "lots", [1, 2], 7])
def test_usage_that_is_not_an_object_is_none(usage: object) -> None:
    body = json.dumps({"created": 1, "usage": usage, "data": [{"b64_json": B64}]}).encode()
    assert parse_images_response(body).usage is None
