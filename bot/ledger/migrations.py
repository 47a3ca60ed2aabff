"""Numbered schema migrations, tracked with PRAGMA user_version."""

from __future__ import annotations

from typing import Final

import aiosqlite

# Index = version - 1. Never edit a released migration: append a new one.
MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE generations (
        id               INTEGER PRIMARY KEY,
        created_at       TEXT    NOT NULL,  -- UTC, ISO 8601 with a Z: sorts as it reads
        user_id          INTEGER NOT NULL,
        guild_id         INTEGER,
        channel_id       INTEGER,
        model            TEXT    NOT NULL,
        size             TEXT    NOT NULL,
        quality          TEXT    NOT NULL,
        n_requested      INTEGER NOT NULL CHECK (n_requested >= 1),
        images_delivered INTEGER NOT NULL DEFAULT 0,
        status           TEXT    NOT NULL
                         CHECK (status IN ('pending', 'ok', 'failed', 'interrupted')),
        error_code       TEXT,
        error_message    TEXT,
        latency_ms       INTEGER,
        input_tokens     INTEGER,
        output_tokens    INTEGER,
        total_tokens     INTEGER,
        request_id       TEXT    NOT NULL,
        -- Images counted against quotas: delivered ones, and reserved ones still running.
        quota_images     INTEGER GENERATED ALWAYS AS (
            CASE status WHEN 'ok' THEN images_delivered
                        WHEN 'pending' THEN n_requested ELSE 0 END
        ) VIRTUAL
    );
    CREATE INDEX generations_by_user ON generations (user_id, created_at);
    CREATE INDEX generations_by_guild ON generations (guild_id, created_at);
    CREATE INDEX generations_pending ON generations (status) WHERE status = 'pending';
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
)

SCHEMA_VERSION: Final = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The file was written by a newer bot; running on it could corrupt it."""


async def migrate(db: aiosqlite.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION, each step in one transaction; return the old version."""
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    current = int(row[0]) if row else 0
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database has schema version {current}, this bot knows up to {SCHEMA_VERSION}"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        # executescript commits first, so BEGIN here makes the step all-or-nothing.
        step = MIGRATIONS[version - 1]
        await db.executescript(
            f"BEGIN IMMEDIATE;\n{step}\nPRAGMA user_version = {version};\nCOMMIT;"
        )
    return current
