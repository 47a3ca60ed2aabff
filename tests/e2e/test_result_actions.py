"""The buttons under a result, pressed through the gateway by the requester and by others."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import (
    EPHEMERAL,
    Harness,
    fakes,
    modal_inputs,
    private_text,
    result_of,
    run_bot,
)
from tests.fakes.discord_payloads import MANAGER_PERMISSIONS, MEMBER_PERMISSIONS

MEMBER = 6000
OTHER = 6001


def rows(database: Path, columns: str) -> list[Any]:
    with sqlite3.connect(database) as db:
        return db.execute(f"SELECT {columns} FROM generations ORDER BY id").fetchall()  # noqa: S608


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """The result's buttons: label -> custom_id."""
    return {
        button["label"]: button["custom_id"]
        for row in message.get("components", [])
        for button in row.get("components", [])
    }


async def test_a_result_carries_six_buttons_naming_its_generation(bot: Harness) -> None:
    """Reroll, edit, remix, larger, details, delete, each with the generation id in its id."""
    message = await result_of(bot, await bot.imagine(prompt="a cat", user_id=MEMBER))
    found = buttons(message)
    assert set(found) == {"Reroll", "Edit prompt", "Remix", "Larger", "Details", "Delete"}
    ((row_id,),) = rows(Path(bot.app.settings.database_path), "id")
    assert all(custom_id.endswith(f":{row_id}") for custom_id in found.values())


@pytest.mark.parametrize("presser", [MEMBER, OTHER], ids=["requester", "another-member"])
async def test_reroll_is_a_new_generation_of_whoever_pressed(bot: Harness, presser: int) -> None:
    """Same request again, billed to the presser, linked to its source in the ledger and UI."""
    first = await result_of(
        bot, await bot.imagine(prompt="a cat", user_id=MEMBER, model="dall-e-3")
    )
    press = await bot.discord.press(first, buttons(first)["Reroll"], user_id=presser)
    second = await result_of(bot, press)
    database = Path(bot.app.settings.database_path)
    (parent, child) = rows(database, "id, user_id, parent_id, model, options_json")
    assert child[1] == presser
    assert child[2] == parent[0]
    assert (child[3], child[4]) == (parent[3], parent[4])
    made_from = [f for f in second["embeds"][0]["fields"] if f["name"] == "Made again from"]
    assert made_from
    assert f"/{first['id']}" in made_from[0]["value"]
    assert len(bot.comet.calls) == 2


async def test_a_reroll_refused_by_the_quota_is_private_and_unbilled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """USER_DAILY_IMAGE_LIMIT=1: the reroll names the limit privately; nothing goes upstream."""
    async with (
        fakes() as (fake, comet),
        run_bot(fake, comet, tmp_path / "usage.db", monkeypatch, user_daily_image_limit=1) as bot,
    ):
        first = await result_of(bot, await bot.imagine(prompt="a cat", user_id=MEMBER))
        press = await fake.press(first, buttons(first)["Reroll"], user_id=MEMBER)
        assert "Daily limit reached" in await private_text(press)
        assert len(comet.calls) == 1
    assert len(rows(tmp_path / "usage.db", "id")) == 1


async def test_buttons_work_after_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result posted by one run of the bot is rerolled by the next: nothing in memory."""
    database = tmp_path / "usage.db"
    async with fakes() as (fake, comet):
        async with run_bot(fake, comet, database, monkeypatch) as bot:
            first = await result_of(bot, await bot.imagine(prompt="a cat", user_id=MEMBER))
        async with run_bot(fake, comet, database, monkeypatch) as bot:
            press = await fake.press(first, buttons(first)["Reroll"], user_id=MEMBER)
            await result_of(bot, press)
    assert [row[0] for row in rows(database, "parent_id")] == [None, 1]


async def test_edit_prompt_opens_a_prefilled_form_and_validates_like_imagine(
    bot: Harness,
) -> None:
    """The form holds the prompt; a size the model refuses is refused by name, privately."""
    first = await result_of(
        bot, await bot.imagine(prompt="a red fox", user_id=MEMBER, model="dall-e-3")
    )
    press = await bot.discord.press(first, buttons(first)["Edit prompt"], user_id=MEMBER)
    await press.wait_for_callback()
    modal = press.modal
    assert modal is not None
    assert "a red fox" in str(modal)
    inputs = modal_inputs(modal)
    refused = await press.submit_modal({inputs["Prompt"]: "a blue fox", inputs["Size"]: "999x999"})
    assert "`size`" in await private_text(refused)
    assert len(bot.comet.calls) == 1
    press = await bot.discord.press(first, buttons(first)["Edit prompt"], user_id=MEMBER)
    await press.wait_for_callback()
    inputs = modal_inputs(press.modal or {})
    accepted = await press.submit_modal({inputs["Prompt"]: "a blue fox"})
    second = await result_of(bot, accepted)
    assert second["embeds"][0]["description"] == "a blue fox"
    assert bot.comet.calls[-1].json["prompt"] == "a blue fox"


async def test_details_are_private_and_carry_the_request_id(bot: Harness) -> None:
    """Any member may look; the answer is only theirs and names our request id."""
    first = await result_of(bot, await bot.imagine(prompt="a cat", user_id=MEMBER))
    press = await bot.discord.press(first, buttons(first)["Details"], user_id=OTHER)
    callback = await press.wait_for_callback()
    assert callback.json["data"]["flags"] & EPHEMERAL
    ((request_id,),) = rows(Path(bot.app.settings.database_path), "request_id")
    assert request_id in str(callback.json["data"]["embeds"])
    assert "Time" in str(callback.json["data"]["embeds"])


async def test_only_the_requester_or_a_moderator_can_delete(bot: Harness) -> None:
    """A stranger is refused privately; a member with Manage Messages deletes it; row stays."""
    first = await result_of(bot, await bot.imagine(prompt="a cat", user_id=MEMBER))
    delete = buttons(first)["Delete"]
    stranger = await bot.discord.press(first, delete, user_id=OTHER, permissions=MEMBER_PERMISSIONS)
    assert "Only the member who asked" in await private_text(stranger)
    assert bot.discord.message(first["id"]) is not None
    moderator = await bot.discord.press(
        first, delete, user_id=OTHER + 1, permissions=MANAGER_PERMISSIONS
    )
    await moderator.wait_for(lambda r: r.method == "DELETE")
    assert bot.discord.message(first["id"]) is None
    database = Path(bot.app.settings.database_path)
    for _ in range(100):  # the bot records the deletion after Discord confirmed it
        if rows(database, "deleted_by") != [(None,)]:
            break
        await asyncio.sleep(0.02)
    ((status, deleted_by),) = rows(database, "status, deleted_by")
    assert (status, deleted_by) == ("delivered", OTHER + 1)


async def test_a_private_result_and_its_reroll_stay_private(bot: Harness) -> None:
    """private:true: the result is ephemeral, with buttons; its reroll is ephemeral too."""
    handle = await bot.imagine(prompt="secret", user_id=MEMBER, private=True)
    callback = await handle.wait_for_callback()
    assert callback.json == {"type": 5, "data": {"flags": EPHEMERAL}}
    first = await result_of(bot, handle)
    assert buttons(first)
    press = await bot.discord.press(first, buttons(first)["Reroll"], user_id=MEMBER)
    deferred = await press.wait_for_callback()
    assert deferred.json["data"]["flags"] & EPHEMERAL
    await result_of(bot, press)
    assert [row[0] for row in rows(Path(bot.app.settings.database_path), "private")] == [1, 1]


async def test_history_lists_only_the_callers_generations(bot: Harness) -> None:
    """Two members each make one; /history shows each only their own, privately."""
    mine = await result_of(bot, await bot.imagine(prompt="mine", user_id=MEMBER, model="dall-e-2"))
    await result_of(bot, await bot.imagine(prompt="theirs", user_id=OTHER, model="dall-e-3"))
    handle = await bot.discord.invoke("history", {}, user_id=MEMBER)
    callback = await handle.wait_for_callback()
    assert callback.json["data"]["flags"] & EPHEMERAL
    text = str(callback.json["data"]["embeds"][0]["description"])
    assert "dall-e-2" in text
    assert "dall-e-3" not in text
    assert f"/{mine['id']})" in text


async def test_a_button_whose_row_is_gone_answers_in_plain_words(bot: Harness) -> None:
    """The ledger row was removed by an operator: a private sentence, nothing billed."""
    first = await result_of(bot, await bot.imagine(prompt="a cat", user_id=MEMBER))
    with sqlite3.connect(bot.app.settings.database_path) as db:
        db.execute("DELETE FROM generations")
    press = await bot.discord.press(first, buttons(first)["Reroll"], user_id=MEMBER)
    assert "no longer in the bot's log" in await private_text(press)
    assert len(bot.comet.calls) == 1


async def test_a_button_on_a_model_no_longer_offered_says_so(bot: Harness) -> None:
    """A result of a model the catalog dropped: the reroll is refused by name, privately."""
    first = await result_of(bot, await bot.imagine(prompt="a cat", user_id=MEMBER))
    with sqlite3.connect(bot.app.settings.database_path) as db:
        db.execute("UPDATE generations SET model = 'dall-e-1'")
    press = await bot.discord.press(first, buttons(first)["Reroll"], user_id=MEMBER)
    assert "dall-e-1 is no longer offered" in await private_text(press)
    assert len(bot.comet.calls) == 1


async def test_another_member_edits_the_prompt_and_is_billed_for_it(bot: Harness) -> None:
    """The form opened by another member starts a generation that is theirs, not the owner's."""
    first = await result_of(bot, await bot.imagine(prompt="a cat", user_id=MEMBER))
    press = await bot.discord.press(first, buttons(first)["Edit prompt"], user_id=OTHER)
    await press.wait_for_callback()
    inputs = modal_inputs(press.modal or {})
    await result_of(bot, await press.submit_modal({inputs["Prompt"]: "a dog"}, user_id=OTHER))
    database = Path(bot.app.settings.database_path)
    assert rows(database, "user_id, parent_id") == [(MEMBER, None), (OTHER, 1)]


async def test_the_requester_sees_details_of_their_own_result(bot: Harness) -> None:
    """Details pressed by the requester: private, with the model and every parameter sent."""
    first = await result_of(
        bot, await bot.imagine(prompt="a cat", user_id=MEMBER, model="dall-e-3", style="natural")
    )
    press = await bot.discord.press(first, buttons(first)["Details"], user_id=MEMBER)
    callback = await press.wait_for_callback()
    assert callback.json["data"]["flags"] & EPHEMERAL
    shown = str(callback.json["data"]["embeds"])
    assert "model=dall-e-3" in shown
    assert "style=natural" in shown
