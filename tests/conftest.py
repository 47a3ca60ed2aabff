"""Fixtures and helpers shared by the ledger, report, report-CLI, limits and pricing tests.

Rows are written only through the ledger's public API (reserve, then record_answer when
upstream answered, then finish), so every test's rows have the shape the bot writes. A
service calls CometAPI through the real client, over HTTP, at the fake on 127.0.0.1
(tests/fakes/fake_cometapi.py): nothing of ours is replaced.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import aiohttp
import pytest
from pydantic import SecretStr

from bot.core.cometapi import CometAPIClient, RetryPolicy
from bot.core.generation import Generation, Requester
from bot.core.pricing import PriceBook
from bot.core.service import GenerationService, OperatorLimits
from bot.core.slots import FairSlots
from bot.core.validation import GenerationRequest
from bot.ledger.limits import Ceilings
from bot.ledger.postgres import open_postgres_ledger
from bot.ledger.store import FinalStatus, NewGeneration, UpstreamAnswer, UsageLedger, open_ledger
from tests.fakes.fake_cometapi import FakeCometAPI
from tests.pg import PgCluster, cluster_folder, start_cluster, stop_cluster

NOW: Final = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NO_CEILINGS: Final = Ceilings()


class Clock:
    """A settable clock for the ledger: call it for now, assign `now` to move it."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def at(self, text: str) -> datetime:
        """Move to a UTC time given as ISO text (no zone); return it."""
        self.now = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return self.now


@pytest.fixture
def clock() -> Clock:
    """2026-11-21 12:00 UTC until the test moves it."""
    return Clock(NOW)


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    """Where the `ledger` fixture keeps its SQLite file."""
    return tmp_path / "usage.db"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A real PostgreSQL for the session (tests/pg.py); skipped without one, except in CI."""
    folder = cluster_folder()
    try:
        cluster, data, bindir = start_cluster(folder)
        try:
            # In a thread of its own: an async test's loop may be running when this starts.
            with ThreadPoolExecutor(1) as thread:
                thread.submit(asyncio.run, cluster.prepare_template()).result()
            yield cluster
        finally:
            stop_cluster(data, bindir)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def pg_url(pg_cluster: PgCluster) -> str:
    """The URL of a fresh, migrated, empty PostgreSQL database."""
    return await pg_cluster.fresh_database()


@pytest.fixture(params=["sqlite", "postgresql"])
async def ledger(
    request: pytest.FixtureRequest, ledger_path: Path, clock: Clock
) -> AsyncIterator[UsageLedger]:
    """A real ledger on the test's clock, once on a fresh SQLite file, once on PostgreSQL.

    Every ledger, report and service test runs on both backends.
    """
    if request.param == "sqlite":
        async with open_ledger(ledger_path, clock) as opened:
            yield opened
    else:
        url = await request.getfixturevalue("pg_cluster").fresh_database()
        async with open_postgres_ledger(url, clock, instance_id="test") as opened:
            yield opened


@pytest.fixture
async def sqlite_ledger(ledger_path: Path, clock: Clock) -> AsyncIterator[UsageLedger]:
    """A real ledger on a fresh SQLite file, for what only SQLite has (its file, its locks)."""
    async with open_ledger(ledger_path, clock) as opened:
        yield opened


def generation(
    user_id: int = 1,
    guild_id: int | None = 10,
    *,
    channel_id: int | None = 20,
    model: str = "gpt-image-1",
    size: str = "1024x1024",
    quality: str = "auto",
    n: int = 1,
    request_id: str = "req",
    reserved_usd: float = 0.0,
) -> NewGeneration:
    """A generation as the service reserves it."""
    return NewGeneration(
        user_id=user_id,
        guild_id=guild_id,
        channel_id=channel_id,
        model=model,
        size=size,
        quality=quality,
        n_requested=n,
        request_id=request_id,
        reserved_usd=reserved_usd,
    )


def answer(
    cost_usd: float | None = None,
    *,
    as_of: str | None = None,
    tokens: tuple[int, int] | None = None,
    attempts: int = 1,
    upstream_request_id: str | None = "up-1",
) -> UpstreamAnswer:
    """Upstream's answer with images: tokens (input, output) and the cost priced from them."""
    return UpstreamAnswer(
        attempts=attempts,
        upstream_request_id=upstream_request_id,
        input_tokens=tokens[0] if tokens else None,
        output_tokens=tokens[1] if tokens else None,
        total_tokens=sum(tokens) if tokens else None,
        cost_usd=cost_usd,
        price_source="builtin" if cost_usd is not None else None,
        price_as_of=as_of,
    )


async def write_row(
    ledger: UsageLedger,
    entry: NewGeneration,
    final: FinalStatus | None,
    *,
    ceilings: Ceilings = NO_CEILINGS,
    upstream: UpstreamAnswer | None = None,
    latency_ms: int = 1000,
) -> int:
    """Reserve under `ceilings`, record upstream's answer if any, then finish.

    `final` None leaves the row pending. Returns the row's id.
    """
    row = await ledger.reserve(entry, ceilings)
    if upstream is not None:
        await ledger.record_answer(row, upstream)
    if final is not None:
        assert await ledger.finish(row, final, latency_ms=latency_ms)
    return row


# How each way a generation can end is written, by the name the tests use for it:
# (billed: upstream answered first, the final status, its error code or None).
OUTCOMES: Final = {
    "delivered": (True, "delivered", None),
    "failed": (False, "failed", "timeout"),  # upstream never answered
    "delivery_failed": (True, "failed", "delivery_failed"),
    "corrupt_image": (True, "failed", "corrupt_image"),
    "image_too_large": (True, "failed", "image_too_large"),
    "interrupted": (False, "interrupted", "interrupted"),
    "interrupted_delivery": (True, "interrupted_delivery", "interrupted"),
    "pending": (False, None, None),  # reserved, still running
    "answered": (True, None, None),  # upstream answered, still uploading
}


async def add_row(
    ledger: UsageLedger,
    entry: NewGeneration,
    outcome: str = "delivered",
    *,
    cost: float | None = None,
    as_of: str | None = None,
    tokens: tuple[int, int] | None = None,
    received: int | None = None,
    ceilings: Ceilings = NO_CEILINGS,
) -> int:
    """One generation ended as `outcome` (a key of OUTCOMES), through the public API.

    `received` is how many images reached the member: all n when delivered, else none,
    unless given. Only billed outcomes record upstream's answer, with `cost` and `tokens`.
    """
    billed, status, code = OUTCOMES[outcome]
    upstream = answer(cost, as_of=as_of, tokens=tokens) if billed else None
    final = None
    if status is not None:
        images = received if received is not None else entry.n_requested * (status == "delivered")
        if status == "delivered":
            final = FinalStatus("delivered", images_delivered=images)
        else:
            final = FinalStatus(
                status, images_delivered=images, error_code=code, error_message=f"{outcome}"
            )
    return await write_row(ledger, entry, final, ceilings=ceilings, upstream=upstream)


# The key the fake CometAPI accepts and the service's client sends.
COMET_KEY: Final = "sk-test-comet-key-0123"
# Retries as the bot makes them, only without the seconds of backoff between them.
FAST_RETRY: Final = RetryPolicy(base_delay_s=0.001, max_delay_s=0.002)


@pytest.fixture
async def comet() -> AsyncIterator[FakeCometAPI]:
    """CometAPI faked on 127.0.0.1: answers every request like the model would (Reply.auto).

    Script other answers with `comet.queue(...)` or `comet.default`. When the test ends, every
    request the bot sent must have been valid for the API (the fake's `violations`).
    """
    async with FakeCometAPI(api_key=COMET_KEY) as fake:
        yield fake
        assert fake.violations == []


@asynccontextmanager
async def open_comet_client(
    comet: FakeCometAPI, *, timeout_s: float = 10.0
) -> AsyncIterator[CometAPIClient]:
    """The real CometAPI client, on its own HTTP session, pointed at the fake."""
    async with aiohttp.ClientSession() as session:
        client = CometAPIClient(
            session,
            base_url=comet.base_url,
            api_key=SecretStr(COMET_KEY),
            timeout_s=timeout_s,
            retry=FAST_RETRY,
        )
        try:
            yield client
        finally:
            client.close()


@pytest.fixture
async def comet_client(comet: FakeCometAPI) -> AsyncIterator[CometAPIClient]:
    """The real CometAPI client against the `comet` fake, closed when the test ends."""
    async with open_comet_client(comet) as client:
        yield client


def service_on(
    ledger: UsageLedger,
    client: CometAPIClient,
    *,
    operator: OperatorLimits | None = None,
    prices: PriceBook | None = None,
) -> GenerationService:
    """The real service on `ledger`, calling CometAPI through `client`."""
    return GenerationService(
        client,
        ledger,
        slots=FairSlots(total=8, per_user=8),
        operator=operator,
        prices=prices,
    )


@pytest.fixture
def service(ledger: UsageLedger, comet_client: CometAPIClient) -> GenerationService:
    """The real service on the `ledger` fixture, calling the `comet` fake over HTTP."""
    return service_on(ledger, comet_client)


async def deliver(
    service: GenerationService, request: GenerationRequest, requester: Requester
) -> Generation:
    """One whole generation the way the /imagine glue runs it: every image reaches the member."""
    async with service.start(request, requester) as generation:
        result = await generation.call_upstream()
        generation.uploading()
        generation.sent(len(result.images))
        await generation.delivered()
    return generation
