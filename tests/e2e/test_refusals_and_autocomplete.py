"""Refusals answered privately with no upstream call; autocomplete per model."""

from __future__ import annotations

from typing import Any

from bot.core.catalog import CATALOG
from tests.e2e.harness import Harness
from tests.test_validation import REFUSED


async def test_every_refused_combination_is_answered_ephemerally_without_upstream(
    bot: Harness,
) -> None:
    """Each refused option combination: a type-4 ephemeral answer naming the option."""
    for model, changes, option in REFUSED:
        options: dict[str, Any] = {"prompt": "a paper boat", "model": model, **changes}
        handle = await bot.imagine(**options)
        callback = await handle.wait_for_callback()
        assert callback.json["type"] == 4, (model, changes)
        assert callback.json["data"]["flags"] & 64, (model, changes)
        assert f"`{option}`" in callback.json["data"]["content"], (model, changes)
    assert bot.comet.calls == []


async def test_size_and_quality_autocomplete_follow_the_model(bot: Harness) -> None:
    """Suggestions are exactly the chosen model's values; without a model, the default's."""
    for name, spec in CATALOG.items():
        handle = await bot.discord.autocomplete(
            "imagine", {"prompt": "x", "model": name, "size": ""}, focused="size"
        )
        choices = await handle.wait_for_choices()
        assert [choice["value"] for choice in choices] == list(spec.sizes), name
        handle = await bot.discord.autocomplete(
            "imagine", {"prompt": "x", "model": name, "quality": ""}, focused="quality"
        )
        choices = await handle.wait_for_choices()
        assert [choice["value"] for choice in choices] == list(spec.qualities), name
    default = await bot.discord.autocomplete("imagine", {"size": ""}, focused="size")
    assert [c["value"] for c in await default.wait_for_choices()] == list(
        CATALOG["gpt-image-1"].sizes
    )


async def test_custom_size_autocomplete_and_garbage(bot: Harness) -> None:
    """A typed gpt-image-2 size is checked; garbage still gets valid choices."""
    handle = await bot.discord.autocomplete(
        "imagine", {"model": "gpt-image-2", "size": "1000x1000"}, focused="size"
    )
    choices = await handle.wait_for_choices()
    assert choices[0]["value"] == "992x992"
    for garbage in ["\u202e\U0001f600", "x" * 100, "@everyone"]:
        handle = await bot.discord.autocomplete(
            "imagine", {"model": "not-a-model", "size": garbage}, focused="size"
        )
        assert len(await handle.wait_for_choices()) <= 25
