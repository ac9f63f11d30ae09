"""Proving identity with TOTP: enrolment, and verification that survives guessing."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.domain import totp
from gateway.errors import NotAllowed, TotpLockedOut, TotpNotEnrolled, TotpRejected, TotpReplayed
from gateway.services.audit import AuditLog
from gateway.storage.base import Store

__all__ = ["IdentityService", "Verified"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verified:
    participant_id: str
    step: int


class IdentityService:
    """TOTP for hosts (always) and clients (per room policy)."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        audit: AuditLog,
        policy: totp.TotpPolicy,
        account_label: str = "Quietroom session",
    ) -> None:
        self._store = store
        self._clock = clock
        self._audit = audit
        self._policy = policy
        self._label = account_label

    @property
    def policy(self) -> totp.TotpPolicy:
        return self._policy

    async def is_enrolled(self, participant_id: str) -> bool:
        return await self._store.get_totp_secret(participant_id) is not None

    async def enrol(self, participant_id: str, *, actor: str) -> totp.Enrolment:
        """A new secret for the participant, replacing any earlier one. Shown once."""
        secret = totp.new_secret()
        await self._store.set_totp_secret(participant_id, secret)
        await self._audit.record(
            "totp.enrolled", actor=actor, subjects={"participant": participant_id}
        )
        return totp.enrol(secret, account_label=self._label, policy=self._policy)

    async def enrol_first_time(self, participant_id: str) -> totp.Enrolment:
        """Enrolment on a first visit: shown once; a second request is refused, so a
        stolen session cannot read or replace a secret already in use."""
        secret = totp.new_secret()
        if not await self._store.add_totp_secret(participant_id, secret):
            raise NotAllowed("already enrolled: use the code from your authenticator app")
        await self._audit.record(
            "totp.enrolled", actor=participant_id, subjects={"participant": participant_id}
        )
        return totp.enrol(secret, account_label=self._label, policy=self._policy)

    async def verify(self, participant_id: str, code: object) -> Verified:
        """Accept ``code`` once, or raise a :class:`TotpError` subclass.

        The attempt is counted before the code is looked at, so concurrent guesses
        from any number of sockets never get more than the limit of tries.
        """
        normalised = totp.normalise_code(code, self._policy)
        secret = await self._store.get_totp_secret(participant_id)
        if secret is None:
            raise TotpNotEnrolled("no TOTP enrolment for this participant")
        now = self._clock.now()
        grant = await self._store.begin_totp_attempt(
            participant_id,
            limit=self._policy.max_failures,
            cooldown=self._policy.lockout_seconds,
            now=now,
        )
        if not grant.allowed:
            await self._record(participant_id, "locked_out")
            raise TotpLockedOut(locked_until=grant.locked_until)
        step = totp.matching_step(secret, normalised, at=now, policy=self._policy)
        if step is None:
            remaining = self._policy.max_failures - grant.attempts
            if remaining <= 0:
                await self._record(participant_id, "lockout_started")
                log.warning("totp lockout", extra={"participant_id": participant_id})
                raise TotpLockedOut(
                    locked_until=now + self._policy.lockout_seconds, just_locked=True
                )
            await self._record(participant_id, "rejected")
            raise TotpRejected(failures=grant.attempts, remaining=remaining)
        if not await self._store.use_totp_step(participant_id, step):
            await self._record(participant_id, "replayed")
            raise TotpReplayed(step=step)
        await self._store.clear_totp_attempts(participant_id)
        await self._record(participant_id, "ok")
        return Verified(participant_id=participant_id, step=step)

    async def _record(self, participant_id: str, outcome: str) -> None:
        await self._audit.record(
            "totp.verify",
            actor=participant_id,
            outcome=outcome,
            subjects={"participant": participant_id},
        )
