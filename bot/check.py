"""`python -m bot check`: can this configuration work? Plain answers, no secrets."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.ledger.migrations import SCHEMA_VERSION
from bot.ledger.pg_migrations import PG_SCHEMA_VERSION
from bot.ledger.storage import is_postgres, open_storage, shown
from bot.ledger.store import LedgerInUse
from bot.settings import Settings

_TIMEOUT = aiohttp.ClientTimeout(total=15)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome in words an operator can act on."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        """The printed line."""
        mark = "ok  " if self.ok else "FAIL"
        return f"[{mark}] {self.name}: {self.detail}"


async def _get_json(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, Any]:
    async with session.get(url, headers=headers, timeout=_TIMEOUT, allow_redirects=False) as resp:
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, None


async def check_discord(session: aiohttp.ClientSession, settings: Settings) -> CheckResult:
    """The token works against DISCORD_API_BASE_URL."""
    url = f"{settings.discord_api_base_url}/users/@me"
    headers = {"Authorization": f"Bot {settings.discord_token.get_secret_value()}"}
    try:
        status, body = await _get_json(session, url, headers)
    except (aiohttp.ClientError, TimeoutError) as error:
        return CheckResult(
            "Discord",
            False,
            f"cannot reach {settings.discord_api_base_url} ({type(error).__name__})",
        )
    if status == 200 and isinstance(body, dict):
        return CheckResult(
            "Discord", True, f"DISCORD_TOKEN works: logged in as {body.get('username')}"
        )
    if status == 401:
        return CheckResult(
            "Discord", False, "Discord refused DISCORD_TOKEN: copy the bot token again"
        )
    return CheckResult("Discord", False, f"unexpected answer HTTP {status} from {url}")


async def check_cometapi(session: aiohttp.ClientSession, settings: Settings) -> CheckResult:
    """The key works: the authenticated model list is a cheap call that generates nothing."""
    url = f"{settings.cometapi_base_url}/models"
    headers = {"Authorization": f"Bearer {settings.cometapi_key.get_secret_value()}"}
    try:
        status, body = await _get_json(session, url, headers)
    except (aiohttp.ClientError, TimeoutError) as error:
        return CheckResult(
            "CometAPI", False, f"cannot reach {settings.cometapi_base_url} ({type(error).__name__})"
        )
    if status in (401, 403):
        return CheckResult("CometAPI", False, "CometAPI refused COMETAPI_KEY: check the key")
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("data"), list):
        return CheckResult(
            "CometAPI",
            False,
            f"unexpected answer HTTP {status} from {url}: is COMETAPI_BASE_URL right "
            "(it ends in /v1)?",
        )
    ids = {item.get("id") for item in body["data"] if isinstance(item, dict)}
    if settings.default_model not in ids:
        return CheckResult(
            "CometAPI",
            False,
            f"COMETAPI_KEY works, but DEFAULT_MODEL {settings.default_model} is not in the "
            "key's model list",
        )
    return CheckResult(
        "CometAPI", True, f"COMETAPI_KEY works; DEFAULT_MODEL {settings.default_model} is offered"
    )


async def check_database(settings: Settings) -> CheckResult:
    """The database opens (SQLite file or PostgreSQL) and is at this bot's schema version."""
    where = shown(settings.storage_url)
    try:
        async with open_storage(settings.storage_url, instance_id=settings.instance):
            pass
    except LedgerInUse as error:
        # The running bot holds the file (or this instance id): the normal case while it runs.
        holder = f"pid {error.holder}" if error.holder.isdigit() else f"instance {error.holder}"
        return CheckResult(
            "Database", True, f"{where} is in use by the running bot ({holder}); not opened"
        )
    except Exception as error:  # any failure here is the operator's to see, in words
        return CheckResult("Database", False, f"{where}: {error}")
    return CheckResult("Database", True, f"{where} opens (schema version {_version(settings)})")


def _version(settings: Settings) -> int:
    return PG_SCHEMA_VERSION if is_postgres(settings.storage_url) else SCHEMA_VERSION


async def run_checks(settings: Settings) -> list[CheckResult]:
    """Every check, run together."""
    async with aiohttp.ClientSession() as session:
        return list(
            await asyncio.gather(
                check_discord(session, settings),
                check_cometapi(session, settings),
                check_database(settings),
            )
        )
