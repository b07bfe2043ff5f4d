"""What a ``postgresql://`` URL configures: the libpq connection string passed through,
and the options anu-jobs reads from it (and strips before libpq sees them)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from anu_jobs.errors import ConfigurationError
from anu_jobs.storage._url import redact_url

__all__ = ["DEFAULT_SCHEMA", "PostgresConfig", "channel_for", "check_schema", "parse_url"]

DEFAULT_SCHEMA = "anu_jobs"

N = TypeVar("N", int, float)

# A plain identifier, short enough that "anu_jobs_<schema>" fits NAMEDATALEN (63 bytes)
# as a NOTIFY channel; it is still quoted wherever it meets SQL.
_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,47}$")

#: query parameters that are anu-jobs' own, never libpq's
OWN_OPTIONS = ("schema", "connect_timeout", "pool_min_size", "pool_max_size")


@dataclass(frozen=True, slots=True)
class PostgresConfig:
    """Everything :class:`~anu_jobs.storage.postgres.PostgresStorage` needs to connect."""

    conninfo: str = field(repr=False)  # it may hold the password
    schema: str = DEFAULT_SCHEMA
    connect_timeout: float = 5.0
    pool_min_size: int = 1
    pool_max_size: int = 10


def check_schema(name: str) -> str:
    """``name`` if it is a schema name this provider accepts; else ConfigurationError."""
    if not _SCHEMA.match(name):
        raise ConfigurationError(
            f"schema={name!r} is not a plain identifier: use 1-48 letters, digits and "
            "underscores, not starting with a digit"
        )
    return name


def channel_for(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a store's schema."""
    return f"anu_jobs_{schema}"


def parse_url(url: str) -> PostgresConfig:
    """Split ``postgresql://…?schema=…&connect_timeout=…`` into the libpq URL (every
    other parameter kept verbatim) and anu-jobs' options."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"{redact_url(url)} is not a URL: {exc}") from None
    scheme = parts.scheme.lower().split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(f"{redact_url(url)} is not a postgresql:// URL")
    kept: list[str] = []
    options: dict[str, str] = {}
    for raw in parts.query.split("&") if parts.query else ():
        pairs = parse_qsl(raw, keep_blank_values=True)
        key = pairs[0][0] if pairs else unquote(raw)
        if key in OWN_OPTIONS:
            options[key] = pairs[0][1] if pairs else ""
        else:
            kept.append(raw)
    conninfo = urlunsplit(("postgresql", parts.netloc, parts.path, "&".join(kept), ""))
    try:
        return PostgresConfig(
            conninfo=conninfo,
            schema=check_schema(options.get("schema", DEFAULT_SCHEMA)),
            connect_timeout=_positive(options, "connect_timeout", float, 5.0),
            pool_min_size=_positive(options, "pool_min_size", int, 1),
            pool_max_size=_positive(options, "pool_max_size", int, 10),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"{redact_url(url)}: {exc}") from None


def _positive(options: dict[str, str], key: str, kind: type[N], default: N) -> N:
    if key not in options:
        return default
    try:
        value = kind(options[key])
    except ValueError:
        value = kind(0)
    if value <= 0:
        raise ConfigurationError(f"{key}={options[key]!r} must be a positive {kind.__name__}")
    return value
