"""Hostile and odd input, table-driven: each gets a clear answer; refusals cost no upstream call."""

from __future__ import annotations

from typing import Any

import pytest

from bot.core.catalog import CATALOG
from tests.e2e.harness import Harness

REFUSED_INPUT: list[tuple[str, dict[str, Any], str]] = [
    ("empty prompt", {"prompt": ""}, "`prompt`"),
    ("whitespace prompt", {"prompt": " \t\n "}, "`prompt`"),
    ("NUL in prompt", {"prompt": "a\x00b"}, "`prompt`"),
    ("escape in prompt", {"prompt": "a\x1b[31mred"}, "`prompt`"),
    ("n zero", {"prompt": "x", "n": 0}, "`n`"),
    ("n eleven", {"prompt": "x", "n": 11}, "`n`"),
    ("n negative", {"prompt": "x", "n": -3}, "`n`"),
    (
        "compression 101",
        {"prompt": "x", "output_format": "jpeg", "output_compression": 101},
        "`output_compression`",
    ),
    (
        "compression -1",
        {"prompt": "x", "output_format": "webp", "output_compression": -1},
        "`output_compression`",
    ),
    ("stale model", {"prompt": "x", "model": "dall-e-4"}, "`model`"),
    ("model with markdown", {"prompt": "x", "model": "`@everyone`"}, "`model`"),
    (
        "style choice from the future",
        {"prompt": "x", "model": "dall-e-3", "style": "anime"},
        "`style`",
    ),
    ("huge size text", {"prompt": "x", "model": "gpt-image-2", "size": "9" * 5000}, "`size`"),
    ("size of letters", {"prompt": "x", "size": "big"}, "`size`"),
] + [
    (
        f"{name} prompt over its limit",
        {"prompt": "p" * (spec.prompt_limit + 1), "model": name},
        "`prompt`",
    )
    for name, spec in CATALOG.items()
    if spec.prompt_limit < 6000
]


async def test_refused_input_is_answered_clearly_without_upstream(bot: Harness) -> None:
    """Every refusal is private, names the option, fits in a message, and bills nothing."""
    for label, options, named in REFUSED_INPUT:
        handle = await bot.imagine(**options)
        callback = await handle.wait_for_callback()
        data = callback.json["data"]
        assert callback.json["type"] == 4, label
        assert data["flags"] & 64, label
        assert named in data["content"], label
        assert len(data["content"]) <= 2000, label
        assert data["allowed_mentions"] == {"parse": []}, label
    assert bot.comet.calls == []


@pytest.mark.parametrize(
    "prompt",
    [
        "\u05e9\u05dc\u05d5\u05dd \u202eright-to-left\u202c",
        "\U0001f408\u200d\u2b1b a black cat \U0001f5bc\ufe0f",
        "zero\u200bwidth\u200cjoin\u200d",
        "@everyone @here <@123> <@&456> look at this",
    ],
    ids=["rtl", "emoji", "zero-width", "mentions"],
)
async def test_odd_but_valid_prompts_generate_and_ping_nobody(bot: Harness, prompt: str) -> None:
    """Unicode and mentions go through unchanged; the reply never pings anyone."""
    handle = await bot.imagine(prompt=prompt)
    final = await handle.wait_for_final()
    assert bot.comet.calls[0].json["prompt"] == prompt
    assert final.json["embeds"][0]["description"] == prompt
    assert final.json["allowed_mentions"] == {"parse": []}


@pytest.mark.parametrize(
    "model", [name for name, spec in CATALOG.items() if spec.prompt_limit <= 6000]
)
async def test_prompt_at_the_limit_is_sent(bot: Harness, model: str) -> None:
    """Exactly the model's limit passes and is sent in full."""
    limit = CATALOG[model].prompt_limit
    handle = await bot.imagine(prompt="q" * limit, model=model)
    final = await handle.wait_for_final()
    assert len(bot.comet.calls[0].json["prompt"]) == limit
    assert final.files
