"""The CometAPI client against the loopback fake: answers, errors, retries, downloads."""

from __future__ import annotations

import base64
import io
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from PIL import Image as PILImage
from pydantic import SecretStr

from bot.core.catalog import CATALOG
from bot.core.cometapi import (
    CometAPIClient,
    ErrorKind,
    RetryPolicy,
    TokenUsage,
    UpstreamError,
    _lost_before_response,
    download_image,
)
from bot.core.images import GIF, JPEG, PNG, WEBP
from bot.core.references import ReferenceImage
from bot.core.validation import ImagineOptions, validate
from tests.fakes.fake_cometapi import EDIT_SAMPLE_USAGE, Cdn, FakeCometAPI, Reply
from tests.fakes.images import (
    make_image_of_size,
    make_jpeg,
    make_png,
    make_transparent_png,
    make_webp,
)

KEY = "sk-test-key-0123456789abcdef"
REQUEST_ID = "gen-0123456789ab"
FAST_RETRY = RetryPolicy(
    max_retries=2, base_delay_s=0.001, max_delay_s=0.002, retry_after_cap_s=0.05
)


class Sleeps:
    """Records the backoff delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
async def api() -> AsyncIterator[FakeCometAPI]:
    async with FakeCometAPI(api_key=KEY) as fake:
        yield fake
    assert fake.violations == []


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def client_for(
    session: aiohttp.ClientSession,
    base_url: str,
    sleeps: Sleeps,
    *,
    timeout_s: float = 5.0,
    key: str = KEY,
) -> CometAPIClient:
    return CometAPIClient(
        session,
        base_url=base_url,
        api_key=SecretStr(key),
        timeout_s=timeout_s,
        retry=FAST_RETRY,
        sleep=sleeps,
    )


def request_for(model: str, **options: object):  # type: ignore[no-untyped-def]
    return validate(ImagineOptions(prompt="a lighthouse at dusk", model=model, **options), model)  # type: ignore[arg-type]


@pytest.fixture
def client(session: aiohttp.ClientSession, api: FakeCometAPI, sleeps: Sleeps) -> CometAPIClient:
    return client_for(session, api.base_url, sleeps)


async def test_gpt_image_2_b64_with_usage(client: CometAPIClient, api: FakeCometAPI) -> None:
    """The documented gpt-image-2 answer: base64 decoded, usage read, bearer auth sent."""
    image = make_jpeg(seed=7)
    api.queue(
        Reply.b64(
            [image],
            usage={
                "input_tokens": 16,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": 16},
                "output_tokens": 208,
                "total_tokens": 224,
            },
            background="opaque",
            output_format="jpeg",
            quality="low",
            size="1024x1024",
        )
    )
    result = await client.generate(
        request_for("gpt-image-2", output_format="jpeg"), request_id=REQUEST_ID
    )
    assert [i.data for i in result.images] == [image]
    assert result.images[0].format is JPEG
    assert result.usage is not None
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.total_tokens) == (
        16,
        208,
        224,
    )
    call = api.calls[0]
    assert call.headers["Authorization"] == f"Bearer {KEY}"
    assert call.json == {
        "model": "gpt-image-2",
        "prompt": "a lighthouse at dusk",
        "output_format": "jpeg",
    }


async def test_dall_e_3_url_with_revised_prompt(client: CometAPIClient, api: FakeCometAPI) -> None:
    """A url answer is downloaded with the same session; the revised prompt is kept."""
    image = make_webp(seed=3)
    api.queue(Reply.url([image], revised_prompt="A tall lighthouse, painted at dusk"))
    result = await client.generate(request_for("dall-e-3"), request_id=REQUEST_ID)
    assert result.images[0].data == image
    assert result.images[0].format is WEBP
    assert result.images[0].revised_prompt == "A tall lighthouse, painted at dusk"
    assert result.usage is None


async def test_dall_e_asks_for_b64_json(client: CometAPIClient, api: FakeCometAPI) -> None:
    """dall-e models are asked for base64 so no second download is needed."""
    await client.generate(request_for("dall-e-2", n=3), request_id=REQUEST_ID)
    assert api.calls[0].json["response_format"] == "b64_json"
    assert not api.requests_to("/cdn")


@pytest.mark.parametrize("model", sorted(CATALOG))
async def test_every_model_round_trips(
    client: CometAPIClient, api: FakeCometAPI, model: str
) -> None:
    """The fake answers each model like upstream would, and the fake's schema checks pass."""
    result = await client.generate(request_for(model), request_id=REQUEST_ID)
    assert [image.data for image in result.images] == api.calls[0].served_images
    assert result.images


async def test_content_policy_400_shows_upstream_message(
    client: CometAPIClient, api: FakeCometAPI, sleeps: Sleeps
) -> None:
    """A 400 is not retried and the user sees the upstream's own words."""
    api.queue(
        Reply.error(
            400,
            "Your request was rejected as a result of our safety system.",
            type="invalid_request_error",
            code="content_policy_violation",
        )
    )
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.BAD_REQUEST
    assert caught.value.code == "content_policy_violation"
    assert "safety system" in caught.value.user_message
    assert len(api.calls) == 1
    assert sleeps.delays == []


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failures_are_configuration_problems(
    session: aiohttp.ClientSession, api: FakeCometAPI, sleeps: Sleeps, status: int
) -> None:
    """A refused key reads as a bot configuration problem, and the key never leaks."""
    wrong = "sk-wrong-key-9876543210"
    api.queue(Reply.error(status, f"invalid token {wrong} (request id: abc)"))
    client = client_for(session, api.base_url, sleeps, key=wrong)
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.CONFIGURATION
    assert "needs attention from the bot's owner" in caught.value.user_message
    assert wrong not in str(caught.value)
    assert wrong not in caught.value.user_message


async def test_429_is_retried_honouring_retry_after(
    client: CometAPIClient, api: FakeCometAPI, sleeps: Sleeps
) -> None:
    """Retry-After is honoured, capped by the policy."""
    api.queue(
        Reply.error(429, "slow down", retry_after=0.02), Reply.error(429, "again", retry_after=60)
    )
    result = await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert result.attempts == 3
    assert sleeps.delays == [0.02, FAST_RETRY.retry_after_cap_s]


async def test_429_after_all_retries(
    client: CometAPIClient, api: FakeCometAPI, sleeps: Sleeps
) -> None:
    """Three 429s: the user is told the service is busy."""
    api.queue(*[Reply.error(429, "rate limited") for _ in range(3)])
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.RATE_LIMITED
    assert len(api.calls) == 3
    assert len(sleeps.delays) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retried_then_succeeds(
    client: CometAPIClient, api: FakeCometAPI, status: int
) -> None:
    """Transient platform errors are retried."""
    api.queue(Reply.error(status, "upstream hiccup"))
    result = await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert result.attempts == 2


async def test_5xx_after_all_retries(client: CometAPIClient, api: FakeCometAPI) -> None:
    """A persistent 5xx (even as an HTML page) becomes a plain-words upstream error."""
    api.queue(*[Reply.raw(502, b"<html>Bad gateway</html>") for _ in range(3)])
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.UPSTREAM_ERROR
    assert "<html>" not in caught.value.user_message


@pytest.mark.parametrize(
    ("status", "kind"),
    [(404, ErrorKind.MODEL_NOT_FOUND), (413, ErrorKind.TOO_LARGE), (422, ErrorKind.BAD_REQUEST)],
)
async def test_other_statuses(
    client: CometAPIClient, api: FakeCometAPI, status: int, kind: ErrorKind
) -> None:
    """Each status maps to its kind and is not retried."""
    api.queue(Reply.error(status, "nope"))
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is kind
    assert len(api.calls) == 1


async def test_timeout_is_not_retried(
    session: aiohttp.ClientSession, api: FakeCometAPI, sleeps: Sleeps
) -> None:
    """A request that was sent and never answered may be billed: no second attempt."""
    api.queue(Reply.hang())
    client = client_for(session, api.base_url, sleeps, timeout_s=0.3)
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.TIMEOUT
    assert caught.value.attempts == 1
    assert len(api.calls) == 1


async def test_connection_refused_is_retried_then_reported(
    session: aiohttp.ClientSession, sleeps: Sleeps
) -> None:
    """Nothing listening: retried (nothing can have been billed), then reported."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = client_for(session, f"http://127.0.0.1:{port}/v1", sleeps)
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.CONNECTION
    assert len(sleeps.delays) == 2


@pytest.mark.parametrize(
    "reply",
    [
        Reply.raw(200, b"{not json", "application/json"),
        Reply.json({"created": 1, "data": []}),
        Reply.json({"created": 1}),
        Reply.json({"created": 1, "data": [{"revised_prompt": "no image"}]}),
        Reply.json({"created": 1, "data": [{"b64_json": "!!!not base64!!!"}]}),
        Reply.json(
            {"created": 1, "data": [{"b64_json": base64.b64encode(b"plain text").decode()}]}
        ),
        Reply.json([1, 2, 3]),
    ],
    ids=["malformed-json", "empty-data", "no-data", "no-image", "bad-base64", "not-image", "array"],
)
async def test_unusable_answers(client: CometAPIClient, api: FakeCometAPI, reply: Reply) -> None:
    """Every kind of garbage is a bad-response error, never a crash."""
    api.queue(reply)
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.BAD_RESPONSE


@pytest.mark.parametrize(
    "behaviour",
    [
        Cdn.not_found(),
        Cdn.non_image(),
        Cdn.mislabelled(),
        Cdn.huge(60 * 1024 * 1024),
        Cdn.huge(60 * 1024 * 1024, advertise_length=True),
        Cdn.redirect(5),
    ],
    ids=["404", "html", "mislabelled", "huge-chunked", "huge-declared", "too-many-redirects"],
)
async def test_url_download_failures(
    client: CometAPIClient, api: FakeCometAPI, behaviour: Cdn
) -> None:
    """A url that 404s, is not an image, is too large or loops is a download failure."""
    api.queue(Reply.url([make_png()], cdn=behaviour))
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("dall-e-3"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.DOWNLOAD_FAILED
    # Upstream answered 200 and made the images: the failure after it is billed.
    assert caught.value.billed


@pytest.mark.parametrize(
    ("reply", "billed"),
    [
        (Reply.json({"created": 1, "data": [{"b64_json": "%%%"}]}), True),
        (Reply.error(400, "no"), False),
        (Reply.error(500, "boom"), False),
    ],
    ids=["unusable-200", "400", "500"],
)
async def test_only_a_failure_after_a_200_is_billed(
    client: CometAPIClient, api: FakeCometAPI, reply: Reply, billed: bool
) -> None:
    """An error status is not billed; a 200 the bot cannot use is."""
    api.default = reply
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("dall-e-3"), request_id=REQUEST_ID)
    assert caught.value.billed is billed


async def test_url_redirects_within_bound_are_followed(
    client: CometAPIClient, api: FakeCometAPI
) -> None:
    """Two redirects are fine."""
    image = make_png(seed=11)
    api.queue(Reply.url([image], cdn=Cdn.redirect(2)))
    result = await client.generate(request_for("dall-e-3"), request_id=REQUEST_ID)
    assert result.images[0].data == image
    assert result.images[0].format is PNG


async def test_download_refuses_non_http_urls(session: aiohttp.ClientSession) -> None:
    """file:// or data: urls are never fetched."""
    for url in ("file:///etc/passwd", "ftp://example.com/x.png", "data:image/png;base64,AAAA"):
        with pytest.raises(UpstreamError) as caught:
            await download_image(session, url)
        assert caught.value.kind is ErrorKind.DOWNLOAD_FAILED


def test_retry_delays_grow_and_stay_capped() -> None:
    """Full-jitter exponential backoff within [ceiling/2, ceiling]."""
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
    for retry, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 8.0)]:
        for _ in range(20):
            assert ceiling / 2 <= policy.delay(retry, None) <= ceiling
    assert policy.delay(1, 3.5) == 3.5
    assert policy.delay(1, 999) == policy.retry_after_cap_s


async def test_a_body_over_the_response_cap_is_refused_while_reading(
    client: CometAPIClient, api: FakeCometAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap holds whether or not the body declares its length."""
    monkeypatch.setattr("bot.core.cometapi.MAX_RESPONSE_BYTES", 10_000)
    api.queue(Reply.b64([make_image_of_size("png", 50_000, seed=2)]))
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.BAD_RESPONSE
    assert "too large" in caught.value.detail


# -- retries by where the connection failed ----------------------------------------------------

GOOD_AFTERWARDS = Reply.auto()  # what a retry would get: a test fails if a retry happens


async def test_a_connection_dropped_before_the_answer_is_retried(
    client: CometAPIClient, api: FakeCometAPI, sleeps: Sleeps
) -> None:
    """No byte of an answer came back: retried like a 502, after the usual backoff."""
    api.queue(Reply.disconnect())
    result = await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert result.attempts == 2
    assert len(api.calls) == 2
    assert len(sleeps.delays) == 1
    assert FAST_RETRY.base_delay_s / 2 <= sleeps.delays[0] <= FAST_RETRY.base_delay_s


async def test_a_connection_dropped_before_every_answer_ends_as_a_connection_failure(
    client: CometAPIClient, api: FakeCometAPI, sleeps: Sleeps
) -> None:
    """The retry budget of a 502 holds: max_retries + 1 attempts, then CONNECTION."""
    api.queue(*[Reply.disconnect() for _ in range(FAST_RETRY.max_retries + 1)], GOOD_AFTERWARDS)
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.CONNECTION
    assert caught.value.attempts == FAST_RETRY.max_retries + 1
    assert len(api.calls) == FAST_RETRY.max_retries + 1
    assert len(sleeps.delays) == FAST_RETRY.max_retries


async def test_a_dropped_connection_is_not_retried_past_the_deadline(
    session: aiohttp.ClientSession, api: FakeCometAPI, sleeps: Sleeps
) -> None:
    """The deadline of a 502 holds too: no retry whose backoff would end after it."""
    api.queue(Reply.disconnect(), GOOD_AFTERWARDS)
    client = CometAPIClient(
        session,
        base_url=api.base_url,
        api_key=SecretStr(KEY),
        timeout_s=1.0,
        retry=RetryPolicy(max_retries=2, base_delay_s=10.0, max_delay_s=10.0),
        sleep=sleeps,
    )
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.CONNECTION
    assert caught.value.attempts == 1
    assert sleeps.delays == []


async def test_a_connection_dropped_mid_body_is_not_retried(
    client: CometAPIClient, api: FakeCometAPI, sleeps: Sleeps
) -> None:
    """The answer had begun (likely billed): a connection failure after one attempt."""
    api.queue(Reply.b64([make_png(seed=5)]).cut_off(100), GOOD_AFTERWARDS)
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.CONNECTION
    assert "ClientPayloadError" in caught.value.detail
    assert caught.value.attempts == 1
    assert len(api.calls) == 1
    assert sleeps.delays == []


async def test_a_connection_dropped_inside_the_status_line_is_not_retried(
    client: CometAPIClient, api: FakeCometAPI
) -> None:
    """Part of an answer arrived before the drop (it may have been a 200): not retried."""
    api.queue(Reply.disconnect(partial_head=b"HTTP/1.1 200 OK\r\nContent-Ty"), GOOD_AFTERWARDS)
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.CONNECTION
    assert caught.value.attempts == 1
    assert len(api.calls) == 1


def test_the_retry_rule_is_by_where_not_by_type() -> None:
    """The same exception is retried before an answer began and never after.

    aiohttp 3.14 reports every drop after the headers as ClientPayloadError, so no fake fault
    reaches the `answered` guard; it keeps the rule true should a version report otherwise.
    """
    for error in (aiohttp.ServerDisconnectedError(), aiohttp.ClientOSError(104, "reset")):
        assert _lost_before_response(error, answered=False)
        assert not _lost_before_response(error, answered=True)
    assert not _lost_before_response(aiohttp.ClientPayloadError("cut"), answered=False)


# -- request ids -------------------------------------------------------------------------------


async def test_our_request_id_reaches_upstream_on_every_attempt(
    client: CometAPIClient, api: FakeCometAPI, caplog: pytest.LogCaptureFixture
) -> None:
    """One generation, one id: the same X-Request-Id on each attempt, and in the retry logs."""
    api.queue(Reply.error(502, "bad gateway"), Reply.disconnect())
    result = await client.generate(request_for("gpt-image-1"), request_id="gen-feedc0ffee01")
    assert result.attempts == 3
    assert [call.client_request_id for call in api.calls] == ["gen-feedc0ffee01"] * 3
    retries = [r.getMessage() for r in caplog.records if "cometapi retry" in r.getMessage()]
    assert len(retries) == 2
    assert all("request_id=gen-feedc0ffee01" in line for line in retries)


async def test_upstream_request_id_is_kept_on_success(
    client: CometAPIClient, api: FakeCometAPI
) -> None:
    """The id of the answer that carried the images."""
    api.queue(Reply.error(502, "bad gateway"))
    result = await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert result.upstream_request_id == api.calls[1].upstream_request_id
    assert api.calls[0].upstream_request_id != api.calls[1].upstream_request_id


async def test_upstream_request_id_is_kept_on_failure(
    client: CometAPIClient, api: FakeCometAPI
) -> None:
    """A failed row can store upstream's id and the attempts, retried or not."""
    api.queue(*[Reply.error(503, "busy") for _ in range(3)])
    with pytest.raises(UpstreamError) as retried:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert retried.value.attempts == 3
    assert retried.value.upstream_request_id == api.calls[2].upstream_request_id

    api.queue(Reply.b64([make_png()]).cut_off(50))
    with pytest.raises(UpstreamError) as cut:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert cut.value.attempts == 1
    assert cut.value.upstream_request_id == api.calls[3].upstream_request_id


async def test_an_unusable_answer_keeps_its_attempts_and_upstream_id(
    client: CometAPIClient, api: FakeCometAPI
) -> None:
    """A bad 200 on the second attempt still says how it was got."""
    api.queue(Reply.error(500, "hiccup"), Reply.json({"created": 1}))
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.BAD_RESPONSE
    assert caught.value.attempts == 2
    assert caught.value.upstream_request_id == api.calls[1].upstream_request_id


async def test_the_gateways_own_id_is_preferred(client: CometAPIClient, api: FakeCometAPI) -> None:
    """X-Oneapi-Request-Id (the gateway's) wins over x-request-id (perhaps the provider's)."""
    api.queue(Reply.b64([make_png()], headers={"X-Oneapi-Request-Id": "2026010112000012ab"}))
    result = await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert result.upstream_request_id == "2026010112000012ab"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("id with spaces", None), ("<b>x</b>", None), ("a" * 500, "a" * 128)],
    ids=["spaces", "markup", "too-long"],
)
async def test_upstream_ids_are_bounded_and_safe(
    client: CometAPIClient, api: FakeCometAPI, sent: str, kept: str | None
) -> None:
    """An unsafe id is skipped for the next header; a long one is cut to 128 characters."""
    api.queue(Reply.b64([make_png()], headers={"X-Oneapi-Request-Id": sent}))
    result = await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert result.upstream_request_id == (kept or api.calls[0].upstream_request_id)


async def test_without_headers_the_id_comes_from_the_error_text(
    client: CometAPIClient, api: FakeCometAPI
) -> None:
    """CometAPI documents its id inside error.message; it is kept, and not shown to users."""
    api.request_id_header = None
    api.queue(Reply.error(400, "Invalid size (request id: 20260101120000abcd)"))
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.upstream_request_id == "20260101120000abcd"
    assert caught.value.upstream_message == "Invalid size"
    assert "request id" not in caught.value.user_message


async def test_no_upstream_id_when_upstream_sends_none(
    client: CometAPIClient, api: FakeCometAPI
) -> None:
    """Nothing invented: None when no header and no error text carries an id."""
    api.request_id_header = None
    result = await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert result.upstream_request_id is None


# -- errors in the service's own words ---------------------------------------------------------

OVERLOADED = "The engine is currently overloaded, please try again later"


async def test_503_overloaded_shows_the_services_words_after_ours(
    client: CometAPIClient, api: FakeCometAPI
) -> None:
    """A persistent 503 is UNAVAILABLE: our sentence, then upstream's, no status code."""
    api.queue(*[Reply.error(503, OVERLOADED) for _ in range(3)])
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    assert caught.value.kind.value == "upstream_unavailable"
    message = caught.value.user_message
    assert message.startswith("The image service is overloaded right now")
    assert message.endswith(f"try again in a minute. The image service said: {OVERLOADED}")
    assert "503" not in message
    assert "internal error" not in message


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ErrorKind.BAD_REQUEST),
        (404, ErrorKind.MODEL_NOT_FOUND),
        (413, ErrorKind.TOO_LARGE),
        (429, ErrorKind.RATE_LIMITED),
        (500, ErrorKind.UPSTREAM_ERROR),
        (503, ErrorKind.UNAVAILABLE),
    ],
)
async def test_every_explained_failure_shows_the_services_words(
    client: CometAPIClient, api: FakeCometAPI, status: int, kind: ErrorKind
) -> None:
    """Our short sentence first, then what upstream said; never the status code."""
    api.queue(*[Reply.error(status, "words from upstream") for _ in range(3)])
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is kind
    message = caught.value.user_message
    assert message.endswith(". The image service said: words from upstream")
    assert not message.startswith("The image service said")
    assert str(status) not in message


@pytest.mark.parametrize("status", [401, 403])
async def test_a_key_problem_never_shows_the_services_words(
    client: CometAPIClient, api: FakeCometAPI, status: int
) -> None:
    """Upstream explained, but its words are about the owner's key: users see only ours."""
    api.queue(Reply.error(status, "token quota exhausted for group vip-7"))
    with pytest.raises(UpstreamError) as caught:
        await client.generate(request_for("gpt-image-1"), request_id=REQUEST_ID)
    assert caught.value.kind is ErrorKind.CONFIGURATION
    assert caught.value.upstream_message == "token quota exhausted for group vip-7"
    assert "quota" not in caught.value.user_message
    assert "said" not in caught.value.user_message
    assert caught.value.user_message.endswith("Nothing was charged.")


# -- edits: POST /images/edits ------------------------------------------------------------------


def reference(data: bytes, name: str = "photo.png") -> ReferenceImage:
    image_format = {b"\x89P": PNG, b"\xff\xd8": JPEG, b"RI": WEBP}[data[:2]]
    with PILImage.open(io.BytesIO(data)) as opened:
        width, height = opened.size
    return ReferenceImage(name, data, image_format, width, height)


EDIT_FIELDS = {"model": "gpt-image-2", "prompt": "add a red ribbon", "n": "1", "size": "auto"}


async def test_edit_sends_one_reference_as_an_image_part(
    client: CometAPIClient, api: FakeCometAPI
) -> None:
    """One reference: an `image[]` part with its bytes, type and a .png name; fields as text."""
    source = make_png(seed=11)
    served = make_png(seed=12)
    api.queue_edit(Reply.b64([served], usage=EDIT_SAMPLE_USAGE))
    result = await client.edit(
        fields=EDIT_FIELDS,
        images=[reference(source, "../../etc/x.gif")],
        mask=None,
        request_id=REQUEST_ID,
    )
    assert [image.data for image in result.images] == [served]
    call = api.edit_calls[0]
    assert call.headers["Authorization"] == f"Bearer {KEY}"
    assert call.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert call.fields == EDIT_FIELDS
    assert [(p.name, p.content_type, p.data) for p in call.images] == [
        ("image[]", "image/png", source)
    ]
    # Our own name with the sniffed format's extension, never the member's path.
    assert call.images[0].filename == "image-1.png"
    assert call.mask is None
    assert api.calls == []  # nothing went to the generations route
    # CometAPI's edit usage: its zero prompt/completion counts do not hide the real ones.
    assert result.usage == TokenUsage(input_tokens=785, output_tokens=196, total_tokens=981)


async def test_edit_sends_three_references_in_order_and_a_mask(
    client: CometAPIClient, api: FakeCometAPI
) -> None:
    """Three references (PNG, JPEG, WebP) as `image[]` parts in order, then the `mask` part."""
    sources = [make_png(seed=1), make_jpeg(seed=2), make_webp(seed=3)]
    mask = make_transparent_png(seed=4)  # 64x64, the first image's size
    fields = {**EDIT_FIELDS, "model": "gpt-image-1", "input_fidelity": "high", "quality": "low"}
    result = await client.edit(
        fields=fields,
        images=[reference(data) for data in sources],
        mask=reference(mask, "mask.png"),
        request_id=REQUEST_ID,
    )
    assert len(result.images) == 1
    call = api.edit_calls[0]
    assert call.fields == fields
    assert [(p.name, p.filename, p.content_type, p.data) for p in call.images] == [
        ("image[]", "image-1.png", "image/png", sources[0]),
        ("image[]", "image-2.jpg", "image/jpeg", sources[1]),
        ("image[]", "image-3.webp", "image/webp", sources[2]),
    ]
    assert call.mask is not None
    assert (call.mask.name, call.mask.filename, call.mask.content_type, call.mask.data) == (
        "mask",
        "mask.png",
        "image/png",
        mask,
    )


async def test_an_edit_retry_rebuilds_the_body_and_keeps_the_request_id(
    client: CometAPIClient, api: FakeCometAPI, sleeps: Sleeps
) -> None:
    """A connection dropped before the answer: the second attempt carries the whole form
    again, in a body of its own (a new boundary), with the same X-Request-Id."""
    source = make_png(seed=21)
    api.queue_edit(Reply.disconnect(), Reply.error(503, "busy"), Reply.auto())
    result = await client.edit(
        fields=EDIT_FIELDS, images=[reference(source)], mask=None, request_id=REQUEST_ID
    )
    assert result.attempts == 3
    assert len(sleeps.delays) == 2
    calls = api.edit_calls
    assert [call.client_request_id for call in calls] == [REQUEST_ID] * 3
    for call in calls:
        assert call.fields == EDIT_FIELDS
        assert [p.data for p in call.images] == [source]
    boundaries = {call.headers["Content-Type"] for call in calls}
    assert len(boundaries) == 3


async def test_an_edit_refused_upstream_keeps_its_words_attempts_and_id(
    client: CometAPIClient, api: FakeCometAPI
) -> None:
    """A 400 is not retried; the service's words, the attempt count and its id are kept."""
    with pytest.raises(UpstreamError) as caught:
        await client.edit(
            fields={**EDIT_FIELDS, "model": "dall-e-3"},
            images=[reference(make_png())],
            mask=None,
            request_id=REQUEST_ID,
        )
    error = caught.value
    assert error.kind is ErrorKind.BAD_REQUEST
    assert error.upstream_message is not None
    assert "does not support image edits" in error.upstream_message
    assert error.attempts == 1
    assert error.upstream_request_id == api.edit_calls[0].upstream_request_id
    assert error.billed is False
    assert len(api.edit_calls) == 1
    api.violations.clear()  # provoked on purpose


async def test_an_unusable_edit_answer_is_billed(client: CometAPIClient, api: FakeCometAPI) -> None:
    """A 200 was billed even when its body is no image: the failure says so."""
    api.queue_edit(Reply.json({"created": 1, "data": [{"b64_json": "AAAA"}]}))
    with pytest.raises(UpstreamError) as caught:
        await client.edit(
            fields=EDIT_FIELDS, images=[reference(make_png())], mask=None, request_id=REQUEST_ID
        )
    assert caught.value.kind is ErrorKind.BAD_RESPONSE
    assert caught.value.billed is True
    assert caught.value.attempts == 1


async def test_an_edit_may_wait_longer_than_a_generation(
    session: aiohttp.ClientSession, api: FakeCometAPI, sleeps: Sleeps
) -> None:
    """The caller's timeout replaces the client's, both ways."""
    client = client_for(session, api.base_url, sleeps, timeout_s=0.2)
    api.queue_edit(Reply.auto(latency=0.5), Reply.hang())
    result = await client.edit(
        fields=EDIT_FIELDS,
        images=[reference(make_png())],
        mask=None,
        request_id=REQUEST_ID,
        timeout_s=5.0,
    )
    assert result.attempts == 1
    with pytest.raises(UpstreamError) as caught:
        await client.edit(
            fields=EDIT_FIELDS,
            images=[reference(make_png())],
            mask=None,
            request_id=REQUEST_ID,
            timeout_s=0.3,
        )
    assert caught.value.kind is ErrorKind.TIMEOUT
    assert "0.3s" in caught.value.detail
    assert caught.value.attempts == 1


async def test_an_edit_with_an_image_it_cannot_send_sends_nothing(
    client: CometAPIClient, api: FakeCometAPI
) -> None:
    gif = ReferenceImage("a.gif", b"GIF89a....", GIF, 1, 1)
    for images, words in (
        ([], "at least one"),
        ([gif], "gif images cannot be sent"),
        ([reference(make_png())] * 17, "at most 16"),
    ):
        with pytest.raises(ValueError, match=words):
            await client.edit(fields=EDIT_FIELDS, images=images, mask=None, request_id=REQUEST_ID)
    assert api.edit_calls == []
