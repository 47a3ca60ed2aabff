"""Typed settings, read from the environment and `.env`; built in main, never at import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_PATH: Final = Path("data/usage.db")
_ENV: Final = SettingsConfigDict(
    env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
)


_DATABASE_SCHEMES: Final = ("sqlite:///", "postgresql://", "postgres://")


def _database_url(value: SecretStr | None) -> SecretStr | None:
    if value is None or not value.get_secret_value().strip():
        return None
    if not value.get_secret_value().startswith(_DATABASE_SCHEMES):
        # The value is never repeated: it may hold the database password.
        raise ValueError("must start with sqlite:/// or postgresql://")
    return value


def storage_url(database_url: SecretStr | None, database_path: Path) -> str:
    """Where the ledger is: DATABASE_URL, else the SQLite file DATABASE_PATH names."""
    if database_url is not None:
        return database_url.get_secret_value()
    return f"sqlite:///{database_path}"


class StorageSettings(BaseSettings):
    """Only where the database is: what `python -m bot report` needs, without the bot's secrets.

    DATABASE_URL may carry the database's password: it is a SecretStr like the token.
    """

    model_config = _ENV

    database_path: Path = DEFAULT_DATABASE_PATH
    database_url: SecretStr | None = None

    @field_validator("database_url", mode="before")
    @classmethod
    def _blank_url(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        return _database_url(value)

    @property
    def url(self) -> str:
        """DATABASE_URL, else sqlite:/// with DATABASE_PATH."""
        return storage_url(self.database_url, self.database_path)


class ProbeSettings(BaseSettings):
    """Only where the health endpoint is: what `python -m bot healthcheck` needs."""

    model_config = _ENV

    metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _blank(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value


class Settings(BaseSettings):
    """Everything the bot can be configured with; see `.env.example` for the meaning of each."""

    model_config = _ENV

    discord_token: SecretStr
    cometapi_key: SecretStr
    cometapi_base_url: str = "https://api.cometapi.com/v1"
    discord_api_base_url: str = "https://discord.com/api/v10"
    database_path: Path = DEFAULT_DATABASE_PATH
    database_url: SecretStr | None = None
    instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    default_model: str = "dall-e-3"
    cometapi_timeout_s: float = Field(default=180.0, gt=0)
    max_concurrent_generations: int = Field(default=16, ge=1)
    max_concurrent_per_user: int = Field(default=2, ge=1)
    user_daily_image_limit: int = Field(default=0, ge=0)
    user_daily_budget_usd: float | None = Field(default=None, gt=0)
    bot_daily_budget_usd: float | None = Field(default=None, gt=0)
    discord_guild_ids: Annotated[tuple[int, ...], NoDecode] = ()
    shard_count: int | None = Field(default=None, ge=1)
    shard_ids: Annotated[tuple[int, ...], NoDecode] = ()
    shutdown_grace_s: float = Field(default=20.0, ge=0)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    price_file: Path | None = None
    loop_lag_log_s: float = Field(default=0.0, ge=0)
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"

    @field_validator("price_file", "user_daily_budget_usd", "bot_daily_budget_usd", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # `PRICE_FILE=` as .env.example writes it means "no price file" (and so for budgets).
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("discord_token", "cometapi_key")
    @classmethod
    def _not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("cometapi_base_url", "discord_api_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("default_model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from bot.core.catalog import CATALOG

        if value not in CATALOG:
            raise ValueError(f"must be one of: {', '.join(CATALOG)}")
        return value

    @field_validator("database_url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        return _database_url(value)

    @field_validator("shard_count", "metrics_port", "database_url", "instance_id", mode="before")
    @classmethod
    def _blank_count(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _shards_fit(self) -> Settings:
        if self.shard_ids and self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT")
        if self.shard_count is not None and any(
            not 0 <= shard < self.shard_count for shard in self.shard_ids
        ):
            raise ValueError(
                f"SHARD_IDS must be between 0 and SHARD_COUNT-1 ({self.shard_count - 1})"
            )
        return self

    @property
    def storage_url(self) -> str:
        """DATABASE_URL, else sqlite:/// with DATABASE_PATH (a secret: never log it)."""
        return storage_url(self.database_url, self.database_path)

    @property
    def instance(self) -> str:
        """Whose rows in flight are this process's: INSTANCE_ID, else named by SHARD_IDS.

        Stable across restarts of the same slice, so a restarted process closes the rows
        its previous run left pending, and only those.
        """
        if self.instance_id:
            return self.instance_id
        if self.shard_ids:
            return "shards-" + "-".join(str(shard) for shard in sorted(self.shard_ids))
        return "default"

    @property
    def secrets(self) -> list[str]:
        """Every secret value, for the log filter: the token, the key, the database password."""
        values = [self.discord_token.get_secret_value(), self.cometapi_key.get_secret_value()]
        if self.database_url is not None:
            password = urlsplit(self.database_url.get_secret_value()).password
            if password:
                values.append(password)
            values.append(self.database_url.get_secret_value())
        return values

    @property
    def syncs_commands(self) -> bool:
        """Whether this process registers the commands: the one that runs shard 0 (or all)."""
        return not self.shard_ids or 0 in self.shard_ids

    @field_validator("discord_guild_ids", "shard_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",")]
            return tuple(int(part) for part in parts if part)
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return upper


def describe_settings_error(error: ValidationError) -> str:
    """Turn pydantic's report into lines naming each bad setting by its environment variable."""
    lines = ["The bot's settings are incomplete or invalid:"]
    for problem in error.errors():
        name = str(problem["loc"][0]).upper() if problem["loc"] else "settings"
        if problem["type"] == "missing":
            reason = "is required but not set (put it in the environment or in .env)"
        else:
            # pydantic's message never contains the input value; that keeps secrets out.
            reason = str(problem["msg"]).removeprefix("Value error, ")
        lines.append(f"  {name}: {reason}")
    lines.append("See .env.example for every setting and its meaning.")
    return "\n".join(lines)
