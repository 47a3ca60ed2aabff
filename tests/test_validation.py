"""Validation of /imagine options against the catalog, and the request bodies it produces."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.core.catalog import CATALOG
from bot.core.validation import ImagineOptions, InvalidOption, validate

BASE = ImagineOptions(prompt="a paper boat on a pond")

REFUSED = [
    # (model, changes, option named in the refusal)
    ("dall-e-3", {"n": 2}, "n"),
    ("qwen-image", {"n": 2}, "n"),
    ("dall-e-2", {"n": 11}, "n"),
    ("gpt-image-2", {"n": 0}, "n"),
    ("dall-e-3", {"size": "512x512"}, "size"),
    ("dall-e-2", {"size": "1792x1024"}, "size"),
    ("gpt-image-1", {"size": "1792x1024"}, "size"),
    ("gpt-image-2", {"size": "1000x1000"}, "size"),
    ("qwen-image", {"size": "1024x1024"}, "size"),
    ("dall-e-3", {"quality": "high"}, "quality"),
    ("dall-e-2", {"quality": "hd"}, "quality"),
    ("gpt-image-1", {"quality": "hd"}, "quality"),
    ("qwen-image", {"quality": "standard"}, "quality"),
    ("gpt-image-1", {"style": "vivid"}, "style"),
    ("dall-e-2", {"style": "natural"}, "style"),
    ("qwen-image", {"style": "vivid"}, "style"),
    ("dall-e-3", {"style": "loud"}, "style"),
    ("dall-e-3", {"background": "transparent"}, "background"),
    ("dall-e-2", {"output_format": "png"}, "output_format"),
    ("dall-e-3", {"output_compression": 50}, "output_compression"),
    ("qwen-image", {"output_format": "webp"}, "output_format"),
    ("gpt-image-1", {"output_compression": 50}, "output_compression"),
    ("gpt-image-1", {"output_format": "png", "output_compression": 50}, "output_compression"),
    ("gpt-image-1", {"output_format": "jpeg", "output_compression": 101}, "output_compression"),
    ("gpt-image-2", {"background": "transparent", "output_format": "jpeg"}, "background"),
    ("gpt-image-2", {"output_format": "gif"}, "output_format"),
    ("gpt-image-2", {"background": "glass"}, "background"),
    ("dall-e-2", {"prompt": "x" * 1001}, "prompt"),
    ("dall-e-3", {"prompt": "x" * 4001}, "prompt"),
    ("qwen-image", {"prompt": "x" * 801}, "prompt"),
    ("gpt-image-1", {"prompt": "   "}, "prompt"),
    ("gpt-image-1", {"prompt": "a\x00b"}, "prompt"),
    ("stable-diffusion", {}, "model"),
]


@pytest.mark.parametrize(("model", "changes", "option"), REFUSED)
def test_refused_combinations_name_the_option(
    model: str, changes: dict[str, object], option: str
) -> None:
    """Each refusal names the option, and the message lists allowed values where there are any."""
    with pytest.raises(InvalidOption) as caught:
        validate(replace(BASE, model=model, **changes), "dall-e-3")  # type: ignore[arg-type]
    assert caught.value.option == option
    assert f"`{option}`" in caught.value.message


def test_refusal_lists_the_allowed_values() -> None:
    """A wrong size names the sizes the model takes."""
    with pytest.raises(InvalidOption) as caught:
        validate(replace(BASE, model="dall-e-3", size="512x512"), "dall-e-3")
    for size in CATALOG["dall-e-3"].sizes:
        assert size in caught.value.message


@pytest.mark.parametrize(
    ("model", "limit"), [(name, spec.prompt_limit) for name, spec in CATALOG.items()]
)
def test_prompt_at_the_limit_is_accepted(model: str, limit: int) -> None:
    """A prompt of exactly the model's limit passes."""
    request = validate(replace(BASE, model=model, prompt="y" * limit), "dall-e-3")
    assert len(request.prompt) == limit


PAYLOADS = [
    (
        ImagineOptions(prompt=" a cat ", model="dall-e-3", style="natural", quality="hd"),
        {
            "model": "dall-e-3",
            "prompt": "a cat",
            "style": "natural",
            "quality": "hd",
            "response_format": "b64_json",
        },
    ),
    (
        ImagineOptions(prompt="a cat", model="dall-e-2", n=3, size="512x512"),
        {
            "model": "dall-e-2",
            "prompt": "a cat",
            "n": 3,
            "size": "512x512",
            "response_format": "b64_json",
        },
    ),
    (
        ImagineOptions(
            prompt="a cat",
            model="gpt-image-1",
            n=2,
            background="transparent",
            output_format="webp",
            output_compression=80,
        ),
        {
            "model": "gpt-image-1",
            "prompt": "a cat",
            "n": 2,
            "background": "transparent",
            "output_format": "webp",
            "output_compression": 80,
        },
    ),
    (
        ImagineOptions(prompt="a cat", model="gpt-image-2", size="1536 x 864"),
        {"model": "gpt-image-2", "prompt": "a cat", "size": "1536x864"},
    ),
    (
        ImagineOptions(prompt="a cat", model="qwen-image", size="1664x928"),
        {"model": "qwen-image", "prompt": "a cat", "n": 1, "size": "1664x928"},
    ),
    (ImagineOptions(prompt="a cat"), {"model": "gpt-image-1-mini", "prompt": "a cat"}),
]


@pytest.mark.parametrize(("options", "body"), PAYLOADS)
def test_payload_carries_only_chosen_or_needed_fields(
    options: ImagineOptions, body: dict[str, object]
) -> None:
    """No response_format for gpt-image, only model/prompt/n/size for qwen-image."""
    assert validate(options, "gpt-image-1-mini").payload() == body


def test_shown_size_and_quality_fall_back_to_model_defaults() -> None:
    """What the embed and the ledger show when the user chose nothing."""
    request = validate(replace(BASE, model="dall-e-3"), "dall-e-3")
    assert (request.shown_size, request.shown_quality) == ("1024x1024", "standard")


OPTION_VALUES = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([*CATALOG, "unknown-model", ""]),
        "size": st.one_of(
            st.sampled_from(sorted({s for spec in CATALOG.values() for s in spec.sizes})),
            st.text(max_size=12),
            st.builds(lambda w, h: f"{w}x{h}", st.integers(1, 5000), st.integers(1, 5000)),
        ),
        "quality": st.sampled_from(["auto", "low", "medium", "high", "hd", "standard", "x"]),
        "n": st.integers(-2, 12),
        "style": st.sampled_from(["vivid", "natural", "odd"]),
        "background": st.sampled_from(["auto", "transparent", "opaque", "odd"]),
        "output_format": st.sampled_from(["png", "jpeg", "webp", "gif"]),
        "output_compression": st.integers(-5, 105),
    },
)


@given(prompt=st.text(max_size=1200), values=OPTION_VALUES)
def test_validator_accepts_only_what_the_catalog_allows(
    prompt: str, values: dict[str, object]
) -> None:
    """Property: validation either refuses with a named option, or yields a body the model takes."""
    options = ImagineOptions(prompt=prompt, **values)  # type: ignore[arg-type]
    try:
        request = validate(options, "gpt-image-1")
    except InvalidOption as refusal:
        refused = refusal
    else:
        refused = None
    if refused is not None:
        assert refused.option in {
            "prompt",
            "model",
            "size",
            "quality",
            "n",
            "style",
            "background",
            "output_format",
            "output_compression",
        }
        assert f"`{refused.option}`" in refused.message
        return
    spec = request.spec
    body = request.payload()
    assert body["model"] == spec.name
    assert 0 < len(body["prompt"]) <= spec.prompt_limit
    assert 1 <= body.get("n", 1) <= spec.max_n
    if "size" in body:
        assert spec.accepts_size(body["size"])
    if "quality" in body:
        assert body["quality"] in spec.qualities
    if not spec.supports_style:
        assert "style" not in body
    if not spec.supports_gpt_options:
        assert not {"background", "output_format", "output_compression"} & set(body)
    if spec.response_format is None:
        assert "response_format" not in body
    if "output_compression" in body:
        assert body["output_format"] in ("jpeg", "webp")


def test_refusal_of_a_huge_value_fits_a_discord_message() -> None:
    """A stale client can send any string; the refusal quoting it stays under 2000 characters."""
    with pytest.raises(InvalidOption) as caught:
        validate(replace(BASE, model="m" * 6000), "dall-e-3")
    assert len(caught.value.message) < 2000
    with pytest.raises(InvalidOption) as caught:
        validate(replace(BASE, model="gpt-image-2", size="9" * 6000), "dall-e-3")
    assert len(caught.value.message) < 2000
