"""Reports, the daily series and the CSV export, against a hand-computed set of rows."""

from __future__ import annotations

import csv
import gzip
import io
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from bot.ledger.export import (
    ExportResult,
    ExportTooLarge,
    export_csv,
    fit_to_limit,
    write_csv,
)
from bot.ledger.periods import Period
from bot.ledger.reports import (
    EXPORT_COLUMNS,
    BadPeriod,
    Cost,
    Scope,
    Window,
    build_report,
    cost_cell,
    daily_series,
    parse_window,
    window_for,
)
from bot.ledger.store import NewGeneration, UsageLedger, open_ledger

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
G1, G2 = 10, 20
U1, U2, U3 = 1, 2, 3


class Clock:
    """A settable clock for the ledger."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def at(text: str) -> datetime:
    """A UTC time from ISO text."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def add(
    ledger: UsageLedger,
    clock: Clock,
    when: str,
    user: int,
    guild: int | None,
    model: str,
    *,
    n: int = 1,
    status: str = "ok",
    cost: float | None = None,
    as_of: str | None = None,
    tokens: tuple[int, int] | None = None,
) -> int:
    """One generation at `when`, finished as `status`."""
    clock.now = at(when)
    row = await ledger.reserve(
        NewGeneration(user, guild, 99, model, "1024x1024", "auto", n, f"r{when}"), 0
    )
    if status == "ok":
        await ledger.complete(
            row,
            images_delivered=n,
            latency_ms=1000,
            input_tokens=tokens[0] if tokens else None,
            output_tokens=tokens[1] if tokens else None,
            total_tokens=sum(tokens) if tokens else None,
            cost_usd=cost,
            price_source="builtin" if cost is not None else None,
            price_as_of=as_of,
        )
    elif status == "failed":
        await ledger.fail(row, error_code="timeout", error_message="slow", latency_ms=5)
    elif status == "interrupted":
        await ledger.interrupt(row, latency_ms=5)
    return row


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[UsageLedger]:
    """The fixture rows; the numbers in each test are worked out from this list by hand."""
    clock = Clock(NOW)
    async with open_ledger(tmp_path / "usage.db", clock) as opened:
        rows = [
            # 1: today, 2 images, tokens
            ("2026-11-21T11:00:00", U1, G1, "gpt-image-1", 2, "ok", 0.05, "2026-11-20", (10, 100)),
            # 2: exactly midnight today: inside "today"
            ("2026-11-21T00:00:00", U2, G1, "dall-e-3", 1, "ok", 0.04, "2026-11-21", None),
            # 3: the last microsecond of yesterday: outside "today"
            ("2026-11-20T23:59:59.999999", U1, G1, "dall-e-3", 1, "ok", 0.08, "2026-11-21", None),
            # 4: no price
            ("2026-11-18T10:00:00", U1, G1, "qwen-image", 1, "ok", None, None, None),
            # 5: failed: a request and a failure, no image, no cost
            ("2026-11-18T10:00:01", U2, G1, "dall-e-3", 1, "failed", None, None, None),
            # 6: exactly 7 days before now: inside "7d"
            ("2026-11-14T12:00:00", U3, G1, "gpt-image-2", 4, "ok", 0.10, "2026-11-01", None),
            # 7: a second earlier: outside "7d", inside "30d"
            ("2026-11-14T11:59:59", U3, G1, "gpt-image-2", 1, "ok", 0.02, "2026-11-01", None),
            # 8: another guild
            ("2026-11-01T09:00:00", U1, G2, "dall-e-2", 3, "ok", 0.06, "2026-11-21", None),
            # 9: older than 30 days
            ("2026-10-01T09:00:00", U1, G1, "dall-e-3", 1, "ok", 0.04, "2026-11-21", None),
            # 10: a direct message, today
            ("2026-11-21T01:00:00", U1, None, "gpt-image-1", 1, "ok", 0.01, "2026-11-20", None),
            # 12: interrupted
            ("2026-11-19T08:00:00", U3, G1, "dall-e-3", 1, "interrupted", None, None, None),
            # 11 (last, so it stays pending): a request, no image, no cost
            ("2026-11-21T11:30:00", U2, G1, "gpt-image-1", 3, "pending", None, None, None),
        ]
        for when, user, guild, model, n, status, cost, as_of, tokens in rows:
            await add(
                opened,
                clock,
                when,
                user,
                guild,
                model,
                n=n,
                status=status,
                cost=cost,
                as_of=as_of,
                tokens=tokens,
            )
        clock.now = NOW
        yield opened


def week() -> Window:
    return window_for(Period.DAYS_7, NOW)


async def test_server_report_numbers(ledger: UsageLedger) -> None:
    """Guild 10 over 7 days: rows 1-6, 11 and 12."""
    report = await build_report(ledger.connection, Scope(guild_id=G1), week())
    totals = report.totals
    assert (totals.images, totals.requests, totals.failures) == (9, 8, 2)
    assert totals.cost.usd == pytest.approx(0.27)
    assert (totals.cost.unpriced_images, totals.cost.prices_from, totals.cost.prices_to) == (
        1,
        "2026-11-01",
        "2026-11-21",
    )
    assert (totals.input_tokens, totals.output_tokens, totals.total_tokens) == (10, 100, 110)
    assert [(m.model, m.images, m.requests, m.failures) for m in report.by_model] == [
        ("gpt-image-2", 4, 1, 0),
        ("dall-e-3", 2, 4, 2),
        ("gpt-image-1", 2, 2, 0),
        ("qwen-image", 1, 1, 0),
    ]
    costs = {m.model: m.cost for m in report.by_model}
    assert costs["dall-e-3"].usd == pytest.approx(0.12)
    assert costs["qwen-image"] == Cost(0.0, 1, None, None)
    assert [(u.user_id, u.images, u.requests) for u in report.top_users] == [
        (U1, 4, 3),
        (U3, 4, 2),
        (U2, 1, 3),
    ]
    assert [round(u.cost_usd, 6) for u in report.top_users] == [0.13, 0.10, 0.04]


async def test_member_in_a_guild_and_everywhere(ledger: UsageLedger) -> None:
    """A member's report in one guild leaves out their other guilds and DMs; no top users."""
    month = window_for(Period.DAYS_30, NOW)
    in_guild = await build_report(ledger.connection, Scope(G1, U1), month)
    assert (in_guild.totals.images, in_guild.totals.requests) == (4, 3)
    assert in_guild.totals.cost.usd == pytest.approx(0.13)
    assert in_guild.top_users == ()
    everywhere = await build_report(ledger.connection, Scope(user_id=U1), month)
    assert (everywhere.totals.images, everywhere.totals.requests) == (8, 5)
    assert everywhere.totals.cost.usd == pytest.approx(0.20)
    assert everywhere.totals.cost.unpriced_images == 1


@pytest.mark.parametrize(
    ("period", "start", "end", "images", "requests"),
    [
        ("today", None, None, 3, 3),  # rows 1, 2, 11: midnight in, 23:59:59.999999 out
        ("7d", None, None, 9, 8),
        ("30d", None, None, 10, 9),  # + row 7
        ("all", None, None, 11, 10),  # + row 9
        (None, None, None, 10, 9),  # the default is 30 days
        (None, "2026-11-14", "2026-11-14", 5, 2),  # rows 6 and 7: whole UTC day
        (None, "2026-11-20", "2026-11-20", 1, 1),  # row 3 only
        ("2026-11-20..2026-11-21", None, None, 4, 4),  # rows 1, 2, 3, 11
        ("2026-11-21", None, None, 3, 3),
        (None, "2026-11-19", None, 4, 5),  # from the 19th on: rows 1, 2, 3, 11, 12
        (None, None, "2026-10-31", 1, 1),  # up to October: row 9
    ],
)
async def test_period_boundaries_in_utc(
    ledger: UsageLedger,
    period: str | None,
    start: str | None,
    end: str | None,
    images: int,
    requests: int,
) -> None:
    """Each period and date range selects exactly the rows worked out by hand."""
    window = parse_window(period, start, end, NOW)
    report = await build_report(ledger.connection, Scope(guild_id=G1), window)
    assert (report.totals.images, report.totals.requests) == (images, requests)


async def test_everything_scope_includes_other_guilds_and_dms(ledger: UsageLedger) -> None:
    """No guild and no user: every row, DMs included."""
    report = await build_report(ledger.connection, Scope(), week())
    assert report.totals.images == 10  # guild 10's 9 and the DM
    assert {u.user_id for u in report.top_users} == {U1, U2, U3}


async def test_top_users_are_capped(ledger: UsageLedger) -> None:
    """`top` limits the list; the order stays images, then cost."""
    report = await build_report(ledger.connection, Scope(guild_id=G1), week(), top=1)
    assert [u.user_id for u in report.top_users] == [U1]


async def test_daily_series(ledger: UsageLedger) -> None:
    """Every day of the window is present, models in catalog order, failures not counted."""
    series = await daily_series(ledger.connection, Scope(guild_id=G1), week(), NOW.date())
    assert series.days == tuple(date(2026, 11, day) for day in range(14, 22))
    assert series.models == ("dall-e-3", "gpt-image-1", "gpt-image-2", "qwen-image")
    assert series.images == {
        (date(2026, 11, 14), "gpt-image-2"): 4,
        (date(2026, 11, 18), "qwen-image"): 1,
        (date(2026, 11, 20), "dall-e-3"): 1,
        (date(2026, 11, 21), "dall-e-3"): 1,
        (date(2026, 11, 21), "gpt-image-1"): 2,
    }
    assert series.day_total(date(2026, 11, 21)) == 3


async def test_daily_series_of_all_time_starts_at_the_first_image(ledger: UsageLedger) -> None:
    """An open window begins on the first day with an image and ends today."""
    series = await daily_series(
        ledger.connection, Scope(guild_id=G1), window_for(Period.ALL, NOW), NOW.date()
    )
    assert (series.days[0], series.days[-1]) == (date(2026, 10, 1), date(2026, 11, 21))
    assert len(series.days) == 52


async def test_usage_command_report_shows_cost(ledger: UsageLedger) -> None:
    """/usage's own report carries the estimated cost of the member's generations."""
    window = window_for(Period.DAYS_30, ledger.now())
    report = await build_report(ledger.connection, Scope(user_id=U1), window)
    cost = report.totals.cost
    assert report.totals.images == 8
    assert cost.usd == pytest.approx(0.20)
    assert "estimated" in cost.summary()
    assert "prices as of 2026-11-20 to 2026-11-21" in cost.summary()
    assert "no price for 1 image(s)" in cost.summary()


@pytest.mark.parametrize(
    ("cost", "summary", "cell"),
    [
        (Cost(), "$0.00 USD (estimated)", "$0.00"),
        (
            Cost(0.27, 0, "2026-11-21", "2026-11-21"),
            "$0.2700 USD (estimated, prices as of 2026-11-21)",
            "$0.2700",
        ),
        (
            Cost(12.5, 2, "2026-11-01", "2026-11-21"),
            "$12.50 USD (estimated, prices as of 2026-11-01 to 2026-11-21); "
            "no price for 2 image(s)",
            "$12.50 + 2 unpriced",
        ),
        (Cost(0, 3, None, None), "no price for 3 image(s)", "no price"),
    ],
)
def test_cost_texts(cost: Cost, summary: str, cell: str) -> None:
    """Currency, the word "estimated", the prices' date, and what had no price."""
    assert cost.summary() == summary
    assert cost_cell(cost) == cell


@pytest.mark.parametrize(
    ("period", "start", "end", "expected"),
    [
        ("7D", None, None, (datetime(2026, 11, 14, 12, tzinfo=UTC), None)),
        ("today", None, None, (datetime(2026, 11, 21, tzinfo=UTC), None)),
        ("all", None, None, (None, None)),
        (
            None,
            "2026-02-28",
            "2026-03-01",
            (datetime(2026, 2, 28, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)),
        ),
        (
            "2026-11-01..",
            None,
            None,
            (datetime(2026, 11, 1, tzinfo=UTC), None),
        ),
    ],
)
def test_windows(
    period: str | None,
    start: str | None,
    end: str | None,
    expected: tuple[datetime | None, datetime | None],
) -> None:
    """Named periods end now; dates cover whole UTC days, the end day included."""
    window = parse_window(period, start, end, NOW)
    assert (window.start, window.end) == expected


@pytest.mark.parametrize(
    ("period", "start", "end", "message"),
    [
        ("yesterday", None, None, "is not a period"),
        (None, "2026-13-01", None, "not a real date"),
        (None, "21/11/2026", None, "use YYYY-MM-DD"),
        (None, "2026-11-21", "2026-11-01", "after the end"),
        ("7d", "2026-11-01", None, "not both"),
    ],
)
def test_bad_periods_say_what_works(
    period: str | None, start: str | None, end: str | None, message: str
) -> None:
    """A period that cannot be read is refused with a hint."""
    with pytest.raises(BadPeriod, match=message):
        parse_window(period, start, end, NOW)


def _stored_rows(path: Path, guild: int) -> list[tuple[str, ...]]:
    """The guild's rows as the CSV writes them: text, empty for NULL, cost only when ok."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT created_at, user_id, guild_id, channel_id, model, size, quality, "
            "n_requested, images_delivered, status, error_code, latency_ms, input_tokens, "
            "output_tokens, total_tokens, cost_usd, price_source, price_as_of, request_id "
            "FROM generations WHERE guild_id = ? ORDER BY created_at, id",
            (guild,),
        ).fetchall()
    return [tuple("" if value is None else str(value) for value in row) for row in rows]


async def test_export_parses_back_to_the_same_rows(ledger: UsageLedger, tmp_path: Path) -> None:
    """The CSV has the promised header and one row per generation, equal to the database."""
    out = tmp_path / "out"
    out.mkdir()
    result = await export_csv(
        ledger.connection,
        Scope(guild_id=G1),
        window_for(Period.ALL, NOW),
        out,
        name="g1",
        limit_bytes=10_000_000,
    )
    assert (result.rows, result.compressed, result.split) == (10, False, False)
    assert [path.name for path in result.files] == ["g1.csv"]
    with result.files[0].open(encoding="utf-8", newline="") as handle:
        parsed = list(csv.reader(handle))
    for column in (
        "created_at",
        "user_id",
        "guild_id",
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
        "cost_usd",
    ):
        assert column in parsed[0]
    assert tuple(parsed[0]) == EXPORT_COLUMNS
    assert [tuple(row) for row in parsed[1:]] == _stored_rows(tmp_path / "usage.db", G1)


def _read_parts(paths: tuple[Path, ...]) -> list[list[str]]:
    rows: list[list[str]] = []
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            part = list(csv.reader(handle))
        assert tuple(part[0]) == EXPORT_COLUMNS  # each part has the header
        rows += part[1:]
    return rows


async def test_export_is_gzipped_then_split_to_fit(ledger: UsageLedger, tmp_path: Path) -> None:
    """Over the limit: gzip; still over: gzip'd parts, each within the limit, rows in order."""
    database = tmp_path / "usage.db"
    expected = [list(row) for row in _stored_rows(database, G1)]

    def export(name: str, limit: int) -> tuple[int, ExportResult]:
        folder = tmp_path / name
        folder.mkdir()
        plain = folder / "export.csv"
        rows = write_csv(database, Scope(guild_id=G1), window_for(Period.ALL, NOW), plain)
        size = plain.stat().st_size
        result = fit_to_limit(plain, rows, limit)
        assert all(path.stat().st_size <= limit for path in result.files)
        assert not plain.exists() or result.files == (plain,)
        return size, result

    size, fits = export("fits", 1_000_000)
    assert (fits.compressed, fits.split, fits.files[0].name) == (False, False, "export.csv")
    assert "gzip" not in fits.notice()

    _, packed = export("packed", size - 1)
    assert (packed.compressed, packed.split) == (True, False)
    assert packed.files[0].name == "export.csv.gz"
    assert "gzip" in packed.notice()
    assert _read_parts(packed.files) == expected

    _, parts = export("parts", packed.files[0].stat().st_size - 1)
    assert (parts.compressed, parts.split) == (True, True)
    assert f"split into {len(parts.files)}" in parts.notice()
    assert _read_parts(parts.files) == expected


async def test_an_export_too_large_for_any_split_is_refused(
    ledger: UsageLedger, tmp_path: Path
) -> None:
    """A limit smaller than one gzip'd row cannot be met."""
    plain = tmp_path / "export.csv"
    rows = write_csv(tmp_path / "usage.db", Scope(guild_id=G1), window_for(Period.ALL, NOW), plain)
    with pytest.raises(ExportTooLarge):
        fit_to_limit(plain, rows, 60)


async def test_export_streams_more_rows_than_one_batch(ledger: UsageLedger, tmp_path: Path) -> None:
    """More rows than one fetch batch all arrive, in order."""
    clock = Clock(NOW)
    many = UsageLedger(ledger.connection, clock)
    for index in range(2500):
        await many.reserve(
            NewGeneration(U1, G2, 99, "dall-e-2", "256x256", "standard", 1, f"bulk{index}"), 0
        )
    plain = tmp_path / "bulk.csv"
    rows = write_csv(tmp_path / "usage.db", Scope(guild_id=G2), window_for(Period.ALL, NOW), plain)
    assert rows == 2501
    text = plain.read_text(encoding="utf-8")
    assert sum(1 for _ in csv.reader(io.StringIO(text))) == 2502
