"""`python -m bot report`: the same numbers as /usage-admin, from the database, without Discord."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.ledger.reports import Report, Scope, build_report, parse_window
from bot.ledger.store import open_ledger
from tests.conftest import Clock, add_row, generation

ROOT = Path(__file__).parents[1]
GUILD, OTHER = 10, 20


async def _fill(path: Path) -> None:
    clock = Clock()
    rows = [
        ("2026-11-02T10:00:00", 1, GUILD, "dall-e-3", 1, "delivered", 0.04),
        ("2026-11-03T10:00:00", 2, GUILD, "gpt-image-2", 2, "delivered", 0.052),
        ("2026-11-03T11:00:00", 2, GUILD, "qwen-image", 1, "delivered", None),
        ("2026-11-04T10:00:00", 1, GUILD, "dall-e-3", 1, "failed", None),
        ("2026-11-04T11:00:00", 2, GUILD, "dall-e-3", 1, "delivery_failed", 0.04),
        ("2026-11-05T10:00:00", 1, OTHER, "dall-e-2", 3, "delivered", 0.06),
    ]
    async with open_ledger(path, clock) as ledger:
        for when, user, guild, model, n, outcome, cost in rows:
            clock.at(when)
            entry = generation(user, guild, channel_id=5, model=model, quality="standard", n=n)
            as_of = "2026-11-01" if cost is not None else None
            await add_row(ledger, entry, outcome, cost=cost, as_of=as_of)


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Six generations in November 2026: one in another guild, one unpriced, and two failed.

    One failed before upstream answered (free); one was billed but Discord refused the
    images: its $0.04 is part of the cost (and of "billed, not delivered"), not of images.
    The file is where DATABASE_PATH's default points from tmp_path, the working directory;
    the environment holds neither the bot's token nor its key.
    """
    path = tmp_path / "data" / "usage.db"
    asyncio.run(_fill(path))
    monkeypatch.chdir(tmp_path)
    for name in ("DISCORD_TOKEN", "COMETAPI_KEY", "DATABASE_PATH"):
        monkeypatch.delenv(name, raising=False)
    return path


def report(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `python -m bot report ARGS` in-process: status, stdout, stderr."""
    status = main(["report", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_runs_as_a_module_without_secrets(database: Path, tmp_path: Path) -> None:
    """`python -m bot report` in a shell with only PATH: DATABASE_PATH's default is used."""
    done = subprocess.run(
        [sys.executable, "-m", "bot", "report", "--period", "all", "--format", "json"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["totals"]["images"] == 7


def test_json_has_the_same_numbers_as_the_discord_report(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command line and /usage-admin read the same rows with the same queries."""
    status, out, err = report(
        capsys,
        "--database",
        str(database),
        "--guild",
        str(GUILD),
        "--period",
        "all",
        "--format",
        "json",
    )
    assert status == 0, err
    document = json.loads(out)
    assert document["currency"] == "USD"
    assert document["cost_is_estimated"] is True
    totals = document["totals"]
    assert (totals["images"], totals["requests"], totals["failures"]) == (4, 5, 2)
    assert totals["cost_usd"] == pytest.approx(0.132)
    assert totals["unpriced_images"] == 1
    assert totals["prices_as_of"] == ["2026-11-01", "2026-11-01"]
    assert totals["billed_not_delivered"] == {"requests": 1, "cost_usd": 0.04}
    assert [line["model"] for line in document["by_model"]] == [
        "gpt-image-2",
        "dall-e-3",
        "qwen-image",
    ]
    assert [user["user_id"] for user in document["top_users"]] == [2, 1]

    async def direct_report() -> Report:
        async with open_ledger(database) as ledger:
            window = parse_window("all", None, None, datetime.now(UTC))
            return await build_report(ledger.reader, Scope(guild_id=GUILD), window)

    direct = asyncio.run(direct_report())
    assert totals["images"] == direct.totals.images
    assert totals["cost_usd"] == pytest.approx(direct.totals.cost.usd)
    assert totals["billed_not_delivered"]["requests"] == direct.totals.undelivered.requests


def test_table_says_estimated_currency_and_date(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The human format shows the cost as an estimate in USD with the prices' date."""
    status, out, err = report(capsys, "--period", "all")
    assert status == 0, err
    assert "Image usage: all guilds and users, all time" in out
    assert "$0.1920 USD (estimated, prices as of 2026-11-01)" in out
    assert "billed, not delivered  1 call, $0.0400 USD (estimated, included in the cost)" in out
    assert "no price for 1 image(s)" in out
    assert "qwen-image" in out


def test_csv_rows_and_filters(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One total row and a row per model; --user and start/end dates narrow it."""
    status, out, err = report(
        capsys, "--user", "1", "--start", "2026-11-02", "--end", "2026-11-04", "--format", "csv"
    )
    assert status == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(row["section"], row["key"]) for row in rows] == [
        ("total", "2026-11-02 to 2026-11-04 (UTC)"),
        ("model", "dall-e-3"),
    ]
    assert (rows[0]["images"], rows[0]["requests"], rows[0]["failures"]) == ("1", "2", "1")
    assert float(rows[0]["cost_usd"]) == pytest.approx(0.04)
    status, out, err = report(capsys, "--guild", str(GUILD), "--format", "csv", "--period", "all")
    users = [row for row in csv.DictReader(io.StringIO(out)) if row["section"] == "user"]
    assert [(row["key"], row["images"]) for row in users] == [("2", "3"), ("1", "1")]


def test_database_path_comes_from_the_environment(
    database: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Without --database the command reads DATABASE_PATH, like the bot."""
    moved = tmp_path / "elsewhere.db"
    database.rename(moved)
    monkeypatch.setenv("DATABASE_PATH", str(moved))
    status, out, err = report(capsys, "--period", "2026-11-05", "--format", "json")
    assert status == 0, err
    assert json.loads(out)["totals"]["images"] == 3


def test_report_never_writes_the_database(
    database: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The database is opened read-only: its bytes stay the same."""
    before = database.read_bytes()
    assert report(capsys)[0] == 0
    assert database.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--period", "fortnight"), "is not a period"),
        (("--start", "2026-11-09", "--end", "2026-11-01"), "after the end"),
        (("--database", "none.db"), "no database at none.db"),
    ],
)
def test_bad_input_exits_2(
    database: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    """A period that cannot be read or a missing file: status 2 and the reason."""
    status, _, err = report(capsys, *args)
    assert status == 2
    assert message in err


def test_an_older_schema_exits_2(database: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file the bot has not upgraded yet is not read (and not upgraded by a report)."""
    with closing(sqlite3.connect(database)) as db:
        db.execute("PRAGMA user_version = 1")
    status, _, err = report(capsys)
    assert status == 2
    assert "schema version 1" in err


def test_a_database_url_of_another_kind_is_refused_in_words(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--database-url mysql://…: exit 2 with what is accepted, no traceback, no password."""
    assert main(["report", "--database-url", "mysql://bot:hunter2-long@db/x"]) == 2
    err = capsys.readouterr().err
    assert "must start with sqlite:/// or postgresql://" in err
    assert "hunter2" not in err
    assert "Traceback" not in err
