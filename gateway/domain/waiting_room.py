"""The waiting room as data: participant states, events, and the legal moves.

A client knocks, waits, is admitted by a host, joins the session and leaves. Every move
is a row in ``TRANSITIONS``; anything else raises :class:`IllegalTransition` with the
current state. The store applies a move as one compare-and-set, using
:func:`sources_of` to know which states the move may start from.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errors import HostAbsent, IllegalTransition, InvalidInput, NotAllowed, RoomLocked

__all__ = [
    "MAX_HOST_MESSAGE",
    "TRANSITIONS",
    "HostPresence",
    "ParticipantEvent",
    "ParticipantState",
    "RoomCondition",
    "RoomStatus",
    "check_admission",
    "check_identity_proven",
    "check_knock",
    "clean_host_message",
    "identity_needed",
    "next_state",
    "sources_of",
    "target_of",
]


class ParticipantState(enum.StrEnum):
    INVITED = "invited"  # a link exists; nobody has knocked yet
    KNOCKING = "knocking"  # link redeemed; identity or consent still to do
    WAITING = "waiting"  # ready, in the queue the host sees
    ADMITTED = "admitted"  # let in; may negotiate media
    IN_SESSION = "in_session"  # media flowing
    LEFT = "left"
    DENIED = "denied"
    REMOVED = "removed"


class ParticipantEvent(enum.StrEnum):
    KNOCK = "knock"  # redeem a link, or come back from another device
    WAIT = "wait"  # identity and consent done: join the queue
    ADMIT = "admit"
    DENY = "deny"
    JOIN = "join"  # media connected
    LEAVE = "leave"
    REMOVE = "remove"


class HostPresence(enum.StrEnum):
    PRESENT = "present"
    AWAY = "away"


S = ParticipantState
E = ParticipantEvent

#: (state, event) -> next state. Anything absent is illegal.
TRANSITIONS: Mapping[tuple[ParticipantState, ParticipantEvent], ParticipantState] = {
    (S.INVITED, E.KNOCK): S.KNOCKING,
    # A new link redeemed on another device, or a return after the grace period: the
    # participant proves identity and waits again. (A drop within the grace period on
    # the same device is no move at all: the state is kept while the session lives.)
    (S.LEFT, E.KNOCK): S.KNOCKING,
    (S.WAITING, E.KNOCK): S.KNOCKING,
    (S.ADMITTED, E.KNOCK): S.KNOCKING,
    (S.IN_SESSION, E.KNOCK): S.KNOCKING,
    (S.KNOCKING, E.WAIT): S.WAITING,
    (S.KNOCKING, E.LEAVE): S.LEFT,
    (S.WAITING, E.ADMIT): S.ADMITTED,
    (S.WAITING, E.DENY): S.DENIED,
    (S.WAITING, E.LEAVE): S.LEFT,
    (S.WAITING, E.REMOVE): S.REMOVED,
    (S.ADMITTED, E.JOIN): S.IN_SESSION,
    (S.ADMITTED, E.LEAVE): S.LEFT,
    (S.ADMITTED, E.REMOVE): S.REMOVED,
    (S.IN_SESSION, E.LEAVE): S.LEFT,
    (S.IN_SESSION, E.REMOVE): S.REMOVED,
}

_SOURCES: dict[ParticipantEvent, frozenset[ParticipantState]] = {
    event: frozenset(state for (state, ev) in TRANSITIONS if ev is event) for event in E
}


_TARGETS: dict[ParticipantEvent, ParticipantState] = {ev: to for (_, ev), to in TRANSITIONS.items()}
# Each event leads to one state whatever it starts from, so a move is one compare-and-set.
assert all(TRANSITIONS[key] is _TARGETS[key[1]] for key in TRANSITIONS)


def next_state(current: ParticipantState, event: ParticipantEvent) -> ParticipantState:
    """The state after ``event``, or :class:`IllegalTransition`."""
    try:
        return TRANSITIONS[(current, event)]
    except KeyError:
        raise IllegalTransition(current=current.value, event=event.value) from None


def sources_of(event: ParticipantEvent) -> frozenset[ParticipantState]:
    """Every state from which ``event`` is legal."""
    return _SOURCES[event]


def target_of(event: ParticipantEvent) -> ParticipantState:
    """The one state ``event`` leads to, from whichever legal state."""
    return _TARGETS[event]


@dataclass(frozen=True, slots=True)
class RoomStatus:
    room_id: str
    host_presence: HostPresence
    locked: bool


def identity_needed(*, host: bool, client_totp_required: bool) -> bool:
    """A host always proves who they are with a sign-in code; a client where the room
    asks for one."""
    return host or client_totp_required


def check_identity_proven(*, needed: bool, verified: bool) -> None:
    """Knocking and consenting are for a proven identity, where one is asked for: not for
    whoever holds the link."""
    if needed and not verified:
        raise NotAllowed("prove your identity first")


def check_knock(room: RoomStatus) -> None:
    """A knock is refused while the room is locked."""
    if room.locked:
        raise RoomLocked(room_id=room.room_id)


def check_admission(room: RoomStatus) -> None:
    """Nobody is admitted without a host present."""
    if room.host_presence is not HostPresence.PRESENT:
        raise HostAbsent(room_id=room.room_id)


@dataclass(frozen=True, slots=True)
class RoomCondition:
    """What must hold of the room at the moment a participant moves: the store checks
    it in the same atomic step as the move, so a lock or a host leaving cannot slip in
    between a check and the move."""

    room_id: str
    #: Refuse with RoomLocked while the room is locked (a knock).
    unlocked: bool = False
    #: Refuse with HostAbsent unless the host is present (an admission).
    host_present: bool = False

    def check(self, room: RoomStatus) -> None:
        if self.unlocked:
            check_knock(room)
        if self.host_present:
            check_admission(room)


MAX_HOST_MESSAGE = 280


def clean_host_message(text: object) -> str:
    """A short message from the host to a waiting client: 1 to 280 printable characters."""
    if not isinstance(text, str):
        raise InvalidInput("a message is text", field="text")
    message = " ".join(text.split())
    if not message or len(message) > MAX_HOST_MESSAGE or not message.isprintable():
        raise InvalidInput(
            f"a message is 1 to {MAX_HOST_MESSAGE} printable characters", field="text"
        )
    return message
