"""Report periods in UTC, and the quota's day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum


class Period(StrEnum):
    """The periods a report can cover."""

    TODAY = "today"
    DAYS_7 = "7d"
    DAYS_30 = "30d"
    ALL = "all"

    @property
    def label(self) -> str:
        """How the period reads in a report."""
        return {
            Period.TODAY: "today (UTC)",
            Period.DAYS_7: "the last 7 days",
            Period.DAYS_30: "the last 30 days",
            Period.ALL: "all time",
        }[self]

    def start(self, now: datetime) -> datetime | None:
        """The first instant inside the period, or None for all time."""
        if self is Period.TODAY:
            return day_start(now)
        if self is Period.DAYS_7:
            return now - timedelta(days=7)
        if self is Period.DAYS_30:
            return now - timedelta(days=30)
        return None


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def day_start(now: datetime) -> datetime:
    """Midnight UTC that began the day of `now`."""
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def next_reset(now: datetime) -> datetime:
    """Midnight UTC when the daily quota resets next."""
    return day_start(now) + timedelta(days=1)


def to_db_time(moment: datetime) -> str:
    """The stored form of a time: ISO 8601 in UTC with a Z, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
