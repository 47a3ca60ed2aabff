"""Autocomplete suggestions follow the model, and check typed custom sizes."""

from __future__ import annotations

from bot.core.catalog import CATALOG
from bot.glue.suggest import MAX_NAME, MAX_SUGGESTIONS, suggest_qualities, suggest_sizes


def test_sizes_are_exactly_the_models_own() -> None:
    """With nothing typed, each model offers exactly its sizes."""
    for spec in CATALOG.values():
        assert [value for _, value in suggest_sizes(spec, "")] == list(spec.sizes)


def test_typing_filters_the_sizes() -> None:
    """What the user typed narrows the list."""
    assert [v for _, v in suggest_sizes(CATALOG["dall-e-3"], "1792")] == ["1792x1024", "1024x1792"]


def test_no_match_shows_every_size() -> None:
    """A typo still shows the model's sizes instead of an empty list."""
    assert len(suggest_sizes(CATALOG["dall-e-2"], "zzz")) == 3


def test_a_valid_custom_size_is_offered_first() -> None:
    """gpt-image-2 takes a free size that obeys its rule."""
    first = suggest_sizes(CATALOG["gpt-image-2"], "1600x896")[0]
    assert first == ("1600x896 (custom size)", "1600x896")


def test_an_invalid_custom_size_suggests_the_nearest_allowed() -> None:
    """A refused size is replaced by an allowed one, with the reason in the name."""
    name, value = suggest_sizes(CATALOG["gpt-image-2"], "1000x1000")[0]
    assert value == "992x992"
    assert "multiples of 16" in name
    assert CATALOG["gpt-image-2"].accepts_size(value)


def test_fixed_models_never_offer_custom_sizes() -> None:
    """dall-e-3 does not take free sizes, so none is suggested."""
    values = [v for _, v in suggest_sizes(CATALOG["dall-e-3"], "1600x896")]
    assert "1600x896" not in values


def test_garbage_input_stays_within_discord_limits() -> None:
    """Any typed text gives at most 25 suggestions with names of at most 100 characters."""
    for text in ["", "x" * 5000, "\u202e\u200b\U0001f600", "99999x99999", "16x48000"]:
        for spec in CATALOG.values():
            for suggestions in (suggest_sizes(spec, text), suggest_qualities(spec, text)):
                assert len(suggestions) <= MAX_SUGGESTIONS
                assert all(
                    1 <= len(name) <= MAX_NAME and len(value) <= 100 for name, value in suggestions
                )


def test_qualities_follow_the_model() -> None:
    """qwen-image has no quality; dall-e-3 has two."""
    assert suggest_qualities(CATALOG["qwen-image"], "") == []
    assert [v for _, v in suggest_qualities(CATALOG["dall-e-3"], "")] == ["standard", "hd"]
    assert [v for _, v in suggest_qualities(CATALOG["gpt-image-1"], "hi")] == ["high"]
