"""The typed CometAPI client: a validated request in, image bytes and usage out, typed errors."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import aiohttp
from pydantic import SecretStr

from bot.core.images import ImageFormat, NotAnImage, decode_b64_image, sniff_format
from bot.core.references import ReferenceImage
from bot.core.validation import GenerationRequest

log = logging.getLogger(__name__)

# A response body larger than this is refused rather than read: ten 4K PNGs in base64 fit.
MAX_RESPONSE_BYTES: Final = 320 * 1024 * 1024
MAX_DOWNLOAD_BYTES: Final = 50 * 1024 * 1024
DOWNLOAD_TIMEOUT_S: Final = 60.0
MAX_REDIRECTS: Final = 3
_UPSTREAM_MESSAGE_LIMIT: Final = 500
_RETRYABLE_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
# OpenAI's limit on the images of one edit (CreateImageEditRequest: `image` maxItems 16).
MAX_EDIT_IMAGES: Final = 16
_CONTENT_TYPES: Final = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}

# Request ids: what CometAPI documents, and what its software sends.
#
# CometAPI documents no request-id header, neither one it reads nor one it sends (searched
# 2026: https://apidoc.cometapi.com/errors/error-codes-handling and
# https://apidoc.cometapi.com/guides/error-codes-and-retry-strategy). What it documents is an id
# inside the error text, "... (request id: ...)", and the advice to retry 500/503/504/524 with
# backoff "and keep the request id". That suffix is the one-api/new-api gateway's format; that
# gateway makes its own id per request, sends it as X-Oneapi-Request-Id and ignores one the client
# sends, and it copies the model provider's response headers (OpenAI's x-request-id among them)
# onto its answer. Hence the order below: the gateway's own id first, the one its support can
# look up, then the generic names.
_UPSTREAM_ID_HEADERS: Final = ("X-Oneapi-Request-Id", "X-Request-Id", "Request-Id")
_UPSTREAM_ID_LIMIT: Final = 128
# The id goes to logs and the database: letters, digits and a few separators, nothing a log
# reader or a terminal would interpret.
_SAFE_ID: Final = re.compile(r"[A-Za-z0-9._:-]+")
_MESSAGE_ID: Final = re.compile(r"\s*\(request id: ([^()]*)\)")


class ErrorKind(StrEnum):
    """Why a generation failed; stored as the usage row's error code."""

    BAD_REQUEST = "bad_request"
    CONFIGURATION = "configuration"
    MODEL_NOT_FOUND = "model_not_found"
    TOO_LARGE = "request_too_large"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_ERROR = "upstream_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection_failed"
    BAD_RESPONSE = "bad_response"
    DOWNLOAD_FAILED = "download_failed"


_USER_MESSAGES: Final = {
    ErrorKind.BAD_REQUEST: "The image service refused this request",
    ErrorKind.CONFIGURATION: (
        "The bot's connection to the image service needs attention from the bot's owner, "
        "who has been told. Nothing was charged"
    ),
    ErrorKind.MODEL_NOT_FOUND: "The image service does not offer this model right now",
    ErrorKind.TOO_LARGE: "The request was too large for the image service",
    ErrorKind.RATE_LIMITED: (
        "The image service is busy (rate limited) and did not accept the request after "
        "several tries. Please try again in a minute"
    ),
    ErrorKind.UNAVAILABLE: (
        "The image service is overloaded right now and stayed busy after several tries. "
        "Please try again in a minute"
    ),
    ErrorKind.UPSTREAM_ERROR: (
        "The image service had an internal error and did not recover after several tries. "
        "Please try again later"
    ),
    ErrorKind.TIMEOUT: "The image service took too long to answer, so the bot gave up waiting",
    ErrorKind.CONNECTION: "The bot could not reach the image service. Please try again later",
    ErrorKind.BAD_RESPONSE: "The image service sent back something that is not a usable image",
    ErrorKind.DOWNLOAD_FAILED: "The image was made, but the bot could not download it",
}


class UpstreamError(Exception):
    """A generation that failed upstream, with what the user may see kept apart from details.

    `attempts` and `upstream_request_id` are set by CometAPIClient.generate on the failure it
    raises, so a failed row can store them too: the POSTs it made (0 until then) and the
    latest id upstream gave over those attempts (None if it gave none).
    """

    def __init__(
        self,
        kind: ErrorKind,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        upstream_message: str | None = None,
        attempts: int = 0,
        upstream_request_id: str | None = None,
    ) -> None:
        super().__init__(f"{kind.value}: {detail}")
        # Set when the failure came after upstream's 200: it made (and billed) the images,
        # even though the bot could not use them; `usage` is what that answer reported.
        self.billed = False
        self.usage: TokenUsage | None = None
        self.kind = kind
        self.detail = detail
        self.status = status
        self.code = code
        self.upstream_message = upstream_message
        self.attempts = attempts
        self.upstream_request_id = upstream_request_id

    @property
    def user_message(self) -> str:
        """Our plain sentence, then the service's own words when it explained the failure.

        A key problem (CONFIGURATION) never shows upstream's words: they are about the owner's
        key, not the user's request, and the owner is told separately.
        """
        text = _USER_MESSAGES[self.kind]
        if self.upstream_message and self.kind is not ErrorKind.CONFIGURATION:
            return f"{text}. The image service said: {self.upstream_message}"
        return f"{text}."


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts GPT image models report."""

    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    """One image's bytes and what they are."""

    data: bytes
    format: ImageFormat
    revised_prompt: str | None = None


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """What a successful generation returned."""

    images: list[GeneratedImage]
    usage: TokenUsage | None
    attempts: int
    # The latest id upstream gave over the attempts, to find this generation in its logs.
    upstream_request_id: str | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient upstream failures are retried; see the README for the bound on waiting."""

    max_retries: int = 2
    base_delay_s: float = 1.0
    max_delay_s: float = 8.0
    retry_after_cap_s: float = 20.0

    def delay(self, retry_number: int, retry_after: float | None) -> float:
        """Seconds to wait before retry `retry_number` (1-based): full jitter or Retry-After."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_cap_s)
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (retry_number - 1))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(slots=True)
class _UrlItem:
    url: str
    revised_prompt: str | None


@dataclass(slots=True)
class _ParsedResponse:
    decoded: list[GeneratedImage | _UrlItem] = field(default_factory=list)
    usage: TokenUsage | None = None


def _safe_request_id(value: str | None) -> str | None:
    """An id fit for logs and the database, or None: safe characters only, bounded length."""
    if value is None:
        return None
    value = value.strip()
    if not _SAFE_ID.fullmatch(value):
        # Anything else could forge log lines; an id we cannot trust is no id.
        return None
    # Cut rather than dropped: a prefix still finds the request in upstream's logs.
    return value[:_UPSTREAM_ID_LIMIT]


def _upstream_request_id(headers: Any) -> str | None:
    """The first usable id among the response headers upstream gateways send."""
    for name in _UPSTREAM_ID_HEADERS:
        found = _safe_request_id(headers.get(name))
        if found is not None:
            return found
    return None


def _split_request_id(message: str) -> tuple[str, str | None]:
    """The message without its "(request id: ...)" suffix, and the id from that suffix.

    The id is a request detail, not words for the user; it is kept as the upstream id instead.
    """
    match = _MESSAGE_ID.search(message)
    if match is None:
        return message, None
    return (message[: match.start()] + message[match.end() :]).strip(), _safe_request_id(match[1])


def _clean_upstream_message(message: str, secret: str) -> str:
    text = " ".join(message.split())
    if secret:
        text = text.replace(secret, "[redacted]")
    if len(text) > _UPSTREAM_MESSAGE_LIMIT:
        text = text[: _UPSTREAM_MESSAGE_LIMIT - 1] + "\u2026"
    return text


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _first_int(raw: Mapping[str, object], *names: str) -> int | None:
    for name in names:
        found = _int_or_none(raw.get(name))
        if found is not None:
            return found
    return None


def _details_sum(raw: Mapping[str, object], name: str) -> int | None:
    """image_tokens + text_tokens of a `*_tokens_details` object; None if it gives neither."""
    details = raw.get(name)
    if not isinstance(details, dict):
        return None
    parts = [_int_or_none(details.get(key)) for key in ("image_tokens", "text_tokens")]
    known = [part for part in parts if part is not None]
    return sum(known) if known else None


def _with_details(count: int | None, details: int | None) -> int | None:
    """A top-level count, raised to what its details add up to when it says less.

    Image tokens are input tokens (they are billed at the input price), so a count that
    leaves them out, or is missing, undercounts: the details are the floor.
    """
    if details is None:
        return count
    return details if count is None or count < details else count


def _parse_usage(raw: object) -> TokenUsage | None:
    """Usage as OpenAI reports it, or as CometAPI's edit route does, never failing on extras.

    CometAPI's edit answer (https://apidoc.cometapi.com/api/image/openai/image-editing) carries
    `prompt_tokens` and `completion_tokens` (0 in its sample, beside the real `input_tokens` /
    `output_tokens`), `input_tokens_details` with image, text and `cached_tokens_details`, and
    `claude_cache_creation_*` fields. The OpenAI names win; the chat names stand in when those
    are missing; a total that is missing is the sum. Anything else, or a value that is not an
    integer, is ignored.
    """
    if not isinstance(raw, dict):
        return None
    input_tokens = _with_details(
        _first_int(raw, "input_tokens", "prompt_tokens"), _details_sum(raw, "input_tokens_details")
    )
    output_tokens = _with_details(
        _first_int(raw, "output_tokens", "completion_tokens"),
        _details_sum(raw, "output_tokens_details"),
    )
    total_tokens = _int_or_none(raw.get("total_tokens"))
    if total_tokens is None and input_tokens is not None and output_tokens is not None:
        total_tokens = input_tokens + output_tokens
    return TokenUsage(
        input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=total_tokens
    )


def _parse_document(document: object, decode: Callable[[str], bytes]) -> _ParsedResponse:
    """Check a parsed 200 body and decode its images with `decode` (base64 text to bytes)."""
    if not isinstance(document, dict):
        raise UpstreamError(ErrorKind.BAD_RESPONSE, "response JSON is not an object")
    data = document.get("data")
    if not isinstance(data, list) or not data:
        raise UpstreamError(ErrorKind.BAD_RESPONSE, "response has no images in `data`")
    parsed = _ParsedResponse(usage=_parse_usage(document.get("usage")))
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise UpstreamError(ErrorKind.BAD_RESPONSE, f"data[{index}] is not an object")
        revised = item.get("revised_prompt")
        revised = revised if isinstance(revised, str) and revised else None
        b64 = item.get("b64_json")
        url = item.get("url")
        if isinstance(b64, str) and b64:
            try:
                image = decode(b64)
                image_format = sniff_format(image)
            except NotAnImage as error:
                raise UpstreamError(ErrorKind.BAD_RESPONSE, f"data[{index}]: {error}") from error
            parsed.decoded.append(GeneratedImage(image, image_format, revised))
        elif isinstance(url, str) and url:
            parsed.decoded.append(_UrlItem(url, revised))
        else:
            raise UpstreamError(
                ErrorKind.BAD_RESPONSE, f"data[{index}] has neither b64_json nor url"
            )
    return parsed


_B64_KEY: Final = b'"b64_json"'
_JSON_SPACE: Final = b" \t\r\n"


def _skip_space(body: bytes, at: int) -> int:
    while at < len(body) and body[at] in _JSON_SPACE:
        at += 1
    return at


def _b64_value_spans(body: bytes) -> list[tuple[int, int]]:
    """Offsets of every `"b64_json": "<text>"` value that has no JSON escape in it.

    Only candidates: a match inside another string is possible in theory, so the caller
    checks that each span turned out to be the b64_json of an item.
    """
    spans: list[tuple[int, int]] = []
    found = body.find(_B64_KEY)
    while found >= 0:
        colon = _skip_space(body, found + len(_B64_KEY))
        quote = _skip_space(body, colon + 1)
        if body[colon : colon + 1] != b":" or body[quote : quote + 1] != b'"':
            found = body.find(_B64_KEY, found + 1)
            continue
        end = body.find(b'"', quote + 1)
        if end < 0:
            break
        if end > quote + 1 and body.find(b"\\", quote + 1, end) < 0:
            spans.append((quote + 1, end))
        found = body.find(_B64_KEY, end + 1)
    return spans


class _NotInPlace(Exception):
    """A span was not the b64_json of one item: parse the body the ordinary way."""


def _parse_in_place(body: bytes, spans: list[tuple[int, int]]) -> _ParsedResponse | None:
    """Decode the base64 straight from `body`, parsing only the JSON around it; None if unsure.

    json.loads would turn each image into text twice over (the decoded body, then the string),
    which costs more time than the base64 decoding and several times the image in memory.
    """
    # A random marker (practically) cannot occur in the body: each one found is its span.
    marker = f"~{secrets.token_hex(8)}~"
    pieces: list[bytes] = []
    previous = 0
    for number, (start, end) in enumerate(spans):
        pieces += (body[previous:start], f"{marker}{number}".encode())
        previous = end
    pieces.append(body[previous:])
    used: set[int] = set()
    with memoryview(body) as view:

        def decode(text: str) -> bytes:
            if not text.startswith(marker):
                return decode_b64_image(text)
            number = int(text[len(marker) :])
            if number in used:
                raise _NotInPlace
            used.add(number)
            start, end = spans[number]
            return decode_b64_image(view[start:end])

        try:
            parsed = _parse_document(json.loads(b"".join(pieces)), decode)
        except (UpstreamError, _NotInPlace, ValueError):
            # The whole-body parse below gives the answer, or the error, exactly.
            return None
    return parsed if len(used) == len(spans) else None


def parse_images_response(body: bytes) -> _ParsedResponse:
    """Parse and decode a 200 body; CPU-heavy for big images, so callers run it in a thread."""
    spans = _b64_value_spans(body)
    if spans:
        parsed = _parse_in_place(body, spans)
        if parsed is not None:
            return parsed
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UpstreamError(ErrorKind.BAD_RESPONSE, "response body is not JSON") from error
    return _parse_document(document, decode_b64_image)


def _error_from_response(status: int, body: bytes, secret: str) -> UpstreamError:
    message: str | None = None
    code: str | None = None
    try:
        document = json.loads(body)
        error = document.get("error") if isinstance(document, dict) else None
        if isinstance(error, dict):
            raw_message = error.get("message")
            message = raw_message if isinstance(raw_message, str) and raw_message else None
            raw_code = error.get("code")
            code = raw_code if isinstance(raw_code, str) and raw_code else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        pass
    message_id: str | None = None
    if message:
        message, message_id = _split_request_id(message)
    clean = _clean_upstream_message(message, secret) if message else None
    if status in (401, 403):
        kind = ErrorKind.CONFIGURATION
    elif status == 404:
        kind = ErrorKind.MODEL_NOT_FOUND
    elif status == 413:
        kind = ErrorKind.TOO_LARGE
    elif status == 429:
        kind = ErrorKind.RATE_LIMITED
    elif status == 503:
        kind = ErrorKind.UNAVAILABLE
    elif status >= 500:
        kind = ErrorKind.UPSTREAM_ERROR
    else:
        kind = ErrorKind.BAD_REQUEST
    detail = f"HTTP {status}" + (f" code={code}" if code else "") + (f": {clean}" if clean else "")
    return UpstreamError(
        kind,
        detail,
        status=status,
        code=code,
        upstream_message=clean,
        upstream_request_id=message_id,
    )


def _retry_after_seconds(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        # An HTTP-date form is legal but rare here; the backoff schedule is a fine substitute.
        return None


async def _read_body(response: aiohttp.ClientResponse) -> list[bytes]:
    """The body in the pieces it arrived in: joining megabytes here would stall the loop."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise UpstreamError(ErrorKind.BAD_RESPONSE, "response is too large")
        chunks.append(chunk)
    return chunks


def _parse_chunks(chunks: list[bytes]) -> _ParsedResponse:
    """Join a 200 body and parse it; runs in the decoder thread (a big join drops the GIL)."""
    body = b"".join(chunks)
    chunks.clear()  # the pieces need not stay in memory beside the whole
    return parse_images_response(body)


def _lost_before_response(error: aiohttp.ClientError, *, answered: bool) -> bool:
    """Whether a connection failed before any byte of an answer arrived: then a retry is safe.

    One rule for one risk. A connection dropped before the answer began leaves us where a 502
    or 504 does: upstream may or may not have started (and billed) the generation, and nothing
    says which, so it is retried like them: same budget, backoff and deadline. The usual
    cause is a pooled keep-alive connection the far end had closed just as we sent; aiohttp
    retries that by itself only for idempotent methods, never for this POST. A connection lost
    once the answer began (`aiohttp.ClientPayloadError` while reading the body) means upstream
    was answering, quite likely with images it billed, so it is not retried; nor is a timeout.

    Where it failed is told by whether aiohttp produced a response (`answered`): it does once
    the status line and headers are complete, so every error it raises before then is "before
    the answer". aiohttp raises ServerDisconnectedError only then (a body cut short is a
    ClientPayloadError), but it also raises it when part of a status line had arrived, and
    then passes the part it parsed as `message`: an answer had begun, so that is not retried.
    A reset (ClientOSError) carries no such trace and is retried.
    """
    if answered or not isinstance(error, aiohttp.ClientConnectionError):
        return False
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return isinstance(error.message, str)
    return True


def _connection_failure(error: aiohttp.ClientError) -> UpstreamError:
    if isinstance(error, aiohttp.ClientConnectorError):
        return UpstreamError(ErrorKind.CONNECTION, f"cannot connect: {error.os_error}")
    return UpstreamError(ErrorKind.CONNECTION, f"connection lost: {type(error).__name__}")


def _caused(failure: UpstreamError, cause: BaseException) -> UpstreamError:
    """`failure` with `cause` chained, as `raise failure from cause` would have it."""
    failure.__cause__ = cause
    return failure


@dataclass(slots=True)
class _Outcome:
    """What one POST got: a 200 body, or a failure and whether trying again is safe."""

    chunks: list[bytes] | None = None
    failure: UpstreamError | None = None
    retryable: bool = False
    retry_after: float | None = None
    upstream_request_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Answer:
    """The 200 body the retries ended with, and how it was got."""

    chunks: list[bytes]
    attempts: int
    upstream_request_id: str | None


_BodyFactory = Callable[[], aiohttp.payload.Payload]


def _safe_part_name(stem: str, image_format: ImageFormat) -> str:
    """A part's file name: ours, not the member's, with the extension of the sniffed format."""
    return f"{stem}.{image_format.extension}"


def _content_type(image_format: ImageFormat) -> str:
    try:
        return _CONTENT_TYPES[image_format.name]
    except KeyError:
        raise ValueError(f"{image_format.name} images cannot be sent for editing") from None


def _edit_form(
    fields: Mapping[str, str], images: Sequence[ReferenceImage], mask: ReferenceImage | None
) -> aiohttp.payload.Payload:
    """The multipart body of one edit attempt, laid out as the official SDK sends it.

    openai-python's `images.edit` takes the images out of the body with the path
    `["image", "<array>"]`, which names each part `image[]`, and the mask with `["mask"]`;
    the other parameters go as plain form fields (src/openai/resources/images.py and
    `_extract_items` in src/openai/_utils/_utils.py). A body is consumed by sending it, so
    every attempt builds its own.
    """
    form = aiohttp.FormData(default_to_multipart=True)
    for name, value in fields.items():
        form.add_field(name, value)
    for number, image in enumerate(images, start=1):
        form.add_field(
            "image[]",
            image.data,
            filename=_safe_part_name(f"image-{number}", image.format),
            content_type=_content_type(image.format),
        )
    if mask is not None:
        form.add_field(
            "mask",
            mask.data,
            filename=_safe_part_name("mask", mask.format),
            content_type=_content_type(mask.format),
        )
    return form()


class CometAPIClient:
    """Calls CometAPI's image generation and edits; one instance per process, one session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: SecretStr,
        timeout_s: float,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._session = session
        base = base_url.rstrip("/")
        self._url = f"{base}/images/generations"
        self._edits_url = f"{base}/images/edits"
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        # One thread parses and decodes answers. Base64 and JSON decoding hold the GIL, so
        # more threads would not decode in parallel, only take the GIL from the event loop
        # in turns: with the default pool, 50 answers of 4 MiB stalled the loop for 0.5 s.
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cometapi-decode")

    def close(self) -> None:
        """Let the decoder thread end once it has finished what it was given."""
        self._decoder.shutdown(wait=False)

    async def generate(self, request: GenerationRequest, *, request_id: str) -> GenerationResult:
        """Generate the request's images; raise UpstreamError with a kind on any failure.

        `request_id` is ours for this generation; it is sent upstream on every attempt.
        """
        payload = request.payload()
        return await self._run(
            self._url, lambda: aiohttp.JsonPayload(payload), request_id, self._timeout_s
        )

    async def edit(
        self,
        *,
        fields: Mapping[str, str],
        images: Sequence[ReferenceImage],
        mask: ReferenceImage | None,
        request_id: str,
        timeout_s: float | None = None,
    ) -> GenerationResult:
        """Edit `images` (the first is the one `mask` applies to) through `POST /images/edits`.

        `fields` are the form fields as text (model, prompt, n, size, quality, background,
        output_format, output_compression, input_fidelity: whichever apply), sent as given.
        Retries, the request id, errors and the answer are as for `generate`. `timeout_s`
        replaces the client's for this call: CometAPI's page warns that edits take longer than
        generations (https://apidoc.cometapi.com/api/image/openai/image-editing), and its
        earlier version reports a gpt-image-1 edit that succeeded only with a longer timeout
        (https://cometapi.mintlify.app/api/image/openai/image-editing).
        """
        if not images:
            raise ValueError("an edit needs at least one image")
        if len(images) > MAX_EDIT_IMAGES:
            raise ValueError(f"an edit takes at most {MAX_EDIT_IMAGES} images")
        # Checked before anything is sent, not on the first attempt's build.
        for image in (*images, *((mask,) if mask is not None else ())):
            _content_type(image.format)
        return await self._run(
            self._edits_url,
            lambda: _edit_form(fields, images, mask),
            request_id,
            self._timeout_s if timeout_s is None else timeout_s,
        )

    async def _run(
        self, url: str, make_body: _BodyFactory, request_id: str, timeout_s: float
    ) -> GenerationResult:
        """POST with retries, then parse and decode the answer; failures as UpstreamError."""
        deadline = time.monotonic() + timeout_s
        answer = await self._post_with_retries(url, make_body, deadline, request_id, timeout_s)
        loop = asyncio.get_running_loop()
        parsed: _ParsedResponse | None = None
        try:
            parsed = await loop.run_in_executor(self._decoder, _parse_chunks, answer.chunks)
            images = await self._resolve_urls(parsed.decoded)
        except UpstreamError as error:
            # An unusable answer was still an answer, and a 200 is billed: the caller
            # stores how it was got and that it cost money.
            error.attempts = answer.attempts
            error.upstream_request_id = answer.upstream_request_id
            error.billed = True
            error.usage = parsed.usage if parsed else None
            raise
        return GenerationResult(
            images=images,
            usage=parsed.usage,
            attempts=answer.attempts,
            upstream_request_id=answer.upstream_request_id,
        )

    async def _post_with_retries(
        self,
        url: str,
        make_body: _BodyFactory,
        deadline: float,
        request_id: str,
        timeout_s: float,
    ) -> _Answer:
        """POST until a 200, a failure not safe to retry, or the retry budget or deadline ends.

        `make_body` gives a fresh body for each attempt: a multipart body is consumed by being
        sent, so one built once would go out empty on a retry.
        """
        headers = {
            "Authorization": f"Bearer {self._api_key.get_secret_value()}",
            # The same id on every attempt: the attempts are one generation, so one id finds
            # all of them in our logs and rows (and in upstream's, should it ever log the
            # header). It is not an idempotency key; CometAPI documents none.
            "X-Request-Id": request_id,
        }
        attempt = 0
        upstream_id: str | None = None
        while True:
            attempt += 1
            outcome = await self._attempt(url, make_body(), headers, deadline, timeout_s)
            upstream_id = outcome.upstream_request_id or upstream_id
            if outcome.failure is None:
                assert outcome.chunks is not None
                return _Answer(outcome.chunks, attempt, upstream_id)
            failure = outcome.failure
            failure.attempts = attempt
            failure.upstream_request_id = upstream_id
            if not outcome.retryable or attempt > self._retry.max_retries:
                raise failure
            delay = self._retry.delay(attempt, outcome.retry_after)
            if time.monotonic() + delay >= deadline:
                raise failure
            log.warning(
                "cometapi retry attempt=%d after=%.2fs reason=%s request_id=%s "
                "upstream_request_id=%s",
                attempt,
                delay,
                failure.detail,
                request_id,
                upstream_id,
            )
            await self._sleep(delay)

    async def _attempt(
        self,
        url: str,
        body: aiohttp.payload.Payload,
        headers: dict[str, str],
        deadline: float,
        timeout_s: float,
    ) -> _Outcome:
        """One POST: its 200 body, or its failure and whether trying again is safe."""
        outcome = _Outcome()
        response: aiohttp.ClientResponse | None = None
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=max(deadline - time.monotonic(), 0.001)),
                allow_redirects=False,
            ) as response:
                outcome.upstream_request_id = _upstream_request_id(response.headers)
                if response.content_length and response.content_length > MAX_RESPONSE_BYTES:
                    raise UpstreamError(ErrorKind.BAD_RESPONSE, "response is too large")
                chunks = await _read_body(response)
                if response.status == 200:
                    outcome.chunks = chunks
                    return outcome
                failure = _error_from_response(
                    response.status, b"".join(chunks), self._api_key.get_secret_value()
                )
                outcome.upstream_request_id = (
                    outcome.upstream_request_id or failure.upstream_request_id
                )
                outcome.failure = failure
                outcome.retry_after = _retry_after_seconds(response.headers)
                outcome.retryable = response.status in _RETRYABLE_STATUSES
        except UpstreamError as error:
            outcome.failure = error
        except TimeoutError as error:
            # The request may already be running (and billed) upstream: never retried.
            outcome.failure = _caused(
                UpstreamError(ErrorKind.TIMEOUT, f"no complete answer within {timeout_s:g}s"),
                error,
            )
        except aiohttp.ClientError as error:
            outcome.failure = _caused(_connection_failure(error), error)
            outcome.retryable = _lost_before_response(error, answered=response is not None)
        return outcome

    async def _resolve_urls(self, items: list[GeneratedImage | _UrlItem]) -> list[GeneratedImage]:
        async def resolve(item: GeneratedImage | _UrlItem) -> GeneratedImage:
            if isinstance(item, GeneratedImage):
                return item
            data = await download_image(self._session, item.url)
            return GeneratedImage(data, sniff_format(data), item.revised_prompt)

        return list(await asyncio.gather(*(resolve(item) for item in items)))


async def download_image(
    session: aiohttp.ClientSession,
    url: str,
    *,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> bytes:
    """Fetch an image the API returned as a url: http(s) only, capped, checked to be an image."""
    if not url.startswith(("http://", "https://")):
        raise UpstreamError(ErrorKind.DOWNLOAD_FAILED, "image url is not http(s)")
    try:
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=timeout_s), max_redirects=MAX_REDIRECTS
        ) as response:
            if response.status != 200:
                raise UpstreamError(
                    ErrorKind.DOWNLOAD_FAILED, f"image url answered HTTP {response.status}"
                )
            if response.content_length is not None and response.content_length > max_bytes:
                raise UpstreamError(ErrorKind.DOWNLOAD_FAILED, "image is larger than the cap")
            buffer = bytearray()
            async for chunk in response.content.iter_chunked(256 * 1024):
                buffer += chunk
                if len(buffer) > max_bytes:
                    raise UpstreamError(ErrorKind.DOWNLOAD_FAILED, "image is larger than the cap")
    except TimeoutError as error:
        raise UpstreamError(ErrorKind.DOWNLOAD_FAILED, "image download timed out") from error
    except aiohttp.TooManyRedirects as error:
        raise UpstreamError(ErrorKind.DOWNLOAD_FAILED, "image url redirects too often") from error
    except aiohttp.ClientError as error:
        raise UpstreamError(
            ErrorKind.DOWNLOAD_FAILED, f"image download failed: {type(error).__name__}"
        ) from error
    try:
        sniff_format(buffer)
    except NotAnImage as error:
        raise UpstreamError(
            ErrorKind.DOWNLOAD_FAILED, "image url did not serve an image"
        ) from error
    return bytes(buffer)
