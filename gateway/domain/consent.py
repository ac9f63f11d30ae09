"""Consent as records, and the recording policy that reads them.

A consent record says who agreed to what (telehealth, or recording), which version of
the text they saw, when, and when they withdrew. Recording may run only while every
participant in the session has a live recording consent.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace

from gateway.errors import ConsentError, ConsentMissing

__all__ = [
    "ConsentKind",
    "ConsentRecord",
    "RecordingDecision",
    "give",
    "has_live_consent",
    "may_record",
    "recording_consenters",
    "require_recording_consent",
    "withdraw",
]

MAX_VERSION_LENGTH = 64


class ConsentKind(enum.StrEnum):
    TELEHEALTH = "telehealth"  # informed consent to treatment over video
    RECORDING = "recording"


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    participant_id: str
    session_id: str
    kind: ConsentKind
    text_version: str
    given_at: float
    withdrawn_at: float | None = None

    @property
    def live(self) -> bool:
        return self.withdrawn_at is None


@dataclass(frozen=True, slots=True)
class RecordingDecision:
    """Whether recording may run now, and if not, who lacks consent."""

    allowed: bool
    lacking: tuple[str, ...]


def give(
    *, participant_id: str, session_id: str, kind: ConsentKind, text_version: str, at: float
) -> ConsentRecord:
    """A new consent record for the text version the participant saw."""
    if not text_version or len(text_version) > MAX_VERSION_LENGTH or not text_version.isprintable():
        raise ConsentError("a consent needs the version of the text that was shown")
    return ConsentRecord(
        participant_id=participant_id,
        session_id=session_id,
        kind=kind,
        text_version=text_version,
        given_at=at,
    )


def withdraw(record: ConsentRecord, *, at: float) -> ConsentRecord:
    """The record, withdrawn now; withdrawing twice keeps the first time."""
    if record.withdrawn_at is not None:
        return record
    return replace(record, withdrawn_at=at)


def may_record(
    participants: Iterable[str],
    consents: Iterable[ConsentRecord],
    *,
    session_id: str,
    version: str | None = None,
) -> RecordingDecision:
    """May this session be recorded now? Nobody present means no. With ``version``,
    only a consent to that text counts: agreeing to an older wording is not agreeing to
    the one in force."""
    present = sorted(set(participants))
    consenting = recording_consenters(consents, session_id=session_id, version=version)
    lacking = tuple(p for p in present if p not in consenting)
    return RecordingDecision(allowed=bool(present) and not lacking, lacking=lacking)


def recording_consenters(
    consents: Iterable[ConsentRecord], *, session_id: str, version: str | None = None
) -> set[str]:
    """Who has a live recording consent for this session (to the text ``version``, if
    given: agreeing to an older wording is not agreeing to the one in force). The one
    rule for "has agreed", wherever it is asked or shown."""
    return {
        c.participant_id
        for c in consents
        if c.kind is ConsentKind.RECORDING
        and c.session_id == session_id
        and c.live
        and (version is None or c.text_version == version)
    }


def require_recording_consent(
    participants: Iterable[str],
    consents: Iterable[ConsentRecord],
    *,
    session_id: str,
    version: str | None = None,
) -> None:
    """Raise :class:`ConsentMissing`, naming who lacks consent, unless recording may run."""
    decision = may_record(participants, consents, session_id=session_id, version=version)
    if not decision.allowed:
        raise ConsentMissing(kind=ConsentKind.RECORDING.value, lacking=decision.lacking)


def has_live_consent(
    records: Iterable[ConsentRecord],
    *,
    participant_id: str,
    session_id: str,
    kind: ConsentKind,
    version: str | None = None,
) -> bool:
    """Whether the participant has a live consent of ``kind`` (to ``version``, if given)."""
    return any(
        r.participant_id == participant_id
        and r.session_id == session_id
        and r.kind is kind
        and r.live
        and (version is None or r.text_version == version)
        for r in records
    )
