"""Data lifecycle as plain rules: how long each kind of data is kept, and what is left
of a participant whose data is gone.

Times are seconds since the epoch; nothing here reads a clock.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from gateway.domain.audit import AuditAnchor, AuditDraft, AuditEntry

__all__ = [
    "APPOINTMENT_PURGED_ACTION",
    "DAY",
    "ERASED_ACTION",
    "AppointmentPurge",
    "AuditPrune",
    "Erasure",
    "ExpiredState",
    "GoneReason",
    "ParticipantTombstone",
    "RetentionPolicy",
    "appointment_purged_record",
    "cutoff",
    "erased_record",
    "is_recording_file",
]

DAY = 86400.0

#: A finished sealed recording, and the hidden temporary file a writer fills
#: (``.<name>.sealed.<16 hex>.partial``; see gateway.media.sealed).
_SEALED = re.compile(r"^[^./][^/]*\.sealed$")
_PARTIAL = re.compile(r"^\.[^/]+\.sealed\.[0-9a-f]{16}\.partial$")


def cutoff(days: int, *, now: float) -> float | None:
    """Data made before the returned time has outlived ``days``; None keeps it forever."""
    if days <= 0:
        return None
    return now - days * DAY


def is_recording_file(name: str) -> bool:
    """A name the retention may delete in the recording folder: a sealed recording, or
    the temporary file of a writer (it is written to all the time while alive, so one
    older than the retention was left by a crash)."""
    return bool(_SEALED.fullmatch(name) or _PARTIAL.fullmatch(name))


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How many days each kind of data is kept; 0 keeps it forever."""

    #: Audit entries (ids and times only).
    audit_days: int
    #: Sealed recordings, by the time their file was last written.
    recording_days: int
    #: The participants (names, TOTP secrets), consents and browser sessions of an
    #: appointment, counted from the appointment's end.
    appointment_days: int
    #: An appointment nobody ended is ended this many days after its creation.
    appointment_max_days: int = 0

    def audit_cutoff(self, now: float) -> float | None:
        return cutoff(self.audit_days, now=now)

    def recording_cutoff(self, now: float) -> float | None:
        return cutoff(self.recording_days, now=now)

    def appointment_cutoff(self, now: float) -> float | None:
        return cutoff(self.appointment_days, now=now)

    def abandoned_cutoff(self, now: float) -> float | None:
        """Appointments created before the returned time and still not ended are ended."""
        return cutoff(self.appointment_max_days, now=now)

    def appointment_record_cutoff(self, now: float) -> float | None:
        """What is left of a purged appointment (its ids and times, the tombstones of its
        participants) goes with the audit entries about it: after the audit retention,
        counted from the appointment's end, and never before its data was purged."""
        if self.audit_days <= 0:
            return None
        return cutoff(max(self.audit_days, self.appointment_days), now=now)


class GoneReason(enum.StrEnum):
    #: Erased at the platform's request.
    ERASED = "erased"
    #: Purged with the rest of an ended appointment's data by the retention.
    RETENTION = "retention"


@dataclass(frozen=True, slots=True)
class ParticipantTombstone:
    """What is kept of a participant whose data is gone: ids, a time and why.

    The audit log still names the participant's id; the tombstone lets the platform
    that owned them keep reading those entries, and makes a repeated erasure harmless.
    """

    participant_id: str
    appointment_id: str
    at: float
    reason: GoneReason


@dataclass(frozen=True, slots=True)
class Erasure:
    """One participant's data, erased in one atomic step with its audit entry."""

    tombstone: ParticipantTombstone
    #: Browser sessions ended.
    sessions: int
    #: Consent records removed.
    consents: int
    #: The audit entry recording the erasure.
    entry: AuditEntry


@dataclass(frozen=True, slots=True)
class AppointmentPurge:
    """An ended appointment whose participant data the retention removed."""

    appointment_id: str
    #: Participant records removed (each now a tombstone).
    participants: int
    #: The audit entry recording the purge.
    entry: AuditEntry


@dataclass(frozen=True, slots=True)
class AuditPrune:
    """Entries removed from the start of the audit log, in one atomic step."""

    #: How many entries were removed.
    entries: int
    #: Where the log now starts.
    anchor: AuditAnchor
    #: The ``audit.pruned`` entry that records it.
    entry: AuditEntry


@dataclass(frozen=True, slots=True)
class ExpiredState:
    """Expired state a store forgot (Redis forgets it by itself: these stay 0 there)."""

    #: Used link ids whose link has expired.
    links: int = 0
    #: Browser sessions past their end of life.
    sessions: int = 0


#: The audit actions of erasure and of the retention's purge of an appointment.
ERASED_ACTION = "participant.erased"
APPOINTMENT_PURGED_ACTION = "appointment.purged"


def erased_record(*, participant_id: str, appointment_id: str, actor: str) -> AuditDraft:
    """The tombstone entry of an erasure: ids only."""
    return AuditDraft(
        actor=actor,
        action=ERASED_ACTION,
        subjects={"appointment": appointment_id, "participant": participant_id},
    )


def appointment_purged_record(appointment_id: str, *, actor: str) -> AuditDraft:
    """The entry recording that the retention removed an ended appointment's
    participant data: the appointment's id only."""
    return AuditDraft(
        actor=actor, action=APPOINTMENT_PURGED_ACTION, subjects={"appointment": appointment_id}
    )
