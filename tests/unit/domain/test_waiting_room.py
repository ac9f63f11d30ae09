"""The waiting room state machine: every illegal move raises with its state and event."""

from __future__ import annotations

import itertools

import pytest

from gateway.domain.waiting_room import (
    TRANSITIONS,
    HostPresence,
    ParticipantEvent,
    ParticipantState,
    RoomStatus,
    check_admission,
    check_identity_proven,
    check_knock,
    identity_needed,
    next_state,
    sources_of,
    target_of,
)
from gateway.errors import (
    GatewayError,
    HostAbsent,
    IllegalTransition,
    NotAllowed,
    RoomLocked,
    WaitingRoomError,
)

S = ParticipantState
E = ParticipantEvent
ROOM_ID = "room_AAAAAAAAAAAAAAAAAAAAAA"

ILLEGAL = [pair for pair in itertools.product(S, E) if pair not in TRANSITIONS]


def test_the_table_leaves_many_moves_illegal() -> None:
    # Guards the parametrisation below: it really covers the complement of the table.
    assert len(ILLEGAL) + len(TRANSITIONS) == len(S) * len(E)
    assert len(ILLEGAL) > 30


@pytest.mark.parametrize(("state", "event"), ILLEGAL, ids=[f"{s}-{e}" for s, e in ILLEGAL])
def test_every_move_outside_the_table_is_illegal(
    state: ParticipantState, event: ParticipantEvent
) -> None:
    with pytest.raises(IllegalTransition) as info:
        next_state(state, event)
    assert info.value.current == state.value
    assert info.value.event == event.value
    assert state.value in str(info.value)
    assert isinstance(info.value, WaitingRoomError)
    assert isinstance(info.value, GatewayError)
    assert info.value.code == "illegal_transition"


@pytest.mark.parametrize(
    ("state", "event"), list(TRANSITIONS), ids=[f"{s}-{e}" for s, e in TRANSITIONS]
)
def test_every_move_in_the_table_is_legal(state: ParticipantState, event: ParticipantEvent) -> None:
    assert next_state(state, event) is TRANSITIONS[(state, event)]


@pytest.mark.parametrize("terminal", [S.DENIED, S.REMOVED])
def test_denied_and_removed_are_terminal(terminal: ParticipantState) -> None:
    assert not [key for key in TRANSITIONS if key[0] is terminal]
    for event in E:
        with pytest.raises(IllegalTransition) as info:
            next_state(terminal, event)
        assert info.value.current == terminal.value
        assert terminal not in sources_of(event)


def test_nobody_is_admitted_without_waiting() -> None:
    assert sources_of(E.ADMIT) == {S.WAITING}
    assert sources_of(E.JOIN) == {S.ADMITTED}
    # Media (IN_SESSION) is reached only through ADMITTED.
    assert {src for (src, _), dst in TRANSITIONS.items() if dst is S.IN_SESSION} == {S.ADMITTED}
    assert {src for (src, _), dst in TRANSITIONS.items() if dst is S.ADMITTED} == {S.WAITING}


def test_invited_can_only_knock() -> None:
    assert [ev for (st, ev) in TRANSITIONS if st is S.INVITED] == [E.KNOCK]
    assert next_state(S.INVITED, E.KNOCK) is S.KNOCKING
    assert S.INVITED not in TRANSITIONS.values()


def test_a_whole_visit() -> None:
    state = S.INVITED
    for event in (E.KNOCK, E.WAIT, E.ADMIT, E.JOIN, E.LEAVE, E.KNOCK, E.WAIT, E.DENY):
        state = next_state(state, event)
    assert state is S.DENIED


@pytest.mark.parametrize("event", list(E))
def test_sources_of_matches_the_table(event: ParticipantEvent) -> None:
    expected = {state for (state, ev) in TRANSITIONS if ev is event}
    assert sources_of(event) == expected
    assert isinstance(sources_of(event), frozenset)
    for state in S:
        legal = (state, event) in TRANSITIONS
        assert (state in sources_of(event)) is legal


def test_sources_of_specific_events() -> None:
    assert sources_of(E.KNOCK) == {S.INVITED, S.LEFT, S.WAITING, S.ADMITTED, S.IN_SESSION}
    assert sources_of(E.WAIT) == {S.KNOCKING}
    assert sources_of(E.DENY) == {S.WAITING}
    assert sources_of(E.REMOVE) == {S.WAITING, S.ADMITTED, S.IN_SESSION}
    assert sources_of(E.LEAVE) == {S.KNOCKING, S.WAITING, S.ADMITTED, S.IN_SESSION}


@pytest.mark.parametrize("event", list(E))
def test_each_event_leads_to_one_state(event: ParticipantEvent) -> None:
    targets = {dst for (_, ev), dst in TRANSITIONS.items() if ev is event}
    assert targets == {target_of(event)}


def test_every_event_is_used() -> None:
    assert all(sources_of(event) for event in E)


# --- room checks -------------------------------------------------------------------------------


def test_knock_on_a_locked_room_is_refused() -> None:
    room = RoomStatus(room_id=ROOM_ID, host_presence=HostPresence.PRESENT, locked=True)
    with pytest.raises(RoomLocked) as info:
        check_knock(room)
    assert info.value.room_id == ROOM_ID
    assert info.value.code == "room_locked"
    assert isinstance(info.value, WaitingRoomError)


@pytest.mark.parametrize("presence", list(HostPresence))
def test_knock_on_an_open_room_is_allowed_with_or_without_host(presence: HostPresence) -> None:
    check_knock(RoomStatus(room_id=ROOM_ID, host_presence=presence, locked=False))


def test_admission_without_host_is_refused() -> None:
    room = RoomStatus(room_id=ROOM_ID, host_presence=HostPresence.AWAY, locked=False)
    with pytest.raises(HostAbsent) as info:
        check_admission(room)
    assert info.value.room_id == ROOM_ID
    assert info.value.code == "host_absent"
    assert isinstance(info.value, WaitingRoomError)


def test_admission_without_host_is_refused_in_a_locked_room_too() -> None:
    with pytest.raises(HostAbsent):
        check_admission(RoomStatus(room_id=ROOM_ID, host_presence=HostPresence.AWAY, locked=True))


@pytest.mark.parametrize("locked", [False, True])
def test_admission_with_host_present_is_allowed(locked: bool) -> None:
    # A locked room stops new knocks, not the admission of those already waiting.
    check_admission(RoomStatus(room_id=ROOM_ID, host_presence=HostPresence.PRESENT, locked=locked))


def test_identity_is_asked_of_hosts_always_and_of_clients_where_the_room_says() -> None:
    assert identity_needed(host=True, client_totp_required=False)
    assert identity_needed(host=False, client_totp_required=True)
    assert not identity_needed(host=False, client_totp_required=False)


def test_only_a_proven_identity_passes_where_one_is_needed() -> None:
    with pytest.raises(NotAllowed, match="prove your identity"):
        check_identity_proven(needed=True, verified=False)
    check_identity_proven(needed=True, verified=True)
    check_identity_proven(needed=False, verified=False)
