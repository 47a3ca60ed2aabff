"""What a generation costs: price tables, CometAPI's public catalog, the operator's price file.

Prices come from three layers; for each model the first that has a price wins:

1. the operator's price file (PRICE_FILE), for contracts that differ from the list price;
2. CometAPI's public catalog, `GET <scheme://host>/api/models` (no auth), fetched at start and
   daily and cached in the database, so a restart without network keeps the last prices;
3. the dated built-in table below.

Every estimate says which layer priced it and as of which date; reports show both. All prices
are US dollars. Nothing here knows Discord.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

import aiohttp

from bot.core.catalog import CATALOG
from bot.ledger.store import UsageLedger

log = logging.getLogger(__name__)

CATALOG_TIMEOUT_S: Final = 30.0
# The catalog lists every CometAPI model (hundreds); a body beyond this is not a price list.
MAX_CATALOG_BYTES: Final = 16 * 1024 * 1024
# The catalog is paginated; enough pages for every model CometAPI lists, never a loop.
MAX_CATALOG_PAGES: Final = 20
REFRESH_EVERY_S: Final = 24 * 3600.0
# After a failed fetch, try again sooner than a day: the built-in table may be stale.
RETRY_AFTER_FAILURE_S: Final = 3600.0


class PriceSource(StrEnum):
    """Which layer priced a generation; stored in the usage row."""

    FILE = "file"
    COMETAPI = "cometapi"
    BUILTIN = "builtin"


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """US dollars per million input and output tokens (GPT image models report usage)."""

    input_per_million: float
    output_per_million: float

    def cost(self, input_tokens: int | None, output_tokens: int | None) -> float | None:
        """The cost of the reported tokens, or None when the response reported none."""
        if input_tokens is None and output_tokens is None:
            return None
        return (
            (input_tokens or 0) * self.input_per_million
            + (output_tokens or 0) * self.output_per_million
        ) / 1_000_000


@dataclass(frozen=True, slots=True)
class ImagePrice:
    """US dollars per image: by "SIZE/QUALITY" or "SIZE" variant, else the flat price."""

    per_image: float | None = None
    variants: tuple[tuple[str, float], ...] = ()

    def for_image(self, size: str, quality: str) -> float | None:
        """The price of one image of this size and quality, or None when not listed."""
        prices = dict(self.variants)
        for key in (f"{size}/{quality}", size):
            if key in prices:
                return prices[key]
        return self.per_image


Price = TokenPrice | ImagePrice


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """The estimated cost of one generation and where its price came from."""

    cost_usd: float | None
    source: PriceSource | None
    as_of: date | None


NO_PRICE: Final = CostEstimate(None, None, None)

# ---------------------------------------------------------------------------------------------
# The built-in table, used for a model only when neither the price file nor CometAPI's catalog
# prices it. Compiled 2026-11-21 from:
# - gpt-image-2 ($4 / $24 per million input / output tokens), gpt-image-1.5 and gpt-image-1-mini
#   ($6.40 / $25.60): CometAPI's model pages as quoted in shared/specs/api-notes.md B4. OpenAI
#   lists gpt-image-1-mini far lower; CometAPI's page is what CometAPI bills, so it is used.
# - gpt-image-1 ($5 / $40 per million text-input / image-output tokens): OpenAI's published
#   price; api-notes has no CometAPI price for it.
# - dall-e-3 and dall-e-2: OpenAI's published per-image prices by size and quality (unchanged
#   since November 2023); api-notes found no CometAPI price for either.
# - qwen-image: no price found anywhere, so it has none; its generations cost NULL and reports
#   say "no price" rather than guess.
BUILTIN_AS_OF: Final = date(2026, 11, 21)
BUILTIN_PRICES: Final[Mapping[str, Price | None]] = MappingProxyType(
    {
        "dall-e-3": ImagePrice(
            variants=(
                ("1024x1024/standard", 0.040),
                ("1792x1024/standard", 0.080),
                ("1024x1792/standard", 0.080),
                ("1024x1024/hd", 0.080),
                ("1792x1024/hd", 0.120),
                ("1024x1792/hd", 0.120),
            )
        ),
        "dall-e-2": ImagePrice(
            variants=(("256x256", 0.016), ("512x512", 0.018), ("1024x1024", 0.020))
        ),
        "gpt-image-1": TokenPrice(5.0, 40.0),
        "gpt-image-1-mini": TokenPrice(6.4, 25.6),
        "gpt-image-1.5": TokenPrice(6.4, 25.6),
        "gpt-image-2": TokenPrice(4.0, 24.0),
        "qwen-image": None,
    }
)


class PriceFileError(ValueError):
    """The operator's price file cannot be used; the message says where and why."""


class PriceFetchError(Exception):
    """CometAPI's catalog could not be read or held no usable prices."""


# --- Prices as JSON: the operator's file and the database cache share one format ---------------


def _number(value: object, where: str) -> float:
    # bool is an int subclass; `true` is never a price.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PriceFileError(f"{where}: must be a number")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise PriceFileError(f"{where}: must be a finite number >= 0")
    return number


def price_from_json(entry: object, where: str) -> Price:
    """Read one model's price: token prices per million, or per-image prices."""
    if not isinstance(entry, dict):
        raise PriceFileError(f"{where}: must be an object")
    keys = set(entry)
    if keys == {"input_per_million", "output_per_million"}:
        return TokenPrice(
            _number(entry["input_per_million"], f"{where}.input_per_million"),
            _number(entry["output_per_million"], f"{where}.output_per_million"),
        )
    if keys == {"per_image"}:
        per_image = entry["per_image"]
        if isinstance(per_image, dict):
            if not per_image:
                raise PriceFileError(f"{where}.per_image: must not be empty")
            variants = tuple(
                (str(key), _number(value, f"{where}.per_image.{key}"))
                for key, value in per_image.items()
            )
            return ImagePrice(variants=variants)
        return ImagePrice(per_image=_number(per_image, f"{where}.per_image"))
    raise PriceFileError(
        f"{where}: use {{'input_per_million', 'output_per_million'}} or {{'per_image'}}"
    )


def price_to_json(price: Price) -> dict[str, object]:
    """The JSON form `price_from_json` reads back."""
    if isinstance(price, TokenPrice):
        return {
            "input_per_million": price.input_per_million,
            "output_per_million": price.output_per_million,
        }
    if price.variants:
        return {"per_image": dict(price.variants)}
    return {"per_image": price.per_image}


@dataclass(frozen=True, slots=True)
class OperatorPrices:
    """The operator's price file: prices per model and the date they are valid from."""

    as_of: date
    prices: Mapping[str, Price]


def parse_price_file(text: str, *, default_as_of: date) -> OperatorPrices:
    """Parse a price file; every problem is a PriceFileError naming the entry."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise PriceFileError(f"not valid JSON: {error.msg} at line {error.lineno}") from error
    if not isinstance(document, dict) or not isinstance(document.get("models"), dict):
        raise PriceFileError('must be an object with a "models" object')
    unknown_keys = set(document) - {"as_of", "models", "currency"}
    if unknown_keys:
        raise PriceFileError(f"unknown keys: {', '.join(sorted(unknown_keys))}")
    if document.get("currency", "USD") != "USD":
        raise PriceFileError('"currency" must be "USD": reports are in US dollars')
    as_of = default_as_of
    if "as_of" in document:
        try:
            as_of = date.fromisoformat(str(document["as_of"]))
        except ValueError as error:
            raise PriceFileError('"as_of" must be a date like 2026-11-01') from error
    prices: dict[str, Price] = {}
    for model, entry in document["models"].items():
        if model not in CATALOG:
            raise PriceFileError(f"models.{model}: unknown model (known: {', '.join(CATALOG)})")
        price = price_from_json(entry, f"models.{model}")
        if isinstance(price, TokenPrice) and not CATALOG[model].returns_usage:
            raise PriceFileError(
                f"models.{model}: this model reports no tokens; give a per_image price"
            )
        prices[model] = price
    return OperatorPrices(as_of, MappingProxyType(prices))


def load_price_file(path: Path) -> OperatorPrices:
    """Read the operator's price file; its date defaults to the file's modification day."""
    try:
        text = path.read_text(encoding="utf-8")
        modified = datetime.fromtimestamp(path.stat().st_mtime, UTC).date()
    except OSError as error:
        raise PriceFileError(f"cannot read {path}: {error.strerror}") from error
    return parse_price_file(text, default_as_of=modified)


# --- CometAPI's public catalog ------------------------------------------------------------------


def catalog_url(base_url: str) -> str:
    """The catalog's address on the same scheme and host as the image API."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}/api/models"


def _catalog_number(value: object) -> float | None:
    # The catalog writes prices as numbers or numeric strings; anything else is no price.
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) and number > 0 else None


def price_from_catalog(model: str, pricing: object) -> Price | None:
    """One catalog record's price in our terms, or None when it gives none we can use.

    The record is `{currency, input, output, per_request, per_second}`; the currency text
    carries the unit, e.g. "USD / M Tokens". A per-request price is taken as per image: for
    the one-image-per-request models (dall-e-3, qwen-image) the two are the same.
    """
    if not isinstance(pricing, dict):
        return None
    currency = str(pricing.get("currency") or "USD").upper()
    if "USD" not in currency:
        return None
    input_price = _catalog_number(pricing.get("input"))
    output_price = _catalog_number(pricing.get("output"))
    if (input_price or output_price) and CATALOG[model].returns_usage:
        scale = 1000.0 if "K TOKENS" in currency else 1.0
        return TokenPrice((input_price or 0.0) * scale, (output_price or 0.0) * scale)
    per_request = _catalog_number(pricing.get("per_request"))
    if per_request is not None:
        return ImagePrice(per_image=per_request)
    return None


def prices_from_catalog_page(document: object) -> tuple[dict[str, Price], int | None]:
    """The prices of our models on one catalog page, and the catalog's total record count."""
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise PriceFetchError("the catalog answer has no data list")
    prices: dict[str, Price] = {}
    for record in document["data"]:
        if not isinstance(record, dict):
            continue
        model = record.get("id")
        if not isinstance(model, str) or model not in CATALOG:
            continue
        price = price_from_catalog(model, record.get("pricing"))
        if price is not None:
            prices[model] = price
    total = document.get("total")
    return prices, total if isinstance(total, int) and not isinstance(total, bool) else None


async def _get_json(session: aiohttp.ClientSession, url: str, params: dict[str, str]) -> object:
    try:
        async with session.get(
            url, params=params, timeout=aiohttp.ClientTimeout(total=CATALOG_TIMEOUT_S)
        ) as response:
            if response.status != 200:
                raise PriceFetchError(f"the catalog answered HTTP {response.status}")
            body = await response.content.read(MAX_CATALOG_BYTES + 1)
    except (TimeoutError, aiohttp.ClientError) as error:
        raise PriceFetchError(f"cannot read the catalog: {type(error).__name__}") from error
    if len(body) > MAX_CATALOG_BYTES:
        raise PriceFetchError("the catalog answer is too large")
    try:
        return json.loads(body)
    except ValueError as error:
        raise PriceFetchError("the catalog answer is not JSON") from error


async def fetch_catalog_prices(session: aiohttp.ClientSession, url: str) -> dict[str, Price]:
    """Read our models' prices from the catalog, following its pages until all are found."""
    found: dict[str, Price] = {}
    seen: set[str] = set()
    for page in range(1, MAX_CATALOG_PAGES + 1):
        # The first request sends no paging parameters: the documented call is a bare GET.
        params = {} if page == 1 else {"page": str(page)}
        document = await _get_json(session, url, params)
        prices, total = prices_from_catalog_page(document)
        found.update(prices)
        assert isinstance(document, dict)  # prices_from_catalog_page checked it
        ids = {str(record.get("id")) for record in document["data"] if isinstance(record, dict)}
        new_ids = ids - seen
        seen |= ids
        # Stop when done, and also when a page brings nothing new: a server that ignores
        # `page` would otherwise answer the first page again and again.
        if not new_ids or total is None or len(seen) >= total or found.keys() >= CATALOG.keys():
            break
    if not found:
        raise PriceFetchError("the catalog lists none of the bot's models with a price")
    return found


# --- The prices in force ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """The price in force for one model, with its layer and date."""

    model: str
    price: Price | None
    source: PriceSource | None
    as_of: date | None


class PriceBook:
    """The prices in force now; the refresh task swaps in new catalog prices."""

    def __init__(
        self,
        operator: OperatorPrices | None = None,
        builtin: Mapping[str, Price | None] = BUILTIN_PRICES,
        builtin_as_of: date = BUILTIN_AS_OF,
    ) -> None:
        self._operator = operator
        self._builtin = builtin
        self._builtin_as_of = builtin_as_of
        self._catalog: Mapping[str, Price] = {}
        self._catalog_as_of: date | None = None

    def set_catalog(self, prices: Mapping[str, Price], as_of: date) -> None:
        """Use these catalog prices from now on (a fetch, or the cache at start)."""
        self._catalog = MappingProxyType(dict(prices))
        self._catalog_as_of = as_of

    @property
    def catalog_as_of(self) -> date | None:
        """The date of the catalog prices in use, or None when there are none."""
        return self._catalog_as_of

    def lookup(self, model: str) -> ModelPrice:
        """The price in force for `model`: the file's, else the catalog's, else built-in."""
        if self._operator is not None and model in self._operator.prices:
            return ModelPrice(
                model, self._operator.prices[model], PriceSource.FILE, self._operator.as_of
            )
        if model in self._catalog and self._catalog_as_of is not None:
            return ModelPrice(
                model, self._catalog[model], PriceSource.COMETAPI, self._catalog_as_of
            )
        builtin = self._builtin.get(model)
        if builtin is not None:
            return ModelPrice(model, builtin, PriceSource.BUILTIN, self._builtin_as_of)
        return ModelPrice(model, None, None, None)

    def table(self) -> tuple[ModelPrice, ...]:
        """The price in force for every catalog model, in catalog order."""
        return tuple(self.lookup(model) for model in CATALOG)

    def estimate(
        self,
        model: str,
        *,
        size: str,
        quality: str,
        images: int,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> CostEstimate:
        """The estimated cost of a delivered generation; NO_PRICE when it cannot be priced."""
        priced = self.lookup(model)
        price = priced.price
        cost: float | None
        if isinstance(price, TokenPrice):
            # Tokens are billed for the whole call, whatever number of images it made.
            cost = price.cost(input_tokens, output_tokens)
        elif isinstance(price, ImagePrice):
            per_image = price.for_image(size, quality)
            cost = None if per_image is None else per_image * images
        else:
            cost = None
        if cost is None:
            return NO_PRICE
        return CostEstimate(round(cost, 8), priced.source, priced.as_of)

    def reservation(
        self, model: str, *, size: str, quality: str, n: int, prompt: str, references: int = 0
    ) -> float:
        """The dollars to reserve against budgets before a call; 0 when the model has no price.

        Per-image prices are exact. Token prices use `estimated_tokens`, an upper estimate;
        the row's cost is replaced by the cost of the reported usage when the call answers.
        """
        price = self.lookup(model).price
        if isinstance(price, ImagePrice):
            per_image = price.for_image(size, quality)
            return 0.0 if per_image is None else round(per_image * n, 8)
        if isinstance(price, TokenPrice):
            tokens = estimated_tokens(
                model, size=size, quality=quality, n=n, prompt=prompt, references=references
            )
            cost = price.cost(tokens.input_tokens, tokens.output_tokens)
            return 0.0 if cost is None else round(cost, 8)
        return 0.0


# --- What to reserve before the call ------------------------------------------------------------

# Output tokens of one image at 1024x1024 by quality, from OpenAI's image generation guide
# ("Cost and latency" table for the GPT image models: low 272, medium 1056, high 4160 for a
# square image; https://platform.openai.com/docs/guides/image-generation). Other sizes scale
# with the pixel count (the guide's 1024x1536 figures, 408/1584/6240, are 1.5x the square ones).
_SQUARE_OUTPUT_TOKENS: Final = MappingProxyType({"low": 272, "medium": 1056, "high": 4160})
_SQUARE_PIXELS: Final = 1024 * 1024
# OpenAI's pricing calculator bills gpt-image-2 at up to 7,024 tokens for a square high image
# (as quoted on community.openai.com, "Livestream starting now: ChatGPT Images 2.0"): the
# estimate must not be below what a call can cost, so this model's figures are scaled up.
_MODEL_TOKEN_FACTOR: Final = MappingProxyType({"gpt-image-2": 7024 / 4160})
# "auto" lets the model choose: reserve for the dearest choice it could make.
_AUTO_QUALITY: Final = "high"
_AUTO_PIXELS: Final = 1536 * 1024
# Text input tokens: at most one per character, plus the fixed overhead a call reports.
_INPUT_OVERHEAD_TOKENS: Final = 16
# A reference image of an edit is input tokens too. No page states how many: the estimate
# takes one as many as the dearest square output image, an upper figure for the reservation
# that the answer's reported usage replaces.
_REFERENCE_INPUT_TOKENS: Final = 4160


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    """Input and output tokens, estimated before a call."""

    input_tokens: int
    output_tokens: int


def _pixels(size: str) -> int:
    width, _, height = size.partition("x")
    if width.isdigit() and height.isdigit():
        return int(width) * int(height)
    return _AUTO_PIXELS


def estimated_tokens(
    model: str, *, size: str, quality: str, n: int, prompt: str, references: int = 0
) -> TokenEstimate:
    """An upper estimate of the tokens a GPT image call will report, before it is made."""
    square = _SQUARE_OUTPUT_TOKENS.get(quality, _SQUARE_OUTPUT_TOKENS[_AUTO_QUALITY])
    factor = _MODEL_TOKEN_FACTOR.get(model, 1.0)
    per_image = math.ceil(square * factor * _pixels(size) / _SQUARE_PIXELS)
    text = len(prompt) + _INPUT_OVERHEAD_TOKENS
    images = math.ceil(_REFERENCE_INPUT_TOKENS * factor) * references
    return TokenEstimate(text + images, per_image * n)


# --- Keeping the catalog prices fresh -------------------------------------------------------------


async def load_cached_prices(ledger: UsageLedger, book: PriceBook) -> bool:
    """Put the catalog prices cached by an earlier run into the book; False when none."""
    cached = await ledger.price_cache()
    if not cached:
        return False
    prices: dict[str, Price] = {}
    fetched: list[str] = []
    for model, (text, fetched_at) in cached.items():
        if model not in CATALOG:
            continue
        try:
            prices[model] = price_from_json(json.loads(text), f"cache.{model}")
        except (ValueError, PriceFileError):
            log.warning("ignoring an unreadable cached price for %s", model)
            continue
        fetched.append(fetched_at)
    if not prices:
        return False
    book.set_catalog(prices, date.fromisoformat(min(fetched)[:10]))
    return True


async def refresh_prices(
    session: aiohttp.ClientSession,
    url: str,
    ledger: UsageLedger,
    book: PriceBook,
    now: datetime,
) -> bool:
    """Fetch the catalog, cache it and use it; on failure keep what is in use and say so."""
    try:
        prices = await fetch_catalog_prices(session, url)
    except PriceFetchError as error:
        log.warning(
            "could not refresh prices from %s (%s); using prices as of %s",
            url,
            error,
            book.catalog_as_of or f"{BUILTIN_AS_OF} (built-in)",
        )
        return False
    await ledger.save_price_cache(
        {model: json.dumps(price_to_json(price)) for model, price in prices.items()}, now
    )
    book.set_catalog(prices, now.astimezone(UTC).date())
    log.info("prices refreshed from %s for %d model(s)", url, len(prices))
    return True


async def keep_prices_fresh(
    session: aiohttp.ClientSession,
    url: str,
    ledger: UsageLedger,
    book: PriceBook,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run for the life of the bot: cached prices first, then a fetch at start and daily."""
    if await load_cached_prices(ledger, book):
        log.info("using cached catalog prices as of %s until the first refresh", book.catalog_as_of)
    while True:
        refreshed = await refresh_prices(session, url, ledger, book, ledger.now())
        await sleep(REFRESH_EVERY_S if refreshed else RETRY_AFTER_FAILURE_S)
