"""Retention rules: cutoffs per kind of data, and which files the sweeper may delete."""

from __future__ import annotations

import pytest

from gateway.domain.retention import (
    DAY,
    ERASED_ACTION,
    RetentionPolicy,
    appointment_purged_record,
    cutoff,
    erased_record,
    is_recording_file,
)

NOW = 1_800_000_000.0


def test_zero_days_keeps_forever() -> None:
    assert cutoff(0, now=NOW) is None
    policy = RetentionPolicy(audit_days=0, recording_days=0, appointment_days=0)
    assert policy.audit_cutoff(NOW) is None
    assert policy.recording_cutoff(NOW) is None
    assert policy.appointment_cutoff(NOW) is None
    assert policy.appointment_record_cutoff(NOW) is None


def test_cutoffs_count_whole_days_back_from_now() -> None:
    policy = RetentionPolicy(audit_days=2190, recording_days=30, appointment_days=7)
    assert policy.audit_cutoff(NOW) == NOW - 2190 * DAY
    assert policy.recording_cutoff(NOW) == NOW - 30 * DAY
    assert policy.appointment_cutoff(NOW) == NOW - 7 * DAY


def test_what_is_left_of_an_appointment_goes_with_the_audit_entries() -> None:
    policy = RetentionPolicy(audit_days=2190, recording_days=30, appointment_days=30)
    assert policy.appointment_record_cutoff(NOW) == NOW - 2190 * DAY
    # Never before the appointment's data itself was purged.
    short_audit = RetentionPolicy(audit_days=10, recording_days=30, appointment_days=30)
    assert short_audit.appointment_record_cutoff(NOW) == NOW - 30 * DAY
    # An audit log kept forever keeps its owners forever.
    forever = RetentionPolicy(audit_days=0, recording_days=30, appointment_days=30)
    assert forever.appointment_record_cutoff(NOW) is None


@pytest.mark.parametrize(
    "name",
    [
        "rec_3q2hVbXk0cE3yqk1o5lN1w.sealed",
        "apt_x-rec_y.sealed",
        ".rec_3q2hVbXk0cE3yqk1o5lN1w.sealed.0123456789abcdef.partial",
    ],
)
def test_recordings_and_writers_leftovers_may_be_deleted(name: str) -> None:
    assert is_recording_file(name)


@pytest.mark.parametrize(
    "name",
    [
        "notes.txt",
        "rec.sealed.bak",
        ".sealed",
        ".hidden.sealed",
        "rec.sealed.partial",
        ".rec.sealed.0123.partial",
        "../rec.sealed",
        "dir/rec.sealed",
        "export.mkv",
    ],
)
def test_nothing_else_is_a_recording(name: str) -> None:
    assert not is_recording_file(name)


def test_audit_records_carry_ids_only() -> None:
    draft = erased_record(
        participant_id="ptc_AAAAAAAAAAAAAAAAAAAAAA",
        appointment_id="apt_BBBBBBBBBBBBBBBBBBBBBB",
        actor="key_CCCCCCCCCCCCCCCCCCCCCC",
    )
    assert draft.action == ERASED_ACTION
    assert dict(draft.subjects) == {
        "appointment": "apt_BBBBBBBBBBBBBBBBBBBBBB",
        "participant": "ptc_AAAAAAAAAAAAAAAAAAAAAA",
    }
    purged = appointment_purged_record("apt_BBBBBBBBBBBBBBBBBBBBBB", actor="retention")
    assert dict(purged.subjects) == {"appointment": "apt_BBBBBBBBBBBBBBBBBBBBBB"}
