"""Media negotiation over the socket, the same on /client and /host.

Who may have media is decided here, from the store and never from the payload: an
admitted (or in-session) client, or the signed-in host, of a session that has not ended.
The check runs before a peer exists, and again once the answer is ready, because the
host may deny or remove someone (or end the session) while their offer is being answered.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway.clock import Clock
from gateway.domain.model import Role
from gateway.domain.waiting_room import ParticipantState
from gateway.errors import NotAllowed
from gateway.media.reasons import MediaCloseReason
from gateway.media.routing import MediaRouter
from gateway.services import Event, EventKind, Seat, Services
from gateway.settings import Settings
from signaling.base import Caller, Handler
from signaling.errors import ok
from signaling.validation import NO_PAYLOAD, Field, Schema
from turn import TurnCredentials, ice_servers

__all__ = ["MEDIA_STATES", "MediaCloser", "MediaHandlers"]

log = logging.getLogger(__name__)

#: The client states in which media flows.
MEDIA_STATES = frozenset({ParticipantState.ADMITTED, ParticipantState.IN_SESSION})

MAX_SDP_CHARS = 64 * 1024
MAX_CANDIDATE_CHARS = 512

_OFFER = Schema({"type": Field(str, 16), "sdp": Field(str, MAX_SDP_CHARS)})
_CANDIDATE = Schema(
    {
        "candidate": Field(str, MAX_CANDIDATE_CHARS),
        "sdpMid": Field(str, 32),
        "sdpMLineIndex": Field(int),
    }
)


class MediaHandlers:
    """``media.config``, ``media.offer`` and ``media.candidate`` for one namespace."""

    def __init__(
        self,
        *,
        services: Services,
        settings: Settings,
        clock: Clock,
        router: MediaRouter,
        role: Role,
    ) -> None:
        self._services = services
        self._settings = settings
        self._router = router
        self._role = role
        self._turn = TurnCredentials.from_settings(settings, clock=clock)

    def handlers(self) -> dict[str, tuple[Schema, Handler]]:
        return {
            "media.config": (NO_PAYLOAD, self.config),
            "media.offer": (_OFFER, self.offer),
            "media.candidate": (_CANDIDATE, self.candidate),
        }

    async def config(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        """The ICE servers (TURN credentials for this participant) and transport policy."""
        seat = await self._allowed(caller)
        servers = ice_servers(
            self._settings.turn_urls,
            self._turn,
            participant_id=caller.participant_id,
            relay_only=seat.room.policy.relay_only,
        )
        return ok(**servers)

    async def offer(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        """The gateway's answer to the browser's offer; a new offer starts media afresh."""
        await self._allowed(caller)
        answer = await self._router.answer(
            session_id=caller.appointment_id,
            participant_id=caller.participant_id,
            sdp=payload["sdp"],
            sdp_type=payload["type"],
            featured=self._role is Role.HOST,
        )
        try:
            await self._allowed(caller)
        except NotAllowed:
            # Denied, removed or ended while the answer was being made.
            await self._router.close_participant(
                session_id=caller.appointment_id,
                participant_id=caller.participant_id,
                reason=MediaCloseReason.LEFT,
            )
            raise
        log.info("media answered", extra={"participant_id": caller.participant_id})
        return ok(type="answer", sdp=answer)

    async def candidate(self, caller: Caller, payload: dict[str, Any]) -> dict[str, Any]:
        """A trickled ICE candidate from the browser (an empty one ends the trickle)."""
        await self._allowed(caller)
        if not payload["candidate"]:
            return ok(accepted=True)
        accepted = await self._router.add_candidate(
            session_id=caller.appointment_id,
            participant_id=caller.participant_id,
            candidate=payload["candidate"],
            sdp_mid=payload["sdpMid"],
            sdp_mline_index=payload["sdpMLineIndex"],
        )
        return ok(accepted=accepted)

    async def _allowed(self, caller: Caller) -> Seat:
        seat = await self._services.waiting_room.seat_of(caller.session)
        if seat.appointment.ended_at is not None:
            raise NotAllowed("the session has ended")
        if self._role is Role.CLIENT and seat.participant.state not in MEDIA_STATES:
            raise NotAllowed("media needs admission")
        return seat


#: A participant event after which that participant's media must stop.
_CLOSE_ON: dict[EventKind, MediaCloseReason] = {
    EventKind.PARTICIPANT_DENIED: MediaCloseReason.DENIED,
    EventKind.PARTICIPANT_REMOVED: MediaCloseReason.REMOVED,
    EventKind.PARTICIPANT_LEFT: MediaCloseReason.LEFT,
    # Back in the waiting room: a new device took over the link, or the grace ran out.
    EventKind.PARTICIPANT_KNOCKING: MediaCloseReason.SESSION_REPLACED,
    EventKind.PARTICIPANT_WAITING: MediaCloseReason.SESSION_REPLACED,
}


class MediaCloser:
    """Closes media when the waiting room says so (an :class:`EventBus` subscriber)."""

    def __init__(self, router: MediaRouter) -> None:
        self._router = router

    async def __call__(self, event: Event) -> None:
        session_id = event.appointment_id
        if event.kind is EventKind.SESSION_ENDED:
            await self._router.close_session(
                session_id=session_id, reason=MediaCloseReason.SESSION_ENDED
            )
            return
        reason = _CLOSE_ON.get(event.kind)
        if reason is not None and event.participant_id is not None:
            await self._router.close_participant(
                session_id=session_id, participant_id=event.participant_id, reason=reason
            )
