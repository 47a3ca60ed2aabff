"""Reports, the daily series and the CSV export, against a hand-computed set of rows."""

from __future__ import annotations

import csv
import gzip
import io
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from bot.ledger.export import (
    ExportResult,
    ExportTooLarge,
    export_csv,
    package_for_upload,
    write_export,
)
from bot.ledger.periods import Period
from bot.ledger.reports import (
    EXPORT_COLUMNS,
    BadPeriod,
    Cost,
    Scope,
    Undelivered,
    Window,
    build_report,
    cost_cell,
    daily_series,
    parse_window,
    window_for,
)
from bot.ledger.store import UsageLedger, open_ledger
from tests.conftest import NO_CEILINGS, NOW, Clock, add_row, generation

G1, G2 = 10, 20
U1, U2, U3 = 1, 2, 3


@pytest.fixture
async def ledger(ledger: UsageLedger, clock: Clock) -> UsageLedger:
    """The fixture rows; the numbers in each test are worked out from this list by hand.

    Rows 13-15 are calls upstream billed whose images never reached the member: since the
    ledger records upstream's answer before delivery they carry their cost, so they add to
    requests, failures and cost (and to "billed, not delivered"), never to images.
    """
    # (time, user, guild, model, n, outcome, cost, prices' date, tokens); dates are 2026's.
    rows = [
        # 1: today, 2 images, tokens
        ("11-21T11:00:00", U1, G1, "gpt-image-1", 2, "delivered", 0.05, "11-20", (10, 100)),
        # 2: exactly midnight today: inside "today"
        ("11-21T00:00:00", U2, G1, "dall-e-3", 1, "delivered", 0.04, "11-21", None),
        # 3: the last microsecond of yesterday: outside "today"
        ("11-20T23:59:59.999999", U1, G1, "dall-e-3", 1, "delivered", 0.08, "11-21", None),
        # 4: no price
        ("11-18T10:00:00", U1, G1, "qwen-image", 1, "delivered", None, None, None),
        # 5: failed before upstream answered: a request and a failure, no image, no cost
        ("11-18T10:00:01", U2, G1, "dall-e-3", 1, "failed", None, None, None),
        # 6: exactly 7 days before now: inside "7d"
        ("11-14T12:00:00", U3, G1, "gpt-image-2", 4, "delivered", 0.10, "11-01", None),
        # 7: a second earlier: outside "7d", inside "30d"
        ("11-14T11:59:59", U3, G1, "gpt-image-2", 1, "delivered", 0.02, "11-01", None),
        # 8: another guild
        ("11-01T09:00:00", U1, G2, "dall-e-2", 3, "delivered", 0.06, "11-21", None),
        # 9: older than 30 days
        ("10-01T09:00:00", U1, G1, "dall-e-3", 1, "delivered", 0.04, "11-21", None),
        # 10: a direct message, today
        ("11-21T01:00:00", U1, None, "gpt-image-1", 1, "delivered", 0.01, "11-20", None),
        # 12: interrupted before upstream answered: no cost
        ("11-19T08:00:00", U3, G1, "dall-e-3", 1, "interrupted", None, None, None),
        # 13: billed, Discord refused the upload
        ("11-19T09:00:00", U2, G1, "dall-e-3", 1, "delivery_failed", 0.04, "11-21", None),
        # 14: billed, the bot stopped mid-upload, no image confirmed
        ("11-20T10:00:00", U3, G1, "gpt-image-2", 2, "interrupted_delivery", 0.03, "11-01", None),
        # 15: billed, upstream's image was damaged; tokens
        ("11-17T10:00:00", U1, G1, "gpt-image-1", 1, "corrupt_image", 0.02, "11-20", (5, 50)),
        # 11 (last, so it stays pending): a request, no image, no cost
        ("11-21T11:30:00", U2, G1, "gpt-image-1", 3, "pending", None, None, None),
    ]
    for when, user, guild, model, n, outcome, cost, as_of, tokens in rows:
        clock.at(f"2026-{when}")
        entry = generation(user, guild, channel_id=99, model=model, n=n, request_id=f"r{when}")
        prices_date = f"2026-{as_of}" if as_of else None
        await add_row(ledger, entry, outcome, cost=cost, as_of=prices_date, tokens=tokens)
    clock.now = NOW
    return ledger


def week() -> Window:
    return window_for(Period.DAYS_7, NOW)


async def test_server_report_numbers(ledger: UsageLedger) -> None:
    """Guild 10 over 7 days: rows 1-6 and 11-15.

    The billed rows 13-15 add $0.09 to the cost (0.27 before them) and three failures, and
    no image: the images are still the 9 members received.
    """
    report = await build_report(ledger.reader, Scope(guild_id=G1), week())
    totals = report.totals
    assert (totals.images, totals.requests, totals.failures) == (9, 11, 5)
    assert totals.cost.usd == pytest.approx(0.36)
    assert (totals.cost.unpriced_images, totals.cost.prices_from, totals.cost.prices_to) == (
        1,
        "2026-11-01",
        "2026-11-21",
    )
    assert (totals.undelivered.requests, totals.undelivered.usd) == (3, pytest.approx(0.09))
    assert (totals.input_tokens, totals.output_tokens, totals.total_tokens) == (15, 150, 165)
    assert [(m.model, m.images, m.requests, m.failures) for m in report.by_model] == [
        ("gpt-image-2", 4, 2, 1),
        ("dall-e-3", 2, 5, 3),
        ("gpt-image-1", 2, 3, 1),
        ("qwen-image", 1, 1, 0),
    ]
    costs = {m.model: m.cost for m in report.by_model}
    assert costs["dall-e-3"].usd == pytest.approx(0.16)
    assert costs["gpt-image-1"].usd == pytest.approx(0.07)
    assert costs["gpt-image-2"].usd == pytest.approx(0.13)
    assert costs["qwen-image"] == Cost(0.0, 1, None, None)
    undelivered = {
        m.model: (m.undelivered.requests, round(m.undelivered.usd, 6)) for m in report.by_model
    }
    assert undelivered == {
        "gpt-image-2": (1, 0.03),
        "dall-e-3": (1, 0.04),
        "gpt-image-1": (1, 0.02),
        "qwen-image": (0, 0.0),
    }
    # U1 and U3 both have 4 images: the higher cost goes first.
    assert [(u.user_id, u.images, u.requests) for u in report.top_users] == [
        (U1, 4, 4),
        (U3, 4, 3),
        (U2, 1, 4),
    ]
    assert [round(u.cost_usd, 6) for u in report.top_users] == [0.15, 0.13, 0.08]


async def test_member_in_a_guild_and_everywhere(ledger: UsageLedger) -> None:
    """A member's report in one guild leaves out their other guilds and DMs; no top users.

    Row 15 (billed, the image was damaged) is one of U1's requests and $0.02 of their cost.
    """
    month = window_for(Period.DAYS_30, NOW)
    in_guild = await build_report(ledger.reader, Scope(G1, U1), month)
    assert (in_guild.totals.images, in_guild.totals.requests) == (4, 4)
    assert in_guild.totals.cost.usd == pytest.approx(0.15)
    assert in_guild.top_users == ()
    everywhere = await build_report(ledger.reader, Scope(user_id=U1), month)
    assert (everywhere.totals.images, everywhere.totals.requests) == (8, 6)
    assert everywhere.totals.cost.usd == pytest.approx(0.22)
    assert everywhere.totals.cost.unpriced_images == 1
    undelivered = everywhere.totals.undelivered
    assert (undelivered.requests, undelivered.usd) == (1, pytest.approx(0.02))


@pytest.mark.parametrize(
    ("period", "start", "end", "images", "requests"),
    [
        ("today", None, None, 3, 3),  # rows 1, 2, 11: midnight in, 23:59:59.999999 out
        ("7d", None, None, 9, 11),  # rows 1-6, 11-15
        ("30d", None, None, 10, 12),  # + row 7
        ("all", None, None, 11, 13),  # + row 9
        (None, None, None, 10, 12),  # the default is 30 days
        (None, "2026-11-14", "2026-11-14", 5, 2),  # rows 6 and 7: whole UTC day
        (None, "2026-11-20", "2026-11-20", 1, 2),  # rows 3 and 14
        ("2026-11-20..2026-11-21", None, None, 4, 5),  # rows 1, 2, 3, 11, 14
        ("2026-11-21", None, None, 3, 3),
        (None, "2026-11-19", None, 4, 7),  # from the 19th on: rows 1, 2, 3, 11-14
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
    report = await build_report(ledger.reader, Scope(guild_id=G1), window)
    assert (report.totals.images, report.totals.requests) == (images, requests)


async def test_everything_scope_includes_other_guilds_and_dms(ledger: UsageLedger) -> None:
    """No guild and no user: every row, DMs included."""
    report = await build_report(ledger.reader, Scope(), week())
    assert report.totals.images == 10  # guild 10's 9 and the DM
    assert {u.user_id for u in report.top_users} == {U1, U2, U3}


async def test_top_users_are_capped(ledger: UsageLedger) -> None:
    """`top` limits the list; the order stays images, then cost."""
    report = await build_report(ledger.reader, Scope(guild_id=G1), week(), top=1)
    assert [u.user_id for u in report.top_users] == [U1]


async def test_daily_series(ledger: UsageLedger) -> None:
    """Every day of the window is present, models in catalog order, failures not counted.

    Billed rows whose images never arrived (13-15) add no image to any day.
    """
    series = await daily_series(ledger.reader, Scope(guild_id=G1), week(), NOW.date())
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
        ledger.reader, Scope(guild_id=G1), window_for(Period.ALL, NOW), NOW.date()
    )
    assert (series.days[0], series.days[-1]) == (date(2026, 10, 1), date(2026, 11, 21))
    assert len(series.days) == 52


async def test_usage_command_report_shows_cost(ledger: UsageLedger) -> None:
    """/usage's own report carries the estimated cost of the member's generations.

    $0.22: the $0.20 of what U1 received, and row 15's $0.02 billed for a damaged image.
    """
    window = window_for(Period.DAYS_30, ledger.now())
    report = await build_report(ledger.reader, Scope(user_id=U1), window)
    cost = report.totals.cost
    assert report.totals.images == 8
    assert cost.usd == pytest.approx(0.22)
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


async def _stored_rows(ledger: UsageLedger, guild: int) -> list[tuple[str, ...]]:
    """The guild's rows as the CSV writes them: text, empty for NULL, cost when billed."""
    rows = await ledger.reader.execute_fetchall(
        "SELECT created_at, user_id, guild_id, channel_id, model, size, quality, "
        "n_requested, images_delivered, status, error_code, latency_ms, input_tokens, "
        "output_tokens, total_tokens, cost_usd, price_source, price_as_of, request_id, "
        "billed, attempts, upstream_request_id, kind, reference_count "
        "FROM generations WHERE guild_id = ? ORDER BY created_at, id",
        (guild,),
    )
    return [tuple("" if value is None else str(value) for value in row) for row in rows]


async def test_export_parses_back_to_the_same_rows(ledger: UsageLedger, tmp_path: Path) -> None:
    """The CSV has the promised header and one row per generation, equal to the database."""
    out = tmp_path / "out"
    out.mkdir()
    result = await export_csv(
        ledger.reader,
        Scope(guild_id=G1),
        window_for(Period.ALL, NOW),
        out,
        name="g1",
        limit_bytes=10_000_000,
    )
    assert (result.rows, result.compressed, result.split) == (13, False, False)
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
        "billed",
        "attempts",
        "upstream_request_id",
        "kind",
        "references",
    ):
        assert column in parsed[0]
    assert tuple(parsed[0]) == EXPORT_COLUMNS
    assert [tuple(row) for row in parsed[1:]] == await _stored_rows(ledger, G1)
    by_status = {(row[9], row[10]): row[15:] for row in parsed[1:]}
    # A billed failure exports its cost and trace ids; an unbilled one has neither.
    assert by_status[("failed", "delivery_failed")][:1] == ["0.04"]
    assert by_status[("failed", "delivery_failed")][4:7] == ["1", "1", "up-1"]
    assert by_status[("failed", "timeout")][:1] == [""]
    assert by_status[("failed", "timeout")][4:7] == ["0", "", ""]


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
    expected = [list(row) for row in await _stored_rows(ledger, G1)]

    async def export(name: str, limit: int) -> tuple[int, ExportResult]:
        folder = tmp_path / name
        folder.mkdir()
        plain = folder / "export.csv"
        rows = await write_export(
            ledger.reader, Scope(guild_id=G1), window_for(Period.ALL, NOW), plain
        )
        size = plain.stat().st_size
        result = package_for_upload(plain, rows, limit)
        assert all(path.stat().st_size <= limit for path in result.files)
        assert not plain.exists() or result.files == (plain,)
        return size, result

    size, fits = await export("fits", 1_000_000)
    assert (fits.compressed, fits.split, fits.files[0].name) == (False, False, "export.csv")
    assert "gzip" not in fits.notice()

    _, packed = await export("packed", size - 1)
    assert (packed.compressed, packed.split) == (True, False)
    assert packed.files[0].name == "export.csv.gz"
    assert "gzip" in packed.notice()
    assert _read_parts(packed.files) == expected

    _, parts = await export("parts", packed.files[0].stat().st_size - 1)
    assert (parts.compressed, parts.split) == (True, True)
    assert f"split into {len(parts.files)}" in parts.notice()
    assert _read_parts(parts.files) == expected


async def test_an_export_too_large_for_any_split_is_refused(
    ledger: UsageLedger, tmp_path: Path
) -> None:
    """A limit smaller than one gzip'd row cannot be met."""
    plain = tmp_path / "export.csv"
    rows = await write_export(ledger.reader, Scope(guild_id=G1), window_for(Period.ALL, NOW), plain)
    with pytest.raises(ExportTooLarge):
        package_for_upload(plain, rows, 60)


async def test_export_streams_more_rows_than_one_batch(ledger: UsageLedger, tmp_path: Path) -> None:
    """More rows than one fetch batch all arrive, in order."""
    for index in range(2500):
        await ledger.reserve(
            generation(U1, G2, model="dall-e-2", size="256x256", request_id=f"bulk{index}"),
            NO_CEILINGS,
        )
    plain = tmp_path / "bulk.csv"
    rows = await write_export(ledger.reader, Scope(guild_id=G2), window_for(Period.ALL, NOW), plain)
    assert rows == 2501
    text = plain.read_text(encoding="utf-8")
    assert sum(1 for _ in csv.reader(io.StringIO(text))) == 2502


# One row of n=2, priced $0.05 if upstream answered: (outcome, images the member received)
# -> (images, failures, cost, billed-not-delivered requests, their cost).
UNDELIVERED_CASES = [
    ("delivered", None, 2, 0, 0.05, 0, 0.0),
    ("delivered", 1, 1, 0, 0.05, 0, 0.0),
    ("delivery_failed", None, 0, 1, 0.05, 1, 0.05),
    ("delivery_failed", 1, 1, 1, 0.05, 1, 0.05),
    ("corrupt_image", None, 0, 1, 0.05, 1, 0.05),
    ("image_too_large", None, 0, 1, 0.05, 1, 0.05),
    ("interrupted_delivery", None, 0, 1, 0.05, 1, 0.05),
    ("interrupted_delivery", 1, 1, 1, 0.05, 1, 0.05),
    ("failed", None, 0, 1, 0.0, 0, 0.0),
    ("interrupted", None, 0, 1, 0.0, 0, 0.0),
    ("pending", None, 0, 0, 0.0, 0, 0.0),
    # Upstream answered and the upload is still under way: billed, not (yet) delivered.
    ("answered", None, 0, 0, 0.05, 1, 0.05),
]


@pytest.mark.parametrize(
    ("outcome", "received", "images", "failures", "cost", "calls", "calls_usd"),
    UNDELIVERED_CASES,
)
async def test_billed_not_delivered_totals(
    ledger_path: Path,
    clock: Clock,
    outcome: str,
    received: int | None,
    images: int,
    failures: int,
    cost: float,
    calls: int,
    calls_usd: float,
) -> None:
    """Cost is every billed call; images only what members received; the rest counted apart."""
    async with open_ledger(ledger_path, clock) as fresh:
        entry = generation(U1, G1, model="dall-e-3", n=2)
        await add_row(fresh, entry, outcome, cost=0.05, as_of="2026-11-21", received=received)
        for scope in (Scope(guild_id=G1), Scope(user_id=U1), Scope()):
            report = await build_report(fresh.reader, scope, week())
            totals = report.totals
            assert (totals.images, totals.requests, totals.failures) == (images, 1, failures)
            assert totals.cost.usd == pytest.approx(cost)
            assert (totals.undelivered.requests, totals.undelivered.usd) == (
                calls,
                pytest.approx(calls_usd),
            )
            assert [u.images for u in report.top_users] == (
                [images] if scope.user_id is None else []
            )
        series = await daily_series(fresh.reader, Scope(guild_id=G1), week(), NOW.date())
        assert series.day_total(NOW.date()) == images


@pytest.mark.parametrize(
    ("undelivered", "text"),
    [
        (Undelivered(1, 0.04), "1 call, $0.0400 USD (estimated, included in the cost)"),
        (Undelivered(3, 12.5), "3 calls, $12.50 USD (estimated, included in the cost)"),
        (
            Undelivered(1, 0.01) + Undelivered(2, 0.02),
            "3 calls, $0.0300 USD (estimated, included in the cost)",
        ),
    ],
)
def test_undelivered_texts(undelivered: Undelivered, text: str) -> None:
    """How many calls, their dollars, and that they are already part of the cost."""
    assert undelivered.summary() == text
