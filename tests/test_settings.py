"""Settings: defaults, validation messages, secrets kept secret."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.settings import Settings, describe_settings_error

TOKEN = "MTIzNDU2Nzg5.discord-token-value-that-is-secret"
KEY = "sk-comet-secret-key-0123456789"


def build(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_match_the_documented_table() -> None:
    """Every default the README and .env.example promise."""
    settings = build(discord_token=TOKEN, cometapi_key=KEY)
    assert settings.cometapi_base_url == "https://api.cometapi.com/v1"
    assert settings.discord_api_base_url == "https://discord.com/api/v10"
    assert settings.database_path == Path("data/usage.db")
    assert settings.default_model == "dall-e-3"
    assert settings.cometapi_timeout_s == 180
    assert settings.max_concurrent_generations == 16
    assert settings.user_daily_image_limit == 0
    assert settings.discord_guild_ids == ()


def test_environment_values_are_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Comma-separated guild ids, numbers and URLs from the environment."""
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv("COMETAPI_KEY", KEY)
    monkeypatch.setenv("DISCORD_GUILD_IDS", "123, 456,")
    monkeypatch.setenv("COMETAPI_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("USER_DAILY_IMAGE_LIMIT", "25")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.discord_guild_ids == (123, 456)
    assert settings.cometapi_base_url == "http://127.0.0.1:9/v1"
    assert settings.user_daily_image_limit == 25


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"cometapi_key": KEY}, "DISCORD_TOKEN"),
        ({"discord_token": TOKEN}, "COMETAPI_KEY"),
        ({"discord_token": TOKEN, "cometapi_key": KEY, "default_model": "sdxl"}, "DEFAULT_MODEL"),
        (
            {"discord_token": TOKEN, "cometapi_key": KEY, "cometapi_timeout_s": 0},
            "COMETAPI_TIMEOUT_S",
        ),
        (
            {"discord_token": TOKEN, "cometapi_key": KEY, "max_concurrent_generations": 0},
            "MAX_CONCURRENT_GENERATIONS",
        ),
        (
            {"discord_token": TOKEN, "cometapi_key": KEY, "cometapi_base_url": "ftp://x"},
            "COMETAPI_BASE_URL",
        ),
        ({"discord_token": " ", "cometapi_key": KEY}, "DISCORD_TOKEN"),
    ],
)
def test_bad_settings_are_named(values: dict[str, object], named: str) -> None:
    """The message names the environment variable to fix."""
    with pytest.raises(ValidationError) as caught:
        build(**values)
    assert named in describe_settings_error(caught.value)


def test_secrets_never_show_in_repr_or_errors() -> None:
    """SecretStr hides the token and the key; a validation error does not echo them."""
    settings = build(discord_token=TOKEN, cometapi_key=KEY)
    assert TOKEN not in repr(settings)
    assert KEY not in repr(settings)
    with pytest.raises(ValidationError) as caught:
        build(discord_token=TOKEN, cometapi_key=KEY, default_model="nope")
    text = describe_settings_error(caught.value)
    assert TOKEN not in text
    assert KEY not in text


def test_running_without_a_token_prints_a_clear_error(tmp_path: Path) -> None:
    """`python -m bot` with nothing set: exit 2, DISCORD_TOKEN named, no traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "DISCORD_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr


def test_database_url_is_a_secret_kept_out_of_errors_and_logs() -> None:
    """DATABASE_URL carries a password: never in a settings error, always in the log filter."""
    from bot.settings import Settings, describe_settings_error

    base = {"discord_token": "t" * 20, "cometapi_key": "k" * 20}
    url = "postgresql://bot:hunter2-long-pass@db:5432/imagine"
    settings = Settings(_env_file=None, database_url=url, **base)  # type: ignore[call-arg]
    assert settings.storage_url == url
    assert "hunter2-long-pass" in settings.secrets
    assert "hunter2" not in repr(settings)
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, database_url="mysql://bot:hunter2-long-pass@db/x", **base)  # type: ignore[call-arg]
    text = describe_settings_error(raised.value)
    assert "DATABASE_URL: must start with sqlite:/// or postgresql://" in text
    assert "hunter2" not in text


def test_the_default_storage_is_the_sqlite_file_and_instance_follows_the_shards() -> None:
    """Unset DATABASE_URL is sqlite:/// DATABASE_PATH; the instance id is named by SHARD_IDS."""
    from bot.settings import Settings

    base = {"discord_token": "t" * 20, "cometapi_key": "k" * 20}
    plain = Settings(_env_file=None, database_path="x/usage.db", **base)  # type: ignore[call-arg]
    assert (plain.storage_url, plain.instance) == ("sqlite:///x/usage.db", "default")
    sharded = Settings(_env_file=None, shard_count=4, shard_ids="3,1", **base)  # type: ignore[call-arg]
    assert sharded.instance == "shards-1-3"
    named = Settings(_env_file=None, instance_id="eu-1", shard_count=4, shard_ids="1", **base)  # type: ignore[call-arg]
    assert named.instance == "eu-1"
