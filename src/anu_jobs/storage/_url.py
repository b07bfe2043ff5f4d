"""Storage URLs: which provider a URL names, and how to print one without its password."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

__all__ = ["ACCEPTED_FORMS", "redact_text", "redact_url", "scheme_of"]

#: the URL forms :func:`anu_jobs.storage.open_storage` accepts, for error messages
ACCEPTED_FORMS = (
    "memory:// (a private in-memory store)",
    "memory://NAME (an in-memory store shared by NAME within this process)",
    "sqlite:///relative/path.db or sqlite:////absolute/path.db",
    "postgresql://user:password@host:port/database",
)

_SECRET_PARAMS = frozenset({"password", "passwd", "pwd", "secret", "token"})

# For text that does not parse as a URL: "scheme://user:SECRET@" and "password=SECRET"
# (in a query string or a libpq keyword string).
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*):(?P<secret>[^\s]*)@")
_SECRET_PAIR = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|secret|token)\s*=\s*)(?P<secret>'[^']*'|[^&\s#]*)",
    re.IGNORECASE,
)


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-cased, without a driver suffix (``postgresql+asyncpg``)."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        return ""
    return scheme.lower().split("+", 1)[0]


def redact_url(url: str) -> str:
    """``url`` with any password (in the authority or the query string) replaced by ``***``.

    Safe to call on anything: a string that does not parse as a URL still has what looks
    like a password (``user:SECRET@``, ``password=SECRET``) replaced.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return _redact_loose(url)
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
        return _redact_loose(url)  # a libpq keyword string ("host=h password=…"), say
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_loose(text: str) -> str:
    text = _USERINFO.sub(lambda m: f"{m['head']}:***@", text)
    return _SECRET_PAIR.sub(lambda m: f"{m['head']}***", text)


def redact_text(text: str, url: str) -> str:
    """``text`` (a driver's error message, say) with ``url`` and its password hidden:
    the URL shown redacted, and the password replaced by ``***`` wherever else it appears
    (as written, or percent-decoded)."""
    if url:
        text = text.replace(url, redact_url(url))
    secrets = set()
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        secrets.update({password, unquote(password)})
    for match in _SECRET_PAIR.finditer(url):
        value = match["secret"].strip("'")
        secrets.update({value, unquote(value)})
    for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _redact_loose(text)
