"""The arithmetic triggers: ``Manual``, ``Once`` and ``Every``."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

from anu_jobs.clock import ensure_utc
from anu_jobs.errors import InvalidScheduleError

from ._base import (
    TICK,
    Trigger,
    check_window,
    delta_json,
    dt_json,
    human_delta,
    iso,
    micros,
    read_datetime,
    read_delta,
    register,
    utc_or_none,
)

__all__ = ["Every", "Manual", "Once"]


def _unresolved(trigger: Trigger) -> InvalidScheduleError:
    return InvalidScheduleError(
        f"{trigger.describe()!r} is relative to when it is scheduled; call "
        "trigger.resolve(now) when scheduling and store the trigger it returns"
    )


def _later(now: datetime, delta: timedelta, what: str) -> datetime:
    try:
        return now + delta
    except OverflowError:
        raise InvalidScheduleError(
            f"{what} {human_delta(delta)} from {iso(now)} ends past the year 9999, "
            "the latest time a schedule can hold"
        ) from None


def _check_delta(value: object, what: str) -> timedelta:
    if not isinstance(value, timedelta):
        raise InvalidScheduleError(f"{what} must be a timedelta, not {type(value).__name__}")
    return value


@register
@dataclass(frozen=True, slots=True)
class Manual(Trigger):
    """Never fires by itself; the job runs only when triggered by hand."""

    kind: ClassVar[str] = "manual"

    def first_fire(self, now: datetime) -> datetime | None:
        """Always None: a manual job has no schedule."""
        ensure_utc(now, "now")
        return None

    def next_fire(self, after: datetime) -> datetime | None:
        """Always None: a manual job has no schedule."""
        ensure_utc(after, "after")
        return None

    def to_json(self) -> dict[str, Any]:
        """``{"kind": "manual"}``."""
        return {"kind": self.kind}

    def describe(self) -> str:
        """``"manual"``."""
        return "manual"

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> Manual:
        return cls()

    def _prev_fire(self, before: datetime) -> datetime | None:
        return None


@register
@dataclass(frozen=True, slots=True)
class Once(Trigger):
    """Fires exactly once: at ``at``, or ``delay`` after it is scheduled.

    Give exactly one of ``at`` and ``delay``. An ``at`` in the past is allowed and means
    "run at once" (:meth:`first_fire` returns it, and the caller finds it due).
    """

    at: datetime | None = None
    delay: timedelta | None = None

    kind: ClassVar[str] = "once"

    def __post_init__(self) -> None:
        if (self.at is None) == (self.delay is None):
            raise InvalidScheduleError(
                "Once needs exactly one of at= (an aware datetime) or delay= (a timedelta)"
            )
        object.__setattr__(self, "at", utc_or_none(self.at, "at"))
        if self.delay is not None and _check_delta(self.delay, "delay") < timedelta(0):
            raise InvalidScheduleError(
                f"delay must not be negative (got {human_delta(self.delay)}); "
                "use timedelta(0) to run at once"
            )

    def first_fire(self, now: datetime) -> datetime | None:
        """``at``, or ``now + delay`` for a trigger that is not resolved yet."""
        return self.resolve(now).at

    def next_fire(self, after: datetime) -> datetime | None:
        """``at`` if it is after ``after``, else None."""
        after = ensure_utc(after, "after")
        if self.at is None:
            raise _unresolved(self)
        return self.at if self.at > after else None

    def resolve(self, now: datetime) -> Once:
        """``Once(at=now + delay)``; a trigger with ``at`` already is returned as is."""
        now = ensure_utc(now, "now")
        if self.delay is None:
            return self
        return Once(at=_later(now, self.delay, "delay"))

    def to_json(self) -> dict[str, Any]:
        """``{"kind": "once", "at": iso or None, "delay_us": int or None}``."""
        return {"kind": self.kind, "at": dt_json(self.at), "delay_us": delta_json(self.delay)}

    def describe(self) -> str:
        """``"once at 2030-01-01T00:00:00Z"`` or ``"once after 10s"``."""
        if self.at is not None:
            return f"once at {iso(self.at)}"
        assert self.delay is not None  # __post_init__ guarantees one of the two
        return f"once after {human_delta(self.delay)}"

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> Once:
        return cls(at=read_datetime(data, "at"), delay=read_delta(data, "delay_us"))

    def _prev_fire(self, before: datetime) -> datetime | None:
        if self.at is None:
            raise _unresolved(self)
        return self.at if self.at < before else None


@register
@dataclass(frozen=True, slots=True)
class Every(Trigger):
    """Fires at ``start + k * interval`` for k = 0, 1, 2, ... up to ``end`` (inclusive).

    Without ``start`` the first fire is one ``interval`` after scheduling
    (:meth:`resolve` fixes ``start = now + interval``). ``jitter`` shifts each nominal
    fire n by a deterministic offset in ``[0, jitter)`` taken from a hash of n, which
    spreads many jobs on one interval apart while :meth:`next_fire` stays a pure
    function; as ``jitter < interval``, fire times still strictly increase. ``end``
    bounds the actual (jittered) fire times: nothing fires after it.
    """

    interval: timedelta
    start: datetime | None = None
    end: datetime | None = None
    jitter: timedelta | None = None

    kind: ClassVar[str] = "every"

    def __post_init__(self) -> None:
        if _check_delta(self.interval, "interval") <= timedelta(0):
            raise InvalidScheduleError(
                f"interval must be positive (got {human_delta(self.interval)})"
            )
        object.__setattr__(self, "start", utc_or_none(self.start, "start"))
        object.__setattr__(self, "end", utc_or_none(self.end, "end"))
        check_window(self.start, self.end)
        if self.jitter is not None:
            jitter = _check_delta(self.jitter, "jitter")
            if not timedelta(0) <= jitter < self.interval:
                raise InvalidScheduleError(
                    f"jitter must be at least 0 and less than the interval "
                    f"({human_delta(self.interval)}); got {human_delta(jitter)}"
                )

    def first_fire(self, now: datetime) -> datetime | None:
        """The fire for k = 0: ``start`` (+ its jitter), or one interval after ``now``."""
        resolved = self.resolve(now)
        assert resolved.start is not None  # resolve() always fixes start
        try:
            return resolved._fire(0)
        except OverflowError:
            return None  # its jitter pushes the one fire left past what a datetime holds

    def next_fire(self, after: datetime) -> datetime | None:
        """The first ``start + k * interval`` (+ jitter) after ``after``; O(1) arithmetic."""
        after = ensure_utc(after, "after")
        try:
            return self._fire(self._raw_index_after(after))
        except OverflowError:
            return None  # past what a datetime can hold: the schedule has run out

    def resolve(self, now: datetime) -> Every:
        """A copy with ``start = now + interval`` if ``start`` is unset, else itself.

        Raises :class:`InvalidScheduleError` if ``end`` is not after that start.
        """
        now = ensure_utc(now, "now")
        if self.start is not None:
            return self
        return dataclasses.replace(self, start=_later(now, self.interval, "interval"))

    def to_json(self) -> dict[str, Any]:
        """Times as ISO strings, durations as whole microseconds."""
        return {
            "kind": self.kind,
            "interval_us": micros(self.interval),
            "start": dt_json(self.start),
            "end": dt_json(self.end),
            "jitter_us": delta_json(self.jitter),
        }

    def describe(self) -> str:
        """``"every 5s"``, with the jitter, start and end when they are set."""
        text = f"every {human_delta(self.interval)}"
        if self.jitter:
            text += f" (jitter {human_delta(self.jitter)})"
        if self.start is not None:
            text += f" from {iso(self.start)}"
        if self.end is not None:
            text += f" until {iso(self.end)}"
        return text

    @classmethod
    def _from_json(cls, data: dict[str, Any]) -> Every:
        interval = read_delta(data, "interval_us")
        if interval is None:
            raise InvalidScheduleError("every trigger JSON needs an interval_us")
        return cls(
            interval=interval,
            start=read_datetime(data, "start"),
            end=read_datetime(data, "end"),
            jitter=read_delta(data, "jitter_us"),
        )

    def _prev_fire(self, before: datetime) -> datetime | None:
        if self.start is None:
            raise _unresolved(self)
        if self.end is not None and before > self.end:
            before = self.end + TICK
        k = self._raw_index_after(before - TICK) - 1
        return self._raw_fire(k) if k >= 0 else None

    def _count_between(self, lo: datetime, hi: datetime) -> int:
        # Exact: the fire indices in (lo, hi) are a contiguous range.
        if self.start is None:
            raise _unresolved(self)
        if hi <= lo:
            return 0
        first = self._raw_index_after(lo)
        past = self._raw_index_after(hi - TICK)
        if self.end is not None:
            past = min(past, self._raw_index_after(self.end))
        return max(past - first, 0)

    # k-th fire arithmetic. "raw" ignores end; _fire applies it.

    def _offset(self, nominal: datetime) -> timedelta:
        if not self.jitter:
            return timedelta(0)
        # Hash the nominal time, not k, so that the offset of a fire does not change
        # when start moves by whole intervals (two triggers that agree on their fire
        # grid agree on its jitter).
        digest = hashlib.blake2b(nominal.isoformat().encode(), digest_size=8).digest()
        return timedelta(microseconds=int.from_bytes(digest, "big") % micros(self.jitter))

    def _raw_fire(self, k: int) -> datetime:
        if self.start is None:
            raise _unresolved(self)
        nominal = self.start + k * self.interval
        return nominal + self._offset(nominal)

    def _raw_index_after(self, after: datetime) -> int:
        """The smallest k whose fire is strictly after ``after`` (end ignored)."""
        if self.start is None:
            raise _unresolved(self)
        if after < self.start:
            return 0
        # Nominal fire k is the last one at or before `after`; its jittered fire lies in
        # [nominal_k, nominal_k+1), so the answer is k or k + 1.
        k = (after - self.start) // self.interval
        return k if self._raw_fire(k) > after else k + 1

    def _fire(self, k: int) -> datetime | None:
        fire = self._raw_fire(k)
        if self.end is not None and fire > self.end:
            return None
        return fire
