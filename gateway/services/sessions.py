"""Browser session tokens: random cookies, kept server-side only as their hash."""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["SESSION_TOKEN_BYTES", "hash_session_token", "new_session_token"]

SESSION_TOKEN_BYTES = 32


def new_session_token() -> tuple[str, str]:
    """A new cookie value and the hash the store keeps it under."""
    token = secrets.token_urlsafe(SESSION_TOKEN_BYTES)
    return token, hash_session_token(token)


def hash_session_token(token: str) -> str:
    """The store key for a cookie value: a stolen store dump gives no usable cookie."""
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()
