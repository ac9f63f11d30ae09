"""Platform API keys: the format, the scopes, and the checks, with no I/O.

A key reads ``qrk_<key id>_<secret>``. The key id is an ordinary opaque id, safe to log
and to put in the audit log; the secret (256 bits) is shown once, when the key is made,
and only its SHA-256 is kept. SHA-256 without a salt or a slow hash is enough here: the
secret is random and long, so there is nothing to guess from a dictionary.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from gateway.domain.ids import new_id
from gateway.errors import InvalidInput, ScopeMissing, Unauthenticated

__all__ = [
    "KEY_ID_PREFIX",
    "MAX_PRESENTED_LENGTH",
    "ApiKey",
    "Scope",
    "clean_key_name",
    "clean_scopes",
    "hash_secret",
    "new_api_key",
    "parse_presented",
    "require_scope",
    "revoke",
    "secret_matches",
]

KEY_ID_PREFIX = "key"
#: 32 random bytes: 256 bits, 43 URL-safe characters.
SECRET_BYTES = 32
#: A presented key longer than this is refused before any other work.
MAX_PRESENTED_LENGTH = 128

# "qrk_" + a key id (prefix, underscore, 22 characters) + "_" + the 43-character secret.
# The id has a fixed length, so the underscore after it is unambiguous.
_PRESENTED = re.compile(r"qrk_(key_[A-Za-z0-9_-]{22})_([A-Za-z0-9_-]{43})")
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
#: Compared against when the key id is unknown, so both paths do the same work.
_NO_SECRET_HASH = "0" * 64


class Scope(enum.StrEnum):
    """What an API key may do. No scope implies another, and there is no wildcard."""

    HOSTS_READ = "hosts:read"
    HOSTS_WRITE = "hosts:write"
    ROOMS_READ = "rooms:read"
    ROOMS_WRITE = "rooms:write"
    APPOINTMENTS_READ = "appointments:read"
    APPOINTMENTS_WRITE = "appointments:write"
    LINKS_WRITE = "links:write"
    TOTP_WRITE = "totp:write"
    SESSIONS_WRITE = "sessions:write"
    AUDIT_READ = "audit:read"
    RECORDS_READ = "records:read"
    #: Erase a participant's data (DELETE /participants/{id}); nothing else implies it.
    RECORDS_ERASE = "records:erase"


_SCOPE_VALUES = frozenset(scope.value for scope in Scope)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A platform's API key as stored: the secret itself is never part of it."""

    id: str
    platform_id: str
    #: A label the platform's operator chose ("billing-sync"), not a person's name.
    name: str
    scopes: frozenset[Scope]
    created_at: float
    #: The hex SHA-256 of the secret.
    secret_hash: str
    revoked_at: float | None = None

    @property
    def live(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly, scopes sorted; the secret hash is left out."""
        return {
            "id": self.id,
            "platform_id": self.platform_id,
            "name": self.name,
            "scopes": sorted(scope.value for scope in self.scopes),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


def clean_key_name(value: object) -> str:
    """A key label: 1 to 64 letters, digits and ``_ . : -``, starting with one of the first two."""
    if not isinstance(value, str) or not _KEY_NAME.fullmatch(value):
        raise InvalidInput(
            "a key name is 1 to 64 letters, digits, '_', '.', ':' or '-'", field="name"
        )
    return value


def clean_scopes(values: Iterable[object]) -> frozenset[Scope]:
    """Known scopes only, at least one."""
    scopes: set[Scope] = set()
    for value in values:
        if not isinstance(value, str) or value not in _SCOPE_VALUES:
            raise InvalidInput("unknown scope", field="scopes")
        scopes.add(Scope(value))
    if not scopes:
        raise InvalidInput("an API key needs at least one scope", field="scopes")
    return frozenset(scopes)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_api_key(
    *, platform_id: str, name: str, scopes: Iterable[object], at: float
) -> tuple[ApiKey, str]:
    """A new key record and the plaintext key, which exists only in this return value."""
    key_id = new_id(KEY_ID_PREFIX)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    key = ApiKey(
        id=key_id,
        platform_id=platform_id,
        name=clean_key_name(name),
        scopes=clean_scopes(scopes),
        created_at=at,
        secret_hash=hash_secret(secret),
    )
    return key, f"qrk_{key_id}_{secret}"


def parse_presented(presented: object) -> tuple[str, str]:
    """(key id, secret) of a presented key, or :class:`Unauthenticated` if malformed."""
    if not isinstance(presented, str) or len(presented) > MAX_PRESENTED_LENGTH:
        raise Unauthenticated("API key refused")
    match = _PRESENTED.fullmatch(presented)
    if match is None:
        raise Unauthenticated("API key refused")
    return match.group(1), match.group(2)


def secret_matches(key: ApiKey | None, secret: str) -> bool:
    """Constant-time check of ``secret`` against the key's stored hash (False if no key)."""
    expected = _NO_SECRET_HASH if key is None else key.secret_hash
    matches = hmac.compare_digest(hash_secret(secret), expected)
    return key is not None and matches


def require_scope(key: ApiKey, scope: Scope) -> None:
    """Raise :class:`ScopeMissing` unless the key carries ``scope``."""
    if scope not in key.scopes:
        raise ScopeMissing(scope=scope.value)


def revoke(key: ApiKey, *, at: float) -> ApiKey:
    """The key, revoked now; revoking twice keeps the first time."""
    if key.revoked_at is not None:
        return key
    return replace(key, revoked_at=at)
