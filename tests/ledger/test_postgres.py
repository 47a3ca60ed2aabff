"""What only PostgreSQL has: several processes on one database, their locks and their rows.

Each "process" is a ledger on its own asyncpg pool, as each bot process opens one; they
share one real database of the session's throwaway cluster (tests/pg.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import timedelta

import asyncpg
import pytest

from bot.__main__ import main
from bot.ledger.busy import LedgerBusy
from bot.ledger.limits import BudgetExhausted, BudgetScope, Ceilings, QuotaExceeded
from bot.ledger.pg_migrations import PG_SCHEMA_VERSION
from bot.ledger.postgres import StorageUnavailable, open_pool, open_postgres_ledger, shown_url
from bot.ledger.store import RESERVE_LOCK_WAIT_S, LedgerInUse, UsageLedger
from tests.conftest import Clock, add_row, generation
from tests.pg import PgCluster


async def processes(
    stack: AsyncExitStack, url: str, clock: Clock, *names: str
) -> list[UsageLedger]:
    """One ledger per instance name, each on its own pool, as separate bot processes."""
    return [
        await stack.enter_async_context(open_postgres_ledger(url, clock, instance_id=name))
        for name in names
    ]


@pytest.fixture
async def two(pg_url: str, clock: Clock) -> AsyncIterator[list[UsageLedger]]:
    async with AsyncExitStack() as stack:
        yield await processes(stack, pg_url, clock, "a", "b")


async def test_two_processes_never_pass_a_daily_limit_together(two: list[UsageLedger]) -> None:
    """40 reservations for one member at once, from two processes: exactly the limit's 5."""
    results = await asyncio.gather(
        *(
            two[index % 2].reserve(generation(), Ceilings(operator_daily_images=5))
            for index in range(40)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(result, int) for result in results) == 5
    assert sum(isinstance(result, QuotaExceeded) for result in results) == 35


@pytest.mark.parametrize("scope", [BudgetScope.SERVER, BudgetScope.BOT])
async def test_two_processes_never_pass_a_shared_budget_together(
    two: list[UsageLedger], scope: BudgetScope
) -> None:
    """Different members drawing on one server's (or the bot's) budget from two processes."""
    ceilings = (
        Ceilings(server_daily_budget_usd=1.0)
        if scope is BudgetScope.SERVER
        else Ceilings(bot_daily_budget_usd=1.0)
    )
    results = await asyncio.gather(
        *(
            two[index % 2].reserve(
                generation(100 + index, 10, reserved_usd=0.25, request_id=f"r{index}"), ceilings
            )
            for index in range(24)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(result, int) for result in results) == 4
    assert all(isinstance(result, int | BudgetExhausted) for result in results)


async def test_a_restart_closes_only_its_own_rows(
    pg_url: str, clock: Clock, two: list[UsageLedger]
) -> None:
    """b restarts: its pending row ends; a's, still running, stays pending and keeps counting."""
    first, second = two
    mine = await second.reserve(generation(user_id=2, request_id="b-row"), Ceilings())
    theirs = await first.reserve(generation(user_id=1, request_id="a-row"), Ceilings())
    assert await second.mark_stale_pending() == 1
    assert await first.status_of(theirs) == "pending"
    assert await first.status_of(mine) == "interrupted"
    assert (await first.counts(1, 10)).operator_images == 1


async def test_rows_abandoned_by_an_instance_that_never_returns_are_closed(
    clock: Clock, two: list[UsageLedger]
) -> None:
    """A pending row far older than any generation lasts is closed by whoever starts next."""
    first, second = two
    old = await first.reserve(generation(request_id="old"), Ceilings())
    clock.now += timedelta(hours=7)
    assert await second.mark_stale_pending() == 1
    assert await second.status_of(old) == "interrupted"


async def test_a_second_process_with_the_same_instance_id_is_refused(
    pg_url: str, clock: Clock
) -> None:
    """Two processes as one instance would close each other's rows: the second never starts."""
    async with AsyncExitStack() as stack:
        await processes(stack, pg_url, clock, "same")
        with pytest.raises(LedgerInUse, match="INSTANCE_ID 'same'"):
            await processes(stack, pg_url, clock, "same")
    # The claim ends with the process: the id is free again.
    async with AsyncExitStack() as stack:
        await processes(stack, pg_url, clock, "same")


async def test_processes_starting_together_migrate_once(
    pg_cluster: PgCluster, clock: Clock
) -> None:
    """Three processes open an empty database at once: one migrates, all start, one version."""
    url = await pg_cluster.fresh_database(migrated=False)
    async with AsyncExitStack() as stack:
        ledgers = await asyncio.gather(
            *(
                stack.enter_async_context(open_postgres_ledger(url, clock, instance_id=name))
                for name in ("x", "y", "z")
            )
        )
        await add_row(ledgers[0], generation())
        assert (await ledgers[2].counts(1, 10)).operator_images == 1
    connection = await asyncpg.connect(url)
    try:
        versions = await connection.fetch("SELECT version FROM schema_version ORDER BY version")
    finally:
        await connection.close()
    assert [row[0] for row in versions] == list(range(1, PG_SCHEMA_VERSION + 1))


async def test_a_reservation_gives_up_with_ledger_busy_when_the_lock_is_held(
    pg_url: str, two: list[UsageLedger]
) -> None:
    """Another session holding the member's lock past the wait: LedgerBusy, not a hang."""
    holder = await asyncpg.connect(pg_url)
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock(hashtextextended('user:1', 0))")
            started = asyncio.get_running_loop().time()
            with pytest.raises(LedgerBusy):
                await two[0].reserve(generation(), Ceilings())
            waited = asyncio.get_running_loop().time() - started
        assert waited >= RESERVE_LOCK_WAIT_S * 0.9
        # Released: the next one goes through.
        assert await two[0].reserve(generation(), Ceilings()) > 0
    finally:
        await holder.close()


async def test_the_password_never_reaches_the_error(pg_cluster: PgCluster) -> None:
    """A database that cannot be reached is named in the error without its password."""
    url = f"postgresql://bot:s3cret-pass-word@127.0.0.1:{pg_cluster.port + 1}/nowhere"
    with pytest.raises(StorageUnavailable) as raised:
        await open_pool(url)
    assert "s3cret-pass-word" not in str(raised.value)
    # Not chained for a traceback to print: asyncpg's exception may hold the whole DSN.
    assert raised.value.__suppress_context__
    assert "s3cret-pass-word" not in repr(raised.value.args)
    assert "postgresql://bot@127.0.0.1" in str(raised.value)
    assert "s3cret" not in shown_url(url)


async def test_the_report_command_reads_database_url(
    pg_url: str,
    two: list[UsageLedger],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m bot report` on PostgreSQL: from DATABASE_URL, and from --database-url."""
    await add_row(two[0], generation(user_id=1, n=2), cost=0.08)
    await add_row(two[1], generation(user_id=2), cost=0.04)
    monkeypatch.setenv("DATABASE_URL", pg_url)
    for argv in (
        ["report", "--period", "all", "--format", "json"],
        ["report", "--database-url", pg_url, "--period", "all", "--format", "json"],
    ):
        assert await asyncio.to_thread(main, argv) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["totals"]["images"] == 3
        assert report["totals"]["cost_usd"] == pytest.approx(0.12)
