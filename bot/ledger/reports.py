"""Usage reports: totals, per model, top users and images per day, for a member, a server or all.

One scope (guild and/or user) and one window (UTC) select the rows; every report, the chart's
series and the CSV export read the same selection, so their numbers agree. Nothing here knows
Discord: the cogs and the `report` command line render these values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final

from bot.core.catalog import CATALOG
from bot.ledger.db import Database
from bot.ledger.periods import Period, to_db_time

TOP_USERS: Final = 10
CURRENCY: Final = "USD"

# The upper bound for an open window: every stored time (a 4-digit year) sorts before it.
_OPEN_END: Final = "9999-12-31T23:59:59.999999Z~"
_DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadPeriod(ValueError):
    """A period or date the user typed that cannot be read; the message says what works."""


@dataclass(frozen=True, slots=True)
class Window:
    """A span of time in UTC: start inclusive, end exclusive; None is open."""

    start: datetime | None
    end: datetime | None
    label: str

    @property
    def since(self) -> str:
        """The start as stored text; the empty string sorts before every time."""
        return to_db_time(self.start) if self.start else ""

    @property
    def until(self) -> str:
        """The end as stored text."""
        return to_db_time(self.end) if self.end else _OPEN_END


def window_for(period: Period, now: datetime) -> Window:
    """The window of a named period, ending now."""
    return Window(period.start(now), None, period.label)


def _parse_date(text: str, what: str) -> date:
    if not _DATE.match(text):
        raise BadPeriod(f"`{text[:20]}` is not a {what} date: use YYYY-MM-DD, e.g. 2026-11-01.")
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise BadPeriod(f"`{text}` is not a real date.") from error


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def date_window(start: date | None, end: date | None) -> Window:
    """From the start of `start` to the end of `end` (both UTC days, both included)."""
    if start and end and start > end:
        raise BadPeriod(f"the start {start} is after the end {end}.")
    if start and end:
        label = str(start) if start == end else f"{start} to {end}"
    elif start:
        label = f"since {start}"
    elif end:
        label = f"up to {end}"
    else:
        label = Period.ALL.label
    return Window(
        _midnight(start) if start else None,
        _midnight(end) + timedelta(days=1) if end else None,
        f"{label} (UTC)" if start or end else label,
    )


def parse_window(
    period: str | None,
    start: str | None,
    end: str | None,
    now: datetime,
    default: Period = Period.DAYS_30,
) -> Window:
    """Read a period (today, 7d, 30d, all, a date, or START..END) or start/end dates."""
    start = start.strip() if start else None
    end = end.strip() if end else None
    text = period.strip().lower() if period else ""
    if start or end:
        if text:
            raise BadPeriod("Give a period or start/end dates, not both.")
        return date_window(
            _parse_date(start, "start") if start else None,
            _parse_date(end, "end") if end else None,
        )
    if not text:
        return window_for(default, now)
    try:
        return window_for(Period(text), now)
    except ValueError:
        pass
    if ".." in text:
        first, _, last = text.partition("..")
        return date_window(
            _parse_date(first, "start") if first else None,
            _parse_date(last, "end") if last else None,
        )
    if _DATE.match(text):
        day = _parse_date(text, "")
        return date_window(day, day)
    raise BadPeriod(
        f"`{text[:20]}` is not a period. Use {', '.join(p.value for p in Period)}, "
        "a date (2026-11-01) or a range (2026-11-01..2026-11-30)."
    )


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose rows: one guild, one user, one user in one guild, or everything."""

    guild_id: int | None = None
    user_id: int | None = None


def _params(scope: Scope, window: Window) -> dict[str, object]:
    return {
        "guild_id": scope.guild_id,
        "user_id": scope.user_id,
        "since": window.since,
        "until": window.until,
    }


# Every report, the chart and the export read one of two selections of rows.
#
# With a guild (every Discord report): the guild's rows in the window, and one member's among
# them when :user_id is set. This is a range of the covering (guild_id, created_at, ...)
# index, so a server's month is read without touching the table.
_GUILD_ROWS: Final = (
    "FROM generations WHERE guild_id = :guild_id "
    "AND created_at >= :since AND created_at < :until "
    "AND (CAST(:user_id AS BIGINT) IS NULL OR user_id = :user_id) "
)
# Without a guild (/usage, and the command line): one user's rows everywhere, by their index,
# or every row. Each branch runs only for its kind of scope (its first term depends on a
# parameter alone, so SQLite tests it once and skips the branch); one OR-ed WHERE clause
# instead would make SQLite scan the whole table for every report.
_OTHER_ROWS: Final = (
    "FROM (SELECT * FROM generations WHERE user_id = :user_id "
    "AND created_at >= :since AND created_at < :until "
    "UNION ALL "
    "SELECT * FROM generations WHERE CAST(:user_id AS BIGINT) IS NULL "
    "AND created_at >= :since AND created_at < :until) AS scoped "
)

# Images are the ones members received. Cost is every call upstream billed, delivered or
# not; the billed calls that never reached the member are also counted apart. Failed and
# interrupted generations count as requests and failures, and as images only for what the
# member is known to have received before the failure.
_RECEIVED: Final = "CASE WHEN status = 'pending' THEN 0 ELSE images_delivered END"
_NOT_RECEIVED: Final = "billed = 1 AND status <> 'delivered'"
_BY_MODEL_SELECT: Final = (
    "SELECT model, "
    f"SUM({_RECEIVED}) AS images, "
    "COUNT(*), "
    "SUM(CASE WHEN status IN ('failed', 'interrupted', 'interrupted_delivery') THEN 1 ELSE 0 END), "
    "COALESCE(SUM(CASE WHEN billed = 1 THEN cost_usd END), 0), "
    # A billed call without a price: the images upstream made, delivered or not.
    "SUM(CASE WHEN billed = 1 AND cost_usd IS NULL THEN "
    "CASE WHEN status = 'delivered' THEN images_delivered ELSE n_requested END ELSE 0 END), "
    "MIN(CASE WHEN billed = 1 THEN price_as_of END), "
    "MAX(CASE WHEN billed = 1 THEN price_as_of END), "
    "COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0), "
    "COALESCE(SUM(total_tokens), 0), "
    f"SUM(CASE WHEN {_NOT_RECEIVED} THEN 1 ELSE 0 END), "
    f"COALESCE(SUM(CASE WHEN {_NOT_RECEIVED} THEN cost_usd END), 0), "
    "SUM(CASE WHEN kind = 'edit' THEN 1 ELSE 0 END) "
)
_BY_MODEL_TAIL: Final = "GROUP BY model ORDER BY images DESC, model"
_TOP_USERS_SELECT: Final = (
    "SELECT user_id, "
    f"SUM({_RECEIVED}) AS images, "
    "COUNT(*), "
    "COALESCE(SUM(CASE WHEN billed = 1 THEN cost_usd END), 0) AS cost "
)
_TOP_USERS_TAIL: Final = "GROUP BY user_id ORDER BY images DESC, cost DESC, user_id LIMIT :top"
_DAILY_SELECT: Final = (
    f"SELECT substr(created_at, 1, 10) AS day, model, SUM({_RECEIVED}) AS images "
)
# HAVING repeats the sum: PostgreSQL does not see output names there.
_DAILY_TAIL: Final = f"GROUP BY day, model HAVING SUM({_RECEIVED}) > 0 ORDER BY day, model"
_EXPORT_SELECT: Final = (
    "SELECT created_at, user_id, guild_id, channel_id, model, size, quality, n_requested, "
    "images_delivered, status, error_code, latency_ms, input_tokens, output_tokens, "
    "total_tokens, CASE WHEN billed = 1 THEN cost_usd END, price_source, price_as_of, "
    "request_id, billed, attempts, upstream_request_id, kind, reference_count "
)
# With a guild, the index already yields this order, so the export streams without a sort.
_EXPORT_TAIL: Final = "ORDER BY created_at, id"


def _statements(select: str, tail: str) -> tuple[str, str]:
    # Composed once, at import, from the constants above: no value ever enters the SQL text.
    return select + _GUILD_ROWS + tail, select + _OTHER_ROWS + tail


_BY_MODEL_SQL: Final = _statements(_BY_MODEL_SELECT, _BY_MODEL_TAIL)
_TOP_USERS_SQL: Final = _statements(_TOP_USERS_SELECT, _TOP_USERS_TAIL)
_DAILY_SQL: Final = _statements(_DAILY_SELECT, _DAILY_TAIL)
_EXPORT_SQL: Final = _statements(_EXPORT_SELECT, _EXPORT_TAIL)


def _sql(statements: tuple[str, str], scope: Scope) -> str:
    return statements[0] if scope.guild_id is not None else statements[1]


def export_sql(scope: Scope) -> str:
    """The export's statement for this scope; its parameters are `export_params`."""
    return _sql(_EXPORT_SQL, scope)


EXPORT_COLUMNS: Final = (
    "created_at",
    "user_id",
    "guild_id",
    "channel_id",
    "model",
    "size",
    "quality",
    "n",
    "images",
    "status",
    "error",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cost_usd",
    "price_source",
    "price_as_of",
    "request_id",
    "billed",
    "attempts",
    "upstream_request_id",
    "kind",
    "references",
)


def export_params(scope: Scope, window: Window) -> dict[str, object]:
    """The parameters of `export_sql`'s statement."""
    return _params(scope, window)


@dataclass(frozen=True, slots=True)
class Cost:
    """Estimated cost in US dollars, what could not be priced, and the prices' dates."""

    usd: float = 0.0
    unpriced_images: int = 0
    prices_from: str | None = None
    prices_to: str | None = None

    def __add__(self, other: Cost) -> Cost:
        """Two costs together: sums, and the widest span of price dates."""
        froms = [d for d in (self.prices_from, other.prices_from) if d]
        tos = [d for d in (self.prices_to, other.prices_to) if d]
        return Cost(
            self.usd + other.usd,
            self.unpriced_images + other.unpriced_images,
            min(froms) if froms else None,
            max(tos) if tos else None,
        )

    @property
    def priced(self) -> bool:
        """Whether any generation in it had a price."""
        return self.prices_from is not None

    def summary(self) -> str:
        """One line: amount, currency, "estimated", the prices' date, and what had no price."""
        if not self.priced and not self.unpriced_images:
            return f"{usd(0)} {CURRENCY} (estimated)"
        parts: list[str] = []
        if self.priced:
            dates = (
                self.prices_from
                if self.prices_from == self.prices_to
                else f"{self.prices_from} to {self.prices_to}"
            )
            parts.append(f"{usd(self.usd)} {CURRENCY} (estimated, prices as of {dates})")
        if self.unpriced_images:
            parts.append(f"no price for {self.unpriced_images:,} image(s)")
        return "; ".join(parts)


def cost_cell(cost: Cost) -> str:
    """A short cost for a table cell: the amount, "no price", or both."""
    if not cost.priced:
        return "no price" if cost.unpriced_images else usd(0)
    if cost.unpriced_images:
        return f"{usd(cost.usd)} + {cost.unpriced_images:,} unpriced"
    return usd(cost.usd)


def usd(amount: float) -> str:
    """Dollars with cents, and sub-cent precision for the small amounts of a few images."""
    return f"${amount:,.2f}" if amount >= 10 or amount == 0 else f"${amount:,.4f}"


@dataclass(frozen=True, slots=True)
class Undelivered:
    """Calls upstream billed whose images never reached the member: spend, not images."""

    requests: int = 0
    usd: float = 0.0

    def __add__(self, other: Undelivered) -> Undelivered:
        """Both together."""
        return Undelivered(self.requests + other.requests, self.usd + other.usd)

    def summary(self) -> str:
        """One line for reports: how many calls, and their part of the cost."""
        calls = "1 call" if self.requests == 1 else f"{self.requests:,} calls"
        return f"{calls}, {usd(self.usd)} {CURRENCY} (estimated, included in the cost)"


@dataclass(frozen=True, slots=True)
class ModelLine:
    """One model's numbers in a report."""

    model: str
    images: int
    requests: int
    failures: int
    cost: Cost
    input_tokens: int
    output_tokens: int
    total_tokens: int
    undelivered: Undelivered = field(default_factory=Undelivered)
    edits: int = 0
    """Of the requests, how many were edits of reference images."""


@dataclass(frozen=True, slots=True)
class UserLine:
    """One member's numbers in a server report."""

    user_id: int
    images: int
    requests: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class Totals:
    """The sums over every model."""

    images: int = 0
    requests: int = 0
    failures: int = 0
    cost: Cost = field(default_factory=Cost)
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    undelivered: Undelivered = field(default_factory=Undelivered)
    edits: int = 0


def totals_of(lines: tuple[ModelLine, ...]) -> Totals:
    """Add up the per-model lines."""
    cost = Cost()
    undelivered = Undelivered()
    for line in lines:
        cost = cost + line.cost
        undelivered = undelivered + line.undelivered
    return Totals(
        images=sum(line.images for line in lines),
        requests=sum(line.requests for line in lines),
        failures=sum(line.failures for line in lines),
        cost=cost,
        input_tokens=sum(line.input_tokens for line in lines),
        output_tokens=sum(line.output_tokens for line in lines),
        total_tokens=sum(line.total_tokens for line in lines),
        undelivered=undelivered,
        edits=sum(line.edits for line in lines),
    )


@dataclass(frozen=True, slots=True)
class Report:
    """Usage in a scope over a window."""

    scope: Scope
    window: Window
    totals: Totals
    by_model: tuple[ModelLine, ...]
    top_users: tuple[UserLine, ...]


async def model_lines(db: Database, scope: Scope, window: Window) -> tuple[ModelLine, ...]:
    """Per-model numbers, most images first."""
    rows = await db.execute_fetchall(_sql(_BY_MODEL_SQL, scope), _params(scope, window))
    return tuple(
        ModelLine(
            model=str(row[0]),
            images=int(row[1]),
            requests=int(row[2]),
            failures=int(row[3]),
            cost=Cost(float(row[4]), int(row[5]), row[6], row[7]),
            input_tokens=int(row[8]),
            output_tokens=int(row[9]),
            total_tokens=int(row[10]),
            undelivered=Undelivered(int(row[11]), float(row[12])),
            edits=int(row[13]),
        )
        for row in rows
    )


async def top_users(
    db: Database, scope: Scope, window: Window, count: int = TOP_USERS
) -> tuple[UserLine, ...]:
    """The members with the most images (then the highest cost), at most `count`."""
    params = _params(scope, window) | {"top": count}
    rows = await db.execute_fetchall(_sql(_TOP_USERS_SQL, scope), params)
    return tuple(UserLine(int(row[0]), int(row[1]), int(row[2]), float(row[3])) for row in rows)


async def build_report(
    db: Database, scope: Scope, window: Window, *, top: int = TOP_USERS
) -> Report:
    """The report of a scope: totals, per model, and (unless it is one user's) top users."""
    lines = await model_lines(db, scope, window)
    users = () if scope.user_id is not None else await top_users(db, scope, window, top)
    return Report(scope, window, totals_of(lines), lines, users)


@dataclass(frozen=True, slots=True)
class DailySeries:
    """Images delivered per UTC day and model, every day of the window present."""

    days: tuple[date, ...]
    models: tuple[str, ...]
    images: dict[tuple[date, str], int]

    def day_total(self, day: date) -> int:
        """All models' images on one day."""
        return sum(self.images.get((day, model), 0) for model in self.models)


async def daily_series(db: Database, scope: Scope, window: Window, today: date) -> DailySeries:
    """Images per day and model over the window; an open start begins at the first image."""
    rows = await db.execute_fetchall(_sql(_DAILY_SQL, scope), _params(scope, window))
    images = {(date.fromisoformat(str(row[0])), str(row[1])): int(row[2]) for row in rows}
    # Catalog order, so a model keeps its place (and its colour in the chart) across reports.
    order = {name: index for index, name in enumerate(CATALOG)}
    models = sorted({model for _, model in images}, key=lambda m: (order.get(m, len(order)), m))
    first = window.start.date() if window.start else min((d for d, _ in images), default=today)
    last = (window.end - timedelta(microseconds=1)).date() if window.end else today
    days = tuple(first + timedelta(days=offset) for offset in range((last - first).days + 1))
    return DailySeries(days, tuple(models), images)
