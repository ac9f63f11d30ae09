"""Issuing links and redeeming them exactly once."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from gateway.clock import Clock
from gateway.domain.links import LinkClaims, LinkPurpose, LinkSigner
from gateway.domain.model import Appointment, BrowserSession, Participant, Role
from gateway.domain.waiting_room import ParticipantEvent, sources_of, target_of
from gateway.errors import LinkAlreadyUsed, LinkError, LinkInvalid, NotFound
from gateway.services.audit import AuditLog
from gateway.services.sessions import new_session_token
from gateway.storage.base import Store

__all__ = ["IssuedLink", "LinkService", "Redemption"]

log = logging.getLogger(__name__)

_ROLE_OF = {LinkPurpose.CLIENT_JOIN: Role.CLIENT, LinkPurpose.HOST_SIGN_IN: Role.HOST}
_PATH_OF = {LinkPurpose.CLIENT_JOIN: "/j/", LinkPurpose.HOST_SIGN_IN: "/h/"}


@dataclass(frozen=True, slots=True)
class IssuedLink:
    url: str
    claims: LinkClaims


@dataclass(frozen=True, slots=True)
class Redemption:
    """A redeemed link: the cookie to set and what it stands for."""

    session_token: str
    session: BrowserSession
    participant: Participant


class LinkService:
    """Client join and host sign-in links."""

    def __init__(
        self,
        *,
        store: Store,
        signer: LinkSigner,
        clock: Clock,
        audit: AuditLog,
        public_url: str,
        session_max_age: int,
    ) -> None:
        self._store = store
        self._signer = signer
        self._clock = clock
        self._audit = audit
        self._public_url = public_url.rstrip("/")
        self._session_max_age = session_max_age

    async def issue(self, purpose: LinkPurpose, *, participant_id: str, actor: str) -> IssuedLink:
        """A link for one participant of one appointment."""
        participant = await self._store.get_participant(participant_id)
        if participant is None or participant.role is not _ROLE_OF[purpose]:
            raise NotFound("participant")
        appointment = await self._store.get_appointment(participant.appointment_id)
        if appointment is None or appointment.ended_at is not None:
            raise NotFound("appointment")
        token, claims = self._signer.issue(
            purpose, appointment_id=appointment.id, participant_id=participant.id
        )
        await self._audit.record(
            "link.issued",
            actor=actor,
            subjects={
                "appointment": appointment.id,
                "participant": participant.id,
                "purpose": purpose.value,
            },
        )
        return IssuedLink(url=f"{self._public_url}{_PATH_OF[purpose]}{token}", claims=claims)

    async def check(self, purpose: LinkPurpose, token: object) -> None:
        """Refuse a link that could not be redeemed now, without using it up: opening
        a link only shows the page that redeems it (mail scanners and link previews open
        links too). Any refusal is a :class:`LinkError`, as :meth:`redeem` gives it."""
        try:
            claims, participant, _ = await self._usable(purpose, token)
            if await self._store.link_used(claims.jti):
                raise LinkAlreadyUsed(purpose=purpose.value)
            knocks = sources_of(ParticipantEvent.KNOCK)
            if participant.role is Role.CLIENT and participant.state not in knocks:
                # What redeeming would refuse when the client knocks (denied, removed).
                raise LinkInvalid("the participant cannot knock now", purpose=purpose.value)
        except LinkError as exc:
            await self._refused(purpose, exc)
            raise

    async def redeem(self, purpose: LinkPurpose, token: object) -> Redemption:
        """Redeem a link once. Any refusal is a :class:`LinkError` (one answer outside)."""
        try:
            return await self._redeem(purpose, token)
        except LinkError as exc:
            await self._refused(purpose, exc)
            raise

    async def _refused(self, purpose: LinkPurpose, exc: LinkError) -> None:
        await self._audit.record(
            "link.refused",
            actor="anonymous",
            outcome=type(exc).__name__.lower(),
            subjects={"purpose": purpose.value},
        )

    async def _usable(
        self, purpose: LinkPurpose, token: object
    ) -> tuple[LinkClaims, Participant, Appointment]:
        """What a link names, if it could be redeemed but for having been used."""
        claims = self._signer.verify(purpose, token)
        participant = await self._store.get_participant(claims.participant_id)
        appointment = await self._store.get_appointment(claims.appointment_id)
        if (
            participant is None
            or appointment is None
            or participant.appointment_id != appointment.id
            or participant.role is not _ROLE_OF[purpose]
        ):
            raise LinkInvalid("link names no such participant", purpose=purpose.value)
        if appointment.ended_at is not None:
            raise LinkInvalid("the appointment has ended", purpose=purpose.value)
        return claims, participant, appointment

    async def _redeem(self, purpose: LinkPurpose, token: object) -> Redemption:
        claims, participant, appointment = await self._usable(purpose, token)
        now = self._clock.now()
        if not await self._store.consume_link(claims.jti, expires_at=claims.expires_at, now=now):
            raise LinkAlreadyUsed(purpose=purpose.value)
        if participant.role is Role.CLIENT:
            participant = await self._knock(participant, purpose)
            # One device per client: a new link ends the old device's sessions, so a lost
            # or shared phone stops working once a new link is opened. (Hosts keep theirs
            # until they sign in: a host link alone, without TOTP, must not log a host out.)
            await self._store.delete_participant_sessions(appointment.id, participant.id)
        token_value, session_hash = new_session_token()
        session = BrowserSession(
            participant_id=participant.id,
            appointment_id=appointment.id,
            role=participant.role,
            created_at=now,
            expires_at=now + self._session_max_age,
        )
        await self._store.create_session(session_hash, session)
        await self._audit.record(
            "link.redeemed",
            actor=participant.id,
            subjects={"appointment": appointment.id, "purpose": purpose.value},
        )
        log.info(
            "link redeemed",
            extra={"appointment_id": appointment.id, "participant_id": participant.id},
        )
        return Redemption(session_token=token_value, session=session, participant=participant)

    async def _knock(self, participant: Participant, purpose: LinkPurpose) -> Participant:
        """Move a client to knocking; denied and removed clients stay out."""
        event = ParticipantEvent.KNOCK
        moved, current = await self._store.transition_participant(
            participant.id, sources=sources_of(event), target=target_of(event), at=self._clock.now()
        )
        if not moved or current is None:
            raise LinkInvalid("the participant cannot knock now", purpose=purpose.value)
        return current
