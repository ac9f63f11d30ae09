"""Records: display names are cleaned or refused; every record survives a JSON round trip."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.model import (
    MAX_DISPLAY_NAME,
    Appointment,
    BrowserSession,
    Host,
    Participant,
    Role,
    Room,
    RoomPolicy,
    clean_display_name,
)
from gateway.domain.waiting_room import HostPresence, ParticipantState

# --- display names: refusals first -------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="spaces"),
        pytest.param("\t\n \r", id="whitespace"),
        pytest.param("x" * (MAX_DISPLAY_NAME + 1), id="81-chars"),
        pytest.param("x" * 10_000, id="huge"),
        pytest.param("Jane\x00Doe", id="nul"),
        pytest.param("Jane\x07", id="bell"),
        pytest.param("\x1b[31mJane", id="ansi-escape"),
        pytest.param("Jane\x7f", id="del"),
        pytest.param("Jane\x9b", id="c1-csi"),
        pytest.param("Jane\u202eeoD", id="bidi-override"),
        pytest.param("Ja\u200bne", id="zero-width-space"),
        pytest.param("Jane\ufeff", id="bom"),
        pytest.param("Jane\ud800", id="lone-surrogate"),
    ],
)
def test_display_name_refuses_bad_text(value: str) -> None:
    with pytest.raises(ValueError, match="display name"):
        clean_display_name(value)


@pytest.mark.parametrize("value", [None, 42, b"Jane", ["Jane"], {"name": "Jane"}])
def test_display_name_refuses_non_text(value: object) -> None:
    with pytest.raises(ValueError, match="display name is text"):
        clean_display_name(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Jane", "Jane"),
        ("  Jane   Doe  ", "Jane Doe"),
        ("Jane\tDoe", "Jane Doe"),
        ("Jane\n\nDoe\r\n", "Jane Doe"),
        ("Jane\u00a0Doe", "Jane Doe"),
        ('<b>Jane</b> & "Co"', '<b>Jane</b> & "Co"'),
        ("<script>alert(1)</script>", "<script>alert(1)</script>"),
        ("Zoë Łukasz 山田", "Zoë Łukasz 山田"),
        ("x" * MAX_DISPLAY_NAME, "x" * MAX_DISPLAY_NAME),
        ("  " + "x" * MAX_DISPLAY_NAME + "  ", "x" * MAX_DISPLAY_NAME),
    ],
)
def test_display_name_is_trimmed_and_kept_as_text(value: str, expected: str) -> None:
    assert clean_display_name(value) == expected


def test_length_is_counted_after_collapsing() -> None:
    assert clean_display_name("a" + " " * 200 + "b") == "a b"


@given(st.text(max_size=200))
def test_a_clean_name_is_always_printable_trimmed_and_short(value: str) -> None:
    try:
        name = clean_display_name(value)
    except ValueError:
        return
    assert 1 <= len(name) <= MAX_DISPLAY_NAME
    assert name.isprintable()
    assert name == name.strip()
    assert "  " not in name
    assert clean_display_name(name) == name  # cleaning twice changes nothing


# --- records round trip ---------------------------------------------------------------------------

T0 = 1_800_000_000.0

RECORDS: list[Any] = [
    Host(id="host_AAAAAAAAAAAAAAAAAAAAAA", display_name="Dr. Quiet", created_at=T0),
    RoomPolicy(),
    RoomPolicy(
        client_totp_required=False,
        relay_only=True,
        recording_allowed=True,
        telehealth_consent_version="tele-v3",
    ),
    Room(
        id="room_AAAAAAAAAAAAAAAAAAAAAA",
        host_id="host_AAAAAAAAAAAAAAAAAAAAAA",
        policy=RoomPolicy(recording_allowed=True, telehealth_consent_version="v1"),
        created_at=T0,
        locked=True,
        host_presence=HostPresence.PRESENT,
    ),
    Room(
        id="room_BBBBBBBBBBBBBBBBBBBBBB",
        host_id="host_AAAAAAAAAAAAAAAAAAAAAA",
        policy=RoomPolicy(),
        created_at=T0,
    ),
    Appointment(
        id="apt_AAAAAAAAAAAAAAAAAAAAAA", room_id="room_AAAAAAAAAAAAAAAAAAAAAA", created_at=T0
    ),
    Appointment(
        id="apt_BBBBBBBBBBBBBBBBBBBBBB",
        room_id="room_AAAAAAAAAAAAAAAAAAAAAA",
        created_at=T0,
        ended_at=T0 + 3000.5,
    ),
    *[
        Participant(
            id="par_AAAAAAAAAAAAAAAAAAAAAA",
            appointment_id="apt_AAAAAAAAAAAAAAAAAAAAAA",
            role=role,
            display_name="<b>Jane</b>",
            state=state,
            state_since=T0 + 12.25,
            created_at=T0,
        )
        for role, state in zip([Role.CLIENT, Role.HOST] * 4, list(ParticipantState), strict=True)
    ],
    BrowserSession(
        participant_id="par_AAAAAAAAAAAAAAAAAAAAAA",
        appointment_id="apt_AAAAAAAAAAAAAAAAAAAAAA",
        role=Role.HOST,
        created_at=T0,
        expires_at=T0 + 8 * 3600,
        verified=True,
    ),
    BrowserSession(
        participant_id="par_BBBBBBBBBBBBBBBBBBBBBB",
        appointment_id="apt_AAAAAAAAAAAAAAAAAAAAAA",
        role=Role.CLIENT,
        created_at=T0,
        expires_at=T0 + 3600,
    ),
]


def test_every_record_type_is_covered() -> None:
    assert {type(r) for r in RECORDS} == {
        Host,
        RoomPolicy,
        Room,
        Appointment,
        Participant,
        BrowserSession,
    }


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_record_round_trips_through_json(record: Any) -> None:
    data = json.loads(json.dumps(record.to_dict()))
    restored = type(record).from_dict(data)
    assert restored == record
    # Enums come back as enums, not bare strings.
    for f in dataclasses.fields(record):
        assert type(getattr(restored, f.name)) is type(getattr(record, f.name)), f.name


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_to_dict_is_plain_json(record: Any) -> None:
    data = record.to_dict()
    assert set(data) == {f.name for f in dataclasses.fields(record)}

    # Plain JSON types only: exact types, so an enum left in would show.
    def plain(value: Any) -> bool:
        if isinstance(value, dict):
            return all(type(k) is str and plain(v) for k, v in value.items())
        return value is None or type(value) in (str, int, float, bool)

    assert plain(data)


def test_from_dict_ignores_unknown_keys() -> None:
    host = RECORDS[0]
    assert Host.from_dict({**host.to_dict(), "extra": 1}) == host


def test_room_from_dict_defaults() -> None:
    room = Room.from_dict({"id": "room_1", "host_id": "host_1", "policy": {}, "created_at": 5})
    assert room == Room(id="room_1", host_id="host_1", policy=RoomPolicy(), created_at=5.0)
    assert room.host_presence is HostPresence.AWAY
    assert room.locked is False


@pytest.mark.parametrize(
    ("record_type", "data"),
    [
        (Participant, {**RECORDS[7].to_dict(), "state": "teleported"}),
        (Participant, {**RECORDS[7].to_dict(), "role": "admin"}),
        (BrowserSession, {**RECORDS[-1].to_dict(), "role": "admin"}),
        (Room, {**RECORDS[3].to_dict(), "host_presence": "maybe"}),
    ],
)
def test_from_dict_refuses_unknown_enum_values(record_type: Any, data: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the enum's own error
        record_type.from_dict(data)


@pytest.mark.parametrize(
    ("record_type", "data"),
    [
        (Host, {"id": "host_1", "display_name": "x"}),
        (Room, {"id": "room_1", "host_id": "host_1", "created_at": 1.0}),
        (Participant, {"id": "par_1"}),
        (BrowserSession, {"participant_id": "par_1"}),
    ],
)
def test_from_dict_refuses_missing_fields(record_type: Any, data: dict[str, Any]) -> None:
    with pytest.raises((KeyError, TypeError)):
        record_type.from_dict(data)


def test_records_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECORDS[0].display_name = "x"


def test_role_values() -> None:
    assert [r.value for r in Role] == ["host", "client"]
