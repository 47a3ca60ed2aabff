"""Tests of the CometAPI fake itself, driven by a plain aiohttp client."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from tests.fakes.fake_cometapi import (
    DEFAULT_USAGE,
    EDIT_SAMPLE_USAGE,
    Cdn,
    FakeCometAPI,
    Reply,
    schema_validator,
    validate_generation_request,
)
from tests.fakes.images import (
    make_image,
    make_image_of_size,
    make_jpeg,
    make_png,
    make_transparent_png,
    make_webp,
    sniff_format,
)

MiB = 1024 * 1024
AUTH = {"Authorization": "Bearer test-key"}


@pytest.fixture
async def api() -> AsyncIterator[FakeCometAPI]:
    async with FakeCometAPI(api_key="test-key") as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # No default Authorization header: CDN downloads must not carry the key. The timeout turns
    # a fake that wrongly leaves a client waiting into a failure instead of a stuck run.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client:
        yield client


async def generate(
    session: aiohttp.ClientSession,
    api: FakeCometAPI,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with session.post(
        f"{api.base_url}/images/generations", json=body, headers=headers or AUTH
    ) as resp:
        return resp.status, await resp.json(content_type=None)


def decode_images(payload: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(item["b64_json"]) for item in payload["data"]]


def open_image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def assert_error_envelope(payload: Any) -> dict[str, Any]:
    schema_validator("ErrorResponse").validate(payload)
    error: dict[str, Any] = payload["error"]
    return error


# -- auth and request validation -------------------------------------------------------------


async def test_wrong_key_gets_401_envelope_and_is_not_a_violation(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    status, payload = await generate(
        session,
        api,
        {"model": "gpt-image-2", "prompt": "a boat"},
        headers={"Authorization": "Bearer wrong-key"},
    )

    assert status == 401
    assert_error_envelope(payload)
    assert api.calls[0].status == 401
    assert api.calls[0].served_images == []
    assert api.violations == []


async def test_missing_authorization_is_a_violation(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    status, payload = await generate(
        session, api, {"model": "gpt-image-2", "prompt": "a boat"}, headers={"X-Other": "1"}
    )

    assert status == 401
    assert_error_envelope(payload)
    assert any("Authorization" in v for v in api.violations)


async def test_auth_failure_does_not_consume_the_script(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.queue(Reply.error(503, "busy"))

    await generate(
        session,
        api,
        {"model": "gpt-image-2", "prompt": "x"},
        headers={"Authorization": "Bearer no"},
    )
    status, _ = await generate(session, api, {"model": "gpt-image-2", "prompt": "x"})

    assert status == 503
    assert api.pending_replies == 0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param(
            {"model": "gpt-image-2", "prompt": "p", "response_format": "b64_json"},
            "response_format",
            id="response_format-on-gpt-image-2",
        ),
        pytest.param({"model": "dall-e-3", "prompt": "p", "n": 2}, "n", id="n2-on-dall-e-3"),
        pytest.param(
            {"model": "gpt-image-2", "prompt": "p", "size": "1000x1000"},
            "size",
            id="gpt-image-2-size-not-multiple-of-16",
        ),
        pytest.param(
            {"model": "gpt-image-2", "prompt": "p", "size": "3840x1024"},
            "size",
            id="gpt-image-2-ratio-over-3",
        ),
        pytest.param(
            {"model": "gpt-image-2", "prompt": "p", "size": "4096x2304"},
            "size",
            id="gpt-image-2-over-max",
        ),
        pytest.param(
            {"model": "gpt-image-2", "prompt": "p", "size": "2304x2304"},
            "size",
            id="gpt-image-2-short-edge-over-2160",
        ),
        pytest.param(
            {"model": "gpt-image-1", "prompt": "p", "size": "1536x864"},
            "size",
            id="gpt-image-1-custom-size",
        ),
        pytest.param(
            {"model": "dall-e-2", "prompt": "p", "size": "1792x1024"}, "size", id="dall-e-2-size"
        ),
        pytest.param(
            {"model": "gpt-image-1", "prompt": "p", "style": "vivid"}, "style", id="style-on-gpt"
        ),
        pytest.param(
            {"model": "dall-e-3", "prompt": "p", "background": "opaque"},
            "background",
            id="background-on-dall-e-3",
        ),
        pytest.param(
            {"model": "dall-e-2", "prompt": "p", "output_format": "png"},
            "output_format",
            id="output_format-on-dall-e-2",
        ),
        pytest.param(
            {"model": "dall-e-3", "prompt": "p", "moderation": "low"},
            "moderation",
            id="moderation-on-dall-e-3",
        ),
        pytest.param(
            {"model": "gpt-image-2", "prompt": "p", "output_compression": 50},
            "output_compression",
            id="compression-with-default-png",
        ),
        pytest.param(
            {
                "model": "gpt-image-2",
                "prompt": "p",
                "output_format": "jpeg",
                "background": "transparent",
            },
            "background",
            id="transparent-jpeg",
        ),
        pytest.param(
            {"model": "qwen-image", "prompt": "p", "quality": "high"},
            "quality",
            id="qwen-extra-key",
        ),
        pytest.param({"model": "qwen-image", "prompt": "p", "n": 2}, "n", id="qwen-n2"),
        pytest.param(
            {"model": "dall-e-2", "prompt": "x" * 1001}, "prompt", id="dall-e-2-prompt-1001"
        ),
        pytest.param(
            {"model": "dall-e-3", "prompt": "x" * 4001}, "prompt", id="dall-e-3-prompt-4001"
        ),
        pytest.param(
            {"model": "gpt-image-2", "prompt": "x" * 32001}, "prompt", id="gpt-prompt-32001"
        ),
        pytest.param({"model": "gpt-image-2", "prompt": "p", "n": 11}, "n", id="schema-n-max"),
        pytest.param(
            {"model": "gpt-image-2", "prompt": "p", "quality": "ultra"},
            "quality",
            id="schema-quality-enum",
        ),
        pytest.param({"model": "gpt-image-2"}, None, id="schema-missing-prompt"),
        pytest.param({"prompt": "p"}, "model", id="missing-model"),
        pytest.param(
            {"model": "gpt-image-2", "prompt": "p", "seed": 4}, "seed", id="unknown-parameter"
        ),
    ],
)
async def test_invalid_requests_are_rejected_and_recorded(
    api: FakeCometAPI, session: aiohttp.ClientSession, body: dict[str, Any], param: str | None
) -> None:
    status, payload = await generate(session, api, body)

    assert status == 400
    error = assert_error_envelope(payload)
    assert error["param"] == param
    assert api.violations, "the problem must be recorded, not only answered"
    assert api.calls[0].violations == [v.split(": ", 1)[1] for v in api.violations]
    assert api.calls[0].served_images == []


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"model": "gpt-image-2", "prompt": "p", "size": "3840x2160"}, id="max"),
        pytest.param({"model": "gpt-image-2", "prompt": "p", "size": "2160x3840"}, id="portrait"),
        pytest.param({"model": "gpt-image-2", "prompt": "p", "size": "1536x864"}, id="custom"),
        pytest.param({"model": "gpt-image-2", "prompt": "p", "size": "2304x768"}, id="3-to-1"),
        pytest.param({"model": "gpt-image-2", "prompt": "p", "size": "auto"}, id="auto"),
        pytest.param({"model": "gpt-image-2", "prompt": "x" * 32000}, id="prompt-32000"),
        pytest.param(
            {
                "model": "gpt-image-1.5",
                "prompt": "p",
                "n": 4,
                "size": "1536x1024",
                "quality": "high",
                "output_format": "webp",
                "output_compression": 80,
                "background": "transparent",
                "moderation": "low",
            },
            id="gpt-all-options",
        ),
        pytest.param(
            {
                "model": "dall-e-3",
                "prompt": "x" * 4000,
                "n": 1,
                "size": "1792x1024",
                "quality": "hd",
                "style": "natural",
                "response_format": "b64_json",
            },
            id="dall-e-3-all-options",
        ),
        pytest.param(
            {"model": "dall-e-2", "prompt": "x" * 1000, "n": 10, "size": "256x256"},
            id="dall-e-2",
        ),
        pytest.param(
            {"model": "qwen-image", "prompt": "p", "n": 1, "size": "1328x1328"}, id="qwen"
        ),
        pytest.param({"model": "gpt-image-2", "prompt": "p", "n": None}, id="nullable-n"),
        pytest.param({"model": "some-new-model", "prompt": "p"}, id="unknown-model"),
    ],
)
async def test_valid_requests_pass(
    api: FakeCometAPI, session: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    status, payload = await generate(session, api, body)

    assert api.violations == []
    assert status == 200, payload
    assert len(payload["data"]) == (body.get("n") or 1)


async def test_non_json_content_type_is_a_violation(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        f"{api.base_url}/images/generations",
        data=b'{"model": "gpt-image-2", "prompt": "p"}',
        headers={**AUTH, "Content-Type": "text/plain"},
    ) as resp:
        assert resp.status == 400
        assert_error_envelope(await resp.json())

    assert any("Content-Type" in v for v in api.violations)


async def test_reject_invalid_off_still_records_but_serves_the_script(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.reject_invalid = False
    image = make_png(seed=5)
    api.queue(Reply.b64([image]))

    status, payload = await generate(session, api, {"model": "dall-e-3", "prompt": "p", "n": 2})

    assert status == 200
    assert decode_images(payload) == [image]
    assert len(api.violations) == 1


async def test_reject_invalid_off_survives_nonsense_bodies(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.reject_invalid = False

    status, payload = await generate(
        session,
        api,
        {"model": "gpt-image-2", "prompt": "p", "n": "x", "size": 5, "output_format": "bmp"},
    )

    assert status == 200
    assert len(decode_images(payload)) == 1
    assert len(api.violations) == 3


def test_validator_is_usable_without_a_server() -> None:
    assert validate_generation_request({"model": "gpt-image-2", "prompt": "p"}) == []
    problems = validate_generation_request({"model": "dall-e-3", "prompt": "p", "n": 3})
    assert [p.param for p in problems] == ["n"]
    # The nullable wrapping must not hide the real reason behind "not of type 'null'".
    (schema_problem,) = validate_generation_request(
        {"model": "gpt-image-2", "prompt": "p", "n": 11}
    )
    assert "maximum of 10" in schema_problem.message


# -- scripted replies ------------------------------------------------------------------------


async def test_b64_reply_decodes_to_the_served_bytes(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    images = [make_png(seed=1), make_jpeg(seed=2)]
    api.queue(
        Reply.b64(images, output_format="png", size="1024x1024", quality="low", background="opaque")
    )

    status, payload = await generate(session, api, {"model": "gpt-image-2", "prompt": "p", "n": 2})

    assert status == 200
    schema_validator("ImagesResponse").validate(payload)
    assert decode_images(payload) == images == api.calls[0].served_images
    assert payload["usage"] == DEFAULT_USAGE
    assert payload["output_format"] == "png"
    assert payload["quality"] == "low"
    assert list(payload)[-1] == "data"
    assert abs(payload["created"] - time.time()) < 60


async def test_b64_reply_without_usage_and_with_revised_prompt(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.queue(Reply.b64([make_png()], usage=None, revised_prompt="a better prompt"))

    _, payload = await generate(
        session, api, {"model": "dall-e-3", "prompt": "p", "response_format": "b64_json"}
    )

    assert "usage" not in payload
    assert payload["data"][0]["revised_prompt"] == "a better prompt"


async def test_url_reply_downloads_from_the_cdn(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    images = [make_webp(seed=3)]
    api.queue(Reply.url(images, revised_prompt="revised"))

    status, payload = await generate(session, api, {"model": "dall-e-3", "prompt": "p"})

    assert status == 200
    schema_validator("ImagesResponse").validate(payload)
    item = payload["data"][0]
    assert item["revised_prompt"] == "revised"
    assert item["url"].startswith(f"{api.root_url}/cdn/")
    assert item["url"].endswith(".webp")
    assert api.calls[0].served_urls == [item["url"]]
    async with session.get(item["url"]) as resp:
        assert resp.status == 200
        assert resp.content_type == "image/webp"
        assert await resp.read() == images[0] == api.calls[0].served_images[0]
    assert api.cdn.hits(item["url"]) == 1
    assert api.violations == []


async def test_error_reply_envelope_and_retry_after(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.queue(
        Reply.error(429, "rate limited", code="rate_limit", retry_after=2),
        Reply.error(503, "busy", retry_after=0.5),
        Reply.error(500, "no retry header"),
    )
    body = {"model": "gpt-image-2", "prompt": "p"}
    seen: list[tuple[int, str | None, dict[str, Any]]] = []
    for _ in range(3):
        async with session.post(
            f"{api.base_url}/images/generations", json=body, headers=AUTH
        ) as resp:
            payload = await resp.json()
            seen.append((resp.status, resp.headers.get("Retry-After"), payload))

    assert [(status, retry) for status, retry, _ in seen] == [
        (429, "2"),
        (503, "0.5"),
        (500, None),
    ]
    first = assert_error_envelope(seen[0][2])
    assert first == {
        "message": "rate limited",
        "type": "comet_api_error",
        "param": None,
        "code": "rate_limit",
    }
    assert [c.status for c in api.calls] == [429, 503, 500]


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (502, b"<html><body>Bad Gateway</body></html>", "text/html"),
        (200, b'{"created": 1, "data": [', "application/json"),
    ],
)
async def test_raw_reply_is_sent_verbatim(
    api: FakeCometAPI,
    session: aiohttp.ClientSession,
    status: int,
    body: bytes,
    content_type: str,
) -> None:
    api.queue(Reply.raw(status, body, content_type))

    async with session.post(
        f"{api.base_url}/images/generations",
        json={"model": "gpt-image-2", "prompt": "p"},
        headers=AUTH,
    ) as resp:
        assert resp.status == status
        assert resp.content_type == content_type
        assert await resp.read() == body


async def test_json_reply_for_odd_shapes(api: FakeCometAPI, session: aiohttp.ClientSession) -> None:
    api.queue(Reply.json({"created": 1, "data": [{}]}))

    status, payload = await generate(session, api, {"model": "gpt-image-2", "prompt": "p"})

    assert (status, payload) == (200, {"created": 1, "data": [{}]})


async def test_latency_delays_the_answer(api: FakeCometAPI, session: aiohttp.ClientSession) -> None:
    api.queue(Reply.b64([make_png()]).with_latency(0.3), Reply.auto())

    started = time.monotonic()
    await generate(session, api, {"model": "gpt-image-2", "prompt": "p"})
    slow = time.monotonic() - started
    started = time.monotonic()
    await generate(session, api, {"model": "gpt-image-2", "prompt": "p"})
    fast = time.monotonic() - started

    assert slow >= 0.3
    assert fast < 0.3
    duration = api.calls[0].duration
    assert duration is not None
    assert duration >= 0.3


async def test_queue_then_default(api: FakeCometAPI, session: aiohttp.ClientSession) -> None:
    api.default = Reply.error(500, "default")
    api.queue(Reply.error(429, "first"), lambda call: Reply.error(418, f"for {call.model}"))
    body = {"model": "gpt-image-2", "prompt": "p"}

    results = [await generate(session, api, body) for _ in range(4)]

    assert [status for status, _ in results] == [429, 418, 500, 500]
    assert results[1][1]["error"]["message"] == "for gpt-image-2"


async def test_hang_does_not_block_shutdown(session: aiohttp.ClientSession) -> None:
    api = FakeCometAPI()
    await api.start()
    api.queue(Reply.hang())
    request = asyncio.create_task(
        session.post(
            f"{api.base_url}/images/generations",
            json={"model": "gpt-image-2", "prompt": "p"},
            headers=AUTH,
        )
    )
    await api.wait_for_calls(1)
    await asyncio.sleep(0.05)
    assert not request.done()
    assert api.in_flight == 1

    started = time.monotonic()
    await api.close()

    # aiohttp alone would wait its shutdown timeout (1 s here) before cancelling the handler.
    assert time.monotonic() - started < 0.5
    with pytest.raises(aiohttp.ClientError):
        await request
    assert api.calls[0].abandoned
    assert api.calls[0].status is None
    assert api.in_flight == 0


async def test_client_timeout_releases_in_flight(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.queue(Reply.hang())

    with pytest.raises(asyncio.TimeoutError):
        await generate_with_timeout(session, api, 0.2)
    for _ in range(50):
        if api.in_flight == 0:
            break
        await asyncio.sleep(0.02)

    assert api.in_flight == 0
    assert api.calls[0].abandoned


async def generate_with_timeout(
    session: aiohttp.ClientSession, api: FakeCometAPI, seconds: float
) -> None:
    async with session.post(
        f"{api.base_url}/images/generations",
        json={"model": "gpt-image-2", "prompt": "p"},
        headers=AUTH,
        timeout=aiohttp.ClientTimeout(total=seconds),
    ) as resp:
        await resp.read()


async def test_disconnect_drops_the_connection(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.queue(Reply.disconnect())

    with pytest.raises(aiohttp.ServerDisconnectedError):
        await generate(session, api, {"model": "gpt-image-2", "prompt": "p"})


async def raw_post(
    api: FakeCometAPI, body: bytes = b'{"model":"gpt-image-2","prompt":"p"}'
) -> bytes:
    """Every byte the fake writes back to one hand-made POST, until it closes the connection."""
    reader, writer = await asyncio.open_connection(api.host, api.port)
    writer.write(
        b"POST /v1/images/generations HTTP/1.1\r\nHost: fake\r\n"
        b"Authorization: Bearer test-key\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()
    try:
        async with asyncio.timeout(5):
            return await reader.read()
    finally:
        writer.close()


async def test_disconnect_writes_no_byte_of_an_answer(api: FakeCometAPI) -> None:
    api.queue(Reply.disconnect())

    assert await raw_post(api) == b""
    assert api.calls[0].abandoned


async def test_disconnect_can_write_part_of_a_status_line_first(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Ty"
    api.queue(Reply.disconnect(partial_head=head), Reply.disconnect(partial_head=head))

    assert await raw_post(api) == head
    with pytest.raises(aiohttp.ServerDisconnectedError) as caught:
        await generate(session, api, {"model": "gpt-image-2", "prompt": "p"})
    # aiohttp hands over what it had parsed of the answer instead of its usual text.
    assert not isinstance(caught.value.message, str)


async def read_what_arrives(
    resp: aiohttp.ClientResponse,
) -> tuple[bytes, aiohttp.ClientPayloadError | None]:
    """The body bytes that arrived, and the error that ended the reading if one did."""
    received = b""
    try:
        async for chunk in resp.content.iter_any():
            received += chunk
    except aiohttp.ClientPayloadError as error:
        return received, error
    return received, None


@pytest.mark.parametrize("after", [0, 100])
async def test_cut_off_declares_the_whole_body_then_drops_mid_body(
    api: FakeCometAPI, session: aiohttp.ClientSession, after: int
) -> None:
    image = make_png(seed=8)
    api.queue(Reply.b64([image]).cut_off(after))

    async with session.post(
        f"{api.base_url}/images/generations",
        json={"model": "gpt-image-2", "prompt": "p"},
        headers=AUTH,
    ) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        declared = resp.content_length
        received, error = await read_what_arrives(resp)

    assert isinstance(error, aiohttp.ClientPayloadError)
    assert declared is not None
    assert len(received) == after < declared
    # The bytes that did arrive are the start of the real answer.
    assert b'{"created": '.startswith(received) or received.startswith(b'{"created": ')
    assert api.calls[0].served_images == [image]


async def test_cut_off_applies_to_automatic_answers(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.queue(Reply.auto().cut_off(10))

    async with session.post(
        f"{api.base_url}/images/generations",
        json={"model": "gpt-image-2", "prompt": "p"},
        headers=AUTH,
    ) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


# -- request ids -----------------------------------------------------------------------------


async def test_every_api_answer_carries_the_calls_request_id(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.queue(Reply.b64([make_png()]), Reply.error(503, "busy"))
    body = {"model": "gpt-image-2", "prompt": "p"}
    ids = []
    for _ in range(2):
        async with session.post(
            f"{api.base_url}/images/generations", json=body, headers=AUTH
        ) as resp:
            ids.append(resp.headers.get("x-request-id"))
    async with session.get(f"{api.base_url}/models", headers=AUTH) as resp:
        ids.append(resp.headers.get("x-request-id"))

    assert ids == [call.upstream_request_id for call in api.requests]
    assert len(set(ids)) == 3


async def test_the_fakes_own_errors_quote_the_same_id(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        f"{api.base_url}/images/generations",
        json={"model": "gpt-image-2", "prompt": "p"},
        headers={"Authorization": "Bearer wrong"},
    ) as resp:
        header = resp.headers["x-request-id"]
        message = (await resp.json())["error"]["message"]

    assert header == api.calls[0].upstream_request_id
    assert message.endswith(f"(request id: {header})")


async def test_request_id_header_is_configurable_and_a_reply_can_override_it(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.request_id_header = "X-Oneapi-Request-Id"
    api.queue(
        Reply.auto(),
        Reply.b64([make_png()], headers={"X-Oneapi-Request-Id": "scripted-id"}),
    )
    body = {"model": "gpt-image-2", "prompt": "p"}
    seen = []
    for _ in range(2):
        async with session.post(
            f"{api.base_url}/images/generations", json=body, headers=AUTH
        ) as resp:
            seen.append((resp.headers.get("X-Oneapi-Request-Id"), "x-request-id" in resp.headers))
    api.request_id_header = None
    async with session.post(f"{api.base_url}/images/generations", json=body, headers=AUTH) as r:
        none_sent = "X-Oneapi-Request-Id" not in r.headers and "x-request-id" not in r.headers

    assert seen == [(api.calls[0].upstream_request_id, False), ("scripted-id", False)]
    assert none_sent


async def test_cdn_answers_carry_no_request_id(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    url = api.cdn.put(make_png())

    async with session.get(url) as resp:
        assert resp.status == 200
        assert "x-request-id" not in resp.headers


async def test_the_clients_request_id_is_recorded_per_call(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    body = {"model": "gpt-image-2", "prompt": "p"}
    await generate(session, api, body, headers={**AUTH, "X-Request-Id": "ours-1"})
    await generate(session, api, body)

    assert [call.client_request_id for call in api.calls] == ["ours-1", None]


async def test_wait_for_calls_times_out(api: FakeCometAPI) -> None:
    with pytest.raises(AssertionError, match="expected 1 generation calls"):
        await api.wait_for_calls(1, timeout=0.1)


async def test_max_in_flight_counts_concurrent_requests(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.default = Reply.auto(latency=0.2)
    body = {"model": "gpt-image-2", "prompt": "p"}

    await asyncio.gather(*(generate(session, api, body) for _ in range(5)))

    assert api.max_in_flight == 5
    assert api.in_flight == 0


# -- automatic answers -----------------------------------------------------------------------


async def test_auto_gpt_image_answers_in_requested_format(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    status, payload = await generate(
        session,
        api,
        {
            "model": "gpt-image-2",
            "prompt": "p",
            "n": 3,
            "output_format": "jpeg",
            "size": "1536x864",
        },
    )

    assert status == 200
    images = decode_images(payload)
    assert images == api.calls[0].served_images
    assert len(set(images)) == 3
    assert {sniff_format(i) for i in images} == {"jpeg"}
    width, height = open_image(images[0]).size
    assert width > height
    assert payload["output_format"] == "jpeg"
    assert payload["size"] == "1536x864"
    assert payload["usage"]["total_tokens"] == (
        payload["usage"]["input_tokens"] + payload["usage"]["output_tokens"]
    )
    schema_validator("ImageGenUsage").validate(payload["usage"])


async def test_auto_transparent_png_keeps_alpha(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    _, payload = await generate(
        session, api, {"model": "gpt-image-1", "prompt": "p", "background": "transparent"}
    )

    img = open_image(decode_images(payload)[0])
    assert img.mode == "RGBA"
    assert img.getpixel((0, 0)) == (0, 0, 0, 0)
    assert payload["background"] == "transparent"


async def test_auto_images_differ_between_calls(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    body = {"model": "gpt-image-2", "prompt": "p"}
    first = decode_images((await generate(session, api, body))[1])
    second = decode_images((await generate(session, api, body))[1])

    assert first != second


@pytest.mark.parametrize(
    ("body", "kind", "fmt", "revised"),
    [
        ({"model": "dall-e-3", "prompt": "p"}, "url", "webp", True),
        ({"model": "dall-e-3", "prompt": "p", "response_format": "b64_json"}, "b64", "png", True),
        ({"model": "dall-e-2", "prompt": "p", "n": 2}, "url", "png", False),
        ({"model": "dall-e-2", "prompt": "p", "response_format": "b64_json"}, "b64", "png", False),
        ({"model": "qwen-image", "prompt": "p"}, "url", "png", False),
    ],
)
async def test_auto_answer_shape_by_model(
    api: FakeCometAPI,
    session: aiohttp.ClientSession,
    body: dict[str, Any],
    kind: str,
    fmt: str,
    revised: bool,
) -> None:
    status, payload = await generate(session, api, body)

    assert status == 200
    assert "usage" not in payload
    served = api.calls[0].served_images
    assert len(payload["data"]) == len(served) == body.get("n", 1)
    for item, image in zip(payload["data"], served, strict=True):
        assert ("revised_prompt" in item) is revised
        if kind == "b64":
            assert base64.b64decode(item["b64_json"]) == image
        else:
            assert "b64_json" not in item
            async with session.get(item["url"]) as resp:
                assert await resp.read() == image
        assert sniff_format(image) == fmt
    assert api.violations == []


async def test_auto_rejects_streaming(api: FakeCometAPI, session: aiohttp.ClientSession) -> None:
    status, payload = await generate(
        session, api, {"model": "gpt-image-2", "prompt": "p", "stream": True}
    )

    assert status == 400
    assert assert_error_envelope(payload)["param"] == "stream"
    assert api.violations == []


# -- CDN -------------------------------------------------------------------------------------


async def test_redirect_chain(api: FakeCometAPI, session: aiohttp.ClientSession) -> None:
    image = make_png(seed=9)
    api.queue(Reply.url([image], cdn=Cdn.redirect(3)))
    _, payload = await generate(session, api, {"model": "qwen-image", "prompt": "p"})
    url = payload["data"][0]["url"]

    async with session.get(url) as resp:
        body = await resp.read()
        hops = [str(r.url) for r in resp.history]

    assert body == image
    assert len(hops) == 3
    assert "/cdn/redirect/3/" in hops[0]
    with pytest.raises(aiohttp.TooManyRedirects):
        async with session.get(url, max_redirects=2):
            pass
    async with session.get(url, allow_redirects=False) as resp:
        assert resp.status == 302


async def test_cdn_not_found_and_non_image(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.queue(
        Reply.url([make_png(seed=1), make_png(seed=2)], cdn=[Cdn.not_found(), Cdn.non_image()])
    )
    _, payload = await generate(session, api, {"model": "dall-e-2", "prompt": "p", "n": 2})
    missing, html = (item["url"] for item in payload["data"])

    async with session.get(missing) as resp:
        assert resp.status == 404
    async with session.get(html) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert sniff_format(await resp.read()) is None
    async with session.get(f"{api.root_url}/cdn/never-stored.png") as resp:
        assert resp.status == 404


@pytest.mark.parametrize("advertise", [False, True])
async def test_cdn_huge_body_is_streamed(
    api: FakeCometAPI, session: aiohttp.ClientSession, advertise: bool
) -> None:
    size = 12 * MiB
    url = api.cdn.put(make_png(), behavior=Cdn.huge(size, advertise_length=advertise))

    received = 0
    async with session.get(url) as resp:
        assert (resp.content_length == size) is advertise
        first = await resp.content.read(8)
        received += len(first)
        async for chunk in resp.content.iter_chunked(256 * 1024):
            received += len(chunk)

    assert sniff_format(first) == "png"
    assert received == size


async def test_cdn_bogus_content_length(api: FakeCometAPI, session: aiohttp.ClientSession) -> None:
    image = make_png(seed=4)
    too_short = api.cdn.put(image, behavior=Cdn.bogus_length(100))
    too_long = api.cdn.put(image, behavior=Cdn.bogus_length(50 * MiB))

    async with session.get(too_short) as resp:
        assert resp.content_length == 100
        assert await resp.read() == image[:100]
    async with session.get(too_long) as resp:
        assert resp.content_length == 50 * MiB
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_cdn_slow_body(api: FakeCometAPI, session: aiohttp.ClientSession) -> None:
    image = make_png(seed=6)
    url = api.cdn.put(image, behavior=Cdn.slow(0.1, chunk_delay=0.05, chunk_size=100))

    started = time.monotonic()
    async with session.get(url) as resp:
        assert await resp.read() == image

    assert time.monotonic() - started >= 0.1 + 0.05 * (len(image) // 100)


async def test_cdn_flags_a_leaked_api_key(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    url = api.cdn.put(make_png())

    async with session.get(url, headers=AUTH) as resp:
        assert resp.status == 200

    assert any("CDN" in v for v in api.violations)


# -- models ----------------------------------------------------------------------------------


async def test_public_catalog_shape(api: FakeCometAPI, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{api.root_url}/api/models") as resp:
        assert resp.status == 200
        payload = await resp.json()

    assert payload["success"] is True
    assert set(payload) == {"success", "page", "page_size", "total", "data"}
    assert payload["total"] == len(payload["data"]) == 7
    assert {e["id"] for e in payload["data"]} == {
        "dall-e-3",
        "dall-e-2",
        "gpt-image-1",
        "gpt-image-1-mini",
        "gpt-image-1.5",
        "gpt-image-2",
        "qwen-image",
    }
    for entry in payload["data"]:
        assert set(entry) == {"id", "provider", "model_type", "features", "pricing", "api_doc_url"}
        assert set(entry["pricing"]) == {"currency", "input", "output", "per_request", "per_second"}
    gpt2 = next(e for e in payload["data"] if e["id"] == "gpt-image-2")
    assert gpt2["pricing"]["input"] == 4
    assert gpt2["pricing"]["output"] == 24
    assert api.violations == []


async def test_catalog_is_configurable_and_paginates(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.models_catalog = api.models_catalog[:3]

    async with session.get(f"{api.root_url}/api/models", params={"page": 2, "page_size": 2}) as r:
        payload = await r.json()

    assert (payload["page"], payload["page_size"], payload["total"]) == (2, 2, 3)
    assert len(payload["data"]) == 1


async def test_catalog_failure_knobs(api: FakeCometAPI, session: aiohttp.ClientSession) -> None:
    api.catalog_reply = Reply.error(500, "catalog down")
    async with session.get(f"{api.root_url}/api/models") as resp:
        assert resp.status == 500
        assert_error_envelope(await resp.json())

    api.catalog_reply = Reply.hang()
    with pytest.raises(asyncio.TimeoutError):
        async with session.get(
            f"{api.root_url}/api/models", timeout=aiohttp.ClientTimeout(total=0.2)
        ):
            pass


async def test_v1_models_requires_auth(api: FakeCometAPI, session: aiohttp.ClientSession) -> None:
    async with session.get(f"{api.base_url}/models") as resp:
        assert resp.status == 401
    async with session.get(f"{api.base_url}/models", headers=AUTH) as resp:
        assert resp.status == 200
        payload = await resp.json()

    assert payload["object"] == "list"
    assert {"id", "object", "created", "owned_by"} <= set(payload["data"][0])
    assert "gpt-image-2" in {m["id"] for m in payload["data"]}


# -- image factories -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
@pytest.mark.parametrize("target", [1 * MiB, 4 * MiB])
def test_make_image_of_size_hits_the_target(fmt: str, target: int) -> None:
    data = make_image_of_size(fmt, target, seed=1)

    assert abs(len(data) - target) / target < 0.05
    assert sniff_format(data) == fmt
    assert open_image(data).format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]


def test_make_image_of_size_over_discord_limit_is_fast_and_valid() -> None:
    started = time.monotonic()
    data = make_image_of_size("png", 11 * MiB, seed=2)

    assert time.monotonic() - started < 5
    assert len(data) > 10 * MiB
    open_image(data)


def test_make_image_of_size_differs_per_seed() -> None:
    assert make_image_of_size("png", MiB, seed=1) != make_image_of_size("png", MiB, seed=2)


@pytest.mark.parametrize(
    ("factory", "fmt"), [(make_png, "png"), (make_jpeg, "jpeg"), (make_webp, "webp")]
)
def test_factories_make_valid_distinct_images(factory: Any, fmt: str) -> None:
    images = [factory(40, 30, seed=seed) for seed in range(50)]

    assert len(set(images)) == 50
    assert factory(40, 30, seed=3) == images[3]
    for data in images[:3]:
        assert sniff_format(data) == fmt
        assert open_image(data).size == (40, 30)


def test_make_image_accepts_jpg_alias_and_rejects_unknown() -> None:
    assert sniff_format(make_image("jpg")) == "jpeg"
    with pytest.raises(ValueError, match="unsupported"):
        make_image("bmp")


def test_make_transparent_png_has_real_transparency() -> None:
    img = open_image(make_transparent_png(32, 32, seed=1))

    assert img.mode == "RGBA"
    alpha = img.getchannel("A")
    assert alpha.getextrema()[0] == 0
    assert alpha.getpixel((16, 16)) != 0


# -- edits: POST /v1/images/edits ----------------------------------------------------------------

EDIT_OK = {"model": "gpt-image-1", "prompt": "add a hat", "n": "1", "size": "1024x1024"}


def edit_form(
    fields: dict[str, str],
    images: list[tuple[bytes, str, str]] | None = None,
    mask: tuple[bytes, str, str] | None = None,
) -> aiohttp.FormData:
    """A form like the official SDK's: ``image[]`` parts of (bytes, filename, content type)."""
    form = aiohttp.FormData(default_to_multipart=True)
    for key, value in fields.items():
        form.add_field(key, value)
    for data, filename, content_type in images or [(make_png(), "a.png", "image/png")]:
        form.add_field("image[]", data, filename=filename, content_type=content_type)
    if mask is not None:
        form.add_field("mask", mask[0], filename=mask[1], content_type=mask[2])
    return form


async def edit(
    session: aiohttp.ClientSession, api: FakeCometAPI, form: aiohttp.FormData
) -> tuple[int, Any]:
    async with session.post(f"{api.base_url}/images/edits", data=form, headers=AUTH) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_edit_is_recorded_and_answered_in_cometapis_shape(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    first, second = make_png(seed=1), make_jpeg(seed=2)
    mask = make_transparent_png(seed=3)
    form = edit_form(
        {**EDIT_OK, "output_format": "webp", "input_fidelity": "high"},
        [(first, "one.png", "image/png"), (second, "two.jpg", "image/jpeg")],
        (mask, "mask.png", "image/png"),
    )
    status, payload = await edit(session, api, form)
    assert status == 200, payload
    assert api.violations == []
    call = (await api.wait_for_edit_calls(1))[0]
    assert call.fields == {**EDIT_OK, "output_format": "webp", "input_fidelity": "high"}
    assert call.model == "gpt-image-1"
    assert [(p.name, p.filename, p.content_type, p.data) for p in call.images] == [
        ("image[]", "one.png", "image/png", first),
        ("image[]", "two.jpg", "image/jpeg", second),
    ]
    assert call.mask is not None
    assert call.mask.data == mask
    assert api.calls == []
    # The documented answer: created, usage with CometAPI's extra fields, data[].b64_json only.
    assert set(payload) == {"created", "usage", "data"}
    assert set(EDIT_SAMPLE_USAGE) <= set(payload["usage"])
    assert payload["usage"]["input_tokens_details"]["image_tokens"] == 2 * 768
    assert [set(item) for item in payload["data"]] == [{"b64_json"}]
    assert sniff_format(decode_images(payload)[0]) == "webp"
    assert decode_images(payload) == call.served_images
    schema_validator("ImagesResponse").validate(payload)


def _too_many() -> list[tuple[bytes, str, str]]:
    return [(make_png(seed=i), f"{i}.png", "image/png") for i in range(17)]


@pytest.mark.parametrize(
    ("fields", "images", "mask", "words"),
    [
        # The mask must be the first image's size (64x64 here).
        (EDIT_OK, None, (make_transparent_png(32, 32), "m.png", "image/png"), "mask dimensions"),
        (EDIT_OK, None, (make_jpeg(), "m.jpg", "image/jpeg"), "Invalid file 'mask'"),
        ({**EDIT_OK, "model": "dall-e-3"}, None, None, "does not support image edits"),
        ({**EDIT_OK, "model": "qwen-image"}, None, None, "does not support image edits"),
        ({**EDIT_OK, "moderation": "low"}, None, None, "moderation is not a parameter"),
        (
            {**EDIT_OK, "model": "gpt-image-1-mini", "input_fidelity": "high"},
            None,
            None,
            "input_fidelity is not supported",
        ),
        ({**EDIT_OK, "input_fidelity": "exact"}, None, None, "schema: input_fidelity"),
        (EDIT_OK, _too_many(), None, "at most 16"),
        (EDIT_OK, [(make_image("gif"), "a.gif", "image/gif")], None, "Invalid file 'image[0]'"),
        (EDIT_OK, [(make_png(), "a.png", "application/octet-stream")], None, "mimetype"),
        (EDIT_OK, [(make_png(), "a.jpg", "image/png")], None, "extension"),
        ({"model": "gpt-image-1", "n": "1"}, None, None, "schema: <body>: 'prompt'"),
        ({**EDIT_OK, "n": "11"}, None, None, "schema: n"),
        ({**EDIT_OK, "size": "1792x1024"}, None, None, "Invalid size"),
    ],
)
async def test_invalid_edits_are_refused_and_recorded(
    api: FakeCometAPI,
    session: aiohttp.ClientSession,
    fields: dict[str, str],
    images: list[tuple[bytes, str, str]] | None,
    mask: tuple[bytes, str, str] | None,
    words: str,
) -> None:
    api.queue_edit(Reply.auto())
    status, payload = await edit(session, api, edit_form(fields, images, mask))
    assert status == 400
    assert_error_envelope(payload)
    assert any(words in violation for violation in api.violations), api.violations
    assert api.pending_edit_replies == 1  # a refused edit consumes no scripted reply


@pytest.mark.parametrize(
    "fields",
    [
        {**EDIT_OK, "input_fidelity": "high"},  # allowed on gpt-image-1, unlike on -mini
        {**EDIT_OK, "model": "gpt-image-1-mini"},
        {**EDIT_OK, "model": "gpt-image-2", "size": "1536x864", "quality": "high"},
        {**EDIT_OK, "model": "gpt-image-1.5", "output_format": "jpeg", "output_compression": "80"},
    ],
)
async def test_valid_edits_pass(
    api: FakeCometAPI, session: aiohttp.ClientSession, fields: dict[str, str]
) -> None:
    mask = (make_transparent_png(), "m.png", "image/png")
    status, payload = await edit(session, api, edit_form(fields, None, mask))
    assert status == 200, payload
    assert api.violations == []


async def test_a_json_edit_is_a_violation(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    async with session.post(
        f"{api.base_url}/images/edits", json={**EDIT_OK, "image": "x"}, headers=AUTH
    ) as resp:
        assert resp.status == 400
    assert "multipart/form-data" in api.violations[0]


async def test_edits_are_scripted_apart_from_generations(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    """Errors, faults and images queued for edits go to edits only, in order."""
    served = make_png(seed=99)
    api.queue_edit(
        Reply.error(429, "slow down", retry_after=2),
        Reply.disconnect(),
        Reply.b64([served], usage=None),
    )
    api.queue(Reply.error(500, "for a generation"))
    status, payload = await edit(session, api, edit_form(EDIT_OK))
    assert status == 429
    assert "slow down" in payload["error"]["message"]
    with pytest.raises(aiohttp.ClientConnectionError):
        await edit(session, api, edit_form(EDIT_OK))
    status, payload = await edit(session, api, edit_form(EDIT_OK))
    assert status == 200
    assert decode_images(payload) == [served]
    assert api.pending_replies == 1
    assert len(api.edit_calls) == 3
    assert api.violations == []


async def test_a_hanging_edit_times_out_the_client(
    api: FakeCometAPI, session: aiohttp.ClientSession
) -> None:
    api.queue_edit(Reply.hang())
    with pytest.raises(TimeoutError):
        async with session.post(
            f"{api.base_url}/images/edits",
            data=edit_form(EDIT_OK),
            headers=AUTH,
            timeout=aiohttp.ClientTimeout(total=0.3),
        ):
            pass
    call = (await api.wait_for_edit_calls(1, finished=True))[0]
    assert call.abandoned


def test_the_edit_schema_is_openais() -> None:
    validator = schema_validator("CreateImageEditRequest")
    assert list(validator.iter_errors({"prompt": "x", "image": ["<binary>"]})) == []
    assert list(validator.iter_errors({"prompt": "x", "image": ["<binary>"] * 17}))
    assert list(validator.iter_errors({"image": ["<binary>"]}))
