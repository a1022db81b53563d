"""Every request passes here first: security headers, the session, sign-in,
and the CSRF check of every POST.

- Headers on every response: a strict Content-Security-Policy (scripts and
  styles from this server's own files only, no inline script, no frames,
  forms post here only), nosniff, no referrer, no framing, no caching of
  pages.
- The session cookie (sessions.py) is set on the first response.
- With credentials configured, everything but the sign-in page and the
  static files needs a signed-in session or an API key
  (``Authorization: Bearer KEY_ID:SECRET``): an API call gets 401, a page a
  redirect to /login. A wrong key is answered after the sign-in delay.
- A POST (or PUT) from a browser must carry its session's CSRF token (the ``csrf``
  form field or the ``X-CSRF-Token`` header) and, if it says where it comes
  from, come from this origin; a POST with an API key needs neither.
  ``post_allowed`` is called by every POST handler (``@mutation``) once it
  has the form; a test checks that every POST route refuses without it.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from leash.broker.server.auth import FailureTable, Source
from leash.protocol.limits import AUTH_FAIL_DELAY_DEFAULT_MS
from leash.web.credentials import Credentials
from leash.web.sessions import Session, Sessions, token_matches

COOKIE: Final = "leash_session"
CSRF_HEADER: Final = "x-csrf-token"
CHANGES: Final = ("POST", "PUT", "DELETE", "PATCH")  # methods that may change something
PUBLIC_PATHS: Final = ("/login", "/static/", "/favicon.ico")
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS: Final = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends
    # "Origin: null" on a form's POST, and this origin could not be told apart
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class Access:
    """What the guard decided about a request (``request.state.access``)."""

    session: Session
    by_key: bool  # an API key signed this request: no CSRF token needed


class Guard(BaseHTTPMiddleware):
    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        credentials: Credentials,
        sessions: Sessions,
        failures: FailureTable,
        secure: bool,
    ) -> None:
        super().__init__(app)
        self.credentials = credentials
        self.sessions = sessions
        self.failures = failures
        self.secure = secure

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        at_ms = now_ms()
        path = request.url.path
        bearer = request.headers.get("authorization", "")
        by_key = bearer.startswith("Bearer ") and self.credentials.key_matches(bearer[7:])
        session = self.sessions.get(request.cookies.get(COOKIE), at_ms)
        fresh = session is None and not by_key
        if session is None:
            # Kept only where a browser will use it: with credentials, from the
            # sign-in page on (so requests that are refused fill no memory).
            kept = not by_key and (not self.credentials.required or path == "/login")
            session = self.sessions.new(at_ms) if kept else Sessions.transient(at_ms)
            fresh = kept
        if bearer and not by_key:
            await delay_failure(self.failures, request)
            return self._finish(_json_error(401, "unknown or expired key"), session, fresh)
        request.state.access = Access(session, by_key)
        public = any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC_PATHS)
        if self.credentials.required and not (session.signed_in or by_key or public):
            if path.startswith("/api/"):
                response: Response = _json_error(401, "sign in first (or use an API key)")
            else:
                response = RedirectResponse(f"/login?next={quote(path)}", status_code=303)
            return self._finish(response, session, fresh)
        if request.method in CHANGES and not by_key and not same_origin(request):
            return self._finish(
                _json_error(403, f"cross-origin {request.method} refused"), session, fresh
            )
        response = await call_next(request)
        current = getattr(request.state, "access", None)
        if current is not None and current.session is not session:  # signed in or out
            session, fresh = current.session, True
        return self._finish(response, session, fresh)

    def _finish(self, response: Response, session: Session, fresh: bool) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if response.media_type == "text/html" or "text/html" in response.headers.get(
            "content-type", ""
        ):
            response.headers["cache-control"] = "no-store"
        if fresh:
            response.set_cookie(
                COOKIE, session.id, httponly=True, samesite="strict", secure=self.secure, path="/"
            )
        return response


def same_origin(request: Request) -> bool:
    """A browser's POST names its origin; it must be this server's."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def csrf_ok(request: Request, form_token: str | None) -> bool:
    access: Access = request.state.access
    if access.by_key:
        return True
    token = form_token or request.headers.get(CSRF_HEADER)
    return token_matches(access.session, token)


def failure_source(request: Request) -> Source:
    """Whom a wrong password or key counts against: its address (one
    source whatever it tried, as the broker counts an unknown key id)."""
    return (request.client.host if request.client else "?"), ""


async def delay_failure(failures: FailureTable, request: Request) -> None:
    """A wrong password or key: wait (longer after each recent failure from
    the same address), then answer."""
    delay_ms = failures.failed(failure_source(request), now_ms())
    await asyncio.sleep(delay_ms / 1000)


def new_failure_table(base_delay_ms: int = AUTH_FAIL_DELAY_DEFAULT_MS) -> FailureTable:
    return FailureTable(base_delay_ms)


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
