"""Edits from reference images, end to end: the command's attachments, the menu, the button."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from bot.core.catalog import CATALOG, editing_models
from tests.e2e.harness import Harness, fakes, modal_inputs, run_bot
from tests.fakes.discord_payloads import AttachmentInput
from tests.fakes.fake_discord import InteractionHandle
from tests.fakes.images import make_png, make_transparent_png

MEMBER = 6000
OTHER = 6001
EPHEMERAL = 1 << 6


def png(name: str, width: int = 64, height: int = 64, seed: int = 0) -> AttachmentInput:
    return AttachmentInput(name, make_png(width, height, seed=seed), content_type="image/png")


def rows(bot: Harness, columns: str) -> list[Any]:
    with sqlite3.connect(bot.app.settings.database_path) as db:
        return db.execute(f"SELECT {columns} FROM generations ORDER BY id").fetchall()  # noqa: S608


async def delivered(bot: Harness, handle: InteractionHandle) -> dict[str, Any]:
    await handle.wait_for(lambda r: bool(r.files) and r.ok, timeout=20)
    await bot.settled()
    assert handle.original is not None
    return handle.original


async def refusal(handle: InteractionHandle) -> str:
    """A private refusal, before anything was acknowledged publicly."""
    callback = await handle.wait_for_callback(timeout=10)
    assert callback.json["type"] == 4, callback.json
    assert callback.json["data"]["flags"] & EPHEMERAL
    return str(callback.json["data"]["content"])


@pytest.mark.parametrize("model", editing_models())
async def test_one_reference_is_an_edit_for_each_model_that_edits(bot: Harness, model: str) -> None:
    """The image reaches /images/edits as image[]; the row says edit with one reference."""
    source = png("cat.png", seed=1)
    handle = await bot.imagine(prompt="as a watercolour", model=model, image=source)
    await delivered(bot, handle)
    (call,) = bot.comet.edit_calls
    assert [part.data for part in call.images] == [source.data]
    assert call.fields["model"] == model
    assert rows(bot, "kind, reference_count, status") == [("edit", 1, "delivered")]


async def test_three_references_and_a_mask(bot: Harness) -> None:
    """Three images in order, the mask as its own part, checked against the first image."""
    images = [png(f"p{i}.png", seed=i) for i in range(3)]
    mask = AttachmentInput("mask.png", make_transparent_png(64, 64), content_type="image/png")
    handle = await bot.imagine(
        prompt="put them together",
        model="gpt-image-1",
        image=images[0],
        image2=images[1],
        image3=images[2],
        mask=mask,
    )
    await delivered(bot, handle)
    (call,) = bot.comet.edit_calls
    assert [part.data for part in call.images] == [image.data for image in images]
    assert call.mask is not None
    assert call.mask.data == mask.data
    assert rows(bot, "reference_count") == [(3,)]


async def test_a_mask_of_the_wrong_size_is_refused_privately(bot: Harness) -> None:
    """64x64 image, 32x32 mask: refused naming both, nothing sent upstream."""
    handle = await bot.imagine(
        prompt="x",
        model="gpt-image-1",
        image=png("photo.png"),
        mask=AttachmentInput("m.png", make_transparent_png(32, 32), content_type="image/png"),
    )
    text = await refusal(handle)
    assert "m.png" in text
    assert "64x64" in text
    assert "32x32" in text
    assert bot.comet.edit_calls == []
    assert rows(bot, "id") == []


async def test_a_renamed_text_file_is_refused_privately(bot: Harness) -> None:
    """The bytes decide, not the name or the content type."""
    handle = await bot.imagine(
        prompt="x", model="gpt-image-2", image=AttachmentInput.renamed_text("photo.png")
    )
    assert "`photo.png` is not an image" in await refusal(handle)
    assert bot.comet.edit_calls == []


async def test_a_30_mb_image_is_refused_before_it_is_downloaded(bot: Harness) -> None:
    """Over CometAPI's 25 MB per image: refused by its declared size, privately."""
    huge = AttachmentInput.oversized(30_000_000, "huge.png")
    handle = await bot.imagine(prompt="x", model="gpt-image-2", image=huge)
    assert "`huge.png` is larger than 25 MB" in await refusal(handle)
    assert bot.comet.edit_calls == []
    assert all(fetch.bytes_sent == 0 for fetch in bot.discord.cdn_fetches)


async def test_a_model_that_does_not_edit_is_refused_naming_those_that_do(
    bot: Harness,
) -> None:
    """dall-e-3 with an image: private, names the models that edit, nothing billed."""
    assert CATALOG["dall-e-3"].edit is None
    handle = await bot.imagine(prompt="x", model="dall-e-3", image=png("a.png"))
    text = await refusal(handle)
    assert "does not edit images" in text
    assert "gpt-image-2" in text
    assert bot.comet.calls == []


async def test_remix_another_members_message_from_the_context_menu(bot: Harness) -> None:
    """Apps > Remix with imagine on a member's photo: a form, then an edit billed to the presser."""
    photo = png("holiday.png", seed=7)
    message = bot.discord.user_message("look!", user_id=OTHER, attachments=[photo])
    menu = await bot.discord.invoke_message_command("Remix with imagine", message, user_id=MEMBER)
    await menu.wait_for_callback()
    assert menu.modal is not None
    (field,) = modal_inputs(menu.modal).values()
    result = await delivered(bot, await menu.submit_modal({field: "as a postcard"}))
    (call,) = bot.comet.edit_calls
    assert [part.data for part in call.images] == [photo.data]
    assert call.fields["prompt"] == "as a postcard"
    assert rows(bot, "user_id, kind") == [(MEMBER, "edit")]
    assert result["attachments"]


async def test_remix_our_own_result_from_its_button(bot: Harness) -> None:
    """The Remix button on a result uses that result's image as the reference."""
    first = await delivered(bot, await bot.imagine(prompt="a cat", user_id=MEMBER))
    served = bot.comet.calls[0].served_images
    custom_id = next(
        b["custom_id"]
        for row in first["components"]
        for b in row["components"]
        if b["label"] == "Remix"
    )
    press = await bot.discord.press(first, custom_id, user_id=OTHER)
    await press.wait_for_callback()
    (field,) = modal_inputs(press.modal or {}).values()
    await delivered(bot, await press.submit_modal({field: "in the snow"}, user_id=OTHER))
    (call,) = bot.comet.edit_calls
    assert [part.data for part in call.images] == served
    assert rows(bot, "user_id, kind") == [(MEMBER, "generation"), (OTHER, "edit")]


async def test_a_message_without_images_cannot_be_remixed(bot: Harness) -> None:
    """The menu on a text-only message answers privately and opens no form."""
    message = bot.discord.user_message("just words", user_id=OTHER)
    menu = await bot.discord.invoke_message_command("Remix with imagine", message, user_id=MEMBER)
    assert "no image to remix" in await refusal(menu)


def _button(message: dict[str, Any], label: str) -> str:
    return next(
        b["custom_id"]
        for row in message["components"]
        for b in row["components"]
        if b["label"] == label
    )


async def test_larger_renders_the_result_again_at_the_largest_size_for_the_presser(
    bot: Harness,
) -> None:
    """gpt-image-2 square result: an edit at 2048x2048 of that image, billed to the presser."""
    first = await delivered(
        bot, await bot.imagine(prompt="a cat", model="gpt-image-2", user_id=MEMBER)
    )
    served = bot.comet.calls[0].served_images
    press = await bot.discord.press(first, _button(first, "Larger"), user_id=OTHER)
    await delivered(bot, press)
    (call,) = bot.comet.edit_calls
    assert call.fields["size"] == "2048x2048"
    assert call.fields["prompt"] == "a cat"
    assert [part.data for part in call.images] == served
    assert rows(bot, "user_id, kind, parent_id") == [
        (MEMBER, "generation", None),
        (OTHER, "edit", 1),
    ]


async def test_larger_on_a_model_that_does_not_edit_is_refused(bot: Harness) -> None:
    """dall-e-3 cannot take its own image back: a private sentence, nothing billed."""
    first = await delivered(bot, await bot.imagine(prompt="a cat", model="dall-e-3"))
    press = await bot.discord.press(first, _button(first, "Larger"), user_id=MEMBER)
    assert "only models that edit can" in await refusal(press)
    assert bot.comet.edit_calls == []


async def test_a_vanished_attachment_is_refused_privately(bot: Harness) -> None:
    """Deleted before the bot fetched it: a private sentence naming it, nothing billed."""
    handle = await bot.imagine(prompt="x", model="gpt-image-2", image=png("gone.png").vanished())
    text = await refusal(handle)
    assert "`gone.png` could not be downloaded" in text
    assert bot.comet.edit_calls == []


async def test_a_slow_download_is_acknowledged_in_time_and_then_edited(bot: Harness) -> None:
    """A 1.8 s download: the deferral comes within Discord's 3 s, the edit after it."""
    handle = await bot.imagine(
        prompt="slowly", model="gpt-image-2", image=png("slow.png", seed=3).slow(delay=1.8)
    )
    callback = await handle.wait_for_callback(timeout=5)
    assert callback.json["type"] == 5
    await delivered(bot, handle)
    assert len(bot.comet.edit_calls) == 1
    first_fetch = bot.discord.cdn_fetches[0]
    assert first_fetch.complete


async def test_an_image_without_a_model_uses_one_that_edits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DEFAULT_MODEL dall-e-3 does not edit: an image with no model goes to gpt-image-2."""
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, tmp_path / "usage.db", monkeypatch, default_model="dall-e-3") as bot,
    ):
        handle = await bot.imagine(prompt="x", image=png("a.png"))
        await delivered(bot, handle)
        (call,) = comet.edit_calls
        assert call.fields["model"] == "gpt-image-2"


async def test_a_private_results_remix_stays_private(bot: Harness) -> None:
    """Remix from a private result: the new result is ephemeral too."""
    first = await delivered(
        bot, await bot.imagine(prompt="secret", model="gpt-image-2", user_id=MEMBER, private=True)
    )
    press = await bot.discord.press(first, _button(first, "Remix"), user_id=MEMBER)
    await press.wait_for_callback()
    (field,) = modal_inputs(press.modal or {}).values()
    remix = await press.submit_modal({field: "in the rain"})
    deferred = await remix.wait_for_callback()
    assert deferred.json["data"]["flags"] & EPHEMERAL
    await delivered(bot, remix)
    assert rows(bot, "private, kind") == [(1, "generation"), (1, "edit")]
