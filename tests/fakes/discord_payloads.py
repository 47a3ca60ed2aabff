"""Builders for Discord API v10 payloads, shaped like what Discord really sends.

Every builder returns plain JSON-ready dicts (snowflakes as strings, permissions as strings)
with the full set of keys Discord sends, because discord.py reads many of them with `[]`
and a payload that is merely "enough for today's code" hides KeyErrors until production.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import mimetypes
import secrets
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

Json = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000
DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024  # 10 MiB, Discord's default upload limit

# Permission bits used below (https://discord.com/developers/docs/topics/permissions).
CREATE_INSTANT_INVITE = 1 << 0
KICK_MEMBERS = 1 << 1
BAN_MEMBERS = 1 << 2
ADMINISTRATOR = 1 << 3
MANAGE_CHANNELS = 1 << 4
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
MENTION_EVERYONE = 1 << 17
USE_EXTERNAL_EMOJIS = 1 << 18
CONNECT = 1 << 20
SPEAK = 1 << 21
CHANGE_NICKNAME = 1 << 26
MANAGE_ROLES = 1 << 28
USE_APPLICATION_COMMANDS = 1 << 31
SEND_MESSAGES_IN_THREADS = 1 << 38
USE_EXTERNAL_APPS = 1 << 50

# What an ordinary member of a server typically has (roughly Discord's @everyone default).
MEMBER_PERMISSIONS = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | MENTION_EVERYONE
    | USE_EXTERNAL_EMOJIS
    | CONNECT
    | SPEAK
    | CHANGE_NICKNAME
    | USE_APPLICATION_COMMANDS
    | SEND_MESSAGES_IN_THREADS
    | USE_EXTERNAL_APPS
)
# A moderator who may configure the bot: the bot treats MANAGE_GUILD as "admin".
MANAGER_PERMISSIONS = MEMBER_PERMISSIONS | MANAGE_GUILD | MANAGE_MESSAGES | MANAGE_CHANNELS
# Discord resolves ADMINISTRATOR to every permission bit in interaction payloads.
ALL_PERMISSIONS = (1 << 51) - 1
ADMIN_PERMISSIONS = ALL_PERMISSIONS
# What a bot invited with a sensible scope gets in a channel.
BOT_PERMISSIONS = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | ADD_REACTIONS
    | USE_EXTERNAL_EMOJIS
    | USE_APPLICATION_COMMANDS
    | SEND_MESSAGES_IN_THREADS
)

# Interaction and option types (https://discord.com/developers/docs/interactions/).
INTERACTION_PING = 1
INTERACTION_APPLICATION_COMMAND = 2
INTERACTION_MESSAGE_COMPONENT = 3
INTERACTION_AUTOCOMPLETE = 4
INTERACTION_MODAL_SUBMIT = 5

# Application command types.
COMMAND_CHAT_INPUT = 1
COMMAND_USER = 2
COMMAND_MESSAGE = 3
COMMAND_PRIMARY_ENTRY_POINT = 4

OPTION_SUB_COMMAND = 1
OPTION_SUB_COMMAND_GROUP = 2
OPTION_STRING = 3
OPTION_INTEGER = 4
OPTION_BOOLEAN = 5
OPTION_USER = 6
OPTION_CHANNEL = 7
OPTION_ROLE = 8
OPTION_MENTIONABLE = 9
OPTION_NUMBER = 10
OPTION_ATTACHMENT = 11

CONTEXT_GUILD = 0
CONTEXT_BOT_DM = 1
CONTEXT_PRIVATE_CHANNEL = 2

MESSAGE_FLAG_SUPPRESS_EMBEDS = 1 << 2
MESSAGE_FLAG_EPHEMERAL = 1 << 6
MESSAGE_FLAG_LOADING = 1 << 7
MESSAGE_FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
# "Once a message has been sent with this flag, it can't be removed from that message."
# (https://discord.com/developers/docs/resources/message#message-object-message-flags)
MESSAGE_FLAG_COMPONENTS_V2 = 1 << 15

# Component types (https://discord.com/developers/docs/components/reference#component-object).
COMPONENT_ACTION_ROW = 1
COMPONENT_BUTTON = 2
COMPONENT_STRING_SELECT = 3
COMPONENT_TEXT_INPUT = 4
COMPONENT_USER_SELECT = 5
COMPONENT_ROLE_SELECT = 6
COMPONENT_MENTIONABLE_SELECT = 7
COMPONENT_CHANNEL_SELECT = 8
COMPONENT_SECTION = 9
COMPONENT_TEXT_DISPLAY = 10
COMPONENT_THUMBNAIL = 11
COMPONENT_MEDIA_GALLERY = 12
COMPONENT_FILE = 13
COMPONENT_SEPARATOR = 14
COMPONENT_CONTAINER = 17
COMPONENT_LABEL = 18
COMPONENT_FILE_UPLOAD = 19
COMPONENT_RADIO_GROUP = 21
COMPONENT_CHECKBOX_GROUP = 22
COMPONENT_CHECKBOX = 23
SELECT_COMPONENT_TYPES = frozenset(
    {
        COMPONENT_STRING_SELECT,
        COMPONENT_USER_SELECT,
        COMPONENT_ROLE_SELECT,
        COMPONENT_MENTIONABLE_SELECT,
        COMPONENT_CHANNEL_SELECT,
    }
)

BUTTON_PRIMARY = 1
BUTTON_SECONDARY = 2
BUTTON_SUCCESS = 3
BUTTON_DANGER = 4
BUTTON_LINK = 5
BUTTON_PREMIUM = 6


def snowflake_at(ts: float, *, worker: int = 1, process: int = 0, increment: int = 0) -> int:
    """A snowflake for the wall-clock time `ts` (seconds since the Unix epoch)."""
    ms = int(ts * 1000) - DISCORD_EPOCH_MS
    return (ms << 22) | ((worker & 0x1F) << 17) | ((process & 0x1F) << 12) | (increment & 0xFFF)


def snowflake_time(snowflake: int) -> float:
    return ((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000


class Snowflakes:
    """Hands out strictly increasing snowflakes that carry the current time, as Discord's do."""

    def __init__(self, *, worker: int = 1) -> None:
        self._worker = worker
        self._last = 0

    def __call__(self) -> int:
        candidate = snowflake_at(time.time(), worker=self._worker)
        # Several ids in one millisecond must still differ and stay ordered.
        self._last = max(candidate, self._last + 1)
        return self._last


def guild_id_for_shard(shard_id: int, shard_count: int, *, start: int | None = None) -> int:
    """A plausible guild id that Discord would route to `shard_id` of `shard_count`."""
    base = start if start is not None else snowflake_at(1_600_000_000)
    candidate = base
    while (candidate >> 22) % shard_count != shard_id:
        candidate += 1 << 22
    return candidate


def iso_timestamp(ts: float | None = None) -> str:
    """Discord's timestamp format: ISO 8601 with microseconds and an explicit +00:00 offset."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    return moment.isoformat(timespec="microseconds")


def interaction_token(interaction_id: int) -> str:
    """An opaque token shaped like Discord's (long, URL-safe base64, prefixed by the kind)."""
    tail = base64.urlsafe_b64encode(
        f"{interaction_id}:".encode() + secrets.token_bytes(96)
    ).decode()
    return "aW50ZXJhY3Rpb246" + tail.rstrip("=")


# ---------------------------------------------------------------------------------------------
# Users, members, roles, channels, guilds
# ---------------------------------------------------------------------------------------------


def user(
    user_id: int,
    username: str,
    *,
    bot: bool = False,
    global_name: str | None = None,
    discriminator: str = "0",
    avatar: str | None = None,
) -> Json:
    payload: Json = {
        "id": str(user_id),
        "username": username,
        "avatar": avatar,
        "discriminator": discriminator,
        "public_flags": 0,
        "flags": 0,
        "banner": None,
        "accent_color": None,
        "global_name": global_name,
        "avatar_decoration_data": None,
        "collectibles": None,
        "display_name_styles": None,
        "banner_color": None,
        "clan": None,
        "primary_guild": None,
    }
    if bot:
        payload["bot"] = True
    return payload


def bot_self_user(user_id: int, username: str, *, discriminator: str = "4821") -> Json:
    """The bot's own user as `GET /users/@me` and READY return it (bots keep discriminators)."""
    payload = user(user_id, username, bot=True, discriminator=discriminator)
    payload.update(
        {
            "verified": True,
            "mfa_enabled": False,
            "email": None,
            "locale": "en-US",
            "premium_type": 0,
        }
    )
    return payload


def role(
    role_id: int,
    name: str,
    *,
    permissions: int,
    position: int = 0,
    managed: bool = False,
    bot_id: int | None = None,
    color: int = 0,
) -> Json:
    payload: Json = {
        "id": str(role_id),
        "name": name,
        "description": None,
        "permissions": str(permissions),
        "position": position,
        "color": color,
        "colors": {"primary_color": color, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "managed": managed,
        "mentionable": False,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }
    if bot_id is not None:
        payload["tags"] = {"bot_id": str(bot_id)}
    return payload


def text_channel(
    channel_id: int,
    name: str = "general",
    *,
    guild_id: int | None = None,
    position: int = 0,
    parent_id: int | None = None,
    permissions: int | None = None,
    topic: str | None = None,
    nsfw: bool = False,
) -> Json:
    """A guild text channel. `guild_id`/`permissions` appear only where Discord includes them.

    GUILD_CREATE omits `guild_id` on its channels; interaction payloads add `guild_id` and the
    invoking user's computed `permissions`.
    """
    payload: Json = {
        "id": str(channel_id),
        "type": 0,
        "name": name,
        "position": position,
        "parent_id": None if parent_id is None else str(parent_id),
        "permission_overwrites": [],
        "topic": topic,
        "nsfw": nsfw,
        "rate_limit_per_user": 0,
        "last_message_id": None,
        "flags": 0,
        "icon_emoji": None,
        "theme_color": None,
    }
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
    if permissions is not None:
        payload["permissions"] = str(permissions)
    return payload


def category_channel(channel_id: int, name: str = "Text Channels", *, position: int = 0) -> Json:
    return {
        "id": str(channel_id),
        "type": 4,
        "name": name,
        "position": position,
        "parent_id": None,
        "permission_overwrites": [],
        "flags": 0,
    }


def dm_channel(channel_id: int, recipient: Json) -> Json:
    return {
        "id": str(channel_id),
        "type": 1,
        "last_message_id": None,
        "flags": 0,
        "recipients": [recipient],
        "recipient_flags": 0,
    }


def member(
    member_user: Json,
    *,
    roles: Iterable[int] = (),
    joined_at: str | None = None,
    nick: str | None = None,
    permissions: int | None = None,
) -> Json:
    """A guild member. `permissions` is only present on interaction members (computed perms)."""
    payload: Json = {
        "user": member_user,
        "nick": nick,
        "avatar": None,
        "banner": None,
        "roles": [str(r) for r in roles],
        "joined_at": joined_at or iso_timestamp(1_650_000_000),
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
        "unusual_dm_activity_until": None,
        "avatar_decoration_data": None,
        "collectibles": None,
    }
    if permissions is not None:
        payload["permissions"] = str(permissions)
    return payload


@dataclass(frozen=True)
class GuildSpec:
    """The stable ids of one fake guild, derived from its id so tests can predict them."""

    id: int
    name: str
    owner_id: int
    text_channel_id: int
    category_id: int
    bot_role_id: int
    premium_tier: int = 0
    locale: str = "en-US"
    member_role_ids: tuple[int, ...] = ()
    """Plain roles the guild has (in GUILD_CREATE) for tests to give members."""
    nsfw_channel_id: int | None = None
    """An age-restricted text channel of the guild."""

    @classmethod
    def for_id(cls, guild_id: int, *, index: int = 0) -> GuildSpec:
        return cls(
            id=guild_id,
            name=f"Fake Guild {index + 1}",
            owner_id=guild_id + 7,
            text_channel_id=guild_id + 1,
            category_id=guild_id + 2,
            bot_role_id=guild_id + 3,
            member_role_ids=(guild_id + 10, guild_id + 11, guild_id + 12),
            nsfw_channel_id=guild_id + 4,
        )


def guild_create(spec: GuildSpec, *, bot_user: Json, application_id: int) -> Json:
    """A GUILD_CREATE payload for a guild the bot is in (no GUILD_MEMBERS intent assumed).

    Without the privileged members intent Discord only includes the bot itself (and members
    in voice) in `members`, while `member_count` is the real count.
    """
    joined = iso_timestamp(1_700_000_000)
    everyone = role(spec.id, "@everyone", permissions=MEMBER_PERMISSIONS, position=0)
    bot_role = role(
        spec.bot_role_id,
        bot_user["username"],
        permissions=BOT_PERMISSIONS,
        position=1,
        managed=True,
        bot_id=int(bot_user["id"]),
    )
    bot_member = member(
        {k: v for k, v in bot_user.items() if k not in {"verified", "mfa_enabled", "email"}},
        roles=[spec.bot_role_id],
        joined_at=joined,
    )
    return {
        "id": str(spec.id),
        "name": spec.name,
        "icon": None,
        "icon_hash": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(spec.owner_id),
        "region": "deprecated",
        "afk_channel_id": None,
        "afk_timeout": 300,
        "widget_enabled": False,
        "widget_channel_id": None,
        "verification_level": 1,
        "default_message_notifications": 1,
        "explicit_content_filter": 2,
        "roles": [
            everyone,
            bot_role,
            *(
                role(role_id, f"role-{index + 1}", permissions=0, position=2 + index)
                for index, role_id in enumerate(spec.member_role_ids)
            ),
        ],
        "emojis": [],
        "stickers": [],
        "features": [],
        "mfa_level": 0,
        "application_id": None,
        "system_channel_id": str(spec.text_channel_id),
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "max_presences": None,
        "max_members": 500000,
        "max_video_channel_users": 25,
        "max_stage_video_channel_users": 50,
        "vanity_url_code": None,
        "premium_tier": spec.premium_tier,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": spec.locale,
        "nsfw_level": 0,
        "nsfw": False,
        "incidents_data": None,
        "inventory_settings": None,
        "hub_type": None,
        "latest_onboarding_question_id": None,
        "home_header": None,
        "version": 1_700_000_000_000,
        "lazy": True,
        # GUILD_CREATE-only fields.
        "joined_at": joined,
        "large": False,
        "unavailable": False,
        "member_count": 42,
        "voice_states": [],
        "members": [bot_member],
        "channels": [
            category_channel(spec.category_id, position=0),
            text_channel(spec.text_channel_id, parent_id=spec.category_id, position=0),
            *(
                [
                    text_channel(
                        spec.nsfw_channel_id,
                        "after-dark",
                        parent_id=spec.category_id,
                        position=1,
                        nsfw=True,
                    )
                ]
                if spec.nsfw_channel_id
                else []
            ),
        ],
        "threads": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "embedded_activities": [],
        "activity_instances": [],
        "application_command_counts": {"1": 0, "2": 0, "3": 0},
    }


def ready(
    *,
    bot_user: Json,
    guild_ids: Sequence[int],
    session_id: str,
    resume_gateway_url: str,
    shard: tuple[int, int],
    application_id: int,
    application_flags: int,
) -> Json:
    return {
        "v": 10,
        "user_settings": {},
        "user": bot_user,
        "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids],
        "session_id": session_id,
        "session_type": "normal",
        "resume_gateway_url": resume_gateway_url,
        "shard": list(shard),
        "application": {"id": str(application_id), "flags": application_flags},
        "relationships": [],
        "private_channels": [],
        "presences": [],
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": ["rotterdam", "frankfurt", "london", "madrid", "milan"],
        "auth": {},
        "_trace": ['["gateway-prd-fake",{"micros":0,"calls":[]}]'],
    }


def application(
    *,
    application_id: int,
    name: str,
    bot_user: Json,
    owner: Json,
    flags: int,
) -> Json:
    """`GET /oauth2/applications/@me` for a bot that receives interactions over the gateway."""
    bot = {k: v for k, v in bot_user.items() if k not in {"verified", "mfa_enabled", "email"}}
    return {
        "id": str(application_id),
        "name": name,
        "icon": None,
        "description": "Generates images from prompts.",
        "summary": "",
        "type": None,
        "is_monetized": False,
        "is_verified": False,
        "is_discoverable": False,
        "bot_public": True,
        "bot_require_code_grant": False,
        "verify_key": hashlib.sha256(str(application_id).encode()).hexdigest(),
        "flags": flags,
        "flags_new": str(flags),
        "hook": True,
        "storefront_available": False,
        "redirect_uris": [],
        # Must stay null: with an endpoint URL Discord stops sending INTERACTION_CREATE.
        "interactions_endpoint_url": None,
        "role_connections_verification_url": None,
        "event_webhooks_url": None,
        "event_webhooks_status": 1,
        "event_webhooks_types": [],
        "owner": owner,
        "team": None,
        "bot": bot,
        "approximate_guild_count": 1,
        "approximate_user_install_count": 0,
        "approximate_user_authorization_count": 0,
        "explicit_content_filter": 0,
        "integration_types_config": {
            "0": {
                "oauth2_install_params": {
                    "scopes": ["bot", "applications.commands"],
                    "permissions": str(BOT_PERMISSIONS),
                }
            },
        },
        "install_params": {
            "scopes": ["bot", "applications.commands"],
            "permissions": str(BOT_PERMISSIONS),
        },
        "eligible_oauth2_scopes": ["bot", "applications.commands"],
        "tags": [],
        "interactions_event_types": [],
        "interactions_version": 1,
        "internal_guild_restriction": 1,
        "rpc_application_state": 0,
        "store_application_state": 1,
        "verification_state": 1,
        "creator_monetization_state": 1,
        "monetization_state": 1,
        "discoverability_state": 1,
        "discovery_eligibility_flags": 0,
    }


# ---------------------------------------------------------------------------------------------
# Messages and attachments
# ---------------------------------------------------------------------------------------------


def guess_content_type(filename: str) -> str | None:
    guessed, _ = mimetypes.guess_type(filename)
    return guessed


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width/height from a PNG, GIF, WebP or JPEG header (Discord reports them for images)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        chunk = data[12:16]
        if chunk == b"VP8X":
            w = int.from_bytes(data[24:27], "little") + 1
            h = int.from_bytes(data[27:30], "little") + 1
            return w, h
        if chunk == b"VP8 " and len(data) >= 30:
            return (
                int.from_bytes(data[26:28], "little") & 0x3FFF,
                int.from_bytes(data[28:30], "little") & 0x3FFF,
            )
        if chunk == b"VP8L" and len(data) >= 25:
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            length = int.from_bytes(data[i + 2 : i + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2):
                return int.from_bytes(data[i + 7 : i + 9], "big"), int.from_bytes(
                    data[i + 5 : i + 7], "big"
                )
            i += 2 + length
    return None


def attachment(
    *,
    attachment_id: int,
    filename: str,
    data: bytes,
    cdn_base: str,
    channel_id: int,
    description: str | None = None,
    content_type: str | None = None,
    ephemeral: bool = False,
) -> Json:
    """An attachment as Discord returns it; the URLs carry the signed-URL query Discord adds."""
    expires = int(time.time()) + 24 * 3600
    signature = hashlib.sha256(f"{attachment_id}:{expires}".encode()).hexdigest()
    query = f"?ex={expires:x}&is={expires - 24 * 3600:x}&hm={signature}&"
    path = f"/attachments/{channel_id}/{attachment_id}/{filename}"
    payload: Json = {
        "id": str(attachment_id),
        "filename": filename,
        "size": len(data),
        "url": f"{cdn_base}/cdn{path}{query}",
        "proxy_url": f"{cdn_base}/media{path}{query}",
        "content_type": content_type or guess_content_type(filename),
        "content_scan_version": 3,
        "placeholder_version": 1,
    }
    dims = image_size(data)
    if dims is not None:
        payload["width"], payload["height"] = dims
        payload["placeholder"] = base64.b64encode(hashlib.md5(data).digest()[:12]).decode()  # noqa: S324
    if description is not None:
        payload["description"] = description
    if ephemeral:
        payload["ephemeral"] = True
    return payload


def message(
    *,
    message_id: int,
    channel_id: int,
    author: Json,
    content: str = "",
    message_type: int = 0,
    flags: int = 0,
    embeds: Sequence[Json] = (),
    attachments: Sequence[Json] = (),
    components: Sequence[Json] = (),
    tts: bool = False,
    guild_id: int | None = None,
    webhook_id: int | None = None,
    application_id: int | None = None,
    interaction_metadata: Json | None = None,
    edited_timestamp: str | None = None,
    mentions: Sequence[Json] = (),
    mention_roles: Sequence[str] = (),
    mention_everyone: bool = False,
    timestamp: str | None = None,
) -> Json:
    payload: Json = {
        "type": message_type,
        "content": content,
        "mentions": list(mentions),
        "mention_roles": list(mention_roles),
        "attachments": list(attachments),
        "embeds": message_embeds(embeds, attachments),
        "timestamp": timestamp or iso_timestamp(snowflake_time(message_id)),
        "edited_timestamp": edited_timestamp,
        "flags": flags,
        "components": list(components),
        "id": str(message_id),
        "channel_id": str(channel_id),
        "author": author,
        "pinned": False,
        "mention_everyone": mention_everyone,
        "tts": tts,
    }
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
    if webhook_id is not None:
        payload["webhook_id"] = str(webhook_id)
    if application_id is not None:
        payload["application_id"] = str(application_id)
    if interaction_metadata is not None:
        payload["interaction_metadata"] = interaction_metadata
    return payload


def message_embeds(embeds: Sequence[Json], attachments: Sequence[Json]) -> list[Json]:
    """Embeds as Discord returns them: `type` defaults to "rich", and an image or thumbnail
    that says `attachment://name` becomes that attachment's CDN media (url, proxy_url, size,
    content type, placeholder), as MessageEmbedImageResponse describes."""
    by_name = {a["filename"]: a for a in attachments}
    rendered: list[Json] = []
    for embed in embeds:
        out = dict(embed, type=embed.get("type", "rich"))
        for key in ("image", "thumbnail"):
            media = out.get(key)
            url = media.get("url") if isinstance(media, dict) else None
            if not isinstance(url, str) or not url.startswith("attachment://"):
                continue
            found = by_name.get(url.removeprefix("attachment://"))
            if found is None:
                continue
            resolved: Json = {"url": found["url"], "proxy_url": found["proxy_url"]}
            for field_name in ("width", "height", "content_type", "placeholder"):
                if field_name in found:
                    resolved[field_name] = found[field_name]
            if "placeholder" in found:
                resolved["placeholder_version"] = found.get("placeholder_version", 1)
            resolved["flags"] = 0
            out[key] = resolved
        rendered.append(out)
    return rendered


def walk_components(components: Iterable[Any]) -> Iterator[Json]:
    """Every component dict of a tree, depth first in document order (parents before children).

    Children live in `components` (action rows, sections, containers), `accessory` (sections)
    and `component` (labels in modals).
    """
    for component in components:
        if not isinstance(component, dict):
            continue
        yield component
        children = component.get("components")
        if isinstance(children, list):
            yield from walk_components(children)
        for key in ("accessory", "component"):
            child = component.get(key)
            if isinstance(child, dict):
                yield from walk_components([child])


def assign_component_ids(components: list[Json]) -> None:
    """Fill missing `id`s in place the way Discord does: sequentially in document order,
    skipping ids the sender already used ("generated sequentially if left empty. Generation
    of ids won't use another id that exists in the message"; an id of 0 counts as empty)."""
    nodes = list(walk_components(components))
    used = {n["id"] for n in nodes if isinstance(n.get("id"), int) and n["id"]}
    counter = 0
    for node in nodes:
        if isinstance(node.get("id"), int) and node["id"]:
            continue
        counter += 1
        while counter in used:
            counter += 1
        node["id"] = counter


def unfurled_media(url: str, *, media_id: int, attachment: Json | None = None) -> Json:
    """An unfurled media item as Discord returns it: only `url` is settable, the rest is
    filled in by Discord; an `attachment://name` reference resolves to that attachment."""
    if attachment is not None:
        media: Json = {
            "id": str(media_id),
            "url": attachment["url"],
            "proxy_url": attachment["proxy_url"],
            "width": attachment.get("width"),
            "height": attachment.get("height"),
            "content_type": attachment.get("content_type"),
            "flags": 0,
            "attachment_id": attachment["id"],
            "loading_state": 2,  # LOADED_SUCCESS
        }
        if "placeholder" in attachment:
            media["placeholder"] = attachment["placeholder"]
            media["placeholder_version"] = attachment.get("placeholder_version", 1)
        return media
    return {
        "id": str(media_id),
        "url": url,
        "proxy_url": url,
        "width": None,
        "height": None,
        "content_type": None,
        "flags": 0,
        "loading_state": 0,  # UNKNOWN: Discord unfurls external media later
    }


def message_components(
    components: Sequence[Json], *, attachments: Sequence[Json], next_id: Callable[[], int]
) -> list[Json]:
    """Components of a sent message as Discord returns them (MessageResponse.components).

    Ids are assigned, the response-only fields get their defaults, and media items that say
    `attachment://name` resolve to the uploaded attachment of that name.
    """
    rendered: list[Json] = copy.deepcopy([c for c in components if isinstance(c, dict)])
    assign_component_ids(rendered)
    by_name = {a["filename"]: a for a in attachments}

    def media(value: Any) -> Any:
        if not isinstance(value, dict) or not isinstance(value.get("url"), str):
            return value
        url = value["url"]
        attachment = by_name.get(url.removeprefix("attachment://"))
        if not url.startswith("attachment://"):
            attachment = None
        return unfurled_media(url, media_id=next_id(), attachment=attachment)

    def drop_nulls(emoji: Any) -> Any:
        # {"id": null, "name": "🔁"} comes back as {"name": "🔁"} (ComponentEmojiResponse).
        return (
            {k: v for k, v in emoji.items() if v is not None} if isinstance(emoji, dict) else emoji
        )

    for node in walk_components(rendered):
        kind = node.get("type")
        for key in [k for k, v in node.items() if v is None and k not in ("description",)]:
            del node[key]
        if "emoji" in node:
            node["emoji"] = drop_nulls(node["emoji"])
        for option in node.get("options") or ():
            if isinstance(option, dict) and "emoji" in option:
                option["emoji"] = drop_nulls(option["emoji"])
        if kind in SELECT_COMPONENT_TYPES:
            node.setdefault("min_values", 1)
            node.setdefault("max_values", 1)
        elif kind == COMPONENT_CONTAINER:
            node.setdefault("accent_color", None)
            node.setdefault("spoiler", False)
        elif kind == COMPONENT_THUMBNAIL:
            node["media"] = media(node.get("media"))
            node.setdefault("description", None)
            node.setdefault("spoiler", False)
        elif kind == COMPONENT_MEDIA_GALLERY:
            for item in node.get("items") or ():
                if isinstance(item, dict):
                    item["media"] = media(item.get("media"))
                    item.setdefault("description", None)
                    item.setdefault("spoiler", False)
        elif kind == COMPONENT_FILE:
            url = node.get("file", {}).get("url") if isinstance(node.get("file"), dict) else None
            found = by_name.get(str(url).removeprefix("attachment://"))
            node["file"] = media(node.get("file"))
            node["name"] = None if found is None else found["filename"]
            node["size"] = None if found is None else found["size"]
            node.setdefault("spoiler", False)
        elif kind == COMPONENT_SEPARATOR:
            node.setdefault("divider", True)
            node.setdefault("spacing", 1)
    return rendered


# ---------------------------------------------------------------------------------------------
# Application commands and interactions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CdnBehaviour:
    """How the fake's loopback CDN serves one attachment's URL (and its proxy_url).

    delay: seconds before the response headers are sent.
    chunk_delay: seconds between body chunks of `chunk_size` bytes (a slow stream).
    content_length: False sends the body with chunked transfer encoding and no
        Content-Length, so a client cannot know the size before reading.
    vanished: the URL answers 404 ("This content is no longer available.") although the
        attachment was uploaded (deleted message, expired signed URL).
    body: bytes served instead of the uploaded ones (a CDN object that differs from the
        attachment's reported `size`); None serves what was uploaded.
    """

    delay: float = 0.0
    chunk_delay: float = 0.0
    chunk_size: int = 64 * 1024
    content_length: bool = True
    vanished: bool = False
    body: bytes | None = None


CDN_AS_UPLOADED = CdnBehaviour()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return len(body).to_bytes(4, "big") + kind + body + crc.to_bytes(4, "big")


def tiny_png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid, decodable RGB PNG of `width` x `height` pixels (no Pillow needed)."""
    row = b"\x00" + bytes(rgb) * width
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(row * height))
        + _png_chunk(b"IEND", b"")
    )


@dataclass(frozen=True)
class AttachmentInput:
    """A file a user uploaded: to an ATTACHMENT (type 11) option, or to a message made with
    `FakeDiscord.user_message`. `cdn` chooses how the loopback CDN serves its URL."""

    filename: str
    data: bytes
    content_type: str | None = None
    description: str | None = None
    cdn: CdnBehaviour = CDN_AS_UPLOADED

    @classmethod
    def oversized(
        cls,
        size: int,
        filename: str = "huge.png",
        *,
        width: int = 2,
        height: int = 2,
        content_length: bool = True,
        description: str | None = None,
    ) -> AttachmentInput:
        """A real `size`-byte PNG (a decodable image followed by padding), reported with
        that size; `content_length=False` streams it without a Content-Length header."""
        image = tiny_png(width, height)
        if size < len(image):
            raise ValueError(f"size must be at least {len(image)} bytes")
        return cls(
            filename,
            image + bytes(size - len(image)),
            content_type="image/png",
            description=description,
            cdn=CdnBehaviour(content_length=content_length),
        )

    @classmethod
    def renamed_text(
        cls,
        filename: str = "photo.png",
        text: str = "this is a text file, not an image\n",
        *,
        content_type: str | None = None,
    ) -> AttachmentInput:
        """A text file renamed to an image name: Discord reports the content type the
        name implies (image/png for .png) and, since it cannot decode it, no width/height."""
        return cls(filename, text.encode(), content_type=content_type)

    def slow(
        self, *, delay: float = 0.0, chunk_delay: float = 0.0, chunk_size: int = 64 * 1024
    ) -> AttachmentInput:
        """This file, served after `delay` s and/or in `chunk_size` chunks `chunk_delay` s
        apart."""
        return replace(
            self,
            cdn=replace(self.cdn, delay=delay, chunk_delay=chunk_delay, chunk_size=chunk_size),
        )

    def vanished(self) -> AttachmentInput:
        """This file, whose CDN URL answers 404 although the upload went through."""
        return replace(self, cdn=replace(self.cdn, vanished=True))


@dataclass(frozen=True)
class TypedValue:
    """An option value with an explicit Discord option type (e.g. a float sent as NUMBER)."""

    type: int
    value: Any


@dataclass
class ResolvedCollector:
    """Collects `data.resolved`: Discord sends the full object behind every user, member,
    role, channel and attachment option, and discord.py looks the option value up there."""

    users: dict[str, Json] = field(default_factory=dict)
    members: dict[str, Json] = field(default_factory=dict)
    roles: dict[str, Json] = field(default_factory=dict)
    channels: dict[str, Json] = field(default_factory=dict)
    attachments: dict[str, Json] = field(default_factory=dict)

    def as_payload(self) -> Json | None:
        resolved: Json = {
            key: value
            for key, value in (
                ("users", self.users),
                ("members", self.members),
                ("roles", self.roles),
                ("channels", self.channels),
                ("attachments", self.attachments),
            )
            if value
        }
        return resolved or None


RESOLVED_OPTION_TYPES = frozenset(
    {OPTION_USER, OPTION_CHANNEL, OPTION_ROLE, OPTION_MENTIONABLE, OPTION_ATTACHMENT}
)


def infer_option_type(value: Any) -> int:
    if isinstance(value, TypedValue):
        return value.type
    if isinstance(value, AttachmentInput):
        return OPTION_ATTACHMENT
    if isinstance(value, bool):
        return OPTION_BOOLEAN
    if isinstance(value, int):
        return OPTION_INTEGER
    if isinstance(value, float):
        return OPTION_NUMBER
    return OPTION_STRING


def split_subcommand_path(path: str | Sequence[str] | None) -> list[str]:
    if path is None:
        return []
    if isinstance(path, str):
        return path.split()
    return list(path)


def application_command_response(
    definition: Json,
    *,
    command_id: int,
    application_id: int,
    version: int,
    guild_id: int | None,
) -> Json:
    """What Discord returns for one synced command: the definition normalised, with ids."""
    permissions = definition.get("default_member_permissions")
    payload: Json = {
        "id": str(command_id),
        "application_id": str(application_id),
        "version": str(version),
        "default_member_permissions": None if permissions is None else str(permissions),
        "type": definition.get("type") or 1,
        "name": definition["name"],
        "description": definition.get("description") or "",
        "nsfw": bool(definition.get("nsfw", False)),
    }
    if definition.get("name_localizations"):
        payload["name_localizations"] = definition["name_localizations"]
    if definition.get("description_localizations"):
        payload["description_localizations"] = definition["description_localizations"]
    if guild_id is None:
        payload["dm_permission"] = definition.get("dm_permission", True) is not False
        payload["contexts"] = definition.get("contexts")
        payload["integration_types"] = definition.get("integration_types") or [0]
    else:
        payload["guild_id"] = str(guild_id)
        payload["contexts"] = None
        payload["integration_types"] = [0]
    options = [_normalise_option(o) for o in definition.get("options") or []]
    if options:
        payload["options"] = options
    return payload


def _normalise_option(option: Json) -> Json:
    # Discord echoes options back without null members and drops `required: false`.
    out: Json = {k: v for k, v in option.items() if v is not None}
    if out.get("required") is False:
        del out["required"]
    if out.get("autocomplete") is False:
        del out["autocomplete"]
    if "options" in out:
        out["options"] = [_normalise_option(o) for o in out["options"]]
    return out


def _definition_named(definitions: Sequence[Json] | None, name: str) -> Json | None:
    for definition in definitions or ():
        if definition.get("name") == name:
            return definition
    return None


def _coerce(option_type: int, value: Any) -> Any:
    if option_type == OPTION_INTEGER:
        return int(value)
    if option_type == OPTION_NUMBER:
        return float(value)
    if option_type == OPTION_BOOLEAN:
        return bool(value)
    if option_type in (OPTION_USER, OPTION_CHANNEL, OPTION_ROLE, OPTION_MENTIONABLE):
        return str(value)  # snowflakes travel as strings
    return str(value)


def build_options(
    values: Mapping[str, Any] | Sequence[Json] | None,
    *,
    definitions: Sequence[Json] | None,
    subcommand: str | Sequence[str] | None = None,
    focused: str | None = None,
    resolve: Callable[[int, Any], str] | None = None,
) -> list[Json]:
    """`data.options` as Discord sends it for the given values.

    Types come from the synced command definition when there is one (so `{"count": 2}` becomes
    an INTEGER option exactly when the bot declared it so), else from the Python value. For an
    autocomplete interaction the focused option's value is the raw text typed so far, which
    Discord always sends as a string, whatever the option's type. `resolve(type, value)` turns
    user/channel/role/mentionable/attachment values into the id sent, filling `data.resolved`.
    """
    path = split_subcommand_path(subcommand)
    level_definitions = definitions
    for name in path:
        parent = _definition_named(level_definitions, name)
        level_definitions = None if parent is None else parent.get("options")

    options: list[Json]
    if values is None:
        options = []
    elif isinstance(values, Mapping):
        options = []
        for name, raw in values.items():
            definition = _definition_named(level_definitions, name)
            if isinstance(raw, TypedValue):
                option_type, raw_value = raw.type, raw.value
            elif definition is not None:
                option_type, raw_value = int(definition["type"]), raw
            else:
                option_type, raw_value = infer_option_type(raw), raw
            option: Json = {"type": option_type, "name": name}
            if name == focused:
                option["value"] = str(raw_value)
                option["focused"] = True
            elif option_type in RESOLVED_OPTION_TYPES and resolve is not None:
                option["value"] = resolve(option_type, raw_value)
            else:
                option["value"] = _coerce(option_type, raw_value)
            options.append(option)
    else:
        options = [dict(o) for o in values]

    # Wrap the leaf options into their subcommand (and group) the way Discord nests them.
    for depth, name in reversed(list(enumerate(path))):
        kind = OPTION_SUB_COMMAND_GROUP if depth == 0 and len(path) == 2 else OPTION_SUB_COMMAND
        options = [{"type": kind, "name": name, "options": options}]
    return options


def interaction(
    *,
    interaction_id: int,
    interaction_type: int,
    token: str,
    application_id: int,
    data: Json,
    invoker: Json,
    channel: Json,
    guild: GuildSpec | None,
    permissions: int,
    app_permissions: int = BOT_PERMISSIONS,
    roles: Iterable[int] = (),
    locale: str = "en-US",
    attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
    entitlements: Sequence[Json] = (),
    joined_at: str | None = None,
    message: Json | None = None,
) -> Json:
    """An Interaction object with every field Discord sends over the gateway.

    In a guild the invoker comes as `member` (with computed `permissions`); in a DM as `user`.
    `message` is, "for components or modals triggered by components, the message they were
    attached to" (the full message object).
    """
    payload: Json = {
        "id": str(interaction_id),
        "application_id": str(application_id),
        "type": interaction_type,
        "data": data,
        "channel": channel,
        "channel_id": channel["id"],
        "token": token,
        "version": 1,
        "app_permissions": str(app_permissions),
        "locale": locale,
        "entitlements": list(entitlements),
        "entitlement_sku_ids": [],
        "attachment_size_limit": attachment_size_limit,
    }
    if guild is not None:
        payload["guild_id"] = str(guild.id)
        payload["guild"] = {"id": str(guild.id), "locale": guild.locale, "features": []}
        payload["guild_locale"] = guild.locale
        payload["member"] = member(
            invoker, roles=roles, joined_at=joined_at, permissions=permissions
        )
        payload["context"] = CONTEXT_GUILD
        payload["authorizing_integration_owners"] = {"0": str(guild.id)}
    else:
        payload["user"] = invoker
        payload["context"] = CONTEXT_BOT_DM
        # A guild-installed app used in its bot DM is authorised by "guild 0".
        payload["authorizing_integration_owners"] = {"0": "0"}
    if message is not None:
        payload["message"] = message
    return payload
