"""Browser session tokens: random cookies, kept server-side only as their hash."""

from __future__ import annotations

import hashlib
import secrets

from gateway.clock import Clock
from gateway.domain.model import BrowserSession, Role
from gateway.storage.base import Store

__all__ = ["SESSION_TOKEN_BYTES", "BrowserSessions", "hash_session_token", "new_session_token"]

SESSION_TOKEN_BYTES = 32


def new_session_token() -> tuple[str, str]:
    """A new cookie value and the hash the store keeps it under."""
    token = secrets.token_urlsafe(SESSION_TOKEN_BYTES)
    return token, hash_session_token(token)


def hash_session_token(token: str) -> str:
    """The store key for a cookie value: a stolen store dump gives no usable cookie."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


#: Activity is written back at most this often per session.
_TOUCH_EVERY = 60.0
MAX_SESSION_TOKEN_LENGTH = 128


class BrowserSessions:
    """Finds the live browser session behind a cookie value.

    Sessions end at their absolute lifetime; a host's also after an idle timeout.
    """

    def __init__(self, *, store: Store, clock: Clock, host_idle_timeout: float) -> None:
        self._store = store
        self._clock = clock
        self._host_idle_timeout = host_idle_timeout

    async def resolve(self, token: object) -> tuple[str, BrowserSession] | None:
        """(session hash, session) for a cookie value, or None if it is not alive."""
        if not isinstance(token, str) or not token or len(token) > MAX_SESSION_TOKEN_LENGTH:
            return None
        session_hash = hash_session_token(token)
        session = await self.refresh(session_hash)
        return None if session is None else (session_hash, session)

    async def refresh(self, session_hash: str) -> BrowserSession | None:
        """The session as stored now (it may have been verified or ended meanwhile), if
        it is still alive; activity is recorded."""
        now = self._clock.now()
        session = await self._store.get_session(session_hash, now=now)
        if session is None:
            return None
        if session.role is Role.HOST and now - session.idle_since() > self._host_idle_timeout:
            await self._store.delete_session(session_hash)
            return None
        if now - session.idle_since() > _TOUCH_EVERY:
            session = await self._store.touch_session(session_hash, now) or session
        return session
