"""Storage URLs: which provider a URL names, and how to print one without its password."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["ACCEPTED_FORMS", "redact_url", "scheme_of"]

#: the URL forms :func:`anu_jobs.storage.open_storage` accepts, for error messages
ACCEPTED_FORMS = (
    "memory:// (a private in-memory store)",
    "memory://NAME (an in-memory store shared by NAME within this process)",
    "sqlite:///relative/path.db or sqlite:////absolute/path.db",
    "postgresql://user:password@host:port/database",
)

_SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "secret", "token"})


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-cased, without a driver suffix (``postgresql+asyncpg``)."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        return ""
    return scheme.lower().split("+", 1)[0]


def redact_url(url: str) -> str:
    """``url`` with any password (in the authority or the query string) replaced by ``***``.

    Safe to call on anything: a string that does not parse as a URL comes back unchanged.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in _SECRET_PARAMS for key, _ in pairs):
            query = urlencode(
                [(k, "***" if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
            )
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
