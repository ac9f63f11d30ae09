"""Domain events to sockets. The publishing process emits; python-socketio's manager
carries the emit to whichever process holds the socket (Redis when scaled out)."""

from __future__ import annotations

import logging

import socketio

from gateway.services import Event, EventKind, Services
from signaling.base import clients_room, host_room, participant_room

__all__ = ["SocketRelay"]

log = logging.getLogger(__name__)

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
