"""Encryption at rest for small secrets (TOTP seeds), with key rotation."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from gateway.errors import ConfigError, StoreError

__all__ = ["SecretBox"]


class SecretBox:
    """Fernet (AES-CBC + HMAC-SHA256) under a list of keys: the first encrypts, all decrypt."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError("at least one data key is needed to encrypt secrets at rest")
        try:
            self._fernet = MultiFernet([Fernet(k) for k in keys])
        except (ValueError, TypeError):
            raise ConfigError("data keys must be Fernet keys (quietroom keys new)") from None

    def seal(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(sealed).decode("utf-8")
        except InvalidToken:
            raise StoreError("a stored secret does not decrypt with any data key") from None
