"""The reader's language through the real bot: refusals, results, /usage, buttons, commands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import EPHEMERAL, Harness, admin, fakes, private_text, result_of, run_bot

MEMBER = 6000
OTHER = 6001


@pytest.fixture
async def german_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    """The bot in a server whose locale (guild_locale) is German."""
    async with fakes() as (fake, comet):
        spec = fake.guild()
        fake.guilds[spec.id] = replace(spec, locale="de")
        async with run_bot(fake, comet, tmp_path / "usage.db", monkeypatch) as harness:
            yield harness


def fields(embed: dict[str, Any]) -> dict[str, str]:
    return {field["name"]: field["value"] for field in embed.get("fields", [])}


def labels(message: dict[str, Any]) -> dict[str, str]:
    """The result's buttons: label -> custom_id."""
    return {
        button["label"]: button["custom_id"]
        for row in message.get("components", [])
        for button in row.get("components", [])
    }


async def block_word(bot: Harness, term: str) -> None:
    await admin(bot, ["limits", "block-word"], {"term": term})


async def usage_embed(bot: Harness, locale: str) -> dict[str, Any]:
    handle = await bot.discord.invoke("usage", {}, user_id=MEMBER, locale=locale)
    callback = await handle.wait_for_callback()
    assert callback.json["data"]["flags"] & EPHEMERAL
    embed: dict[str, Any] = callback.json["data"]["embeds"][0]
    return embed


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("ja", "プロンプトに、このサーバーで禁止されている語句が含まれています"),
        ("de", "Dein Prompt enthält ein Wort oder einen Ausdruck"),
        ("en-US", "Your prompt contains a word or phrase this server does not allow"),
    ],
)
async def test_a_blocked_word_is_refused_in_the_members_language(
    bot: Harness, locale: str, expected: str
) -> None:
    """The refusal of a blocked word, privately, in ja, de or English; nothing sent upstream."""
    await block_word(bot, "spider")
    text = await private_text(await bot.imagine(prompt="a spider", user_id=MEMBER, locale=locale))
    assert expected in text
    assert "spider" not in text
    assert bot.comet.calls == []


async def test_a_channel_refusal_is_in_the_members_language(bot: Harness) -> None:
    """Outside the allowed channels: the refusal names them, in Japanese."""
    allowed = bot.discord.guild().text_channel_id
    await admin(bot, ["limits", "channel-allow"], {"channel": allowed})
    text = await private_text(
        await bot.imagine(prompt="a cat", user_id=MEMBER, channel_id=allowed + 100, locale="ja")
    )
    assert "このサーバーでは、/imagine は次のチャンネルでのみ使えます" in text
    assert f"<#{allowed}>" in text


@pytest.mark.parametrize(
    ("locale", "model_field", "buttons", "footer"),
    [
        (
            "ja",
            "モデル",
            {"再生成", "プロンプトを編集", "リミックス", "拡大", "詳細", "削除"},
            "1枚・",
        ),
        (
            "de",
            "Modell",
            {"Neu würfeln", "Prompt bearbeiten", "Remix", "Größer", "Details", "Löschen"},
            "1 Bild in ",
        ),
    ],
)
async def test_a_result_is_in_the_requesters_language(
    bot: Harness, locale: str, model_field: str, buttons: set[str], footer: str
) -> None:
    """The result's embed, footer and buttons speak the language of whoever asked."""
    message = await result_of(
        bot, await bot.imagine(prompt="a red kite", model="dall-e-3", user_id=MEMBER, locale=locale)
    )
    embed = message["embeds"][0]
    assert fields(embed)[model_field] == "dall-e-3"
    assert embed["footer"]["text"].startswith(footer)
    assert set(labels(message)) == buttons


async def test_a_press_is_answered_in_the_pressers_language(bot: Harness) -> None:
    """A Japanese result's Details pressed by a German member: the private answer is German."""
    message = await result_of(
        bot, await bot.imagine(prompt="a red kite", model="dall-e-3", user_id=MEMBER, locale="ja")
    )
    details = await bot.discord.press(message, labels(message)["詳細"], user_id=OTHER, locale="de")
    callback = await details.wait_for_callback()
    embed = callback.json["data"]["embeds"][0]
    assert embed["title"].startswith("Generierung ")
    assert "Geschätzte Kosten" in fields(embed)


async def test_usage_is_in_the_members_language_with_its_numbers(bot: Harness) -> None:
    """/usage after one image: Japanese and German titles, fields, money and days."""
    await result_of(bot, await bot.imagine(prompt="a cat", model="dall-e-3", user_id=MEMBER))
    japanese = await usage_embed(bot, "ja")
    # \uff1a: Japanese text takes the full-width colon.
    assert japanese["title"] == "あなたの画像利用状況\uff1a過去30日間"
    assert fields(japanese)["画像"] == "1"
    assert "今日の残り" in fields(japanese)
    german = await usage_embed(bot, "de")
    assert german["title"] == "Deine Bildnutzung: die letzten 30 Tage"
    cost = fields(german)["Kosten"]
    # dall-e-3 standard 1024x1024 is $0.04: German signs, a German day for the prices' date.
    assert cost.startswith("0,0400\xa0$ USD (geschätzt, Preise vom ")
    assert cost[-11:-1].count(".") == 2
    english = await usage_embed(bot, "en-US")
    assert english["title"] == "Your image usage: the last 30 days"
    assert fields(english)["Cost"].startswith("$0.0400 USD (estimated, prices as of 20")


async def test_an_english_member_in_a_german_server_reads_english(german_server: Harness) -> None:
    """The member's own locale comes first: en-US in a de server gets English."""
    text = await private_text(
        await german_server.discord.invoke("usage", {"period": "nonsense"}, locale="en-US")
    )
    assert text.startswith("`period` can't be that.")


async def test_a_member_whose_language_we_lack_reads_the_servers(german_server: Harness) -> None:
    """French is not translated: a French member in a German server reads German."""
    await block_word(german_server, "spider")
    text = await private_text(
        await german_server.imagine(prompt="a spider", user_id=MEMBER, locale="fr")
    )
    assert "Dein Prompt enthält ein Wort oder einen Ausdruck" in text
    embed = await usage_embed(german_server, "fr")
    assert embed["title"] == "Deine Bildnutzung: die letzten 30 Tage"


def _localized(payload: dict[str, Any], key: str) -> dict[str, str]:
    value: dict[str, str] = payload.get(key) or {}
    return value


async def test_the_registered_commands_carry_japanese_and_german(bot: Harness) -> None:
    """The command PUT: names, descriptions, options and choices localized in ja and de."""
    (put,) = bot.discord.command_puts
    commands = {command["name"]: command for command in put.json}
    for name in ("imagine", "usage", "history", "usage-admin"):
        command = commands[name]
        assert {"ja", "de"} <= set(_localized(command, "name_localizations")), name
        assert {"ja", "de"} <= set(_localized(command, "description_localizations")), name
    imagine = commands["imagine"]
    assert imagine["name_localizations"] == {"ja": "画像生成", "de": "bild-erstellen"}
    options = {option["name"]: option for option in imagine["options"]}
    assert options["prompt"]["name_localizations"]["ja"] == "プロンプト"
    assert options["size"]["name_localizations"]["de"] == "größe"
    assert options["prompt"]["description_localizations"]["de"] == "Was das Bild zeigen soll"
    style = {choice["value"]: choice for choice in options["style"]["choices"]}
    assert style["vivid"]["name_localizations"] == {"ja": "鮮やか", "de": "lebendig"}
    period = {choice["value"]: choice for choice in commands["usage"]["options"][0]["choices"]}
    assert period["30d"]["name_localizations"] == {"ja": "過去30日間", "de": "die letzten 30 Tage"}
    menu = commands["Remix with imagine"]
    assert menu["name_localizations"] == {"ja": "imagineでリミックス", "de": "Mit imagine remixen"}
