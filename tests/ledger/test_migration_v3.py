"""Migration 3 on a database a version-2 bot wrote: statuses, billed, quota and cost.

The version-2 file is built with only the first two migrations, then filled with rows the
way the version-2 bot wrote them: `ok` with images and a cost; `failed` with no images and
no cost (v2's `fail` cleared both), whatever the reason; `interrupted`; and `pending`.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from bot.ledger.migrations import MIGRATIONS, SCHEMA_VERSION
from bot.ledger.periods import Period
from bot.ledger.reports import Scope, build_report, window_for
from bot.ledger.store import open_ledger
from tests.conftest import Clock

# Member 1's rows on 2026-11-21 (UTC):
# id, time, guild, model, n, images, status, error_code, cost, price_as_of, total tokens
V2_ROWS = [
    (1, "08:00", 10, "dall-e-3", 2, 2, "ok", None, 0.08, "2026-11-21", None),
    (2, "09:00", 10, "gpt-image-1", 1, 1, "ok", None, 0.05, "2026-11-20", 300),
    (3, "09:30", 10, "qwen-image", 1, 1, "ok", None, None, None, None),
    (4, "10:00", 10, "dall-e-3", 1, 0, "failed", "delivery_failed", None, None, None),
    (5, "10:10", 10, "dall-e-3", 1, 0, "failed", "image_too_large", None, None, None),
    (6, "10:20", 10, "dall-e-3", 1, 0, "failed", "timeout", None, None, None),
    (7, "10:30", 20, "dall-e-3", 1, 0, "interrupted", "interrupted", None, None, None),
    (8, "11:00", None, "dall-e-2", 3, 0, "pending", None, None, None, None),
]  # fmt: skip

# What migration 3's comments say each row becomes, by id:
# status: ok -> delivered, the rest unchanged; billed: ok, and the failures that happened
# after upstream answered (delivery_failed, image_too_large); quota_images: the images
# received, or n while pending; spend_usd: the cost of billed rows (none known for v2's
# failed rows, whose cost v2 cleared), nothing for the others.
EXPECTED = {
    1: ("delivered", 1, 2, 2, 0.08, 0.08),
    2: ("delivered", 1, 1, 1, 0.05, 0.05),
    3: ("delivered", 1, 1, 1, None, 0.0),
    4: ("failed", 1, 0, 0, None, 0.0),
    5: ("failed", 1, 0, 0, None, 0.0),
    6: ("failed", 0, 0, 0, None, 0.0),
    7: ("interrupted", 0, 0, 0, None, 0.0),
    8: ("pending", 0, 0, 3, None, 0.0),
}


def build_v2(path: Path) -> None:
    """A file at schema version 2 holding V2_ROWS and a server's limits."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        for version, step in enumerate(MIGRATIONS[:2], start=1):
            db.executescript(f"BEGIN;\n{step}\nPRAGMA user_version = {version};\nCOMMIT;")
        for row in V2_ROWS:
            rid, time, guild, model, n, images, status, code, cost, as_of, tokens = row
            db.execute(
                "INSERT INTO generations (id, created_at, user_id, guild_id, channel_id, model, "
                "size, quality, n_requested, images_delivered, status, error_code, "
                "error_message, latency_ms, input_tokens, output_tokens, total_tokens, "
                "request_id, cost_usd, price_source, price_as_of) "
                "VALUES (?, ?, ?, ?, 5, ?, '1024x1024', 'standard', ?, ?, ?, ?, ?, 10, ?, ?, ?, "
                "?, ?, ?, ?)",
                (
                    rid,
                    f"2026-11-21T{time}:00.000000Z",
                    1,
                    guild,
                    model,
                    n,
                    images,
                    status,
                    code,
                    code and f"{code} happened",
                    tokens and tokens // 3,
                    tokens and tokens - tokens // 3,
                    tokens,
                    f"req-{rid}",
                    cost,
                    "builtin" if cost is not None else None,
                    as_of,
                ),
            )
        db.execute(
            "INSERT INTO guild_limits (guild_id, user_daily_images, updated_at, updated_by) "
            "VALUES (10, 4, '2026-11-20T00:00:00.000000Z', 100)"
        )
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


@pytest.fixture
def v2_file(tmp_path: Path) -> Path:
    """A version-2 database file with V2_ROWS."""
    path = tmp_path / "usage.db"
    build_v2(path)
    return path


def read(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows read with plain sqlite3, as an operator would."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


async def test_rows_come_out_as_migration_3_says(v2_file: Path, clock: Clock) -> None:
    """Status, billed flag, images counted and spend of every v2 row, by hand."""
    async with open_ledger(v2_file, clock):
        pass
    assert read(v2_file, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    got = read(
        v2_file,
        "SELECT id, status, billed, images_delivered, quota_images, cost_usd, spend_usd "
        "FROM generations ORDER BY id",
    )
    assert {row[0]: row[1:] for row in got} == EXPECTED


async def test_everything_else_a_row_said_is_kept(v2_file: Path, clock: Clock) -> None:
    """Ids, times, who, what, tokens, request ids, errors and prices carry over unchanged."""
    columns = (
        "id, created_at, user_id, guild_id, channel_id, model, size, quality, n_requested, "
        "error_code, error_message, latency_ms, input_tokens, output_tokens, total_tokens, "
        "request_id, price_source, price_as_of"
    )
    before = read(v2_file, f"SELECT {columns} FROM generations ORDER BY id")  # noqa: S608
    async with open_ledger(v2_file, clock):
        pass
    assert read(v2_file, f"SELECT {columns} FROM generations ORDER BY id") == before  # noqa: S608
    new = read(
        v2_file,
        "SELECT upstream_request_id, attempts, reserved_usd, finished_at FROM generations",
    )
    assert set(new) == {(None, None, None, None)}
    assert read(v2_file, "SELECT guild_id, user_daily_images FROM guild_limits") == [(10, 4)]
    indexes = {row[0] for row in read(v2_file, "SELECT name FROM sqlite_master")}
    assert {
        "generations_by_user",
        "generations_by_guild",
        "generations_by_time",
        "generations_pending",
    } <= indexes
    assert "generations_v3" not in indexes
    assert read(v2_file, "PRAGMA integrity_check") == [("ok",)]


async def test_the_migrated_day_counts_against_the_limits(v2_file: Path, clock: Clock) -> None:
    """Today's counts after the upgrade: delivered images and the pending reservation, only.

    The pending row is a v2 process's, left behind: the next start closes it, free.
    """
    async with open_ledger(v2_file, clock) as ledger:
        counts = await ledger.counts(1, 10)
        assert (counts.operator_images, counts.server_images) == (2 + 1 + 1 + 3, 4)
        assert counts.user_spend_usd == pytest.approx(0.13)
        assert counts.server_spend_usd == pytest.approx(0.13)
        assert await ledger.mark_stale_pending() == 1
        assert await ledger.status_of(8) == "interrupted"
        assert (await ledger.counts(1, 10)).operator_images == 4


async def test_the_migrated_rows_report_as_before_plus_undelivered(
    v2_file: Path, clock: Clock
) -> None:
    """v2's report numbers hold; the two billed failures are "billed, not delivered", at $0.

    v2 cleared the cost of failed rows, so their part of the cost is not known: counted as
    calls with no dollars, and their images as unpriced (1 delivered without a price, plus
    the image each billed failure asked for), so the report never reads them as free.
    """
    async with open_ledger(v2_file, clock) as ledger:
        window = window_for(Period.TODAY, ledger.now())
        report = await build_report(ledger.reader, Scope(guild_id=10), window)
    totals = report.totals
    assert (totals.images, totals.requests, totals.failures) == (4, 6, 3)
    assert totals.cost.usd == pytest.approx(0.13)
    assert totals.cost.unpriced_images == 1 + 2
    assert (totals.undelivered.requests, totals.undelivered.usd) == (2, 0.0)
    assert (totals.input_tokens, totals.output_tokens, totals.total_tokens) == (100, 200, 300)


async def test_a_failed_migration_leaves_version_2(tmp_path: Path, clock: Clock) -> None:
    """The rebuild is all or nothing: a row migration 3 cannot take leaves the v2 file as it was."""
    path = tmp_path / "usage.db"
    build_v2(path)
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        # A status no bot writes (a hand edit past v2's CHECK): v3's CHECK refuses the copy.
        db.execute("PRAGMA ignore_check_constraints = ON")
        db.execute("UPDATE generations SET status = 'weird' WHERE id = 6")
    before = read(path, "SELECT * FROM generations ORDER BY id")
    with pytest.raises(sqlite3.IntegrityError):
        async with open_ledger(path, clock):
            pass
    assert read(path, "PRAGMA user_version") == [(2,)]
    assert read(path, "SELECT * FROM generations ORDER BY id") == before
