"""An in-process fake of CometAPI's OpenAI-compatible image API for tests.

Usage::

    async with FakeCometAPI(api_key="test-key") as api:
        api.queue(Reply.error(429, "slow down", retry_after=1), Reply.b64([make_png(seed=7)]))
        ...  # point the bot at api.base_url and run it
        assert api.violations == []
        assert attachment_bytes == api.calls[1].served_images[0]

The fake is strict on purpose: every request the bot sends is checked against the OpenAI
``CreateImageRequest`` schema and CometAPI's per-model rules (see shared/specs/api-notes.md,
sections A and B). Problems are collected in ``api.violations`` instead of only failing the HTTP
call, so a test notices a malformed request even when the bot swallows the 400.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import enum
import functools
import inspect
import io
import itertools
import json
import random
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, NoReturn, Self

import jsonschema
from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from aiohttp.base_protocol import BaseProtocol
from multidict import CIMultiDict, CIMultiDictProxy
from PIL import Image as PILImage

from tests.fakes.images import (
    MIME_TYPES,
    make_image,
    make_transparent_png,
    make_transparent_webp,
    sniff_format,
)

SCHEMA_PATH: Final = Path(__file__).resolve().parent.parent / "data" / "openai-images.json"

# The first gpt-image-2 sample response on CometAPI's Image Generations page (api-notes B1).
DEFAULT_USAGE: Final[Mapping[str, Any]] = {
    "input_tokens": 16,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 16},
    "output_tokens": 208,
    "total_tokens": 224,
}

GENERATIONS_PATH: Final = "/v1/images/generations"
EDITS_PATH: Final = "/v1/images/edits"

# The usage of the gpt-image-2 sample answer on CometAPI's Image Editing page
# (https://apidoc.cometapi.com/api/image/openai/image-editing): chat-style and Claude cache
# fields (zero) beside OpenAI's input/output counts.
EDIT_SAMPLE_USAGE: Final[Mapping[str, Any]] = {
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "total_tokens": 981,
    "prompt_tokens_details": {"cached_tokens_details": {}},
    "completion_tokens_details": {},
    "input_tokens": 785,
    "output_tokens": 196,
    "input_tokens_details": {"image_tokens": 768, "text_tokens": 17, "cached_tokens_details": {}},
    "claude_cache_creation_5_m_tokens": 0,
    "claude_cache_creation_1_h_tokens": 0,
}
# Models CometAPI's Image Editing page names for this route: gpt-image-2 (the current page) and
# gpt-image-1, gpt-image-1-mini, gpt-image-1.5 (its earlier version,
# https://cometapi.mintlify.app/api/image/openai/image-editing). Its other names (dall-e-3,
# qwen-image-edit) are unverified or provider-specific, so the fake refuses them.
EDIT_MODELS: Final = frozenset({"gpt-image-2", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"})
# OpenAI's InputFidelity: "unsupported for gpt-image-1-mini".
NO_INPUT_FIDELITY_MODELS: Final = frozenset({"gpt-image-1-mini"})
# CometAPI's older gpt-image-1 edit page (https://apidoc.cometapi.com/image-editing-gpt-image-1-
# 16347487e0): PNG/WEBP/JPG images each under 25 MB; a PNG mask under 4 MB, the first image's
# size. OpenAI (CreateImageEditRequest) allows up to 16 images.
EDIT_IMAGE_FORMATS: Final = frozenset({"png", "webp", "jpeg"})
EDIT_IMAGE_MAX_BYTES: Final = 25 * 1024 * 1024
EDIT_MASK_MAX_BYTES: Final = 4 * 1024 * 1024
EDIT_MAX_IMAGES: Final = 16
# Form fields that the schema types as integers or booleans arrive as text in multipart.
_EDIT_INT_FIELDS: Final = frozenset({"n", "output_compression", "partial_images"})
_EDIT_BOOL_FIELDS: Final = frozenset({"stream"})
_EDIT_FILE_FIELDS: Final = frozenset({"image", "image[]", "mask"})

GPT_FIXED_SIZES: Final = frozenset({"1024x1024", "1536x1024", "1024x1536", "auto"})
SIZES_BY_MODEL: Final[Mapping[str, frozenset[str]]] = {
    "dall-e-2": frozenset({"256x256", "512x512", "1024x1024"}),
    "dall-e-3": frozenset({"1024x1024", "1792x1024", "1024x1792"}),
    "gpt-image-1": GPT_FIXED_SIZES,
    "gpt-image-1-mini": GPT_FIXED_SIZES,
    "gpt-image-1.5": GPT_FIXED_SIZES,
}
PROMPT_LIMITS: Final[Mapping[str, int]] = {"dall-e-2": 1000, "dall-e-3": 4000, "gpt-image": 32000}
QUALITIES: Final[Mapping[str, frozenset[str]]] = {
    # "auto" is the schema default for every model, so sending it is never wrong.
    "dall-e-2": frozenset({"standard", "auto"}),
    "dall-e-3": frozenset({"standard", "hd", "auto"}),
    "gpt-image": frozenset({"low", "medium", "high", "auto"}),
}
GPT_ONLY_PARAMS: Final = (
    "background",
    "output_format",
    "output_compression",
    "moderation",
    "stream",
    "partial_images",
)
QWEN_ALLOWED_KEYS: Final = frozenset({"model", "prompt", "n", "size"})
GPT_IMAGE_2_MAX_LONG_EDGE: Final = 3840
GPT_IMAGE_2_MAX_SHORT_EDGE: Final = 2160

_SIZE_RE: Final = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")
_QWEN_SIZE_RE: Final = re.compile(r"^([1-9][0-9]*)[x*]([1-9][0-9]*)$")

ModelFamily = Literal["dall-e-2", "dall-e-3", "gpt-image", "qwen-image", "other"]


def model_family(model: str) -> ModelFamily:
    if model == "dall-e-2":
        return "dall-e-2"
    if model == "dall-e-3":
        return "dall-e-3"
    if model.startswith("gpt-image-"):
        return "gpt-image"
    if model == "qwen-image":
        return "qwen-image"
    return "other"


def _has_flexible_sizes(model: str) -> bool:
    # gpt-image-2, its dated snapshots and newer GPT image ids accept WxH sizes; only the
    # gpt-image-1 generation is limited to the three standard sizes.
    return model_family(model) == "gpt-image" and model not in SIZES_BY_MODEL


# --------------------------------------------------------------------------------------------
# Request validation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One reason the upstream API would reject a request."""

    message: str
    param: str | None = None
    code: str = "invalid_value"


def _nullable_to_anyof(node: Any) -> Any:
    """Give OpenAPI's ``nullable: true`` its meaning under JSON Schema 2020-12.

    jsonschema ignores the OpenAPI keyword, which would wrongly reject ``"n": null``.
    """
    if isinstance(node, list):
        return [_nullable_to_anyof(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_to_anyof(value) for key, value in node.items()}
    if converted.pop("nullable", False) is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


@functools.cache
def _schema_bundle() -> dict[str, Any]:
    with SCHEMA_PATH.open(encoding="utf-8") as fh:
        bundle: dict[str, Any] = json.load(fh)
    return bundle


@functools.cache
def schema_validator(definition: str) -> jsonschema.protocols.Validator:
    """A validator for one ``$defs`` entry of tests/data/openai-images.json."""
    bundle = _schema_bundle()
    if definition not in bundle["$defs"]:
        raise KeyError(f"{definition!r} is not in {SCHEMA_PATH.name}")
    schema = {
        "$schema": bundle["$schema"],
        "$defs": _nullable_to_anyof(copy.deepcopy(bundle["$defs"])),
        "$ref": f"#/$defs/{definition}",
    }
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def _known_request_keys() -> frozenset[str]:
    return frozenset(_schema_bundle()["$defs"]["CreateImageRequest"]["properties"])


def _check_size(model: str, family: ModelFamily, size: str) -> Problem | None:
    if family == "qwen-image":
        if not _QWEN_SIZE_RE.match(size):
            return Problem(f"Invalid size {size!r} for qwen-image.", "size")
        return None
    if model in SIZES_BY_MODEL:
        allowed = SIZES_BY_MODEL[model]
        if size not in allowed:
            return Problem(
                f"Invalid size {size!r} for {model}; supported sizes are {sorted(allowed)}.",
                "size",
            )
        return None
    if not _has_flexible_sizes(model) or size == "auto":
        return None
    match = _SIZE_RE.match(size)
    if match is None:
        return Problem(f"Invalid size {size!r}; expected 'auto' or WIDTHxHEIGHT.", "size")
    width, height = int(match[1]), int(match[2])
    long_edge, short_edge = max(width, height), min(width, height)
    if width % 16 or height % 16:
        return Problem(f"Invalid size {size!r}: both sides must be divisible by 16.", "size")
    if long_edge > 3 * short_edge:
        return Problem(f"Invalid size {size!r}: aspect ratio must be between 1:3 and 3:1.", "size")
    if long_edge > GPT_IMAGE_2_MAX_LONG_EDGE or short_edge > GPT_IMAGE_2_MAX_SHORT_EDGE:
        return Problem(f"Invalid size {size!r}: the maximum is 3840x2160.", "size")
    return None


def _reason(error: jsonschema.ValidationError) -> str:
    # The nullable wrapping turns most failures into "not valid under any of the given
    # schemas"; the sub-error says what is actually wrong.
    relevant = [
        sub
        for sub in error.context or ()
        if not (sub.validator == "type" and sub.validator_value == "null")
    ]
    if relevant:
        return _reason(jsonschema.exceptions.best_match(relevant))
    return str(error.message)


def _check_output(sent: Mapping[str, Any]) -> list[Problem]:
    """output_compression and background against output_format (generations and edits)."""
    problems: list[Problem] = []
    output_format = sent.get("output_format", "png")
    if "output_compression" in sent:
        compression = sent["output_compression"]
        if output_format == "png":
            problems.append(
                Problem(
                    "output_compression is only supported with output_format jpeg or webp.",
                    "output_compression",
                )
            )
        if isinstance(compression, int) and not 0 <= compression <= 100:
            problems.append(
                Problem("output_compression must be between 0 and 100.", "output_compression")
            )
    if sent.get("background") == "transparent" and output_format == "jpeg":
        problems.append(
            Problem("background 'transparent' needs output_format png or webp.", "background")
        )
    return problems


def validate_generation_request(body: Any) -> list[Problem]:
    """Everything CometAPI/OpenAI would object to in a ``POST /v1/images/generations`` body."""
    problems = [
        Problem(
            f"schema: {'/'.join(map(str, err.absolute_path)) or '<body>'}: {_reason(err)}",
            str(err.absolute_path[0]) if err.absolute_path else None,
        )
        for err in schema_validator("CreateImageRequest").iter_errors(body)
    ]
    if not isinstance(body, dict):
        return problems
    problems.extend(
        Problem(f"Unknown parameter: {key!r}.", key, "unknown_parameter")
        for key in body
        if key not in _known_request_keys()
    )
    model = body.get("model")
    if not model:
        # CometAPI rejects a missing model instead of applying OpenAI's dall-e-2 default (B2).
        problems.append(Problem("model name is required", "model", "invalid_request"))
        return problems
    if not isinstance(model, str):
        return problems
    family = model_family(model)
    # null means "not sent" for OpenAPI nullable fields, so the per-model rules ignore it.
    sent = {key: value for key, value in body.items() if value is not None}

    if family == "qwen-image":
        problems.extend(
            Problem(
                f"qwen-image does not accept {key!r}; send only model, prompt, n and size.",
                key,
                "unknown_parameter",
            )
            for key in body
            if key not in QWEN_ALLOWED_KEYS
        )

    prompt = sent.get("prompt")
    if isinstance(prompt, str):
        if not prompt.strip():
            problems.append(Problem("prompt must not be empty.", "prompt"))
        limit = PROMPT_LIMITS.get(family)
        if limit is not None and len(prompt) > limit:
            problems.append(
                Problem(
                    f"prompt is {len(prompt)} characters; {model} allows at most {limit}.",
                    "prompt",
                    "string_above_max_length",
                )
            )

    n = sent.get("n", 1)
    if family in ("dall-e-3", "qwen-image") and n != 1:
        problems.append(Problem(f"{model} only supports n=1, got n={n!r}.", "n"))

    if family == "gpt-image" and "response_format" in sent:
        problems.append(
            Problem(
                f"response_format is not supported for {model}; GPT image models always "
                "return b64_json.",
                "response_format",
                "unknown_parameter",
            )
        )
    if "style" in sent and family != "dall-e-3":
        problems.append(Problem(f"style is only supported for dall-e-3, not {model}.", "style"))
    if family in ("dall-e-2", "dall-e-3"):
        problems.extend(
            Problem(f"{key} is only supported for GPT image models, not {model}.", key)
            for key in GPT_ONLY_PARAMS
            if key in sent
        )

    problems.extend(_check_output(sent))

    quality = sent.get("quality")
    allowed_qualities = QUALITIES.get(family)
    if isinstance(quality, str) and allowed_qualities and quality not in allowed_qualities:
        problems.append(
            Problem(
                f"quality {quality!r} is not supported for {model}; "
                f"use one of {sorted(allowed_qualities)}.",
                "quality",
            )
        )

    size = sent.get("size")
    if isinstance(size, str) and (problem := _check_size(model, family, size)):
        problems.append(problem)
    return problems


@dataclass(frozen=True)
class UploadedPart:
    """One file part of a multipart edit request, as it arrived."""

    name: str
    """The form field's name: ``image[]`` (what the official SDK sends), ``image`` or ``mask``."""
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def format(self) -> str | None:
        """The format the bytes' magic says (png, jpeg, webp, gif), or None."""
        return sniff_format(self.data)

    @property
    def dimensions(self) -> tuple[int, int] | None:
        try:
            with PILImage.open(io.BytesIO(self.data)) as img:
                return img.size
        except Exception:  # anything PIL cannot open has no dimensions
            return None


def _edit_schema_body(
    fields: Mapping[str, str], images: Sequence[UploadedPart], mask: UploadedPart | None
) -> dict[str, Any]:
    """The form as the JSON the schema describes: numbers and booleans parsed, files as text."""
    body: dict[str, Any] = {}
    for key, value in fields.items():
        if key in _EDIT_INT_FIELDS and re.fullmatch(r"-?[0-9]+", value):
            body[key] = int(value)
        elif key in _EDIT_BOOL_FIELDS and value in ("true", "false"):
            body[key] = value == "true"
        else:
            body[key] = value
    if images:
        body["image"] = ["<binary>"] * len(images)
    if mask is not None:
        body["mask"] = "<binary>"
    return body


def _check_upload(
    part: UploadedPart, label: str, formats: frozenset[str], limit: int
) -> list[Problem]:
    problems: list[Problem] = []
    fmt = part.format
    if fmt not in formats:
        problems.append(
            Problem(
                f"Invalid file {label!r}: the bytes are {fmt or 'not an image'}; supported "
                f"formats are {sorted(formats)}.",
                part.name,
                "invalid_image_format",
            )
        )
    expected_type = MIME_TYPES.get(fmt or "")
    if part.content_type != expected_type:
        # OpenAI refuses a part by its declared type ("unsupported mimetype").
        problems.append(
            Problem(
                f"Invalid file {label!r}: unsupported mimetype ({part.content_type!r}); "
                f"the bytes are {fmt or 'not an image'}.",
                part.name,
                "invalid_image_format",
            )
        )
    extensions = {"png": ("png",), "jpeg": ("jpg", "jpeg"), "webp": ("webp",)}.get(fmt or "", ())
    if not part.filename or part.filename.rsplit(".", 1)[-1].lower() not in extensions:
        problems.append(
            Problem(
                f"Invalid file {label!r}: file name {part.filename!r} does not end in the "
                f"extension of a {fmt or 'non-image'} file.",
                part.name,
                "invalid_image_format",
            )
        )
    if len(part.data) >= limit:
        problems.append(
            Problem(
                f"Invalid file {label!r}: {len(part.data)} bytes; it must be under {limit}.",
                part.name,
                "image_too_large",
            )
        )
    return problems


def validate_edit_request(
    fields: Mapping[str, str], images: Sequence[UploadedPart], mask: UploadedPart | None
) -> list[Problem]:
    """Everything CometAPI/OpenAI would object to in a ``POST /v1/images/edits`` form."""
    body = _edit_schema_body(fields, images, mask)
    problems = [
        Problem(
            f"schema: {'/'.join(map(str, err.absolute_path)) or '<body>'}: {_reason(err)}",
            str(err.absolute_path[0]) if err.absolute_path else None,
        )
        for err in schema_validator("CreateImageEditRequest").iter_errors(body)
    ]
    known = frozenset(_schema_bundle()["$defs"]["CreateImageEditRequest"]["properties"])
    for key in fields:
        if key == "moderation":
            problems.append(
                Problem(
                    "moderation is not a parameter of image edits (generations only).",
                    key,
                    "unknown_parameter",
                )
            )
        elif key not in known or key in ("image", "mask"):
            problems.append(Problem(f"Unknown parameter: {key!r}.", key, "unknown_parameter"))
    model = fields.get("model")
    if not model:
        problems.append(Problem("model name is required", "model", "invalid_request"))
        return problems
    if model not in EDIT_MODELS:
        problems.append(
            Problem(
                f"{model} does not support image edits; use one of {sorted(EDIT_MODELS)}.",
                "model",
                "model_not_supported",
            )
        )
        return problems
    if "input_fidelity" in fields and model in NO_INPUT_FIDELITY_MODELS:
        problems.append(Problem(f"input_fidelity is not supported for {model}.", "input_fidelity"))
    if "response_format" in fields:
        problems.append(
            Problem(
                f"response_format is not supported for {model}; GPT image models always "
                "return b64_json.",
                "response_format",
                "unknown_parameter",
            )
        )
    prompt = fields.get("prompt")
    if prompt is not None and not prompt.strip():
        problems.append(Problem("prompt must not be empty.", "prompt"))
    elif prompt is not None and len(prompt) > PROMPT_LIMITS["gpt-image"]:
        problems.append(
            Problem(
                f"prompt is {len(prompt)} characters; {model} allows at most "
                f"{PROMPT_LIMITS['gpt-image']}.",
                "prompt",
                "string_above_max_length",
            )
        )
    problems.extend(_check_output(body))
    quality = fields.get("quality")
    if quality is not None and quality not in QUALITIES["gpt-image"]:
        problems.append(Problem(f"quality {quality!r} is not supported for {model}.", "quality"))
    size = fields.get("size")
    if size is not None and (problem := _check_size(model, "gpt-image", size)):
        problems.append(problem)

    if not images:
        problems.append(Problem("image is required.", "image", "missing_required_parameter"))
    if len(images) > EDIT_MAX_IMAGES:
        problems.append(
            Problem(f"{len(images)} images; at most {EDIT_MAX_IMAGES} are allowed.", "image")
        )
    for number, part in enumerate(images):
        problems.extend(
            _check_upload(part, f"image[{number}]", EDIT_IMAGE_FORMATS, EDIT_IMAGE_MAX_BYTES)
        )
    if mask is not None:
        problems.extend(_check_upload(mask, "mask", frozenset({"png"}), EDIT_MASK_MAX_BYTES))
        first = images[0].dimensions if images else None
        size_of_mask = mask.dimensions
        if first is not None and size_of_mask is not None and first != size_of_mask:
            problems.append(
                Problem(
                    f"Invalid mask: {size_of_mask[0]}x{size_of_mask[1]} does not match the first "
                    f"image's {first[0]}x{first[1]}; mask dimensions must match exactly.",
                    "mask",
                )
            )
    return problems


# --------------------------------------------------------------------------------------------
# Scripted replies
# --------------------------------------------------------------------------------------------


class ReplyKind(enum.Enum):
    AUTO = "auto"
    JSON = "json"
    B64 = "b64"
    URL = "url"
    RAW = "raw"
    HANG = "hang"
    DISCONNECT = "disconnect"


@dataclass(frozen=True)
class CdnBehavior:
    """How the fake CDN serves one file.

    ``body``/``content_type`` replace what is served (for non-image bodies); ``huge_size``
    streams that many bytes without holding them in memory; ``content_length`` sends that
    header whatever the real body length is (a lower value truncates the body, a higher one
    ends the connection early); ``redirects`` bounces the client through that many 302s first.
    """

    status: int = 200
    body: bytes | None = None
    content_type: str | None = None
    huge_size: int | None = None
    advertise_length: bool = True
    content_length: int | None = None
    redirects: int = 0
    redirect_to: str | None = None
    latency: float = 0.0
    chunk_delay: float = 0.0
    chunk_size: int = 64 * 1024
    hang: bool = False

    @classmethod
    def not_found(cls) -> CdnBehavior:
        return cls(
            status=404, body=b"<html><body>404 Not Found</body></html>", content_type="text/html"
        )

    @classmethod
    def expired(cls) -> CdnBehavior:
        """What an object-storage URL answers after its 60-minute validity (api-notes B1)."""
        return cls(
            status=403,
            body=b"<?xml version='1.0'?><Error><Code>AccessDenied</Code></Error>",
            content_type="application/xml",
        )

    @classmethod
    def non_image(
        cls,
        body: bytes = b"<html><body>not an image</body></html>",
        content_type: str = "text/html",
    ) -> CdnBehavior:
        return cls(body=body, content_type=content_type)

    @classmethod
    def mislabelled(cls, content_type: str = "image/png") -> CdnBehavior:
        """Garbage bytes that claim to be an image, so only decoding can catch them."""
        return cls(body=b"\x00" * 512, content_type=content_type)

    @classmethod
    def huge(
        cls, size: int, content_type: str = "image/png", *, advertise_length: bool = False
    ) -> CdnBehavior:
        """Stream ``size`` bytes; without ``advertise_length`` the body is chunked, so only
        counting while reading can stop it."""
        return cls(huge_size=size, content_type=content_type, advertise_length=advertise_length)

    @classmethod
    def bogus_length(cls, declared: int) -> CdnBehavior:
        return cls(content_length=declared)

    @classmethod
    def redirect(cls, times: int, *, to: str | None = None) -> CdnBehavior:
        return cls(redirects=times, redirect_to=to)

    @classmethod
    def slow(cls, latency: float, chunk_delay: float = 0.0, chunk_size: int = 1024) -> CdnBehavior:
        """Wait ``latency`` before each response, then trickle the body ``chunk_size`` bytes
        every ``chunk_delay`` seconds."""
        return cls(latency=latency, chunk_delay=chunk_delay, chunk_size=chunk_size)

    @classmethod
    def hanging(cls) -> CdnBehavior:
        return cls(hang=True)


Cdn = CdnBehavior


@dataclass(frozen=True)
class Reply:
    """One scripted answer. Build it with the classmethods, not the constructor."""

    kind: ReplyKind
    status: int = 200
    json_body: Any = None
    raw_body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)
    latency: float = 0.0
    images: tuple[bytes, ...] = ()
    revised_prompts: tuple[str | None, ...] = ()
    usage: Mapping[str, Any] | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    created: int | None = None
    cdn: tuple[CdnBehavior | None, ...] = ()
    image_ext: str | None = None
    # Bytes of the body sent before the connection is dropped; None sends it whole.
    cut_after: int | None = None

    @classmethod
    def auto(cls, *, latency: float = 0.0) -> Reply:
        """Answer like the real model would for whatever the request asked."""
        return cls(ReplyKind.AUTO, latency=latency)

    @classmethod
    def b64(
        cls,
        images: Sequence[bytes],
        usage: Mapping[str, Any] | None = DEFAULT_USAGE,
        revised_prompt: str | Sequence[str | None] | None = None,
        *,
        created: int | None = None,
        latency: float = 0.0,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> Reply:
        """``{"created", **fields, "usage", "data": [{"b64_json"}]}``; ``fields`` are top-level
        keys such as output_format, size, quality or background."""
        return cls(
            ReplyKind.B64,
            images=tuple(images),
            revised_prompts=_per_image(revised_prompt, len(images)),
            usage=usage,
            fields=fields,
            created=created,
            latency=latency,
            headers=dict(headers or {}),
        )

    @classmethod
    def url(
        cls,
        images: Sequence[bytes],
        revised_prompt: str | Sequence[str | None] | None = None,
        *,
        cdn: CdnBehavior | Sequence[CdnBehavior | None] | None = None,
        ext: str | None = None,
        usage: Mapping[str, Any] | None = None,
        created: int | None = None,
        latency: float = 0.0,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> Reply:
        """Data items with a ``url`` on the fake's CDN, published when the reply is served.

        ``cdn`` sets how the CDN treats each image (one behaviour for all, or one per image).
        """
        behaviours: tuple[CdnBehavior | None, ...]
        if cdn is None or isinstance(cdn, CdnBehavior):
            behaviours = (cdn,) * len(images)
        else:
            behaviours = tuple(cdn)
            if len(behaviours) != len(images):
                raise ValueError("give one CdnBehavior per image")
        return cls(
            ReplyKind.URL,
            images=tuple(images),
            revised_prompts=_per_image(revised_prompt, len(images)),
            usage=usage,
            fields=fields,
            created=created,
            cdn=behaviours,
            image_ext=ext,
            latency=latency,
            headers=dict(headers or {}),
        )

    @classmethod
    def json(
        cls,
        body: Any,
        status: int = 200,
        *,
        headers: Mapping[str, str] | None = None,
        latency: float = 0.0,
    ) -> Reply:
        """Any JSON body, e.g. ``{"created": 1, "data": []}`` or an item with neither field."""
        return cls(
            ReplyKind.JSON,
            status=status,
            json_body=body,
            headers=dict(headers or {}),
            latency=latency,
        )

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        type: str = "comet_api_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: float | str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        latency: float = 0.0,
    ) -> Reply:
        """The ``{"error": {message, type, param, code}}`` envelope; ``retry_after`` adds the
        header (a number of seconds, or a string sent verbatim such as an HTTP date)."""
        all_headers = dict(headers or {})
        if retry_after is not None:
            all_headers["Retry-After"] = _format_retry_after(retry_after)
        envelope = {"error": {"message": message, "type": type, "param": param, "code": code}}
        return cls(
            ReplyKind.JSON, status=status, json_body=envelope, headers=all_headers, latency=latency
        )

    @classmethod
    def raw(
        cls,
        status: int,
        body: bytes,
        content_type: str = "text/html",
        *,
        headers: Mapping[str, str] | None = None,
        latency: float = 0.0,
    ) -> Reply:
        """Exactly these bytes: malformed JSON, an HTML error page from a proxy, and so on."""
        return cls(
            ReplyKind.RAW,
            status=status,
            raw_body=body,
            content_type=content_type,
            headers=dict(headers or {}),
            latency=latency,
        )

    @classmethod
    def hang(cls) -> Reply:
        """Never answer; the handler is cancelled when the fake shuts down."""
        return cls(ReplyKind.HANG)

    @classmethod
    def disconnect(cls, *, latency: float = 0.0, partial_head: bytes = b"") -> Reply:
        """Drop the connection without any response, like a crashed proxy.

        No byte of an answer is written, unless ``partial_head`` gives raw bytes to write
        first, such as half a status line (``b"HTTP/1.1 200 OK\\r\\nContent-Ty"``): a proxy
        that died while it was answering.
        """
        return cls(ReplyKind.DISCONNECT, latency=latency, raw_body=partial_head)

    def with_latency(self, seconds: float) -> Reply:
        return replace(self, latency=seconds)

    def cut_off(self, after_bytes: int) -> Reply:
        """This reply with its whole Content-Length declared, but the connection dropped after
        the first ``after_bytes`` bytes of its body: the answer started, then the link died."""
        if after_bytes < 0:
            raise ValueError("after_bytes must be >= 0")
        return replace(self, cut_after=after_bytes)


Responder = Reply | Callable[["RecordedCall"], Reply | Awaitable[Reply]]


def _per_image(value: str | Sequence[str | None] | None, count: int) -> tuple[str | None, ...]:
    if value is None or isinstance(value, str):
        return (value,) * count
    if len(value) != count:
        raise ValueError("give one revised_prompt per image")
    return tuple(value)


def _format_retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------


@dataclass
class RecordedCall:
    """One HTTP request the fake received, and what it answered."""

    index: int
    method: str
    path: str
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes
    json: Any
    received_at: float
    status: int | None = None
    finished_at: float | None = None
    served_images: list[bytes] = field(default_factory=list)
    served_urls: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    reply: Reply | None = None
    # True when the handler was cancelled before answering: the client gave up, or the fake
    # shut down while the request hung.
    abandoned: bool = False
    # The fake's own id for this request: in its error messages' "(request id: ...)" and in
    # the ``request_id_header`` of its answer.
    upstream_request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:20])
    # An edit's multipart form: its text fields, its ``image``/``image[]`` parts in order and
    # its ``mask`` part (empty for other requests, and when the form did not parse).
    fields: dict[str, str] = field(default_factory=dict)
    images: list[UploadedPart] = field(default_factory=list)
    mask: UploadedPart | None = None

    @property
    def client_request_id(self) -> str | None:
        """The ``X-Request-Id`` header the client sent, if any."""
        return self.headers.get("X-Request-Id")

    @property
    def model(self) -> str | None:
        model = self.json.get("model") if isinstance(self.json, dict) else self.fields.get("model")
        return model if isinstance(model, str) else None

    @property
    def duration(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.received_at


# --------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------

_OPENAI_DOC: Final = "https://apidoc.cometapi.com/api/image/openai/images"


def _catalog_entry(
    model_id: str,
    provider: str,
    *,
    currency: str,
    input_price: float | None = None,
    output_price: float | None = None,
    per_request: float | None = None,
) -> dict[str, Any]:
    return {
        "id": model_id,
        "provider": provider,
        "model_type": "image",
        "features": ["text-to-image"],
        "pricing": {
            "currency": currency,
            "input": input_price,
            "output": output_price,
            "per_request": per_request,
            "per_second": None,
        },
        "api_doc_url": _OPENAI_DOC,
    }


# gpt-image-2, gpt-image-1.5 and gpt-image-1-mini prices are from api-notes B4. The others were
# not published anywhere we could cite, so they are plausible placeholders; the bot must read
# prices at runtime, so tests should not depend on these particular numbers.
DEFAULT_CATALOG: Final[tuple[Mapping[str, Any], ...]] = (
    _catalog_entry("dall-e-3", "OpenAI", currency="USD / Request", per_request=0.04),
    _catalog_entry("dall-e-2", "OpenAI", currency="USD / Request", per_request=0.02),
    _catalog_entry(
        "gpt-image-1", "OpenAI", currency="USD / M Tokens", input_price=8, output_price=32
    ),
    _catalog_entry(
        "gpt-image-1-mini", "OpenAI", currency="USD / M Tokens", input_price=6.4, output_price=25.6
    ),
    _catalog_entry(
        "gpt-image-1.5", "OpenAI", currency="USD / M Tokens", input_price=6.4, output_price=25.6
    ),
    _catalog_entry(
        "gpt-image-2", "OpenAI", currency="USD / M Tokens", input_price=4, output_price=24
    ),
    _catalog_entry("qwen-image", "Alibaba", currency="USD / Request", per_request=0.03),
)


# --------------------------------------------------------------------------------------------
# CDN
# --------------------------------------------------------------------------------------------


@dataclass
class CdnFile:
    data: bytes
    content_type: str
    behavior: CdnBehavior


_HUGE_BLOCK: Final = random.Random(0).randbytes(64 * 1024)


class FakeCdn:
    """Files served at ``/cdn/<name>``; what the ``url`` replies point at."""

    def __init__(self, api: FakeCometAPI) -> None:
        self._api = api
        self.files: dict[str, CdnFile] = {}
        self._counter = itertools.count(1)

    def put(
        self,
        data: bytes,
        *,
        ext: str | None = None,
        content_type: str | None = None,
        behavior: CdnBehavior | None = None,
        name: str | None = None,
    ) -> str:
        """Store ``data`` and return the URL a client should fetch."""
        fmt = sniff_format(data)
        ext = (ext or fmt or "bin").lstrip(".")
        if name is None:
            name = f"img-{next(self._counter):05d}-{uuid.uuid4().hex[:8]}.{ext}"
        if content_type is None:
            content_type = MIME_TYPES.get(fmt or ext, "application/octet-stream")
        self.files[name] = CdnFile(data, content_type, behavior or CdnBehavior())
        return self.url_for(name)

    def url_for(self, name: str) -> str:
        hops = 0
        if name in self.files:
            behaviour = self.files[name].behavior
            # An off-site redirect target needs at least one hop to be reached at all.
            hops = max(behaviour.redirects, 1 if behaviour.redirect_to else 0)
        if hops > 0:
            return f"{self._api.root_url}/cdn/redirect/{hops}/{name}"
        return f"{self._api.root_url}/cdn/{name}"

    def name_of(self, url: str) -> str:
        return url.rstrip("/").rsplit("/", 1)[-1]

    def set_behavior(self, name_or_url: str, behavior: CdnBehavior) -> None:
        self.files[self.name_of(name_or_url)].behavior = behavior

    def hits(self, name_or_url: str) -> int:
        """How many GETs reached this file (redirect hops included)."""
        name = self.name_of(name_or_url)
        return sum(
            1
            for call in self._api.requests
            if call.path.startswith("/cdn/") and call.path.rsplit("/", 1)[-1] == name
        )


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

_CALL: Final = web.RequestKey("call", RecordedCall)


class FakeCometAPI:
    """CometAPI on 127.0.0.1:<random port>. See the module docstring for an example.

    Attributes a test may set: ``default`` (answer when nothing is queued; a Reply or a
    function of the RecordedCall), ``reject_invalid`` (answer 400 to invalid requests, as
    upstream does, instead of the scripted reply), ``models_catalog``, ``catalog_reply`` (if set,
    ``GET /api/models`` answers with it instead of the catalog), ``models_reply`` (same for
    ``GET /v1/models``), ``auto_image_long_edge`` (pixel size of auto-generated images) and
    ``request_id_header`` (the response header that carries each call's
    ``upstream_request_id``; None sends none). CometAPI documents no such header, only the id
    in its error text, so the default is the common ``x-request-id``; a Reply's own
    ``headers`` take precedence over it.

    ``calls`` holds only ``POST /v1/images/generations`` requests (rejected ones included);
    ``edit_calls`` holds only ``POST /v1/images/edits`` requests, each with its form parsed
    into ``fields``, ``images`` and ``mask``; ``requests`` holds every request, CDN downloads
    and catalog fetches too. A request rejected for auth does not consume a queued reply; nor
    does an invalid one while ``reject_invalid``.

    Edits are scripted apart from generations, with the same Reply kinds: ``queue_edit`` (the
    next edit answers), ``edit_default`` (when none is queued; ``Reply.auto()`` answers in
    the shape of CometAPI's documented edit answer) and ``wait_for_edit_calls``.
    """

    def __init__(self, api_key: str = "test-key", *, host: str = "127.0.0.1") -> None:
        self.api_key = api_key
        self.host = host
        self.default: Responder = Reply.auto()
        self.reject_invalid = True
        # Deep copy: a test editing a price must not change the default for later tests.
        self.models_catalog: list[Mapping[str, Any]] = copy.deepcopy(list(DEFAULT_CATALOG))
        self.catalog_reply: Reply | None = None
        self.models_reply: Reply | None = None
        self.auto_image_long_edge = 64
        self.request_id_header: str | None = "x-request-id"
        self.edit_default: Responder = Reply.auto()
        self.calls: list[RecordedCall] = []
        self.edit_calls: list[RecordedCall] = []
        self.requests: list[RecordedCall] = []
        self.violations: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.cdn = FakeCdn(self)
        self._script: deque[Responder] = deque()
        self._edit_script: deque[Responder] = deque()
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._new_call = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        # Large enough for edits at their limits: 16 images under 25 MB each, and a mask.
        app = web.Application(
            middlewares=[self._track],
            client_max_size=(EDIT_MAX_IMAGES + 1) * EDIT_IMAGE_MAX_BYTES,
        )
        app.on_response_prepare.append(self._stamp_request_id)
        app.router.add_post(GENERATIONS_PATH, self._handle_generation)
        app.router.add_post(EDITS_PATH, self._handle_edit)
        app.router.add_get("/v1/models", self._handle_v1_models)
        app.router.add_get("/api/models", self._handle_catalog)
        app.router.add_get("/cdn/redirect/{hops:\\d+}/{name}", self._handle_cdn_redirect)
        app.router.add_get("/cdn/{name}", self._handle_cdn)
        # handler_cancellation stops a handler when its client gives up, so in_flight counts
        # what the client still waits for rather than abandoned sleeps.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        # Hanging and slow handlers would otherwise hold up runner.cleanup() for the whole
        # shutdown timeout (or forever for a CDN stream), so end them first.
        handlers = [task for task in self._handlers if not task.done()]
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=2.0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeCometAPI is not running; use `async with FakeCometAPI()`")
        return self._port

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    # -- scripting --------------------------------------------------------------------------

    def queue(self, *replies: Responder) -> None:
        """Answer the next generation requests with these replies, in order."""
        self._script.extend(replies)

    def queue_edit(self, *replies: Responder) -> None:
        """Answer the next edit requests with these replies, in order."""
        self._edit_script.extend(replies)

    @property
    def pending_replies(self) -> int:
        return len(self._script)

    @property
    def pending_edit_replies(self) -> int:
        return len(self._edit_script)

    # A timeout argument (rather than asyncio.timeout around the call) keeps test code short and
    # lets the failure message say how many calls did arrive.
    async def wait_for_calls(
        self,
        n: int,
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        finished: bool = False,
    ) -> list[RecordedCall]:
        """Wait until ``n`` generation requests arrived (or were answered, if ``finished``)."""
        return await self._wait_for(self.calls, "generation", n, timeout, finished=finished)

    async def wait_for_edit_calls(
        self,
        n: int,
        timeout: float = 5.0,  # noqa: ASYNC109
        *,
        finished: bool = False,
    ) -> list[RecordedCall]:
        """Wait until ``n`` edit requests arrived (or were answered, if ``finished``)."""
        return await self._wait_for(self.edit_calls, "edit", n, timeout, finished=finished)

    async def _wait_for(
        self,
        calls: list[RecordedCall],
        what: str,
        n: int,
        timeout: float,  # noqa: ASYNC109
        *,
        finished: bool,
    ) -> list[RecordedCall]:
        def ready() -> bool:
            done = [c for c in calls if c.finished_at is not None] if finished else calls
            return len(done) >= n

        try:
            async with asyncio.timeout(timeout):
                while not ready():
                    self._new_call.clear()
                    await self._new_call.wait()
        except TimeoutError:
            raise AssertionError(
                f"expected {n} {what} calls within {timeout}s, got {len(calls)}"
            ) from None
        return list(calls)

    def requests_to(self, path_prefix: str) -> list[RecordedCall]:
        return [call for call in self.requests if call.path.startswith(path_prefix)]

    # -- plumbing ---------------------------------------------------------------------------

    @web.middleware
    async def _track(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        body = await request.read()
        try:
            parsed: Any = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            parsed = None
        call = RecordedCall(
            index=len(self.requests),
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            json=parsed,
            received_at=time.monotonic(),
        )
        self.requests.append(call)
        request[_CALL] = call
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            call.status = exc.status
            raise
        except asyncio.CancelledError:
            call.abandoned = True
            raise
        finally:
            call.finished_at = time.monotonic()
            self._handlers.discard(task)
            self._new_call.set()
        call.status = response.status
        return response

    def _violation(self, call: RecordedCall, message: str) -> None:
        call.violations.append(message)
        self.violations.append(f"{call.method} {call.path} (request #{call.index}): {message}")

    async def _stamp_request_id(self, request: web.Request, response: web.StreamResponse) -> None:
        """Give every API answer its call's id, just before its headers are sent."""
        call = request.get(_CALL)
        # The CDN is another host in reality; only the API's own answers carry the id.
        if call is None or self.request_id_header is None or call.path.startswith("/cdn/"):
            return
        response.headers.setdefault(self.request_id_header, call.upstream_request_id)

    def _error_response(
        self,
        call: RecordedCall,
        status: int,
        message: str,
        *,
        type_: str = "comet_api_error",
        code: str | None = None,
        param: str | None = None,
    ) -> web.Response:
        envelope = {
            "error": {
                "message": f"{message} (request id: {call.upstream_request_id})",
                "type": type_,
                "param": param,
                "code": code,
            }
        }
        return web.json_response(envelope, status=status)

    def _check_auth(self, request: web.Request, call: RecordedCall) -> web.Response | None:
        header = request.headers.get("Authorization")
        if header is None:
            self._violation(call, "missing Authorization header")
            return self._error_response(call, 401, "Unauthorized: no API key provided", param="")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or not token:
            self._violation(call, f"Authorization header is not 'Bearer <key>': {header[:20]!r}")
            return self._error_response(
                call, 401, "Unauthorized: malformed Authorization header", param=""
            )
        if token != self.api_key:
            # A wrong key is a configuration scenario tests set up on purpose, not a bot bug.
            return self._error_response(
                call, 401, "Invalid token", code="invalid_api_key", param=""
            )
        return None

    # -- generation -------------------------------------------------------------------------

    async def _handle_generation(self, request: web.Request) -> web.StreamResponse:
        call: RecordedCall = request[_CALL]
        self.calls.append(call)
        self._new_call.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            rejection = self._check_auth(request, call) or self._check_generation_body(
                request, call
            )
            if rejection is not None:
                return rejection
            responder = self._script.popleft() if self._script else self.default
            reply = responder(call) if callable(responder) else responder
            if inspect.isawaitable(reply):
                reply = await reply
            return await self._serve(request, call, reply)
        finally:
            self.in_flight -= 1

    def _check_generation_body(
        self, request: web.Request, call: RecordedCall
    ) -> web.Response | None:
        if request.content_type != "application/json":
            self._violation(call, f"Content-Type is {request.content_type!r}, not application/json")
            if self.reject_invalid:
                return self._error_response(
                    call,
                    400,
                    "Content-Type must be application/json",
                    code="invalid_request",
                    param="",
                )
        if not isinstance(call.json, dict):
            self._violation(call, "body is not a JSON object")
            return self._error_response(
                call,
                400,
                "invalid JSON body",
                type_="invalid_request_error",
                code="invalid_request",
            )
        problems = validate_generation_request(call.json)
        for problem in problems:
            self._violation(call, f"[{call.model}] {problem.message}")
        if problems and self.reject_invalid:
            first = problems[0]
            return self._error_response(
                call,
                400,
                first.message,
                type_="invalid_request_error",
                code=first.code,
                param=first.param,
            )
        return None

    # -- edits ------------------------------------------------------------------------------

    async def _handle_edit(self, request: web.Request) -> web.StreamResponse:
        call: RecordedCall = request[_CALL]
        self.edit_calls.append(call)
        self._new_call.set()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            rejection = self._check_auth(request, call) or await self._check_edit_form(
                request, call
            )
            if rejection is not None:
                return rejection
            responder = self._edit_script.popleft() if self._edit_script else self.edit_default
            reply = responder(call) if callable(responder) else responder
            if inspect.isawaitable(reply):
                reply = await reply
            return await self._serve(request, call, reply)
        finally:
            self.in_flight -= 1

    async def _check_edit_form(
        self, request: web.Request, call: RecordedCall
    ) -> web.Response | None:
        if request.content_type != "multipart/form-data":
            self._violation(
                call, f"Content-Type is {request.content_type!r}, not multipart/form-data"
            )
            return self._error_response(
                call,
                400,
                "Content-Type must be multipart/form-data",
                type_="invalid_request_error",
                code="invalid_request",
            )
        try:
            await self._read_edit_form(request, call)
        except (ValueError, AssertionError, UnicodeDecodeError) as error:
            self._violation(call, f"malformed multipart body: {error}")
            return self._error_response(
                call,
                400,
                "could not parse multipart form",
                type_="invalid_request_error",
                code="invalid_request",
            )
        problems = validate_edit_request(call.fields, call.images, call.mask)
        for problem in problems:
            self._violation(call, f"[{call.model}] {problem.message}")
        if problems and self.reject_invalid:
            first = problems[0]
            return self._error_response(
                call,
                400,
                first.message,
                type_="invalid_request_error",
                code=first.code,
                param=first.param,
            )
        return None

    async def _read_edit_form(self, request: web.Request, call: RecordedCall) -> None:
        """Parse the recorded body with aiohttp's multipart reader into the call's form."""
        # The tracking middleware has read the body already; the reader gets it from memory.
        stream = StreamReader(
            BaseProtocol(asyncio.get_running_loop()),
            max(len(call.body), 2**16),
            loop=asyncio.get_running_loop(),
        )
        stream.feed_data(call.body)
        stream.feed_eof()
        reader = MultipartReader(request.headers, stream)
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ValueError("nested multipart parts are not form fields")
            name = part.name
            if name is None:
                raise ValueError("a part has no name")
            data = bytes(await part.read(decode=False))
            if name in _EDIT_FILE_FIELDS:
                upload = UploadedPart(name, part.filename, part.headers.get("Content-Type"), data)
                if name == "mask":
                    if call.mask is not None:
                        self._violation(call, "more than one mask part")
                    call.mask = upload
                else:
                    call.images.append(upload)
                continue
            if part.filename is not None:
                self._violation(call, f"unexpected file part {name!r}")
            if name in call.fields:
                self._violation(call, f"form field {name!r} sent twice")
            call.fields[name] = data.decode("utf-8")
        names = {image.name for image in call.images}
        if len(names) > 1:
            self._violation(call, "images sent both as 'image' and 'image[]'")

    def _auto_edit_reply(self, call: RecordedCall) -> Reply:
        """CometAPI's documented edit answer: b64_json only, usage with its extra fields."""
        fields = call.fields
        if fields.get("stream") == "true":
            return Reply.error(
                400,
                "stream is not supported on this endpoint",
                type="invalid_request_error",
                code="invalid_request",
                param="stream",
            )
        raw_n = fields.get("n", "1")
        n = int(raw_n) if raw_n.isdigit() and 1 <= int(raw_n) <= 10 else 1
        width, height = self._auto_dimensions(fields.get("size", "auto"))
        fmt = fields.get("output_format")
        fmt = fmt if fmt in ("png", "jpeg", "webp") else "png"
        transparent = fields.get("background") == "transparent"
        seeds = [500_000 + len(self.edit_calls) * 1000 + i for i in range(n)]
        images = [self._auto_image(fmt, width, height, seed, transparent) for seed in seeds]
        text_tokens = max(1, len(fields.get("prompt", "")) // 4)
        # The sample's 768 image tokens for its one input image, per image here.
        image_tokens = 768 * max(1, len(call.images))
        output_tokens = {"low": 196, "medium": 1056, "high": 4160}.get(
            fields.get("quality", "auto"), 1056
        ) * n
        usage = {
            **copy.deepcopy(dict(EDIT_SAMPLE_USAGE)),
            "input_tokens": image_tokens + text_tokens,
            "output_tokens": output_tokens,
            "total_tokens": image_tokens + text_tokens + output_tokens,
            "input_tokens_details": {
                "image_tokens": image_tokens,
                "text_tokens": text_tokens,
                "cached_tokens_details": {},
            },
        }
        return Reply.b64(images, usage=usage)

    async def _serve(
        self, request: web.Request, call: RecordedCall, reply: Reply
    ) -> web.StreamResponse:
        call.reply = reply
        if reply.latency > 0:
            await asyncio.sleep(reply.latency)
        if reply.kind is ReplyKind.AUTO:
            auto = self._auto_edit_reply if call.path == EDITS_PATH else self._auto_reply
            automatic = replace(auto(call), cut_after=reply.cut_after)
            return await self._serve(request, call, automatic)
        if reply.kind is ReplyKind.HANG:
            await asyncio.Future()
        if reply.kind is ReplyKind.DISCONNECT:
            await _drop_connection(request, reply.raw_body)
        response = self._response_for(call, reply)
        if reply.cut_after is not None:
            await _send_cut_off(request, response, reply.cut_after)
        return response

    def _response_for(self, call: RecordedCall, reply: Reply) -> web.Response:
        headers = dict(reply.headers)
        if reply.kind is ReplyKind.RAW:
            return web.Response(
                status=reply.status,
                body=reply.raw_body,
                headers={**headers, "Content-Type": reply.content_type},
            )
        if reply.kind is ReplyKind.JSON:
            return web.json_response(reply.json_body, status=reply.status, headers=headers)
        return web.json_response(
            self._images_body(call, reply), status=reply.status, headers=headers
        )

    def _images_body(self, call: RecordedCall, reply: Reply) -> dict[str, Any]:
        body: dict[str, Any] = {"created": reply.created or int(time.time())}
        body.update(reply.fields)
        if reply.usage is not None:
            body["usage"] = copy.deepcopy(dict(reply.usage))
        items: list[dict[str, Any]] = []
        for i, image in enumerate(reply.images):
            item: dict[str, Any] = {}
            revised = reply.revised_prompts[i] if i < len(reply.revised_prompts) else None
            if revised is not None:
                item["revised_prompt"] = revised
            if reply.kind is ReplyKind.B64:
                item["b64_json"] = base64.b64encode(image).decode("ascii")
            else:
                behaviour = reply.cdn[i] if i < len(reply.cdn) else None
                url = self.cdn.put(image, ext=reply.image_ext, behavior=behaviour)
                item["url"] = url
                call.served_urls.append(url)
            items.append(item)
        body["data"] = items
        call.served_images = list(reply.images)
        return body

    def _auto_reply(self, call: RecordedCall) -> Reply:
        body: dict[str, Any] = call.json if isinstance(call.json, dict) else {}
        model = call.model or "dall-e-2"
        family = model_family(model)
        # With reject_invalid off the body may be nonsense; answer something rather than crash.
        n = body["n"] if isinstance(body.get("n"), int) and 1 <= body["n"] <= 10 else 1
        size = body["size"] if isinstance(body.get("size"), str) else "auto"
        width, height = self._auto_dimensions(size)
        # Seeds depend on the call number so every image the fake ever serves is distinct.
        seeds = [len(self.calls) * 1000 + i for i in range(n)]
        raw_prompt = body.get("prompt")
        prompt = raw_prompt if isinstance(raw_prompt, str) else ""

        if family in ("gpt-image", "other"):
            if body.get("stream"):
                return Reply.error(
                    400,
                    f"stream is not supported for {model} on this endpoint",
                    type="invalid_request_error",
                    code="invalid_request",
                    param="stream",
                )
            fmt = body.get("output_format")
            fmt = fmt if fmt in ("png", "jpeg", "webp") else "png"
            transparent = body.get("background") == "transparent"
            images = [self._auto_image(fmt, width, height, seed, transparent) for seed in seeds]
            if family == "other":
                return Reply.b64(images, usage=None)
            quality = body.get("quality") or "auto"
            text_tokens = max(1, len(prompt) // 4)
            image_tokens = {"low": 208, "medium": 1056, "high": 4160}.get(quality, 1056) * n
            usage = {
                "input_tokens": text_tokens,
                "input_tokens_details": {"image_tokens": 0, "text_tokens": text_tokens},
                "output_tokens": image_tokens,
                "output_tokens_details": {"image_tokens": image_tokens, "text_tokens": 0},
                "total_tokens": text_tokens + image_tokens,
            }
            return Reply.b64(
                images,
                usage=usage,
                background="transparent" if transparent else "opaque",
                output_format=fmt,
                quality=quality if quality != "auto" else "medium",
                size=size if size != "auto" else "1024x1024",
            )

        revised = f"A detailed illustration of {prompt}" if family == "dall-e-3" else None
        if family in ("dall-e-2", "dall-e-3") and body.get("response_format") == "b64_json":
            return Reply.b64(
                [make_image("png", width, height, seed) for seed in seeds], None, revised
            )
        # CometAPI's dall-e-3 sample URL is a .webp on its CDN (api-notes B1).
        fmt = "webp" if family == "dall-e-3" else "png"
        return Reply.url([make_image(fmt, width, height, seed) for seed in seeds], revised)

    def _auto_dimensions(self, size: str) -> tuple[int, int]:
        match = _QWEN_SIZE_RE.match(size)
        if match is None:
            return self.auto_image_long_edge, self.auto_image_long_edge
        width, height = int(match[1]), int(match[2])
        scale = self.auto_image_long_edge / max(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    @staticmethod
    def _auto_image(fmt: str, width: int, height: int, seed: int, transparent: bool) -> bytes:
        if transparent and fmt == "png":
            return make_transparent_png(width, height, seed)
        if transparent and fmt == "webp":
            return make_transparent_webp(width, height, seed)
        return make_image(fmt, width, height, seed)

    # -- models -----------------------------------------------------------------------------

    async def _handle_catalog(self, request: web.Request) -> web.StreamResponse:
        call: RecordedCall = request[_CALL]
        if self.catalog_reply is not None:
            return await self._serve(request, call, self.catalog_reply)
        entries = [copy.deepcopy(dict(e)) for e in self.models_catalog]
        page, page_size = _int_param(request, "page"), _int_param(request, "page_size")
        if page_size > 0:
            # Pages count from 1; the documented unpaginated answer reports page 0 and size 0.
            start = (max(page, 1) - 1) * page_size
            data, page = entries[start : start + page_size], max(page, 1)
        else:
            data, page = entries, 0
        return web.json_response(
            {
                "success": True,
                "page": page,
                "page_size": page_size,
                "total": len(entries),
                "data": data,
            }
        )

    async def _handle_v1_models(self, request: web.Request) -> web.StreamResponse:
        call: RecordedCall = request[_CALL]
        rejection = self._check_auth(request, call)
        if rejection is not None:
            return rejection
        if self.models_reply is not None:
            return await self._serve(request, call, self.models_reply)
        data = [
            {
                "id": entry["id"],
                "object": "model",
                "created": 1_700_000_000,
                "owned_by": str(entry.get("provider", "custom")).lower(),
            }
            for entry in self.models_catalog
        ]
        return web.json_response({"object": "list", "data": data})

    # -- CDN --------------------------------------------------------------------------------

    def _cdn_file(self, request: web.Request) -> CdnFile | None:
        call: RecordedCall = request[_CALL]
        if "Authorization" in request.headers:
            # The real CDN is another host; sending it the API key would leak the key.
            self._violation(call, "Authorization header sent to the image CDN")
        return self.cdn.files.get(request.match_info["name"])

    async def _handle_cdn_redirect(self, request: web.Request) -> web.StreamResponse:
        file = self._cdn_file(request)
        hops = int(request.match_info["hops"])
        name = request.match_info["name"]
        if file is not None and file.behavior.latency > 0:
            await asyncio.sleep(file.behavior.latency)
        if hops > 1:
            target = f"{self.root_url}/cdn/redirect/{hops - 1}/{name}"
        elif file is not None and file.behavior.redirect_to is not None:
            target = file.behavior.redirect_to
        else:
            target = f"{self.root_url}/cdn/{name}"
        raise web.HTTPFound(location=target)

    async def _handle_cdn(self, request: web.Request) -> web.StreamResponse:
        file = self._cdn_file(request)
        if file is None:
            return web.Response(
                status=404, text="<html>404 Not Found</html>", content_type="text/html"
            )
        behaviour = file.behavior
        if behaviour.latency > 0 and not request.path.startswith("/cdn/redirect/"):
            await asyncio.sleep(behaviour.latency)
        if behaviour.hang:
            await asyncio.Future()
        body = file.data if behaviour.body is None else behaviour.body
        content_type = behaviour.content_type or file.content_type
        if (
            behaviour.huge_size is None
            and behaviour.content_length is None
            and not behaviour.chunk_delay
        ):
            return web.Response(
                status=behaviour.status,
                body=body,
                content_type=None,
                headers={"Content-Type": content_type},
            )

        response = web.StreamResponse(
            status=behaviour.status, headers={"Content-Type": content_type}
        )
        if behaviour.huge_size is not None:
            total = behaviour.huge_size
            chunks = _huge_chunks(body, total, behaviour.chunk_size)
        else:
            total = len(body)
            chunks = _chunks(body, behaviour.chunk_size)
        if behaviour.content_length is not None:
            response.content_length = behaviour.content_length
            # With a lie in the header the connection must end after this response, or the
            # client would wait for bytes that never come.
            response.force_close()
        elif behaviour.advertise_length:
            response.content_length = total
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        async for chunk in chunks:
            await response.write(chunk)
            if behaviour.chunk_delay:
                await asyncio.sleep(behaviour.chunk_delay)
        await response.write_eof()
        return response


async def _drop_connection(request: web.Request, written: bytes = b"") -> NoReturn:
    """Write ``written`` raw (nothing by default), then close the connection; never returns."""
    if request.transport is not None:
        if written:
            request.transport.write(written)
        # close() sends what was written first, then the FIN.
        request.transport.close()
    # handler_cancellation cancels this task once the transport reports the loss.
    await asyncio.Future()
    raise AssertionError("unreachable")


async def _send_cut_off(request: web.Request, full: web.Response, after: int) -> NoReturn:
    """Send ``full``'s status and headers, declaring its whole length, then only the first
    ``after`` bytes of its body before the connection drops."""
    body = full.body
    assert isinstance(body, bytes)
    response = web.StreamResponse(status=full.status, headers=full.headers)
    response.content_length = len(body)
    await response.prepare(request)
    # At least one byte short of the declared length, or it would not be cut at all.
    await response.write(body[: min(after, len(body) - 1)])
    await _drop_connection(request)


def _int_param(request: web.Request, name: str) -> int:
    try:
        return int(request.query.get(name, "0"))
    except ValueError:
        return 0


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _huge_chunks(prefix: bytes, total: int, size: int) -> AsyncIterator[bytes]:
    """``total`` bytes: a real image header first (so magic-byte sniffing passes), then noise,
    generated block by block so a 50 MiB body costs 64 KiB of memory."""
    size = min(size, len(_HUGE_BLOCK))
    head = prefix[: min(len(prefix), total, size)]
    if head:
        yield head
    sent = len(head)
    while sent < total:
        block = _HUGE_BLOCK[: min(size, total - sent)]
        yield block
        sent += len(block)
