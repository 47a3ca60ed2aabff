"""/imagine end to end: start-up, every model, attachments equal to what upstream served."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bot.core.catalog import CATALOG
from tests.e2e.harness import Harness
from tests.fakes.fake_cometapi import Reply
from tests.fakes.images import make_png


async def test_start_up_registers_commands(bot: Harness) -> None:
    """The bot synced /imagine and /usage globally with the catalog's model choices."""
    imagine = bot.discord.find_command("imagine")
    assert imagine is not None
    assert bot.discord.find_command("usage") is not None
    options = {option["name"]: option for option in imagine["options"]}
    assert [choice["value"] for choice in options["model"]["choices"]] == list(CATALOG)
    assert options["size"]["autocomplete"] is True
    assert options["prompt"]["required"] is True
    assert len(bot.discord.command_puts) == 1


@pytest.mark.parametrize("model", list(CATALOG))
async def test_each_model_delivers_what_upstream_served(bot: Harness, model: str) -> None:
    """Defer first, then one attachment whose bytes are exactly upstream's image."""
    handle = await bot.imagine(prompt="a red kite over the sea", model=model)
    callback = await handle.wait_for_callback()
    assert callback.json["type"] == 5
    final = await handle.wait_for_final()
    served = bot.comet.calls[0].served_images
    assert [file.data for file in final.files] == served
    embed = final.json["embeds"][0]
    assert embed["description"] == "a red kite over the sea"
    assert any(field["value"] == model for field in embed["fields"])
    assert final.json["allowed_mentions"] == {"parse": []}


async def test_n_images_give_n_attachments(bot: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """n=3 on gpt-image-1: three attachments in one message, upstream's bytes in order."""
    caplog.set_level(logging.INFO)
    images = [make_png(seed=seed) for seed in (1, 2, 3)]
    bot.comet.queue(Reply.b64(images))
    handle = await bot.imagine(prompt="three cats", model="gpt-image-1", n=3)
    final = await handle.wait_for_final()
    assert [file.data for file in final.files] == images
    assert [file.filename for file in final.files] == [
        "gpt-image-1-1.png",
        "gpt-image-1-2.png",
        "gpt-image-1-3.png",
    ]
    await asyncio.sleep(0.05)
    outcome = [r.getMessage() for r in caplog.records if "outcome=ok" in r.getMessage()]
    assert len(outcome) == 1
    assert "model=gpt-image-1" in outcome[0]
    assert "images=3" in outcome[0]


async def test_initial_response_within_three_seconds_even_when_upstream_is_slow(
    bot: Harness,
) -> None:
    """The deferral arrives long before the (slow) image does."""
    bot.comet.queue(Reply.auto(latency=1.0))
    sent = time.monotonic()
    handle = await bot.imagine(prompt="slow")
    callback = await handle.wait_for_callback()
    assert callback.at - sent < 3.0
    final = await handle.wait_for_final()
    assert final.at - sent >= 1.0
