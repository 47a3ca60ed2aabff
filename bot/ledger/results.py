"""Results as the buttons under them and /history see them: one generation, a member's latest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from bot.ledger.busy import retry_busy
from bot.ledger.db import Database, Row
from bot.ledger.periods import to_db_time

HISTORY_MAX: Final = 25
_DELETE_LOCK_WAIT_S: Final = 5.0

_COLUMNS: Final = (
    "id, created_at, user_id, guild_id, channel_id, model, size, quality, n_requested, "
    "images_delivered, status, billed, error_code, latency_ms, input_tokens, output_tokens, "
    "total_tokens, cost_usd, request_id, upstream_request_id, attempts, options_json, "
    "revised_prompt, parent_id, private, result_channel_id, result_message_id, queue_ms, "
    "upstream_ms, upload_ms, deleted_at, kind, reference_count"
)


@dataclass(frozen=True, slots=True)
class StoredGeneration:
    """One generation's row, as a result's buttons and /history need it."""

    id: int
    created_at: str
    user_id: int
    guild_id: int | None
    channel_id: int | None
    model: str
    size: str
    quality: str
    n_requested: int
    images_delivered: int
    status: str
    billed: bool
    error_code: str | None
    latency_ms: int | None
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    cost_usd: float | None
    request_id: str
    upstream_request_id: str | None
    attempts: int | None
    options_json: str | None
    revised_prompt: str | None
    parent_id: int | None
    private: bool
    result_channel_id: int | None
    result_message_id: int | None
    queue_ms: int | None
    upstream_ms: int | None
    upload_ms: int | None
    deleted_at: str | None
    kind: str
    reference_count: int


def _stored(row: Row) -> StoredGeneration:
    values = list(row)
    values[11] = bool(values[11])
    values[24] = bool(values[24])
    return StoredGeneration(*values)


async def stored_generation(db: Database, row_id: int) -> StoredGeneration | None:
    """The generation with this id, or None when there is no such row."""
    row = await db.fetchone(f"SELECT {_COLUMNS} FROM generations WHERE id = ?", (row_id,))  # noqa: S608
    return _stored(row) if row else None


async def history(db: Database, user_id: int, count: int) -> tuple[StoredGeneration, ...]:
    """The member's own latest generations, newest first; never another member's."""
    rows = await db.execute_fetchall(
        f"SELECT {_COLUMNS} FROM generations WHERE user_id = ? "  # noqa: S608
        "ORDER BY created_at DESC, id DESC LIMIT ?",
        (user_id, max(1, min(count, HISTORY_MAX))),
    )
    return tuple(_stored(row) for row in rows)


async def mark_deleted(db: Database, row_id: int, deleted_by: int, now: datetime) -> bool:
    """Record that a member deleted the result; False when it was already marked."""

    async def write() -> bool:
        changed = await db.execute(
            "UPDATE generations SET deleted_at = ?, deleted_by = ? "
            "WHERE id = ? AND deleted_at IS NULL",
            (to_db_time(now), deleted_by, row_id),
        )
        return changed == 1

    return await retry_busy(write, timeout_s=_DELETE_LOCK_WAIT_S, what="deleted result")
