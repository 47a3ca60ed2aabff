"""Per-server limits: what admins set, the refusals they cause, and who changed what.

A server's limits live in the database, so they survive restarts, and are read on every
request, so a change applies to the next one. Refusals are exceptions that name their limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Final

from bot.core.catalog import CATALOG, MAX_N_OPTION
from bot.core.prompt_rules import MAX_TERMS, check_term, find_blocked, normalize
from bot.ledger.busy import retry_busy
from bot.ledger.db import Database, Dialect
from bot.ledger.periods import to_db_time

MAX_DAILY_IMAGES: Final = 100_000
MAX_DAILY_BUDGET_USD: Final = 1_000_000.0
# An admin's change waits this long for another process's write lock.
ADMIN_LOCK_WAIT_S: Final = 10.0


class LimitRefused(Exception):
    """A request a usage limit refused; `limit_name` names the limit for the user."""

    default_name: ClassVar[str] = "a usage limit"

    @property
    def limit_name(self) -> str:
        """The limit that refused, in the user's words."""
        return self.default_name


class MemberBlocked(LimitRefused):
    """A server admin blocked this member from making images in the server."""

    default_name = "blocked by a server admin"

    def __init__(self) -> None:
        super().__init__("the member is blocked in this server")


class ModelNotAllowed(LimitRefused):
    """The server allows only some models, and not this one."""

    default_name = "the server's allowed models"

    def __init__(self, model: str, allowed: tuple[str, ...]) -> None:
        super().__init__(f"model {model} is not allowed here (allowed: {', '.join(allowed)})")
        self.model = model
        self.allowed = allowed


class TooManyImages(LimitRefused):
    """The request asks for more images at once than the server allows."""

    default_name = "the server's images per request"

    def __init__(self, requested: int, max_n: int) -> None:
        super().__init__(f"{requested} images requested, the server allows {max_n} at once")
        self.requested = requested
        self.max_n = max_n


class ChannelNotAllowed(LimitRefused):
    """The server lets /imagine work only in some channels, and not this one."""

    default_name = "the server's channels for /imagine"

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__(f"not in an allowed channel ({len(channels)} allowed)")
        self.channels = channels


class RoleNotAllowed(LimitRefused):
    """The server lets only members with some roles use /imagine."""

    default_name = "the server's roles for /imagine"

    def __init__(self, roles: tuple[int, ...]) -> None:
        super().__init__(f"no allowed role ({len(roles)} allowed)")
        self.roles = roles


MODERATION_LOW_FLAG: Final = "moderation_low"
# Set: the server's prompts are not kept in the usage log (its buttons cannot rerun them).
PROMPTS_NOT_KEPT_FLAG: Final = "prompts_not_kept"


class ModerationNotAllowed(LimitRefused):
    """`moderation: low` asked where the server does not allow it."""

    default_name = "the server's moderation setting"

    def __init__(self, *, switched_on: bool) -> None:
        super().__init__("moderation low not allowed here")
        self.switched_on = switched_on
        """Whether the server allows it at all (then only the channel is wrong)."""


class PromptBlocked(LimitRefused):
    """The prompt contains a word or phrase the server blocked; the term is not shown."""

    default_name = "the server's blocked words"

    def __init__(self, term: str) -> None:
        super().__init__("the prompt contains a blocked term")
        self.term = term
        """For the log of refused attempts only: never echoed to the channel."""


class Whose(StrEnum):
    """Who set a limit: the bot's operator (settings) or the server's admins."""

    OPERATOR = "operator"
    SERVER = "server"


class BudgetScope(StrEnum):
    """What a daily budget covers."""

    USER = "user"
    """One member, across every server and DM (USER_DAILY_BUDGET_USD)."""
    SERVER = "server"
    """One server (`/usage-admin limits budget`)."""
    BOT = "bot"
    """The whole bot (BOT_DAILY_BUDGET_USD)."""


_BUDGET_NAMES: Final = {
    BudgetScope.USER: "your daily budget set by the bot's operator",
    BudgetScope.SERVER: "the server's daily budget",
    BudgetScope.BOT: "the bot's daily budget set by its operator",
}


class BudgetExhausted(LimitRefused):
    """Today's spend plus this request's estimate would pass a daily budget."""

    def __init__(
        self,
        scope: BudgetScope,
        budget_usd: float,
        spent_usd: float,
        needed_usd: float,
        resets_at: datetime,
    ) -> None:
        super().__init__(
            f"{scope.value} daily budget ${budget_usd:.2f}: ${spent_usd:.4f} spent or reserved, "
            f"this request needs ${needed_usd:.4f}"
        )
        self.scope = scope
        self.budget_usd = budget_usd
        self.spent_usd = spent_usd
        self.needed_usd = needed_usd
        self.resets_at = resets_at

    @property
    def limit_name(self) -> str:
        """Which budget refused, in the user's words."""
        return _BUDGET_NAMES[self.scope]


class QuotaExceeded(LimitRefused):
    """A daily image limit would be exceeded: the operator's or the server's."""

    def __init__(
        self,
        limit: int,
        used: int,
        requested: int,
        resets_at: datetime,
        *,
        whose: Whose = Whose.OPERATOR,
    ) -> None:
        super().__init__(
            f"{whose.value} daily limit {limit} reached (used {used}, requested {requested})"
        )
        self.limit = limit
        self.used = used
        self.requested = requested
        self.resets_at = resets_at
        self.whose = whose

    @property
    def server_limit(self) -> bool:
        """Whether the server's own limit refused, rather than the operator's."""
        return self.whose is Whose.SERVER

    @property
    def limit_name(self) -> str:
        """Which limit refused, in the user's words."""
        return "the server's daily image limit" if self.server_limit else "the daily image limit"


@dataclass(frozen=True, slots=True)
class Ceilings:
    """Every count-based limit one reservation must stay within; None means no such limit.

    The operator's limits are ceilings a server can only tighten: both apply, each counted in
    its own scope, so a server's own limit or reset never gives back what the operator's
    limit counts.
    """

    operator_daily_images: int | None = None
    """Images per member per UTC day across every server and DM (USER_DAILY_IMAGE_LIMIT)."""
    server_daily_images: int | None = None
    """Images per member per UTC day in this server, after the server's resets."""
    user_daily_budget_usd: float | None = None
    server_daily_budget_usd: float | None = None
    bot_daily_budget_usd: float | None = None


@dataclass(frozen=True, slots=True)
class GuildLimits:
    """A server's limits; None means the server sets no such limit."""

    user_daily_images: int | None = None
    """Images per member per UTC day in this server, 0 = no limit of the server's own.

    It can only tighten the operator's USER_DAILY_IMAGE_LIMIT, which applies as well."""
    daily_budget_usd: float | None = None
    allowed_models: tuple[str, ...] | None = None
    max_n: int | None = None

    def refusal(self, model: str, n: int) -> LimitRefused | None:
        """Which of the request-shape limits refuses this model and n, if any."""
        if self.allowed_models is not None and model not in self.allowed_models:
            return ModelNotAllowed(model, self.allowed_models)
        if self.max_n is not None and n > self.max_n:
            return TooManyImages(n, self.max_n)
        return None


NO_LIMITS: Final = GuildLimits()


@dataclass(frozen=True, slots=True)
class Policy:
    """What applies to one member's request in one server."""

    limits: GuildLimits
    blocked: bool
    blocked_terms: tuple[str, ...] = ()
    allowed_channels: tuple[int, ...] = ()
    """Empty: every channel."""
    allowed_roles: tuple[int, ...] = ()
    """Empty: every member."""
    role_allowances: tuple[tuple[int, int], ...] = ()
    """(role id, daily images) pairs."""
    flags: frozenset[str] = frozenset()

    def daily_images_for(self, role_ids: tuple[int, ...]) -> int | None:
        """The member's daily images here: the highest of their roles' allowances, else the
        server's daily-images (0 or None: no limit of the server's own)."""
        granted = [images for role, images in self.role_allowances if role in role_ids]
        if granted:
            return max(granted)
        return self.limits.user_daily_images or None

    def refusal(
        self,
        model: str,
        n: int,
        *,
        channels: tuple[int | None, ...] = (),
        prompt: str = "",
        role_ids: tuple[int, ...] = (),
        moderation: str | None = None,
        age_restricted: bool = False,
    ) -> LimitRefused | None:
        """The first limit that refuses the request before any count is needed, if any.

        `channels` are the request's channel and, for a thread, its parent: either being
        allowed is enough.
        """
        if self.blocked:
            return MemberBlocked()
        if self.allowed_roles and not set(self.allowed_roles) & set(role_ids):
            return RoleNotAllowed(self.allowed_roles)
        if self.allowed_channels and not set(self.allowed_channels) & set(channels):
            return ChannelNotAllowed(self.allowed_channels)
        term = find_blocked(prompt, self.blocked_terms)
        if term is not None:
            return PromptBlocked(term)
        if moderation == "low":
            switched_on = MODERATION_LOW_FLAG in self.flags
            if not (switched_on and age_restricted):
                return ModerationNotAllowed(switched_on=switched_on)
        return self.limits.refusal(model, n)


OPEN_POLICY: Final = Policy(NO_LIMITS, blocked=False)


class Action(StrEnum):
    """What an admin changed; stored in the audit log."""

    DAILY_IMAGES = "daily_images"
    DAILY_BUDGET = "daily_budget"
    ALLOWED_MODELS = "allowed_models"
    MAX_N = "max_n"
    BLOCK = "block"
    UNBLOCK = "unblock"
    RESET_DAY = "reset_day"
    BLOCK_TERM = "block_term"
    UNBLOCK_TERM = "unblock_term"
    ALLOW_CHANNEL = "allow_channel"
    DISALLOW_CHANNEL = "disallow_channel"
    ROLE_IMAGES = "role_images"
    ALLOW_ROLE = "allow_role"
    DISALLOW_ROLE = "disallow_role"
    FLAG = "flag"
    FORGET = "forget"


@dataclass(frozen=True, slots=True)
class LimitChange:
    """One line of the audit log."""

    created_at: str
    actor_id: int
    action: Action
    target_id: int | None
    old_value: str | None
    new_value: str | None


class InvalidLimit(ValueError):
    """A limit value an admin gave that cannot be used; the message says why."""


def check_daily_images(value: int | None) -> int | None:
    """A per-member daily image limit, or None for the bot's default."""
    if value is not None and not 0 <= value <= MAX_DAILY_IMAGES:
        raise InvalidLimit(f"the daily image limit must be 0 to {MAX_DAILY_IMAGES:,}")
    return value


def check_budget(value: float | None) -> float | None:
    """A daily budget in US dollars, or None for no budget."""
    if value is not None and not 0 < value <= MAX_DAILY_BUDGET_USD:
        raise InvalidLimit(
            f"the daily budget must be more than $0 and at most ${MAX_DAILY_BUDGET_USD:,.0f}"
        )
    return value


def check_models(text: str | None) -> tuple[str, ...] | None:
    """Comma-separated model names, checked against the catalog; None or "all" for every model."""
    if text is None or text.strip().lower() in {"", "all"}:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in CATALOG]
    if unknown:
        raise InvalidLimit(f"unknown model(s): {', '.join(unknown)}. Models: {', '.join(CATALOG)}")
    # Catalog order, without repeats: the same set always reads the same way.
    return tuple(name for name in CATALOG if name in names)


def check_max_n(value: int | None) -> int | None:
    """The most images per request, or None for each model's own maximum."""
    if value is not None and not 1 <= value <= MAX_N_OPTION:
        raise InvalidLimit(f"the images per request must be 1 to {MAX_N_OPTION}")
    return value


def _shown(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def _models_from_db(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


# One statement sets any subset of the four limits: `:set_x` says which columns change, so a
# change of one limit never writes back a stale value of another.
_UPSERT_LIMITS: Final = (
    "INSERT INTO guild_limits (guild_id, user_daily_images, daily_budget_usd, allowed_models, "
    "max_n, updated_at, updated_by) "
    "VALUES (:guild_id, :daily, :budget, :models, :max_n, :now, :actor) "
    "ON CONFLICT (guild_id) DO UPDATE SET "
    "user_daily_images = CASE WHEN :set_daily THEN excluded.user_daily_images "
    "ELSE user_daily_images END, "
    "daily_budget_usd = CASE WHEN :set_budget THEN excluded.daily_budget_usd "
    "ELSE daily_budget_usd END, "
    "allowed_models = CASE WHEN :set_models THEN excluded.allowed_models "
    "ELSE allowed_models END, "
    "max_n = CASE WHEN :set_max_n THEN excluded.max_n ELSE max_n END, "
    "updated_at = excluded.updated_at, updated_by = excluded.updated_by"
)


@dataclass(frozen=True, slots=True)
class _GuildSet:
    """A per-guild set of keys (flags, roles, channels, terms): its add and remove."""

    insert: str
    delete: str


def _guild_set(table: str, key: str, at: str = "added_at", by: str = "added_by") -> _GuildSet:
    # Composed once, at import, from these constant names: no value enters the SQL text.
    return _GuildSet(
        f"INSERT INTO {table} (guild_id, {key}, {at}, {by}) VALUES (?, ?, ?, ?) "  # noqa: S608
        "ON CONFLICT DO NOTHING",
        f"DELETE FROM {table} WHERE guild_id = ? AND {key} = ?",  # noqa: S608
    )


_FLAGS: Final = _guild_set("guild_flags", "flag", "set_at", "set_by")
_ALLOWED_ROLES: Final = _guild_set("guild_allowed_roles", "role_id")
_CHANNELS: Final = _guild_set("guild_channels", "channel_id")
_TERMS: Final = _guild_set("guild_blocked_terms", "term")
_BLOCKS: Final = _guild_set("guild_blocks", "user_id", "blocked_at", "blocked_by")


def _policy_sql(array: str, pair: str) -> str:
    # Composed once, at import, from constant text: no value enters the SQL. `array` is the
    # engine's JSON array aggregate (with its empty case), `pair` its JSON pair constructor.
    def listed(column: str, table: str) -> str:
        return f"(SELECT {array.format(column)} FROM {table} AS t WHERE t.guild_id = q.guild_id)"  # noqa: S608

    return (
        "SELECT l.user_daily_images, l.daily_budget_usd, l.allowed_models, l.max_n, "  # noqa: S608
        "EXISTS (SELECT 1 FROM guild_blocks AS b WHERE b.guild_id = q.guild_id "
        "AND b.user_id = ?), "
        + ", ".join(
            (
                listed("term", "guild_blocked_terms"),
                listed("channel_id", "guild_channels"),
                listed("role_id", "guild_allowed_roles"),
                listed(pair.format("role_id", "daily_images"), "guild_role_allowances"),
                listed("flag", "guild_flags"),
            )
        )
        + " FROM (SELECT CAST(? AS BIGINT) AS guild_id) AS q "
        "LEFT JOIN guild_limits AS l ON l.guild_id = q.guild_id"
    )


_POLICY: Final = {
    Dialect.SQLITE: _policy_sql("json_group_array({})", "json_array({}, {})"),
    Dialect.POSTGRESQL: _policy_sql(
        "COALESCE(json_agg({}), '[]'::json)", "json_build_array({}, {})"
    ),
}


class LimitsStore:
    """Reads and writes the per-server limits on the ledger's connection."""

    def __init__(self, db: Database, clock: Callable[[], datetime]) -> None:
        self._db = db
        self._clock = clock

    async def _write(self, sql: str, params: Mapping[str, object] | tuple[object, ...]) -> int:
        """Run one write, waiting out another process's lock; return the rows changed."""

        async def write() -> int:
            return await self._db.execute(sql, params)

        return await retry_busy(write, timeout_s=ADMIN_LOCK_WAIT_S, what="limits")

    async def _put(
        self, where: _GuildSet, guild_id: int, key: object, present: bool, actor_id: int
    ) -> bool:
        """Add `key` to (or remove it from) the guild's set; False when nothing changed."""
        if present:
            changed = await self._write(
                where.insert, (guild_id, key, to_db_time(self._clock()), actor_id)
            )
        else:
            changed = await self._write(where.delete, (guild_id, key))
        return changed == 1

    async def limits(self, guild_id: int) -> GuildLimits:
        """The server's limits (NO_LIMITS when it set none)."""
        row = await self._db.fetchone(
            "SELECT user_daily_images, daily_budget_usd, allowed_models, max_n "
            "FROM guild_limits WHERE guild_id = ?",
            (guild_id,),
        )
        if row is None:
            return NO_LIMITS
        return GuildLimits(row[0], row[1], _models_from_db(row[2]), row[3])

    async def policy(self, guild_id: int, user_id: int) -> Policy:
        """The server's limits and whether the member is blocked, in one read."""
        # One query is one trip to the database instead of seven; this runs before every
        # /imagine is acknowledged.
        (row,) = await self._db.execute_fetchall(_POLICY[self._db.dialect], (user_id, guild_id))
        limits = GuildLimits(row[0], row[1], _models_from_db(row[2]), row[3])
        return Policy(
            limits,
            blocked=bool(row[4]),
            blocked_terms=tuple(json.loads(row[5])),
            allowed_channels=tuple(int(channel) for channel in json.loads(row[6])),
            allowed_roles=tuple(int(role) for role in json.loads(row[7])),
            role_allowances=tuple((int(role), int(images)) for role, images in json.loads(row[8])),
            flags=frozenset(str(flag) for flag in json.loads(row[9])),
        )

    async def forget_prompts(self, guild_id: int, user_id: int, actor_id: int) -> int:
        """Remove a member's prompts in this server (their rows and counts stay); how many."""
        changed = await self._write(
            "UPDATE generations SET options_json = NULL, revised_prompt = NULL "
            "WHERE guild_id = ? AND user_id = ? "
            "AND (options_json IS NOT NULL OR revised_prompt IS NOT NULL)",
            (guild_id, user_id),
        )
        await self._write(
            "UPDATE refused_attempts SET detail = NULL WHERE guild_id = ? AND user_id = ?",
            (guild_id, user_id),
        )
        await self._audit(guild_id, actor_id, Action.FORGET, user_id, None, None)
        return changed

    async def set_flag(self, guild_id: int, flag: str, on: bool, actor_id: int) -> bool:
        """Turn a server's switch on or off; False when it already was so."""
        changed = await self._put(_FLAGS, guild_id, flag, on, actor_id)
        if changed:
            await self._audit(
                guild_id, actor_id, Action.FLAG, None, None, f"{flag} {'on' if on else 'off'}"
            )
        return changed

    async def set_role_images(
        self, guild_id: int, role_id: int, images: int | None, actor_id: int
    ) -> None:
        """Daily images for members with this role here; None removes the role's allowance."""
        if images is None:
            await self._write(
                "DELETE FROM guild_role_allowances WHERE guild_id = ? AND role_id = ?",
                (guild_id, role_id),
            )
        else:
            check_daily_images(images)
            await self._write(
                "INSERT INTO guild_role_allowances (guild_id, role_id, daily_images, set_at, "
                "set_by) VALUES (?, ?, ?, ?, ?) ON CONFLICT (guild_id, role_id) DO UPDATE SET "
                "daily_images = excluded.daily_images, set_at = excluded.set_at, "
                "set_by = excluded.set_by",
                (guild_id, role_id, images, to_db_time(self._clock()), actor_id),
            )
        shown = f"role {role_id}: {'default' if images is None else images}"
        await self._audit(guild_id, actor_id, Action.ROLE_IMAGES, None, None, shown)

    async def set_allowed_role(
        self, guild_id: int, role_id: int, allowed: bool, actor_id: int
    ) -> bool:
        """Add a role to (or remove it from) those that may use /imagine; False if no change."""
        changed = await self._put(_ALLOWED_ROLES, guild_id, role_id, allowed, actor_id)
        if changed:
            action = Action.ALLOW_ROLE if allowed else Action.DISALLOW_ROLE
            await self._audit(guild_id, actor_id, action, None, None, f"role {role_id}")
        return changed

    async def blocked_terms(self, guild_id: int) -> tuple[str, ...]:
        """The server's blocked words and phrases, normalized, in order."""
        rows = await self._db.execute_fetchall(
            "SELECT term FROM guild_blocked_terms WHERE guild_id = ? ORDER BY term", (guild_id,)
        )
        return tuple(str(row[0]) for row in rows)

    async def allowed_channels(self, guild_id: int) -> tuple[int, ...]:
        """The channels /imagine works in here; empty for every channel."""
        rows = await self._db.execute_fetchall(
            "SELECT channel_id FROM guild_channels WHERE guild_id = ? ORDER BY channel_id",
            (guild_id,),
        )
        return tuple(int(row[0]) for row in rows)

    async def add_blocked_term(self, guild_id: int, text: str, actor_id: int) -> bool:
        """Block a word or phrase here; False when it was already blocked."""
        try:
            term = check_term(text)
        except ValueError as error:
            raise InvalidLimit(str(error)) from error
        if len(await self.blocked_terms(guild_id)) >= MAX_TERMS:
            raise InvalidLimit(f"a server can block at most {MAX_TERMS} terms")
        changed = await self._put(_TERMS, guild_id, term, True, actor_id)
        if changed:
            await self._audit(guild_id, actor_id, Action.BLOCK_TERM, None, None, "(a term)")
        return changed

    async def remove_blocked_term(self, guild_id: int, text: str, actor_id: int) -> bool:
        """Unblock a word or phrase here; False when it was not blocked."""
        changed = await self._put(_TERMS, guild_id, normalize(text), False, actor_id)
        if changed:
            await self._audit(guild_id, actor_id, Action.UNBLOCK_TERM, None, "(a term)", None)
        return changed

    async def set_channel(
        self, guild_id: int, channel_id: int, allowed: bool, actor_id: int
    ) -> bool:
        """Add a channel to (or remove it from) where /imagine works here; False if no change."""
        changed = await self._put(_CHANNELS, guild_id, channel_id, allowed, actor_id)
        if changed:
            action = Action.ALLOW_CHANNEL if allowed else Action.DISALLOW_CHANNEL
            await self._audit(guild_id, actor_id, action, None, None, str(channel_id))
        return changed

    async def record_refused(
        self, guild_id: int | None, user_id: int, channel_id: int | None, reason: str, detail: str
    ) -> None:
        """Log a refused attempt apart from generations (no upstream call, no quota)."""
        await self._write(
            "INSERT INTO refused_attempts (created_at, guild_id, user_id, channel_id, reason, "
            "detail) VALUES (?, ?, ?, ?, ?, ?)",
            (to_db_time(self._clock()), guild_id, user_id, channel_id, reason, detail),
        )

    async def _update(
        self,
        guild_id: int,
        actor_id: int,
        action: Action,
        old: object,
        new: object,
        **values: object,
    ) -> None:
        params: dict[str, object] = {
            "guild_id": guild_id,
            "now": to_db_time(self._clock()),
            "actor": actor_id,
            "daily": None,
            "budget": None,
            "models": None,
            "max_n": None,
            "set_daily": False,
            "set_budget": False,
            "set_models": False,
            "set_max_n": False,
        }
        for key, value in values.items():
            params[key] = value
            params[f"set_{key}"] = True
        await self._write(_UPSERT_LIMITS, params)
        await self._audit(guild_id, actor_id, action, None, old, new)

    async def _audit(
        self,
        guild_id: int,
        actor_id: int,
        action: Action,
        target_id: int | None,
        old: object,
        new: object,
    ) -> None:
        # Written after the change, not in one transaction with it: the connection is shared
        # by every request, and an open transaction would sweep their writes into it.
        await self._write(
            "INSERT INTO limit_changes (created_at, guild_id, actor_id, action, target_id, "
            "old_value, new_value) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                to_db_time(self._clock()),
                guild_id,
                actor_id,
                action.value,
                target_id,
                _shown(old),
                _shown(new),
            ),
        )

    async def set_daily_images(self, guild_id: int, value: int | None, actor_id: int) -> None:
        """Set the per-member daily image limit here; None goes back to the bot's default."""
        value = check_daily_images(value)
        old = (await self.limits(guild_id)).user_daily_images
        await self._update(guild_id, actor_id, Action.DAILY_IMAGES, old, value, daily=value)

    async def set_daily_budget(self, guild_id: int, value: float | None, actor_id: int) -> None:
        """Set the server's daily budget in estimated US dollars; None removes it."""
        value = check_budget(value)
        old = (await self.limits(guild_id)).daily_budget_usd
        await self._update(guild_id, actor_id, Action.DAILY_BUDGET, old, value, budget=value)

    async def set_allowed_models(
        self, guild_id: int, models: tuple[str, ...] | None, actor_id: int
    ) -> None:
        """Allow only these models here; None allows every model."""
        if models is not None:
            models = check_models(",".join(models))
        old = (await self.limits(guild_id)).allowed_models
        stored = None if models is None else json.dumps(list(models))
        await self._update(guild_id, actor_id, Action.ALLOWED_MODELS, old, models, models=stored)

    async def set_max_n(self, guild_id: int, value: int | None, actor_id: int) -> None:
        """Cap the images per request here; None leaves each model's own maximum."""
        value = check_max_n(value)
        old = (await self.limits(guild_id)).max_n
        await self._update(guild_id, actor_id, Action.MAX_N, old, value, max_n=value)

    async def block(self, guild_id: int, user_id: int, actor_id: int) -> bool:
        """Stop a member making images here; False when they were already blocked."""
        if not await self._put(_BLOCKS, guild_id, user_id, True, actor_id):
            return False
        await self._audit(guild_id, actor_id, Action.BLOCK, user_id, None, None)
        return True

    async def unblock(self, guild_id: int, user_id: int, actor_id: int) -> bool:
        """Let a blocked member make images again; False when they were not blocked."""
        if not await self._put(_BLOCKS, guild_id, user_id, False, actor_id):
            return False
        await self._audit(guild_id, actor_id, Action.UNBLOCK, user_id, None, None)
        return True

    async def blocked_members(self, guild_id: int) -> tuple[int, ...]:
        """The members blocked here, oldest block first."""
        rows = await self._db.execute_fetchall(
            "SELECT user_id FROM guild_blocks WHERE guild_id = ? ORDER BY blocked_at, user_id",
            (guild_id,),
        )
        return tuple(int(row[0]) for row in rows)

    async def reset_day(self, guild_id: int, user_id: int, actor_id: int) -> None:
        """Give a member's day back: today's images made here stop counting; rows stay."""
        now = to_db_time(self._clock())
        await self._write(
            "INSERT INTO quota_resets (guild_id, user_id, reset_at, reset_by) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (guild_id, user_id) DO UPDATE SET "
            "reset_at = excluded.reset_at, reset_by = excluded.reset_by",
            (guild_id, user_id, now, actor_id),
        )
        await self._audit(guild_id, actor_id, Action.RESET_DAY, user_id, None, None)

    async def recent_changes(self, guild_id: int, count: int = 10) -> tuple[LimitChange, ...]:
        """The latest changes of this server's limits, newest first."""
        rows = await self._db.execute_fetchall(
            "SELECT created_at, actor_id, action, target_id, old_value, new_value "
            "FROM limit_changes WHERE guild_id = ? ORDER BY created_at DESC, id DESC LIMIT ?",
            (guild_id, count),
        )
        return tuple(
            LimitChange(str(row[0]), int(row[1]), Action(row[2]), row[3], row[4], row[5])
            for row in rows
        )
