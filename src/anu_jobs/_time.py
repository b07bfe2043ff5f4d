"""Microsecond timestamps: how grain state and storage keep times (compact, exact)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

__all__ = ["EPOCH", "from_us", "from_us_opt", "iso", "to_us", "to_us_opt"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# A burst converts the same few instants over and over (every run of one fire time, each
# write of a run): the exact results are kept in small caches. Datetimes and strings are
# immutable, so a cached value is as good as a new one. (to_us has none: it mostly sees
# fresh clock readings, and hashing a fresh aware datetime costs more than the sum.)
_CACHE_SIZE = 4096


def to_us(value: datetime) -> int:
    """Whole microseconds since the epoch (exact, unlike ``timestamp()``)."""
    d = value - EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds


def from_us(value: int) -> datetime:
    if type(value) is int:
        return _from_us(value)
    return EPOCH + timedelta(microseconds=value)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _from_us(value: int) -> datetime:
    return EPOCH + timedelta(0, 0, value)


def to_us_opt(value: datetime | None) -> int | None:
    return None if value is None else to_us(value)


def from_us_opt(value: int | None) -> datetime | None:
    return None if value is None else from_us(value)


def iso(value: datetime) -> str:
    """``2030-01-01T03:00:00.000000Z``: fixed width, so run ids sort by fire time."""
    if value.tzinfo is UTC and type(value) is datetime:
        return _iso_utc(value)
    return _iso(value.astimezone(UTC))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _iso_utc(value: datetime) -> str:
    return _iso(value)


def _iso(value: datetime) -> str:
    # The fields by hand, as strftime would write them; strftime itself for years before
    # 1000, whose %Y differs between platforms (padded or not), so that nothing changes.
    if value.year < 1000:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
        f"{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}Z"
    )
