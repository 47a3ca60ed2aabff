"""The fake Discord refuses command localizations Discord would refuse, over HTTP too."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from tests.fakes.fake_discord import FakeDiscord, check_commands

COMMAND: dict[str, Any] = {
    "name": "imagine",
    "description": "Create images",
    "type": 1,
    "name_localizations": {"ja": "画像生成", "de": "bild-erstellen", "en-US": "imagine"},
    "description_localizations": {"ja": "画像を作ります", "de": "Bilder erstellen"},
    "options": [
        {
            "type": 3,
            "name": "style",
            "description": "Style",
            "name_localizations": {"ja": "スタイル", "de": "stil"},
            "description_localizations": {"de": "Stil"},
            "choices": [
                {"name": "vivid", "value": "vivid", "name_localizations": {"ja": "鮮やか"}},
            ],
        }
    ],
}

Mutation = Callable[[dict[str, Any]], None]


def _option(command: dict[str, Any]) -> dict[str, Any]:
    option: dict[str, Any] = command["options"][0]
    return option


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["name_localizations"].update(de="Bild"), "[0].name_localizations.de"),
        (lambda c: c["name_localizations"].update(ja="画像 生成"), "[0].name_localizations.ja"),
        (lambda c: c["name_localizations"].update(ja="画像・生成"), "[0].name_localizations.ja"),
        (lambda c: c["name_localizations"].update(de="b" * 33), "[0].name_localizations.de"),
        (lambda c: c["name_localizations"].update({"ja-JP": "がぞう"}), "name_localizations.ja-JP"),
        (lambda c: c["name_localizations"].update(en="imagine"), "[0].name_localizations.en"),
        (
            lambda c: c["description_localizations"].update(de="x" * 101),
            "[0].description_localizations.de",
        ),
        (
            lambda c: c["description_localizations"].update(ja=""),
            "[0].description_localizations.ja",
        ),
        (
            lambda c: _option(c)["name_localizations"].update(de="Stil"),
            "[0].options[0].name_localizations.de",
        ),
        (
            lambda c: _option(c)["description_localizations"].update(ja="x" * 101),
            "[0].options[0].description_localizations.ja",
        ),
        (
            lambda c: _option(c)["choices"][0]["name_localizations"].update(ja="x" * 101),
            "[0].options[0].choices[0].name_localizations.ja",
        ),
        (
            lambda c: _option(c)["choices"][0]["name_localizations"].update(jp="鮮やか"),
            "choices[0].name_localizations.jp",
        ),
    ],
    ids=[
        "name-upper-case",
        "name-space",
        "name-punctuation",
        "name-33-chars",
        "unknown-locale",
        "bare-en",
        "description-101",
        "description-empty",
        "option-name-upper-case",
        "option-description-101",
        "choice-name-101",
        "choice-unknown-locale",
    ],
)
def test_a_bad_localization_is_refused(mutate: Mutation, expected: str) -> None:
    """Discord's rules: the name pattern, lower case, 32 and 100 characters, known locales."""
    command = copy.deepcopy(COMMAND)
    assert check_commands([command]) == []
    mutate(command)
    problems = [problem.describe() for problem in check_commands([command])]
    assert any(expected in text for text in problems), problems


async def test_the_command_put_is_refused_with_a_bad_localization() -> None:
    """Over HTTP: the bulk overwrite answers 400 and records nothing, like Discord."""
    command = copy.deepcopy(COMMAND)
    command["name_localizations"]["de"] = "Bild Erstellen"
    async with FakeDiscord() as fake, aiohttp.ClientSession() as session:
        url = f"{fake.api_base_url}/applications/{fake.application_id}/commands"
        headers = {"Authorization": f"Bot {fake.token}", "User-Agent": "DiscordBot (test, 1)"}
        async with session.put(url, json=[command], headers=headers) as response:
            assert response.status == 400
            body = await response.json()
        assert "name_localizations" in str(body)
        assert fake.command_puts == []
        assert fake.global_commands == []
        fake.violations.clear()
