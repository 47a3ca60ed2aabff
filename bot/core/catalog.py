"""What each CometAPI image model accepts: the one source of truth.

Validation, the slash command's choices, autocomplete and the README's model table all read
this module. Values come from OpenAI's `CreateImageRequest` and `CreateImageEditRequest`
(openai/openai-openapi @ f85dbe22, mirrored in shared/specs) and CometAPI's image-generation and
image-editing pages; where those leave a value open, the comment on that value says what was
chosen and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class Family(StrEnum):
    """Model families: each family shares its request shape."""

    DALL_E = "dall-e"
    GPT_IMAGE = "gpt-image"
    QWEN = "qwen"


STYLES: Final = ("vivid", "natural")
BACKGROUNDS: Final = ("auto", "transparent", "opaque")
OUTPUT_FORMATS: Final = ("png", "jpeg", "webp")
# CreateImageRequest.moderation (openai-openapi @ f85dbe22): GPT image model generations.
MODERATION_LEVELS: Final = ("auto", "low")
COMPRESSION_RANGE: Final = (0, 100)
# Discord caps a slash command's integer option and a message's attachments at these.
MAX_N_OPTION: Final = 10
# Discord's own cap on a string option; models with a larger limit are capped by Discord first.
DISCORD_MAX_STRING: Final = 6000

_SIZE_PATTERN: Final = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")


@dataclass(frozen=True, slots=True)
class CustomSizeRule:
    """Free WIDTHxHEIGHT sizes, as gpt-image-2 takes them."""

    multiple_of: int
    max_aspect_ratio: float
    max_long_edge: int
    max_short_edge: int
    min_pixels: int
    max_pixels: int

    def problem(self, width: int, height: int) -> str | None:
        """Why WIDTHxHEIGHT breaks the rule, or None when it is allowed."""
        long_edge, short_edge = max(width, height), min(width, height)
        if width % self.multiple_of or height % self.multiple_of:
            return f"both sides must be multiples of {self.multiple_of}"
        if long_edge / short_edge > self.max_aspect_ratio:
            ratio = int(self.max_aspect_ratio)
            return f"the aspect ratio must be between 1:{ratio} and {ratio}:1"
        if long_edge > self.max_long_edge or short_edge > self.max_short_edge:
            return f"the largest size is {self.max_long_edge}x{self.max_short_edge}"
        if width * height < self.min_pixels:
            return f"it must have at least {self.min_pixels:,} pixels"
        if width * height > self.max_pixels:
            return f"it must have at most {self.max_pixels:,} pixels"
        return None

    def nearest(self, width: int, height: int) -> tuple[int, int]:
        """The closest allowed size, for autocomplete to suggest instead of a refused one."""
        step = self.multiple_of

        def snap(value: int, low: int, high: int) -> int:
            return max(low, min(high, round(value / step) * step))

        width = snap(width, step, self.max_long_edge)
        height = snap(height, step, self.max_long_edge)
        # Clamp the short edge and the ratio, then grow or shrink to the pixel bounds.
        if min(width, height) > self.max_short_edge:
            if width < height:
                width = self.max_short_edge
            else:
                height = self.max_short_edge
        long_edge = max(width, height)
        min_short = -(-long_edge // int(self.max_aspect_ratio) // step) * step
        if width < height:
            width = max(width, min_short)
        else:
            height = max(height, min_short)
        while width * height < self.min_pixels:
            width, height = width + step, height + step
            width = min(width, self.max_long_edge)
            height = min(height, self.max_long_edge)
        while width * height > self.max_pixels:
            width, height = width - step, height - step
        return width, height


# --- Edits (reference images) ---------------------------------------------------------------
# Sources, cited beside each value below:
# [comet-edit] https://apidoc.cometapi.com/api/image/openai/image-editing (current page)
# [comet-edit-old] https://cometapi.mintlify.app/api/image/openai/image-editing (earlier version)
# [comet-gpt1] https://apidoc.cometapi.com/image-editing-gpt-image-1-16347487e0 (older page)
# [openai-edit] `CreateImageEditRequest` and `InputFidelity` in shared/specs/openai-openapi.yaml
#     (openai/openai-openapi @ f85dbe22)

MEGABYTE: Final = 1_000_000
# The bot's own cap on reference images per request, so one command takes at most this many
# attachment options; [openai-edit] allows "up to 16 images" (`image` maxItems: 16).
MAX_REFERENCES_OPTION: Final = 3
OPENAI_MAX_REFERENCES: Final = 16  # [openai-edit] image: maxItems 16
# [comet-gpt1] "PNG, WEBP, or JPG, each <25MB"; [openai-edit] "png, webp, or jpg".
EDIT_FORMATS: Final = ("png", "webp", "jpeg")
# [comet-gpt1] "each <25MB" for gpt-image-1; [openai-edit] says "less than 50MB". The lower
# wins, in decimal megabytes (25,000,000 bytes is under 25 MB however a megabyte is counted).
EDIT_MAX_BYTES: Final = 25 * MEGABYTE
# [comet-gpt1] "Optional PNG mask image ... Must match size of image and be <4MB. Applies to
# first image."; [openai-edit] mask: "a valid PNG file, less than 4MB, and have the same
# dimensions as `image`"; [comet-edit] "The mask dimensions must match the source image exactly".
MASK_MAX_BYTES: Final = 4 * MEGABYTE
# [openai-edit] InputFidelity: enum high, low; "only supported for gpt-image-1 and gpt-image-1.5
# and later models, unsupported for gpt-image-1-mini".
INPUT_FIDELITIES: Final = ("high", "low")
# The generation options [openai-edit] also defines for edits: size, quality, n, background,
# output_format, output_compression. `moderation` is a CreateImageRequest field only, and
# `style` is dall-e-3's (a generations-only model); neither is in CreateImageEditRequest.
EDIT_OPTIONS: Final = frozenset(
    {"size", "quality", "n", "background", "output_format", "output_compression"}
)


@dataclass(frozen=True, slots=True)
class MaskRule:
    """What a mask must be: its format, its largest size, and that it matches the first image."""

    format: str
    max_bytes: int
    same_size_as_first_image: bool


@dataclass(frozen=True, slots=True)
class EditSpec:
    """How a model edits: the reference images it takes, its mask, and the options that apply."""

    max_images: int
    """How many reference images the bot sends (its own cap, at most what upstream allows)."""
    formats: tuple[str, ...]
    """ImageFormat names a reference may be (sniffed from the bytes)."""
    max_bytes: int
    """The largest reference image, per image."""
    mask: MaskRule | None
    """None: the model takes no mask."""
    input_fidelities: tuple[str, ...]
    """Values `input_fidelity` may take; empty when the model does not take it."""
    options: frozenset[str]
    """The generation options that still apply when editing."""

    @property
    def takes_input_fidelity(self) -> bool:
        """Whether `input_fidelity` may be sent with this model's edits."""
        return bool(self.input_fidelities)


_MASK: Final = MaskRule(format="png", max_bytes=MASK_MAX_BYTES, same_size_as_first_image=True)


def _gpt_edit(*, input_fidelity: bool) -> EditSpec:
    return EditSpec(
        max_images=MAX_REFERENCES_OPTION,
        formats=EDIT_FORMATS,
        max_bytes=EDIT_MAX_BYTES,
        mask=_MASK,
        input_fidelities=INPUT_FIDELITIES if input_fidelity else (),
        options=EDIT_OPTIONS,
    )


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything one model accepts and how the bot talks to it."""

    name: str
    family: Family
    summary: str
    sizes: tuple[str, ...]
    custom_sizes: CustomSizeRule | None
    default_size: str | None
    qualities: tuple[str, ...]
    default_quality: str | None
    max_n: int
    prompt_limit: int
    supports_style: bool
    supports_gpt_options: bool
    """output_format, output_compression and background."""
    response_format: str | None
    """What to ask for in `response_format`; None means the field is never sent."""
    returns_usage: bool
    edit: EditSpec | None = None
    """How the model edits reference images; None: the bot offers no edits with it."""

    def size_problem(self, size: str) -> str | None:
        """Why this model refuses `size`, or None when it takes it."""
        if size in self.sizes:
            return None
        allowed = ", ".join(self.sizes)
        match = _SIZE_PATTERN.match(size)
        if self.custom_sizes is None:
            return f"`size` can't be `{echo(size)}` for {self.name}. Allowed: {allowed}."
        if match is None:
            return (
                f"`size` can't be `{echo(size)}`: use WIDTHxHEIGHT (for example 1536x864) "
                f"or one of {allowed}."
            )
        reason = self.custom_sizes.problem(int(match[1]), int(match[2]))
        if reason is None:
            return None
        return f"`size` can't be `{echo(size)}` for {self.name}: {reason}."

    def accepts_size(self, size: str) -> bool:
        """Whether `size` is one this model takes."""
        return self.size_problem(size) is None


def echo(value: str, limit: int = 40) -> str:
    """A user's value as quoted back in a message: short, so a refusal always fits Discord."""
    flat = " ".join(value.split()).replace("`", "'")
    return flat if len(flat) <= limit else flat[: limit - 1] + "\u2026"


def normalize_size(text: str) -> str:
    """A size as users type it (spaces, a multiplication sign) in the form the API takes."""
    return text.strip().lower().replace("\u00d7", "x").replace(" ", "")


def parse_size(size: str) -> tuple[int, int] | None:
    """WIDTHxHEIGHT as integers, or None when the text is not of that form."""
    match = _SIZE_PATTERN.match(normalize_size(size))
    return (int(match[1]), int(match[2])) if match else None


_GPT_IMAGE_SIZES: Final = ("auto", "1024x1024", "1536x1024", "1024x1536")
_GPT_IMAGE_QUALITIES: Final = ("auto", "low", "medium", "high")
# OpenAI's image guide gives gpt-image-2 these sizes as the common ones; autocomplete offers them.
_GPT_IMAGE_2_PRESETS: Final = (
    *_GPT_IMAGE_SIZES,
    "2048x2048",
    "2048x1152",
    "1152x2048",
    "2560x1440",
    "1440x2560",
    "3840x2160",
    "2160x3840",
)
_GPT_IMAGE_2_RULE: Final = CustomSizeRule(
    multiple_of=16,
    max_aspect_ratio=3.0,
    max_long_edge=3840,
    max_short_edge=2160,
    # The spec adds "the model's current pixel and edge limits" without numbers; OpenAI's
    # image guide states 655,360 to 8,294,400 pixels (8,294,400 = 3840x2160).
    min_pixels=655_360,
    max_pixels=3840 * 2160,
)


def _gpt_image(
    name: str,
    summary: str,
    *,
    edit: EditSpec | None,
    sizes: tuple[str, ...] = _GPT_IMAGE_SIZES,
    custom_sizes: CustomSizeRule | None = None,
) -> ModelSpec:
    return ModelSpec(
        name=name,
        family=Family.GPT_IMAGE,
        summary=summary,
        sizes=sizes,
        custom_sizes=custom_sizes,
        default_size="auto",
        qualities=_GPT_IMAGE_QUALITIES,
        default_quality="auto",
        max_n=10,
        prompt_limit=32_000,
        supports_style=False,
        supports_gpt_options=True,
        # GPT image models always answer base64 and reject response_format.
        response_format=None,
        returns_usage=True,
        edit=edit,
    )


_MODELS: Final = (
    ModelSpec(
        name="dall-e-3",
        family=Family.DALL_E,
        summary="DALL·E 3: one image, vivid or natural style, prompt rewritten by the model",
        sizes=("1024x1024", "1792x1024", "1024x1792"),
        custom_sizes=None,
        default_size="1024x1024",
        qualities=("standard", "hd"),
        default_quality="standard",
        max_n=1,
        prompt_limit=4000,
        supports_style=True,
        supports_gpt_options=False,
        response_format="b64_json",
        returns_usage=False,
    ),
    ModelSpec(
        name="dall-e-2",
        family=Family.DALL_E,
        summary="DALL·E 2: small square images, up to 10 at once",
        sizes=("256x256", "512x512", "1024x1024"),
        custom_sizes=None,
        default_size="1024x1024",
        qualities=("standard",),
        default_quality="standard",
        max_n=10,
        prompt_limit=1000,
        supports_style=False,
        supports_gpt_options=False,
        response_format="b64_json",
        returns_usage=False,
    ),
    # [comet-edit-old] names gpt-image-1, gpt-image-1-mini and gpt-image-1.5 as edit routes;
    # [comet-gpt1] documents gpt-image-1's edit limits. input_fidelity: [openai-edit] names
    # gpt-image-1 and gpt-image-1.5, and says it is unsupported for gpt-image-1-mini.
    _gpt_image(
        "gpt-image-1",
        "GPT Image 1: strong prompt following, transparent backgrounds",
        edit=_gpt_edit(input_fidelity=True),
    ),
    _gpt_image(
        "gpt-image-1-mini",
        "GPT Image 1 mini: the cheaper, faster GPT Image 1",
        edit=_gpt_edit(input_fidelity=False),
    ),
    _gpt_image(
        "gpt-image-1.5",
        "GPT Image 1.5: better text rendering and detail",
        edit=_gpt_edit(input_fidelity=True),
    ),
    # [comet-edit] "Use model: "gpt-image-2" for GPT image edit requests on this route".
    # input_fidelity is not offered: the pinned [openai-edit] says "gpt-image-1.5 and later
    # models", but OpenAI's later description of the same enum (openai-client-base 0.16.0,
    # docs.rs, BetaInputFidelity) says "For `gpt-image-2`, omit this parameter"; refusing
    # it costs nothing, sending it may be refused upstream.
    _gpt_image(
        "gpt-image-2",
        "GPT Image 2: any size up to 3840x2160, the newest GPT image model",
        edit=_gpt_edit(input_fidelity=False),
        sizes=_GPT_IMAGE_2_PRESETS,
        custom_sizes=_GPT_IMAGE_2_RULE,
    ),
    ModelSpec(
        name="qwen-image",
        family=Family.QWEN,
        summary="Qwen-Image: strong at text in images, one image at a time",
        # CometAPI documents only "n must be 1". The sizes are Qwen-Image's own (Alibaba Model
        # Studio), and the 800-character prompt limit is Alibaba's; nothing else is sent.
        sizes=("1328x1328", "1664x928", "928x1664", "1472x1140", "1140x1472"),
        custom_sizes=None,
        default_size=None,
        qualities=(),
        default_quality=None,
        max_n=1,
        prompt_limit=800,
        supports_style=False,
        supports_gpt_options=False,
        response_format=None,
        returns_usage=False,
    ),
)

# DALL·E and qwen-image have no `edit`: [comet-gpt1] lists "dall-e-3 or gpt-image-1", which
# contradicts [openai-edit] (edits take dall-e-2, never dall-e-3), so DALL·E edits are unverified
# on CometAPI; qwen-image edits go through a separate model, `qwen-image-edit` ([comet-edit]),
# which the bot does not offer.

CATALOG: Final[MappingProxyType[str, ModelSpec]] = MappingProxyType(
    {model.name: model for model in _MODELS}
)


def editing_models() -> tuple[str, ...]:
    """The models that edit reference images, in catalog order."""
    return tuple(name for name, spec in CATALOG.items() if spec.edit is not None)


def largest_size(sizes: tuple[str, ...], current: str) -> str | None:
    """The largest listed size of the same shape (wide, tall, square) as `current`.

    `auto` or an unreadable size counts as square. None when the model lists no sizes.
    """

    def shape(width: int, height: int) -> int:
        return (width > height) - (width < height)

    def dims(size: str) -> tuple[int, int] | None:
        found = _SIZE_PATTERN.match(size)
        return (int(found[1]), int(found[2])) if found else None

    now = dims(current) or (1, 1)
    same = [d for d in (dims(size) for size in sizes) if d and shape(*d) == shape(*now)]
    if not same:
        return None
    width, height = max(same, key=lambda d: d[0] * d[1])
    return f"{width}x{height}"
