"""Domain events to sockets. The publishing process emits; python-socketio's manager
carries the emit to whichever process holds the socket (Redis when scaled out)."""

from __future__ import annotations

import logging

import socketio

from gateway.domain.model import Role
from gateway.domain.waiting_room import ParticipantState
from gateway.services import Event, EventKind, Services
from signaling.base import clients_room, host_room, participant_room

__all__ = ["SocketRelay"]

log = logging.getLogger(__name__)

_IN_SESSION = frozenset({ParticipantState.ADMITTED, ParticipantState.IN_SESSION})
_CONSENT = frozenset({EventKind.CONSENT_GIVEN, EventKind.CONSENT_WITHDRAWN})

#: The client hears these about itself, by name.
_TO_CLIENT = {
    EventKind.PARTICIPANT_ADMITTED: "admitted",
    EventKind.PARTICIPANT_DENIED: "denied",
    EventKind.PARTICIPANT_REMOVED: "removed",
}


class SocketRelay:
    def __init__(self, *, sio: socketio.AsyncServer, services: Services) -> None:
        self._sio = sio
        self._services = services

    async def __call__(self, event: Event) -> None:
        apt = event.appointment_id
        kind = event.kind
        if kind.value.startswith("participant."):
            if event.participant_id is not None:
                await self._tell_both(event)
            if kind is EventKind.PARTICIPANT_LOCKED_OUT:
                await self._sio.emit(
                    "notice",
                    {"kind": "locked_out", "participant_id": event.participant_id},
                    to=host_room(apt),
                    namespace="/host",
                )
            if kind is EventKind.PARTICIPANT_ADMITTED and event.participant_id is not None:
                await self._tell_recording(event.participant_id, apt)
        elif kind in (EventKind.HOST_PRESENT, EventKind.HOST_AWAY):
            await self._sio.emit(
                "host",
                {"present": kind is EventKind.HOST_PRESENT},
                to=clients_room(apt),
                namespace="/client",
            )
        elif kind in (EventKind.ROOM_LOCKED, EventKind.ROOM_UNLOCKED):
            locked = {"locked": kind is EventKind.ROOM_LOCKED}
            await self._sio.emit("room", locked, to=host_room(apt), namespace="/host")
            await self._sio.emit("room", locked, to=clients_room(apt), namespace="/client")
        elif kind is EventKind.SESSION_ENDED:
            await self._sio.emit("ended", {}, to=clients_room(apt), namespace="/client")
            await self._sio.emit("ended", {}, to=host_room(apt), namespace="/host")
        elif kind in (EventKind.RECORDING_STARTED, EventKind.RECORDING_STOPPED):
            await self._recording_changed(apt, active=kind is EventKind.RECORDING_STARTED)
        elif kind in _CONSENT and event.extra.get("kind") == "recording":
            await self._tell_consent(event)

    async def _recording_changed(self, apt: str, *, active: bool) -> None:
        """Everyone in the session sees whether it is recorded (waiting clients do not
        learn that a session is going on)."""
        payload = {"active": active}
        await self._sio.emit("recording", payload, to=host_room(apt), namespace="/host")
        for participant in await self._services.store.list_participants(apt):
            if participant.role is Role.CLIENT and participant.state in _IN_SESSION:
                await self._sio.emit(
                    "recording", payload, to=participant_room(participant.id), namespace="/client"
                )

    async def _tell_recording(self, participant_id: str, apt: str) -> None:
        """A client admitted into a session that is being recorded is told so."""
        recording = await self._services.store.active_recording(apt)
        if recording is not None:
            room = participant_room(participant_id)
            await self._sio.emit("recording", {"active": True}, to=room, namespace="/client")

    async def _tell_consent(self, event: Event) -> None:
        """The host's row of a client shows whether they agreed to recording."""
        if event.participant_id is None:
            return
        entry = await self._services.waiting_room.queue_entry(event.participant_id)
        if entry is not None:
            host = host_room(event.appointment_id)
            await self._sio.emit("participant", entry.to_dict(), to=host, namespace="/host")

    async def _tell_both(self, event: Event) -> None:
        """The client hears its own new state; the host gets that one queue row (a delta:
        the full queue is sent only when asked, so a big room costs O(1) per change)."""
        assert event.participant_id is not None
        entry = await self._services.waiting_room.queue_entry(event.participant_id)
        if entry is None:
            return
        room = participant_room(entry.participant_id)
        await self._sio.emit("state", {"state": entry.state.value}, to=room, namespace="/client")
        name = _TO_CLIENT.get(event.kind)
        if name is not None:
            await self._sio.emit(name, {}, to=room, namespace="/client")
        await self._sio.emit(
            "participant", entry.to_dict(), to=host_room(event.appointment_id), namespace="/host"
        )
