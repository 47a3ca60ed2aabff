"""`python -m bot report`: the usage report on the command line, for operators without Discord.

It reads the same database with the same queries as /usage-admin, on a read-only connection,
and needs no token or key: only DATABASE_URL or DATABASE_PATH (or --database-url, --database).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import sqlite3
import sys
from pathlib import Path
from typing import TextIO

import aiosqlite

from bot.ledger.db import PostgresDatabase, SqliteDatabase
from bot.ledger.migrations import SCHEMA_VERSION
from bot.ledger.periods import utc_now
from bot.ledger.pg_migrations import PG_SCHEMA_VERSION, schema_version
from bot.ledger.postgres import StorageUnavailable, open_pool, shown_url
from bot.ledger.reports import (
    CURRENCY,
    BadPeriod,
    Report,
    Scope,
    Window,
    build_report,
    cost_cell,
    parse_window,
)
from bot.ledger.storage import is_postgres, sqlite_path

FORMATS = ("table", "csv", "json")


class ReportUnavailable(Exception):
    """The database cannot be reported on; the message says why and what to do."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `report` subcommand's options."""
    parser.add_argument("--guild", type=int, help="only this server (guild id)")
    parser.add_argument("--user", type=int, help="only this member (user id)")
    parser.add_argument(
        "--period",
        help="today, 7d, 30d (default), all, a day YYYY-MM-DD or START..END; UTC",
    )
    parser.add_argument("--start", help="first day, YYYY-MM-DD (UTC), instead of --period")
    parser.add_argument("--end", help="last day, YYYY-MM-DD (UTC), instead of --period")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")
    parser.add_argument(
        "--top", type=int, default=10, help="how many top users to list (default 10)"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--database", type=Path, help="the SQLite file (default: DATABASE_PATH, as the bot)"
    )
    where.add_argument(
        "--database-url",
        help="sqlite:///FILE or postgresql://… (default: DATABASE_URL, as the bot)",
    )


def _scope_label(scope: Scope) -> str:
    parts = []
    if scope.guild_id is not None:
        parts.append(f"guild {scope.guild_id}")
    if scope.user_id is not None:
        parts.append(f"user {scope.user_id}")
    return ", ".join(parts) or "all guilds and users"


def render_table(report: Report) -> str:
    """The report as aligned text."""
    totals = report.totals
    lines = [
        f"Image usage: {_scope_label(report.scope)}, {report.window.label}",
        "",
        f"images    {totals.images:,}",
        f"requests  {totals.requests:,} ({totals.edits:,} edits)",
        f"failed    {totals.failures:,}",
        f"cost      {totals.cost.summary()}",
        f"billed, not delivered  {totals.undelivered.summary()}",
        f"tokens    {totals.input_tokens:,} in, {totals.output_tokens:,} out, "
        f"{totals.total_tokens:,} total",
    ]
    if report.by_model:
        width = max(len("model"), *(len(line.model) for line in report.by_model))
        lines += ["", f"{'model':<{width}}  {'images':>9}  {'requests':>9}  {'failed':>7}  cost"]
        lines += [
            f"{line.model:<{width}}  {line.images:>9,}  {line.requests:>9,}  "
            f"{line.failures:>7,}  {cost_cell(line.cost)}"
            for line in report.by_model
        ]
    if report.top_users:
        lines += ["", f"{'top users':<20}  {'images':>9}  {'requests':>9}  cost ({CURRENCY})"]
        lines += [
            f"{line.user_id:<20}  {line.images:>9,}  {line.requests:>9,}  {line.cost_usd:.4f}"
            for line in report.top_users
        ]
    return "\n".join(lines) + "\n"


def report_document(report: Report) -> dict[str, object]:
    """The report as plain data: the JSON output's shape."""
    totals = report.totals
    window = report.window
    return {
        "scope": {"guild_id": report.scope.guild_id, "user_id": report.scope.user_id},
        "window": {
            "label": window.label,
            "start": window.start.isoformat() if window.start else None,
            "end": window.end.isoformat() if window.end else None,
        },
        "currency": CURRENCY,
        "cost_is_estimated": True,
        "totals": {
            "images": totals.images,
            "requests": totals.requests,
            "failures": totals.failures,
            "edits": totals.edits,
            "cost_usd": round(totals.cost.usd, 6),
            "unpriced_images": totals.cost.unpriced_images,
            "prices_as_of": [totals.cost.prices_from, totals.cost.prices_to],
            "billed_not_delivered": {
                "requests": totals.undelivered.requests,
                "cost_usd": round(totals.undelivered.usd, 6),
            },
            "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens,
            "total_tokens": totals.total_tokens,
        },
        "by_model": [
            {
                "model": line.model,
                "images": line.images,
                "requests": line.requests,
                "failures": line.failures,
                "cost_usd": round(line.cost.usd, 6),
                "unpriced_images": line.cost.unpriced_images,
                "prices_as_of": [line.cost.prices_from, line.cost.prices_to],
            }
            for line in report.by_model
        ],
        "top_users": [
            {
                "user_id": line.user_id,
                "images": line.images,
                "requests": line.requests,
                "cost_usd": round(line.cost_usd, 6),
            }
            for line in report.top_users
        ],
    }


def render_json(report: Report) -> str:
    """The report as JSON."""
    return json.dumps(report_document(report), indent=2) + "\n"


CSV_HEADER = (
    "section",
    "key",
    "images",
    "requests",
    "failures",
    "cost_usd",
    "unpriced_images",
    "prices_from",
    "prices_to",
)


def render_csv(report: Report) -> str:
    """The report as one CSV: a total row, a row per model, a row per top user."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    totals = report.totals
    cost = totals.cost
    writer.writerow(
        (
            "total",
            report.window.label,
            totals.images,
            totals.requests,
            totals.failures,
            round(cost.usd, 6),
            cost.unpriced_images,
            cost.prices_from,
            cost.prices_to,
        )
    )
    for line in report.by_model:
        writer.writerow(
            (
                "model",
                line.model,
                line.images,
                line.requests,
                line.failures,
                round(line.cost.usd, 6),
                line.cost.unpriced_images,
                line.cost.prices_from,
                line.cost.prices_to,
            )
        )
    for user in report.top_users:
        writer.writerow(
            (
                "user",
                user.user_id,
                user.images,
                user.requests,
                "",
                round(user.cost_usd, 6),
                "",
                "",
                "",
            )
        )
    return buffer.getvalue()


RENDERERS = {"table": render_table, "csv": render_csv, "json": render_json}


def read_only_uri(database: Path) -> str:
    """The URI that opens the file read-only: a report never writes, not even a migration."""
    if not database.is_file():
        raise ReportUnavailable(f"no database at {database} (set DATABASE_PATH or --database)")
    return f"{database.resolve().as_uri()}?mode=ro"


async def read_postgres_report(url: str, scope: Scope, window: Window, top: int) -> Report:
    """Build the report from PostgreSQL, on one connection, in a read-only transaction."""
    try:
        pool = await open_pool(url, min_size=1, max_size=1)
    except StorageUnavailable as error:
        raise ReportUnavailable(str(error)) from None
    try:
        async with pool.acquire() as connection:
            version = await schema_version(connection)
        if version != PG_SCHEMA_VERSION:
            raise ReportUnavailable(
                f"{shown_url(url)} has schema version {version}, this tool reads "
                f"{PG_SCHEMA_VERSION}: start this version of the bot once to upgrade it"
            )
        return await build_report(PostgresDatabase(pool), scope, window, top=top)
    finally:
        await pool.close()


async def read_any_report(url: str, scope: Scope, window: Window, top: int) -> Report:
    """The report from whichever database the URL names."""
    if is_postgres(url):
        return await read_postgres_report(url, scope, window, top)
    try:
        database = sqlite_path(url)
    except ValueError:
        # Not repeated: the URL may hold a password.
        raise ReportUnavailable(
            "the database URL must start with sqlite:/// or postgresql://"
        ) from None
    return await read_report(database, scope, window, top)


async def read_report(database: Path, scope: Scope, window: Window, top: int) -> Report:
    """Open the database read-only, check its schema, and build the report."""
    uri = read_only_uri(database)
    try:
        db = await aiosqlite.connect(uri, uri=True)
    except sqlite3.Error as error:
        raise ReportUnavailable(f"cannot open {database}: {error}") from error
    try:
        async with db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version != SCHEMA_VERSION:
            raise ReportUnavailable(
                f"{database} has schema version {version}, this tool reads {SCHEMA_VERSION}: "
                "start this version of the bot once to upgrade it"
            )
        return await build_report(SqliteDatabase(db, database), scope, window, top=top)
    finally:
        await db.close()


def run(args: argparse.Namespace, url: str, out: TextIO | None = None) -> int:
    """Print the report the arguments ask for; 0 on success, 2 with a message otherwise."""
    try:
        window = parse_window(args.period, args.start, args.end, utc_now())
    except BadPeriod as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    scope = Scope(guild_id=args.guild, user_id=args.user)
    try:
        report = asyncio.run(read_any_report(url, scope, window, max(args.top, 0)))
    except ReportUnavailable as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    # sys.stdout is looked up now, not at import, so a redirected stdout is honoured.
    (out or sys.stdout).write(RENDERERS[args.format](report))
    return 0
