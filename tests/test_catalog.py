"""The catalog's values, each checked against the documented table (shared/specs/api-notes A.1)."""

from __future__ import annotations

import pytest

from bot.core.catalog import CATALOG, Family, editing_models, largest_size, parse_size

DOCUMENTED = {
    # model: (sizes, qualities, max_n, prompt_limit, style, gpt options, response_format)
    "dall-e-3": (
        {"1024x1024", "1792x1024", "1024x1792"},
        {"standard", "hd"},
        1,
        4000,
        True,
        False,
        "b64_json",
    ),
    "dall-e-2": (
        {"256x256", "512x512", "1024x1024"},
        {"standard"},
        10,
        1000,
        False,
        False,
        "b64_json",
    ),
    "gpt-image-1": (
        {"auto", "1024x1024", "1536x1024", "1024x1536"},
        {"auto", "low", "medium", "high"},
        10,
        32000,
        False,
        True,
        None,
    ),
    "gpt-image-1-mini": (
        {"auto", "1024x1024", "1536x1024", "1024x1536"},
        {"auto", "low", "medium", "high"},
        10,
        32000,
        False,
        True,
        None,
    ),
    "gpt-image-1.5": (
        {"auto", "1024x1024", "1536x1024", "1024x1536"},
        {"auto", "low", "medium", "high"},
        10,
        32000,
        False,
        True,
        None,
    ),
    "qwen-image": (
        {"1328x1328", "1664x928", "928x1664", "1472x1140", "1140x1472"},
        set(),
        1,
        800,
        False,
        False,
        None,
    ),
}


def test_catalog_names_every_documented_model() -> None:
    """The seven models CometAPI's docs name, and no others."""
    assert set(CATALOG) == {
        "dall-e-3",
        "dall-e-2",
        "gpt-image-1",
        "gpt-image-1-mini",
        "gpt-image-1.5",
        "gpt-image-2",
        "qwen-image",
    }


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_model_values_match_the_docs(name: str) -> None:
    """Each fixed-list model takes exactly its documented values."""
    sizes, qualities, max_n, limit, style, gpt, response_format = DOCUMENTED[name]
    spec = CATALOG[name]
    assert set(spec.sizes) == sizes
    assert set(spec.qualities) == qualities
    assert spec.max_n == max_n
    assert spec.prompt_limit == limit
    assert spec.supports_style is style
    assert spec.supports_gpt_options is gpt
    assert spec.response_format == response_format
    assert spec.custom_sizes is None


def test_only_gpt_image_models_report_usage() -> None:
    """Token usage is documented for the GPT image models only."""
    assert {name for name, spec in CATALOG.items() if spec.returns_usage} == {
        name for name, spec in CATALOG.items() if spec.family is Family.GPT_IMAGE
    }


@pytest.mark.parametrize(
    ("size", "allowed"),
    [
        ("1024x1024", True),
        ("auto", True),
        ("3840x2160", True),
        ("2160x3840", True),
        ("1536x864", True),
        ("2880x960", True),  # exactly 3:1
        ("960x2880", True),
        ("2896x960", False),  # just past 3:1
        ("1000x1000", False),  # not multiples of 16
        ("3856x2160", False),  # wider than 3840
        ("2176x2176", False),  # short edge over 2160
        ("512x512", False),  # under the pixel minimum
        ("1024", False),
        ("big", False),
        ("0x0", False),
    ],
)
def test_gpt_image_2_size_rule(size: str, allowed: bool) -> None:
    """gpt-image-2: multiples of 16, ratio within 3:1, at most 3840x2160."""
    assert CATALOG["gpt-image-2"].accepts_size(size) is allowed


@pytest.mark.parametrize("size", ["1000x1000", "100x5000", "4000x4000", "500x500", "1601x901"])
def test_nearest_size_is_always_allowed(size: str) -> None:
    """What autocomplete suggests instead of a refused size is itself allowed."""
    rule = CATALOG["gpt-image-2"].custom_sizes
    assert rule is not None
    dimensions = parse_size(size)
    assert dimensions is not None
    width, height = rule.nearest(*dimensions)
    assert rule.problem(width, height) is None


def test_presets_of_gpt_image_2_obey_its_own_rule() -> None:
    """Every preset autocomplete offers passes the free-size rule too."""
    spec = CATALOG["gpt-image-2"]
    assert spec.custom_sizes is not None
    for size in spec.sizes:
        dims = parse_size(size)
        if dims is not None:
            assert spec.custom_sizes.problem(*dims) is None, size


def test_parse_size_accepts_what_users_type() -> None:
    """Spaces, capitals and a multiplication sign are understood."""
    assert parse_size(" 1536 X 864 ") == (1536, 864)
    assert parse_size("1536\u00d7864") == (1536, 864)
    assert parse_size("1536x") is None


# Edits, as CometAPI's image-editing pages and OpenAI's CreateImageEditRequest document them
# (shared/specs/cometapi-notes.md, "CometAPI image edits"): model -> takes input_fidelity.
DOCUMENTED_EDITS = {
    "gpt-image-1": True,
    "gpt-image-1-mini": False,  # OpenAI: "unsupported for gpt-image-1-mini"
    "gpt-image-1.5": True,
    "gpt-image-2": False,  # OpenAI's later description: "For gpt-image-2, omit this parameter"
}


def test_only_the_documented_models_edit() -> None:
    """gpt-image-2 (current page), gpt-image-1, -1-mini, -1.5 (earlier page); no DALL·E, qwen."""
    assert {name for name, spec in CATALOG.items() if spec.edit is not None} == set(
        DOCUMENTED_EDITS
    )
    assert set(editing_models()) == set(DOCUMENTED_EDITS)
    for name in ("dall-e-2", "dall-e-3", "qwen-image"):
        assert CATALOG[name].edit is None


@pytest.mark.parametrize(("name", "fidelity"), sorted(DOCUMENTED_EDITS.items()))
def test_edit_specs_match_the_docs(name: str, fidelity: bool) -> None:
    """Up to 3 images (OpenAI allows 16), png/webp/jpeg under 25 MB, a PNG mask under 4 MB."""
    edit = CATALOG[name].edit
    assert edit is not None
    assert edit.max_images == 3
    assert set(edit.formats) == {"png", "webp", "jpeg"}
    assert edit.max_bytes == 25_000_000
    assert edit.mask is not None
    assert (edit.mask.format, edit.mask.max_bytes) == ("png", 4_000_000)
    assert edit.mask.same_size_as_first_image
    assert edit.takes_input_fidelity is fidelity
    assert set(edit.input_fidelities) == ({"high", "low"} if fidelity else set())
    # moderation is generations only, style is dall-e-3's.
    assert edit.options == {
        "size",
        "quality",
        "n",
        "background",
        "output_format",
        "output_compression",
    }


def test_edit_caps_stay_within_what_upstream_allows() -> None:
    """The bot's caps never exceed OpenAI's 16 images and 50 MB per image."""
    for spec in CATALOG.values():
        if spec.edit is not None:
            assert spec.edit.max_images <= 16
            assert spec.edit.max_bytes < 50_000_000


@pytest.mark.parametrize(
    ("model", "current", "expected"),
    [
        ("gpt-image-2", "1024x1024", "2048x2048"),
        ("gpt-image-2", "1536x1024", "3840x2160"),
        ("gpt-image-2", "1024x1536", "2160x3840"),
        ("gpt-image-1", "1536x1024", "1536x1024"),
        ("gpt-image-1", "auto", "1024x1024"),
        ("qwen-image", "1328x1328", "1328x1328"),
    ],
)
def test_largest_size_keeps_the_shape(model: str, current: str, expected: str) -> None:
    """Wide stays wide, tall stays tall; the largest listed size of that shape."""
    assert largest_size(CATALOG[model].sizes, current) == expected
