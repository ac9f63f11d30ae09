"""The /host namespace: the therapist's live queue and every action on it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from gateway.clock import Clock
from gateway.domain.model import Role
from gateway.errors import GatewayError
from gateway.media.routing import MediaRouter
from gateway.services import Services
from gateway.settings import Settings
from signaling.base import Caller, GatewayNamespace, Grace, host_room, participant_room
from signaling.errors import ok, refusal
from signaling.media import MediaHandlers
from signaling.recording import RecordingHandlers
from signaling.timers import GraceTimers
from signaling.validation import NO_PAYLOAD, Field, Schema

__all__ = ["HostNamespace"]

log = logging.getLogger(__name__)

_ONE_PARTICIPANT = Schema({"participant_id": Field(str, 64)})


class HostNamespace(GatewayNamespace):
    role = Role.HOST

    def __init__(
        self,
        *,
        services: Services,
        settings: Settings,
        clock: Clock,
        timers: GraceTimers,
        media: MediaRouter,
    ) -> None:
        super().__init__("/host", services=services, settings=settings, clock=clock)
        self.timers = timers
        self.handlers = {
            "queue": (NO_PAYLOAD, self.queue),
            "admit": (_ONE_PARTICIPANT, self.admit),
            "admit_all": (NO_PAYLOAD, self.admit_all),
            "deny": (_ONE_PARTICIPANT, self.deny),
            "remove": (_ONE_PARTICIPANT, self.remove),
            "message": (
                Schema({"participant_id": Field(str, 64), "text": Field(str, 1000)}),
                self.message,
            ),
            "lock": (Schema({"locked": Field(bool)}), self.lock),
            "end": (NO_PAYLOAD, self.end),
            **MediaHandlers(
                services=services, settings=settings, clock=clock, router=media, role=Role.HOST
            ).handlers(),
            **RecordingHandlers(services=services, role=Role.HOST, emit=self.emit).handlers(),
        }

    async def on_connect(self, sid: str, environ: Mapping[str, Any], auth: object = None) -> None:
        session_hash, session = await self.authenticate(environ)
        if not session.verified:
            raise refusal("not_signed_in")
        try:
            await self.services.store.change_connections(session.participant_id, 1)
            self.timers.cancel(_away_key(session.participant_id))
            await self.services.waiting_room.host_arrived(session)
        except GatewayError as exc:
            raise refusal(exc.code) from None
        await self.remember(sid, session_hash, session)
        await self.enter_room(sid, host_room(session.appointment_id))
        log.info("host connected", extra={"participant_id": session.participant_id})

    def after_last_connection(self, participant_id: str) -> Grace:
        # Clients see "host away" only if the host is not back soon (a page reload).
        return Grace(
            key=_away_key(participant_id),
            delay=self.settings.host_away_grace,
            action=lambda: self.services.waiting_room.host_gone(participant_id),
        )

    # --- events ----------------------------------------------------------------------------

    async def queue(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        entries = await self.services.waiting_room.queue(caller.session)
        # The room's lock too: a console opened afresh must show it.
        seat = await self.services.waiting_room.seat_of(caller.session)
        recordings = self.services.recordings
        recording = await recordings.status(seat)
        # The host's own consent too: a console opened afresh must be able to withdraw it.
        consent = await recordings.consent_of(seat.participant.id, seat.appointment.id)
        return ok(
            participants=[entry.to_dict() for entry in entries],
            locked=seat.room.locked,
            recording={
                "active": recording.active,
                "allowed": recording.allowed,
                "consent_given": consent.given,
                "version": consent.version,
            },
        )

    async def admit(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        participant = await self.services.waiting_room.admit(
            caller.session, payload["participant_id"]
        )
        return ok(participant_id=participant.id, state=participant.state.value)

    async def admit_all(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        admitted = await self.services.waiting_room.admit_all(caller.session)
        return ok(admitted=[p.id for p in admitted])

    async def deny(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        participant = await self.services.waiting_room.deny(
            caller.session, payload["participant_id"]
        )
        return ok(participant_id=participant.id, state=participant.state.value)

    async def remove(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        participant = await self.services.waiting_room.remove(
            caller.session, payload["participant_id"]
        )
        return ok(participant_id=participant.id, state=participant.state.value)

    async def message(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        text = await self.services.waiting_room.message(
            caller.session, payload["participant_id"], payload["text"]
        )
        await self.emit(
            "message",
            {"text": text},
            to=participant_room(payload["participant_id"]),
            namespace="/client",
        )
        return ok()

    async def lock(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        room = await self.services.waiting_room.set_locked(caller.session, payload["locked"])
        return ok(locked=room.locked)

    async def end(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        appointment = await self.services.waiting_room.end_by_host(caller.session)
        return ok(ended_at=appointment.ended_at)


def _away_key(participant_id: str) -> str:
    return f"host:{participant_id}"
