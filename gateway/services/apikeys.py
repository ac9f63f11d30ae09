"""Platform API keys: made once, checked on every request, revoked for good."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.domain import apikeys
from gateway.domain.apikeys import ApiKey
from gateway.domain.ids import is_valid_id
from gateway.errors import NotFound, Unauthenticated
from gateway.services.audit import AuditLog
from gateway.storage.base import Store

__all__ = ["ApiKeyService", "IssuedApiKey"]

log = logging.getLogger(__name__)

_AUDITED_REFUSALS_PER_MINUTE = 10


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    """A new key: the record, and the plaintext that is never shown again."""

    key: ApiKey
    plaintext: str

    def __repr__(self) -> str:
        # Keep the plaintext out of reprs, tracebacks and debug logs.
        return f"IssuedApiKey(key={self.key!r}, plaintext='…')"


class ApiKeyService:
    """Creates, authenticates and revokes the keys platforms call the API with."""

    def __init__(self, *, store: Store, clock: Clock, audit: AuditLog) -> None:
        self._store = store
        self._clock = clock
        self._audit = audit

    async def create(
        self, *, platform_id: str, name: str, scopes: Iterable[object], actor: str
    ) -> IssuedApiKey:
        """A new key for the platform; the plaintext is in the answer and nowhere else."""
        if await self._store.get_platform(platform_id) is None:
            raise NotFound("platform")
        key, plaintext = apikeys.new_api_key(
            platform_id=platform_id, name=name, scopes=scopes, at=self._clock.now()
        )
        await self._store.put_api_key(key)
        await self._audit.record(
            "apikey.created", actor=actor, subjects={"apikey": key.id, "platform": platform_id}
        )
        log.info("api key created", extra={"apikey_id": key.id, "platform_id": platform_id})
        return IssuedApiKey(key=key, plaintext=plaintext)

    async def authenticate(self, presented: object) -> ApiKey:
        """The live key ``presented`` stands for, or :class:`Unauthenticated`.

        Malformed, unknown, wrong and revoked keys all raise the same error.
        """
        key_id, secret = apikeys.parse_presented(presented)
        key = await self._store.get_api_key(key_id)
        # Compared even for an unknown id, so timing does not tell which ids exist.
        matches = apikeys.secret_matches(key, secret)
        if key is None:
            raise Unauthenticated("API key refused")
        if not matches:
            # Someone holds a real key id with a wrong secret: worth a record.
            await self._refused(key, "wrong_secret")
            raise Unauthenticated("API key refused")
        if not key.live:
            await self._refused(key, "revoked")
            raise Unauthenticated("API key refused")
        return key

    async def revoke(self, key_id: str, *, actor: str) -> ApiKey:
        """Revoke for good; revoking again keeps the first time."""
        key = (
            await self._store.revoke_api_key(key_id, self._clock.now())
            if is_valid_id(key_id)
            else None
        )
        if key is None:
            raise NotFound("api key")
        await self._audit.record(
            "apikey.revoked",
            actor=actor,
            subjects={"apikey": key.id, "platform": key.platform_id},
        )
        return key

    async def list_keys(self, platform_id: str) -> list[ApiKey]:
        """Every key of the platform, revoked ones included, oldest first."""
        return await self._store.list_api_keys(platform_id)

    async def _refused(self, key: ApiKey, outcome: str) -> None:
        log.info("api key refused (%s)", outcome, extra={"apikey_id": key.id})
        # A flood of wrong secrets for one key id must not flood the audit log: the first
        # refusals of each minute are recorded, the rest only refused.
        if not await self._store.hit_rate_limit(
            f"apikey-refused:{key.id}",
            limit=_AUDITED_REFUSALS_PER_MINUTE,
            window=60,
            now=self._clock.now(),
        ):
            return
        await self._audit.record(
            "apikey.refused",
            actor="anonymous",
            outcome=outcome,
            subjects={"apikey": key.id, "platform": key.platform_id},
        )
