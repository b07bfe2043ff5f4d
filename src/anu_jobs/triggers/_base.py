"""The trigger contract, the JSON registry of trigger kinds, and helpers they share."""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

from anu_jobs.clock import ensure_utc
from anu_jobs.errors import InvalidScheduleError

__all__ = ["Trigger", "trigger_from_json"]

#: The smallest step a datetime can take; "strictly after t" is "at or after t + TICK".
TICK = timedelta(microseconds=1)

#: How many fires :meth:`Trigger._count_between` walks one by one before it extrapolates.
COUNT_BUDGET = 2_000


class Trigger(ABC):
    """When a job fires: pure schedule math, no I/O and no clock reads.

    Every time in and out is an aware UTC datetime; the caller passes ``now``. A
    trigger is an immutable, hashable value that round-trips through :meth:`to_json`
    and :func:`trigger_from_json` exactly.

    A trigger may hold *relative* parts (``Once(delay=...)``, an ``Every`` without a
    ``start``). Those mean nothing until they are fixed against the time the job is
    scheduled: call :meth:`resolve` once, at scheduling, and store what it returns.
    :meth:`next_fire` on an unresolved trigger raises :class:`InvalidScheduleError`,
    because answering would silently re-anchor the schedule on every call.
    """

    __slots__ = ()

    #: The name under which :meth:`to_json` stores the trigger (``"cron"``, ``"every"``...).
    kind: ClassVar[str]

    @abstractmethod
    def first_fire(self, now: datetime) -> datetime | None:
        """The first fire time of a trigger scheduled at ``now``, or None if it never fires.

        The result may be at or before ``now`` (a ``Once`` in the past, an ``Every``
        whose ``start`` has passed): that means "due at once", and the caller's misfire
        policy decides what to do with the fires it missed.
        """

    @abstractmethod
    def next_fire(self, after: datetime) -> datetime | None:
        """The earliest fire time strictly after ``after``, or None when the trigger is done.

        Successive calls, each fed the previous answer, yield strictly increasing times.
        """

    def resolve(self, now: datetime) -> Trigger:
        """A copy with every relative part fixed against ``now`` (itself if there are none)."""
        ensure_utc(now, "now")
        return self

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with a ``"kind"`` key; :func:`trigger_from_json` inverts it."""

    @abstractmethod
    def describe(self) -> str:
        """A short human description, such as ``"every 5s"`` or ``"manual"``."""

    @classmethod
    @abstractmethod
    def _from_json(cls, data: dict[str, Any]) -> Trigger:
        """Build the trigger from the dict :meth:`to_json` made (``kind`` already checked)."""

    def _prev_fire(self, before: datetime) -> datetime | None:
        """The latest fire time strictly before ``before``, or None.

        The misfire planner walks backwards from ``now`` with this so that it never has
        to walk forwards through a long outage one fire at a time.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot walk its fires backwards")

    def _count_between(self, lo: datetime, hi: datetime) -> int:
        """How many fires lie strictly between ``lo`` and ``hi``.

        This fallback walks up to :data:`COUNT_BUDGET` fires and extrapolates the rest
        from their mean spacing (exact for evenly spaced fires, rough for others).
        ``Every`` and ``Cron`` override it with exact counts that do not walk every
        fire; for ``Once`` and ``Manual`` the walk is at most one step.
        """
        count = 0
        cursor = lo
        while count < COUNT_BUDGET:
            fire = self.next_fire(cursor)
            if fire is None or fire >= hi:
                return count
            count += 1
            cursor = fire
        spacing = (cursor - lo) / count
        if spacing <= timedelta(0):
            return count
        # Fires at cursor + k*spacing for k = 1, 2, ... that stay below hi; the small
        # epsilon keeps an exact multiple from counting the fire at hi itself.
        rest = math.ceil((hi - cursor) / spacing - 1e-9) - 1
        return count + max(rest, 0)


_T = TypeVar("_T", bound=type[Trigger])
_KINDS: dict[str, type[Trigger]] = {}


def register(cls: _T) -> _T:
    """Class decorator: make ``cls`` loadable by :func:`trigger_from_json` under its kind."""
    _KINDS[cls.kind] = cls
    return cls


# Every activation reads its job's triggers back from the state document. The built-in
# triggers are immutable values, so one parsed from a document is reused for an equal
# document (a small cache); other registered kinds are parsed anew.
_OWN = __name__.rpartition(".")[0] + "."


@functools.lru_cache(maxsize=4096)
def _parsed(cls: type[Trigger], key: tuple[tuple[str, type, Any], ...]) -> Trigger:
    return cls._from_json({k: v for k, _, v in key})


def trigger_from_json(data: dict[str, Any]) -> Trigger:
    """Rebuild a trigger from :meth:`Trigger.to_json` output.

    Raises :class:`InvalidScheduleError` when the dict is not a trigger: an unknown or
    missing ``kind``, a missing field, a value of the wrong type.
    """
    if not isinstance(data, dict):
        raise InvalidScheduleError(
            f"a stored trigger must be a JSON object, not {type(data).__name__}"
        )
    kind = data.get("kind")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(sorted(_KINDS))
        raise InvalidScheduleError(f"unknown trigger kind {kind!r}; expected one of: {known}")
    key: tuple[tuple[str, type, Any], ...] | None = None
    if cls.__module__.startswith(_OWN):
        # Every field's type is part of the key, so that 1 and True (equal, one of them
        # refused) never share an entry; a document with lists or objects is not cached.
        key = tuple([(k, type(v), v) for k, v in data.items()])
        try:
            hash(key)
        except TypeError:
            key = None
    try:
        return cls._from_json(data) if key is None else _parsed(cls, key)
    except KeyError as exc:
        raise InvalidScheduleError(f"{kind} trigger JSON lacks the field {exc.args[0]!r}") from None


# --- helpers shared by the trigger modules -----------------------------------------


def utc_or_none(value: datetime | None, what: str) -> datetime | None:
    """``value`` as aware UTC, or None; naive or non-datetime values are refused."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidScheduleError(f"{what} must be a datetime, not {type(value).__name__}")
    return ensure_utc(value, what)


def check_window(start: datetime | None, end: datetime | None) -> None:
    """Refuse an ``end`` that is not after ``start``."""
    if start is not None and end is not None and end <= start:
        raise InvalidScheduleError(
            f"end {iso(end)} must be after start {iso(start)}; the trigger would never fire"
        )


def iso(value: datetime) -> str:
    """An aware UTC datetime as ISO 8601 with a ``Z`` (microseconds kept when present)."""
    if value.tzinfo is UTC and type(value) is datetime:
        return _iso_utc(value)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# Triggers are stored with every state write: the text of their times is kept (a small
# cache) instead of being formatted again each time.
@functools.lru_cache(maxsize=4096)
def _iso_utc(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def micros(value: timedelta) -> int:
    """A timedelta as whole microseconds, the exact unit it is stored in."""
    return value // TICK


def human_delta(value: timedelta) -> str:
    """A compact duration: ``5s``, ``1h30m``, ``2d``, ``0.25s``."""
    total = micros(value)
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rest = divmod(total, 86_400_000_000)
    hours, rest = divmod(rest, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, fraction = divmod(rest, 1_000_000)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    if fraction:
        parts.append(f"{seconds}.{fraction:06d}".rstrip("0") + "s")
    elif seconds or not parts:
        parts.append(f"{seconds}s")
    return sign + "".join(parts)


def read_datetime(data: dict[str, Any], key: str) -> datetime | None:
    """An optional ISO datetime field of a trigger's JSON."""
    raw = data[key]
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidScheduleError(f"trigger field {key!r} must be an ISO datetime string")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidScheduleError(
            f"trigger field {key!r} is not an ISO datetime: {raw!r}"
        ) from None
    return ensure_utc(parsed, key)


def read_delta(data: dict[str, Any], key: str) -> timedelta | None:
    """An optional duration field of a trigger's JSON, stored as whole microseconds."""
    raw = data[key]
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidScheduleError(f"trigger field {key!r} must be whole microseconds (an int)")
    return timedelta(microseconds=raw)


def read_str(data: dict[str, Any], key: str) -> str:
    """A required string field of a trigger's JSON."""
    raw = data[key]
    if not isinstance(raw, str):
        raise InvalidScheduleError(f"trigger field {key!r} must be a string")
    return raw


def dt_json(value: datetime | None) -> str | None:
    """The JSON form of an optional datetime field."""
    return None if value is None else iso(value)


def delta_json(value: timedelta | None) -> int | None:
    """The JSON form of an optional duration field."""
    return None if value is None else micros(value)
