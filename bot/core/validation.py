"""Checks an /imagine request against the catalog before anything is sent upstream."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

from bot.core.catalog import (
    BACKGROUNDS,
    CATALOG,
    COMPRESSION_RANGE,
    MAX_N_OPTION,
    MEGABYTE,
    MODERATION_LEVELS,
    OUTPUT_FORMATS,
    STYLES,
    EditSpec,
    Family,
    ModelSpec,
    echo,
    editing_models,
    normalize_size,
)
from bot.core.references import ReferenceImage

IMAGE_OPTION: Final = "image"
"""The option named by refusals of a reference image (CreateImageEditRequest's `image`)."""
MASK_OPTION: Final = "mask"

_FORMAT_NAMES: Final = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP", "gif": "GIF"}


class InvalidOption(ValueError):
    """One option the model does not take; the message names it and what is allowed.

    A refusal of one attached image also names it: `attachment` is its file name.
    """

    def __init__(self, option: str, message: str, *, attachment: str | None = None) -> None:
        super().__init__(message)
        self.option = option
        self.message = message
        self.attachment = attachment


@dataclass(frozen=True, slots=True)
class ImagineOptions:
    """The options of one /imagine call exactly as the user gave them (None = not given)."""

    prompt: str
    model: str | None = None
    size: str | None = None
    quality: str | None = None
    n: int | None = None
    style: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    input_fidelity: str | None = None
    moderation: str | None = None

    def to_json(self) -> str:
        """The options as JSON, to store with the generation."""
        return json.dumps(
            {key: value for key, value in asdict(self).items() if value is not None},
            ensure_ascii=False,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ImagineOptions:
        """Options stored by `to_json`; unknown keys (from a newer bot) are ignored."""
        raw = json.loads(text)
        if not isinstance(raw, dict) or not isinstance(raw.get("prompt"), str):
            raise ValueError("stored options have no prompt")
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in raw.items() if key in known})


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """A validated request: what to send upstream, and what to show and log about it."""

    spec: ModelSpec
    prompt: str
    n: int
    size: str | None
    quality: str | None
    style: str | None
    background: str | None
    output_format: str | None
    output_compression: int | None
    references: tuple[ReferenceImage, ...] = ()
    """The images to edit, in order; empty for a generation."""
    mask: ReferenceImage | None = None
    """Applied to the first reference image."""
    input_fidelity: str | None = None
    moderation: str | None = None
    """Generations of the GPT image models only: auto (upstream's default) or low."""

    @property
    def is_edit(self) -> bool:
        """Whether this goes to `/images/edits` (it has reference images)."""
        return bool(self.references)

    @property
    def model(self) -> str:
        """The model's name."""
        return self.spec.name

    @property
    def shown_size(self) -> str:
        """The size to show and log: the chosen one or the model's default."""
        return self.size or self.spec.default_size or "default"

    @property
    def shown_quality(self) -> str:
        """The quality to show and log: the chosen one or the model's default."""
        return self.quality or self.spec.default_quality or "default"

    def options(self) -> ImagineOptions:
        """The options that make this request again (a reroll), model named."""
        return ImagineOptions(
            prompt=self.prompt,
            model=self.spec.name,
            size=self.size,
            quality=self.quality,
            n=self.n,
            style=self.style,
            background=self.background,
            output_format=self.output_format,
            output_compression=self.output_compression,
            input_fidelity=self.input_fidelity,
            moderation=self.moderation,
        )

    def payload(self) -> dict[str, Any]:
        """The JSON body: only what the user chose or the model needs."""
        body: dict[str, Any] = {"model": self.spec.name, "prompt": self.prompt}
        # qwen-image is documented only as "n must be 1", so n is always stated for it.
        if self.n != 1 or self.spec.family is Family.QWEN:
            body["n"] = self.n
        optional = {
            "size": self.size,
            "quality": self.quality,
            "style": self.style,
            "background": self.background,
            "output_format": self.output_format,
            "output_compression": self.output_compression,
            "response_format": self.spec.response_format,
            "moderation": self.moderation,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        return body

    def edit_fields(self) -> dict[str, str]:
        """The text fields of the `/images/edits` multipart form, by `payload()`'s rules.

        Only what the user chose or the model needs; the images and the mask are file parts
        the caller adds. Never `response_format` (GPT image models always answer base64),
        `style` or `moderation` (generations only).
        """
        fields_: dict[str, str] = {"model": self.spec.name, "prompt": self.prompt}
        if self.n != 1:
            fields_["n"] = str(self.n)
        optional: dict[str, str | int | None] = {
            "size": self.size,
            "quality": self.quality,
            "background": self.background,
            "output_format": self.output_format,
            "output_compression": self.output_compression,
            "input_fidelity": self.input_fidelity,
        }
        fields_.update({key: str(value) for key, value in optional.items() if value is not None})
        return fields_


def _allowed(values: tuple[str, ...]) -> str:
    return ", ".join(values)


def _check_choice(option: str, value: str | None, allowed: tuple[str, ...], model: str) -> None:
    if value is not None and value not in allowed:
        raise InvalidOption(
            option,
            f"`{option}` can't be `{echo(value)}` for {model}. Allowed: {_allowed(allowed)}.",
        )


def _check_prompt(prompt: str, spec: ModelSpec) -> str:
    text = prompt.strip()
    if not text:
        raise InvalidOption("prompt", "The `prompt` is empty: describe the image you want.")
    # Control characters (NUL and friends) are never meaningful in a prompt and some
    # upstreams reject or truncate at them; newlines and tabs are fine.
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t\r" for ch in text):
        raise InvalidOption(
            "prompt", "The `prompt` contains control characters; remove them and try again."
        )
    if len(text) > spec.prompt_limit:
        raise InvalidOption(
            "prompt",
            f"The `prompt` is {len(text):,} characters; {spec.name} takes at most "
            f"{spec.prompt_limit:,}.",
        )
    return text


def _megabytes(count: int) -> str:
    return f"{count / MEGABYTE:g} MB"


def _format_list(names: Sequence[str]) -> str:
    shown = [_FORMAT_NAMES.get(name, name) for name in names]
    return ", ".join(shown[:-1]) + f" or {shown[-1]}" if len(shown) > 1 else "".join(shown)


def _edit_spec(
    spec: ModelSpec, references: Sequence[ReferenceImage], mask: ReferenceImage | None
) -> EditSpec | None:
    """The model's edit spec when this is an edit; refuses a model that does not edit."""
    if not references and mask is None:
        return None
    if mask is not None and not references:
        raise InvalidOption(
            MASK_OPTION,
            f"The `mask` `{echo(mask.name)}` marks where to edit an image: attach the image "
            "to edit as well.",
            attachment=mask.name,
        )
    if spec.edit is None:
        raise InvalidOption(
            "model",
            f"`model` {spec.name} can't edit images. Models that edit: "
            f"{_allowed(editing_models())}.",
        )
    return spec.edit


def _check_references(
    edit: EditSpec, name: str, references: Sequence[ReferenceImage], mask: ReferenceImage | None
) -> None:
    if len(references) > edit.max_images:
        raise InvalidOption(
            IMAGE_OPTION,
            f"{len(references)} images were attached; {name} edits at most "
            f"{edit.max_images} at once (`{IMAGE_OPTION}`).",
        )
    for reference in references:
        shown = echo(reference.name)
        if reference.format.name not in edit.formats:
            raise InvalidOption(
                IMAGE_OPTION,
                f"`{shown}` is a {_FORMAT_NAMES.get(reference.format.name, reference.format.name)}"
                f" image; {name} edits only {_format_list(edit.formats)} images.",
                attachment=reference.name,
            )
        if len(reference.data) > edit.max_bytes:
            raise InvalidOption(
                IMAGE_OPTION,
                f"`{shown}` is larger than {_megabytes(edit.max_bytes)}, the most {name} "
                "takes per image.",
                attachment=reference.name,
            )
    if mask is None:
        return
    shown = echo(mask.name)
    rule = edit.mask
    if rule is None:
        raise InvalidOption(
            MASK_OPTION, f"{name} takes no `mask`; leave it empty.", attachment=mask.name
        )
    if mask.format.name != rule.format:
        raise InvalidOption(
            MASK_OPTION,
            f"The `mask` `{shown}` must be a {_FORMAT_NAMES.get(rule.format, rule.format)} "
            f"image (with transparency where to edit), not "
            f"{_FORMAT_NAMES.get(mask.format.name, mask.format.name)}.",
            attachment=mask.name,
        )
    if len(mask.data) > rule.max_bytes:
        raise InvalidOption(
            MASK_OPTION,
            f"The `mask` `{shown}` is larger than {_megabytes(rule.max_bytes)}.",
            attachment=mask.name,
        )
    first = references[0]
    if rule.same_size_as_first_image and (mask.width, mask.height) != (first.width, first.height):
        raise InvalidOption(
            MASK_OPTION,
            f"The `mask` `{shown}` is {mask.width}x{mask.height} but the first image "
            f"`{echo(first.name)}` is {first.width}x{first.height}: they must be the same size.",
            attachment=mask.name,
        )


def _check_input_fidelity(value: str | None, edit: EditSpec | None, spec: ModelSpec) -> str | None:
    if value is None:
        return None
    if edit is None:
        raise InvalidOption(
            "input_fidelity",
            "`input_fidelity` applies only when editing: attach an image to edit, or leave it "
            "empty.",
        )
    if not edit.takes_input_fidelity:
        takes = [
            name for name, model in CATALOG.items() if model.edit and model.edit.input_fidelities
        ]
        raise InvalidOption(
            "input_fidelity",
            f"`input_fidelity` works only with {_allowed(tuple(takes))}, not with {spec.name}.",
        )
    _check_choice("input_fidelity", value, edit.input_fidelities, spec.name)
    return value


def validate(
    options: ImagineOptions,
    default_model: str,
    *,
    references: Sequence[ReferenceImage] = (),
    mask: ReferenceImage | None = None,
) -> GenerationRequest:
    """Return the request to send, or raise InvalidOption naming what is wrong.

    With `references` (and optionally a `mask`) the request is an edit: the model must edit,
    and every image is checked against its edit spec here, before anything is billed.
    """
    model_name = options.model or default_model
    spec = CATALOG.get(model_name)
    if spec is None:
        raise InvalidOption(
            "model",
            f"`model` can't be `{echo(model_name)}`: this bot does not know it. "
            f"Allowed: {_allowed(tuple(CATALOG))}.",
        )
    edit = _edit_spec(spec, references, mask)
    if edit is not None:
        _check_references(edit, spec.name, references, mask)
    input_fidelity = _check_input_fidelity(options.input_fidelity, edit, spec)
    prompt = _check_prompt(options.prompt, spec)
    name = spec.name

    n = 1 if options.n is None else options.n
    if not 1 <= n <= min(spec.max_n, MAX_N_OPTION):
        if spec.max_n == 1:
            raise InvalidOption("n", f"{name} makes one image per request: `n` must be 1.")
        raise InvalidOption("n", f"`n` must be between 1 and {spec.max_n} for {name}.")

    size = normalize_size(options.size) if options.size is not None else None
    if size is not None:
        problem = spec.size_problem(size)
        if problem is not None:
            raise InvalidOption("size", problem)

    if options.quality is not None and not spec.qualities:
        raise InvalidOption("quality", f"{name} has no quality setting; leave `quality` empty.")
    _check_choice("quality", options.quality, spec.qualities, name)

    if options.style is not None and not spec.supports_style:
        raise InvalidOption("style", f"`style` works only with dall-e-3, not with {name}.")
    if options.style is not None and edit is not None and "style" not in edit.options:
        raise InvalidOption("style", f"`style` does not apply to edits with {name}.")
    _check_choice("style", options.style, STYLES, name)

    gpt_only = {
        "background": options.background,
        "output_format": options.output_format,
        "output_compression": options.output_compression,
    }
    if not spec.supports_gpt_options:
        for option, value in gpt_only.items():
            if value is not None:
                raise InvalidOption(
                    option, f"`{option}` works only with the gpt-image models, not with {name}."
                )
    _check_choice("background", options.background, BACKGROUNDS, name)
    _check_choice("output_format", options.output_format, OUTPUT_FORMATS, name)

    compression = options.output_compression
    if compression is not None:
        low, high = COMPRESSION_RANGE
        if not low <= compression <= high:
            raise InvalidOption(
                "output_compression", f"`output_compression` must be between {low} and {high}."
            )
        if options.output_format not in ("jpeg", "webp"):
            raise InvalidOption(
                "output_compression",
                "`output_compression` needs `output_format` jpeg or webp (png is lossless).",
            )
    if options.moderation is not None:
        # OpenAI's CreateImageRequest: "Control the content-moderation level for images
        # generated by the GPT image models"; CreateImageEditRequest has no such field.
        if not spec.supports_gpt_options:
            raise InvalidOption(
                "moderation", f"`moderation` works only with the gpt-image models, not {name}."
            )
        if edit is not None:
            raise InvalidOption("moderation", "`moderation` applies to generations, not edits.")
        _check_choice("moderation", options.moderation, MODERATION_LEVELS, name)
    if options.background == "transparent" and options.output_format == "jpeg":
        raise InvalidOption(
            "background",
            "`background` transparent needs `output_format` png or webp "
            "(jpeg has no transparency).",
        )

    return GenerationRequest(
        spec=spec,
        prompt=prompt,
        n=n,
        size=size,
        quality=options.quality,
        style=options.style,
        background=options.background,
        output_format=options.output_format,
        output_compression=compression,
        references=tuple(references),
        mask=mask,
        input_fidelity=input_fidelity,
        moderation=options.moderation,
    )
