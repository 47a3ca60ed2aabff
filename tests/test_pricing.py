"""Prices: the built-in table, the operator's file, CometAPI's catalog and cost per generation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bot.core.catalog import CATALOG
from bot.core.cometapi import ErrorKind, UpstreamError
from bot.core.pricing import (
    BUILTIN_AS_OF,
    BUILTIN_PRICES,
    NO_PRICE,
    REFRESH_EVERY_S,
    RETRY_AFTER_FAILURE_S,
    CostEstimate,
    ImagePrice,
    PriceBook,
    PriceFetchError,
    PriceFileError,
    PriceSource,
    TokenPrice,
    catalog_url,
    estimated_tokens,
    fetch_catalog_prices,
    keep_prices_fresh,
    load_cached_prices,
    load_price_file,
    parse_price_file,
    price_from_catalog,
    price_from_json,
    price_to_json,
    refresh_prices,
)
from bot.core.service import GenerationService, Requester
from bot.core.validation import ImagineOptions, validate
from bot.ledger.store import UsageLedger
from tests.conftest import NOW, deliver, open_comet_client, service_on
from tests.fakes.fake_cometapi import FakeCometAPI, Reply
from tests.fakes.images import make_png

# The example record of api-notes B4, with the fields the catalog documents.
GPT_IMAGE_2_RECORD = {
    "id": "gpt-image-2",
    "provider": "openai",
    "model_type": "image",
    "features": [],
    "pricing": {
        "currency": "USD / M Tokens",
        "input": 4,
        "output": 24,
        "per_request": 0,
        "per_second": 0,
    },
    "api_doc_url": "https://apidoc.cometapi.com/",
}


def test_builtin_table_covers_exactly_the_catalog() -> None:
    """Every catalog model has a built-in entry (None = no price known), and nothing else."""
    assert set(BUILTIN_PRICES) == set(CATALOG)
    assert BUILTIN_PRICES["qwen-image"] is None
    for model, price in BUILTIN_PRICES.items():
        # Token prices only for the models that report tokens.
        assert isinstance(price, TokenPrice) == CATALOG[model].returns_usage, model


@pytest.mark.parametrize(
    ("model", "size", "quality", "images", "tokens", "cost"),
    [
        ("dall-e-3", "1024x1024", "standard", 1, None, 0.04),
        ("dall-e-3", "1792x1024", "hd", 1, None, 0.12),
        ("dall-e-3", "1024x1792", "standard", 1, None, 0.08),
        ("dall-e-2", "512x512", "standard", 3, None, 0.054),
        ("dall-e-2", "256x256", "standard", 10, None, 0.16),
        # (input x $/M + output x $/M) / 1,000,000
        ("gpt-image-1", "1024x1024", "high", 1, (100, 4160), 0.1669),
        ("gpt-image-1-mini", "auto", "auto", 1, (50, 1056), 0.0273536),
        ("gpt-image-1.5", "1536x1024", "medium", 2, (50, 1056), 0.0273536),
        ("gpt-image-2", "2048x2048", "low", 4, (1000, 2000), 0.052),
    ],
)
def test_cost_per_model(
    model: str,
    size: str,
    quality: str,
    images: int,
    tokens: tuple[int, int] | None,
    cost: float,
) -> None:
    """Built-in prices: per image by size and quality for dall-e, per token for gpt-image."""
    estimate = PriceBook().estimate(
        model,
        size=size,
        quality=quality,
        images=images,
        input_tokens=tokens[0] if tokens else None,
        output_tokens=tokens[1] if tokens else None,
    )
    assert estimate.cost_usd == pytest.approx(cost)
    assert (estimate.source, estimate.as_of) == (PriceSource.BUILTIN, BUILTIN_AS_OF)


@pytest.mark.parametrize(
    ("model", "size", "quality", "tokens"),
    [
        ("qwen-image", "1328x1328", "default", None),  # no price known
        ("gpt-image-1", "auto", "auto", None),  # the response reported no usage
        ("dall-e-3", "512x512", "standard", None),  # a size the table does not list
        ("sdxl", "1024x1024", "standard", None),  # not a model of the bot
    ],
)
def test_unpriceable_generations_cost_null(
    model: str, size: str, quality: str, tokens: tuple[int, int] | None
) -> None:
    """No price is better than a guess: reports say "no price"."""
    estimate = PriceBook().estimate(
        model, size=size, quality=quality, images=1, input_tokens=None, output_tokens=None
    )
    assert estimate == NO_PRICE


PRICE_FILE = {
    "as_of": "2026-11-01",
    "currency": "USD",
    "models": {
        "gpt-image-2": {"input_per_million": 3.2, "output_per_million": 19.2},
        "dall-e-3": {"per_image": {"1024x1024/standard": 0.03, "1792x1024": 0.07}},
        "qwen-image": {"per_image": 0.02},
    },
}


def test_layers_file_then_catalog_then_builtin() -> None:
    """The operator's file wins, then CometAPI's catalog, then the built-in table."""
    operator = parse_price_file(json.dumps(PRICE_FILE), default_as_of=date(2026, 1, 1))
    book = PriceBook(operator)
    book.set_catalog(
        {"gpt-image-2": TokenPrice(4, 24), "gpt-image-1": TokenPrice(4, 32)}, date(2026, 11, 20)
    )
    two = book.estimate(
        "gpt-image-2", size="auto", quality="auto", images=1, input_tokens=0, output_tokens=1e6
    )
    assert two == CostEstimate(19.2, PriceSource.FILE, date(2026, 11, 1))
    one = book.estimate(
        "gpt-image-1", size="auto", quality="auto", images=1, input_tokens=0, output_tokens=1e6
    )
    assert one == CostEstimate(32.0, PriceSource.COMETAPI, date(2026, 11, 20))
    mini = book.estimate(
        "gpt-image-1-mini", size="auto", quality="auto", images=1, input_tokens=0, output_tokens=1e6
    )
    assert mini == CostEstimate(25.6, PriceSource.BUILTIN, BUILTIN_AS_OF)
    # Variants: "SIZE/QUALITY", then "SIZE" for any quality; unlisted sizes have no price.
    assert book.estimate(
        "dall-e-3",
        size="1792x1024",
        quality="hd",
        images=2,
        input_tokens=None,
        output_tokens=None,
    ).cost_usd == pytest.approx(0.14)
    assert (
        book.estimate(
            "dall-e-3",
            size="1024x1792",
            quality="hd",
            images=1,
            input_tokens=None,
            output_tokens=None,
        )
        == NO_PRICE
    )
    qwen = book.estimate(
        "qwen-image",
        size="1328x1328",
        quality="default",
        images=1,
        input_tokens=None,
        output_tokens=None,
    )
    assert qwen.cost_usd == pytest.approx(0.02)
    assert [price.source for price in book.table()] == [
        PriceSource.FILE,  # dall-e-3
        PriceSource.BUILTIN,  # dall-e-2
        PriceSource.COMETAPI,  # gpt-image-1
        PriceSource.BUILTIN,  # gpt-image-1-mini
        PriceSource.BUILTIN,  # gpt-image-1.5
        PriceSource.FILE,  # gpt-image-2
        PriceSource.FILE,  # qwen-image
    ]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", '"models" object'),
        ('{"models": {}, "extra": 1}', "unknown keys: extra"),
        ('{"models": {}, "currency": "EUR"}', '"currency" must be "USD"'),
        ('{"models": {}, "as_of": "yesterday"}', '"as_of" must be a date'),
        ('{"models": {"gpt-image-3": {"per_image": 1}}}', "models.gpt-image-3: unknown model"),
        ('{"models": {"dall-e-3": {"per_image": -1}}}', "models.dall-e-3.per_image: must be"),
        ('{"models": {"dall-e-3": {"per_image": true}}}', "must be a number"),
        ('{"models": {"dall-e-3": {"per_image": {}}}}', "must not be empty"),
        ('{"models": {"dall-e-3": {"price": 1}}}', "input_per_million"),
        (
            '{"models": {"dall-e-3": {"input_per_million": 1, "output_per_million": 2}}}',
            "reports no tokens",
        ),
    ],
)
def test_bad_price_files_name_the_problem(document: str, message: str) -> None:
    """A price file the bot cannot use stops the start with the entry and the reason."""
    with pytest.raises(PriceFileError, match=message):
        parse_price_file(document, default_as_of=date(2026, 1, 1))


def test_price_file_date_defaults_to_its_modification_day(tmp_path: Path) -> None:
    """Without "as_of" the file's own date is the prices' date."""
    path = tmp_path / "prices.json"
    path.write_text('{"models": {"qwen-image": {"per_image": 0.01}}}', encoding="utf-8")
    prices = load_price_file(path)
    assert prices.as_of == datetime.fromtimestamp(path.stat().st_mtime, UTC).date()
    with pytest.raises(PriceFileError, match="cannot read"):
        load_price_file(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "price",
    [
        TokenPrice(4.0, 24.0),
        ImagePrice(per_image=0.04),
        ImagePrice(variants=(("1024x1024", 0.02),)),
    ],
)
def test_price_json_round_trip(price: TokenPrice | ImagePrice) -> None:
    """The cache's format reads back what it wrote."""
    assert price_from_json(json.loads(json.dumps(price_to_json(price))), "p") == price


@pytest.mark.parametrize(
    ("model", "pricing", "expected"),
    [
        ("gpt-image-2", GPT_IMAGE_2_RECORD["pricing"], TokenPrice(4.0, 24.0)),
        ("gpt-image-1", {"currency": "USD / K Tokens", "input": 0.005}, TokenPrice(5.0, 0.0)),
        (
            "gpt-image-1.5",
            {"currency": "USD", "input": "6.4", "output": "25.6"},
            TokenPrice(6.4, 25.6),
        ),
        ("dall-e-3", {"currency": "USD", "per_request": 0.04}, ImagePrice(per_image=0.04)),
        # A token price for a model that reports no tokens cannot be used; its per-request can.
        (
            "dall-e-2",
            {"currency": "USD / M Tokens", "input": 1, "per_request": 0.02},
            ImagePrice(0.02),
        ),
        ("dall-e-2", {"currency": "USD / M Tokens", "input": 1}, None),
        ("gpt-image-2", {"currency": "CNY", "input": 4, "output": 24}, None),
        ("gpt-image-2", {"currency": "USD", "input": 0, "output": 0}, None),
        ("gpt-image-2", "free", None),
    ],
)
def test_catalog_pricing_records(model: str, pricing: object, expected: object) -> None:
    """The catalog's pricing record in our terms; anything unclear is no price."""
    assert price_from_catalog(model, pricing) == expected


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("https://api.cometapi.com/v1", "https://api.cometapi.com/api/models"),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/api/models"),
    ],
)
def test_catalog_url_is_on_the_api_host(base: str, url: str) -> None:
    """The catalog lives at /api/models on the image API's scheme and host."""
    assert catalog_url(base) == url


class Catalog:
    """A loopback CometAPI catalog: pages of records, or a failure."""

    def __init__(self) -> None:
        self.pages: list[list[dict[str, object]]] = [[GPT_IMAGE_2_RECORD]]
        self.status = 200
        self.body: bytes | None = None
        self.requests: list[dict[str, str]] = []
        self.ignore_paging = False

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(dict(request.query))
        if self.status != 200 or self.body is not None:
            return web.Response(status=self.status, body=self.body or b"{}")
        page = 1 if self.ignore_paging else int(request.query.get("page", "1"))
        total = sum(len(records) for records in self.pages)
        data = self.pages[page - 1] if page <= len(self.pages) else []
        return web.json_response(
            {"success": True, "page": page, "page_size": 1, "total": total, "data": data}
        )


@pytest.fixture
async def catalog() -> AsyncIterator[tuple[Catalog, str]]:
    fake = Catalog()
    app = web.Application()
    app.router.add_get("/api/models", fake.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield fake, catalog_url(str(server.make_url("/v1")))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


async def test_fetch_follows_pages(
    catalog: tuple[Catalog, str], session: aiohttp.ClientSession
) -> None:
    """All pages are read until the catalog's total; other providers' models are skipped."""
    fake, url = catalog
    fake.pages = [
        [GPT_IMAGE_2_RECORD],
        [{"id": "claude-x", "pricing": {"currency": "USD / M Tokens", "input": 3, "output": 15}}],
        [{"id": "dall-e-3", "pricing": {"currency": "USD", "per_request": 0.04}}],
    ]
    prices = await fetch_catalog_prices(session, url)
    assert prices == {"gpt-image-2": TokenPrice(4.0, 24.0), "dall-e-3": ImagePrice(0.04)}
    assert fake.requests == [{}, {"page": "2"}, {"page": "3"}]


async def test_fetch_stops_when_paging_is_ignored(
    catalog: tuple[Catalog, str], session: aiohttp.ClientSession
) -> None:
    """A server that answers page 1 to every page is read twice, not twenty times."""
    fake, url = catalog
    fake.pages = [[GPT_IMAGE_2_RECORD]] * 500
    fake.ignore_paging = True
    assert await fetch_catalog_prices(session, url) == {"gpt-image-2": TokenPrice(4.0, 24.0)}
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (503, None, "HTTP 503"),
        (200, b"<html>", "not JSON"),
        (200, b'{"data": "none"}', "no data list"),
        (200, b'{"data": []}', "none of the bot's models"),
    ],
)
async def test_fetch_failures_are_typed(
    catalog: tuple[Catalog, str],
    session: aiohttp.ClientSession,
    status: int,
    body: bytes | None,
    message: str,
) -> None:
    """Every way the catalog can fail is a PriceFetchError with a reason."""
    fake, url = catalog
    fake.status, fake.body = status, body
    with pytest.raises(PriceFetchError, match=message):
        await fetch_catalog_prices(session, url)


async def test_unreachable_catalog(session: aiohttp.ClientSession) -> None:
    """No server at all: a PriceFetchError, not a crash."""
    with pytest.raises(PriceFetchError, match="cannot read the catalog"):
        await fetch_catalog_prices(session, "http://127.0.0.1:9/api/models")


async def test_refresh_caches_and_survives_an_outage(
    catalog: tuple[Catalog, str],
    session: aiohttp.ClientSession,
    ledger: UsageLedger,
) -> None:
    """A fetch is cached with its date; a later failure keeps it; a restart starts from it."""
    fake, url = catalog
    book = PriceBook()
    assert await refresh_prices(session, url, ledger, book, NOW)
    assert book.lookup("gpt-image-2").source is PriceSource.COMETAPI
    assert book.catalog_as_of == date(2026, 11, 21)
    fake.status = 500
    assert not await refresh_prices(session, url, ledger, book, NOW)
    assert book.lookup("gpt-image-2").source is PriceSource.COMETAPI
    restarted = PriceBook()
    assert await load_cached_prices(ledger, restarted)
    assert restarted.lookup("gpt-image-2") == book.lookup("gpt-image-2")
    # Models the catalog did not price fall back to the built-in table.
    assert restarted.lookup("dall-e-3").source is PriceSource.BUILTIN


async def test_refresh_runs_at_start_then_daily(
    catalog: tuple[Catalog, str], session: aiohttp.ClientSession, ledger: UsageLedger
) -> None:
    """One fetch at once, then a day's wait; after a failure an hour's."""
    fake, url = catalog
    waits: list[float] = []

    class Stop(Exception):
        pass

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            raise Stop
        fake.status = 500

    with pytest.raises(Stop):
        await keep_prices_fresh(session, url, ledger, PriceBook(), sleep=sleep)
    assert waits == [REFRESH_EVERY_S, RETRY_AFTER_FAILURE_S]
    assert len(fake.requests) == 2


async def test_delivered_generations_store_their_cost(
    service: GenerationService, comet: FakeCometAPI, ledger: UsageLedger
) -> None:
    """The row keeps the estimate, its source and date; a failure stores no cost.

    The reservation made before the call is kept beside the cost that settled it.
    """
    who = Requester(1, 10, 20)
    # (1500 in, 1500 out) for both images: $0.042 at gpt-image-2's $4 / $24 per M.
    usage = {"input_tokens": 1500, "output_tokens": 1500, "total_tokens": 3000}
    comet.queue(
        Reply.b64([make_png(seed=1), make_png(seed=2)], usage=usage),
        Reply.url([make_png(seed=3)], usage=None),  # qwen-image reports no tokens
        Reply.hang(),  # dall-e-3: upstream never answers
    )
    await deliver(service, validate(ImagineOptions(prompt="p", model="gpt-image-2", n=2), "x"), who)
    await deliver(service, validate(ImagineOptions(prompt="p", model="qwen-image"), "x"), who)
    async with open_comet_client(comet, timeout_s=0.2) as impatient:
        failing = service_on(ledger, impatient)
        async with failing.start(validate(ImagineOptions(prompt="p"), "dall-e-3"), who) as failed:
            with pytest.raises(UpstreamError) as raised:
                await failed.call_upstream()
    assert (raised.value.kind, raised.value.billed) == (ErrorKind.TIMEOUT, False)
    assert [call.model for call in comet.calls] == ["gpt-image-2", "qwen-image", "dall-e-3"]
    rows = await ledger.reader.execute_fetchall(
        "SELECT model, status, billed, reserved_usd, cost_usd, price_source, price_as_of "
        "FROM generations ORDER BY id"
    )
    assert rows == [
        (
            "gpt-image-2",
            "delivered",
            1,
            pytest.approx(0.505796),
            pytest.approx(0.042),
            "builtin",
            BUILTIN_AS_OF.isoformat(),
        ),
        ("qwen-image", "delivered", 1, 0.0, None, None, None),
        ("dall-e-3", "failed", 0, pytest.approx(0.04), None, None, None),
    ]
    tokens = await ledger.reader.execute_fetchall(
        "SELECT input_tokens, output_tokens, total_tokens FROM generations ORDER BY id"
    )
    assert tokens == [(1500, 1500, 3000), (None, None, None), (None, None, None)]


# (model, size, quality, n, prompt characters) -> dollars reserved before the call.
RESERVATION_CASES = [
    # Per-image prices are exact: the price of n images of that size and quality.
    ("dall-e-3", "1024x1024", "standard", 1, 5, 0.04),
    ("dall-e-3", "1792x1024", "hd", 2, 5, 0.24),
    ("dall-e-2", "256x256", "standard", 10, 5, 0.16),
    # Token prices: (prompt + 16 input tokens, the guide's output tokens) at $/M.
    # gpt-image-1 high 1024x1024, 84 characters: (100, 4160), test_cost_per_model's call.
    ("gpt-image-1", "1024x1024", "high", 1, 84, 0.1669),
    ("gpt-image-1-mini", "1024x1024", "low", 1, 0, (16 * 6.4 + 272 * 25.6) / 1e6),
    # gpt-image-2 is scaled to the 7,024 tokens of a square high image.
    ("gpt-image-2", "1024x1024", "high", 1, 0, (16 * 4 + 7024 * 24) / 1e6),
    # auto: the dearest the model could choose, high at 1536x1024; n times the images.
    ("gpt-image-2", "auto", "auto", 2, 1, (17 * 4 + 2 * 10536 * 24) / 1e6),
    # No price, no reservation: the request is not held back by a guess.
    ("qwen-image", "1328x1328", "default", 1, 5, 0.0),
    ("dall-e-3", "512x512", "standard", 1, 5, 0.0),
    ("sdxl", "1024x1024", "standard", 1, 5, 0.0),
]


@pytest.mark.parametrize(("model", "size", "quality", "n", "chars", "usd"), RESERVATION_CASES)
def test_reservation_per_model(
    model: str, size: str, quality: str, n: int, chars: int, usd: float
) -> None:
    """What a request reserves against the budgets before it is sent."""
    reserved = PriceBook().reservation(model, size=size, quality=quality, n=n, prompt="p" * chars)
    assert reserved == pytest.approx(usd)


@pytest.mark.parametrize(
    ("model", "size", "quality", "output"),
    [
        # OpenAI's image generation guide, "Cost and latency": square and 1024x1536 figures.
        ("gpt-image-1", "1024x1024", "low", 272),
        ("gpt-image-1", "1024x1024", "medium", 1056),
        ("gpt-image-1", "1024x1024", "high", 4160),
        ("gpt-image-1", "1024x1536", "low", 408),
        ("gpt-image-1", "1024x1536", "medium", 1584),
        ("gpt-image-1", "1536x1024", "high", 6240),
        ("gpt-image-1", "auto", "auto", 6240),
        ("gpt-image-1", "2048x2048", "low", 4 * 272),
        ("gpt-image-2", "1024x1024", "high", 7024),
        ("gpt-image-2", "1024x1024", "low", 460),  # 272 x 7024/4160, rounded up
    ],
)
def test_estimated_tokens_follow_openais_table(
    model: str, size: str, quality: str, output: int
) -> None:
    """Output tokens per image by size and quality; input is the prompt plus the overhead."""
    one = estimated_tokens(model, size=size, quality=quality, n=1, prompt="a cat")
    assert (one.input_tokens, one.output_tokens) == (5 + 16, output)
    three = estimated_tokens(model, size=size, quality=quality, n=3, prompt="a cat")
    assert three.output_tokens == 3 * output


def test_reservation_uses_the_price_in_force() -> None:
    """The operator's file, then the catalog, then built-in: the same layers as the cost."""
    operator = parse_price_file(json.dumps(PRICE_FILE), default_as_of=date(2026, 1, 1))
    book = PriceBook(operator)
    assert book.reservation(
        "dall-e-3", size="1024x1024", quality="standard", n=2, prompt="p"
    ) == pytest.approx(0.06)
    assert book.reservation(
        "qwen-image", size="1328x1328", quality="default", n=3, prompt="p"
    ) == pytest.approx(0.06)
    book.set_catalog({"dall-e-2": ImagePrice(per_image=0.5)}, date(2026, 11, 20))
    assert book.reservation(
        "dall-e-2", size="1024x1024", quality="standard", n=1, prompt="p"
    ) == pytest.approx(0.5)


@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"])
@pytest.mark.parametrize("quality", ["low", "medium", "high"])
def test_a_token_reservation_covers_the_guides_cost(model: str, quality: str) -> None:
    """The reservation is not below the cost of a call that reports the guide's tokens."""
    book = PriceBook()
    prompt = "a lighthouse at dusk, oil painting"
    output = {"low": 272, "medium": 1056, "high": 4160}[quality]
    cost = book.estimate(
        model,
        size="1024x1024",
        quality=quality,
        images=1,
        input_tokens=len(prompt),
        output_tokens=output,
    ).cost_usd
    reserved = book.reservation(model, size="1024x1024", quality=quality, n=1, prompt=prompt)
    assert cost is not None
    assert reserved >= cost


def test_an_edit_reserves_its_reference_images_as_input_tokens() -> None:
    """Each reference adds input tokens to the estimate: three cost more than none."""
    book = PriceBook()
    plain = book.reservation("gpt-image-1", size="1024x1024", quality="low", n=1, prompt="p")
    edit = book.reservation(
        "gpt-image-1", size="1024x1024", quality="low", n=1, prompt="p", references=3
    )
    # gpt-image-1 built in: $5 per million input tokens, 4,160 per reference.
    assert edit - plain == pytest.approx(3 * 4160 * 5 / 1_000_000)
