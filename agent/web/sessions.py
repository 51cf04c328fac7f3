"""Sessions in memory: a random token in a cookie, each with its own CSRF token.

Every visitor gets a session, a guest's too, so that the sign-in and setup forms carry a CSRF
token like every other form. Signing in replaces the guest's session by a new one (a new token:
a token planted before sign-in is worth nothing after it). A restart of the page signs everyone
out, which is the price of keeping no token on disk.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import Final

from protocol.clock import Clock

SIGNED_IN_TTL_MS: Final = 30 * 86_400_000  # since last use
GUEST_TTL_MS: Final = 3_600_000
MAX_SESSIONS: Final = 256
COOKIE: Final = "coopwatt_session"


@dataclass(slots=True)
class Session:
    token: str = field(repr=False)
    csrf: str = field(repr=False)
    signed_in: bool
    expires_ms: int
    notices: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    # (kind, message id, values) shown once on the next page: "ok" or "error"

    def notify(self, kind: str, message: str, **values: str) -> None:
        self.notices.append((kind, message, values))

    def take_notices(self) -> list[tuple[str, str, dict[str, str]]]:
        notices, self.notices = self.notices, []
        return notices


class SessionStore:
    def __init__(self, clock: Clock, max_sessions: int = MAX_SESSIONS) -> None:
        self.clock = clock
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token``; a signed-in one's life starts again."""
        if not token:
            return None
        now = self.clock.now_ms()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if session.expires_ms <= now:
                del self._sessions[token]
                return None
            if session.signed_in:
                session.expires_ms = now + SIGNED_IN_TTL_MS
            return session

    def _new(self, signed_in: bool) -> Session:
        ttl = SIGNED_IN_TTL_MS if signed_in else GUEST_TTL_MS
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), signed_in,
            self.clock.now_ms() + ttl,
        )  # fmt: skip
        with self._lock:
            self._sessions[session.token] = session
            self._evict()
        return session

    def _evict(self) -> None:
        now = self.clock.now_ms()
        for token in [t for t, s in self._sessions.items() if s.expires_ms <= now]:
            del self._sessions[token]
        while len(self._sessions) > self.max_sessions:
            # Guests go first, oldest first; a flood of guests cannot sign the household out.
            pool = [s for s in self._sessions.values() if not s.signed_in] or list(
                self._sessions.values()
            )
            oldest = min(pool, key=lambda s: s.expires_ms)
            del self._sessions[oldest.token]

    def guest(self) -> Session:
        return self._new(signed_in=False)

    def sign_in(self, previous: Session | None) -> Session:
        """A new signed-in session replacing ``previous`` (its notices carried over)."""
        session = self._new(signed_in=True)
        if previous is not None:
            self.end(previous.token)
            session.notices = previous.take_notices()
        return session

    def end(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    def end_all(self) -> None:
        """Sign everyone out (the password was set again)."""
        with self._lock:
            self._sessions.clear()
