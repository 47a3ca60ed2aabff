"""Per-server limits: the refusals, the audit log, the reset, and their effect on requests."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr

from bot.core.cometapi import CometAPIClient, GenerationResult, TokenUsage
from bot.core.service import GenerationService, Requester, Reservation
from bot.core.validation import GenerationRequest, ImagineOptions, validate
from bot.glue.render import refusal_message
from bot.ledger.limits import (
    Action,
    BudgetExhausted,
    GuildLimits,
    InvalidLimit,
    LimitRefused,
    MemberBlocked,
    ModelNotAllowed,
    Policy,
    QuotaExceeded,
    TooManyImages,
    check_budget,
    check_daily_images,
    check_max_n,
    check_models,
)
from bot.ledger.store import open_ledger

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
GUILD, OTHER_GUILD = 10, 20
ADMIN, MEMBER, FRIEND = 100, 1, 2


class Clock:
    """A settable clock for the ledger."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def request(model: str = "dall-e-3", n: int | None = None) -> GenerationRequest:
    """A validated /imagine request."""
    return validate(ImagineOptions(prompt="a cat", model=model, n=n), "dall-e-3")


ServiceFactory = Callable[[int], AbstractAsyncContextManager[GenerationService]]


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


@pytest.fixture
def open_service(tmp_path: Path, clock: Clock, session: aiohttp.ClientSession) -> ServiceFactory:
    """A service on the test's database file; opening it again is a restart."""

    @asynccontextmanager
    async def opened(daily_limit: int) -> AsyncIterator[GenerationService]:
        # The client is never called: reservations and bookkeeping do not go upstream.
        client = CometAPIClient(
            session, base_url="http://127.0.0.1:9/v1", api_key=SecretStr("k"), timeout_s=1
        )
        async with open_ledger(tmp_path / "usage.db", clock) as ledger:
            yield GenerationService(client, ledger, max_concurrent=4, daily_limit=daily_limit)

    return opened


@pytest.fixture
async def service(open_service: ServiceFactory) -> AsyncIterator[GenerationService]:
    async with open_service(0) as opened:
        yield opened


def who(user: int = MEMBER, guild: int | None = GUILD) -> Requester:
    return Requester(user, guild, 30)


async def deliver(service: GenerationService, reservation: Reservation, tokens: int = 0) -> None:
    """Complete a reservation as delivered, with the tokens a GPT image model reports."""
    usage = TokenUsage(tokens, tokens, 2 * tokens) if tokens else None
    result = GenerationResult(images=[], usage=usage, attempts=1)
    await service.record_delivery(reservation, result, reservation.request.n)


@pytest.mark.parametrize(
    ("policy", "model", "n", "refusal"),
    [
        (Policy(GuildLimits(), blocked=False), "dall-e-2", 10, None),
        (Policy(GuildLimits(), blocked=True), "dall-e-2", 1, MemberBlocked),
        (Policy(GuildLimits(allowed_models=("dall-e-3",)), False), "dall-e-2", 1, ModelNotAllowed),
        (Policy(GuildLimits(allowed_models=("dall-e-3",)), False), "dall-e-3", 1, None),
        (Policy(GuildLimits(max_n=2), blocked=False), "dall-e-2", 3, TooManyImages),
        (Policy(GuildLimits(max_n=2), blocked=False), "dall-e-2", 2, None),
        # A block is named before any other limit.
        (Policy(GuildLimits(max_n=1, allowed_models=()), blocked=True), "x", 5, MemberBlocked),
        (Policy(GuildLimits(max_n=1, allowed_models=()), blocked=False), "x", 5, ModelNotAllowed),
    ],
)
def test_policy_refusals(
    policy: Policy, model: str, n: int, refusal: type[LimitRefused] | None
) -> None:
    """Which limit refuses a request, decided before anything is counted."""
    found = policy.refusal(model, n)
    assert type(found) is refusal if refusal else found is None


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (check_daily_images, -1),
        (check_daily_images, 100_001),
        (check_budget, 0.0),
        (check_budget, -5.0),
        (check_max_n, 0),
        (check_max_n, 11),
        (check_models, "dall-e-3, sdxl"),
    ],
)
def test_bad_limit_values_are_refused(check: Callable[[object], object], value: object) -> None:
    """Values outside what a limit can be are refused with a reason."""
    with pytest.raises(InvalidLimit):
        check(value)


def test_models_are_read_in_catalog_order() -> None:
    """Comma-separated names, any order, repeats dropped; "all" or empty means every model."""
    assert check_models(" gpt-image-2,dall-e-3 ,gpt-image-2") == ("dall-e-3", "gpt-image-2")
    assert check_models("all") is None
    assert check_models("") is None


async def test_blocked_member_is_refused_only_in_that_guild(service: GenerationService) -> None:
    """A block stops the member's next request here; elsewhere and others are unaffected."""
    await service.limits.block(GUILD, MEMBER, ADMIN)
    with pytest.raises(MemberBlocked) as caught:
        await service.reserve(request(), who())
    assert "blocked you" in refusal_message(caught.value)
    await service.reserve(request(), who(FRIEND))
    await service.reserve(request(), who(guild=OTHER_GUILD))
    await service.reserve(request(), who(guild=None))
    assert await service.limits.unblock(GUILD, MEMBER, ADMIN)
    await service.reserve(request(), who())
    assert not await service.limits.unblock(GUILD, MEMBER, ADMIN)


async def test_allowed_models_and_max_n(service: GenerationService) -> None:
    """Only the allowed models, and at most max_n images per request; refusals name them."""
    await service.limits.set_allowed_models(GUILD, ("dall-e-2", "gpt-image-1"), ADMIN)
    with pytest.raises(ModelNotAllowed) as model_refusal:
        await service.reserve(request("dall-e-3"), who())
    assert "only these models: dall-e-2, gpt-image-1" in refusal_message(model_refusal.value)
    await service.limits.set_max_n(GUILD, 3, ADMIN)
    with pytest.raises(TooManyImages) as n_refusal:
        await service.reserve(request("dall-e-2", n=4), who())
    assert "at most 3 images per request" in refusal_message(n_refusal.value)
    await service.reserve(request("dall-e-2", n=3), who())
    await service.limits.set_allowed_models(GUILD, None, ADMIN)
    await service.limits.set_max_n(GUILD, None, ADMIN)
    await service.reserve(request("dall-e-3"), who())
    await service.reserve(request("dall-e-2", n=10), who())


async def test_server_daily_limit_overrides_the_bots(open_service: ServiceFactory) -> None:
    """The server's per-member limit replaces USER_DAILY_IMAGE_LIMIT and counts its own images."""
    async with open_service(1) as service:
        await service.reserve(request("dall-e-2", n=1), who(guild=OTHER_GUILD))
        with pytest.raises(QuotaExceeded) as bots:
            await service.reserve(request("dall-e-2"), who(guild=OTHER_GUILD))
        assert not bots.value.server_limit
        # Here the server allows 3 a day: images made in the other guild do not count.
        await service.limits.set_daily_images(GUILD, 3, ADMIN)
        await service.reserve(request("dall-e-2", n=2), who())
        await service.reserve(request("dall-e-2", n=1), who())
        with pytest.raises(QuotaExceeded) as servers:
            await service.reserve(request("dall-e-2"), who())
        assert (servers.value.limit, servers.value.used, servers.value.server_limit) == (3, 3, True)
        assert "this server's limit of 3" in refusal_message(servers.value)
        allowance = await service.allowance(MEMBER, GUILD)
        assert (allowance.used, allowance.limit, allowance.remaining) == (3, 3, 0)
        # 0 in a server means unlimited there.
        await service.limits.set_daily_images(GUILD, 0, ADMIN)
        await service.reserve(request("dall-e-2", n=10), who())
        assert (await service.allowance(MEMBER, GUILD)).remaining is None


async def test_budget_refuses_once_the_estimate_reaches_it(service: GenerationService) -> None:
    """dall-e-3 standard 1024x1024 is $0.04 built in: a $0.05 budget takes two, then stops."""
    await service.limits.set_daily_budget(GUILD, 0.05, ADMIN)
    await deliver(service, await service.reserve(request(), who()))
    await deliver(service, await service.reserve(request(), who(FRIEND)))
    assert await service.ledger.spent_today(GUILD) == pytest.approx(0.08)
    with pytest.raises(BudgetExhausted) as caught:
        await service.reserve(request(), who())
    assert caught.value.budget_usd == 0.05
    text = refusal_message(caught.value)
    assert "daily budget is used up" in text
    assert "$0.0800 of $0.0500 USD (estimated)" in text
    # Other servers, and failed generations, are not part of this budget.
    await service.reserve(request(), who(guild=OTHER_GUILD))
    await service.limits.set_daily_budget(GUILD, None, ADMIN)
    failed = await service.reserve(request(), who())
    await service.record_failure(failed, "timeout", "slow")
    assert await service.ledger.spent_today(GUILD) == pytest.approx(0.08)


async def test_budget_resets_at_midnight_utc(service: GenerationService, clock: Clock) -> None:
    """Yesterday's spend does not count against today's budget."""
    await service.limits.set_daily_budget(GUILD, 0.01, ADMIN)
    clock.now = datetime(2026, 11, 21, 23, 59, tzinfo=UTC)
    await deliver(service, await service.reserve(request(), who()))
    with pytest.raises(BudgetExhausted):
        await service.reserve(request(), who())
    clock.now = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
    await service.reserve(request(), who())


async def test_giving_a_day_back_keeps_the_rows(
    open_service: ServiceFactory, tmp_path: Path, clock: Clock
) -> None:
    """After a reset the member's count here is zero, the rows stay, and images after count."""
    async with open_service(3) as service:
        await deliver(service, await service.reserve(request(), who()))
        await service.reserve(request(), who())  # pending: holds its image
        await deliver(service, await service.reserve(request(), who(guild=OTHER_GUILD)))
        with pytest.raises(QuotaExceeded):
            await service.reserve(request(), who())
        clock.now = datetime(2026, 11, 21, 12, 0, 1, tzinfo=UTC)
        await service.limits.reset_day(GUILD, MEMBER, ADMIN)
        # Only the images made in the resetting server are given back.
        assert await service.ledger.images_today(MEMBER) == 1
        await service.reserve(request(), who())
        await service.reserve(request(), who())
        with pytest.raises(QuotaExceeded):
            await service.reserve(request(), who())
    with sqlite3.connect(tmp_path / "usage.db") as db:
        assert db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 5


async def test_reset_day_with_a_server_limit(service: GenerationService, clock: Clock) -> None:
    """With the server's own limit the count in that server drops to zero."""
    await service.limits.set_daily_images(GUILD, 1, ADMIN)
    await deliver(service, await service.reserve(request(), who()))
    assert (await service.allowance(MEMBER, GUILD)).used == 1
    clock.now = datetime(2026, 11, 21, 12, 0, 1, tzinfo=UTC)
    await service.limits.reset_day(GUILD, MEMBER, ADMIN)
    assert (await service.allowance(MEMBER, GUILD)).used == 0
    await service.reserve(request(), who())


async def test_limits_survive_a_restart(open_service: ServiceFactory) -> None:
    """Everything an admin set is in the database: a new process enforces it."""
    async with open_service(0) as service:
        await service.limits.set_daily_images(GUILD, 1, ADMIN)
        await service.limits.set_daily_budget(GUILD, 2.5, ADMIN)
        await service.limits.set_allowed_models(GUILD, ("dall-e-3",), ADMIN)
        await service.limits.set_max_n(GUILD, 1, ADMIN)
        await service.limits.block(GUILD, FRIEND, ADMIN)
        await service.reserve(request(), who())
    async with open_service(0) as restarted:
        limits = await restarted.limits.limits(GUILD)
        assert limits == GuildLimits(1, 2.5, ("dall-e-3",), 1)
        assert await restarted.limits.blocked_members(GUILD) == (FRIEND,)
        with pytest.raises(QuotaExceeded):
            await restarted.reserve(request(), who())
        with pytest.raises(MemberBlocked):
            await restarted.reserve(request(), who(FRIEND))


async def test_changes_are_logged_with_who_made_them(service: GenerationService) -> None:
    """Every change is a line of the audit log: actor, action, old and new value."""
    await service.limits.set_daily_images(GUILD, 5, ADMIN)
    await service.limits.set_daily_images(GUILD, 8, ADMIN + 1)
    await service.limits.set_daily_budget(GUILD, 3.0, ADMIN)
    await service.limits.block(GUILD, MEMBER, ADMIN)
    assert not await service.limits.block(GUILD, MEMBER, ADMIN)  # no change, no line
    await service.limits.reset_day(GUILD, FRIEND, ADMIN)
    await service.limits.set_max_n(OTHER_GUILD, 2, ADMIN)  # another server's log
    changes = await service.limits.recent_changes(GUILD)
    assert [(c.actor_id, c.action, c.target_id, c.old_value, c.new_value) for c in changes] == [
        (ADMIN, Action.RESET_DAY, FRIEND, None, None),
        (ADMIN, Action.BLOCK, MEMBER, None, None),
        (ADMIN, Action.DAILY_BUDGET, None, None, "3.0"),
        (ADMIN + 1, Action.DAILY_IMAGES, None, "5", "8"),
        (ADMIN, Action.DAILY_IMAGES, None, None, "5"),
    ]
    # Setting one limit leaves the others as they were.
    assert await service.limits.limits(GUILD) == GuildLimits(8, 3.0, None, None)


async def test_concurrent_requests_cannot_pass_a_server_limit(service: GenerationService) -> None:
    """Twenty simultaneous requests against the server's limit of 7: exactly 7 pass."""
    await service.limits.set_daily_images(GUILD, 7, ADMIN)
    results = await asyncio.gather(
        *(service.reserve(request(), who()) for _ in range(20)), return_exceptions=True
    )
    assert sum(isinstance(result, Reservation) for result in results) == 7
    assert sum(isinstance(result, QuotaExceeded) for result in results) == 13
