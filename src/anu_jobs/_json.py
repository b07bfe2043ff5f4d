"""JSON in and out: params, checkpoints and grain state are JSON, never pickle."""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_DOCUMENT", "JSONError", "check_json", "clean_text", "dumps", "loads"]

#: how deeply params and checkpoints may nest; deeper documents would exhaust the
#: parser's recursion on the way back out of storage
MAX_DEPTH = 64

#: the most characters of JSON a job's params, or a checkpoint, may take (32 Mi): a job's
#: state holds both, and the stores refuse a text past 1 GB (PostgreSQL's limit, and
#: SQLite's default), which would hold up every write committed with it
MAX_DOCUMENT = 32 * 1024 * 1024

# Lone surrogates (from "surrogateescape" decoding, or a "\ud800" literal) are valid in a
# Python str but cannot be encoded as UTF-8, so no store can take them. NUL is valid
# UTF-8, but PostgreSQL's text and its JSON functions refuse it (even as "\u0000"), so it
# is kept out everywhere: what one provider stores, every provider stores.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# An int this wide may have more digits than the interpreter lets int() and str()
# convert (sys.get_int_max_str_digits, 4300 by default); only then is str() tried.
_WIDE_INT_BITS = 14_000


# One encoder for every call: what ``json.dumps`` would build anew each time with these
# options (the encoding itself makes its own state per call, so this is thread-safe).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class JSONError(ValueError):
    """The value cannot be represented as JSON."""


def clean_text(text: str) -> str:
    """``text`` with every NUL and lone surrogate replaced by U+FFFD, so that every store
    can take it.

    For free text that anu-jobs records but does not validate: an error message, a
    progress message, a reason.
    """
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE.sub("\ufffd", text)


def dumps(value: Any) -> str:
    """Serialize ``value`` compactly; NaN and infinities are refused (they are not JSON).

    Lone surrogates in strings come out as U+FFFD: the text is always valid UTF-8 (params
    and checkpoints were refused earlier by :func:`check_json`; what reaches here
    unchecked is free text, which :func:`clean_text` cleans where it is made).
    """
    try:
        text = _encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise JSONError(str(exc)) from None
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def loads(text: str | bytes) -> Any:
    """Parse JSON text."""
    return json.loads(text)


def check_json(value: Any, path: str = "$") -> int:
    """Raise :class:`JSONError` naming the first part of ``value`` that is not plain JSON;
    return a lower bound of the size of its JSON text in characters.

    Plain JSON here is dict (with str keys), list, str, int, float (finite), bool and None;
    tuples, sets, datetimes and objects are refused so that what is stored is what comes back.
    Strings may not hold NUL (PostgreSQL cannot store it) or lone surrogates (not UTF-8),
    ints must fit the interpreter's digit limit, nesting may go :data:`MAX_DEPTH` levels
    deep, and the whole document may take at most :data:`MAX_DOCUMENT` characters.
    """
    size = _check(value, path, 0)
    if size > MAX_DOCUMENT:
        raise JSONError(
            f"{path} takes at least {size:,} characters as JSON; a document of params or a "
            f"checkpoint may take at most {MAX_DOCUMENT:,}"
        )
    return size


def _check(value: Any, path: str, depth: int) -> int:
    if value is None or isinstance(value, bool):
        return 4
    if isinstance(value, str):
        _check_text(value, path)
        return len(value) + 2
    if isinstance(value, int):
        if value.bit_length() > _WIDE_INT_BITS:
            try:
                str(value)
            except ValueError:
                raise JSONError(
                    f"{path} is an int of more than {sys.get_int_max_str_digits()} digits, "
                    "which cannot be written as JSON"
                ) from None
        return 1
    if isinstance(value, float):
        if not math.isfinite(value):
            raise JSONError(f"{path} is {value!r}, which JSON cannot hold")
        return 1
    if isinstance(value, (list, dict)) and depth >= MAX_DEPTH:
        raise JSONError(f"{path} nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        size = 1 + len(value)  # the brackets and the commas
        for i, item in enumerate(value):
            size += _check(item, f"{path}[{i}]", depth + 1)
        return size
    if isinstance(value, dict):
        size = 1 + 2 * len(value)  # the braces, the colons and the commas
        for key, item in value.items():
            if not isinstance(key, str):
                raise JSONError(f"{path} has the key {key!r}, but JSON keys must be strings")
            _check_text(key, f"{path} key {key!r}")
            size += len(key) + 2 + _check(item, f"{path}.{key}", depth + 1)
        return size
    raise JSONError(
        f"{path} is a {type(value).__name__}, which is not JSON "
        "(use dict, list, str, int, float, bool or None)"
    )


def _check_text(text: str, path: str) -> None:
    if "\x00" in text:
        raise JSONError(f"{path} holds a NUL character ({text!r}), which no store can keep")
    if not text.isascii() and _UNSTORABLE.search(text):
        raise JSONError(
            f"{path} holds a lone surrogate ({text!r}), which is not valid Unicode text"
        )
