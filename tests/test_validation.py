"""Validation of /imagine options against the documented model table, and the bodies it sends."""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.core.catalog import CATALOG
from bot.core.images import PNG
from bot.core.references import ReferenceImage, read_reference
from bot.core.validation import ImagineOptions, InvalidOption, validate

BASE = ImagineOptions(prompt="a paper boat on a pond")


# --- The oracle: what each model takes, as the documentation states it -----------------------
# Written from the README's model table and shared/specs/api-notes.md (A.1, B1, B4), and kept
# apart from bot/core/catalog.py on purpose: the property tests below check validation against
# this table, so a wrong value in the catalog shows up as a disagreement instead of being
# checked against itself.

DEFAULT_MODEL = "gpt-image-1"
GPT_SIZES = frozenset({"auto", "1024x1024", "1536x1024", "1024x1536"})
GPT_QUALITIES = frozenset({"auto", "low", "medium", "high"})
STYLES = frozenset({"vivid", "natural"})
BACKGROUNDS = frozenset({"auto", "transparent", "opaque"})
OUTPUT_FORMATS = frozenset({"png", "jpeg", "webp"})
# output_compression only "with webp/jpeg"; png is the default format (api-notes A.1).
LOSSY_FORMATS = frozenset({"jpeg", "webp"})
DEFAULT_FORMAT = "png"


@dataclass(frozen=True)
class Takes:
    """What one model accepts."""

    sizes: frozenset[str]
    qualities: frozenset[str]
    max_n: int
    prompt_limit: int
    style: bool = False  # vivid/natural: dall-e-3 only
    gpt_options: bool = False  # background, output_format, output_compression
    any_size: bool = False  # gpt-image-2: WIDTHxHEIGHT under the rule below
    response_format: str | None = None  # DALL·E: the bot asks for the bytes, not a 60-min URL
    always_states_n: bool = False  # qwen-image: "send only model, prompt, n=1 and size" (B4)


GPT_IMAGE = Takes(GPT_SIZES, GPT_QUALITIES, max_n=10, prompt_limit=32_000, gpt_options=True)


DOCUMENTED: dict[str, Takes] = {
    "dall-e-3": Takes(
        frozenset({"1024x1024", "1792x1024", "1024x1792"}),
        frozenset({"standard", "hd"}),
        max_n=1,
        prompt_limit=4000,
        style=True,
        response_format="b64_json",
    ),
    "dall-e-2": Takes(
        frozenset({"256x256", "512x512", "1024x1024"}),
        frozenset({"standard"}),
        max_n=10,
        prompt_limit=1000,
        response_format="b64_json",
    ),
    "gpt-image-1": GPT_IMAGE,
    "gpt-image-1-mini": GPT_IMAGE,
    "gpt-image-1.5": GPT_IMAGE,
    "gpt-image-2": Takes(
        GPT_SIZES
        | {"2048x2048", "2048x1152", "1152x2048", "2560x1440", "1440x2560"}
        | {"3840x2160", "2160x3840"},
        GPT_QUALITIES,
        max_n=10,
        prompt_limit=32_000,
        gpt_options=True,
        any_size=True,
    ),
    "qwen-image": Takes(
        frozenset({"1328x1328", "1664x928", "928x1664", "1472x1140", "1140x1472"}),
        frozenset(),
        max_n=1,
        prompt_limit=800,
        always_states_n=True,
    ),
}

# gpt-image-2's free sizes: both sides multiples of 16, aspect ratio within 3:1, no larger than
# 3840x2160 (either way round). The spec adds "the model's pixel and edge limits"; OpenAI's
# image guide (and the gateways that copy it) put the pixel count at 655,360 to 8,294,400.
MIN_PIXELS = 655_360
MAX_PIXELS = 3840 * 2160


def custom_size_ok(width: int, height: int) -> bool:
    long_side, short_side = max(width, height), min(width, height)
    return (
        width % 16 == 0
        and height % 16 == 0
        and long_side <= 3 * short_side
        and long_side <= 3840
        and short_side <= 2160
        and MIN_PIXELS <= width * height <= MAX_PIXELS
    )


# --- Edits, as documented -----------------------------------------------------------------
# CometAPI's image-editing pages (the current one recommends gpt-image-2; the earlier one names
# gpt-image-1, gpt-image-1-mini and gpt-image-1.5) and OpenAI's CreateImageEditRequest
# (shared/specs/openai-openapi.yaml, cometapi-notes.md "CometAPI image edits"):
# - PNG, WebP or JPEG, each under 25 MB (CometAPI; OpenAI says 50 MB: the lower is kept)
# - the bot takes at most 3 reference images (OpenAI allows 16)
# - mask: PNG, under 4 MB, the same dimensions as the first image; needs an image to edit
# - input_fidelity high/low: gpt-image-1 and gpt-image-1.5; not gpt-image-1-mini (OpenAI); not
#   gpt-image-2 (OpenAI's later description: "For gpt-image-2, omit this parameter")
# - no DALL·E or qwen-image edits
EDITS_WITH_FIDELITY = {"gpt-image-1": True, "gpt-image-1-mini": False, "gpt-image-1.5": True}
EDITS_WITH_FIDELITY["gpt-image-2"] = False
EDIT_FORMATS = frozenset({"png", "webp", "jpeg"})
MAX_REFERENCES = 3
MAX_REFERENCE_BYTES = 25_000_000
MAX_MASK_BYTES = 4_000_000
FIDELITIES = frozenset({"high", "low"})


def edit_faults(
    model: str, references: Sequence[ReferenceImage], mask: ReferenceImage | None
) -> set[str]:
    """The options at fault in an edit's images, by the rules above."""
    faults: set[str] = set()
    if mask is not None and not references:
        faults.add("mask")
    if references and model not in EDITS_WITH_FIDELITY:
        faults.add("model")
    if len(references) > MAX_REFERENCES:
        faults.add("image")
    for reference in references:
        if reference.format.name not in EDIT_FORMATS or len(reference.data) > MAX_REFERENCE_BYTES:
            faults.add("image")
    if mask is not None and references:
        first = references[0]
        if (
            mask.format.name != "png"
            or len(mask.data) > MAX_MASK_BYTES
            or (mask.width, mask.height) != (first.width, first.height)
        ):
            faults.add("mask")
    return faults


def typed_size(text: str) -> str:
    """A size as users may type it ("1536 x 864", a multiplication sign, " AUTO ") in API form."""
    return text.strip().lower().replace("\u00d7", "x").replace(" ", "")


def size_ok(takes: Takes, size: str) -> bool:
    if size in takes.sizes:
        return True
    sides = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", size)
    return takes.any_size and sides is not None and custom_size_ok(int(sides[1]), int(sides[2]))


def prompt_ok(text: str, limit: int) -> bool:
    """Not empty, no control characters but line breaks and tabs, within the model's limit."""
    controls = [ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t"]
    return bool(text) and not controls and len(text) <= limit


def judge(
    prompt: str,
    values: dict[str, Any],
    references: Sequence[ReferenceImage] = (),
    mask: ReferenceImage | None = None,
) -> tuple[dict[str, Any] | None, set[str]]:
    """The body the documentation allows for this request, or the options at fault.

    For an edit (references given) the body is the multipart form's text fields.
    """
    model = values.get("model", DEFAULT_MODEL)
    takes = DOCUMENTED.get(model)
    if takes is None:
        return None, {"model"}  # nothing else can be judged without the model
    faults = edit_faults(model, references, mask)
    fidelity = values.get("input_fidelity")
    if fidelity is not None and not (
        references and EDITS_WITH_FIDELITY.get(model) and fidelity in FIDELITIES
    ):
        faults.add("input_fidelity")
    text = prompt.strip()
    if not prompt_ok(text, takes.prompt_limit):
        faults.add("prompt")
    n = values.get("n", 1)
    if not 1 <= n <= takes.max_n:
        faults.add("n")
    size = values.get("size")
    if size is not None:
        size = typed_size(size)
        if not size_ok(takes, size):
            faults.add("size")
    quality = values.get("quality")
    if quality is not None and quality not in takes.qualities:
        faults.add("quality")
    style = values.get("style")
    if style is not None and not (takes.style and style in STYLES):
        faults.add("style")
    background, output_format = values.get("background"), values.get("output_format")
    if background is not None and not (takes.gpt_options and background in BACKGROUNDS):
        faults.add("background")
    if output_format is not None and not (takes.gpt_options and output_format in OUTPUT_FORMATS):
        faults.add("output_format")
    compression = values.get("output_compression")
    shown_format = output_format or DEFAULT_FORMAT
    if compression is not None and not (
        takes.gpt_options and 0 <= compression <= 100 and shown_format in LOSSY_FORMATS
    ):
        faults.add("output_compression")
    # "For transparent, set the output format to png or webp" (A.1).
    if takes.gpt_options and background == "transparent" and shown_format == "jpeg":
        faults.add("background")
    if faults:
        return None, faults
    if references:
        form = {"model": model, "prompt": text}
        if n != 1:
            form["n"] = str(n)
        edit_chosen = {
            "size": size,
            "quality": quality,
            "background": background,
            "output_format": output_format,
            "output_compression": compression,
            "input_fidelity": fidelity,
        }
        form.update({key: str(value) for key, value in edit_chosen.items() if value is not None})
        return form, set()
    body: dict[str, Any] = {"model": model, "prompt": text}
    if n != 1 or takes.always_states_n:
        body["n"] = n
    chosen = {
        "size": size,
        "quality": quality,
        "style": style,
        "background": background,
        "output_format": output_format,
        "output_compression": compression,
        "response_format": takes.response_format,
    }
    body.update({key: value for key, value in chosen.items() if value is not None})
    return body, set()


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
    for size in DOCUMENTED["dall-e-3"].sizes:
        assert size in caught.value.message


@pytest.mark.parametrize(
    ("model", "limit"), [(name, takes.prompt_limit) for name, takes in DOCUMENTED.items()]
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


def test_the_bot_knows_exactly_the_documented_models() -> None:
    """Every documented model is offered, and no undocumented one."""
    assert set(CATALOG) == set(DOCUMENTED)


ALL_SIZES = sorted(set().union(*(takes.sizes for takes in DOCUMENTED.values())))
# Just inside and just outside each part of gpt-image-2's rule, worked out from the rule.
EDGE_SIZES = [
    "1024x640",  # 655,360 pixels: the least allowed
    "1008x640",  # fewer pixels than that
    "1536x512",  # exactly 3:1
    "1552x512",  # just over 3:1
    "3072x768",  # 4:1
    "3840x1280",  # the longest side, at 3:1
    "3856x1296",  # longer than 3840
    "2160x2160",  # the shortest side at its most
    "2176x2176",  # within 3840 but wider than 2160 both ways
    "2880x2880",  # 8,294,400 pixels, yet not within 3840x2160
    "1000x1000",  # not multiples of 16
    "1024x1000",
    "01024x1024",  # a leading zero is not WIDTHxHEIGHT
    "1024x1024x16",
    "x1024",
    "",
]
SIZES = st.one_of(
    st.sampled_from(ALL_SIZES),
    st.sampled_from(EDGE_SIZES),
    st.sampled_from(ALL_SIZES).map(lambda size: f"  {size.upper().replace('X', ' X ')} "),
    st.text(max_size=12),
    st.builds(lambda w, h: f"{w}x{h}", st.integers(1, 5000), st.integers(1, 5000)),
    # Multiples of 16, so that gpt-image-2's rule is met often, and typed in several ways.
    st.builds(
        lambda w, h, sep: f"{16 * w}{sep}{16 * h}",
        st.integers(1, 300),
        st.integers(1, 300),
        st.sampled_from(["x", " x ", "X", "\u00d7"]),
    ),
)
PROMPTS = st.one_of(
    st.text(max_size=1200),
    st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=60),
    st.integers(790, 1010).map(lambda length: " y" * (length // 2)),
)
OPTION_VALUES = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from([*DOCUMENTED, "unknown-model", "DALL-E-3"]),
        "size": SIZES,
        "quality": st.sampled_from(["auto", "low", "medium", "high", "hd", "standard", "x"]),
        "n": st.integers(-2, 12),
        "style": st.sampled_from(["vivid", "natural", "odd"]),
        "background": st.sampled_from(["auto", "transparent", "opaque", "odd"]),
        "output_format": st.sampled_from(["png", "jpeg", "webp", "gif"]),
        "output_compression": st.integers(-5, 105),
        "input_fidelity": st.sampled_from(["high", "low", "medium"]),
    },
)


def check_against_the_oracle(
    prompt: str,
    values: dict[str, Any],
    references: Sequence[ReferenceImage] = (),
    mask: ReferenceImage | None = None,
) -> bool:
    """Validate, and assert the outcome is the oracle's; True when the request was accepted.

    A request the oracle allows must pass (an InvalidOption fails the test) and produce the
    oracle's body (the form fields for an edit); one it refuses must be refused naming an
    option the oracle finds at fault, and the attachment when one is to blame.
    """
    expected, faults = judge(prompt, values, references, mask)
    options = ImagineOptions(prompt=prompt, **values)
    if faults:
        with pytest.raises(InvalidOption) as caught:
            validate(options, DEFAULT_MODEL, references=references, mask=mask)
        refusal = caught.value
        assert refusal.option in faults, (refusal.option, refusal.message, faults)
        if refusal.attachment is not None:
            assert f"`{refusal.attachment}`" in refusal.message
        else:
            assert f"`{refusal.option}`" in refusal.message
        return False
    request = validate(options, DEFAULT_MODEL, references=references, mask=mask)
    if references:
        assert request.is_edit
        assert request.edit_fields() == expected
        assert request.references == tuple(references)
        assert request.mask is mask
    else:
        assert not request.is_edit
        assert request.payload() == expected
    return True


SWEEP_PROMPTS = ["", " \n ", "a\x00b", "a\x7fb", "line one\nline two\ttab", "\u00e9t\u00e9"]
SWEEP_VALUES: dict[str, list[Any]] = {
    "size": [*ALL_SIZES, *EDGE_SIZES, " 1024 X 1024 ", "1536\u00d7864", "AUTO"],
    "quality": ["auto", "low", "medium", "high", "hd", "standard", "HD", "x"],
    "n": [-1, 0, 1, 2, 3, 9, 10, 11],
    "style": ["vivid", "natural", "Vivid", "odd"],
    "background": ["auto", "transparent", "opaque", "odd"],
    "output_format": ["png", "jpeg", "webp", "gif", "PNG"],
    "output_compression": [-1, 0, 1, 50, 99, 100, 101],
}


def sweep_cases(model: str) -> list[tuple[str, dict[str, Any]]]:
    """Every option alone, each format with each background and compression, edge prompts."""
    limit = DOCUMENTED[model].prompt_limit
    base = "a paper boat on a pond"
    cases = [(base, {"model": model})]
    cases += [(prompt, {"model": model}) for prompt in SWEEP_PROMPTS]
    cases += [("y" * length, {"model": model}) for length in (limit, limit + 1)]
    cases += [(f"  {'y' * limit}\n", {"model": model})]
    for option, values in SWEEP_VALUES.items():
        cases += [(base, {"model": model, option: value}) for value in values]
    for output_format in SWEEP_VALUES["output_format"]:
        for option in ("background", "output_compression"):
            cases += [
                (base, {"model": model, "output_format": output_format, option: value})
                for value in SWEEP_VALUES[option]
            ]
    return cases


@pytest.mark.parametrize("model", sorted(DOCUMENTED))
def test_each_option_value_is_judged_like_the_documentation(model: str) -> None:
    """Every value of every option, alone or with a format, on every model: the oracle's call."""
    wrong: list[tuple[str, dict[str, Any], str]] = []
    for prompt, values in sweep_cases(model):
        try:
            check_against_the_oracle(prompt, values)
        except (AssertionError, InvalidOption, pytest.fail.Exception) as error:
            wrong.append((prompt[:20], values, str(error).splitlines()[0]))
    assert wrong == []


@settings(max_examples=400)
@given(prompt=PROMPTS, values=OPTION_VALUES)
def test_validator_agrees_with_the_documented_model_table(
    prompt: str, values: dict[str, Any]
) -> None:
    """Property: accepted exactly when the oracle allows it, with the oracle's body; otherwise
    refused naming one of the options the oracle finds at fault."""
    accepted = check_against_the_oracle(prompt, values)
    event("accepted" if accepted else "refused")


@st.composite
def documented_requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A request built only from values the oracle's table allows for the drawn model."""
    model = draw(st.sampled_from(sorted(DOCUMENTED)))
    takes = DOCUMENTED[model]
    text = draw(
        st.one_of(
            st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=200).filter(str.strip),
            st.just("y" * takes.prompt_limit),
        )
    )
    prompt = draw(st.sampled_from(["", " ", "\n"])) + text + draw(st.sampled_from(["", "\t "]))
    values: dict[str, Any] = {"model": model}

    def maybe(key: str, strategy: st.SearchStrategy[Any]) -> Any:
        value = draw(st.none() | strategy)
        if value is not None:
            values[key] = value
        return value

    maybe("n", st.integers(1, takes.max_n))
    sizes = st.sampled_from(sorted(takes.sizes))
    if takes.any_size:
        custom = st.tuples(st.integers(20, 240), st.integers(20, 240)).map(
            lambda sides: (16 * sides[0], 16 * sides[1])
        )
        sizes |= custom.filter(lambda wh: custom_size_ok(*wh)).map(lambda wh: f"{wh[0]}x{wh[1]}")
    maybe("size", sizes)
    if takes.qualities:
        maybe("quality", st.sampled_from(sorted(takes.qualities)))
    if takes.style:
        maybe("style", st.sampled_from(sorted(STYLES)))
    if takes.gpt_options:
        output_format = maybe("output_format", st.sampled_from(sorted(OUTPUT_FORMATS)))
        backgrounds = BACKGROUNDS - {"transparent"} if output_format == "jpeg" else BACKGROUNDS
        maybe("background", st.sampled_from(sorted(backgrounds)))
        if output_format in LOSSY_FORMATS:
            maybe("output_compression", st.sampled_from([0, 100]) | st.integers(0, 100))
    return prompt, values


@settings(max_examples=300)
@given(request=documented_requests())
def test_every_documented_request_is_accepted_with_its_body(
    request: tuple[str, dict[str, Any]],
) -> None:
    """Property: whatever the table allows is accepted and sent exactly as the oracle says."""
    prompt, values = request
    assert judge(prompt, values)[1] == set()
    assert check_against_the_oracle(prompt, values)


def test_refusal_of_a_huge_value_fits_a_discord_message() -> None:
    """A stale client can send any string; the refusal quoting it stays under 2000 characters."""
    with pytest.raises(InvalidOption) as caught:
        validate(replace(BASE, model="m" * 6000), "dall-e-3")
    assert len(caught.value.message) < 2000
    with pytest.raises(InvalidOption) as caught:
        validate(replace(BASE, model="gpt-image-2", size="9" * 6000), "dall-e-3")
    assert len(caught.value.message) < 2000


# --- Edits: reference images and a mask --------------------------------------------------------


def picture(name: str, kind: str = "PNG", size: tuple[int, int] = (64, 64)) -> ReferenceImage:
    """A real image of that format, read the way a downloaded attachment is."""
    buffer = io.BytesIO()
    Image.new("RGBA" if kind == "PNG" else "RGB", size, (10, 120, 200)).save(buffer, kind)
    return read_reference(name, buffer.getvalue())


def padded(name: str, length: int, size: tuple[int, int] = (64, 64)) -> ReferenceImage:
    """A PNG-headed file of exactly `length` bytes (its size is what is judged)."""
    head = b"\x89PNG\r\n\x1a\n"
    return ReferenceImage(name, head + bytes(length - len(head)), PNG, *size)


CAT = picture("cat.png")
PHOTO = picture("photo.jpg", "JPEG")
PIC = picture("pic.webp", "WEBP")
ANIM = picture("anim.gif", "GIF")
WIDE = picture("wide.png", size=(96, 64))
AT_CAP = padded("at-cap.png", MAX_REFERENCE_BYTES)
OVER_CAP = padded("huge.png", MAX_REFERENCE_BYTES + 1)
MASK = picture("mask.png")
MASK_SMALL = picture("small-mask.png", size=(32, 32))
MASK_JPEG = picture("mask.jpg", "JPEG")
MASK_AT_CAP = padded("mask-at-cap.png", MAX_MASK_BYTES)
MASK_OVER_CAP = padded("big-mask.png", MAX_MASK_BYTES + 1)

EDIT_MODELS = sorted(EDITS_WITH_FIDELITY)

EDIT_REFUSED: list[
    tuple[str, dict[str, Any], tuple[ReferenceImage, ...], ReferenceImage | None, str, str | None]
] = [
    # (model, changes, references, mask, option named, attachment named)
    ("dall-e-3", {}, (CAT,), None, "model", None),
    ("dall-e-2", {}, (CAT,), None, "model", None),
    ("qwen-image", {}, (CAT,), MASK, "model", None),
    ("gpt-image-1", {}, (CAT, PHOTO, PIC, CAT), None, "image", None),
    ("gpt-image-2", {}, (CAT, ANIM), None, "image", "anim.gif"),
    ("gpt-image-1-mini", {}, (OVER_CAP,), None, "image", "huge.png"),
    ("gpt-image-1.5", {}, (CAT, OVER_CAP), None, "image", "huge.png"),
    ("gpt-image-1", {}, (), MASK, "mask", "mask.png"),
    ("gpt-image-1", {}, (CAT,), MASK_JPEG, "mask", "mask.jpg"),
    ("gpt-image-2", {}, (CAT,), MASK_OVER_CAP, "mask", "big-mask.png"),
    ("gpt-image-2", {}, (CAT,), MASK_SMALL, "mask", "small-mask.png"),
    ("gpt-image-1", {}, (WIDE, CAT), MASK, "mask", "mask.png"),  # the first image decides
    ("gpt-image-1", {"input_fidelity": "high"}, (), None, "input_fidelity", None),
    ("gpt-image-1-mini", {"input_fidelity": "high"}, (CAT,), None, "input_fidelity", None),
    ("gpt-image-2", {"input_fidelity": "low"}, (CAT,), None, "input_fidelity", None),
    ("gpt-image-1", {"input_fidelity": "medium"}, (CAT,), None, "input_fidelity", None),
    ("dall-e-3", {"input_fidelity": "high"}, (), None, "input_fidelity", None),
    ("gpt-image-1", {"style": "vivid"}, (CAT,), None, "style", None),
    ("gpt-image-1", {"n": 11}, (CAT,), None, "n", None),
    ("gpt-image-1", {"size": "1792x1024"}, (CAT,), None, "size", None),
    (
        "gpt-image-2",
        {"output_format": "png", "output_compression": 5},
        (CAT,),
        None,
        "output_compression",
        None,
    ),
]


@pytest.mark.parametrize(
    ("model", "changes", "references", "mask", "option", "attachment"), EDIT_REFUSED
)
def test_refused_edits_name_the_option_and_the_attachment(
    model: str,
    changes: dict[str, Any],
    references: tuple[ReferenceImage, ...],
    mask: ReferenceImage | None,
    option: str,
    attachment: str | None,
) -> None:
    """Each refusal names the option; an image's refusal names the attachment by its name."""
    assert option in judge(BASE.prompt, {"model": model, **changes}, references, mask)[1]
    with pytest.raises(InvalidOption) as caught:
        validate(
            replace(BASE, model=model, **changes), "dall-e-3", references=references, mask=mask
        )
    refusal = caught.value
    assert (refusal.option, refusal.attachment) == (option, attachment)
    assert f"`{attachment or option}`" in refusal.message
    assert len(refusal.message) < 2000


def test_a_model_that_does_not_edit_lists_the_ones_that_do() -> None:
    """The refusal names `model` and every model that edits."""
    with pytest.raises(InvalidOption) as caught:
        validate(replace(BASE, model="dall-e-3"), "x", references=(CAT,))
    assert "`model`" in caught.value.message
    for name in EDIT_MODELS:
        assert name in caught.value.message


def test_an_oversized_image_is_refused_in_plain_words() -> None:
    """ "`huge.png` is larger than 25 MB", and exactly 25,000,000 bytes passes."""
    with pytest.raises(InvalidOption) as caught:
        validate(replace(BASE, model="gpt-image-1"), "x", references=(OVER_CAP,))
    assert caught.value.message.startswith("`huge.png` is larger than 25 MB")
    assert validate(replace(BASE, model="gpt-image-1"), "x", references=(AT_CAP,)).is_edit


def test_a_wrong_format_says_what_edits_take() -> None:
    """A GIF is named as such, with the formats edits take."""
    with pytest.raises(InvalidOption) as caught:
        validate(replace(BASE, model="gpt-image-2"), "x", references=(ANIM,))
    message = caught.value.message
    assert "`anim.gif` is a GIF image" in message
    for shown in ("PNG", "WebP", "JPEG"):
        assert shown in message


def test_a_mask_of_another_size_says_both_sizes() -> None:
    """Mask and first image dimensions, both in the message."""
    with pytest.raises(InvalidOption) as caught:
        validate(replace(BASE, model="gpt-image-1"), "x", references=(WIDE,), mask=MASK)
    message = caught.value.message
    for part in ("64x64", "96x64", "`mask.png`", "`wide.png`"):
        assert part in message


def test_an_oversized_mask_is_refused_and_one_at_the_cap_passes() -> None:
    """Under 4 MB: exactly 4,000,000 bytes passes, one more is refused."""
    request = validate(replace(BASE, model="gpt-image-1"), "x", references=(CAT,), mask=MASK_AT_CAP)
    assert request.mask is MASK_AT_CAP
    with pytest.raises(InvalidOption) as caught:
        validate(replace(BASE, model="gpt-image-1"), "x", references=(CAT,), mask=MASK_OVER_CAP)
    assert "larger than 4 MB" in caught.value.message


EDIT_FIELDS = [
    (
        ImagineOptions(prompt=" add a hat ", model="gpt-image-2"),
        (CAT,),
        None,
        {"model": "gpt-image-2", "prompt": "add a hat"},
    ),
    (
        ImagineOptions(
            prompt="add a hat",
            model="gpt-image-1",
            n=2,
            size="1536x1024",
            quality="high",
            background="transparent",
            output_format="webp",
            output_compression=80,
            input_fidelity="high",
        ),
        (CAT, PHOTO, PIC),
        MASK,
        {
            "model": "gpt-image-1",
            "prompt": "add a hat",
            "n": "2",
            "size": "1536x1024",
            "quality": "high",
            "background": "transparent",
            "output_format": "webp",
            "output_compression": "80",
            "input_fidelity": "high",
        },
    ),
    (
        ImagineOptions(prompt="add a hat", model="gpt-image-2", size="1536 x 864"),
        (PHOTO,),
        None,
        {"model": "gpt-image-2", "prompt": "add a hat", "size": "1536x864"},
    ),
    (
        ImagineOptions(prompt="add a hat", model="gpt-image-1.5", input_fidelity="low", n=1),
        (PIC,),
        None,
        {"model": "gpt-image-1.5", "prompt": "add a hat", "input_fidelity": "low"},
    ),
]


@pytest.mark.parametrize(("options", "references", "mask", "fields"), EDIT_FIELDS)
def test_edit_fields_carry_only_chosen_or_needed_fields(
    options: ImagineOptions,
    references: tuple[ReferenceImage, ...],
    mask: ReferenceImage | None,
    fields: dict[str, str],
) -> None:
    """The multipart text fields: never response_format, style or moderation."""
    request = validate(options, "gpt-image-1", references=references, mask=mask)
    assert request.is_edit
    assert request.edit_fields() == fields
    assert request.references == references
    assert request.mask is mask
    assert not {"response_format", "style", "moderation"} & set(request.edit_fields())


def test_input_fidelity_survives_a_reroll_and_storage() -> None:
    """options() carries input_fidelity, and to_json/from_json keep it."""
    request = validate(
        ImagineOptions(prompt="p", model="gpt-image-1", input_fidelity="high"),
        "x",
        references=(CAT,),
    )
    options = request.options()
    assert options.input_fidelity == "high"
    assert ImagineOptions.from_json(options.to_json()) == options
    assert '"input_fidelity"' not in ImagineOptions(prompt="p").to_json()


def test_a_generation_is_not_an_edit() -> None:
    """No references: the generation request, as before."""
    request = validate(ImagineOptions(prompt="p", model="gpt-image-1"), "x")
    assert (request.is_edit, request.references, request.mask) == (False, (), None)
    assert request.input_fidelity is None


REFERENCE_SETS: list[tuple[ReferenceImage, ...]] = [
    (),
    (CAT,),
    (PHOTO,),
    (PIC,),
    (ANIM,),
    (WIDE,),
    (AT_CAP,),
    (OVER_CAP,),
    (CAT, PHOTO),
    (WIDE, CAT),
    (CAT, PHOTO, PIC),
    (CAT, PHOTO, PIC, CAT),
    (CAT, ANIM, PIC),
]
MASKS: list[ReferenceImage | None] = [
    None,
    MASK,
    MASK_SMALL,
    MASK_JPEG,
    MASK_AT_CAP,
    MASK_OVER_CAP,
]


@pytest.mark.parametrize("model", sorted(DOCUMENTED))
def test_each_reference_set_and_mask_is_judged_like_the_documentation(model: str) -> None:
    """Every reference set with every mask and fidelity, on every model: the oracle's call."""
    wrong: list[tuple[Any, ...]] = []
    for references in REFERENCE_SETS:
        for mask in MASKS:
            for fidelity in (None, "high", "low", "odd"):
                values: dict[str, Any] = {"model": model}
                if fidelity is not None:
                    values["input_fidelity"] = fidelity
                try:
                    check_against_the_oracle(BASE.prompt, values, references, mask)
                except (AssertionError, InvalidOption, pytest.fail.Exception) as error:
                    names = [reference.name for reference in references]
                    wrong.append((names, mask and mask.name, fidelity, str(error).splitlines()[0]))
    assert wrong == []


@settings(max_examples=300)
@given(
    prompt=PROMPTS,
    values=OPTION_VALUES,
    references=st.sampled_from(REFERENCE_SETS),
    mask=st.sampled_from(MASKS),
)
def test_validator_agrees_with_the_oracle_on_edits(
    prompt: str,
    values: dict[str, Any],
    references: tuple[ReferenceImage, ...],
    mask: ReferenceImage | None,
) -> None:
    """Property: with images, accepted exactly when the oracle allows it, with its form fields;
    otherwise refused naming an option (and attachment) the oracle finds at fault."""
    accepted = check_against_the_oracle(prompt, values, references, mask)
    event("accepted" if accepted else "refused")
