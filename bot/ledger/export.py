"""CSV export of the usage log: streamed to a file, gzip'd or split to fit an upload limit.

On SQLite the export reads on its own read-only connection, in a worker thread; on
PostgreSQL through a server-side cursor in one read-only repeatable-read transaction, with the
file written in a worker thread. Either way rows go a thousand at a time from the cursor into
the file, so memory stays flat however many rows there are; the event loop and the bot's
other queries are never held up; and the file is one consistent snapshot even while
generations are being written. Both write the same bytes for the same rows.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import itertools
import math
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bot.ledger.db import Database, PostgresDatabase, SqliteDatabase
from bot.ledger.reports import EXPORT_COLUMNS, Scope, Window, export_params, export_sql

# Discord takes at most this many attachments in one message; more parts than a few messages
# carry is no longer a useful download.
MAX_PARTS: Final = 30
# A part is aimed at this share of the limit, so the compression of its rows rarely overshoots.
_PART_TARGET: Final = 0.9


class ExportTooLarge(Exception):
    """Even split into MAX_PARTS gzip'd parts, the export would not fit the upload limit."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    """The files to attach, in order, and how they were made to fit."""

    files: tuple[Path, ...]
    rows: int
    compressed: bool

    @property
    def split(self) -> bool:
        """Whether the rows were split over several files."""
        return len(self.files) > 1

    def notice(self) -> str:
        """What the user is told about the files."""
        text = f"{self.rows:,} row(s), one per generation."
        if self.split:
            text += (
                f" Too large for one upload, so split into {len(self.files)} gzip'd CSV parts, "
                "each with the header row."
            )
        elif self.compressed:
            text += (
                " Compressed with gzip to fit Discord's upload limit (open it with any unzip tool)."
            )
        return text


_BATCH: Final = 1000


def _open_read_only(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)


def write_csv(database: Path, scope: Scope, window: Window, target: Path) -> int:
    """Stream the scope's rows in the window into a CSV file with a header; return the rows."""
    db = _open_read_only(database)
    try:
        cursor = db.execute(export_sql(scope), export_params(scope, window))
        cursor.arraysize = _BATCH
        with target.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(EXPORT_COLUMNS)
            rows = 0
            # fetchmany keeps a thousand rows in memory at most, however large the export.
            while batch := cursor.fetchmany():
                writer.writerows(batch)
                rows += len(batch)
    finally:
        db.close()
    return rows


def _gzip(source: Path, target: Path) -> None:
    with source.open("rb") as plain, gzip.open(target, "wb") as packed:
        shutil.copyfileobj(plain, packed, 1024 * 1024)


def _write_parts(source: Path, stem: str, rows_per_part: int) -> list[Path]:
    parts: list[Path] = []
    with source.open(encoding="utf-8", newline="") as plain:
        reader = csv.reader(plain)
        header = next(reader)
        while True:
            chunk = itertools.islice(reader, rows_per_part)
            first = next(chunk, None)
            if first is None:
                return parts
            path = source.with_name(f"{stem}-part{len(parts) + 1}.csv.gz")
            with gzip.open(path, "wt", encoding="utf-8", newline="") as packed:
                writer = csv.writer(packed)
                writer.writerow(header)
                writer.writerow(first)
                writer.writerows(chunk)
            parts.append(path)


def package_for_upload(plain: Path, rows: int, limit_bytes: int) -> ExportResult:
    """Keep the CSV if it fits, else gzip it, else split it into gzip'd parts that each fit."""
    if plain.stat().st_size <= limit_bytes:
        return ExportResult((plain,), rows, compressed=False)
    stem = plain.name.removesuffix(".csv")
    packed = plain.with_name(f"{stem}.csv.gz")
    _gzip(plain, packed)
    packed_size = packed.stat().st_size
    if packed_size <= limit_bytes:
        plain.unlink()
        return ExportResult((packed,), rows, compressed=True)
    packed.unlink()
    # Rows compress about evenly, so the whole file's ratio sizes the parts; a part that still
    # overshoots halves the rows per part and the split is done again.
    rows_per_part = max(1, math.floor(rows * limit_bytes * _PART_TARGET / packed_size))
    while math.ceil(rows / rows_per_part) <= MAX_PARTS:
        parts = _write_parts(plain, stem, rows_per_part)
        if all(part.stat().st_size <= limit_bytes for part in parts):
            plain.unlink()
            return ExportResult(tuple(parts), rows, compressed=True)
        for part in parts:
            part.unlink()
        if rows_per_part == 1:
            break
        rows_per_part = max(1, rows_per_part // 2)
    plain.unlink()
    raise ExportTooLarge(
        f"{rows:,} rows do not fit in {MAX_PARTS} uploads of {limit_bytes:,} bytes"
    )


def export_to_files(
    database: Path, scope: Scope, window: Window, directory: Path, name: str, limit_bytes: int
) -> ExportResult:
    """Write the export under `directory` as `name`.csv (or .csv.gz, or parts) within the limit."""
    plain = directory / f"{name}.csv"
    rows = write_csv(database, scope, window, plain)
    return package_for_upload(plain, rows, limit_bytes)


async def write_csv_postgres(
    db: PostgresDatabase, scope: Scope, window: Window, target: Path
) -> int:
    """`write_csv` on PostgreSQL: a cursor's batches written by a worker thread."""
    statement = db.statement(export_sql(scope))
    rows = 0
    with target.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        await asyncio.to_thread(writer.writerow, EXPORT_COLUMNS)
        async with (
            db.pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            cursor = await connection.cursor(
                statement.text, *statement.arguments(export_params(scope, window))
            )
            while batch := await cursor.fetch(_BATCH):
                await asyncio.to_thread(writer.writerows, [tuple(row) for row in batch])
                rows += len(batch)
    return rows


async def write_export(db: Database, scope: Scope, window: Window, target: Path) -> int:
    """`write_csv` for either backend, off the event loop; return the rows."""
    if isinstance(db, SqliteDatabase):
        return await asyncio.to_thread(write_csv, db.path, scope, window, target)
    if isinstance(db, PostgresDatabase):
        return await write_csv_postgres(db, scope, window, target)
    raise TypeError(f"no export for {type(db).__name__}")


async def export_csv(
    db: Database,
    scope: Scope,
    window: Window,
    directory: Path,
    *,
    name: str,
    limit_bytes: int,
) -> ExportResult:
    """Export off the event loop: a read-only snapshot of the rows, packed to fit the limit."""
    plain = directory / f"{name}.csv"
    rows = await write_export(db, scope, window, plain)
    return await asyncio.to_thread(package_for_upload, plain, rows, limit_bytes)
