"""`python -m bot check` against the loopback fakes: each misconfiguration named plainly."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.check import run_checks
from bot.ledger.store import open_ledger
from bot.settings import Settings
from tests.fakes.fake_cometapi import FakeCometAPI
from tests.fakes.fake_discord import FakeDiscord

KEY = "sk-check-key-0123456789"


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeDiscord, FakeCometAPI]]:
    async with FakeDiscord() as discord_fake, FakeCometAPI(api_key=KEY) as comet:
        yield discord_fake, comet
    assert discord_fake.unexpected == []


def settings_for(
    discord_fake: FakeDiscord, comet: FakeCometAPI, tmp_path: Path, **overrides: object
) -> Settings:
    values: dict[str, object] = {
        "discord_token": discord_fake.token,
        "cometapi_key": KEY,
        "discord_api_base_url": discord_fake.api_base_url,
        "cometapi_base_url": comet.base_url,
        "database_path": tmp_path / "db" / "usage.db",
        "default_model": "gpt-image-1",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/v1"


async def test_a_working_configuration_passes(
    fakes: tuple[FakeDiscord, FakeCometAPI], tmp_path: Path
) -> None:
    """All three checks pass and name what they checked."""
    results = await run_checks(settings_for(*fakes, tmp_path))
    assert [r.ok for r in results] == [True, True, True], results
    assert "logged in as" in results[0].detail


@pytest.mark.parametrize(
    ("overrides", "failing", "words"),
    [
        ({"discord_token": "wrong-token-0123456789"}, "Discord", "refused DISCORD_TOKEN"),
        ({"cometapi_key": "sk-wrong-0123456789"}, "CometAPI", "refused COMETAPI_KEY"),
        ({"default_model": "qwen-image"}, "CometAPI", None),
        ({"cometapi_base_url": "DEAD"}, "CometAPI", "cannot reach"),
        ({"discord_api_base_url": "DEAD"}, "Discord", "cannot reach"),
    ],
)
async def test_each_problem_is_named(
    fakes: tuple[FakeDiscord, FakeCometAPI],
    tmp_path: Path,
    overrides: dict[str, object],
    failing: str,
    words: str | None,
) -> None:
    """The failing check says what to fix; secrets never appear."""
    discord_fake, comet = fakes
    if words is None:
        comet.models_catalog = [e for e in comet.models_catalog if e["id"] != "qwen-image"]
        comet.models_reply = None
    values = {key: dead_url() if value == "DEAD" else value for key, value in overrides.items()}
    settings = settings_for(discord_fake, comet, tmp_path, **values)
    results = {r.name: r for r in await run_checks(settings)}
    assert not results[failing].ok
    if words is not None:
        assert words in results[failing].detail
    text = " ".join(r.line() for r in results.values())
    assert settings.discord_token.get_secret_value() not in text
    assert settings.cometapi_key.get_secret_value() not in text


def test_check_command_prints_and_sets_the_exit_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m bot check` with nothing reachable: FAIL lines and exit status 1."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISCORD_TOKEN", "token-0123456789")
    monkeypatch.setenv("COMETAPI_KEY", KEY)
    monkeypatch.setenv("DISCORD_API_BASE_URL", dead_url())
    monkeypatch.setenv("COMETAPI_BASE_URL", dead_url())
    assert main(["check"]) == 1
    out = capsys.readouterr().out
    assert out.count("[FAIL]") == 2
    assert "[ok  ] Database" in out
    assert KEY not in out


async def test_the_database_of_a_running_bot_is_reported_in_use_not_opened(
    fakes: tuple[FakeDiscord, FakeCometAPI], tmp_path: Path
) -> None:
    """While the bot holds the file, check says so (with its pid) instead of failing."""
    settings = settings_for(*fakes, tmp_path)
    async with open_ledger(settings.database_path):
        results = await run_checks(settings)
    database = results[2]
    assert database.ok
    assert f"pid {os.getpid()}" in database.detail
    assert "in use" in database.detail
