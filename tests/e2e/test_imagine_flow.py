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
    outcome = [r.getMessage() for r in caplog.records if "outcome=delivered" in r.getMessage()]
    assert len(outcome) == 1
    assert "model=gpt-image-1" in outcome[0]
    assert "images=3" in outcome[0]


UPSTREAM_LATENCY_S = 3.5  # longer than Discord's 3 s for the first response


async def test_initial_response_within_three_seconds_even_when_upstream_is_slow(
    bot: Harness,
) -> None:
    """Upstream takes 3.5 s: the deferral reaches Discord within 3 s of dispatch, while the
    upstream call is still running, and the image arrives only after upstream answered."""
    bot.comet.queue(Reply.auto(latency=UPSTREAM_LATENCY_S))
    dispatched = time.monotonic()  # just before INTERACTION_CREATE goes out
    handle = await bot.imagine(prompt="slow")
    callback = await handle.wait_for_callback()
    assert callback.json["type"] == 5
    assert callback.at - dispatched < 3.0
    final = await handle.wait_for_final(timeout=UPSTREAM_LATENCY_S + 5)
    (call,) = bot.comet.calls
    assert call.finished_at is not None
    assert callback.at < call.finished_at  # deferred while upstream was still working
    assert call.finished_at - call.received_at >= UPSTREAM_LATENCY_S
    assert final.at > call.finished_at
    assert final.at - dispatched >= UPSTREAM_LATENCY_S
    assert [file.data for file in final.files] == call.served_images
