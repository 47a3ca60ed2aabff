"""Every daily limit one reservation checks: the operator's ceilings, a server's, and budgets.

The operator's limits are ceilings a server can only tighten: both apply, each counted in
its own scope. Budgets reserve each request's estimate inside the insert, so concurrent
requests never pass one together; what a row spends moves from its reservation to its
billed cost when upstream answers.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.ledger.db import SqliteDatabase
from bot.ledger.limits import (
    BudgetExhausted,
    BudgetScope,
    Ceilings,
    LimitsStore,
    QuotaExceeded,
    Whose,
)
from bot.ledger.store import NewGeneration, UsageLedger, connect
from tests.conftest import Clock, add_row, answer, generation

GUILD, OTHER_GUILD = 10, 20
MEMBER, FRIEND, ADMIN = 1, 2, 100
TOMORROW = datetime(2026, 11, 22, tzinfo=UTC)


def where(guild: int | None, user: int = MEMBER, *, n: int = 1, usd: float = 0.0) -> NewGeneration:
    """A request of `user` in `guild` (None: a direct message)."""
    return generation(user, guild, n=n, reserved_usd=usd)


async def refusal(
    ledger: UsageLedger, entry: NewGeneration, ceilings: Ceilings
) -> QuotaExceeded | BudgetExhausted:
    """The refusal the reservation raises (it must raise one)."""
    with pytest.raises((QuotaExceeded, BudgetExhausted)) as caught:
        await ledger.reserve(entry, ceilings)
    return caught.value


# --- The operator's daily images, and a server's on top ---------------------------------------

# (ceilings, where the member already made one image each, where they ask next, who refuses)
# `None` for a guild is a direct message; `None` for who refuses means the request passes.
CEILING_CASES = [
    pytest.param(
        Ceilings(operator_daily_images=1), [GUILD], GUILD, Whose.OPERATOR, id="no-server-limit"
    ),
    pytest.param(
        Ceilings(operator_daily_images=1), [OTHER_GUILD], GUILD, Whose.OPERATOR, id="other-server"
    ),
    pytest.param(
        Ceilings(operator_daily_images=1), [None], GUILD, Whose.OPERATOR, id="dm-then-server"
    ),
    pytest.param(
        Ceilings(operator_daily_images=1), [GUILD], None, Whose.OPERATOR, id="server-then-dm"
    ),
    pytest.param(
        Ceilings(operator_daily_images=1, server_daily_images=5),
        [GUILD],
        GUILD,
        Whose.OPERATOR,
        id="a-looser-server-limit-lifts-nothing",
    ),
    pytest.param(
        Ceilings(operator_daily_images=5, server_daily_images=1),
        [GUILD],
        GUILD,
        Whose.SERVER,
        id="a-tighter-server-limit-applies",
    ),
    pytest.param(
        Ceilings(operator_daily_images=5, server_daily_images=1),
        [OTHER_GUILD],
        GUILD,
        None,
        id="the-server-counts-only-its-own-images",
    ),
    pytest.param(
        Ceilings(operator_daily_images=2, server_daily_images=1),
        [None],
        None,
        None,
        id="dms-ignore-a-server-limit",
    ),
    pytest.param(
        Ceilings(operator_daily_images=2, server_daily_images=1),
        [None, None],
        None,
        Whose.OPERATOR,
        id="dms-see-the-operator-limit",
    ),
    pytest.param(
        Ceilings(server_daily_images=1), [GUILD], GUILD, Whose.SERVER, id="server-limit-alone"
    ),
    pytest.param(Ceilings(server_daily_images=1), [GUILD], None, None, id="dm-without-operator"),
    pytest.param(Ceilings(), [GUILD] * 5, GUILD, None, id="no-limits"),
]


@pytest.mark.parametrize(("ceilings", "before", "ask_in", "refused_by"), CEILING_CASES)
async def test_whose_limit_refuses(
    ledger: UsageLedger,
    ceilings: Ceilings,
    before: list[int | None],
    ask_in: int | None,
    refused_by: Whose | None,
) -> None:
    """The operator's limit counts every server and DM; a server's only its own images."""
    for guild in before:
        await add_row(ledger, where(guild), ceilings=ceilings)
    if refused_by is None:
        await ledger.reserve(where(ask_in), ceilings)
        return
    refused = await refusal(ledger, where(ask_in), ceilings)
    assert isinstance(refused, QuotaExceeded)
    assert refused.whose is refused_by
    assert refused.server_limit == (refused_by is Whose.SERVER)
    expected_limit = (
        ceilings.operator_daily_images
        if refused_by is Whose.OPERATOR
        else ceilings.server_daily_images
    )
    assert (refused.limit, refused.requested, refused.resets_at) == (expected_limit, 1, TOMORROW)


async def test_an_operator_limit_of_one_holds_across_a_whole_day(
    ledger: UsageLedger, clock: Clock
) -> None:
    """USER_DAILY_IMAGE_LIMIT=1, a server with no limit of its own: one image per UTC day."""
    ceilings = Ceilings(operator_daily_images=1, server_daily_images=None)
    clock.at("2026-11-21T00:00:00")
    await add_row(ledger, where(GUILD), ceilings=ceilings)
    for moment in ("2026-11-21T00:00:01", "2026-11-21T12:00:00", "2026-11-21T23:59:59.999999"):
        clock.at(moment)
        for guild in (GUILD, OTHER_GUILD, None):
            await refusal(ledger, where(guild), ceilings)
    clock.at("2026-11-22T00:00:00")
    await ledger.reserve(where(OTHER_GUILD), ceilings)


async def test_a_server_reset_gives_back_only_the_servers_own_count(
    ledger: UsageLedger, clock: Clock
) -> None:
    """After "give the day back" the server's count is zero; the operator's count is not.

    Operator 3 a day, the server 2: two images here and one in another server. The reset
    lets the member make images here again, but only up to the operator's 3.
    """
    ceilings = Ceilings(operator_daily_images=3, server_daily_images=2)
    limits = LimitsStore(ledger.connection, ledger.now)
    await add_row(ledger, where(GUILD), ceilings=ceilings)
    await add_row(ledger, where(OTHER_GUILD), ceilings=ceilings)
    before = await ledger.counts(MEMBER, GUILD)
    assert (before.operator_images, before.server_images) == (2, 1)
    clock.now += timedelta(seconds=1)
    await limits.reset_day(GUILD, MEMBER, ADMIN)
    after = await ledger.counts(MEMBER, GUILD)
    assert (after.operator_images, after.server_images) == (2, 0)
    clock.now += timedelta(seconds=1)
    await ledger.reserve(where(GUILD), ceilings)
    refused = await refusal(ledger, where(GUILD), ceilings)
    assert isinstance(refused, QuotaExceeded)
    assert (refused.whose, refused.used) == (Whose.OPERATOR, 3)


async def test_a_server_reset_never_lifts_the_operators_limit(
    ledger: UsageLedger, clock: Clock
) -> None:
    """Operator 1, the server no limit: a reset in the server gives back nothing."""
    ceilings = Ceilings(operator_daily_images=1)
    limits = LimitsStore(ledger.connection, ledger.now)
    await add_row(ledger, where(GUILD), ceilings=ceilings)
    clock.now += timedelta(seconds=1)
    await limits.reset_day(GUILD, MEMBER, ADMIN)
    clock.now += timedelta(seconds=1)
    refused = await refusal(ledger, where(GUILD), ceilings)
    assert isinstance(refused, QuotaExceeded)
    assert (refused.whose, refused.used) == (Whose.OPERATOR, 1)


async def test_a_reset_counts_only_images_made_before_it(ledger: UsageLedger, clock: Clock) -> None:
    """Images made after the reset count against the server's limit again; rows stay."""
    ceilings = Ceilings(server_daily_images=2)
    limits = LimitsStore(ledger.connection, ledger.now)
    await add_row(ledger, where(GUILD, n=2), ceilings=ceilings)
    clock.now += timedelta(seconds=1)
    await limits.reset_day(GUILD, MEMBER, ADMIN)
    clock.now += timedelta(seconds=1)
    await add_row(ledger, where(GUILD), ceilings=ceilings)
    assert (await ledger.counts(MEMBER, GUILD)).server_images == 1
    await add_row(ledger, where(GUILD), ceilings=ceilings)
    refused = await refusal(ledger, where(GUILD), ceilings)
    assert isinstance(refused, QuotaExceeded)
    assert refused.whose is Whose.SERVER
    (rows,) = await ledger.connection.execute_fetchall("SELECT COUNT(*) FROM generations")
    assert rows[0] == 3


async def test_dms_ignore_a_servers_ceilings_whatever_the_request(ledger: UsageLedger) -> None:
    """A server's image limit and budget, passed for a DM, hold back nothing there."""
    ceilings = Ceilings(server_daily_images=1, server_daily_budget_usd=0.2)
    await ledger.reserve(where(None, n=2, usd=0.5), ceilings)
    images = await refusal(ledger, where(GUILD, n=2), ceilings)
    assert isinstance(images, QuotaExceeded)
    assert images.whose is Whose.SERVER
    budget = await refusal(ledger, where(GUILD, usd=0.5), ceilings)
    assert isinstance(budget, BudgetExhausted)
    assert budget.scope is BudgetScope.SERVER


async def test_a_dm_has_no_server_counts(ledger: UsageLedger) -> None:
    """Outside a server the server's image and spend counts are zero, whatever the guilds did."""
    await add_row(ledger, where(GUILD, usd=0.1), cost=0.1)
    counts = await ledger.counts(MEMBER, None)
    assert (counts.operator_images, counts.server_images) == (1, 0)
    assert (counts.user_spend_usd, counts.server_spend_usd, counts.bot_spend_usd) == (
        pytest.approx(0.1),
        0.0,
        pytest.approx(0.1),
    )


# --- Budgets ----------------------------------------------------------------------------------

BUDGET = 1.0
ESTIMATE = 0.15  # 6 fit in 1.0, a 7th does not


def budget_ceilings(scope: BudgetScope) -> Ceilings:
    return {
        BudgetScope.USER: Ceilings(user_daily_budget_usd=BUDGET),
        BudgetScope.SERVER: Ceilings(server_daily_budget_usd=BUDGET),
        BudgetScope.BOT: Ceilings(bot_daily_budget_usd=BUDGET),
    }[scope]


def sharing(scope: BudgetScope, index: int) -> NewGeneration:
    """The index-th request among many that all draw on one budget of `scope`."""
    if scope is BudgetScope.USER:  # one member, in different servers and DMs
        guild = (GUILD, OTHER_GUILD, None)[index % 3]
        return generation(MEMBER, guild, reserved_usd=ESTIMATE, request_id=f"r{index}")
    if scope is BudgetScope.SERVER:  # different members of one server
        return generation(100 + index, GUILD, reserved_usd=ESTIMATE, request_id=f"r{index}")
    # different members in different servers and DMs
    guild = (GUILD, OTHER_GUILD, None)[index % 3]
    return generation(100 + index, guild, reserved_usd=ESTIMATE, request_id=f"r{index}")


@pytest.mark.parametrize("scope", list(BudgetScope))
async def test_concurrent_reservations_never_pass_a_budget_together(
    ledger: UsageLedger, scope: BudgetScope
) -> None:
    """Thirty simultaneous requests of $0.15 against a $1 budget: exactly six are reserved."""
    ceilings = budget_ceilings(scope)
    results = await asyncio.gather(
        *(ledger.reserve(sharing(scope, index), ceilings) for index in range(30)),
        return_exceptions=True,
    )
    passed = [result for result in results if isinstance(result, int)]
    refused = [result for result in results if isinstance(result, BudgetExhausted)]
    assert (len(passed), len(refused)) == (6, 24)
    assert {error.scope for error in refused} == {scope}
    counts = await ledger.counts(MEMBER, GUILD)
    spend = {
        BudgetScope.USER: counts.user_spend_usd,
        BudgetScope.SERVER: counts.server_spend_usd,
        BudgetScope.BOT: counts.bot_spend_usd,
    }[scope]
    assert spend == pytest.approx(6 * ESTIMATE)
    assert spend <= BUDGET


async def test_two_connections_never_pass_a_budget_together(tmp_path: Path, clock: Clock) -> None:
    """The check is inside the insert, so even two writers on the file cannot overshoot."""
    path = tmp_path / "usage.db"
    first_db, second_db = await connect(path), await connect(path)
    try:
        writers = (
            UsageLedger(SqliteDatabase(first_db, path), clock),
            UsageLedger(SqliteDatabase(second_db, path), clock),
        )
        ceilings = budget_ceilings(BudgetScope.BOT)
        results = await asyncio.gather(
            *(
                writers[index % 2].reserve(sharing(BudgetScope.BOT, index), ceilings)
                for index in range(30)
            ),
            return_exceptions=True,
        )
    finally:
        await first_db.close()
        await second_db.close()
    assert sum(isinstance(result, int) for result in results) == 6
    assert sum(isinstance(result, BudgetExhausted) for result in results) == 24


async def test_a_server_budget_is_only_that_servers(ledger: UsageLedger) -> None:
    """Another server's spend and the member's DMs draw nothing from this server's budget."""
    ceilings = Ceilings(server_daily_budget_usd=0.2)
    await add_row(ledger, where(OTHER_GUILD, usd=0.5), cost=0.5)
    await add_row(ledger, where(None, usd=0.5), cost=0.5, ceilings=ceilings)  # a DM: no server
    await ledger.reserve(where(GUILD, usd=0.2), ceilings)
    refused = await refusal(ledger, where(GUILD, usd=0.01), ceilings)
    assert isinstance(refused, BudgetExhausted)
    assert refused.scope is BudgetScope.SERVER


async def test_a_pending_reservation_counts_until_upstream_answers(ledger: UsageLedger) -> None:
    """The estimate holds budget while running; upstream's answer replaces it by the cost."""
    ceilings = Ceilings(user_daily_budget_usd=BUDGET)
    row = await ledger.reserve(where(GUILD, usd=0.6), ceilings)
    assert (await ledger.counts(MEMBER, GUILD)).user_spend_usd == pytest.approx(0.6)
    refused = await refusal(ledger, where(GUILD, usd=0.6), ceilings)
    assert isinstance(refused, BudgetExhausted)
    assert (refused.spent_usd, refused.needed_usd) == (pytest.approx(0.6), 0.6)
    await ledger.record_answer(row, answer(0.1))
    assert (await ledger.counts(MEMBER, GUILD)).user_spend_usd == pytest.approx(0.1)
    await ledger.reserve(where(GUILD, usd=0.6), ceilings)
    assert (await ledger.counts(MEMBER, GUILD)).user_spend_usd == pytest.approx(0.7)


async def test_an_answer_without_a_price_settles_to_nothing(ledger: UsageLedger) -> None:
    """Upstream answered but the call could not be priced: the reservation stops counting."""
    row = await ledger.reserve(where(GUILD, usd=0.6), Ceilings())
    await ledger.record_answer(row, answer(None))
    assert (await ledger.counts(MEMBER, GUILD)).user_spend_usd == 0.0


# (outcome, images the member received) -> (images counted, dollars counted), for a row of
# n=2 that reserved $0.50 and, when upstream answered, cost $0.30.
SETTLED_CASES = [
    ("pending", None, 2, 0.5),
    ("answered", None, 2, 0.3),
    ("delivered", None, 2, 0.3),
    ("delivered", 1, 1, 0.3),
    ("delivery_failed", None, 0, 0.3),
    ("delivery_failed", 1, 1, 0.3),
    ("corrupt_image", None, 0, 0.3),
    ("image_too_large", None, 0, 0.3),
    ("interrupted_delivery", None, 0, 0.3),
    ("interrupted_delivery", 1, 1, 0.3),
    ("failed", None, 0, 0.0),
    ("interrupted", None, 0, 0.0),
]


@pytest.mark.parametrize(("outcome", "received", "images", "spend"), SETTLED_CASES)
async def test_what_each_outcome_counts(
    ledger: UsageLedger, outcome: str, received: int | None, images: int, spend: float
) -> None:
    """Billed calls count as spend whatever followed; images only as the member received them."""
    await add_row(ledger, where(GUILD, n=2, usd=0.5), outcome, cost=0.3, received=received)
    counts = await ledger.counts(MEMBER, GUILD)
    assert (counts.operator_images, counts.server_images) == (images, images)
    assert (counts.user_spend_usd, counts.server_spend_usd, counts.bot_spend_usd) == (
        pytest.approx(spend),
        pytest.approx(spend),
        pytest.approx(spend),
    )


async def test_a_billed_failure_blocks_the_budget_but_not_the_images(ledger: UsageLedger) -> None:
    """A delivery that failed after upstream billed uses budget, and leaves the images free."""
    ceilings = Ceilings(operator_daily_images=1, server_daily_budget_usd=0.3)
    await add_row(ledger, where(GUILD, usd=0.3), "delivery_failed", cost=0.3, ceilings=ceilings)
    refused = await refusal(ledger, where(GUILD, usd=0.01), ceilings)
    assert isinstance(refused, BudgetExhausted)
    assert refused.scope is BudgetScope.SERVER
    await ledger.reserve(where(GUILD, usd=0.0), Ceilings(operator_daily_images=1))


# (the budget that refuses, spent before, the request's estimate, what the text says)
REFUSAL_CASES = [
    (
        BudgetScope.USER,
        0.6,
        0.5,
        "user daily budget $1.00: $0.6000 spent or reserved, this request needs $0.5000",
    ),
    (
        BudgetScope.SERVER,
        1.2,
        0.0,
        "server daily budget $1.00: $1.2000 spent or reserved, this request needs $0.0000",
    ),
    (
        BudgetScope.BOT,
        1.0,
        0.0,
        "bot daily budget $1.00: $1.0000 spent or reserved, this request needs $0.0000",
    ),
]


@pytest.mark.parametrize(("scope", "spent", "needed", "text"), REFUSAL_CASES)
async def test_the_refusal_names_the_budget_and_the_dollars(
    ledger: UsageLedger, scope: BudgetScope, spent: float, needed: float, text: str
) -> None:
    """It says which budget, what was spent or reserved, what the request needs, when it resets.

    Once spend reaches a budget nothing more passes, not even a request with no price; spend
    may pass the budget when a call costs more than its reservation.
    """
    ceilings = budget_ceilings(scope)
    await add_row(ledger, where(GUILD, usd=spent), cost=spent)
    refused = await refusal(ledger, where(GUILD, usd=needed), ceilings)
    assert isinstance(refused, BudgetExhausted)
    assert (refused.scope, refused.budget_usd) == (scope, BUDGET)
    assert (refused.spent_usd, refused.needed_usd) == (pytest.approx(spent), needed)
    assert refused.resets_at == TOMORROW
    assert str(refused) == text


async def test_limits_are_named_in_a_fixed_order(ledger: UsageLedger) -> None:
    """Everything exhausted: images first, then the user's, the server's, the bot's budget."""
    await add_row(ledger, where(GUILD, usd=1.0), cost=1.0)
    ceilings = Ceilings(
        operator_daily_images=1,
        server_daily_images=1,
        user_daily_budget_usd=BUDGET,
        server_daily_budget_usd=BUDGET,
        bot_daily_budget_usd=BUDGET,
    )
    named: list[Whose | BudgetScope] = []
    for lifted in (
        "operator_daily_images",
        "server_daily_images",
        "user_daily_budget_usd",
        "server_daily_budget_usd",
        "bot_daily_budget_usd",
    ):
        refused = await refusal(ledger, where(GUILD, usd=0.1), ceilings)
        named.append(refused.whose if isinstance(refused, QuotaExceeded) else refused.scope)
        ceilings = replace(ceilings, **{lifted: None})
    assert named == [
        Whose.OPERATOR,
        Whose.SERVER,
        BudgetScope.USER,
        BudgetScope.SERVER,
        BudgetScope.BOT,
    ]
    await ledger.reserve(where(GUILD, usd=0.1), ceilings)


async def test_budgets_reset_at_midnight_utc(ledger: UsageLedger, clock: Clock) -> None:
    """Yesterday's spend does not count against today's budget."""
    ceilings = Ceilings(user_daily_budget_usd=0.5)
    clock.at("2026-11-21T23:59:59")
    await add_row(ledger, where(GUILD, usd=0.5), cost=0.5, ceilings=ceilings)
    await refusal(ledger, where(GUILD, usd=0.0), ceilings)
    clock.at("2026-11-22T00:00:00")
    await ledger.reserve(where(GUILD, usd=0.5), ceilings)
