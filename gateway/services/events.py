"""Domain events, published in-process after a change has been stored.

The process that made a change publishes its event once; subscribers (Socket.IO
signaling, webhooks, metrics) react. Across processes, signaling relays what sockets
need through python-socketio's manager; webhooks are sent by the publishing process
only, so each event leaves the gateway once. Events carry ids only: never PHI.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

__all__ = ["Event", "EventBus", "EventKind", "Subscriber"]

log = logging.getLogger(__name__)


class EventKind(enum.StrEnum):
    PARTICIPANT_KNOCKING = "participant.knocking"
    PARTICIPANT_WAITING = "participant.waiting"
    PARTICIPANT_ADMITTED = "participant.admitted"
    PARTICIPANT_DENIED = "participant.denied"
    PARTICIPANT_JOINED = "participant.joined"
    PARTICIPANT_LEFT = "participant.left"
    PARTICIPANT_REMOVED = "participant.removed"
    PARTICIPANT_LOCKED_OUT = "participant.locked_out"
    HOST_PRESENT = "host.present"
    HOST_AWAY = "host.away"
    ROOM_LOCKED = "room.locked"
    ROOM_UNLOCKED = "room.unlocked"
    SESSION_ENDED = "session.ended"
    CONSENT_GIVEN = "consent.given"
    CONSENT_WITHDRAWN = "consent.withdrawn"
    RECORDING_STARTED = "recording.started"
    RECORDING_STOPPED = "recording.stopped"
    RECORDING_REFUSED = "recording.refused"


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    at: float
    appointment_id: str
    room_id: str
    #: The participant the event is about, when there is one.
    participant_id: str | None = None
    #: Further ids (never names or free text), e.g. {"recording": "rec_..."}.
    extra: dict[str, str] = field(default_factory=dict)


Subscriber = Callable[[Event], Awaitable[None]]


class EventBus:
    """Calls every subscriber for every event, in order; a failing subscriber is logged
    and does not stop the others or the publisher (the change is already stored)."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)

    async def publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                await subscriber(event)
            except Exception:  # one subscriber must not break the rest
                log.exception(
                    "event subscriber failed on %s",
                    event.kind.value,
                    extra={"appointment_id": event.appointment_id},
                )
