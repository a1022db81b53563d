"""Browser sessions, CSRF tokens and the sign-in delay (pure: time passed in).

Every browser gets a session (a random id in an HttpOnly, SameSite=Strict
cookie, Secure over TLS) holding its CSRF token, whether it has signed in,
and one message to show after a redirect. Every POST from a browser must
carry the session's token (a ``csrf`` form field, or the ``X-CSRF-Token``
header from the page's script): a page of another site can make the
browser send the cookie, but cannot read the token. Sessions live in
memory, bounded in count (the oldest goes first) and in age; signing in
makes a new session id, so an id seen before sign-in is worth nothing
after.
"""

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

SESSIONS_MAX: Final = 10_000
SESSION_MAX_AGE_MS: Final = 12 * 3600 * 1000
TOKEN_BYTES: Final = 32


@dataclass
class Session:
    id: str
    csrf: str
    created_ms: int
    signed_in: bool = False
    flash: list[str] = field(default_factory=list)  # messages for the next page


class Sessions:
    def __init__(self) -> None:
        self._by_id: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, session_id: str | None, now_ms: int) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        if now_ms - session.created_ms > SESSION_MAX_AGE_MS:
            del self._by_id[session_id]
            return None
        return session

    def new(self, now_ms: int, *, signed_in: bool = False) -> Session:
        while len(self._by_id) >= SESSIONS_MAX:
            self._by_id.popitem(last=False)
        session = Session(
            secrets.token_urlsafe(TOKEN_BYTES), secrets.token_urlsafe(TOKEN_BYTES), now_ms
        )
        session.signed_in = signed_in
        self._by_id[session.id] = session
        return session

    @staticmethod
    def transient(now_ms: int) -> Session:
        """A session for one request, kept nowhere (an API call with a key;
        a request that is refused before signing in)."""
        return Session("", secrets.token_urlsafe(TOKEN_BYTES), now_ms)

    def sign_in(self, old: Session, now_ms: int) -> Session:
        """A new, signed-in session in place of ``old`` (its messages carried over)."""
        self._by_id.pop(old.id, None)
        fresh = self.new(now_ms, signed_in=True)
        fresh.flash = old.flash
        return fresh

    def end(self, session: Session) -> None:
        self._by_id.pop(session.id, None)


def token_matches(session: Session, given: str | None) -> bool:
    return given is not None and secrets.compare_digest(session.csrf.encode(), given.encode())
