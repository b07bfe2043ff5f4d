"""JSON in and out: params, checkpoints and grain state are JSON, never pickle."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["JSONError", "check_json", "dumps", "loads"]


class JSONError(ValueError):
    """The value cannot be represented as JSON."""


def dumps(value: Any) -> str:
    """Serialize ``value`` compactly; NaN and infinities are refused (they are not JSON)."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise JSONError(str(exc)) from None


def loads(text: str | bytes) -> Any:
    """Parse JSON text."""
    return json.loads(text)


def check_json(value: Any, path: str = "$") -> None:
    """Raise :class:`JSONError` naming the first part of ``value`` that is not plain JSON.

    Plain JSON here is dict (with str keys), list, str, int, float (finite), bool and None;
    tuples, sets, datetimes and objects are refused so that what is stored is what comes back.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise JSONError(f"{path} is {value!r}, which JSON cannot hold")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_json(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise JSONError(f"{path} has the key {key!r}, but JSON keys must be strings")
            check_json(item, f"{path}.{key}")
        return
    raise JSONError(
        f"{path} is a {type(value).__name__}, which is not JSON "
        "(use dict, list, str, int, float, bool or None)"
    )
