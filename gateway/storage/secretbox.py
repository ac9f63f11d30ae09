"""Encryption at rest for small secrets (TOTP seeds, webhook signing secrets), with key
rotation: the newest key seals, every key opens, and :meth:`SecretBox.reseal` moves a
sealed secret to the newest key so that an old one can be dropped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from gateway.errors import ConfigError, StoreError

__all__ = ["ResealReport", "SecretBox"]


@dataclass(frozen=True, slots=True)
class ResealReport:
    """What a pass of :meth:`~gateway.storage.base.Store.reseal_secrets` did: counts only."""

    #: Secrets sealed anew under the newest data key.
    resealed: int = 0
    #: Secrets already under the newest key.
    current: int = 0
    #: Secrets written by someone else between the read and the write; left as written
    #: (run again if the writer might still use an old key).
    changed: int = 0
    #: Secrets that no data key opens; left as they are.
    unreadable: int = 0

    def __add__(self, other: ResealReport) -> ResealReport:
        return ResealReport(
            resealed=self.resealed + other.resealed,
            current=self.current + other.current,
            changed=self.changed + other.changed,
            unreadable=self.unreadable + other.unreadable,
        )


class SecretBox:
    """Fernet (AES-CBC + HMAC-SHA256) under a list of keys: the first encrypts, all decrypt."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError("at least one data key is needed to encrypt secrets at rest")
        try:
            fernets = [Fernet(k) for k in keys]
        except (ValueError, TypeError):
            raise ConfigError("data keys must be Fernet keys (quietroom keys new)") from None
        self._newest = fernets[0]
        self._fernet = MultiFernet(fernets)

    def seal(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode("utf-8"))

    def open(self, sealed: bytes) -> str:
        try:
            return self._fernet.decrypt(sealed).decode("utf-8")
        except InvalidToken:
            raise StoreError("a stored secret does not decrypt with any data key") from None

    def reseal(self, sealed: bytes) -> bytes | None:
        """The secret sealed anew under the newest key, or None when it already is.

        Raises :class:`StoreError` when no key opens it. The secret's original time is
        kept (Fernet's rotate), so nothing about it changes but the key.
        """
        try:
            self._newest.decrypt(sealed)
        except InvalidToken:
            pass
        else:
            return None
        try:
            return self._fernet.rotate(sealed)
        except InvalidToken:
            raise StoreError("a stored secret does not decrypt with any data key") from None
