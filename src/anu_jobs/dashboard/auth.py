"""Who may act on jobs: a bearer token, HTTP basic auth, a signed session, CSRF tokens.

Reads are open. A POST (an action, logging in or out) must pass, in order:

1. actions are allowed: not ``read_only``, and a token or basic auth is configured
   (else 403, with a message that says how to configure it);
2. the caller is authenticated (else 401): an ``Authorization: Bearer <token>`` header,
   an ``Authorization: Basic`` header, or a session cookie that the login form set;
3. the form's CSRF token belongs to the caller's session (else 403).

The session cookie (``HttpOnly``, ``SameSite=Strict``, ``Secure`` over HTTPS) holds
``<sid>.<authenticated>.<expires>.<mac>``, the MAC an HMAC-SHA256 under a key drawn at
random when the app is created: nothing is stored on the server, and restarting the
dashboard ends every session. The key is never derived from the token, so a stolen
cookie gives nothing to guess the token with offline. Every visitor gets a session (an
anonymous one at first) so that even the login form carries a CSRF token; logging in
issues a new session id. The CSRF token is an HMAC of the session id, so a token lifted
from one session is worthless in another, and a request authenticated by a header still
needs one: browsers replay basic credentials on their own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from anu_jobs.clock import Clock, SystemClock
from anu_jobs.errors import ConfigurationError

__all__ = ["SESSION_COOKIE", "SESSION_TTL", "Auth", "Session"]

SESSION_COOKIE = "anu_jobs_session"
SESSION_TTL = timedelta(hours=12)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class Session:
    """A visitor's session. ``fresh``: made for this request; the response must set it."""

    sid: str
    authenticated: bool
    expires: int  # Unix seconds
    fresh: bool = False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


class Auth:
    """The dashboard's credentials and its session and CSRF signing key."""

    def __init__(
        self,
        token: str | None,
        basic_auth: tuple[str, str] | None,
        *,
        clock: Clock | None = None,
    ) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ConfigurationError("the dashboard token must be a non-empty string")
        if basic_auth is not None:
            if (
                not isinstance(basic_auth, tuple)
                or len(basic_auth) != 2
                or not all(isinstance(v, str) and v for v in basic_auth)
            ):
                raise ConfigurationError(
                    "basic_auth must be a (username, password) pair of non-empty strings"
                )
            if ":" in basic_auth[0]:
                raise ConfigurationError("a basic auth username may not contain ':'")
        self.token = token
        self.basic_auth = basic_auth
        self._clock = clock or SystemClock()
        self._key = secrets.token_bytes(32)

    @property
    def configured(self) -> bool:
        """Whether any credential is configured (without one, no action is allowed)."""
        return self.token is not None or self.basic_auth is not None

    # -- credentials ----------------------------------------------------------------------

    def token_ok(self, value: str) -> bool:
        return self.token is not None and _same(value, self.token)

    def basic_ok(self, username: str, password: str) -> bool:
        if self.basic_auth is None:
            return False
        # Both comparisons always run: no early exit that times the username.
        user_ok = _same(username, self.basic_auth[0])
        password_ok = _same(password, self.basic_auth[1])
        return user_ok and password_ok

    def header_auth(self, request: Request) -> bool | None:
        """The ``Authorization`` header's verdict: None when there is none (or of a
        scheme not configured), else whether it holds valid credentials."""
        header = request.headers.get("authorization")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token is not None:
            return self.token_ok(value.strip())
        if scheme == "basic" and self.basic_auth is not None:
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            username, sep, password = decoded.partition(":")
            return bool(sep) and self.basic_ok(username, password)
        return False if scheme in ("bearer", "basic") else None

    def challenge(self) -> dict[str, str]:
        """The ``WWW-Authenticate`` header of a 401."""
        if self.basic_auth is not None:
            return {"WWW-Authenticate": 'Basic realm="anu-jobs dashboard", charset="UTF-8"'}
        return {"WWW-Authenticate": 'Bearer realm="anu-jobs dashboard"'}

    def authenticated(self, request: Request, session: Session) -> bool:
        """Whether this request may act: a logged-in session or valid header credentials."""
        if not self.configured:
            return False
        return session.authenticated or self.header_auth(request) is True

    # -- sessions -------------------------------------------------------------------------

    def _mac(self, purpose: str, payload: str) -> str:
        digest = hmac.new(self._key, f"{purpose}:{payload}".encode(), hashlib.sha256)
        return _b64(digest.digest())

    def _now(self) -> int:
        return int(self._clock.now().timestamp())

    def new_session(self, authenticated: bool = False) -> Session:
        expires = self._now() + int(SESSION_TTL.total_seconds())
        return Session(secrets.token_urlsafe(18), authenticated, expires, fresh=True)

    def load_session(self, request: Request) -> Session:
        """The session of the request's cookie when it is genuine and unexpired, else a
        fresh anonymous one."""
        raw = request.cookies.get(SESSION_COOKIE, "")
        parts = raw.split(".")
        if len(parts) == 4:
            sid, flag, expires, mac = parts
            payload = f"{sid}.{flag}.{expires}"
            if (
                _same(mac, self._mac("session", payload))
                and expires.isdigit()
                and int(expires) > self._now()
            ):
                return Session(sid, flag == "1" and self.configured, int(expires))
        return self.new_session()

    def save_session(self, response: Response, session: Session, request: Request) -> None:
        payload = f"{session.sid}.{int(session.authenticated)}.{session.expires}"
        response.set_cookie(
            SESSION_COOKIE,
            f"{payload}.{self._mac('session', payload)}",
            max_age=max(session.expires - self._now(), 0),
            path=request.scope.get("root_path", "") or "/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )

    # -- CSRF -----------------------------------------------------------------------------

    def csrf_token(self, session: Session) -> str:
        return self._mac("csrf", session.sid)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        """Whether ``token`` is the CSRF token of ``session``, a session the request
        brought (a fresh one has no form out yet that could carry its token)."""
        if session.fresh or not token:
            return False
        return _same(token, self.csrf_token(session))
