"""The /client namespace: prove identity, consent, wait; hear only about yourself."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gateway.clock import Clock
from gateway.domain.consent import ConsentKind, has_live_consent
from gateway.domain.model import BrowserSession, Role
from gateway.domain.waiting_room import HostPresence, ParticipantState
from gateway.errors import GatewayError
from gateway.media.routing import MediaRouter
from gateway.services import Seat, Services
from gateway.settings import Settings
from signaling.base import Caller, GatewayNamespace, Grace, clients_room, participant_room
from signaling.errors import ok, refusal
from signaling.media import MEDIA_STATES, MediaHandlers
from signaling.recording import RecordingHandlers
from signaling.timers import GraceTimers
from signaling.validation import NO_PAYLOAD, Field, Schema

__all__ = ["ClientNamespace"]

log = logging.getLogger(__name__)

_REFUSED_STATES = {ParticipantState.DENIED: "denied", ParticipantState.REMOVED: "removed"}


class ClientNamespace(GatewayNamespace):
    role = Role.CLIENT

    def __init__(
        self,
        *,
        services: Services,
        settings: Settings,
        clock: Clock,
        timers: GraceTimers,
        media: MediaRouter,
    ) -> None:
        super().__init__("/client", services=services, settings=settings, clock=clock)
        self.timers = timers
        self.handlers = {
            "status": (NO_PAYLOAD, self.status),
            "identity.enrol": (NO_PAYLOAD, self.enrol),
            "identity.verify": (Schema({"code": Field(str, 32)}), self.verify),
            "consent.telehealth": (Schema({"version": Field(str, 64)}), self.telehealth_consent),
            "knock": (NO_PAYLOAD, self.knock),
            "leave": (NO_PAYLOAD, self.leave),
            **MediaHandlers(
                services=services, settings=settings, clock=clock, router=media, role=Role.CLIENT
            ).handlers(),
            **RecordingHandlers(services=services, role=Role.CLIENT, emit=self.emit).handlers(),
        }

    async def on_connect(self, sid: str, environ: Mapping[str, Any], auth: object = None) -> None:
        session_hash, session = await self.authenticate(environ)
        try:
            seat = await self.services.waiting_room.seat_of(session)
            refused = _REFUSED_STATES.get(seat.participant.state)
            if refused:
                raise refusal(refused)
            # Count the connection and stop the grace timer before anything else, so a
            # timer firing now cannot mark a client that is coming back as gone.
            self.timers.cancel(_grace_key(session.participant_id))
            await self.services.store.change_connections(session.participant_id, 1)
        except GatewayError as exc:
            raise refusal(exc.code) from None
        try:
            await self.services.waiting_room.return_after_leaving(session)
        except GatewayError as exc:
            await self.services.store.change_connections(session.participant_id, -1)
            raise refusal(exc.code) from None
        await self.remember(sid, session_hash, session)
        await self.enter_room(sid, participant_room(session.participant_id))
        await self.enter_room(sid, clients_room(session.appointment_id))
        log.info("client connected", extra={"participant_id": session.participant_id})

    def after_last_connection(self, participant_id: str) -> Grace:
        # Same device back within the grace period keeps its place.
        return Grace(
            key=_grace_key(participant_id),
            delay=self.settings.reconnect_grace,
            action=lambda: self.services.waiting_room.drop_after_grace(participant_id),
        )

    # --- events ----------------------------------------------------------------------------

    async def status(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        seat = await self.services.waiting_room.seat_of(caller.session)
        return ok(**await self.snapshot(seat, caller.session))

    async def enrol(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        enrolment = await self.services.waiting_room.enrol_identity(caller.session)
        return ok(otpauth_uri=enrolment.otpauth_uri, qr_svg=enrolment.qr_svg)

    async def verify(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        await self.services.waiting_room.prove_identity(
            caller.session_hash, caller.session, payload["code"]
        )
        return ok(verified=True)

    async def telehealth_consent(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        record = await self.services.waiting_room.accept_telehealth_consent(
            caller.session, text_version=payload["version"]
        )
        return ok(version=record.text_version, given_at=record.given_at)

    async def knock(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        participant = await self.services.waiting_room.get_in_line(caller.session)
        return ok(state=participant.state.value)

    async def leave(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        participant = await self.services.waiting_room.leave(caller.session)
        return ok(state=participant.state.value)

    # --- what a client may know ---------------------------------------------------------------

    async def snapshot(self, seat: Seat, session: BrowserSession) -> dict[str, Any]:
        """The client's own state and the room's doors: never who else waits or talks."""
        policy = seat.room.policy
        identity_required = await self.services.waiting_room.identity_needed(seat)
        consent_version = policy.telehealth_consent_version
        consent_given = False
        if consent_version is not None:
            consent_given = has_live_consent(
                await self.services.store.list_consents(seat.appointment.id),
                participant_id=seat.participant.id,
                session_id=seat.appointment.id,
                kind=ConsentKind.TELEHEALTH,
                version=consent_version,
            )
        return {
            "state": seat.participant.state.value,
            "identity": {
                "required": identity_required,
                "enrolled": await self.services.identity.is_enrolled(seat.participant.id),
                "verified": session.verified,
            },
            "telehealth_consent": {"version": consent_version, "given": consent_given},
            "host_present": seat.room.host_presence is HostPresence.PRESENT,
            "room_locked": seat.room.locked,
            "recording": await self._recording(seat),
        }

    async def _recording(self, seat: Seat) -> dict[str, Any]:
        """The client's own consent; whether the session is recorded only once admitted
        (a waiting client learns nothing of the session)."""
        recordings = self.services.recordings
        consent = await recordings.consent_of(seat.participant.id, seat.appointment.id)
        active = False
        if seat.participant.state in MEDIA_STATES:
            active = (await recordings.status(seat)).active
        return {"active": active, "consent_given": consent.given, "version": consent.version}


def _grace_key(participant_id: str) -> str:
    return f"client:{participant_id}"
