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
    # 2: estimated cost per generation, the price cache, per-server limits and their audit log.
    """
    -- Set when a generation completes; NULL while pending, after a failure, or with no price.
    ALTER TABLE generations ADD COLUMN cost_usd REAL CHECK (cost_usd IS NULL OR cost_usd >= 0);
    -- 'cometapi' (the public catalog), 'builtin' (the dated table) or 'file' (PRICE_FILE).
    ALTER TABLE generations ADD COLUMN price_source TEXT;
    -- YYYY-MM-DD of the prices used, for the reports' "prices as of".
    ALTER TABLE generations ADD COLUMN price_as_of TEXT;

    -- Server reports read a month of one guild: with every column they need in the index,
    -- the read is one range scan of the index and never touches the table.
    DROP INDEX generations_by_guild;
    CREATE INDEX generations_by_guild ON generations (
        guild_id, created_at, user_id, model, status, images_delivered, cost_usd, price_as_of,
        input_tokens, output_tokens, total_tokens
    );

    -- The last prices read from CometAPI's catalog, so a restart without network keeps them.
    CREATE TABLE price_cache (
        model      TEXT PRIMARY KEY,
        price      TEXT NOT NULL,  -- JSON, see bot/core/pricing.py
        fetched_at TEXT NOT NULL   -- UTC, ISO 8601 with a Z
    );

    -- One row per guild that set a limit; NULL means "not limited here" for that column.
    CREATE TABLE guild_limits (
        guild_id          INTEGER PRIMARY KEY,
        -- images per member per UTC day in this guild; overrides USER_DAILY_IMAGE_LIMIT
        user_daily_images INTEGER CHECK (user_daily_images >= 0),
        daily_budget_usd  REAL    CHECK (daily_budget_usd > 0),
        allowed_models    TEXT,   -- JSON array of model names
        max_n             INTEGER CHECK (max_n >= 1),
        updated_at        TEXT    NOT NULL,
        updated_by        INTEGER NOT NULL
    );
    CREATE TABLE guild_blocks (
        guild_id   INTEGER NOT NULL,
        user_id    INTEGER NOT NULL,
        blocked_at TEXT    NOT NULL,
        blocked_by INTEGER NOT NULL,
        PRIMARY KEY (guild_id, user_id)
    ) WITHOUT ROWID;
    -- "Give a member's day back": their images in this guild made before reset_at stop
    -- counting against the daily limit. The rows stay for reports and cost.
    CREATE TABLE quota_resets (
        guild_id INTEGER NOT NULL,
        user_id  INTEGER NOT NULL,
        reset_at TEXT    NOT NULL,
        reset_by INTEGER NOT NULL,
        PRIMARY KEY (guild_id, user_id)
    ) WITHOUT ROWID;
    -- Who changed which limit, when, from what to what.
    CREATE TABLE limit_changes (
        id         INTEGER PRIMARY KEY,
        created_at TEXT    NOT NULL,
        guild_id   INTEGER NOT NULL,
        actor_id   INTEGER NOT NULL,
        action     TEXT    NOT NULL,
        target_id  INTEGER,
        old_value  TEXT,
        new_value  TEXT
    );
    CREATE INDEX limit_changes_by_guild ON limit_changes (guild_id, created_at);
    """,
    # 3: one final status that says what happened, spend reserved then settled, traceable ids.
    # SQLite cannot change a CHECK or a generated column in place, so the table is rebuilt.
    """
    CREATE TABLE generations_v3 (
        id                  INTEGER PRIMARY KEY,
        created_at          TEXT    NOT NULL,  -- UTC, ISO 8601 with a Z: sorts as it reads
        user_id             INTEGER NOT NULL,
        guild_id            INTEGER,
        channel_id          INTEGER,
        model               TEXT    NOT NULL,
        size                TEXT    NOT NULL,
        quality             TEXT    NOT NULL,
        n_requested         INTEGER NOT NULL CHECK (n_requested >= 1),
        -- Images the member is known to have received.
        images_delivered    INTEGER NOT NULL DEFAULT 0,
        -- pending: reserved, not finished. delivered: the images reached the member.
        -- failed: error_code says why. interrupted: the bot stopped before upstream answered.
        -- interrupted_delivery: the bot stopped while uploading images upstream had made.
        status              TEXT    NOT NULL CHECK (status IN (
                                'pending', 'delivered', 'failed', 'interrupted',
                                'interrupted_delivery')),
        -- 1 when upstream answered with images, so the call was billed whatever came after.
        billed              INTEGER NOT NULL DEFAULT 0 CHECK (billed IN (0, 1)),
        error_code          TEXT,
        error_message       TEXT,
        latency_ms          INTEGER,
        input_tokens        INTEGER,
        output_tokens       INTEGER,
        total_tokens        INTEGER,
        -- Our id, sent upstream in X-Request-Id, and upstream's own id from its answer.
        request_id          TEXT    NOT NULL,
        upstream_request_id TEXT,
        attempts            INTEGER,
        -- The estimate reserved against the budgets while pending; settled into cost_usd.
        reserved_usd        REAL    CHECK (reserved_usd IS NULL OR reserved_usd >= 0),
        -- The estimated cost of a billed call; NULL when not billed or without a price.
        cost_usd            REAL    CHECK (cost_usd IS NULL OR cost_usd >= 0),
        price_source        TEXT,
        price_as_of         TEXT,
        finished_at         TEXT,
        -- Images counted against daily image limits: reserved ones while running, then the
        -- ones the member received, whatever the status. Billed images the member never got
        -- count only as spend.
        quota_images        INTEGER GENERATED ALWAYS AS (
            CASE status WHEN 'pending' THEN n_requested ELSE images_delivered END
        ) VIRTUAL,
        -- Dollars counted against budgets: the reservation until upstream answers, then the cost.
        -- A billed call is spend from the moment upstream answered, delivered or not.
        spend_usd           REAL GENERATED ALWAYS AS (
            CASE WHEN billed = 1 THEN COALESCE(cost_usd, 0)
                 WHEN status = 'pending' THEN COALESCE(reserved_usd, 0) ELSE 0 END
        ) VIRTUAL
    );
    INSERT INTO generations_v3 (
        id, created_at, user_id, guild_id, channel_id, model, size, quality, n_requested,
        images_delivered, status, billed, error_code, error_message, latency_ms, input_tokens,
        output_tokens, total_tokens, request_id, cost_usd, price_source, price_as_of)
    SELECT id, created_at, user_id, guild_id, channel_id, model, size, quality, n_requested,
        CASE status WHEN 'ok' THEN images_delivered ELSE 0 END,
        CASE status WHEN 'ok' THEN 'delivered' ELSE status END,
        CASE WHEN status = 'ok' OR error_code IN ('delivery_failed', 'image_too_large')
             THEN 1 ELSE 0 END,
        error_code, error_message, latency_ms, input_tokens, output_tokens, total_tokens,
        request_id, cost_usd, price_source, price_as_of
    FROM generations;
    DROP TABLE generations;
    ALTER TABLE generations_v3 RENAME TO generations;
    CREATE INDEX generations_by_user ON generations (user_id, created_at);
    CREATE INDEX generations_by_time ON generations (created_at);
    CREATE INDEX generations_pending ON generations (status) WHERE status = 'pending';
    CREATE INDEX generations_by_guild ON generations (
        guild_id, created_at, user_id, model, status, billed, images_delivered, cost_usd,
        price_as_of, input_tokens, output_tokens, total_tokens
    );
    """,
    # 4: what a result's buttons need: the request to run again, where the result was posted,
    # its source when it is a reroll, and whether a member deleted it.
    """
    -- The validated options as JSON (bot.core.validation.ImagineOptions), to reroll or edit.
    ALTER TABLE generations ADD COLUMN options_json TEXT;
    ALTER TABLE generations ADD COLUMN revised_prompt TEXT;
    -- The generation this one reran (reroll, edited prompt); NULL for a typed /imagine.
    ALTER TABLE generations ADD COLUMN parent_id INTEGER REFERENCES generations (id);
    -- 1 when the result was shown only to the requester.
    ALTER TABLE generations ADD COLUMN private INTEGER NOT NULL DEFAULT 0;
    -- The message that carries the result (its first message when split), for jump links.
    ALTER TABLE generations ADD COLUMN result_channel_id INTEGER;
    ALTER TABLE generations ADD COLUMN result_message_id INTEGER;
    -- Where the time went, in milliseconds.
    ALTER TABLE generations ADD COLUMN queue_ms INTEGER;
    ALTER TABLE generations ADD COLUMN upstream_ms INTEGER;
    ALTER TABLE generations ADD COLUMN upload_ms INTEGER;
    -- A member deleted the result message; the row stays for reports and cost.
    ALTER TABLE generations ADD COLUMN deleted_at TEXT;
    ALTER TABLE generations ADD COLUMN deleted_by INTEGER;
    """,
    # 5: edits from reference images beside generations from text.
    """
    ALTER TABLE generations ADD COLUMN kind TEXT NOT NULL DEFAULT 'generation'
        CHECK (kind IN ('generation', 'edit'));
    ALTER TABLE generations ADD COLUMN reference_count INTEGER NOT NULL DEFAULT 0
        CHECK (reference_count >= 0);
    -- The server reports read these columns too now: the index keeps covering them.
    DROP INDEX generations_by_guild;
    CREATE INDEX generations_by_guild ON generations (
        guild_id, created_at, user_id, model, status, billed, kind, n_requested,
        images_delivered, cost_usd, price_as_of, input_tokens, output_tokens, total_tokens
    );
    """,
    # 6: community policy: blocked words, the channels /imagine works in, refused attempts.
    """
    -- Stored normalized (bot.core.prompt_rules.normalize): lower case, no accents.
    CREATE TABLE guild_blocked_terms (
        guild_id INTEGER NOT NULL,
        term     TEXT    NOT NULL,
        added_at TEXT    NOT NULL,
        added_by INTEGER NOT NULL,
        PRIMARY KEY (guild_id, term)
    ) WITHOUT ROWID;
    -- None listed for a guild: /imagine works in every channel there.
    CREATE TABLE guild_channels (
        guild_id   INTEGER NOT NULL,
        channel_id INTEGER NOT NULL,
        added_at   TEXT    NOT NULL,
        added_by   INTEGER NOT NULL,
        PRIMARY KEY (guild_id, channel_id)
    ) WITHOUT ROWID;
    -- Requests a prompt rule refused: no upstream call, no quota, kept apart from generations.
    CREATE TABLE refused_attempts (
        id         INTEGER PRIMARY KEY,
        created_at TEXT    NOT NULL,
        guild_id   INTEGER,
        user_id    INTEGER NOT NULL,
        channel_id INTEGER,
        reason     TEXT    NOT NULL,
        detail     TEXT
    );
    CREATE INDEX refused_attempts_by_guild ON refused_attempts (guild_id, created_at);
    """,
    # 7: who may generate, and how much, by role.
    """
    -- Images per member per UTC day for members with this role; a member gets the highest of
    -- their roles' allowances (in place of the server's daily-images), never more than the
    -- operator's ceiling, which applies as well.
    CREATE TABLE guild_role_allowances (
        guild_id     INTEGER NOT NULL,
        role_id      INTEGER NOT NULL,
        daily_images INTEGER NOT NULL CHECK (daily_images >= 0),
        set_at       TEXT    NOT NULL,
        set_by       INTEGER NOT NULL,
        PRIMARY KEY (guild_id, role_id)
    ) WITHOUT ROWID;
    -- None listed for a guild: every member may use /imagine there.
    CREATE TABLE guild_allowed_roles (
        guild_id INTEGER NOT NULL,
        role_id  INTEGER NOT NULL,
        added_at TEXT    NOT NULL,
        added_by INTEGER NOT NULL,
        PRIMARY KEY (guild_id, role_id)
    ) WITHOUT ROWID;
    """,
    # 8: switches an admin turns on for a server (e.g. moderation_low).
    """
    CREATE TABLE guild_flags (
        guild_id INTEGER NOT NULL,
        flag     TEXT    NOT NULL,
        set_at   TEXT    NOT NULL,
        set_by   INTEGER NOT NULL,
        PRIMARY KEY (guild_id, flag)
    ) WITHOUT ROWID;
    """,
    # 9: the process that wrote a row (INSTANCE_ID). One process owns a SQLite file, so here
    # it is a record for the operator; on PostgreSQL it says whose rows a restart may close.
    """
    ALTER TABLE generations ADD COLUMN instance_id TEXT;
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
