"""An in-process fake of Discord (REST API v10 + gateway v10) for driving a real discord.py bot.

The bot under test points `discord.http.Route.BASE` at `fake.api_base_url`; everything else
(gateway URL, resume URL, attachment URLs) is handed out by the fake itself. One exception:
after INVALID_SESSION(false) or a reconnect that cannot resume, discord.py dials
`DiscordWebSocket.DEFAULT_GATEWAY` (wss://gateway.discord.gg), so tests that provoke those
should also point that at `yarl.URL(fake.gateway_url)`.

The fake answers like Discord does, records every request, and checks what the bot sends
against Discord's documented limits: a broken payload gets the same error Discord would give
*and* lands in `fake.violations`, so tests fail loudly instead of the bug surfacing in
production.

Typical use::

    async with FakeDiscord() as fake:
        monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base_url)
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
        ...start the bot, await fake.wait_until_identified(), await bot.tree.sync()...
        handle = await fake.invoke("imagine", {"prompt": "a paper boat"})
        callback = await handle.wait_for_callback()
        final = await handle.wait_for_final()
        assert final.files[0].data.startswith(b"\\x89PNG")
        fake.assert_clean()

Components: every message the bot sends or edits has its `components` checked (classic action
rows, or Components V2 with the IS_COMPONENTS_V2 flag) and stored as Discord returns them (ids
numbered, `attachment://` media resolved). A test then acts as a member would::

    press = await fake.press(handle.original, "gen:reroll:42")  # MESSAGE_COMPONENT interaction
    await press.wait_for_callback()                     # type 4/5/6/7/9; 6/7 act on that message
    submit = await press.submit_modal({"prompt": "a red boat"})  # if the bot answered with a modal

Reference images: attachment options take `AttachmentInput` values (resolved into
`data.resolved.attachments`), `user_message(..., attachments=[...])` posts a member's message
with files, and every attachment URL is served by a loopback CDN whose behaviour a test picks
per file (`AttachmentInput(...).slow(...)`, `.vanished()`, `AttachmentInput.oversized(...)`,
`AttachmentInput.renamed_text(...)`; `fake.cdn_fetches` records each download)::

    target = fake.user_message("see", attachments=[p.AttachmentInput("cat.png", png)])
    menu = await fake.invoke_message_command("Remix with imagine", target, user_id=77)
    await menu.wait_for_callback()                      # e.g. type 9, a modal
    submit = await menu.submit_modal({"prompt": "in watercolour"})

`press`/`select`/`submit_modal` raise `InteractionRefused` for what the Discord client would not
let a member do (a custom_id not on the message, a disabled or link button, someone else's
ephemeral message, a required input left empty, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import time
import unicodedata
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeGuard

import jsonschema
from aiohttp import BodyPartReader, WSMsgType, web
from jsonschema.exceptions import best_match

from tests.fakes import discord_payloads as p
from tests.fakes.discord_payloads import (
    CDN_AS_UPLOADED,
    DEFAULT_ATTACHMENT_SIZE_LIMIT,
    MEMBER_PERMISSIONS,
    AttachmentInput,
    CdnBehaviour,
    GuildSpec,
    Json,
)

try:  # discord.py asks for zstd-stream whenever this imports, so the fake must speak it too.
    import zstandard
except ImportError:  # pragma: no cover - depends on the environment
    zstandard = None

__all__ = [
    "CdnFetch",
    "FakeDiscord",
    "GatewayFrame",
    "InteractionHandle",
    "InteractionRefused",
    "RecordedFile",
    "RecordedRequest",
    "check_components",
    "check_message",
    "check_modal",
    "find_component",
]

API_PREFIX = "/api/v10"
SCHEMAS_PATH = Path(__file__).resolve().parents[1] / "data" / "discord_schemas.json"

MAX_SAFE_INT = 2**53 - 1
MAX_GATEWAY_PAYLOAD = 4096
GATEWAY_SEND_LIMIT = 120  # per 60 s and connection
# A whole request body (multipart boundaries and headers included): Discord answers 413 / 40005
# above it. Its docs give no number; @sapphire/discord-utilities' MaximumRequestSize is
# 25_000_000, disboxapp/web#50 measured 26,214,400 and Discord.Net#2001 checks the total; the
# fake uses the lowest (shared/specs/cometapi-notes.md, "Discord upload limits beyond one file").
MAX_REQUEST_SIZE = 25_000_000
# aiohttp refuses a plain body above client_max_size with its own 413 before the fake sees it;
# far above MAX_REQUEST_SIZE, the fake reads and measures the body and answers as Discord does.
# (Multipart uploads are streamed part by part, which client_max_size does not limit.)
READ_LIMIT = 256 * 1024 * 1024

# GUILD_MEMBERS, GUILD_PRESENCES, MESSAGE_CONTENT: must be enabled in the developer portal.
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)

# Message flags a bot may set when creating a message (SUPPRESS_EMBEDS, EPHEMERAL,
# SUPPRESS_NOTIFICATIONS, IS_VOICE_MESSAGE, IS_COMPONENTS_V2) and when editing one.
CREATE_FLAGS = 4 | 64 | 4096 | 8192 | 32768
EDIT_FLAGS = 4 | 32768
# The ones the fake keeps on the created message (besides EPHEMERAL, decided per route).
KEPT_FLAGS = 4 | 4096 | 32768

# Initial response types Discord accepts per interaction type.
ALLOWED_CALLBACKS: dict[int, frozenset[int]] = {
    p.INTERACTION_APPLICATION_COMMAND: frozenset({4, 5, 9}),
    p.INTERACTION_AUTOCOMPLETE: frozenset({8}),
    p.INTERACTION_MESSAGE_COMPONENT: frozenset({4, 5, 6, 7, 9}),
    p.INTERACTION_MODAL_SUBMIT: frozenset({4, 5, 6, 7}),
}

CALLBACK_SCHEMAS: dict[int, str] = {
    1: "PongInteractionCallbackRequest",
    4: "CreateMessageInteractionCallbackRequest",
    5: "CreateMessageInteractionCallbackRequest",
    6: "UpdateMessageInteractionCallbackRequest",
    7: "UpdateMessageInteractionCallbackRequest",
    8: "ApplicationCommandAutocompleteCallbackRequest",
    9: "ModalInteractionCallbackRequest",
}

ROUTE_CALLBACK = "POST /interactions/{id}/{token}/callback"
ROUTE_ORIGINAL_GET = "GET /webhooks/{app}/{token}/messages/@original"
ROUTE_ORIGINAL_PATCH = "PATCH /webhooks/{app}/{token}/messages/@original"
ROUTE_ORIGINAL_DELETE = "DELETE /webhooks/{app}/{token}/messages/@original"
ROUTE_FOLLOWUP = "POST /webhooks/{app}/{token}"
ROUTE_MESSAGE_GET = "GET /webhooks/{app}/{token}/messages/{message}"
ROUTE_MESSAGE_PATCH = "PATCH /webhooks/{app}/{token}/messages/{message}"
ROUTE_MESSAGE_DELETE = "DELETE /webhooks/{app}/{token}/messages/{message}"
ROUTE_GLOBAL_COMMANDS_PUT = "PUT /applications/{app}/commands"
ROUTE_GUILD_COMMANDS_PUT = "PUT /applications/{app}/guilds/{guild}/commands"
ROUTE_CHANNEL_MESSAGE = "POST /channels/{channel}/messages"
ROUTE_CHANNEL_MESSAGE_GET = "GET /channels/{channel}/messages/{message}"
ROUTE_CHANNEL_MESSAGE_PATCH = "PATCH /channels/{channel}/messages/{message}"
ROUTE_CHANNEL_MESSAGE_DELETE = "DELETE /channels/{channel}/messages/{message}"

# The routes that end an interaction's "thinking" state with real content.
FINAL_ROUTES = frozenset({ROUTE_ORIGINAL_PATCH, ROUTE_FOLLOWUP})

GATEWAY_CLOSE_REASONS: dict[int, str] = {
    4000: "Unknown error",
    4001: "Unknown opcode",
    4002: "Decode error",
    4003: "Not authenticated",
    4004: "Authentication failed",
    4005: "Already authenticated",
    4007: "Invalid seq",
    4008: "Rate limited",
    4009: "Session timed out",
    4010: "Invalid shard",
    4011: "Sharding required",
    4012: "Invalid API version",
    4013: "Invalid intent(s)",
    4014: "Disallowed intent(s)",
}


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass
class RecordedFile:
    field: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """One HTTP request the bot made, and what the fake answered."""

    method: str
    path: str  # relative to /api/v10 for API calls
    route: str | None  # e.g. "POST /interactions/{id}/{token}/callback"; None if unknown
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    files: list[RecordedFile]
    at: float  # time.monotonic() on arrival
    params: dict[str, str] = field(default_factory=dict)  # the route's {placeholders}
    body: bytes = b""  # a non-multipart body as received
    size: int = 0  # bytes of the body as received, multipart framing included
    status: int | None = None  # None while the fake is still handling it
    response: Any = None

    @property
    def token(self) -> str | None:
        return self.params.get("token")

    @property
    def data(self) -> Any:
        """The message-ish part of the body: `data` of a callback, the body itself elsewhere."""
        if self.route == ROUTE_CALLBACK and isinstance(self.json, dict):
            return self.json.get("data")
        return self.json

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def __repr__(self) -> str:
        return f"<RecordedRequest {self.method} {self.path} -> {self.status}>"


@dataclass
class CdnFetch:
    """One GET (or HEAD) of an attachment URL on the loopback CDN, and how it ended."""

    attachment_id: int | None
    filename: str
    host: Literal["cdn", "media"]  # url (cdn.discordapp.com) or proxy_url (media.discordapp.net)
    method: str
    at: float
    status: int | None = None
    bytes_sent: int = 0
    complete: bool = False  # the whole body was written
    aborted: bool = False  # the client went away before the body ended


@dataclass
class _CdnObject:
    filename: str
    content_type: str | None
    data: bytes
    behaviour: CdnBehaviour = CDN_AS_UPLOADED
    vanished: bool = False


CDN_GONE_TEXT = "This content is no longer available."


@dataclass
class GatewayFrame:
    direction: Literal["in", "out"]  # "in" = sent by the bot
    shard_id: int | None
    payload: Json
    at: float

    @property
    def op(self) -> int | None:
        op = self.payload.get("op")
        return op if isinstance(op, int) else None

    @property
    def event(self) -> str | None:
        event = self.payload.get("t")
        return event if isinstance(event, str) else None


@dataclass(frozen=True)
class Problem:
    loc: tuple[str | int, ...]
    code: str
    message: str
    reject: bool = True  # False: Discord accepts it, but it is a bug in the bot

    def describe(self) -> str:
        where = "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in self.loc)
        return f"{where.lstrip('.') or '<body>'}: {self.message}"


class InteractionRefused(Exception):
    """Raised in the test when it asks for an interaction no member could trigger: pressing a
    component that is not on the message, is disabled, is a link, or is on a message the user
    cannot see; submitting a modal that was never shown, or with values the client refuses."""


class _HTTPError(Exception):
    def __init__(self, status: int, body: Json | None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body


def _error(status: int, code: int, message: str) -> _HTTPError:
    return _HTTPError(status, {"message": message, "code": code})


def _form_error(problems: Sequence[Problem]) -> _HTTPError:
    """Discord's 50035 envelope, errors nested by JSON path as discord.py's parser expects."""
    tree: Json = {}
    for problem in problems:
        node = tree
        for key in problem.loc:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": problem.code, "message": problem.message})
    body: Json = {"code": 50035, "message": "Invalid Form Body", "errors": tree}
    return _HTTPError(400, body)


# ---------------------------------------------------------------------------------------------
# Schemas (copied from Discord's OpenAPI description into tests/data)
# ---------------------------------------------------------------------------------------------


class _Schemas:
    _instance: _Schemas | None = None

    def __init__(self) -> None:
        document = json.loads(SCHEMAS_PATH.read_text(encoding="utf-8"))
        components = document["components"]
        self.response_components: Json = components
        # Discord accepts integer snowflakes in request bodies, and discord.py sends some
        # (attachments[].id is the file index, allowed_mentions ids are ints).
        request_schemas = dict(components["schemas"])
        request_schemas["SnowflakeType"] = {
            "anyOf": [
                components["schemas"]["SnowflakeType"],
                {"type": "integer", "minimum": 0},
            ]
        }
        self.request_components: Json = {"schemas": request_schemas}
        self._validators: dict[tuple[str, bool], jsonschema.Draft202012Validator] = {}

    @classmethod
    def get(cls) -> _Schemas:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def validator(self, name: str, *, request: bool) -> jsonschema.Draft202012Validator:
        key = (name, request)
        if key not in self._validators:
            components = self.request_components if request else self.response_components
            schema = {"$ref": f"#/components/schemas/{name}", "components": components}
            self._validators[key] = jsonschema.Draft202012Validator(schema)
        return self._validators[key]

    def problems(
        self, name: str, instance: Any, *, loc: tuple[str | int, ...] = (), request: bool = True
    ) -> list[Problem]:
        found = []
        for error in self.validator(name, request=request).iter_errors(instance):
            best = best_match([error])
            # jsonschema quotes the whole instance; a 30-choice list makes an unreadable line.
            text = best.message if len(best.message) <= 160 else best.message[:157] + "..."
            found.append(
                Problem(loc + tuple(best.absolute_path), "SCHEMA_INVALID", f"{text} ({name})")
            )
        return found


def schema_problems(name: str, instance: Any, *, request: bool = False) -> list[str]:
    """Validate `instance` against a schema from tests/data/discord_schemas.json.

    Public so tests can check the fake's own replies against Discord's response schemas.
    """
    return [pr.describe() for pr in _Schemas.get().problems(name, instance, request=request)]


# ---------------------------------------------------------------------------------------------
# Rules Discord documents for application commands
# ---------------------------------------------------------------------------------------------

_ASCII_NAME = re.compile(r"^[-_a-z0-9]{1,32}$")
VALUE_OPTION_TYPES = frozenset(range(3, 12))
CHOICE_OPTION_TYPES = frozenset({p.OPTION_STRING, p.OPTION_INTEGER, p.OPTION_NUMBER})
NamePolicy = Literal["ascii", "discord"]


def _discord_name_ok(name: str) -> bool:
    """Discord's CHAT_INPUT name rule, lower-case variant required:
    ^[-_'\\p{L}\\p{N}\\p{sc=Deva}\\p{sc=Thai}]{1,32}$
    """
    if not 1 <= len(name) <= 32 or name != name.lower():
        return False
    for char in name:
        if char in "-_'":
            continue
        if unicodedata.category(char)[0] in "LN":
            continue
        if "\u0900" <= char <= "\u097f" or "\u0e00" <= char <= "\u0e7f":
            continue
        return False
    return True


def _check_name(
    name: Any, loc: tuple[str | int, ...], policy: NamePolicy, out: list[Problem]
) -> None:
    if not isinstance(name, str):
        out.append(Problem(loc, "BASE_TYPE_REQUIRED", "This field is required"))
        return
    if policy == "ascii":
        if not _ASCII_NAME.match(name):
            out.append(
                Problem(
                    loc,
                    "APPLICATION_COMMAND_INVALID_NAME",
                    f"{name!r} does not match ^[-_a-z0-9]{{1,32}}$",
                )
            )
    elif not _discord_name_ok(name):
        out.append(
            Problem(loc, "APPLICATION_COMMAND_INVALID_NAME", f"Command name {name!r} is invalid")
        )


def _check_length(
    value: Any,
    loc: tuple[str | int, ...],
    low: int,
    high: int,
    out: list[Problem],
    *,
    required: bool = True,
) -> None:
    if value is None:
        if required:
            out.append(Problem(loc, "BASE_TYPE_REQUIRED", "This field is required"))
        return
    if not isinstance(value, str):
        out.append(Problem(loc, "BASE_TYPE_STRING", "Must be a string."))
    elif not low <= len(value) <= high:
        out.append(
            Problem(loc, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length.")
        )


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


# The locales Discord accepts as keys of name_localizations / description_localizations
# (DDOC reference.mdx, Locales). Anything else, "ja-JP" or "en" included, is refused.
DISCORD_LOCALES: Final = frozenset(
    {
        "id", "da", "de", "en-GB", "en-US", "es-ES", "es-419", "fr", "hr", "it", "lt", "hu",
        "nl", "no", "pl", "pt-BR", "ro", "fi", "sv-SE", "vi", "tr", "cs", "el", "bg", "ru",
        "uk", "hi", "th", "zh-CN", "ja", "zh-TW", "ko",
    }
)  # fmt: skip


def _check_locale_key(locale: Any, loc: tuple[str | int, ...], out: list[Problem]) -> bool:
    if locale in DISCORD_LOCALES:
        return True
    out.append(
        Problem(
            (*loc, str(locale)),
            "BASE_TYPE_CHOICES",
            f"Value must be one of {sorted(DISCORD_LOCALES)}, not {locale!r}.",
        )
    )
    return False


def _check_localizations(
    value: Any, loc: tuple[str | int, ...], high: int, names: bool, out: list[Problem]
) -> None:
    """Localized names (Discord's name rule: pattern, lower case, 1-32) or texts (1-high),
    each under a locale Discord knows."""
    if not value:
        return
    if not isinstance(value, dict):
        out.append(Problem(loc, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType"))
        return
    for locale, text in value.items():
        if not _check_locale_key(locale, loc, out):
            continue
        if names:
            _check_name(text, (*loc, locale), "discord", out)
        else:
            _check_length(text, (*loc, locale), 1, high, out)


def _text_size(option: Json) -> int:
    size = len(str(option.get("name") or "")) + len(str(option.get("description") or ""))
    for choice in option.get("choices") or ():
        if isinstance(choice, dict):
            size += len(str(choice.get("name") or "")) + len(str(choice.get("value") or ""))
    for child in option.get("options") or ():
        if isinstance(child, dict):
            size += _text_size(child)
    return size


def check_commands(commands: Any, *, name_policy: NamePolicy = "ascii") -> list[Problem]:
    """Problems with a bulk-overwrite body (PUT .../commands), with Discord-style locations."""
    out: list[Problem] = []
    if not isinstance(commands, list):
        return [Problem((), "ARRAY_TYPE_CONVERT", "Only iterables may be used in a ListType")]
    per_type: dict[int, int] = {}
    seen: set[tuple[int, str]] = set()
    for index, command in enumerate(commands):
        loc: tuple[str | int, ...] = (index,)
        if not isinstance(command, dict):
            out.append(Problem(loc, "DICT_TYPE_CONVERT", "Only dictionaries may be used"))
            continue
        kind = command.get("type") or 1
        per_type[kind] = per_type.get(kind, 0) + 1
        name = command.get("name")
        if (kind, str(name)) in seen:
            out.append(
                Problem(
                    (*loc, "name"),
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    f"Application command names must be unique ({name!r})",
                )
            )
        seen.add((kind, str(name)))
        if kind == 1:
            _check_name(name, (*loc, "name"), name_policy, out)
            _check_length(command.get("description"), (*loc, "description"), 1, 100, out)
            _check_localizations(
                command.get("name_localizations"), (*loc, "name_localizations"), 32, True, out
            )
            _check_localizations(
                command.get("description_localizations"),
                (*loc, "description_localizations"),
                100,
                False,
                out,
            )
            _check_options(command.get("options"), (*loc, "options"), "command", name_policy, out)
            if _text_size(command) > 8000:
                out.append(
                    Problem(
                        loc,
                        "APPLICATION_COMMAND_TOO_LARGE",
                        "Command exceeds maximum size (8000)",
                    )
                )
        elif kind in (2, 3):
            # "USER and MESSAGE commands may be mixed case and can include spaces" (DDOC
            # application-commands.mdx, Application Command Naming): 1-32 characters, no
            # lower-case rule, no description, no options.
            _check_length(name, (*loc, "name"), 1, 32, out)
            localized = command.get("name_localizations")
            if isinstance(localized, dict):
                for locale, text in localized.items():
                    if _check_locale_key(locale, (*loc, "name_localizations"), out):
                        _check_length(text, (*loc, "name_localizations", locale), 1, 32, out)
            elif localized:
                out.append(
                    Problem(
                        (*loc, "name_localizations"),
                        "DICT_TYPE_CONVERT",
                        "Only dictionaries may be used in a DictType",
                    )
                )
            if command.get("description_localizations"):
                out.append(
                    Problem(
                        (*loc, "description_localizations"),
                        "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION",
                        "Context menu commands cannot have description",
                    )
                )
            if command.get("description"):
                out.append(
                    Problem(
                        (*loc, "description"),
                        "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION",
                        "Context menu commands cannot have description",
                    )
                )
            if command.get("options"):
                out.append(
                    Problem(
                        (*loc, "options"),
                        "APPLICATION_COMMAND_OPTIONS_INVALID",
                        "Context menu commands cannot have options",
                    )
                )
        elif kind != 4:
            out.append(
                Problem(
                    (*loc, "type"),
                    "BASE_TYPE_CHOICES",
                    f"Value must be one of (1, 2, 3, 4), not {kind!r}.",
                )
            )
        permissions = command.get("default_member_permissions")
        if permissions is not None and not (
            _is_int(permissions) or (isinstance(permissions, str) and permissions.isdigit())
        ):
            out.append(
                Problem(
                    (*loc, "default_member_permissions"), "NUMBER_TYPE_COERCE", "Value is not int."
                )
            )
        for key, allowed in (("contexts", {0, 1, 2}), ("integration_types", {0, 1})):
            values = command.get(key)
            if values is not None and (not isinstance(values, list) or not set(values) <= allowed):
                out.append(
                    Problem(
                        (*loc, key), "BASE_TYPE_CHOICES", f"Values must be in {sorted(allowed)}"
                    )
                )
    for kind, limit in ((1, 100), (2, 15), (3, 15)):
        if per_type.get(kind, 0) > limit:
            out.append(
                Problem(
                    (),
                    "APPLICATION_COMMANDS_TOO_MANY",
                    f"Maximum number of application commands of type {kind} reached ({limit})",
                )
            )
    return out


def _check_options(
    options: Any,
    loc: tuple[str | int, ...],
    parent: Literal["command", "group", "subcommand"],
    policy: NamePolicy,
    out: list[Problem],
) -> None:
    if options is None:
        return
    if not isinstance(options, list):
        out.append(Problem(loc, "ARRAY_TYPE_CONVERT", "Only iterables may be used in a ListType"))
        return
    if len(options) > 25:
        out.append(Problem(loc, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."))
    kinds = [o.get("type") for o in options if isinstance(o, dict)]
    nested = [k for k in kinds if k in (1, 2)]
    if nested and len(nested) != len(kinds):
        out.append(
            Problem(
                loc,
                "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                "Sub-command and sub-command group option types are mutually exclusive "
                "to all other types",
            )
        )
    names: set[str] = set()
    seen_optional = False
    for index, option in enumerate(options):
        here = (*loc, index)
        if not isinstance(option, dict):
            out.append(Problem(here, "DICT_TYPE_CONVERT", "Only dictionaries may be used"))
            continue
        kind = option.get("type")
        name = option.get("name")
        _check_name(name, (*here, "name"), policy, out)
        if isinstance(name, str):
            if name in names:
                out.append(
                    Problem(
                        (*here, "name"),
                        "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                        f"Option name {name!r} is already used in these options",
                    )
                )
            names.add(name)
        _check_length(option.get("description"), (*here, "description"), 1, 100, out)
        _check_localizations(
            option.get("name_localizations"), (*here, "name_localizations"), 32, True, out
        )
        _check_localizations(
            option.get("description_localizations"),
            (*here, "description_localizations"),
            100,
            False,
            out,
        )
        if not _is_int(kind) or not 1 <= kind <= 11:
            out.append(
                Problem(
                    (*here, "type"),
                    "BASE_TYPE_CHOICES",
                    f"Value must be one of 1..11, not {kind!r}.",
                )
            )
            continue
        if kind == p.OPTION_SUB_COMMAND_GROUP:
            if parent != "command":
                out.append(
                    Problem(
                        (*here, "type"),
                        "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                        "Sub-command groups can only be nested in a command",
                    )
                )
            _check_options(option.get("options"), (*here, "options"), "group", policy, out)
            continue
        if kind == p.OPTION_SUB_COMMAND:
            if parent == "subcommand":
                out.append(
                    Problem(
                        (*here, "type"),
                        "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                        "Sub-commands cannot be nested in sub-commands",
                    )
                )
            _check_options(option.get("options"), (*here, "options"), "subcommand", policy, out)
            continue
        if parent == "group":
            out.append(
                Problem(
                    (*here, "type"),
                    "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                    "Sub-command groups may only contain sub-commands",
                )
            )
        if option.get("required"):
            if seen_optional:
                out.append(
                    Problem(
                        (*here, "required"),
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
                )
        else:
            seen_optional = True
        _check_value_option(option, kind, here, out)


def _check_value_option(
    option: Json, kind: int, here: tuple[str | int, ...], out: list[Problem]
) -> None:
    choices = option.get("choices")
    if choices:
        if kind not in CHOICE_OPTION_TYPES:
            out.append(
                Problem(
                    (*here, "choices"),
                    "APPLICATION_COMMAND_OPTION_CHOICES_INVALID",
                    "Only string, integer and number options can have choices",
                )
            )
        if not isinstance(choices, list):
            out.append(
                Problem(
                    (*here, "choices"),
                    "ARRAY_TYPE_CONVERT",
                    "Only iterables may be used in a ListType",
                )
            )
            choices = []
        if len(choices) > 25:
            out.append(
                Problem(
                    (*here, "choices"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                )
            )
        for c_index, choice in enumerate(choices):
            _check_choice(choice, kind, (*here, "choices", c_index), out)
        if option.get("autocomplete"):
            out.append(
                Problem(
                    (*here, "autocomplete"),
                    "APPLICATION_COMMAND_AUTOCOMPLETE_INVALID",
                    "Autocomplete cannot be enabled on options that have choices",
                )
            )
    if option.get("autocomplete") and kind not in CHOICE_OPTION_TYPES:
        out.append(
            Problem(
                (*here, "autocomplete"),
                "APPLICATION_COMMAND_AUTOCOMPLETE_INVALID",
                "Autocomplete is only for string, integer and number options",
            )
        )
    for key in ("min_value", "max_value"):
        value = option.get(key)
        if value is None:
            continue
        if kind not in (p.OPTION_INTEGER, p.OPTION_NUMBER):
            out.append(
                Problem(
                    (*here, key),
                    "APPLICATION_COMMAND_OPTION_INVALID",
                    f"{key} is only for integer and number options",
                )
            )
        elif (
            not _is_number(value)
            or abs(value) > MAX_SAFE_INT
            or (kind == p.OPTION_INTEGER and not _is_int(value))
        ):
            out.append(
                Problem((*here, key), "NUMBER_TYPE_MAX", f"{key} must be a number within ±(2^53-1)")
            )
    if (
        _is_number(option.get("min_value"))
        and _is_number(option.get("max_value"))
        and option["min_value"] > option["max_value"]
    ):
        out.append(
            Problem(
                (*here, "min_value"),
                "APPLICATION_COMMAND_OPTION_INVALID",
                "min_value is greater than max_value",
            )
        )
    for key, low in (("min_length", 0), ("max_length", 1)):
        value = option.get(key)
        if value is None:
            continue
        if kind != p.OPTION_STRING:
            out.append(
                Problem(
                    (*here, key),
                    "APPLICATION_COMMAND_OPTION_INVALID",
                    f"{key} is only for string options",
                )
            )
        elif not _is_int(value) or not low <= value <= 6000:
            out.append(
                Problem((*here, key), "NUMBER_TYPE_MAX", f"{key} must be between {low} and 6000")
            )
    if (
        _is_int(option.get("min_length"))
        and _is_int(option.get("max_length"))
        and option["min_length"] > option["max_length"]
    ):
        out.append(
            Problem(
                (*here, "min_length"),
                "APPLICATION_COMMAND_OPTION_INVALID",
                "min_length is greater than max_length",
            )
        )
    if option.get("channel_types") and kind != p.OPTION_CHANNEL:
        out.append(
            Problem(
                (*here, "channel_types"),
                "APPLICATION_COMMAND_OPTION_INVALID",
                "channel_types is only for channel options",
            )
        )


def _check_choice(choice: Any, kind: int, loc: tuple[str | int, ...], out: list[Problem]) -> None:
    if not isinstance(choice, dict):
        out.append(Problem(loc, "DICT_TYPE_CONVERT", "Only dictionaries may be used"))
        return
    _check_length(choice.get("name"), (*loc, "name"), 1, 100, out)
    _check_localizations(
        choice.get("name_localizations"), (*loc, "name_localizations"), 100, False, out
    )
    value = choice.get("value")
    if kind == p.OPTION_STRING:
        # Discord's docs say 100 (the OpenAPI file says 6000); the docs win.
        _check_length(value, (*loc, "value"), 1, 100, out)
    elif kind == p.OPTION_INTEGER:
        if not _is_int(value) or abs(value) > MAX_SAFE_INT:
            out.append(
                Problem(
                    (*loc, "value"),
                    "NUMBER_TYPE_COERCE",
                    f"Value {value!r} is not a valid integer.",
                )
            )
    elif kind == p.OPTION_NUMBER and (not _is_number(value) or abs(value) > MAX_SAFE_INT):
        out.append(
            Problem(
                (*loc, "value"), "NUMBER_TYPE_COERCE", f"Value {value!r} is not a valid number."
            )
        )


def check_autocomplete_choices(data: Any, focused_type: int | None) -> list[Problem]:
    out: list[Problem] = []
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
        return [Problem(("data", "choices"), "BASE_TYPE_REQUIRED", "This field is required")]
    choices = data["choices"]
    if len(choices) > 25:
        out.append(
            Problem(("data", "choices"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        )
    for index, choice in enumerate(choices):
        _check_choice(choice, focused_type or p.OPTION_STRING, ("data", "choices", index), out)
    return out


# ---------------------------------------------------------------------------------------------
# Rules Discord documents for messages
# ---------------------------------------------------------------------------------------------

_FILE_FIELD = re.compile(r"^files\[(\d+)\]$")


def _embed_size(embed: Json) -> int:
    size = 0
    for key in ("title", "description"):
        size += len(str(embed.get(key) or ""))
    for fld in embed.get("fields") or ():
        if isinstance(fld, dict):
            size += len(str(fld.get("name") or "")) + len(str(fld.get("value") or ""))
    if isinstance(embed.get("footer"), dict):
        size += len(str(embed["footer"].get("text") or ""))
    if isinstance(embed.get("author"), dict):
        size += len(str(embed["author"].get("name") or ""))
    return size


def _check_embeds(
    embeds: Any, loc: tuple[str | int, ...], filenames: set[str], out: list[Problem]
) -> None:
    if embeds is None:
        return
    if not isinstance(embeds, list):
        out.append(Problem(loc, "ARRAY_TYPE_CONVERT", "Only iterables may be used in a ListType"))
        return
    if len(embeds) > 10:
        out.append(Problem(loc, "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."))
    total = 0
    for index, embed in enumerate(embeds):
        here = (*loc, index)
        if not isinstance(embed, dict):
            out.append(Problem(here, "DICT_TYPE_CONVERT", "Only dictionaries may be used"))
            continue
        total += _embed_size(embed)
        for key, high in (("title", 256), ("description", 4096)):
            if embed.get(key) is not None:
                _check_length(embed[key], (*here, key), 0, high, out)
        fields = embed.get("fields") or []
        if len(fields) > 25:
            out.append(
                Problem((*here, "fields"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            )
        for f_index, fld in enumerate(fields):
            if isinstance(fld, dict):
                _check_length(fld.get("name"), (*here, "fields", f_index, "name"), 1, 256, out)
                _check_length(fld.get("value"), (*here, "fields", f_index, "value"), 1, 1024, out)
        footer = embed.get("footer")
        if isinstance(footer, dict) and footer.get("text") is not None:
            _check_length(footer["text"], (*here, "footer", "text"), 1, 2048, out)
        author = embed.get("author")
        if isinstance(author, dict) and author.get("name") is not None:
            _check_length(author["name"], (*here, "author", "name"), 1, 256, out)
        for key in ("image", "thumbnail"):
            media = embed.get(key)
            url = media.get("url") if isinstance(media, dict) else None
            if isinstance(url, str) and url.startswith("attachment://"):
                name = url.removeprefix("attachment://")
                if name not in filenames:
                    # Discord accepts it, but the embed then shows no image.
                    out.append(
                        Problem(
                            (*here, key, "url"),
                            "ATTACHMENT_NOT_FOUND",
                            f"{url} names no attachment of this message",
                            reject=False,
                        )
                    )
                elif not name.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".gif")):
                    out.append(
                        Problem(
                            (*here, key, "url"),
                            "ATTACHMENT_TYPE",
                            f"{url}: embeds only show png/jpg/jpeg/webp/gif attachments",
                            reject=False,
                        )
                    )
    if total > 6000:
        out.append(
            Problem(loc, "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")
        )


# ---------------------------------------------------------------------------------------------
# Rules Discord documents for message components and modals
# ---------------------------------------------------------------------------------------------

V2_FLAG = p.MESSAGE_FLAG_COMPONENTS_V2
# Components-V2 messages: "Messages allow up to 40 total components" (nested ones included;
# DDOC components/reference.mdx and change-log 2025-04-29), and "the character count of all
# text display components in a message may total up to 4000 characters"
# (discord/discord-api-docs#8562; discord.py's LayoutView.content_length says the same).
MAX_V2_COMPONENTS = 40
MAX_V2_TEXT = 4000
MAX_LEGACY_ROWS = 5  # "Legacy messages allow up to 5 action rows as top-level components"
MESSAGE_TOP_LEVEL_V2 = frozenset(
    {
        p.COMPONENT_ACTION_ROW,
        p.COMPONENT_SECTION,
        p.COMPONENT_TEXT_DISPLAY,
        p.COMPONENT_MEDIA_GALLERY,
        p.COMPONENT_FILE,
        p.COMPONENT_SEPARATOR,
        p.COMPONENT_CONTAINER,
    }
)
CONTAINER_CHILDREN = MESSAGE_TOP_LEVEL_V2 - {p.COMPONENT_CONTAINER}
MODAL_TOP_LEVEL = frozenset({p.COMPONENT_ACTION_ROW, p.COMPONENT_TEXT_DISPLAY, p.COMPONENT_LABEL})
LABEL_CHILDREN = frozenset(
    {
        *p.SELECT_COMPONENT_TYPES,
        p.COMPONENT_TEXT_INPUT,
        p.COMPONENT_FILE_UPLOAD,
        p.COMPONENT_RADIO_GROUP,
        p.COMPONENT_CHECKBOX_GROUP,
        p.COMPONENT_CHECKBOX,
    }
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
BUTTON_URL_SCHEMES = ("http://", "https://", "discord://")
MEDIA_URL_SCHEMES = ("http://", "https://", "attachment://")
MAX_COMPONENT_ID = 2**31 - 1  # "32 bit integer used as an optional identifier"

Loc = tuple[str | int, ...]


def _is_unicode_emoji(name: str) -> bool:
    """Whether `name` can be a Unicode emoji, not a shortcode (":repeat:") or a word.

    A heuristic: real emoji never contain ASCII letters, whitespace or ':', and ASCII digits,
    '#' and '*' only appear in keycap sequences (with U+20E3).
    """
    if not name or any(c.isspace() or c == ":" or ("a" <= c.lower() <= "z") for c in name):
        return False
    if any(c in "0123456789#*" for c in name):
        return "\u20e3" in name
    return True


def _check_emoji(emoji: Any, loc: Loc, out: list[Problem]) -> None:
    if emoji is None:
        return
    if not isinstance(emoji, dict):
        out.append(Problem(loc, "DICT_TYPE_CONVERT", "Only dictionaries may be used"))
        return
    ident, name = emoji.get("id"), emoji.get("name")
    if ident is not None:
        if not str(ident).isdigit():
            out.append(Problem((*loc, "id"), "BUTTON_COMPONENT_INVALID_EMOJI", "Invalid emoji"))
        return
    if not isinstance(name, str) or not _is_unicode_emoji(name):
        out.append(
            Problem(
                (*loc, "name"),
                "BUTTON_COMPONENT_INVALID_EMOJI",
                f"Invalid emoji: {name!r} is neither a Unicode emoji nor a custom emoji "
                "with an id (shortcodes like ':repeat:' are not resolved)",
            )
        )


@dataclass
class _ComponentWalk:
    """One pass over a message's (or modal's) component tree, collecting problems."""

    v2: bool
    filenames: set[str]
    out: list[Problem]
    # CDN URLs (query stripped) of attachments the message already has -> their filenames: a
    # view rebuilt from a message (LayoutView.from_message) references media by URL.
    attachment_urls: dict[str, str] = field(default_factory=dict)
    count: int = 0
    text_length: int = 0
    custom_ids: dict[str, Loc] = field(default_factory=dict)
    ids: dict[int, Loc] = field(default_factory=dict)
    referenced: set[str] = field(default_factory=set)

    def problem(self, loc: Loc, code: str, message: str, *, reject: bool = True) -> None:
        self.out.append(Problem(loc, code, message, reject))

    def node(self, component: Any, loc: Loc) -> Json | None:
        if not isinstance(component, dict):
            self.problem(loc, "DICT_TYPE_CONVERT", "Only dictionaries may be used")
            return None
        self.count += 1
        ident = component.get("id")
        if ident is not None:
            if not _is_int(ident) or not 0 <= ident <= MAX_COMPONENT_ID:
                self.problem(
                    (*loc, "id"), "NUMBER_TYPE_MAX", "id must be a 32-bit integer of 0 or more"
                )
            elif ident:
                if ident in self.ids:
                    self.problem(
                        (*loc, "id"),
                        "COMPONENT_ID_DUPLICATED",
                        f"Component id {ident} is already used in this message",
                    )
                self.ids[ident] = loc
        return component

    def custom_id(self, component: Json, loc: Loc) -> None:
        value = component.get("custom_id")
        _check_length(value, (*loc, "custom_id"), 1, 100, self.out)
        if isinstance(value, str):
            if value in self.custom_ids:
                self.problem(
                    (*loc, "custom_id"),
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    f"Component custom id cannot be duplicated ({value!r})",
                )
            self.custom_ids[value] = loc

    # -- messages -----------------------------------------------------------------------

    def top_level(self, component: Any, loc: Loc) -> None:
        found = self.node(component, loc)
        if found is None:
            return
        kind = found.get("type")
        if not self.v2:
            if kind != p.COMPONENT_ACTION_ROW:
                self.problem(
                    (*loc, "type"),
                    "UNION_TYPE_CHOICES",
                    f'Value of field "type" must be one of (1,). (type {kind!r} needs the '
                    "IS_COMPONENTS_V2 message flag, 1 << 15)",
                )
                return
            self.action_row(found, loc)
            return
        if kind not in MESSAGE_TOP_LEVEL_V2:
            self.problem(
                (*loc, "type"),
                "UNION_TYPE_CHOICES",
                f'Value of field "type" must be one of {tuple(sorted(MESSAGE_TOP_LEVEL_V2))}, '
                f"not {kind!r}",
            )
            return
        self.layout(found, loc)

    def layout(self, component: Json, loc: Loc) -> None:
        kind = component.get("type")
        if kind == p.COMPONENT_ACTION_ROW:
            self.action_row(component, loc)
        elif kind == p.COMPONENT_SECTION:
            self.section(component, loc)
        elif kind == p.COMPONENT_TEXT_DISPLAY:
            self.text_display(component, loc)
        elif kind == p.COMPONENT_MEDIA_GALLERY:
            self.media_gallery(component, loc)
        elif kind == p.COMPONENT_FILE:
            self.file(component, loc)
        elif kind == p.COMPONENT_SEPARATOR:
            spacing = component.get("spacing")
            if spacing is not None and spacing not in (1, 2):
                self.problem((*loc, "spacing"), "BASE_TYPE_CHOICES", "Value must be one of (1, 2).")
        elif kind == p.COMPONENT_CONTAINER:
            self.container(component, loc)

    def action_row(self, row: Json, loc: Loc) -> None:
        children = row.get("components")
        if not isinstance(children, list) or not children:
            self.problem(
                (*loc, "components"),
                "BASE_TYPE_BAD_LENGTH",
                "An action row needs between 1 and 5 components",
            )
            return
        if len(children) > 5:
            self.problem(
                (*loc, "components"), "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length."
            )
        kinds = [c.get("type") if isinstance(c, dict) else None for c in children]
        selects = [k for k in kinds if k in p.SELECT_COMPONENT_TYPES]
        if selects and len(children) > 1:
            self.problem(
                (*loc, "components"),
                "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                "A select menu must be alone in its action row (a row holds up to 5 buttons "
                "or a single select)",
            )
        for index, child in enumerate(children):
            here = (*loc, "components", index)
            found = self.node(child, here)
            if found is None:
                continue
            kind = found.get("type")
            if kind == p.COMPONENT_BUTTON:
                self.button(found, here)
            elif kind in p.SELECT_COMPONENT_TYPES:
                self.select(found, here)
            else:
                self.problem(
                    (*here, "type"),
                    "UNION_TYPE_CHOICES",
                    f"A message action row holds buttons or selects, not type {kind!r}"
                    + (" (text inputs only exist in modals)" if kind == 4 else ""),
                )

    def button(self, button: Json, loc: Loc) -> None:
        style = button.get("style")
        if not _is_int(style) or not 1 <= style <= 6:
            self.problem(
                (*loc, "style"), "BASE_TYPE_CHOICES", f"Value must be one of 1..6, not {style!r}."
            )
            return
        present = {k for k in ("custom_id", "url", "sku_id", "label", "emoji") if button.get(k)}
        if style == p.BUTTON_LINK:
            if "url" not in present:
                self.problem((*loc, "url"), "BASE_TYPE_REQUIRED", "Link buttons need a url")
            elif not str(button["url"]).startswith(BUTTON_URL_SCHEMES):
                self.problem(
                    (*loc, "url"),
                    "URL_TYPE_INVALID_SCHEME",
                    "Scheme must be one of ('http', 'https', 'discord').",
                )
            elif len(str(button["url"])) > 512:
                self.problem(
                    (*loc, "url"), "BASE_TYPE_MAX_LENGTH", "Must be 512 or fewer in length."
                )
            for key in ("custom_id", "sku_id"):
                if key in present:
                    self.problem(
                        (*loc, key),
                        "BUTTON_COMPONENT_INVALID_FIELD",
                        f"Link buttons cannot have a {key}",
                    )
        elif style == p.BUTTON_PREMIUM:
            if "sku_id" not in present:
                self.problem(
                    (*loc, "sku_id"), "BASE_TYPE_REQUIRED", "Premium buttons need a sku_id"
                )
            for key in ("custom_id", "label", "url", "emoji"):
                if key in present:
                    self.problem(
                        (*loc, key),
                        "BUTTON_COMPONENT_INVALID_FIELD",
                        f"Premium buttons cannot have a {key}",
                    )
        else:
            self.custom_id(button, loc)
            for key in ("url", "sku_id"):
                if key in present:
                    self.problem(
                        (*loc, key),
                        "BUTTON_COMPONENT_INVALID_FIELD",
                        f"Buttons of style {style} cannot have a {key} (only style 5 has a url, "
                        "style 6 a sku_id)",
                    )
        label = button.get("label")
        if label is not None:
            _check_length(label, (*loc, "label"), 0, 80, self.out)
        _check_emoji(button.get("emoji"), (*loc, "emoji"), self.out)

    def select(self, select: Json, loc: Loc) -> None:
        self.custom_id(select, loc)
        low, high = select.get("min_values"), select.get("max_values")
        if _is_int(low) and _is_int(high) and low > high:
            self.problem(
                (*loc, "min_values"),
                "SELECT_COMPONENT_MIN_VALUES_TOO_LARGE",
                "min_values is greater than max_values",
            )
        placeholder = select.get("placeholder")
        if placeholder is not None:
            _check_length(placeholder, (*loc, "placeholder"), 0, 150, self.out)
        if select.get("type") == p.COMPONENT_STRING_SELECT:
            options = select.get("options")
            if not isinstance(options, list) or not 1 <= len(options) <= 25:
                self.problem(
                    (*loc, "options"),
                    "BASE_TYPE_BAD_LENGTH",
                    "A string select needs between 1 and 25 options",
                )
                return
            values: set[str] = set()
            for index, option in enumerate(options):
                here = (*loc, "options", index)
                if not isinstance(option, dict):
                    self.problem(here, "DICT_TYPE_CONVERT", "Only dictionaries may be used")
                    continue
                _check_length(option.get("label"), (*here, "label"), 1, 100, self.out)
                _check_length(option.get("value"), (*here, "value"), 1, 100, self.out)
                if option.get("description") is not None:
                    _check_length(option["description"], (*here, "description"), 0, 100, self.out)
                _check_emoji(option.get("emoji"), (*here, "emoji"), self.out)
                if option.get("value") in values:
                    self.problem(
                        (*here, "value"),
                        "SELECT_COMPONENT_OPTION_VALUE_DUPLICATED",
                        "Select option values must be unique",
                    )
                values.add(str(option.get("value")))

    def section(self, section: Json, loc: Loc) -> None:
        children = section.get("components")
        if not isinstance(children, list) or not 1 <= len(children) <= 3:
            self.problem(
                (*loc, "components"),
                "BASE_TYPE_BAD_LENGTH",
                "A section needs between 1 and 3 text displays",
            )
            children = children if isinstance(children, list) else []
        for index, child in enumerate(children):
            here = (*loc, "components", index)
            found = self.node(child, here)
            if found is None:
                continue
            if found.get("type") != p.COMPONENT_TEXT_DISPLAY:
                self.problem(
                    (*here, "type"),
                    "UNION_TYPE_CHOICES",
                    'Value of field "type" must be one of (10,).',
                )
                continue
            self.text_display(found, here)
        accessory = section.get("accessory")
        here = (*loc, "accessory")
        if accessory is None:
            self.problem(here, "BASE_TYPE_REQUIRED", "This field is required")
            return
        found = self.node(accessory, here)
        if found is None:
            return
        if found.get("type") == p.COMPONENT_BUTTON:
            self.button(found, here)
        elif found.get("type") == p.COMPONENT_THUMBNAIL:
            self.thumbnail(found, here)
        else:
            self.problem(
                (*here, "type"),
                "UNION_TYPE_CHOICES",
                'Value of field "type" must be one of (2, 11).',
            )

    def text_display(self, text: Json, loc: Loc) -> None:
        content = text.get("content")
        _check_length(content, (*loc, "content"), 1, MAX_V2_TEXT, self.out)
        if isinstance(content, str):
            self.text_length += len(content)

    def media(self, media: Any, loc: Loc, *, file_only: bool = False) -> str | None:
        """Checks an unfurled media item; returns the attachment filename it references."""
        if not isinstance(media, dict) or not isinstance(media.get("url"), str):
            self.problem((*loc, "url"), "BASE_TYPE_REQUIRED", "This field is required")
            return None
        url = str(media["url"])
        if len(url) > 2048:
            self.problem((*loc, "url"), "BASE_TYPE_MAX_LENGTH", "Must be 2048 or fewer in length.")
        if file_only and not url.startswith("attachment://"):
            self.problem(
                (*loc, "url"),
                "UNFURLED_MEDIA_ITEM_ATTACHMENT_REQUIRED",
                "A File component only takes attachment://<filename> references",
            )
            return None
        if not url.startswith(MEDIA_URL_SCHEMES):
            self.problem(
                (*loc, "url"),
                "URL_TYPE_INVALID_SCHEME",
                "Scheme must be one of ('http', 'https', 'attachment').",
            )
            return None
        if not url.startswith("attachment://"):
            known = self.attachment_urls.get(url.split("?", 1)[0])
            if known is not None:
                self.referenced.add(known)
            return None
        name = url.removeprefix("attachment://")
        if name not in self.filenames:
            self.problem(
                (*loc, "url"),
                "UNFURLED_MEDIA_ITEM_ATTACHMENT_NOT_FOUND",
                f"{url} names no attachment of this message "
                f"(attachments: {sorted(self.filenames) or 'none'})",
            )
            return None
        self.referenced.add(name)
        return name

    def media_gallery(self, gallery: Json, loc: Loc) -> None:
        items = gallery.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= 10:
            self.problem(
                (*loc, "items"),
                "BASE_TYPE_BAD_LENGTH",
                "A media gallery holds between 1 and 10 items",
            )
            items = items if isinstance(items, list) else []
        for index, item in enumerate(items):
            here = (*loc, "items", index)
            if not isinstance(item, dict):
                self.problem(here, "DICT_TYPE_CONVERT", "Only dictionaries may be used")
                continue
            self.media(item.get("media"), (*here, "media"))
            if item.get("description") is not None:
                _check_length(item["description"], (*here, "description"), 1, 1024, self.out)

    def thumbnail(self, thumbnail: Json, loc: Loc) -> None:
        name = self.media(thumbnail.get("media"), (*loc, "media"))
        if name is not None and not name.lower().endswith(IMAGE_SUFFIXES):
            self.problem(
                (*loc, "media", "url"),
                "ATTACHMENT_TYPE",
                f"thumbnails only show images (png/jpg/jpeg/webp/gif), not {name}",
                reject=False,
            )
        if thumbnail.get("description") is not None:
            _check_length(thumbnail["description"], (*loc, "description"), 1, 1024, self.out)

    def file(self, component: Json, loc: Loc) -> None:
        self.media(component.get("file"), (*loc, "file"), file_only=True)

    def container(self, container: Json, loc: Loc) -> None:
        children = container.get("components")
        if not isinstance(children, list) or not children:
            self.problem(
                (*loc, "components"), "BASE_TYPE_MIN_LENGTH", "Must be 1 or more in length."
            )
            return
        color = container.get("accent_color")
        if color is not None and (not _is_int(color) or not 0 <= color <= 0xFFFFFF):
            self.problem(
                (*loc, "accent_color"), "NUMBER_TYPE_MAX", "accent_color must be 0..0xFFFFFF"
            )
        for index, child in enumerate(children):
            here = (*loc, "components", index)
            found = self.node(child, here)
            if found is None:
                continue
            if found.get("type") not in CONTAINER_CHILDREN:
                self.problem(
                    (*here, "type"),
                    "UNION_TYPE_CHOICES",
                    f'Value of field "type" must be one of {tuple(sorted(CONTAINER_CHILDREN))} '
                    f"inside a container, not {found.get('type')!r}",
                )
                continue
            self.layout(found, here)

    # -- modals -------------------------------------------------------------------------

    def modal_top_level(self, component: Any, loc: Loc) -> None:
        found = self.node(component, loc)
        if found is None:
            return
        kind = found.get("type")
        if kind == p.COMPONENT_ACTION_ROW:
            children = found.get("components")
            if not isinstance(children, list) or not 1 <= len(children) <= 5:
                self.problem(
                    (*loc, "components"),
                    "BASE_TYPE_BAD_LENGTH",
                    "An action row needs between 1 and 5 components",
                )
                return
            for index, child in enumerate(children):
                here = (*loc, "components", index)
                input_ = self.node(child, here)
                if input_ is None:
                    continue
                if input_.get("type") != p.COMPONENT_TEXT_INPUT:
                    self.problem(
                        (*here, "type"),
                        "UNION_TYPE_CHOICES",
                        "A modal action row only holds text inputs (selects go in a Label)",
                    )
                    continue
                self.text_input(input_, here, in_label=False)
        elif kind == p.COMPONENT_LABEL:
            _check_length(found.get("label"), (*loc, "label"), 1, 45, self.out)
            if found.get("description") is not None:
                _check_length(found["description"], (*loc, "description"), 1, 100, self.out)
            here = (*loc, "component")
            child = self.node(found.get("component"), here)
            if child is None:
                return
            child_kind = child.get("type")
            if child_kind not in LABEL_CHILDREN:
                self.problem(
                    (*here, "type"),
                    "UNION_TYPE_CHOICES",
                    f"A Label holds an input or a select, not type {child_kind!r}",
                )
            elif child_kind == p.COMPONENT_TEXT_INPUT:
                self.text_input(child, here, in_label=True)
            else:
                self.custom_id(child, here)
                if child.get("disabled") is not None:
                    self.problem(
                        (*here, "disabled"),
                        "COMPONENT_DISABLED_NOT_ALLOWED",
                        "Modals can not currently have disabled components in them",
                    )
        elif kind == p.COMPONENT_TEXT_DISPLAY:
            self.text_display(found, loc)
        else:
            self.problem(
                (*loc, "type"),
                "UNION_TYPE_CHOICES",
                f'Value of field "type" must be one of (1, 10, 18), not {kind!r}.',
            )

    def text_input(self, component: Json, loc: Loc, *, in_label: bool) -> None:
        self.custom_id(component, loc)
        style = component.get("style")
        if style not in (1, 2):
            self.problem((*loc, "style"), "BASE_TYPE_CHOICES", "Value must be one of (1, 2).")
        label = component.get("label")
        if in_label:
            if label is not None:
                self.problem(
                    (*loc, "label"),
                    "TEXT_INPUT_LABEL_NOT_ALLOWED",
                    "A text input inside a Label cannot have its own label",
                )
        else:
            _check_length(label, (*loc, "label"), 1, 45, self.out)
        low, high = component.get("min_length"), component.get("max_length")
        for key, value, bottom in (("min_length", low, 0), ("max_length", high, 1)):
            if value is not None and (not _is_int(value) or not bottom <= value <= 4000):
                self.problem(
                    (*loc, key), "NUMBER_TYPE_MAX", f"{key} must be between {bottom} and 4000"
                )
        if _is_int(low) and _is_int(high) and low > high:
            self.problem(
                (*loc, "min_length"),
                "TEXT_INPUT_MIN_LENGTH_TOO_LARGE",
                "min_length is greater than max_length",
            )
        value = component.get("value")
        if value is not None:
            _check_length(value, (*loc, "value"), 0, 4000, self.out)
            if isinstance(value, str) and _is_int(high) and len(value) > high:
                self.problem(
                    (*loc, "value"),
                    "TEXT_INPUT_VALUE_TOO_LONG",
                    f"the pre-filled value ({len(value)} chars) is longer than max_length {high}: "
                    "the user cannot submit it unchanged",
                    reject=False,
                )
        placeholder = component.get("placeholder")
        if placeholder is not None:
            _check_length(placeholder, (*loc, "placeholder"), 0, 100, self.out)
        required = component.get("required")
        if required is not None and not isinstance(required, bool):
            self.problem((*loc, "required"), "BASE_TYPE_BOOLEAN", "Must be either true or false.")


def check_components(
    components: Any,
    *,
    v2: bool,
    filenames: Iterable[str] = (),
    loc: Loc = ("components",),
) -> list[Problem]:
    """Problems with a message's `components` (classic action rows, or Components V2 when the
    message has the IS_COMPONENTS_V2 flag). `filenames` are the attachments the message will
    have, which `attachment://` references must name."""
    return _walk_components(components, v2=v2, filenames=filenames, loc=loc)[0]


def _walk_components(
    components: Any,
    *,
    v2: bool,
    filenames: Iterable[str],
    loc: Loc,
    attachments: Iterable[Json] = (),
) -> tuple[list[Problem], _ComponentWalk]:
    out: list[Problem] = []
    urls = {
        str(a.get(key) or "").split("?", 1)[0]: str(a.get("filename") or "")
        for a in attachments
        for key in ("url", "proxy_url")
    }
    walk = _ComponentWalk(v2=v2, filenames=set(filenames), out=out, attachment_urls=urls)
    if components is None:
        return out, walk
    if not isinstance(components, list):
        out.append(Problem(loc, "ARRAY_TYPE_CONVERT", "Only iterables may be used in a ListType"))
        return out, walk
    if not v2 and len(components) > MAX_LEGACY_ROWS:
        out.append(Problem(loc, "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length."))
    for index, component in enumerate(components):
        walk.top_level(component, (*loc, index))
    if v2 and walk.count > MAX_V2_COMPONENTS:
        out.append(
            Problem(
                loc,
                "MAX_COMPONENTS_EXCEEDED",
                f"{walk.count} components (nested included); components-V2 messages allow "
                f"{MAX_V2_COMPONENTS}",
            )
        )
    if v2 and walk.text_length > MAX_V2_TEXT:
        out.append(
            Problem(
                loc,
                "MAX_TEXT_LENGTH_EXCEEDED",
                f"text displays hold {walk.text_length} characters in total; a message allows "
                f"{MAX_V2_TEXT}",
            )
        )
    return out, walk


def check_modal(data: Any, *, loc: Loc = ("data",)) -> list[Problem]:
    """Problems with a MODAL callback's `data` (custom_id, title, 1-5 top-level components)."""
    if not isinstance(data, dict):
        return [Problem(loc, "BASE_TYPE_REQUIRED", "This field is required")]
    out: list[Problem] = []
    _check_length(data.get("custom_id"), (*loc, "custom_id"), 1, 100, out)
    _check_length(data.get("title"), (*loc, "title"), 1, 45, out)
    components = data.get("components")
    here = (*loc, "components")
    if not isinstance(components, list) or not 1 <= len(components) <= 5:
        # DDOC: "Between 1 and 5 (inclusive) components"; the OpenAPI file says 40.
        out.append(Problem(here, "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."))
        components = components if isinstance(components, list) else []
    walk = _ComponentWalk(v2=True, filenames=set(), out=out)
    for index, component in enumerate(components):
        walk.modal_top_level(component, (*here, index))
    return out


def find_component(components: Iterable[Any], custom_id: str) -> Json | None:
    """The component with this custom_id anywhere in a component tree (rows, sections,
    containers, labels), or None."""
    for component in p.walk_components(components):
        if component.get("custom_id") == custom_id:
            return component
    return None


def check_message(
    body: Any,
    *,
    loc: tuple[str | int, ...] = (),
    files: Sequence[RecordedFile] = (),
    existing_attachment_ids: Iterable[str] = (),
    existing_filenames: Iterable[str] = (),
    create: bool = True,
    ephemeral_allowed: bool = True,
    stored: Json | None = None,
) -> list[Problem]:
    """Problems with a message body (create or edit) and the files uploaded with it.

    `stored` is the stored message an edit applies to: its IS_COMPONENTS_V2 flag sticks, and
    its content and embeds must be cleared by an edit that turns it into a V2 message.
    """
    out: list[Problem] = []
    if body is None:
        body = {}
    if not isinstance(body, dict):
        return [Problem(loc, "DICT_TYPE_CONVERT", "Only dictionaries may be used")]
    content = body.get("content")
    if content is not None:
        if not isinstance(content, str):
            out.append(Problem((*loc, "content"), "BASE_TYPE_STRING", "Must be a string."))
        elif len(content) > 2000:
            out.append(
                Problem(
                    (*loc, "content"), "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length."
                )
            )

    by_index: dict[int, RecordedFile] = {}
    for recorded in files:
        match = _FILE_FIELD.match(recorded.field)
        if match is None:
            out.append(
                Problem(
                    (recorded.field,),
                    "FILE_FIELD_NAME",
                    f"file part {recorded.field!r} should be named files[n]",
                    reject=False,
                )
            )
            continue
        index = int(match.group(1))
        if index > 9:
            out.append(
                Problem((recorded.field,), "FILE_FIELD_NAME", "only files[0]..files[9] exist")
            )
        by_index[index] = recorded
    if len(files) > 10:
        out.append(Problem(("files",), "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."))

    existing = {str(x) for x in existing_attachment_ids}
    filenames = set(existing_filenames) if create is False else set()
    attachments = body.get("attachments")
    if attachments is not None:
        if not isinstance(attachments, list):
            out.append(
                Problem(
                    (*loc, "attachments"),
                    "ARRAY_TYPE_CONVERT",
                    "Only iterables may be used in a ListType",
                )
            )
            attachments = []
        if len(attachments) > 10:
            out.append(
                Problem(
                    (*loc, "attachments"), "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length."
                )
            )
        referenced: set[int] = set()
        filenames = set()
        for index, entry in enumerate(attachments):
            here = (*loc, "attachments", index)
            if not isinstance(entry, dict) or entry.get("id") is None:
                out.append(Problem((*here, "id"), "BASE_TYPE_REQUIRED", "This field is required"))
                continue
            ident = str(entry["id"])
            if ident in existing:
                filenames.add(str(entry.get("filename") or ""))
                continue
            if ident.isdigit() and int(ident) in by_index:
                referenced.add(int(ident))
                filenames.add(str(entry.get("filename") or by_index[int(ident)].filename or ""))
                continue
            out.append(
                Problem(
                    (*here, "id"),
                    "ATTACHMENT_NOT_FOUND",
                    f"attachment id {ident} matches no uploaded files[n] part "
                    "and no existing attachment",
                )
            )
        for index in sorted(set(by_index) - referenced):
            out.append(
                Problem(
                    (f"files[{index}]",),
                    "ATTACHMENT_UNREFERENCED",
                    f"files[{index}] was uploaded but `attachments` does not reference it",
                    reject=False,
                )
            )
    else:
        filenames |= {f.filename or "" for f in by_index.values()}

    _check_embeds(body.get("embeds"), (*loc, "embeds"), filenames, out)

    flags = body.get("flags")
    if flags is not None:
        allowed = CREATE_FLAGS if create else EDIT_FLAGS
        if not ephemeral_allowed:
            allowed &= ~p.MESSAGE_FLAG_EPHEMERAL
        if not _is_int(flags) or flags & ~allowed:
            out.append(
                Problem(
                    (*loc, "flags"), "MESSAGE_FLAGS_INVALID", f"Flags {flags!r} may not be set here"
                )
            )

    was_v2 = stored is not None and bool(int(stored.get("flags") or 0) & V2_FLAG)
    asks_v2 = _is_int(flags) and bool(flags & V2_FLAG)
    v2 = was_v2 or asks_v2
    if was_v2 and _is_int(flags) and not asks_v2:
        out.append(
            Problem(
                (*loc, "flags"),
                "MESSAGE_FLAGS_INVALID",
                "IS_COMPONENTS_V2 (1 << 15) cannot be removed from a message once sent with it; "
                "the message stays a components-V2 message",
                reject=False,
            )
        )
    if v2:
        out += _check_v2_fields(body, loc, stored=stored, converting=asks_v2 and not was_v2)
    kept = [
        a
        for a in (stored or {}).get("attachments") or []
        if isinstance(a, dict) and a.get("filename") in filenames
    ]
    problems, walk = _walk_components(
        body.get("components"),
        v2=v2,
        filenames=filenames,
        loc=(*loc, "components"),
        attachments=kept,
    )
    out += problems
    if v2 and isinstance(body.get("components"), list):
        hidden = sorted(name for name in filenames - walk.referenced if name)
        if hidden:
            out.append(
                Problem(
                    (*loc, "attachments"),
                    "ATTACHMENT_NOT_SHOWN",
                    f"{', '.join(hidden)}: a components-V2 message only shows attachments that a "
                    "Media Gallery, Thumbnail or File component references",
                    reject=False,
                )
            )
    return out


def _check_v2_fields(
    body: Json, loc: tuple[str | int, ...], *, stored: Json | None, converting: bool
) -> list[Problem]:
    """With IS_COMPONENTS_V2 "the message can only contain components. Providing content,
    embeds, sticker_ids, poll, or shared_client_theme will fail with a 400"; an edit that sets
    the flag must reset the ones the message has ("For content and poll this is null. For
    embeds and sticker_ids this is []") (DDOC resources/message.mdx, Create and Edit Message)."""
    out: list[Problem] = []
    for key, empty in (("content", ""), ("embeds", []), ("sticker_ids", []), ("poll", None)):
        value = body.get(key)
        if value not in (None, empty):
            out.append(
                Problem(
                    (*loc, key),
                    "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                    f"{key} cannot be used with the IS_COMPONENTS_V2 flag; use Text Display "
                    "components instead",
                )
            )
    if converting and stored is not None:
        for key, empty in (("content", ""), ("embeds", [])):
            if stored.get(key) not in (None, empty) and key not in body:
                out.append(
                    Problem(
                        (*loc, key),
                        "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                        f"the message still has {key}: an edit that sets IS_COMPONENTS_V2 must "
                        f"reset it ({key}: {'null' if key == 'content' else '[]'})",
                    )
                )
    return out


def message_is_empty(body: Json, files: Sequence[RecordedFile]) -> bool:
    return not (
        (isinstance(body.get("content"), str) and body["content"].strip())
        or body.get("embeds")
        or body.get("components")
        or body.get("sticker_ids")
        or body.get("poll")
        or files
    )


# ---------------------------------------------------------------------------------------------
# Interaction state
# ---------------------------------------------------------------------------------------------


@dataclass
class _Interaction:
    id: int
    token: str
    type: int
    payload: Json
    guild_id: int | None
    channel_id: int
    attachment_size_limit: int
    focused_type: int | None = None
    dispatched_at: float | None = None
    response_type: int | None = None
    original: Json | None = None
    original_deleted: bool = False
    loading: bool = False  # a type-5 defer whose "thinking" message is not resolved yet
    ephemeral: bool = False
    followups: dict[str, Json] = field(default_factory=dict)
    expired: bool = False
    choices: list[Json] | None = None
    modal: Json | None = None
    # Component interactions, and modal submits opened from one: the message it came from.
    source_message_id: str | None = None
    opener: _Interaction | None = None  # modal submits: the interaction that showed the modal
    modal_submitted: bool = False


class InteractionHandle:
    """What a test holds after dispatching an interaction: its id/token and what the bot did."""

    def __init__(self, fake: FakeDiscord, state: _Interaction) -> None:
        self._fake = fake
        self._state = state

    def __repr__(self) -> str:
        state = self._state
        return f"<InteractionHandle id={state.id} type={state.type} response={state.response_type}>"

    @property
    def id(self) -> int:
        return self._state.id

    @property
    def token(self) -> str:
        return self._state.token

    @property
    def payload(self) -> Json:
        return self._state.payload

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request the bot made with this interaction's token, in arrival order."""
        return [r for r in self._fake.requests if r.token == self.token]

    @property
    def files(self) -> list[RecordedFile]:
        return [f for r in self.requests for f in r.files]

    @property
    def response_type(self) -> int | None:
        """The initial response type the fake accepted (4, 5, 8, 9, ...), or None."""
        return self._state.response_type

    @property
    def deferred(self) -> bool:
        return self._state.response_type == 5

    @property
    def ephemeral(self) -> bool:
        return self._state.ephemeral

    @property
    def original(self) -> Json | None:
        """The current state of the original response message (None if none or deleted)."""
        return None if self._state.original_deleted else self._state.original

    @property
    def followups(self) -> list[Json]:
        return list(self._state.followups.values())

    @property
    def choices(self) -> list[Json] | None:
        """Autocomplete choices the bot answered with, once it did."""
        return self._state.choices

    @property
    def modal(self) -> Json | None:
        """The modal the bot answered with (callback type 9), component ids filled in."""
        return self._state.modal

    @property
    def message(self) -> Json | None:
        """For a component interaction (or a modal opened from one): the message the
        component is on, as it is now (None once deleted)."""
        if self._state.source_message_id is None:
            return None
        return self._fake.message(self._state.source_message_id)

    def modal_submit_interaction(
        self, values: Mapping[str, str | Sequence[str]], *, user_id: int | None = None
    ) -> Json:
        """The MODAL_SUBMIT interaction Discord sends when the user submits this
        interaction's modal with `values` ({custom_id: text} for text inputs, or a list of
        option values for string selects). Raises `InteractionRefused` for what the Discord
        client would not let the user submit."""
        return self._fake.modal_submit_interaction(self, values, user_id=user_id)

    async def submit_modal(
        self,
        values: Mapping[str, str | Sequence[str]],
        *,
        user_id: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> InteractionHandle:
        """Submit the modal the bot showed: dispatches MODAL_SUBMIT and returns its handle."""
        payload = self.modal_submit_interaction(values, user_id=user_id)
        return await self._fake.dispatch(payload, timeout=timeout)

    def expire(self) -> None:
        """Simulate Discord's 15-minute token expiry."""
        self._fake.expire_token(self.token)

    async def wait_for(
        self,
        route: str | Callable[[RecordedRequest], bool],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> RecordedRequest:
        """The first request for this token on `route` (a template) or matching a predicate."""
        if isinstance(route, str):
            template = route
            return await self._fake.wait_for_request(
                lambda r: r.token == self.token and r.route == template, timeout=timeout
            )
        predicate = route
        return await self._fake.wait_for_request(
            lambda r: r.token == self.token and predicate(r), timeout=timeout
        )

    async def wait_for_callback(self, timeout: float = 5.0) -> RecordedRequest:  # noqa: ASYNC109
        return await self.wait_for(ROUTE_CALLBACK, timeout=timeout)

    async def wait_for_final(self, timeout: float = 5.0) -> RecordedRequest:  # noqa: ASYNC109
        """The first PATCH of @original or followup POST: where a deferred result lands."""
        return await self.wait_for(lambda r: r.route in FINAL_ROUTES, timeout=timeout)

    async def wait_for_choices(self, timeout: float = 5.0) -> list[Json]:  # noqa: ASYNC109
        request = await self.wait_for_callback(timeout=timeout)
        data = request.data if isinstance(request.data, dict) else {}
        choices = data.get("choices")
        return list(choices) if isinstance(choices, list) else []


# ---------------------------------------------------------------------------------------------
# Gateway
# ---------------------------------------------------------------------------------------------


@dataclass
class _Session:
    session_id: str
    shard: tuple[int, int]
    seq: int = 0
    sent: list[Json] = field(default_factory=list)  # dispatches, for RESUME replay
    conn: _GatewayConnection | None = None


class _GatewayConnection:
    def __init__(self, ws: web.WebSocketResponse, compress: str | None, split: int | None) -> None:
        self.ws = ws
        self.compress = compress
        self.split = split
        self.session: _Session | None = None
        self.lock = asyncio.Lock()
        self.received: list[float] = []
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd: Any = None
        if compress == "zstd-stream" and zstandard is not None:
            self._zstd = zstandard.ZstdCompressor().compressobj()

    @property
    def shard_id(self) -> int | None:
        return None if self.session is None else self.session.shard[0]

    async def send(self, payload: Json) -> None:
        text = json.dumps(payload, separators=(",", ":"))
        # One lock per connection: the compression context is a stream and order matters.
        async with self.lock:
            if self.ws.closed:
                return
            if self._zlib is not None:
                data = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                await self._send_bytes(data)
            elif self._zstd is not None:
                data = self._zstd.compress(text.encode()) + self._zstd.flush(
                    zstandard.COMPRESSOBJ_FLUSH_BLOCK
                )
                await self.ws.send_bytes(data)
            else:
                await self.ws.send_str(text)

    async def _send_bytes(self, data: bytes) -> None:
        # Discord may split one zlib message over several frames; the client must buffer
        # until the 00 00 ff ff suffix. `split` makes the fake do that on purpose.
        if not self.split:
            await self.ws.send_bytes(data)
            return
        for start in range(0, len(data), self.split):
            await self.ws.send_bytes(data[start : start + self.split])


# ---------------------------------------------------------------------------------------------
# The fake
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Route:
    method: str
    template: str  # path template relative to /api/v10
    pattern: re.Pattern[str]
    handler: str
    auth: bool  # needs "Authorization: Bot <token>"

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"


def _compile(template: str) -> re.Pattern[str]:
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
    return re.compile(f"^{regex}$")


_ROUTE_TABLE: tuple[tuple[str, str, str, bool], ...] = (
    ("GET", "/users/@me", "_users_me", True),
    ("GET", "/oauth2/applications/@me", "_application_me", True),
    ("GET", "/gateway", "_gateway_url", False),
    ("GET", "/gateway/bot", "_gateway_bot", True),
    ("GET", "/applications/{app}/commands", "_get_commands", True),
    ("PUT", "/applications/{app}/commands", "_put_commands", True),
    ("POST", "/applications/{app}/commands", "_post_command", True),
    ("GET", "/applications/{app}/guilds/{guild}/commands", "_get_commands", True),
    ("PUT", "/applications/{app}/guilds/{guild}/commands", "_put_commands", True),
    ("POST", "/applications/{app}/guilds/{guild}/commands", "_post_command", True),
    ("POST", "/interactions/{id}/{token}/callback", "_callback", False),
    ("GET", "/webhooks/{app}/{token}/messages/@original", "_get_message", False),
    ("PATCH", "/webhooks/{app}/{token}/messages/@original", "_edit_message", False),
    ("DELETE", "/webhooks/{app}/{token}/messages/@original", "_delete_message", False),
    ("POST", "/webhooks/{app}/{token}", "_followup", False),
    ("GET", "/webhooks/{app}/{token}/messages/{message}", "_get_message", False),
    ("PATCH", "/webhooks/{app}/{token}/messages/{message}", "_edit_message", False),
    ("DELETE", "/webhooks/{app}/{token}/messages/{message}", "_delete_message", False),
    ("POST", "/channels/{channel}/messages", "_channel_message", True),
    ("GET", "/channels/{channel}/messages/{message}", "_get_channel_message", True),
    ("PATCH", "/channels/{channel}/messages/{message}", "_edit_channel_message", True),
    ("DELETE", "/channels/{channel}/messages/{message}", "_delete_channel_message", True),
    ("POST", "/users/@me/channels", "_create_dm", True),
)
ROUTES: tuple[_Route, ...] = tuple(
    _Route(method, template, _compile(template), handler, auth)
    for method, template, handler, auth in _ROUTE_TABLE
)

# Discord documents "DiscordBot ($url, $versionNumber)"; discord.py sends
# "DiscordBot ($url $version)" and Discord accepts that, so only the prefix is checked.
_USER_AGENT = re.compile(r"^DiscordBot \(\S+[ ,]")

Handler = Callable[[RecordedRequest], Awaitable[tuple[int, Any]]]


class FakeDiscord:
    """Discord's REST API and gateway on 127.0.0.1, for one test.

    Args:
        token: the bot token the fake accepts (`Authorization: Bot <token>`, IDENTIFY token).
        application_id / bot_user_id / bot_username: who the bot is.
        guilds: ids of the guilds the bot is in (default: one guild).
        shards: the shard count `GET /gateway/bot` recommends.
        heartbeat_interval: milliseconds, sent in HELLO.
        privileged_intents: privileged intent bits enabled in the "developer portal"; IDENTIFY
            asking for others is closed with 4014 like Discord does.
        initial_response_timeout: Discord drops interactions not answered within 3 s; a later
            callback gets 404 "Unknown interaction" and a violation. None disables the check.
        name_policy: "ascii" enforces ^[-_a-z0-9]{1,32}$ for command/option names (this
            project's rule); "discord" enforces Discord's Unicode rule.
        zlib_split: if set, zlib-stream messages are split into frames of this many bytes.
    """

    def __init__(
        self,
        *,
        token: str = "fake-bot-token.0123456789",  # noqa: S107
        application_id: int = 1180000000000000001,
        bot_user_id: int = 1180000000000000002,
        bot_username: str = "Imagine",
        guilds: Sequence[int] | None = None,
        shards: int = 1,
        heartbeat_interval: int = 41250,
        privileged_intents: int = 0,
        application_flags: int = 0,
        initial_response_timeout: float | None = 3.0,
        name_policy: NamePolicy = "ascii",
        zlib_split: int | None = None,
        owner_id: int = 1180000000000000003,
    ) -> None:
        self.token = token
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.bot_username = bot_username
        self.shard_count = shards
        self.heartbeat_interval = heartbeat_interval
        self.privileged_intents = privileged_intents
        self.application_flags = application_flags
        self.initial_response_timeout = initial_response_timeout
        self.name_policy: NamePolicy = name_policy
        self.zlib_split = zlib_split

        guild_ids = list(guilds) if guilds is not None else [p.snowflake_at(1_600_000_000)]
        self.guilds: dict[int, GuildSpec] = {
            gid: GuildSpec.for_id(gid, index=i) for i, gid in enumerate(guild_ids)
        }
        self.bot_user: Json = p.bot_self_user(bot_user_id, bot_username)
        self.owner: Json = p.user(owner_id, "app-owner")
        self.next_id = p.Snowflakes()

        # What the bot did.
        self.requests: list[RecordedRequest] = []
        self.unexpected: list[RecordedRequest] = []
        self.violations: list[str] = []
        self.gateway_frames: list[GatewayFrame] = []

        # Application commands as Discord stores them (responses, ids assigned).
        self.global_commands: list[Json] = []
        self.guild_commands: dict[int, list[Json]] = {}
        self.command_puts: list[RecordedRequest] = []

        # Messages the bot posted with POST /channels/{id}/messages.
        self.channel_messages: dict[int, list[Json]] = {}
        # Every live message by id (interaction responses, followups, channel messages, and
        # messages of users made with `user_message`); and the ones deleted, as they were last.
        self._messages: dict[str, Json] = {}
        self.deleted_messages: list[Json] = []
        # The bot's computed permissions per channel for channel endpoints (default
        # BOT_PERMISSIONS, which lacks MANAGE_MESSAGES); see `bot_permissions_in`.
        self.bot_channel_permissions: dict[int, int] = {}

        # Latency and fault knobs.
        self.route_delays: dict[str, float] = {}
        self._faults: dict[str, list[tuple[int, Json | None]]] = {}

        self._interactions: dict[str, _Interaction] = {}
        self._dm_channels: dict[int, Json] = {}
        self._cdn: dict[int, _CdnObject] = {}
        # Every request to the loopback CDN (attachment url / proxy_url), in arrival order.
        self.cdn_fetches: list[CdnFetch] = []
        self._cdn_tasks: set[asyncio.Task[Any]] = set()
        self._sessions: dict[str, _Session] = {}
        self._shard_sessions: dict[int, _Session] = {}
        self._connections: set[_GatewayConnection] = set()
        self._identified: dict[int, asyncio.Event] = {}
        self.ready_event = asyncio.Event()
        self._waiters: list[
            tuple[Callable[[RecordedRequest], bool], asyncio.Future[RecordedRequest]]
        ] = []
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(client_max_size=READ_LIMIT)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway/", self._gateway)
        app.router.add_get("/cdn/attachments/{channel}/{attachment}/{filename}", self._cdn_get)
        app.router.add_get("/media/attachments/{channel}/{attachment}/{filename}", self._cdn_get)
        app.router.add_route("*", "/{tail:.*}", self._http)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        for task in list(self._cdn_tasks):
            task.cancel()  # slow CDN bodies must not hold up the shutdown
        for conn in list(self._connections):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001, message=b"fake Discord stopping")
        for _, future in self._waiters:
            future.cancel()
        self._waiters.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeDiscord is not started; use `async with FakeDiscord() as fake`")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base_url(self) -> str:
        return f"{self.base_url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @property
    def guild_id(self) -> int:
        """The first guild's id (the default guild)."""
        return next(iter(self.guilds))

    def guild(self, guild_id: int | None = None) -> GuildSpec:
        return self.guilds[guild_id if guild_id is not None else self.guild_id]

    # -- knobs ----------------------------------------------------------------------------

    @property
    def callback_delay(self) -> float:
        return self.route_delays.get(ROUTE_CALLBACK, 0.0)

    @callback_delay.setter
    def callback_delay(self, seconds: float) -> None:
        self.route_delays[ROUTE_CALLBACK] = seconds

    def fail_next(
        self, route: str, status: int, body: Json | None = None, *, times: int = 1
    ) -> None:
        """Answer the next `times` calls to `route` (a template like ROUTE_ORIGINAL_PATCH) with
        an error. Beware that discord.py retries 5xx with 1 s, 3 s, ... sleeps."""
        default = {"message": f"{status}: injected by the fake", "code": 0}
        self._faults.setdefault(route, []).extend([(status, body or default)] * times)

    def expire_token(self, token: str) -> None:
        """Make later webhook calls with this token fail as after Discord's 15-minute expiry."""
        self._interactions[token].expired = True

    def assert_clean(self) -> None:
        """Fail with every violation and unexpected call recorded so far."""
        problems = list(self.violations) + [
            f"unexpected call: {r.method} {r.path} -> {r.status}" for r in self.unexpected
        ]
        assert not problems, "fake Discord saw problems:\n  " + "\n  ".join(problems)

    def _violation(self, text: str) -> None:
        self.violations.append(text)

    # -- waiting --------------------------------------------------------------------------

    async def wait_for_request(
        self,
        predicate: Callable[[RecordedRequest], bool],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> RecordedRequest:
        """The first recorded request (already answered, or answered later) matching predicate."""
        for request in self.requests:
            if request.status is not None and predicate(request):
                return request
        future: asyncio.Future[RecordedRequest] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            seen = "\n  ".join(f"{r.method} {r.path} -> {r.status}" for r in self.requests)
            raise TimeoutError(
                f"no matching request within {timeout}s; recorded so far:\n  {seen or '(none)'}"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _notify(self, request: RecordedRequest) -> None:
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(request):
                future.set_result(request)

    async def wait_until_identified(
        self,
        shards: int | Iterable[int] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> None:
        """Until the given shards (default: all `shards`) got READY and their GUILD_CREATEs."""
        if shards is None:
            wanted: list[int] = list(range(self.shard_count))
        elif isinstance(shards, int):
            wanted = [shards]
        else:
            wanted = list(shards)
        try:
            async with asyncio.timeout(timeout):
                for shard_id in wanted:
                    await self._identified_event(shard_id).wait()
        except TimeoutError:
            raise TimeoutError(
                f"shards {wanted} not identified within {timeout}s "
                f"(identified: {sorted(k for k, v in self._identified.items() if v.is_set())})"
            ) from None

    def _identified_event(self, shard_id: int) -> asyncio.Event:
        if shard_id not in self._identified:
            self._identified[shard_id] = asyncio.Event()
        return self._identified[shard_id]

    # -- HTTP plumbing --------------------------------------------------------------------

    async def _cdn_get(self, request: web.Request) -> web.StreamResponse:
        """The attachment CDN: serves uploaded bytes at `url` and `proxy_url`, shaped by the
        attachment's `CdnBehaviour` (delay, slow stream, no Content-Length, 404)."""
        try:
            attachment_id: int | None = int(request.match_info["attachment"])
        except ValueError:
            attachment_id = None
        fetch = CdnFetch(
            attachment_id=attachment_id,
            filename=request.match_info["filename"],
            host="media" if request.path.startswith("/media/") else "cdn",
            method=request.method,
            at=time.monotonic(),
        )
        self.cdn_fetches.append(fetch)
        stored = None if attachment_id is None else self._cdn.get(attachment_id)
        if stored is None or stored.filename != fetch.filename:
            fetch.status = 404
            return web.Response(status=404, text="Not Found")
        behaviour = stored.behaviour
        if stored.vanished or behaviour.vanished:
            fetch.status = 404
            return web.Response(status=404, text=CDN_GONE_TEXT)
        task = asyncio.current_task()
        if task is not None:
            self._cdn_tasks.add(task)
        try:
            return await self._cdn_stream(request, stored, fetch)
        finally:
            if task is not None:
                self._cdn_tasks.discard(task)

    async def _cdn_stream(
        self, request: web.Request, stored: _CdnObject, fetch: CdnFetch
    ) -> web.StreamResponse:
        behaviour = stored.behaviour
        if behaviour.delay:
            await asyncio.sleep(behaviour.delay)
        body = stored.data if behaviour.body is None else behaviour.body
        response = web.StreamResponse(status=200)
        response.headers["Content-Type"] = stored.content_type or "application/octet-stream"
        response.headers["Cache-Control"] = "public, max-age=31536000"
        if behaviour.content_length:
            response.content_length = len(body)
        else:
            response.enable_chunked_encoding()
        fetch.status = 200
        try:
            await response.prepare(request)
            if request.method == "HEAD":
                fetch.complete = True
                return response
            step = max(1, behaviour.chunk_size)
            for start in range(0, len(body), step):
                chunk = body[start : start + step]
                await response.write(chunk)
                fetch.bytes_sent += len(chunk)
                if behaviour.chunk_delay and start + step < len(body):
                    await asyncio.sleep(behaviour.chunk_delay)
            await response.write_eof()
            fetch.complete = True
        except (ConnectionError, RuntimeError):
            # The client closed the connection (it gave up, or stopped reading at its cap).
            fetch.aborted = True
        return response

    def cdn_attachment(self, attachment: Json | int | str) -> tuple[str, bytes]:
        """(filename, bytes) the CDN holds for an attachment (its dict, id or URL)."""
        stored = self._cdn[self._attachment_id(attachment)]
        return stored.filename, stored.data

    def vanish_attachment(self, attachment: Json | int | str) -> None:
        """From now on the attachment's url and proxy_url answer 404 (its message was deleted,
        or the signed URL expired), as Discord's CDN does."""
        self._cdn[self._attachment_id(attachment)].vanished = True

    def cdn_fetches_of(self, attachment: Json | int | str) -> list[CdnFetch]:
        """The CDN requests made for one attachment."""
        wanted = self._attachment_id(attachment)
        return [f for f in self.cdn_fetches if f.attachment_id == wanted]

    @staticmethod
    def _attachment_id(attachment: Json | int | str) -> int:
        if isinstance(attachment, dict):
            return int(attachment["id"])
        if isinstance(attachment, int):
            return attachment
        match = re.search(r"/attachments/\d+/(\d+)/", attachment)
        return int(match.group(1)) if match else int(attachment)

    async def _http(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        raw_path = request.path
        is_api = raw_path.startswith(API_PREFIX + "/")
        path = raw_path[len(API_PREFIX) :] if is_api else raw_path
        record = RecordedRequest(
            method=request.method,
            path=path,
            route=None,
            query=dict(request.query),
            headers=dict(request.headers),
            json=None,
            files=[],
            at=arrived,
        )
        self.requests.append(record)
        route: _Route | None = None
        route, params = self._match(request.method, path) if is_api else (None, {})
        if route is not None:
            record.route = route.name
            record.params = params
        try:
            await self._read_body(request, record)
            self._check_request_size(record)
            if route is None:
                self.unexpected.append(record)
                if is_api and self._path_exists(path):
                    raise _error(405, 0, "405: Method Not Allowed")
                raise _error(404, 0, "404: Not Found")
            if route.auth:
                # Interaction and webhook calls go through discord.py's webhook adapter, which
                # sends aiohttp's default User-Agent; Discord does not require it there.
                self._check_user_agent(record)
            if route.auth and record.headers.get("Authorization") != f"Bot {self.token}":
                raise _error(401, 0, "401: Unauthorized")
            faults = self._faults.get(route.name)
            if faults:
                status, body = faults.pop(0)
                raise _HTTPError(status, body)
            handler: Handler = getattr(self, route.handler)
            status, body = await handler(record)
        except _HTTPError as exc:
            status, body = exc.status, exc.body
        except Exception as exc:
            # A bug in the fake must fail the test, not look like a Discord 5xx that
            # discord.py would silently retry for seconds.
            self._violation(f"FAKE BUG while handling {request.method} {path}: {exc!r}")
            status, body = 400, {"message": f"fake Discord crashed: {exc!r}", "code": 0}
        record.status, record.response = status, body
        self._notify(record)
        delay = self.route_delays.get(route.name, 0.0) if route is not None else 0.0
        if delay:
            await asyncio.sleep(delay)
        if body is None:
            return web.Response(status=status)
        # Exactly "application/json": discord.py compares the header verbatim and treats
        # "application/json; charset=utf-8" (aiohttp's json_response default) as text.
        return web.Response(
            status=status, body=json.dumps(body).encode(), content_type="application/json"
        )

    def _match(self, method: str, path: str) -> tuple[_Route | None, dict[str, str]]:
        for route in ROUTES:
            if route.method != method:
                continue
            match = route.pattern.match(path)
            if match is not None:
                return route, match.groupdict()
        return None, {}

    def _path_exists(self, path: str) -> bool:
        return any(route.pattern.match(path) for route in ROUTES)

    async def _read_body(self, request: web.Request, record: RecordedRequest) -> None:
        content_type = request.content_type
        if content_type.startswith("multipart/"):
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):  # nested multipart: Discord has none
                    raise _error(400, 50035, "Invalid Form Body")
                data = await part.read(decode=False)
                name = part.name or ""
                if name == "payload_json":
                    record.json = self._parse_json(bytes(data))
                elif part.filename is not None or name.startswith("files["):
                    record.files.append(
                        RecordedFile(
                            field=name,
                            filename=part.filename,
                            content_type=part.headers.get("Content-Type"),
                            data=bytes(data),
                        )
                    )
                else:
                    # Plain form fields are how some clients send top-level keys.
                    if not isinstance(record.json, dict):
                        record.json = {}
                    record.json[name] = bytes(data).decode("utf-8", "replace")
            # Whatever follows the closing boundary counts too.
            await request.content.read()
            record.size = request.content.total_bytes
            return
        try:
            record.body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            record.size = READ_LIMIT + 1  # unread, but surely over Discord's limit as well
            return
        record.size = len(record.body)
        if record.body and content_type == "application/json":
            record.json = self._parse_json(record.body)
        elif record.body:
            record.json = None

    @staticmethod
    def _parse_json(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            raise _error(400, 50109, "The request body contains invalid JSON.") from None

    def _check_request_size(self, record: RecordedRequest) -> None:
        """Discord's whole-request limit, on top of the per-file one (_check_file_sizes)."""
        if record.size > MAX_REQUEST_SIZE:
            self._violation(
                f"{record.method} {record.path}: request body of {record.size} bytes, over "
                f"Discord's {MAX_REQUEST_SIZE}-byte request limit"
            )
            raise _error(413, 40005, "Request entity too large")

    def _check_user_agent(self, record: RecordedRequest) -> None:
        agent = record.headers.get("User-Agent", "")
        if not _USER_AGENT.match(agent):
            self._violation(
                f"{record.route}: User-Agent {agent!r} does not start with 'DiscordBot ($url'"
            )

    def _reject_or_record(self, record: RecordedRequest, problems: Sequence[Problem]) -> None:
        """Record every problem as a violation; raise Discord's 50035 if any would be refused."""
        for problem in problems:
            self._violation(f"{record.route}: {problem.describe()}")
        refused = [pr for pr in problems if pr.reject]
        if refused:
            raise _form_error(refused)

    def _schema_then_rules(
        self, schema: str, body: Any, rules: list[Problem], *, loc: tuple[str | int, ...] = ()
    ) -> list[Problem]:
        # Hand-written rules give Discord's wording; schema errors only add what they miss.
        covered = {pr.loc for pr in rules}
        extra = [
            pr
            for pr in _Schemas.get().problems(schema, body, loc=loc)
            if not any(pr.loc[: len(c)] == c or c[: len(pr.loc)] == pr.loc for c in covered)
        ]
        return [*rules, *extra]

    # -- startup endpoints ----------------------------------------------------------------

    async def _users_me(self, record: RecordedRequest) -> tuple[int, Any]:
        return 200, self.bot_user

    async def _application_me(self, record: RecordedRequest) -> tuple[int, Any]:
        return 200, p.application(
            application_id=self.application_id,
            name=self.bot_username,
            bot_user=self.bot_user,
            owner=self.owner,
            flags=self.application_flags,
        )

    async def _gateway_url(self, record: RecordedRequest) -> tuple[int, Any]:
        return 200, {"url": self.gateway_url}

    async def _gateway_bot(self, record: RecordedRequest) -> tuple[int, Any]:
        return 200, {
            "url": self.gateway_url,
            "shards": self.shard_count,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 14_400_000,
                "max_concurrency": 1,
            },
        }

    # -- application commands -------------------------------------------------------------

    def _command_scope(self, record: RecordedRequest) -> int | None:
        if record.params["app"] != str(self.application_id):
            self._violation(
                f"{record.route}: application id {record.params['app']} is not the bot's"
            )
            raise _error(403, 50001, "Missing Access")
        guild = record.params.get("guild")
        if guild is None:
            return None
        guild_id = int(guild) if guild.isdigit() else -1
        if guild_id not in self.guilds:
            self._violation(f"{record.route}: the bot is not in guild {guild_id}")
            raise _error(403, 50001, "Missing Access")
        return guild_id

    def _stored_commands(self, guild_id: int | None) -> list[Json]:
        if guild_id is None:
            return self.global_commands
        return self.guild_commands.setdefault(guild_id, [])

    async def _get_commands(self, record: RecordedRequest) -> tuple[int, Any]:
        return 200, self._stored_commands(self._command_scope(record))

    def _commands_from(
        self, definitions: Sequence[Json], existing: Sequence[Json], guild_id: int | None
    ) -> list[Json]:
        by_key = {(c["type"], c["name"]): c for c in existing}
        result = []
        for definition in definitions:
            key = (definition.get("type") or 1, definition["name"])
            old = by_key.get(key)
            command_id = int(old["id"]) if old else self.next_id()
            candidate = p.application_command_response(
                definition,
                command_id=command_id,
                application_id=self.application_id,
                version=int(old["version"]) if old else self.next_id(),
                guild_id=guild_id,
            )
            if old is not None and {**candidate, "version": None} != {**old, "version": None}:
                candidate["version"] = str(self.next_id())
            result.append(candidate)
        return result

    async def _put_commands(self, record: RecordedRequest) -> tuple[int, Any]:
        guild_id = self._command_scope(record)
        body = record.json if record.json is not None else []
        problems = check_commands(body, name_policy=self.name_policy)
        if isinstance(body, list):
            for index, command in enumerate(body):
                problems = self._schema_then_rules(
                    "ApplicationCommandUpdateRequest", command, problems, loc=(index,)
                )
            if len(body) > 130:
                problems.append(
                    Problem((), "BASE_TYPE_MAX_LENGTH", "Must be 130 or fewer in length.")
                )
        self._reject_or_record(record, problems)
        stored = self._commands_from(body, self._stored_commands(guild_id), guild_id)
        if guild_id is None:
            self.global_commands = stored
        else:
            self.guild_commands[guild_id] = stored
        self.command_puts.append(record)
        return 200, stored

    async def _post_command(self, record: RecordedRequest) -> tuple[int, Any]:
        guild_id = self._command_scope(record)
        body = record.json
        problems = check_commands([body], name_policy=self.name_policy)
        problems = [Problem(pr.loc[1:], pr.code, pr.message, pr.reject) for pr in problems]
        problems = self._schema_then_rules("ApplicationCommandUpdateRequest", body, problems)
        self._reject_or_record(record, problems)
        assert isinstance(body, dict)
        existing = self._stored_commands(guild_id)
        [command] = self._commands_from([body], existing, guild_id)
        replaced = [c for c in existing if c["id"] == command["id"]]
        kept = [c for c in existing if c["id"] != command["id"]]
        kept.append(command)
        if guild_id is None:
            self.global_commands = kept
        else:
            self.guild_commands[guild_id] = kept
        return (200 if replaced else 201), command

    def find_command(self, name: str, guild_id: int | None = None, *, kind: int = 1) -> Json | None:
        """The synced command `name` as Discord would resolve it (guild commands first)."""
        if guild_id is not None:
            for command in self.guild_commands.get(guild_id, []):
                if command["name"] == name and command["type"] == kind:
                    return command
        for command in self.global_commands:
            if command["name"] == name and command["type"] == kind:
                return command
        return None

    # -- interactions: building and dispatching -------------------------------------------

    def _cdn_attachment(
        self,
        *,
        channel_id: int,
        filename: str,
        data: bytes,
        description: str | None = None,
        content_type: str | None = None,
        ephemeral: bool = False,
        cdn: CdnBehaviour = CDN_AS_UPLOADED,
    ) -> Json:
        attachment_id = self.next_id()
        payload = p.attachment(
            attachment_id=attachment_id,
            filename=filename,
            data=data,
            cdn_base=self.base_url,
            channel_id=channel_id,
            description=description,
            content_type=content_type,
            ephemeral=ephemeral,
        )
        self._cdn[attachment_id] = _CdnObject(filename, payload.get("content_type"), data, cdn)
        return payload

    def _build_interaction(
        self,
        interaction_type: int,
        name: str,
        options: Mapping[str, Any] | Sequence[Json] | None,
        *,
        focused: str | None,
        subcommand: str | Sequence[str] | None,
        user_id: int | None,
        username: str,
        guild_id: int | None,
        channel_id: int | None,
        permissions: int,
        app_permissions: int,
        roles: Iterable[int],
        attachment_size_limit: int,
        locale: str,
        dm: bool,
        command_id: int | None,
    ) -> Json:
        guild = None if dm else self.guild(guild_id)
        invoker_id = user_id if user_id is not None else 1180000000000000100
        invoker = p.user(invoker_id, username, global_name=username.title())
        if guild is None:
            channel = self._dm_channels.get(invoker_id)
            if channel is None:
                channel = p.dm_channel(channel_id or self.next_id(), invoker)
                self._dm_channels[invoker_id] = channel
        else:
            chosen = channel_id or guild.text_channel_id
            channel = p.text_channel(
                chosen,
                guild_id=guild.id,
                parent_id=guild.category_id,
                permissions=permissions,
                nsfw=chosen == guild.nsfw_channel_id,
            )
        command = self.find_command(name, None if guild is None else guild.id)
        resolved = p.ResolvedCollector()
        resolver = self._resolver(resolved, guild, int(channel["id"]), permissions)
        built = p.build_options(
            options,
            definitions=None if command is None else command.get("options"),
            subcommand=subcommand,
            focused=focused,
            resolve=resolver,
        )
        data: Json = {
            "id": command["id"] if command else str(command_id or self.next_id()),
            "name": name,
            "type": 1,
        }
        if command_id is not None:
            data["id"] = str(command_id)
        if built:
            data["options"] = built
        if command is not None and "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        if (extra := resolved.as_payload()) is not None:
            data["resolved"] = extra
        interaction_id = self.next_id()
        return p.interaction(
            interaction_id=interaction_id,
            interaction_type=interaction_type,
            token=p.interaction_token(interaction_id),
            application_id=self.application_id,
            data=data,
            invoker=invoker,
            channel=channel,
            guild=guild,
            permissions=permissions,
            app_permissions=app_permissions,
            roles=roles,
            locale=locale,
            attachment_size_limit=attachment_size_limit,
        )

    def _resolver(
        self, resolved: p.ResolvedCollector, guild: GuildSpec | None, channel_id: int, perms: int
    ) -> Callable[[int, Any], str]:
        """Turns option values (ids, payload dicts, AttachmentInput) into ids + resolved data."""
        known_roles = (
            {}
            if guild is None
            else {
                guild.id: "@everyone",
                guild.bot_role_id: "bot",
                **{role_id: f"role-{i + 1}" for i, role_id in enumerate(guild.member_role_ids)},
            }
        )

        def add_user(raw: Any) -> str:
            user = raw if isinstance(raw, dict) else p.user(int(raw), f"user{raw}")
            resolved.users[user["id"]] = user
            if guild is not None:
                # Resolved members come without `user` but with their computed permissions.
                member = p.member(user, permissions=MEMBER_PERMISSIONS)
                del member["user"]
                resolved.members[user["id"]] = member
            return str(user["id"])

        def add_role(raw: Any) -> str:
            if isinstance(raw, dict):
                role = raw
            else:
                name = known_roles.get(int(raw), f"role-{raw}")
                role = p.role(int(raw), name, permissions=0, position=1)
            resolved.roles[role["id"]] = role
            return str(role["id"])

        def resolve(option_type: int, raw: Any) -> str:
            if option_type == p.OPTION_ATTACHMENT:
                if not isinstance(raw, AttachmentInput):
                    raise TypeError("attachment options take an AttachmentInput value")
                attachment = self._cdn_attachment(
                    channel_id=channel_id,
                    filename=raw.filename,
                    data=raw.data,
                    description=raw.description,
                    content_type=raw.content_type,
                    ephemeral=True,  # files attached to command options are ephemeral
                    cdn=raw.cdn,
                )
                resolved.attachments[attachment["id"]] = attachment
                return str(attachment["id"])
            if option_type == p.OPTION_CHANNEL:
                if isinstance(raw, dict):
                    channel = raw
                else:
                    channel = p.text_channel(
                        int(raw),
                        "general" if guild and int(raw) == guild.text_channel_id else f"ch-{raw}",
                        guild_id=None if guild is None else guild.id,
                        permissions=perms,
                    )
                resolved.channels[channel["id"]] = channel
                return str(channel["id"])
            if option_type == p.OPTION_ROLE:
                return add_role(raw)
            if option_type == p.OPTION_MENTIONABLE:
                is_role = (isinstance(raw, dict) and "permissions" in raw) or (
                    not isinstance(raw, dict) and int(raw) in known_roles
                )
                return add_role(raw) if is_role else add_user(raw)
            return add_user(raw)

        return resolve

    def command_interaction(
        self,
        name: str,
        options: Mapping[str, Any] | Sequence[Json] | None = None,
        *,
        subcommand: str | Sequence[str] | None = None,
        user_id: int | None = None,
        username: str = "someone",
        guild_id: int | None = None,
        channel_id: int | None = None,
        permissions: int = MEMBER_PERMISSIONS,
        app_permissions: int = p.BOT_PERMISSIONS,
        roles: Iterable[int] = (),
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        locale: str = "en-US",
        dm: bool = False,
        command_id: int | None = None,
    ) -> Json:
        """An APPLICATION_COMMAND interaction payload for `/name [subcommand] options`.

        `options` is `{name: value}` (types from the synced command, else from the value;
        wrap in `TypedValue` to force one) or a list of raw option dicts. User, channel, role
        and mentionable options take an id or a payload dict, attachment options an
        `AttachmentInput`; the fake fills `data.resolved` for them like Discord does.
        `permissions` are the invoker's computed permissions: use `MANAGER_PERMISSIONS` /
        `ADMIN_PERMISSIONS` from discord_payloads for privileged users.
        `dm=True` builds the bot-DM variant (`user` instead of `member`, no guild).
        """
        return self._build_interaction(
            p.INTERACTION_APPLICATION_COMMAND,
            name,
            options,
            focused=None,
            subcommand=subcommand,
            user_id=user_id,
            username=username,
            guild_id=guild_id,
            channel_id=channel_id,
            permissions=permissions,
            app_permissions=app_permissions,
            roles=roles,
            attachment_size_limit=attachment_size_limit,
            locale=locale,
            dm=dm,
            command_id=command_id,
        )

    def autocomplete_interaction(
        self,
        name: str,
        options: Mapping[str, Any] | Sequence[Json] | None,
        *,
        focused: str,
        subcommand: str | Sequence[str] | None = None,
        user_id: int | None = None,
        username: str = "someone",
        guild_id: int | None = None,
        channel_id: int | None = None,
        permissions: int = MEMBER_PERMISSIONS,
        app_permissions: int = p.BOT_PERMISSIONS,
        roles: Iterable[int] = (),
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        locale: str = "en-US",
        dm: bool = False,
        command_id: int | None = None,
    ) -> Json:
        """An AUTOCOMPLETE interaction: the user is typing into option `focused`.

        The focused value is sent as a string (the raw text typed), as Discord does.
        """
        return self._build_interaction(
            p.INTERACTION_AUTOCOMPLETE,
            name,
            options,
            focused=focused,
            subcommand=subcommand,
            user_id=user_id,
            username=username,
            guild_id=guild_id,
            channel_id=channel_id,
            permissions=permissions,
            app_permissions=app_permissions,
            roles=roles,
            attachment_size_limit=attachment_size_limit,
            locale=locale,
            dm=dm,
            command_id=command_id,
        )

    async def invoke(
        self, name: str, options: Mapping[str, Any] | Sequence[Json] | None = None, **kwargs: Any
    ) -> InteractionHandle:
        """Build and dispatch a command interaction (see `command_interaction` for kwargs)."""
        return await self.dispatch(self.command_interaction(name, options, **kwargs))

    async def autocomplete(
        self,
        name: str,
        options: Mapping[str, Any] | Sequence[Json] | None,
        *,
        focused: str,
        **kwargs: Any,
    ) -> InteractionHandle:
        return await self.dispatch(
            self.autocomplete_interaction(name, options, focused=focused, **kwargs)
        )

    def shard_for(self, guild_id: int | str | None) -> int:
        """The shard Discord routes a guild's events to (DMs go to shard 0)."""
        if guild_id is None:
            return 0
        count = self._live_shard_count()
        return (int(guild_id) >> 22) % count

    def _live_shard_count(self) -> int:
        for session in self._shard_sessions.values():
            return session.shard[1]
        return self.shard_count

    @staticmethod
    def _focused_type(options: Any) -> int | None:
        for option in options or ():
            if option.get("focused"):
                return int(option["type"])
            nested = FakeDiscord._focused_type(option.get("options"))
            if nested is not None:
                return nested
        return None

    async def dispatch(
        self,
        payload: Json,
        *,
        shard_id: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> InteractionHandle:
        """Send INTERACTION_CREATE to the shard that owns the payload's guild."""
        handle = self.register(payload)
        shard = shard_id if shard_id is not None else self.shard_for(payload.get("guild_id"))
        await self.wait_until_identified(shards=[shard], timeout=timeout)
        handle._state.dispatched_at = time.monotonic()
        await self.dispatch_event("INTERACTION_CREATE", payload, shard_id=shard)
        return handle

    def register(self, payload: Json) -> InteractionHandle:
        """Make the fake know an interaction (id, token, limits) without sending it.

        Registering the same payload object again returns the same interaction."""
        known = self._interactions.get(payload["token"])
        if known is not None and known.payload is payload:
            return InteractionHandle(self, known)
        data = payload.get("data") or {}
        message = payload.get("message")
        state = _Interaction(
            id=int(payload["id"]),
            token=payload["token"],
            type=int(payload["type"]),
            payload=payload,
            guild_id=int(payload["guild_id"]) if payload.get("guild_id") else None,
            channel_id=int(payload.get("channel_id") or payload["channel"]["id"]),
            attachment_size_limit=int(payload["attachment_size_limit"]),
            focused_type=self._focused_type(data.get("options")),
            source_message_id=str(message["id"]) if isinstance(message, dict) else None,
        )
        self._interactions[state.token] = state
        return InteractionHandle(self, state)

    def handle(self, token: str) -> InteractionHandle:
        return InteractionHandle(self, self._interactions[token])

    # -- messages: the registry -----------------------------------------------------------

    def message(self, message_id: int | str) -> Json | None:
        """A live message (any the bot sent, or made with `user_message`), as Discord has it
        now; None if unknown or deleted."""
        return self._messages.get(str(message_id))

    def _store_message(self, message: Json) -> Json:
        self._messages[message["id"]] = message
        return message

    def _forget_message(self, message_id: str) -> None:
        """A message is gone: from the registry, the channel lists and every interaction."""
        message = self._messages.pop(message_id, None)
        if message is None:
            return
        self.deleted_messages.append(message)
        for state in self._interactions.values():
            if state.original is not None and state.original["id"] == message_id:
                state.original_deleted = True
                state.loading = False
            state.followups.pop(message_id, None)
        listed = self.channel_messages.get(int(message["channel_id"]))
        if listed is not None:
            listed[:] = [m for m in listed if m["id"] != message_id]

    def bot_permissions_in(self, channel_id: int) -> int:
        """The bot's computed permissions in a channel, for the channel endpoints."""
        return self.bot_channel_permissions.get(channel_id, p.BOT_PERMISSIONS)

    def user_message(
        self,
        content: str = "",
        *,
        user_id: int = 1180000000000000100,
        username: str = "someone",
        channel_id: int | None = None,
        guild_id: int | None = None,
        attachments: Sequence[AttachmentInput] = (),
        embeds: Sequence[Json] = (),
    ) -> Json:
        """A message a user (not the bot) posted in a guild channel, so tests can check what
        the bot may do to other people's messages (and use them as context-menu targets).
        Not dispatched over the gateway.

        `attachments` are uploaded to the loopback CDN (each served per its `cdn`
        behaviour); an embed image/thumbnail `attachment://name` resolves to one of them,
        and an embed with an external image URL is kept as given."""
        guild = self.guild(guild_id)
        channel = channel_id or guild.text_channel_id
        uploaded = [
            self._cdn_attachment(
                channel_id=channel,
                filename=a.filename,
                data=a.data,
                description=a.description,
                content_type=a.content_type,
                cdn=a.cdn,
            )
            for a in attachments
        ]
        message = p.message(
            message_id=self.next_id(),
            channel_id=channel,
            author=p.user(user_id, username, global_name=username.title()),
            content=content,
            guild_id=guild.id,
            attachments=uploaded,
            embeds=embeds,
        )
        return self._store_message(message)

    # -- interactions: context-menu commands ----------------------------------------------

    def message_command_interaction(
        self,
        name: str,
        target_message: Json | int | str,
        *,
        user_id: int | None = None,
        username: str = "someone",
        guild_id: int | None = None,
        permissions: int = MEMBER_PERMISSIONS,
        app_permissions: int = p.BOT_PERMISSIONS,
        roles: Iterable[int] = (),
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        locale: str = "en-US",
        command_id: int | None = None,
    ) -> Json:
        """The APPLICATION_COMMAND interaction Discord sends when a member picks the MESSAGE
        command (type 3) `name` under "Apps" on `target_message` (a dict or id of a message
        the fake knows: one the bot posted, or one made with `user_message`).

        `data` is `{id, name, type: 3, target_id, resolved: {messages: {target_id: message}},
        guild_id?}`: the target as Discord returns messages (attachments, embeds and
        components included, no `guild_id`), with no `options`; the interaction carries no
        top-level `message`. Raises `InteractionRefused` when the member could not open the
        menu on it (someone else's ephemeral message or DM, no VIEW_CHANNEL).
        """
        stored = self._live_message(target_message)
        message_guild = int(stored["guild_id"]) if stored.get("guild_id") else None
        if guild_id is not None and guild_id != message_guild:
            raise ValueError(f"message {stored['id']} is in guild {message_guild}, not {guild_id}")
        viewer = self._message_viewer(stored)
        invoker_id = user_id if user_id is not None else (viewer or 1180000000000000100)
        if viewer is not None and invoker_id != viewer:
            raise InteractionRefused(
                f"message {stored['id']} is only visible to user {viewer}, not {invoker_id}"
            )
        invoker = p.user(invoker_id, username, global_name=username.title())
        channel_id = int(stored["channel_id"])
        guild = self.guilds.get(message_guild) if message_guild is not None else None
        if guild is None:
            channel = self._dm_channels.get(invoker_id) or p.dm_channel(channel_id, invoker)
        else:
            if not permissions & p.VIEW_CHANNEL:
                raise InteractionRefused(
                    f"user {invoker_id} cannot view channel {channel_id} (no VIEW_CHANNEL)"
                )
            channel = p.text_channel(
                channel_id,
                "general" if channel_id == guild.text_channel_id else f"ch-{channel_id}",
                guild_id=guild.id,
                parent_id=guild.category_id,
                permissions=permissions,
            )
        command = self.find_command(
            name, None if guild is None else guild.id, kind=p.COMMAND_MESSAGE
        )
        resolved_message = {k: v for k, v in copy.deepcopy(stored).items() if k != "guild_id"}
        data: Json = {
            "id": str(command_id or (command["id"] if command else self.next_id())),
            "name": name,
            "type": p.COMMAND_MESSAGE,
            "target_id": stored["id"],
            "resolved": {"messages": {stored["id"]: resolved_message}},
        }
        if command is not None and "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        interaction_id = self.next_id()
        return p.interaction(
            interaction_id=interaction_id,
            interaction_type=p.INTERACTION_APPLICATION_COMMAND,
            token=p.interaction_token(interaction_id),
            application_id=self.application_id,
            data=data,
            invoker=invoker,
            channel=channel,
            guild=guild,
            permissions=permissions,
            app_permissions=app_permissions,
            roles=roles,
            locale=locale,
            attachment_size_limit=attachment_size_limit,
        )

    async def invoke_message_command(
        self,
        name: str,
        target_message: Json | int | str,
        *,
        shard_id: int | None = None,
        **kwargs: Any,
    ) -> InteractionHandle:
        """Build a message context-menu interaction (see `message_command_interaction` for
        kwargs and refusals) and dispatch it; the handle's `modal` / `submit_modal` work as
        for slash commands."""
        payload = self.message_command_interaction(name, target_message, **kwargs)
        return await self.dispatch(payload, shard_id=shard_id)

    # -- interactions: components ---------------------------------------------------------

    def _live_message(self, message: Json | int | str) -> Json:
        message_id = str(message["id"] if isinstance(message, dict) else message)
        found = self._messages.get(message_id)
        if found is None:
            gone = any(m["id"] == message_id for m in self.deleted_messages)
            raise InteractionRefused(
                f"message {message_id} {'was deleted' if gone else 'is unknown to the fake'}"
            )
        return found

    def _message_viewer(self, message: Json) -> int | None:
        """Who alone can see (and so use) a message: the invoker for ephemeral responses, the
        recipient in a DM; None when everyone in the channel can."""
        if message["flags"] & p.MESSAGE_FLAG_EPHEMERAL:
            metadata = message.get("interaction_metadata") or {}
            user = metadata.get("user") or {}
            return int(user["id"]) if user.get("id") else None
        for recipient_id, channel in self._dm_channels.items():
            if channel["id"] == message["channel_id"]:
                return recipient_id
        return None

    def component_interaction(
        self,
        message: Json | int | str,
        custom_id: str,
        *,
        values: Sequence[str] | None = None,
        user_id: int | None = None,
        username: str = "someone",
        guild_id: int | None = None,
        permissions: int = MEMBER_PERMISSIONS,
        app_permissions: int = p.BOT_PERMISSIONS,
        roles: Iterable[int] = (),
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        locale: str = "en-US",
    ) -> Json:
        """The MESSAGE_COMPONENT interaction Discord sends when a user clicks the button (or
        picks `values` in the string select) with `custom_id` on `message` (a message dict
        or id; the fake uses its own current copy of the message).

        Raises `InteractionRefused` where the Discord client would not let the user do it:
        the component is not on the message (any more), is disabled, is a link or premium
        button, or the message is ephemeral to someone else / in someone else's DM, or the
        member cannot view the channel. `user_id` defaults to the user the message was
        shown to (ephemeral or DM), else to the user whose interaction it answers, else to
        the default invoker of `invoke`.
        """
        stored = self._live_message(message)
        component = find_component(stored.get("components") or [], custom_id)
        if component is None:
            present = [
                c["custom_id"]
                for c in p.walk_components(stored.get("components") or [])
                if isinstance(c.get("custom_id"), str)
            ]
            raise InteractionRefused(
                f"message {stored['id']} has no component with custom_id {custom_id!r} "
                f"(it has {present or 'none'})"
            )
        kind = component.get("type")
        data: Json = {"custom_id": custom_id, "component_type": kind}
        if isinstance(component.get("id"), int):
            data["id"] = component["id"]
        if kind == p.COMPONENT_BUTTON:
            if component.get("style") in (p.BUTTON_LINK, p.BUTTON_PREMIUM):
                raise InteractionRefused(
                    f"{custom_id!r}: link and premium buttons send no interaction"
                )
            if values is not None:
                raise TypeError("buttons take no values")
        elif kind == p.COMPONENT_STRING_SELECT:
            data["values"] = self._select_values(component, values)
        else:
            raise InteractionRefused(
                f"{custom_id!r} is a component of type {kind}; the fake can "
                "press buttons and pick string-select options"
            )
        if component.get("disabled"):
            raise InteractionRefused(f"{custom_id!r} is disabled on message {stored['id']}")

        message_guild = int(stored["guild_id"]) if stored.get("guild_id") else None
        if guild_id is not None and guild_id != message_guild:
            raise ValueError(f"message {stored['id']} is in guild {message_guild}, not {guild_id}")
        viewer = self._message_viewer(stored)
        answered = ((stored.get("interaction_metadata") or {}).get("user") or {}).get("id")
        default = viewer or (int(answered) if answered else 1180000000000000100)
        presser = user_id if user_id is not None else default
        if viewer is not None and presser != viewer:
            raise InteractionRefused(
                f"message {stored['id']} is only visible to user {viewer}, not {presser}"
            )
        invoker = p.user(presser, username, global_name=username.title())
        channel_id = int(stored["channel_id"])
        guild = self.guilds.get(message_guild) if message_guild is not None else None
        if guild is None:
            channel = self._dm_channels.get(presser) or p.dm_channel(channel_id, invoker)
        else:
            if not permissions & p.VIEW_CHANNEL:
                raise InteractionRefused(
                    f"user {presser} cannot view channel {channel_id} (no VIEW_CHANNEL)"
                )
            channel = p.text_channel(
                channel_id,
                "general" if channel_id == guild.text_channel_id else f"ch-{channel_id}",
                guild_id=guild.id,
                parent_id=guild.category_id,
                permissions=permissions,
            )
        interaction_id = self.next_id()
        return p.interaction(
            interaction_id=interaction_id,
            interaction_type=p.INTERACTION_MESSAGE_COMPONENT,
            token=p.interaction_token(interaction_id),
            application_id=self.application_id,
            data=data,
            invoker=invoker,
            channel=channel,
            guild=guild,
            permissions=permissions,
            app_permissions=app_permissions,
            roles=roles,
            locale=locale,
            attachment_size_limit=attachment_size_limit,
            message=copy.deepcopy(stored),
        )

    @staticmethod
    def _select_values(component: Json, values: Sequence[str] | None) -> list[str]:
        if values is None:
            raise TypeError("a select needs `values`")
        chosen = [str(v) for v in values]
        offered = {o.get("value") for o in component.get("options") or []}
        unknown = [v for v in chosen if v not in offered]
        if unknown:
            raise InteractionRefused(f"{unknown} are not options of {component['custom_id']!r}")
        low, high = component.get("min_values", 1), component.get("max_values", 1)
        if not low <= len(chosen) <= high or len(set(chosen)) != len(chosen):
            raise InteractionRefused(
                f"{component['custom_id']!r} takes {low}..{high} distinct values, got {chosen}"
            )
        return chosen

    async def press(
        self,
        message: Json | int | str,
        custom_id: str,
        *,
        shard_id: int | None = None,
        **kwargs: Any,
    ) -> InteractionHandle:
        """Click a button on a message the bot posted: build the component interaction (see
        `component_interaction` for kwargs and refusals) and dispatch it."""
        payload = self.component_interaction(message, custom_id, **kwargs)
        return await self.dispatch(payload, shard_id=shard_id)

    async def select(
        self,
        message: Json | int | str,
        custom_id: str,
        values: Sequence[str],
        *,
        shard_id: int | None = None,
        **kwargs: Any,
    ) -> InteractionHandle:
        """Pick `values` in a string select on a message and dispatch the interaction."""
        payload = self.component_interaction(message, custom_id, values=values, **kwargs)
        return await self.dispatch(payload, shard_id=shard_id)

    # -- interactions: modals -------------------------------------------------------------

    def modal_submit_interaction(
        self,
        opened_by: InteractionHandle,
        values: Mapping[str, str | Sequence[str]],
        *,
        user_id: int | None = None,
    ) -> Json:
        """The MODAL_SUBMIT interaction for the modal `opened_by` answered with (see
        `InteractionHandle.submit_modal`). The payload is registered (not dispatched)."""
        opener = opened_by._state
        modal = opener.modal
        if modal is None or opener.response_type != 9:
            raise InteractionRefused(f"interaction {opener.id} showed no modal")
        if opener.modal_submitted:
            raise InteractionRefused(f"the modal of interaction {opener.id} was already submitted")
        source = opener.payload
        invoker = (source.get("member") or {}).get("user") or source.get("user") or {}
        if user_id is not None and str(user_id) != invoker.get("id"):
            raise InteractionRefused(
                f"only user {invoker.get('id')} sees the modal of interaction {opener.id}"
            )
        unknown = set(values) - {
            c["custom_id"]
            for c in p.walk_components(modal["components"])
            if isinstance(c.get("custom_id"), str)
        }
        if unknown:
            raise InteractionRefused(f"the modal has no inputs {sorted(unknown)}")

        def submitted(component: Json) -> Json:
            kind = component["type"]
            answer: Json = {"type": kind, "id": component["id"]}
            if kind == p.COMPONENT_TEXT_INPUT:
                answer["custom_id"] = component["custom_id"]
                answer["value"] = self._text_input_value(component, values)
            elif kind == p.COMPONENT_STRING_SELECT:
                answer["custom_id"] = component["custom_id"]
                picked = values.get(component["custom_id"])
                picked = [picked] if isinstance(picked, str) else list(picked or [])
                if component.get("required", True) and not picked:
                    raise InteractionRefused(f"{component['custom_id']!r} is required")
                answer["values"] = self._select_values(component, picked) if picked else []
            elif kind != p.COMPONENT_TEXT_DISPLAY:
                raise NotImplementedError(f"submitting modal component type {kind}")
            return answer

        components: list[Json] = []
        for top in modal["components"]:
            if top["type"] == p.COMPONENT_ACTION_ROW:
                components.append(
                    {
                        "type": p.COMPONENT_ACTION_ROW,
                        "id": top["id"],
                        "components": [submitted(c) for c in top["components"]],
                    }
                )
            elif top["type"] == p.COMPONENT_LABEL:
                components.append(
                    {
                        "type": p.COMPONENT_LABEL,
                        "id": top["id"],
                        "component": submitted(top["component"]),
                    }
                )
            else:
                components.append(submitted(top))
        interaction_id = self.next_id()
        payload: Json = {
            key: copy.deepcopy(value)
            for key, value in source.items()
            if key not in ("id", "type", "token", "data", "message")
        }
        payload.update(
            {
                "id": str(interaction_id),
                "type": p.INTERACTION_MODAL_SUBMIT,
                "token": p.interaction_token(interaction_id),
                "data": {"custom_id": modal["custom_id"], "components": components},
            }
        )
        if opener.source_message_id is not None:
            current = self.message(opener.source_message_id)
            if current is not None:
                payload["message"] = copy.deepcopy(current)
        handle = self.register(payload)
        handle._state.opener = opener
        handle._state.source_message_id = opener.source_message_id
        opener.modal_submitted = True
        return payload

    @staticmethod
    def _text_input_value(component: Json, values: Mapping[str, str | Sequence[str]]) -> str:
        custom_id = component["custom_id"]
        given = values.get(custom_id)
        if given is not None and not isinstance(given, str):
            raise TypeError(f"{custom_id!r} is a text input and takes a string")
        value = given if given is not None else str(component.get("value") or "")
        if component.get("style") == 1 and "\n" in value:
            raise InteractionRefused(f"{custom_id!r} is a single-line (SHORT) text input")
        if not value:
            if component.get("required", True):
                raise InteractionRefused(f"{custom_id!r} is required")
            return ""
        low = component.get("min_length") or 0
        high = component.get("max_length") or 4000
        if not low <= len(value) <= high:
            raise InteractionRefused(
                f"{custom_id!r} takes {low}..{high} characters, got {len(value)}"
            )
        return value

    # -- interactions: the callback -------------------------------------------------------

    async def _callback(self, record: RecordedRequest) -> tuple[int, Any]:
        state = self._interactions.get(record.params["token"])
        if state is None or str(state.id) != record.params["id"]:
            self._violation(f"{record.route}: unknown interaction id/token")
            raise _error(404, 10062, "Unknown interaction")
        if state.dispatched_at is not None and self.initial_response_timeout is not None:
            late = record.at - state.dispatched_at
            if late > self.initial_response_timeout:
                self._violation(
                    f"{record.route}: initial response {late:.2f}s after dispatch "
                    f"(Discord allows {self.initial_response_timeout}s)"
                )
                raise _error(404, 10062, "Unknown interaction")
        if state.response_type is not None:
            self._violation(f"{record.route}: interaction {state.id} acknowledged twice")
            raise _error(400, 40060, "Interaction has already been acknowledged.")
        body = record.json
        if not isinstance(body, dict) or not _is_int(body.get("type")):
            missing = Problem(("type",), "BASE_TYPE_REQUIRED", "This field is required")
            self._violation(f"{record.route}: {missing.describe()}")
            raise _form_error([missing])
        kind = int(body["type"])
        allowed = ALLOWED_CALLBACKS.get(state.type, frozenset())
        if kind not in allowed:
            self._reject_or_record(
                record,
                [
                    Problem(
                        ("type",),
                        "INTERACTION_CALLBACK_TYPE_INVALID",
                        f"callback type {kind} is not valid for interaction type {state.type} "
                        f"(allowed: {sorted(allowed)})",
                    )
                ],
            )
        data = body.get("data")
        problems: list[Problem] = []
        if kind == 5:
            flags = data.get("flags") if isinstance(data, dict) else None
            if flags not in (None, 0, p.MESSAGE_FLAG_EPHEMERAL):
                problems.append(
                    Problem(
                        ("data", "flags"),
                        "MESSAGE_FLAGS_INVALID",
                        f"type 5 only takes flag 64 (EPHEMERAL), got {flags!r}",
                    )
                )
        elif kind == 4:
            problems += check_message(data, loc=("data",), files=record.files)
            if message_is_empty(data if isinstance(data, dict) else {}, record.files):
                self._violation(f"{record.route}: Cannot send an empty message")
                raise _error(400, 50006, "Cannot send an empty message")
        elif kind == 8:
            problems += check_autocomplete_choices(data, state.focused_type)
        elif kind == 9:
            problems += check_modal(data)
        source = self._update_target(record, state, kind)
        if kind == 7 and source is not None:
            problems += check_message(
                data,
                loc=("data",),
                files=record.files,
                existing_attachment_ids=[a["id"] for a in source["attachments"]],
                existing_filenames=[a["filename"] for a in source["attachments"]],
                create=False,
                stored=source,
            )
        problems = self._schema_then_rules(
            CALLBACK_SCHEMAS.get(kind, "PongInteractionCallbackRequest"), body, problems
        )
        self._reject_or_record(record, problems)
        self._check_file_sizes(record, state.attachment_size_limit)

        state.response_type = kind
        resource: Json | None = None
        if kind in (6, 7) and source is not None:
            # For components, @original is the message the component is attached to.
            state.original = source
            state.ephemeral = bool(source["flags"] & p.MESSAGE_FLAG_EPHEMERAL)
            if kind == 7:
                self._apply_edit(
                    source, data if isinstance(data, dict) else {}, record.files, state.channel_id
                )
                resource = {"type": 7, "message": source}
        elif kind in (4, 5):
            message_body = data if isinstance(data, dict) else {}
            flags = int(message_body.get("flags") or 0)
            state.ephemeral = bool(flags & p.MESSAGE_FLAG_EPHEMERAL)
            state.loading = kind == 5
            kept = p.MESSAGE_FLAG_EPHEMERAL | (KEPT_FLAGS if kind == 4 else 0)
            state.original = self._interaction_message(
                state,
                message_body if kind == 4 else {},
                record.files if kind == 4 else [],
                flags=(flags & kept) | (p.MESSAGE_FLAG_LOADING if kind == 5 else 0),
            )
            if kind == 4:
                resource = {"type": 4, "message": state.original}
        elif kind == 8:
            state.choices = list(data.get("choices", [])) if isinstance(data, dict) else []
        elif kind == 9:
            modal = copy.deepcopy(data) if isinstance(data, dict) else None
            if modal is not None:
                p.assign_component_ids(modal["components"])
            state.modal = modal

        if record.query.get("with_response", "").lower() not in ("1", "true"):
            return 204, None
        interaction: Json = {"id": str(state.id), "type": state.type}
        if state.original is not None:
            interaction.update(
                {
                    "response_message_id": state.original["id"],
                    "response_message_loading": state.loading,
                    "response_message_ephemeral": state.ephemeral,
                    "channel_id": str(state.channel_id),
                }
            )
            if state.guild_id is not None:
                interaction["guild_id"] = str(state.guild_id)
        response: Json = {"interaction": interaction}
        if resource is not None:
            response["resource"] = resource
        return 200, response

    def _update_target(
        self, record: RecordedRequest, state: _Interaction, kind: int
    ) -> Json | None:
        """The message a type-6/7 callback acts on: the one the component is attached to."""
        if kind not in (6, 7):
            return None
        if state.source_message_id is None:
            if kind == 7:
                # A modal submitted from a slash command has no message to update.
                self._reject_or_record(
                    record,
                    [
                        Problem(
                            ("type",),
                            "INTERACTION_CALLBACK_TYPE_INVALID",
                            "UPDATE_MESSAGE needs a message: this interaction did not come "
                            "from a component",
                        )
                    ],
                )
            return None
        source = self.message(state.source_message_id)
        if source is None and kind == 7:
            self._violation(
                f"{record.route}: message {state.source_message_id} was deleted before the "
                "component interaction was answered"
            )
            raise _error(404, 10008, "Unknown Message")
        return source

    def _check_file_sizes(self, record: RecordedRequest, limit: int) -> None:
        for recorded in record.files:
            if len(recorded.data) > limit:
                self._violation(
                    f"{record.route}: {recorded.field} ({recorded.filename}) is "
                    f"{len(recorded.data)} bytes, over the {limit}-byte upload limit"
                )
                raise _error(413, 40005, "Request entity too large")

    def _interaction_metadata(self, state: _Interaction, *, followup: bool = False) -> Json:
        """`interaction_metadata` of a message answering `state` (one of the three
        *InteractionMetadataResponse shapes, by interaction type)."""
        invoker = state.payload.get("member", {}).get("user") or state.payload.get("user")
        metadata: Json = {
            "id": str(state.id),
            "type": state.type,
            "user": invoker,
            "authorizing_integration_owners": state.payload.get(
                "authorizing_integration_owners", {}
            ),
        }
        if followup and state.original is not None and state.response_type in (4, 5):
            # "ID of the original response message, present only on follow-up messages"
            metadata["original_response_message_id"] = state.original["id"]
        if state.type == p.INTERACTION_MESSAGE_COMPONENT and state.source_message_id:
            metadata["interacted_message_id"] = state.source_message_id
        data = state.payload.get("data") or {}
        if state.type == p.INTERACTION_APPLICATION_COMMAND and data.get("target_id"):
            if data.get("type") == p.COMMAND_MESSAGE:
                metadata["target_message_id"] = data["target_id"]
            elif data.get("type") == p.COMMAND_USER:
                users = (data.get("resolved") or {}).get("users") or {}
                if data["target_id"] in users:
                    metadata["target_user"] = users[data["target_id"]]
        if state.type == p.INTERACTION_MODAL_SUBMIT and state.opener is not None:
            metadata["triggering_interaction_metadata"] = self._interaction_metadata(state.opener)
        return metadata

    def _interaction_message(
        self,
        state: _Interaction,
        body: Json,
        files: Sequence[RecordedFile],
        *,
        flags: int,
        message_id: int | None = None,
    ) -> Json:
        invoker = state.payload.get("member", {}).get("user") or state.payload.get("user")
        metadata = self._interaction_metadata(state, followup=state.original is not None)
        data = state.payload.get("data") or {}
        # The deprecated `interaction` field is still sent, and discord.py still parses it.
        legacy: Json = {
            "id": str(state.id),
            "type": state.type,
            "name": data.get("name", ""),
            "user": invoker,
        }
        attachments = self._attachments_for(
            body, files, state.channel_id, [], ephemeral=bool(flags & 64)
        )
        message = p.message(
            message_id=message_id or self.next_id(),
            channel_id=state.channel_id,
            author=self._bot_author(),
            content=str(body.get("content") or ""),
            # CHAT_INPUT_COMMAND for slash commands, CONTEXT_MENU_COMMAND for user and
            # message commands; DEFAULT for component and modal replies.
            message_type=(
                (23 if data.get("type") in (p.COMMAND_USER, p.COMMAND_MESSAGE) else 20)
                if state.type == p.INTERACTION_APPLICATION_COMMAND
                else 0
            ),
            flags=flags,
            embeds=body.get("embeds") or [],
            attachments=attachments,
            components=p.message_components(
                body.get("components") or [], attachments=attachments, next_id=self.next_id
            ),
            tts=bool(body.get("tts", False)),
            guild_id=state.guild_id,
            webhook_id=self.application_id,
            application_id=self.application_id,
            interaction_metadata=metadata,
        )
        message["interaction"] = legacy
        return self._store_message(message)

    def _bot_author(self) -> Json:
        private = {"verified", "mfa_enabled", "email", "locale", "premium_type"}
        return {k: v for k, v in self.bot_user.items() if k not in private}

    def _attachments_for(
        self,
        body: Json,
        files: Sequence[RecordedFile],
        channel_id: int,
        existing: Sequence[Json],
        *,
        ephemeral: bool,
    ) -> list[Json]:
        by_index: dict[int, RecordedFile] = {}
        for recorded in files:
            match = _FILE_FIELD.match(recorded.field)
            if match is not None:
                by_index[int(match.group(1))] = recorded
        entries = body.get("attachments")
        if entries is None:
            new = [
                self._cdn_attachment(
                    channel_id=channel_id,
                    filename=f.filename or f"file{i}",
                    data=f.data,
                    ephemeral=ephemeral,
                )
                for i, f in sorted(by_index.items())
            ]
            return [*existing, *new]
        kept = {str(a["id"]): a for a in existing}
        result: list[Json] = []
        for entry in entries:
            ident = str(entry.get("id"))
            if ident in kept:
                result.append(kept[ident])
            elif ident.isdigit() and int(ident) in by_index:
                recorded = by_index[int(ident)]
                result.append(
                    self._cdn_attachment(
                        channel_id=channel_id,
                        filename=str(entry.get("filename") or recorded.filename or f"file{ident}"),
                        data=recorded.data,
                        description=entry.get("description"),
                        ephemeral=ephemeral,
                    )
                )
        return result

    # -- interactions: webhooks (followups and edits) -------------------------------------

    def _webhook_state(self, record: RecordedRequest) -> _Interaction:
        state = self._interactions.get(record.params["token"])
        if state is None or record.params["app"] != str(self.application_id):
            self._violation(f"{record.route}: unknown webhook (wrong application id or token)")
            raise _error(404, 10015, "Unknown Webhook")
        if state.expired:
            self._violation(f"{record.route}: interaction token used after it expired")
            raise _error(401, 50027, "Invalid Webhook Token")
        return state

    def _target_message(self, record: RecordedRequest, state: _Interaction) -> Json:
        message_id = record.params.get("message", "@original")
        if message_id == "@original":
            if state.original is None or state.original_deleted:
                self._violation(f"{record.route}: there is no original response (yet)")
                raise _error(404, 10008, "Unknown Message")
            return state.original
        found = state.followups.get(message_id)
        if found is None and state.original is not None and state.original["id"] == message_id:
            found = None if state.original_deleted else state.original
        if found is None:
            self._violation(
                f"{record.route}: message {message_id} is not a response to this interaction"
            )
            raise _error(404, 10008, "Unknown Message")
        return found

    async def _get_message(self, record: RecordedRequest) -> tuple[int, Any]:
        state = self._webhook_state(record)
        return 200, self._target_message(record, state)

    async def _delete_message(self, record: RecordedRequest) -> tuple[int, Any]:
        state = self._webhook_state(record)
        message = self._target_message(record, state)
        # For a component interaction answered with type 6/7, @original is the message the
        # component is on: deleting it deletes that message for everyone.
        self._forget_message(message["id"])
        return 204, None

    async def _edit_message(self, record: RecordedRequest) -> tuple[int, Any]:
        state = self._webhook_state(record)
        message = self._target_message(record, state)
        body = record.json if isinstance(record.json, dict) else {}
        problems = check_message(
            body,
            files=record.files,
            existing_attachment_ids=[a["id"] for a in message["attachments"]],
            existing_filenames=[a["filename"] for a in message["attachments"]],
            create=False,
            stored=message,
        )
        problems = self._schema_then_rules("IncomingWebhookUpdateRequestPartial", body, problems)
        flags = body.get("flags")
        if (
            _is_int(flags)
            and flags & p.MESSAGE_FLAG_EPHEMERAL
            and not message["flags"] & p.MESSAGE_FLAG_EPHEMERAL
        ):
            problems.append(
                Problem(
                    ("flags",),
                    "EPHEMERAL_TOO_LATE",
                    "an edit cannot make a public message ephemeral; it stays visible to everyone",
                    reject=False,
                )
            )
        self._reject_or_record(record, problems)
        self._check_file_sizes(record, state.attachment_size_limit)
        if message is state.original and state.loading and message_is_empty(body, record.files):
            # Resolving the "thinking" message with nothing in it is refused like a send.
            self._violation(f"{record.route}: Cannot send an empty message")
            raise _error(400, 50006, "Cannot send an empty message")
        self._apply_edit(message, body, record.files, state.channel_id)
        if message is state.original and state.loading:
            # Resolving the "thinking" message is its first real content, not an edit.
            state.loading = False
            message["flags"] &= ~p.MESSAGE_FLAG_LOADING
            message["edited_timestamp"] = None
        return 200, message

    def _apply_edit(
        self, message: Json, body: Json, files: Sequence[RecordedFile], channel_id: int
    ) -> None:
        for key in ("content", "embeds"):
            if key in body:
                default: Any = "" if key == "content" else []
                message[key] = body[key] if body[key] is not None else default
        if "attachments" in body or files:
            message["attachments"] = self._attachments_for(
                body,
                files,
                channel_id,
                message["attachments"],
                ephemeral=bool(message["flags"] & p.MESSAGE_FLAG_EPHEMERAL),
            )
        message["embeds"] = p.message_embeds(message["embeds"], message["attachments"])
        if "components" in body:
            message["components"] = p.message_components(
                body["components"] or [], attachments=message["attachments"], next_id=self.next_id
            )
        if _is_int(body.get("flags")):
            # SUPPRESS_EMBEDS can be set and unset; IS_COMPONENTS_V2 only set; the rest stays.
            sticky = p.MESSAGE_FLAG_EPHEMERAL | V2_FLAG
            message["flags"] = (
                (message["flags"] & ~p.MESSAGE_FLAG_SUPPRESS_EMBEDS)
                | (body["flags"] & (p.MESSAGE_FLAG_SUPPRESS_EMBEDS | V2_FLAG))
                | (message["flags"] & sticky)
            )
        message["edited_timestamp"] = p.iso_timestamp()

    async def _followup(self, record: RecordedRequest) -> tuple[int, Any]:
        state = self._webhook_state(record)
        if state.response_type is None or state.response_type == 8:
            self._violation(f"{record.route}: followup before the interaction was acknowledged")
            raise _error(404, 10015, "Unknown Webhook")
        if record.query.get("wait", "").lower() not in ("1", "true"):
            # discord.py always sends wait=1 for interaction followups; without it Discord
            # answers 204 and the bot cannot know the message id.
            self._violation(f"{record.route}: followup without ?wait=true")
        body = record.json if isinstance(record.json, dict) else {}
        problems = check_message(body, files=record.files)
        problems = self._schema_then_rules("IncomingWebhookRequestPartial", body, problems)
        flags = int(body.get("flags") or 0) if _is_int(body.get("flags")) else 0
        if state.loading and flags & p.MESSAGE_FLAG_EPHEMERAL and not state.ephemeral:
            problems.append(
                Problem(
                    ("flags",),
                    "EPHEMERAL_TOO_LATE",
                    "first followup after a public defer resolves the public 'thinking' "
                    "message: asking for ephemeral here shows it to everyone",
                    reject=False,
                )
            )
        self._reject_or_record(record, problems)
        if message_is_empty(body, record.files):
            self._violation(f"{record.route}: Cannot send an empty message")
            raise _error(400, 50006, "Cannot send an empty message")
        self._check_file_sizes(record, state.attachment_size_limit)

        if state.loading and state.original is not None and not state.original_deleted:
            # After a type-5 defer the first followup *is* the deferred message (C.2b).
            message = state.original
            self._apply_edit(message, body, record.files, state.channel_id)
            message["flags"] &= ~p.MESSAGE_FLAG_LOADING
            message["edited_timestamp"] = None
            state.loading = False
        else:
            message = self._interaction_message(
                state,
                body,
                record.files,
                flags=flags & (p.MESSAGE_FLAG_EPHEMERAL | KEPT_FLAGS),
            )
            state.followups[message["id"]] = message
        if record.query.get("wait", "").lower() not in ("1", "true"):
            return 204, None
        return 200, message

    # -- channel messages -----------------------------------------------------------------

    def _channel(self, channel_id: int) -> tuple[GuildSpec | None, bool]:
        for guild in self.guilds.values():
            if channel_id == guild.text_channel_id:
                return guild, True
        for channel in self._dm_channels.values():
            if int(channel["id"]) == channel_id:
                return None, True
        return None, False

    async def _create_dm(self, record: RecordedRequest) -> tuple[int, Any]:
        """Create DM: the same channel for the same recipient, as Discord answers."""
        body = record.json if isinstance(record.json, dict) else {}
        recipient = body.get("recipient_id")
        if recipient is None or not str(recipient).isdigit():
            self._violation(f"{record.route}: recipient_id missing or not a snowflake")
            raise _error(400, 50035, "Invalid Form Body")
        user_id = int(recipient)
        channel = self._dm_channels.get(user_id)
        if channel is None:
            known = self.owner if int(self.owner["id"]) == user_id else p.user(user_id, "someone")
            channel = p.dm_channel(self.next_id(), known)
            self._dm_channels[user_id] = channel
        return 200, channel

    def dm_messages(self, user_id: int) -> list[Json]:
        """Messages the bot sent to this user's DM channel."""
        channel = self._dm_channels.get(user_id)
        return [] if channel is None else self.channel_messages.get(int(channel["id"]), [])

    async def _channel_message(self, record: RecordedRequest) -> tuple[int, Any]:
        channel_id = int(record.params["channel"])
        guild, known = self._channel(channel_id)
        if not known:
            self._violation(f"{record.route}: unknown channel {channel_id}")
            raise _error(404, 10003, "Unknown Channel")
        body = record.json if isinstance(record.json, dict) else {}
        problems = check_message(body, files=record.files, ephemeral_allowed=False)
        problems = self._schema_then_rules("MessageCreateRequest", body, problems)
        self._reject_or_record(record, problems)
        if message_is_empty(body, record.files):
            self._violation(f"{record.route}: Cannot send an empty message")
            raise _error(400, 50006, "Cannot send an empty message")
        tier = guild.premium_tier if guild is not None else 0
        self._check_file_sizes(record, {2: 50, 3: 100}.get(tier, 10) * 1024 * 1024)
        attachments = self._attachments_for(body, record.files, channel_id, [], ephemeral=False)
        message = p.message(
            message_id=self.next_id(),
            channel_id=channel_id,
            author=self._bot_author(),
            content=str(body.get("content") or ""),
            flags=int(body.get("flags") or 0) & KEPT_FLAGS,
            embeds=body.get("embeds") or [],
            attachments=attachments,
            components=p.message_components(
                body.get("components") or [], attachments=attachments, next_id=self.next_id
            ),
            tts=bool(body.get("tts", False)),
            guild_id=None if guild is None else guild.id,
        )
        self.channel_messages.setdefault(channel_id, []).append(self._store_message(message))
        return 200, message

    def _channel_target(self, record: RecordedRequest, *, needs: int) -> tuple[Json, bool]:
        """The message of a /channels/{channel}/messages/{message} call, after Discord's
        checks; returns it and whether the channel is a DM."""
        channel_id = int(record.params["channel"])
        guild, known = self._channel(channel_id)
        message = self.message(record.params["message"])
        if not known and message is not None and int(message["channel_id"]) == channel_id:
            known = True
            guild = self.guilds.get(int(message["guild_id"])) if message.get("guild_id") else None
        if not known:
            self._violation(f"{record.route}: unknown channel {channel_id}")
            raise _error(404, 10003, "Unknown Channel")
        if guild is not None:
            granted = self.bot_permissions_in(channel_id)
            if not granted & p.ADMINISTRATOR and needs & ~granted:
                self._violation(
                    f"{record.route}: the bot lacks permissions {needs & ~granted} in channel "
                    f"{channel_id}"
                )
                raise _error(403, 50001, "Missing Access")
        if (
            message is None
            or int(message["channel_id"]) != channel_id
            # Ephemeral messages exist only for their user: no channel endpoint finds them.
            or message["flags"] & p.MESSAGE_FLAG_EPHEMERAL
        ):
            hint = (
                " (an ephemeral message: use the interaction webhook, e.g. "
                "interaction.edit_original_response / delete_original_response)"
                if message is not None and message["flags"] & p.MESSAGE_FLAG_EPHEMERAL
                else ""
            )
            self._violation(
                f"{record.route}: message {record.params['message']} is not in channel "
                f"{channel_id}{hint}"
            )
            raise _error(404, 10008, "Unknown Message")
        return message, guild is None

    def _by_the_bot(self, message: Json) -> bool:
        return str(message["author"]["id"]) == str(self.bot_user_id)

    async def _get_channel_message(self, record: RecordedRequest) -> tuple[int, Any]:
        needs = p.VIEW_CHANNEL | p.READ_MESSAGE_HISTORY
        message, _ = self._channel_target(record, needs=needs)
        return 200, message

    async def _edit_channel_message(self, record: RecordedRequest) -> tuple[int, Any]:
        message, _ = self._channel_target(record, needs=p.VIEW_CHANNEL)
        body = record.json if isinstance(record.json, dict) else {}
        if not self._by_the_bot(message):
            # "content, embeds, flags and components can be edited by the original message
            # author. Other users can only edit flags" (with MANAGE_MESSAGES).
            self._violation(f"{record.route}: message {message['id']} was written by someone else")
            raise _error(403, 50005, "Cannot edit a message authored by another user")
        problems = check_message(
            body,
            files=record.files,
            existing_attachment_ids=[a["id"] for a in message["attachments"]],
            existing_filenames=[a["filename"] for a in message["attachments"]],
            create=False,
            ephemeral_allowed=False,
            stored=message,
        )
        # Edit Message takes the same fields as Edit Webhook Message (MessageEditRequestPartial
        # is not among the copied schemas).
        problems = self._schema_then_rules("IncomingWebhookUpdateRequestPartial", body, problems)
        self._reject_or_record(record, problems)
        guild = self.guilds.get(int(message["guild_id"])) if message.get("guild_id") else None
        tier = guild.premium_tier if guild is not None else 0
        self._check_file_sizes(record, {2: 50, 3: 100}.get(tier, 10) * 1024 * 1024)
        self._apply_edit(message, body, record.files, int(message["channel_id"]))
        return 200, message

    async def _delete_channel_message(self, record: RecordedRequest) -> tuple[int, Any]:
        message, dm = self._channel_target(record, needs=p.VIEW_CHANNEL)
        if not self._by_the_bot(message):
            # "If operating on a guild channel and trying to delete a message that was not
            # sent by the current user, this endpoint requires the MANAGE_MESSAGES permission."
            if dm:
                self._violation(f"{record.route}: deleting someone else's message in a DM")
                raise _error(403, 50003, "Cannot execute action on a DM channel")
            granted = self.bot_permissions_in(int(message["channel_id"]))
            if not granted & (p.MANAGE_MESSAGES | p.ADMINISTRATOR):
                self._violation(
                    f"{record.route}: deleting another user's message needs MANAGE_MESSAGES"
                )
                raise _error(403, 50013, "Missing Permissions")
        self._forget_message(message["id"])
        return 204, None

    # -- gateway --------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoclose=True, max_msg_size=0)
        await ws.prepare(request)
        compress = request.query.get("compress")
        conn = _GatewayConnection(ws, compress, self.zlib_split)
        self._connections.add(conn)
        try:
            if request.query.get("v") != "10":
                self._violation(f"gateway: connected with v={request.query.get('v')!r}, not 10")
                await self._close(conn, 4012)
                return ws
            if request.query.get("encoding", "json") != "json":
                self._violation("gateway: only encoding=json is supported by the fake")
                await self._close(conn, 4002)
                return ws
            if compress not in (None, "zlib-stream", "zstd-stream") or (
                compress == "zstd-stream" and zstandard is None
            ):
                self._violation(f"gateway: unsupported compress={compress!r}")
                await self._close(conn, 4000)
                return ws
            await self._send(
                conn,
                {
                    "t": None,
                    "s": None,
                    "op": 10,
                    "d": {
                        "heartbeat_interval": self.heartbeat_interval,
                        "_trace": ['["gateway-prd-fake",{"micros":0}]'],
                    },
                },
            )
            async for msg in ws:
                if msg.type is WSMsgType.TEXT:
                    await self._gateway_receive(conn, msg.data)
                elif msg.type is WSMsgType.BINARY:
                    self._violation("gateway: the bot sent a binary frame")
                    await self._close(conn, 4002)
                if ws.closed:
                    break
        finally:
            self._connections.discard(conn)
            if conn.session is not None and conn.session.conn is conn:
                conn.session.conn = None
        return ws

    async def _close(self, conn: _GatewayConnection, code: int) -> None:
        reason = GATEWAY_CLOSE_REASONS.get(code, "")
        await conn.ws.close(code=code, message=reason.encode())

    async def _send(self, conn: _GatewayConnection, payload: Json) -> None:
        self.gateway_frames.append(GatewayFrame("out", conn.shard_id, payload, time.monotonic()))
        await conn.send(payload)

    async def _gateway_receive(self, conn: _GatewayConnection, text: str) -> None:
        now = time.monotonic()
        conn.received = [t for t in conn.received if now - t < 60] + [now]
        if len(text.encode()) > MAX_GATEWAY_PAYLOAD:
            self._violation(f"gateway: payload of {len(text.encode())} bytes (limit 4096)")
            await self._close(conn, 4002)
            return
        try:
            payload = json.loads(text)
        except ValueError:
            self._violation("gateway: undecodable payload")
            await self._close(conn, 4002)
            return
        self.gateway_frames.append(GatewayFrame("in", conn.shard_id, payload, now))
        if len(conn.received) > GATEWAY_SEND_LIMIT:
            self._violation("gateway: more than 120 payloads in 60 s")
            await self._close(conn, 4008)
            return
        op = payload.get("op") if isinstance(payload, dict) else None
        data = payload.get("d") if isinstance(payload, dict) else None
        if op == 1:
            await self._send(conn, {"t": None, "s": None, "op": 11, "d": None})
        elif op == 2:
            await self._identify(conn, data if isinstance(data, dict) else {})
        elif op == 6:
            await self._resume(conn, data if isinstance(data, dict) else {})
        elif op in (3, 4, 8):
            if conn.session is None:
                await self._close(conn, 4003)
            elif op == 8 and isinstance(data, dict):
                await self._members_chunk(conn, data)
        else:
            self._violation(f"gateway: unknown opcode {op!r}")
            await self._close(conn, 4001)

    def _token_ok(self, token: Any) -> bool:
        return isinstance(token, str) and token.removeprefix("Bot ") == self.token

    async def _identify(self, conn: _GatewayConnection, data: Json) -> None:
        if conn.session is not None:
            self._violation("gateway: IDENTIFY sent twice on one connection")
            await self._close(conn, 4005)
            return
        if not self._token_ok(data.get("token")):
            await self._close(conn, 4004)
            return
        shard = data.get("shard", [0, 1])
        if (
            not isinstance(shard, list)
            or len(shard) != 2
            or not all(_is_int(x) for x in shard)
            or not 0 <= shard[0] < shard[1]
        ):
            self._violation(f"gateway: invalid shard {shard!r}")
            await self._close(conn, 4010)
            return
        intents = data.get("intents")
        if not _is_int(intents) or intents < 0:
            self._violation(f"gateway: invalid intents {intents!r}")
            await self._close(conn, 4013)
            return
        if intents & PRIVILEGED_INTENTS & ~self.privileged_intents:
            await self._close(conn, 4014)
            return
        large = data.get("large_threshold")
        if large is not None and (not _is_int(large) or not 50 <= large <= 250):
            self._violation(f"gateway: large_threshold {large!r} outside 50..250")
        shard_id, count = int(shard[0]), int(shard[1])
        session = _Session(session_id=uuid.uuid4().hex, shard=(shard_id, count), conn=conn)
        self._sessions[session.session_id] = session
        self._shard_sessions[shard_id] = session
        conn.session = session
        guild_ids = [g for g in self.guilds if (g >> 22) % count == shard_id]
        await self._dispatch_on(
            session,
            "READY",
            p.ready(
                bot_user=self.bot_user,
                guild_ids=guild_ids,
                session_id=session.session_id,
                resume_gateway_url=self.gateway_url,
                shard=(shard_id, count),
                application_id=self.application_id,
                application_flags=self.application_flags,
            ),
        )
        for guild_id in guild_ids:
            await self._dispatch_on(
                session,
                "GUILD_CREATE",
                p.guild_create(
                    self.guilds[guild_id],
                    bot_user=self.bot_user,
                    application_id=self.application_id,
                ),
            )
        self._identified_event(shard_id).set()
        if all(self._identified_event(s).is_set() for s in range(self.shard_count)):
            self.ready_event.set()

    async def _resume(self, conn: _GatewayConnection, data: Json) -> None:
        session = self._sessions.get(str(data.get("session_id")))
        if session is None or not self._token_ok(data.get("token")):
            # Not resumable: the client must IDENTIFY again.
            await self._send(conn, {"t": None, "s": None, "op": 9, "d": False})
            return
        seq = data.get("seq")
        if not _is_int(seq) or seq > session.seq:
            await self._close(conn, 4007)
            return
        session.conn = conn
        conn.session = session
        self._shard_sessions[session.shard[0]] = session
        for payload in [x for x in session.sent if x["s"] > seq]:
            await self._send(conn, payload)
        await self._dispatch_on(session, "RESUMED", {"_trace": ['["gateway-prd-fake",{}]']})
        self._identified_event(session.shard[0]).set()

    async def _members_chunk(self, conn: _GatewayConnection, data: Json) -> None:
        assert conn.session is not None
        guild_id = int(data.get("guild_id", 0))
        guild = self.guilds.get(guild_id)
        members = (
            []
            if guild is None
            else p.guild_create(guild, bot_user=self.bot_user, application_id=self.application_id)[
                "members"
            ]
        )
        chunk: Json = {
            "guild_id": str(guild_id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await self._dispatch_on(conn.session, "GUILD_MEMBERS_CHUNK", chunk)

    async def _dispatch_on(self, session: _Session, event: str, data: Json) -> None:
        session.seq += 1
        payload = {"t": event, "s": session.seq, "op": 0, "d": data}
        session.sent.append(payload)
        if session.conn is not None:
            await self._send(session.conn, payload)

    async def dispatch_event(self, event: str, data: Json, *, shard_id: int = 0) -> None:
        """Send any gateway dispatch (GUILD_CREATE, GUILD_DELETE, ...) on a shard's session."""
        session = self._shard_sessions.get(shard_id)
        if session is None:
            raise RuntimeError(f"shard {shard_id} has no gateway session yet")
        await self._dispatch_on(session, event, data)

    async def send_reconnect(self, shard_id: int = 0) -> None:
        """Op 7: ask the shard to reconnect and RESUME (as Discord does before maintenance)."""
        session = self._shard_sessions[shard_id]
        self._identified_event(shard_id).clear()
        if session.conn is not None:
            await self._send(session.conn, {"t": None, "s": None, "op": 7, "d": None})

    async def invalidate_session(self, shard_id: int = 0, *, resumable: bool = False) -> None:
        """Op 9: the session is gone; `resumable=False` forces a fresh IDENTIFY."""
        session = self._shard_sessions[shard_id]
        self._identified_event(shard_id).clear()
        if not resumable:
            self._sessions.pop(session.session_id, None)
        if session.conn is not None:
            await self._send(session.conn, {"t": None, "s": None, "op": 9, "d": resumable})

    async def close_gateway(self, shard_id: int = 0, code: int = 4000) -> None:
        """Drop a shard's socket with a close code, as a network blip or Discord would."""
        session = self._shard_sessions[shard_id]
        self._identified_event(shard_id).clear()
        if session.conn is not None:
            await self._close(session.conn, code)

    @property
    def connected_shards(self) -> dict[int, int]:
        """shard id -> number of open sockets identified (or resumed) as that shard."""
        counts: dict[int, int] = {}
        for conn in self._connections:
            if conn.shard_id is not None and not conn.ws.closed:
                counts[conn.shard_id] = counts.get(conn.shard_id, 0) + 1
        return counts
