"""Microsecond timestamps: how grain state and storage keep times (compact, exact)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

__all__ = ["EPOCH", "from_us", "from_us_opt", "iso", "to_us", "to_us_opt"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(value: datetime) -> int:
    """Whole microseconds since the epoch (exact, unlike ``timestamp()``)."""
    return (value - EPOCH) // _US


def from_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def to_us_opt(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


def from_us_opt(value: int | None) -> datetime | None:
    return None if value is None else from_us(value)


def iso(value: datetime) -> str:
    """``2030-01-01T03:00:00.000000Z``: fixed width, so run ids sort by fire time."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
