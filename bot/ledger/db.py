"""One interface to the ledger's database, on SQLite (embedded) or PostgreSQL (asyncpg).

Every query in the ledger is written once, in the SQL both engines speak, with `?` or `:name`
placeholders; the PostgreSQL side rewrites them to `$1…` once per statement text. Where the
engines differ (JSON aggregation, locking), the caller asks `dialect` and picks its statement.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import aiosqlite
import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

from bot.ledger.busy import LedgerBusy

Params = Mapping[str, object] | Sequence[object]
Row = Sequence[Any]
# The stubs make the proxy generic; at run time it is not subscriptable.
PgConnection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

# A string literal (skipped), a `::` cast (kept), a named or a positional placeholder.
_TOKENS: Final = re.compile(r"'(?:[^']|'')*'|::|:([A-Za-z_]\w*)|\?")


class Dialect(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


class Database(ABC):
    """Statements on one database; each runs on its own and commits (autocommit)."""

    dialect: Dialect

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""

    @abstractmethod
    async def execute_fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one query; return every row."""

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """Run one query; return its first row, or None."""
        rows = await self.execute_fetchall(sql, params)
        return rows[0] if rows else None

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement once per parameter set."""

    @abstractmethod
    async def insert(self, sql: str, params: Params = ()) -> int | None:
        """Run an INSERT; return the new row's id, or None when it inserted nothing."""

    @abstractmethod
    def serialized(
        self, keys: Sequence[str], *, wait_s: float
    ) -> AbstractAsyncContextManager[Database]:
        """A block in which no other process holds any of `keys`; see the backends."""


class SqliteDatabase(Database):
    """An aiosqlite connection. SQLite runs one writer at a time across the whole file."""

    dialect = Dialect.SQLITE

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self.connection = connection
        self.path = path
        """The file, for readers that open their own connection (the CSV export)."""

    async def execute(self, sql: str, params: Params = ()) -> int:
        cursor = await self.connection.execute(sql, params)
        return cursor.rowcount

    async def execute_fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self.connection.execute_fetchall(sql, params))

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self.connection.executemany(sql, rows)

    async def insert(self, sql: str, params: Params = ()) -> int | None:
        cursor = await self.connection.execute(sql, params)
        return cursor.lastrowid if cursor.rowcount == 1 else None

    @asynccontextmanager
    async def serialized(self, keys: Sequence[str], *, wait_s: float) -> AsyncIterator[Database]:
        # One statement in SQLite is already alone on the file (one writer at a time): the
        # checks and the insert of a reservation cannot interleave with another's.
        yield self


class Statement:
    """A statement's text with `$n` placeholders, and how to order its parameters."""

    __slots__ = ("names", "text")

    def __init__(self, sql: str) -> None:
        names: list[str | None] = []
        positions: dict[str, int] = {}

        def number(match: re.Match[str]) -> str:
            found = match.group(0)
            if found.startswith("'") or found == "::":
                return found
            name = match.group(1)
            if name is None:
                names.append(None)
                return f"${len(names)}"
            if name not in positions:
                names.append(name)
                positions[name] = len(names)
            return f"${positions[name]}"

        self.text = _TOKENS.sub(number, sql)
        self.names = tuple(names)

    def arguments(self, params: Params) -> list[object]:
        if isinstance(params, Mapping):
            return [params[name] for name in self.names if name is not None]
        return list(params)


def _changed(status: str) -> int:
    # asyncpg returns the command tag: "INSERT 0 1", "UPDATE 3", "DELETE 0".
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresDatabase(Database):
    """A pool of asyncpg connections: readers never wait for writers in PostgreSQL."""

    dialect = Dialect.POSTGRESQL

    def __init__(
        self,
        pool: asyncpg.Pool,
        connection: PgConnection | None = None,
        statements: dict[str, Statement] | None = None,
    ) -> None:
        self.pool = pool
        # Set inside `serialized`: every statement of the block runs on its transaction.
        self._connection = connection
        # Shared with the blocks `serialized` opens: each text is rewritten once, not once
        # per reservation.
        self._statements: dict[str, Statement] = {} if statements is None else statements

    def statement(self, sql: str) -> Statement:
        """The statement for `sql`, rewritten once per text."""
        statement = self._statements.get(sql)
        if statement is None:
            statement = self._statements[sql] = Statement(sql)
        return statement

    @asynccontextmanager
    async def _acquire(self) -> AsyncIterator[PgConnection]:
        if self._connection is not None:
            yield self._connection
        else:
            async with self.pool.acquire() as connection:
                yield connection

    async def execute(self, sql: str, params: Params = ()) -> int:
        statement = self.statement(sql)
        async with self._acquire() as connection:
            status = await connection.execute(statement.text, *statement.arguments(params))
        return _changed(status)

    async def execute_fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        statement = self.statement(sql)
        async with self._acquire() as connection:
            rows = await connection.fetch(statement.text, *statement.arguments(params))
        return [tuple(row) for row in rows]

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        statement = self.statement(sql)
        async with self._acquire() as connection:
            await connection.executemany(
                statement.text, [statement.arguments(params) for params in rows]
            )

    async def insert(self, sql: str, params: Params = ()) -> int | None:
        statement = self.statement(sql + " RETURNING id")
        async with self._acquire() as connection:
            row = await connection.fetchrow(statement.text, *statement.arguments(params))
        return None if row is None else int(row[0])

    @asynccontextmanager
    async def serialized(self, keys: Sequence[str], *, wait_s: float) -> AsyncIterator[Database]:
        """One transaction holding an advisory lock per key until it commits.

        Every process that could change what a key guards takes the same lock first, so the
        reads inside the block see everything the previous holder committed.
        """
        async with self.pool.acquire() as connection, connection.transaction():
            await connection.execute(f"SET LOCAL lock_timeout = {max(1, int(wait_s * 1000))}")
            try:
                # Sorted: two blocks that want the same keys take them in the same order, so
                # they queue instead of deadlocking.
                for key in sorted(set(keys)):
                    await connection.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key
                    )
            except asyncpg.LockNotAvailableError as error:
                raise LedgerBusy(f"another process held the ledger for {wait_s:g}s") from error
            yield PostgresDatabase(self.pool, connection, self._statements)
