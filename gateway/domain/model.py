"""The records the gateway keeps: hosts, rooms, appointments, participants, sessions.

Plain frozen dataclasses with a JSON-friendly ``to_dict`` / ``from_dict``. Display names
are PHI: they live here and in pages the participant's own host sees, never in ids,
tokens, logs, URLs or webhooks.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, fields
from typing import Any, Self

from gateway.domain.waiting_room import HostPresence, ParticipantState

__all__ = [
    "MAX_DISPLAY_NAME",
    "Appointment",
    "BrowserSession",
    "Host",
    "Participant",
    "Platform",
    "Role",
    "Room",
    "RoomPolicy",
    "clean_display_name",
]

MAX_DISPLAY_NAME = 80


class Role(enum.StrEnum):
    HOST = "host"
    CLIENT = "client"


def clean_display_name(value: object) -> str:
    """A display name fit to store: printable text, trimmed, at most 80 characters.

    Markup is kept as text (escaping is the page's job) but control characters,
    empty names and overlong names are refused.
    """
    if not isinstance(value, str):
        raise ValueError("a display name is text")
    name = " ".join(value.split())
    if not name or len(name) > MAX_DISPLAY_NAME or not name.isprintable():
        raise ValueError(f"a display name is 1 to {MAX_DISPLAY_NAME} printable characters")
    return name


class _Record:
    """JSON round trip for the frozen dataclasses below."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)
class Platform(_Record):
    """A practice-management system or clinic portal that drives the gateway by API."""

    id: str
    #: The platform's own name (an organisation, not a person).
    name: str
    created_at: float
    #: Where webhooks go; None sends none.
    webhook_url: str | None = None


@dataclass(frozen=True, slots=True)
class Host(_Record):
    id: str
    display_name: str
    created_at: float
    #: The platform that created the host; every room and appointment under it is its.
    platform_id: str = ""


@dataclass(frozen=True, slots=True)
class RoomPolicy(_Record):
    client_totp_required: bool = True
    relay_only: bool = False
    recording_allowed: bool = False
    #: The version of the informed-consent-to-telehealth text a client must accept
    #: before knocking; None when the room does not ask for it.
    telehealth_consent_version: str | None = None


@dataclass(frozen=True, slots=True)
class Room(_Record):
    id: str
    host_id: str
    policy: RoomPolicy
    created_at: float
    locked: bool = False
    host_presence: HostPresence = HostPresence.AWAY

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["host_presence"] = self.host_presence.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(
            id=data["id"],
            host_id=data["host_id"],
            policy=RoomPolicy.from_dict(dict(data["policy"])),
            created_at=float(data["created_at"]),
            locked=bool(data.get("locked", False)),
            host_presence=HostPresence(data.get("host_presence", HostPresence.AWAY)),
        )


@dataclass(frozen=True, slots=True)
class Appointment(_Record):
    id: str
    room_id: str
    created_at: float
    ended_at: float | None = None


@dataclass(frozen=True, slots=True)
class Participant(_Record):
    id: str
    appointment_id: str
    role: Role
    display_name: str
    state: ParticipantState
    #: When the state last changed; for a waiting client this is "waiting since".
    state_since: float
    created_at: float
    #: When the participant last proved identity with TOTP; None if never.
    verified_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["role"] = self.role.value
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(
            id=data["id"],
            appointment_id=data["appointment_id"],
            role=Role(data["role"]),
            display_name=data["display_name"],
            state=ParticipantState(data["state"]),
            state_since=float(data["state_since"]),
            created_at=float(data["created_at"]),
            verified_at=None if data.get("verified_at") is None else float(data["verified_at"]),
        )


@dataclass(frozen=True, slots=True)
class BrowserSession(_Record):
    """What a session cookie stands for, kept server-side under the cookie's hash."""

    participant_id: str
    appointment_id: str
    role: Role
    created_at: float
    #: Absolute end of life, whatever the activity.
    expires_at: float
    #: TOTP verified in this browser session (identity proven).
    verified: bool = False
    #: Last activity, for the host's idle timeout; 0 means "at creation".
    last_seen: float = 0.0

    def idle_since(self) -> float:
        return self.last_seen or self.created_at

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["role"] = self.role.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        return cls(
            participant_id=data["participant_id"],
            appointment_id=data["appointment_id"],
            role=Role(data["role"]),
            created_at=float(data["created_at"]),
            expires_at=float(data["expires_at"]),
            verified=bool(data.get("verified", False)),
            last_seen=float(data.get("last_seen", 0.0)),
        )
