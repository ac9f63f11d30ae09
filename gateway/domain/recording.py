"""Recordings as records: the consent text people agree to, who is recorded, why a
recording stopped, and which consents it rests on.

A recording runs only while :func:`~gateway.domain.consent.may_record` allows it for the
people in the session (:func:`recording_audience`). When it stops, its record keeps the
SHA-256 of the sealed file and the consent records that covered it, so the two can be
matched later: the file by its hash, each consent by participant, text version and time.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from gateway.domain.consent import ConsentKind, ConsentRecord
from gateway.domain.model import Participant, Role
from gateway.domain.waiting_room import ParticipantState

__all__ = [
    "RECORDING_CONSENT",
    "ConsentLink",
    "ConsentText",
    "Recording",
    "SealedFile",
    "StopReason",
    "consents_covering",
    "recording_audience",
    "recording_file_name",
]


@dataclass(frozen=True, slots=True)
class ConsentText:
    """A consent text and the version people agree to (kept with their consent)."""

    version: str
    text: str


#: The built-in recording consent text. Change the words only with a new version: a
#: consent record names the version its person was shown.
RECORDING_CONSENT = ConsentText(
    version="recording-2026-1",
    text=(
        "Your therapist would like to record this session.\n\n"
        "The recording holds the video and sound of the session. It is encrypted as it "
        "is made and kept only for your care. It is not shared without your permission, "
        "except where the law requires.\n\n"
        "Recording starts only if everyone in the session agrees. You can withdraw your "
        "consent at any moment; the recording then stops at once. Saying no does not "
        "change your care."
    ),
)

#: The client states in which someone is part of the session (and its recording).
_IN_SESSION = frozenset({ParticipantState.ADMITTED, ParticipantState.IN_SESSION})


class StopReason(enum.StrEnum):
    """Why a recording stopped."""

    HOST = "host"  # the host stopped it
    CONSENT_WITHDRAWN = "consent_withdrawn"
    PARTICIPANT_WITHOUT_CONSENT = "participant_without_consent"
    SESSION_ENDED = "session_ended"
    SHUTDOWN = "shutdown"  # the gateway process stopped (sealed, not lost)
    STORE_UNAVAILABLE = "store_unavailable"  # consent could not be checked: sealed
    FAILED = "failed"  # the recorder failed (disk full, ...): nothing sealed
    LOST = "lost"  # its process died while writing: nothing sealed


@dataclass(frozen=True, slots=True)
class ConsentLink:
    """One consent a recording rests on, as the consent record names it."""

    participant_id: str
    text_version: str
    given_at: float

    @classmethod
    def of(cls, record: ConsentRecord) -> ConsentLink:
        return cls(
            participant_id=record.participant_id,
            text_version=record.text_version,
            given_at=record.given_at,
        )

    def matches(self, record: ConsentRecord) -> bool:
        return (
            record.kind is ConsentKind.RECORDING
            and record.participant_id == self.participant_id
            and record.text_version == self.text_version
            and record.given_at == self.given_at
        )


@dataclass(frozen=True, slots=True)
class SealedFile:
    """What the recorder wrote: a sealed file in the recording folder."""

    file_name: str
    #: SHA-256 (hex) of the sealed file's bytes.
    sealed_hash: str
    #: The master key that wraps its data key.
    key_id: str


@dataclass(frozen=True, slots=True)
class Recording:
    """One recording of an appointment, from start to (once stopped) its sealed file."""

    id: str
    appointment_id: str
    room_id: str
    started_at: float
    #: Who started it (the host's participant id).
    started_by: str
    #: The gateway process writing it.
    node: str
    #: The last time that process said it is still writing.
    heartbeat_at: float
    #: One audio track per participant, in this order (participant ids).
    audio_tracks: tuple[str, ...] = ()
    #: Why it stopped, or why it was asked to stop (before ``stopped_at`` is set).
    stop_reason: StopReason | None = None
    stopped_at: float | None = None
    sealed: SealedFile | None = None
    consents: tuple[ConsentLink, ...] = ()

    @property
    def active(self) -> bool:
        return self.stopped_at is None

    def alive(self, *, now: float, stale_after: float) -> bool:
        """Active, and its process said so less than ``stale_after`` seconds ago."""
        return self.active and now - self.heartbeat_at < stale_after

    def finished(
        self,
        *,
        at: float,
        reason: StopReason,
        sealed: SealedFile | None,
        consents: Iterable[ConsentLink],
    ) -> Recording:
        return replace(
            self, stopped_at=at, stop_reason=reason, sealed=sealed, consents=tuple(consents)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "appointment_id": self.appointment_id,
            "room_id": self.room_id,
            "started_at": self.started_at,
            "started_by": self.started_by,
            "node": self.node,
            "heartbeat_at": self.heartbeat_at,
            "audio_tracks": list(self.audio_tracks),
            "stop_reason": None if self.stop_reason is None else self.stop_reason.value,
            "stopped_at": self.stopped_at,
            "sealed": None
            if self.sealed is None
            else {
                "file_name": self.sealed.file_name,
                "sealed_hash": self.sealed.sealed_hash,
                "key_id": self.sealed.key_id,
            },
            "consents": [
                {
                    "participant_id": c.participant_id,
                    "text_version": c.text_version,
                    "given_at": c.given_at,
                }
                for c in self.consents
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recording:
        sealed = data.get("sealed")
        reason = data.get("stop_reason")
        stopped_at = data.get("stopped_at")
        return cls(
            id=str(data["id"]),
            appointment_id=str(data["appointment_id"]),
            room_id=str(data["room_id"]),
            started_at=float(data["started_at"]),
            started_by=str(data["started_by"]),
            node=str(data["node"]),
            heartbeat_at=float(data["heartbeat_at"]),
            audio_tracks=tuple(str(p) for p in data.get("audio_tracks") or ()),
            stop_reason=None if reason is None else StopReason(reason),
            stopped_at=None if stopped_at is None else float(stopped_at),
            sealed=None
            if sealed is None
            else SealedFile(
                file_name=str(sealed["file_name"]),
                sealed_hash=str(sealed["sealed_hash"]),
                key_id=str(sealed["key_id"]),
            ),
            consents=tuple(
                ConsentLink(
                    participant_id=str(c["participant_id"]),
                    text_version=str(c["text_version"]),
                    given_at=float(c["given_at"]),
                )
                for c in data.get("consents") or ()
            ),
        )


def recording_file_name(recording_id: str) -> str:
    """The sealed file's name: the recording's opaque id and nothing else."""
    return f"{recording_id}.sealed"


def recording_audience(participants: Iterable[Participant]) -> list[str]:
    """Who a recording records now, and whose consent it needs: the host, and every
    client admitted to the session (in session or about to be). Host first."""
    present = [p for p in participants if p.role is Role.HOST or (p.state in _IN_SESSION)]
    present.sort(key=lambda p: (p.role is not Role.HOST, p.created_at, p.id))
    return [p.id for p in present]


def consents_covering(
    records: Iterable[ConsentRecord],
    *,
    session_id: str,
    started_at: float,
    stopped_at: float,
) -> tuple[ConsentLink, ...]:
    """The recording consents of the session that were live at some point while the
    recording ran: given before it stopped, not withdrawn before it started."""
    links = [
        ConsentLink.of(r)
        for r in records
        if r.kind is ConsentKind.RECORDING
        and r.session_id == session_id
        and r.given_at <= stopped_at
        and (r.withdrawn_at is None or r.withdrawn_at >= started_at)
    ]
    return tuple(sorted(links, key=lambda c: (c.given_at, c.participant_id)))
