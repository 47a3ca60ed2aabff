"""Per-server limits: the refusals, the audit log, the reset, and their effect on requests."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.core.cometapi import CometAPIClient, ErrorKind, UpstreamError
from bot.core.generation import Generation
from bot.core.service import GenerationService, OperatorLimits, Requester
from bot.core.validation import GenerationRequest, ImagineOptions, validate
from bot.glue.render import refusal_message
from bot.ledger.limits import (
    Action,
    BudgetExhausted,
    BudgetScope,
    GuildLimits,
    InvalidLimit,
    LimitRefused,
    MemberBlocked,
    ModelNotAllowed,
    Policy,
    QuotaExceeded,
    TooManyImages,
    Whose,
    check_budget,
    check_daily_images,
    check_max_n,
    check_models,
)
from bot.ledger.store import open_ledger
from tests.conftest import Clock, deliver, open_comet_client, service_on
from tests.fakes.fake_cometapi import FakeCometAPI, Reply

GUILD, OTHER_GUILD = 10, 20
ADMIN, MEMBER, FRIEND = 100, 1, 2


def request(model: str = "dall-e-3", n: int | None = None) -> GenerationRequest:
    """A validated /imagine request (dall-e-3 standard 1024x1024: $0.04 built in)."""
    return validate(ImagineOptions(prompt="a cat", model=model, n=n), "dall-e-3")


ServiceFactory = Callable[[OperatorLimits], AbstractAsyncContextManager[GenerationService]]


@pytest.fixture
def open_service(tmp_path: Path, clock: Clock, comet_client: CometAPIClient) -> ServiceFactory:
    """A service on the test's database file, calling the fake CometAPI; opening it again is
    a restart."""

    @asynccontextmanager
    async def opened(operator: OperatorLimits) -> AsyncIterator[GenerationService]:
        async with open_ledger(tmp_path / "usage.db", clock) as ledger:
            yield service_on(ledger, comet_client, operator=operator)

    return opened


@pytest.fixture
async def service(open_service: ServiceFactory) -> AsyncIterator[GenerationService]:
    async with open_service(OperatorLimits()) as opened:
        yield opened


@pytest.fixture
async def held() -> AsyncIterator[AsyncExitStack]:
    """Generations entered here stay reserved (pending) until the test ends."""
    async with AsyncExitStack() as stack:
        yield stack


def who(user: int = MEMBER, guild: int | None = GUILD) -> Requester:
    return Requester(user, guild, 30)


async def hold(
    stack: AsyncExitStack, service: GenerationService, req: GenerationRequest, requester: Requester
) -> Generation:
    """Reserve a generation and keep it running (pending) until `stack` closes."""
    generation = await stack.enter_async_context(service.start(req, requester))
    stack.push_async_callback(generation.fail, "test_over", "the test ended")
    return generation


async def started(service: GenerationService, req: GenerationRequest, requester: Requester) -> None:
    """The service accepts the request: reserved, then closed before going upstream (free)."""
    async with service.start(req, requester) as generation:
        await generation.fail("not_sent", "the test only checks the reservation")


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
        await started(service, request(), who())
    assert "blocked you" in refusal_message(caught.value)
    await started(service, request(), who(FRIEND))
    await started(service, request(), who(guild=OTHER_GUILD))
    await started(service, request(), who(guild=None))
    assert await service.limits.unblock(GUILD, MEMBER, ADMIN)
    await started(service, request(), who())
    assert not await service.limits.unblock(GUILD, MEMBER, ADMIN)


async def test_a_refused_request_reserves_nothing(service: GenerationService) -> None:
    """Refusals happen before the row is written: no row, nothing counted."""
    await service.limits.block(GUILD, MEMBER, ADMIN)
    with pytest.raises(MemberBlocked):
        await started(service, request(), who())
    rows = await service.ledger.reader.execute_fetchall("SELECT COUNT(*) FROM generations")
    assert list(rows) == [(0,)]


async def test_allowed_models_and_max_n(service: GenerationService) -> None:
    """Only the allowed models, and at most max_n images per request; refusals name them."""
    await service.limits.set_allowed_models(GUILD, ("dall-e-2", "gpt-image-1"), ADMIN)
    with pytest.raises(ModelNotAllowed) as model_refusal:
        await started(service, request("dall-e-3"), who())
    assert "only these models: dall-e-2, gpt-image-1" in refusal_message(model_refusal.value)
    await service.limits.set_max_n(GUILD, 3, ADMIN)
    with pytest.raises(TooManyImages) as n_refusal:
        await started(service, request("dall-e-2", n=4), who())
    assert "at most 3 images per request" in refusal_message(n_refusal.value)
    await started(service, request("dall-e-2", n=3), who())
    await service.limits.set_allowed_models(GUILD, None, ADMIN)
    await service.limits.set_max_n(GUILD, None, ADMIN)
    await started(service, request("dall-e-3"), who())
    await started(service, request("dall-e-2", n=10), who())


async def test_a_server_daily_limit_only_tightens_the_operators(
    open_service: ServiceFactory,
) -> None:
    """The server's per-member limit applies on top of USER_DAILY_IMAGE_LIMIT, never instead.

    Changed: a server's limit used to replace the bot's. Now the operator's 5 counts every
    server and DM, the server's 3 only the server's own images; a server's 0 means "no limit
    of the server's own", and the operator's limit still holds.
    """
    async with open_service(OperatorLimits(user_daily_images=5)) as service:
        await deliver(service, request("dall-e-2"), who(guild=OTHER_GUILD))
        await service.limits.set_daily_images(GUILD, 3, ADMIN)
        await deliver(service, request("dall-e-2", n=2), who())
        await deliver(service, request("dall-e-2", n=1), who())
        with pytest.raises(QuotaExceeded) as servers:
            await started(service, request("dall-e-2"), who())
        # The image made in the other server does not count against this server's limit.
        assert (servers.value.limit, servers.value.used, servers.value.whose) == (
            3,
            3,
            Whose.SERVER,
        )
        assert "this server's limit of 3" in refusal_message(servers.value)
        allowance = await service.allowance(MEMBER, GUILD, own=True)
        assert (allowance.operator_limit, allowance.operator_used) == (5, 4)
        assert (allowance.server_limit, allowance.server_used, allowance.remaining) == (3, 3, 0)
        # An admin looking at the member sees only what the member did in the admin's server.
        admin_view = await service.allowance(MEMBER, GUILD, own=False)
        assert (admin_view.operator_used, admin_view.server_used) == (None, 3)

        await service.limits.set_daily_images(GUILD, 0, ADMIN)
        allowance = await service.allowance(MEMBER, GUILD, own=True)
        assert (allowance.server_limit, allowance.remaining) == (None, 1)
        await deliver(service, request("dall-e-2"), who())
        with pytest.raises(QuotaExceeded) as operators:
            await started(service, request("dall-e-2"), who())
        assert (operators.value.limit, operators.value.used, operators.value.whose) == (
            5,
            5,
            Whose.OPERATOR,
        )
        assert "all servers together" in refusal_message(operators.value)


@pytest.mark.parametrize("server_limit", [None, 0, 10])
async def test_an_operator_limit_of_one_is_one_image_a_day_in_any_server(
    open_service: ServiceFactory, clock: Clock, server_limit: int | None
) -> None:
    """USER_DAILY_IMAGE_LIMIT=1: whatever the server sets, and after its reset, one a UTC day."""
    async with open_service(OperatorLimits(user_daily_images=1)) as service:
        if server_limit is not None:
            await service.limits.set_daily_images(GUILD, server_limit, ADMIN)
        await deliver(service, request(), who())
        clock.at("2026-11-21T12:00:01")
        await service.limits.reset_day(GUILD, MEMBER, ADMIN)
        clock.at("2026-11-21T12:00:02")
        for where in (GUILD, OTHER_GUILD, None):
            with pytest.raises(QuotaExceeded) as caught:
                await started(service, request(), who(guild=where))
            assert caught.value.whose is Whose.OPERATOR
        clock.at("2026-11-22T00:00:00")
        await deliver(service, request(), who())


async def test_direct_messages_see_only_the_operators_limits(
    open_service: ServiceFactory,
) -> None:
    """A server's limits and budget never apply outside it."""
    async with open_service(OperatorLimits(user_daily_images=2)) as service:
        await service.limits.set_daily_images(GUILD, 1, ADMIN)
        await service.limits.set_daily_budget(GUILD, 0.01, ADMIN)
        await deliver(service, request(), who(guild=None))
        await deliver(service, request(), who(guild=None))
        with pytest.raises(QuotaExceeded) as caught:
            await started(service, request(), who(guild=None))
        assert caught.value.whose is Whose.OPERATOR
        allowance = await service.allowance(MEMBER, None, own=True)
        assert (allowance.operator_limit, allowance.operator_used) == (2, 2)
        assert (allowance.server_limit, allowance.server_used) == (None, None)


async def test_budget_refuses_when_the_estimate_does_not_fit(
    service: GenerationService, comet: FakeCometAPI
) -> None:
    """dall-e-3 standard 1024x1024 is $0.04 built in: a $0.10 budget takes two, then stops.

    Changed: the estimate is now reserved with the request, so a budget refuses a request
    that would pass it (it used to let requests through until spend reached the budget).
    Failures before upstream answered cost nothing; a billed call whose images Discord
    refused is spend.
    """
    await service.limits.set_daily_budget(GUILD, 0.10, ADMIN)
    await deliver(service, request(), who())
    await deliver(service, request(), who(FRIEND))
    assert (await service.ledger.counts(MEMBER, GUILD)).server_spend_usd == pytest.approx(0.08)
    with pytest.raises(BudgetExhausted) as caught:
        await started(service, request(), who())
    assert (caught.value.scope, caught.value.budget_usd) == (BudgetScope.SERVER, 0.10)
    assert (caught.value.spent_usd, caught.value.needed_usd) == (pytest.approx(0.08), 0.04)
    text = refusal_message(caught.value)
    assert "has too little left for this request, estimated at $0.0400" in text
    assert "$0.0800 of $0.1000 USD (estimated)" in text
    # Other servers are not part of this budget.
    await deliver(service, request(), who(guild=OTHER_GUILD))
    await service.limits.set_daily_budget(GUILD, None, ADMIN)
    comet.queue(Reply.hang())
    async with open_comet_client(comet, timeout_s=0.2) as impatient:
        failing = service_on(service.ledger, impatient)
        async with failing.start(request(), who()) as generation:
            with pytest.raises(UpstreamError) as raised:
                await generation.call_upstream()
    assert (raised.value.kind, raised.value.billed) == (ErrorKind.TIMEOUT, False)
    assert (await service.ledger.counts(MEMBER, GUILD)).server_spend_usd == pytest.approx(0.08)
    async with service.start(request(), who()) as generation:
        await generation.call_upstream()
        await generation.fail("delivery_failed", "Discord refused the images")
    assert (await service.ledger.counts(MEMBER, GUILD)).server_spend_usd == pytest.approx(0.12)


async def test_a_used_up_budget_says_so(service: GenerationService) -> None:
    """Spend at the budget: "used up", and even an unpriced request is refused."""
    await service.limits.set_daily_budget(GUILD, 0.08, ADMIN)
    await deliver(service, request(), who())
    await deliver(service, request(), who())
    with pytest.raises(BudgetExhausted) as caught:
        await started(service, request("qwen-image"), who())
    assert "daily budget is used up" in refusal_message(caught.value)
    assert caught.value.needed_usd == 0.0


async def test_budget_resets_at_midnight_utc(service: GenerationService, clock: Clock) -> None:
    """Yesterday's spend does not count against today's budget.

    Changed: $0.05 (it was $0.01) so that one $0.04 estimate fits at all.
    """
    await service.limits.set_daily_budget(GUILD, 0.05, ADMIN)
    clock.now = datetime(2026, 11, 21, 23, 59, tzinfo=UTC)
    await deliver(service, request(), who())
    with pytest.raises(BudgetExhausted):
        await started(service, request(), who())
    clock.now = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
    await started(service, request(), who())


async def test_giving_a_day_back_keeps_the_rows(
    open_service: ServiceFactory, tmp_path: Path, clock: Clock, held: AsyncExitStack
) -> None:
    """After a reset the member's count here is zero, the rows stay, and images after count.

    Changed: a reset gives back only images counted against the server's own limit; the
    operator's limit (4 here) keeps counting every image of the day, here and elsewhere.
    """
    async with open_service(OperatorLimits(user_daily_images=4)) as service:
        await service.limits.set_daily_images(GUILD, 2, ADMIN)
        await deliver(service, request(), who())
        await hold(held, service, request(), who())  # pending: holds its image
        await deliver(service, request(), who(guild=OTHER_GUILD))
        with pytest.raises(QuotaExceeded) as before:
            await started(service, request(), who())
        assert before.value.whose is Whose.SERVER
        clock.now = datetime(2026, 11, 21, 12, 0, 1, tzinfo=UTC)
        await service.limits.reset_day(GUILD, MEMBER, ADMIN)
        allowance = await service.allowance(MEMBER, GUILD, own=True)
        assert (allowance.server_used, allowance.operator_used) == (0, 3)
        await hold(held, service, request(), who())
        with pytest.raises(QuotaExceeded) as after:
            await started(service, request(), who())
        assert (after.value.whose, after.value.used) == (Whose.OPERATOR, 4)
        await held.aclose()
    with sqlite3.connect(tmp_path / "usage.db") as db:
        assert db.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 4


async def test_reset_day_with_a_server_limit(service: GenerationService, clock: Clock) -> None:
    """With the server's own limit the count in that server drops to zero."""
    await service.limits.set_daily_images(GUILD, 1, ADMIN)
    await deliver(service, request(), who())
    assert (await service.allowance(MEMBER, GUILD, own=True)).server_used == 1
    clock.now = datetime(2026, 11, 21, 12, 0, 1, tzinfo=UTC)
    await service.limits.reset_day(GUILD, MEMBER, ADMIN)
    assert (await service.allowance(MEMBER, GUILD, own=True)).server_used == 0
    await deliver(service, request(), who())


async def test_limits_survive_a_restart(open_service: ServiceFactory) -> None:
    """Everything an admin set is in the database: a new process enforces it."""
    async with open_service(OperatorLimits()) as service:
        await service.limits.set_daily_images(GUILD, 1, ADMIN)
        await service.limits.set_daily_budget(GUILD, 2.5, ADMIN)
        await service.limits.set_allowed_models(GUILD, ("dall-e-3",), ADMIN)
        await service.limits.set_max_n(GUILD, 1, ADMIN)
        await service.limits.block(GUILD, FRIEND, ADMIN)
        await deliver(service, request(), who())
    async with open_service(OperatorLimits()) as restarted:
        limits = await restarted.limits.limits(GUILD)
        assert limits == GuildLimits(1, 2.5, ("dall-e-3",), 1)
        assert await restarted.limits.blocked_members(GUILD) == (FRIEND,)
        with pytest.raises(QuotaExceeded):
            await started(restarted, request(), who())
        with pytest.raises(MemberBlocked):
            await started(restarted, request(), who(FRIEND))


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


async def test_concurrent_requests_cannot_pass_a_server_limit(
    service: GenerationService, held: AsyncExitStack
) -> None:
    """Twenty simultaneous requests against the server's limit of 7: exactly 7 pass."""
    await service.limits.set_daily_images(GUILD, 7, ADMIN)
    results = await asyncio.gather(
        *(hold(held, service, request(), who()) for _ in range(20)), return_exceptions=True
    )
    assert sum(isinstance(result, Generation) for result in results) == 7
    assert sum(isinstance(result, QuotaExceeded) for result in results) == 13
    assert service.in_flight == 7


async def test_concurrent_requests_cannot_pass_a_server_budget(
    service: GenerationService, held: AsyncExitStack
) -> None:
    """Twenty simultaneous $0.04 requests against a $0.20 budget: exactly 5 are reserved."""
    await service.limits.set_daily_budget(GUILD, 0.20, ADMIN)
    results = await asyncio.gather(
        *(hold(held, service, request(), who(user)) for user in range(20)),
        return_exceptions=True,
    )
    assert sum(isinstance(result, Generation) for result in results) == 5
    assert sum(isinstance(result, BudgetExhausted) for result in results) == 15
