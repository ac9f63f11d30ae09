"""Consent records and the recording policy: nobody is recorded without consent on record."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.domain.consent import (
    ConsentKind,
    ConsentRecord,
    RecordingDecision,
    give,
    may_record,
    require_recording_consent,
    withdraw,
)
from gateway.errors import ConsentError, ConsentMissing, GatewayError

SESSION = "apt_SESSIONAAAAAAAAAAAAAAA"
OTHER_SESSION = "apt_OTHERBBBBBBBBBBBBBBBBB"
ALICE = "par_AAAAAAAAAAAAAAAAAAAAAA"
BOB = "par_BBBBBBBBBBBBBBBBBBBBBB"
CAROL = "par_CCCCCCCCCCCCCCCCCCCCCC"
HOST = "par_HHHHHHHHHHHHHHHHHHHHHH"


def recording(
    participant_id: str, *, session_id: str = SESSION, at: float = 100.0
) -> ConsentRecord:
    return give(
        participant_id=participant_id,
        session_id=session_id,
        kind=ConsentKind.RECORDING,
        text_version="rec-v1",
        at=at,
    )


# --- may_record: the refusals first --------------------------------------------------------------


def test_nobody_present_means_no_recording() -> None:
    decision = may_record([], [recording(ALICE)], session_id=SESSION)
    assert decision == RecordingDecision(allowed=False, lacking=())


def test_nobody_present_and_no_consents_means_no_recording() -> None:
    assert not may_record([], [], session_id=SESSION).allowed


def test_refusal_lists_exactly_the_lacking_ids_sorted() -> None:
    decision = may_record([CAROL, HOST, ALICE, BOB], [recording(BOB)], session_id=SESSION)
    assert decision.allowed is False
    assert decision.lacking == (ALICE, CAROL, HOST)


def test_lacking_ids_appear_once_even_if_listed_twice() -> None:
    decision = may_record([BOB, ALICE, BOB], [], session_id=SESSION)
    assert decision.lacking == (ALICE, BOB)


def test_consent_of_someone_absent_does_not_cover_anyone() -> None:
    decision = may_record([ALICE], [recording(BOB), recording(CAROL)], session_id=SESSION)
    assert decision == RecordingDecision(allowed=False, lacking=(ALICE,))


def test_consent_for_another_session_does_not_count() -> None:
    decision = may_record(
        [ALICE, BOB],
        [recording(ALICE), recording(BOB, session_id=OTHER_SESSION)],
        session_id=SESSION,
    )
    assert decision == RecordingDecision(allowed=False, lacking=(BOB,))


def test_telehealth_consent_does_not_count_for_recording() -> None:
    telehealth = give(
        participant_id=BOB,
        session_id=SESSION,
        kind=ConsentKind.TELEHEALTH,
        text_version="tele-v3",
        at=100.0,
    )
    decision = may_record([ALICE, BOB], [recording(ALICE), telehealth], session_id=SESSION)
    assert decision == RecordingDecision(allowed=False, lacking=(BOB,))


def test_withdrawal_stops_recording() -> None:
    alice, bob = recording(ALICE), recording(BOB)
    assert may_record([ALICE, BOB], [alice, bob], session_id=SESSION).allowed
    decision = may_record([ALICE, BOB], [alice, withdraw(bob, at=200.0)], session_id=SESSION)
    assert decision == RecordingDecision(allowed=False, lacking=(BOB,))


def test_new_participant_without_consent_stops_recording() -> None:
    consents = [recording(ALICE), recording(HOST)]
    assert may_record([ALICE, HOST], consents, session_id=SESSION).allowed
    decision = may_record([ALICE, HOST, CAROL], consents, session_id=SESSION)
    assert decision == RecordingDecision(allowed=False, lacking=(CAROL,))


def test_all_consenting_allows_recording() -> None:
    decision = may_record(
        [ALICE, BOB, HOST], [recording(HOST), recording(BOB), recording(ALICE)], session_id=SESSION
    )
    assert decision == RecordingDecision(allowed=True, lacking=())


def test_consent_given_again_after_withdrawal_counts() -> None:
    withdrawn = withdraw(recording(ALICE), at=150.0)
    again = recording(ALICE, at=160.0)
    assert may_record([ALICE], [withdrawn, again], session_id=SESSION).allowed
    assert may_record([ALICE], [again, withdrawn], session_id=SESSION).allowed


def test_may_record_accepts_one_shot_iterables() -> None:
    decision = may_record(iter([ALICE]), iter([recording(ALICE)]), session_id=SESSION)
    assert decision.allowed


# --- require_recording_consent --------------------------------------------------------------------


def test_require_raises_naming_who_lacks_consent() -> None:
    with pytest.raises(ConsentMissing) as info:
        require_recording_consent([BOB, ALICE, HOST], [recording(HOST)], session_id=SESSION)
    assert info.value.kind == "recording"
    assert info.value.lacking == (ALICE, BOB)
    assert info.value.code == "consent_missing"
    assert isinstance(info.value, ConsentError)
    assert isinstance(info.value, GatewayError)
    # The message counts; it does not list ids.
    assert ALICE not in str(info.value)


def test_require_raises_with_nobody_present() -> None:
    with pytest.raises(ConsentMissing) as info:
        require_recording_consent([], [], session_id=SESSION)
    assert info.value.lacking == ()


def test_require_passes_when_everyone_consents() -> None:
    require_recording_consent([ALICE], [recording(ALICE)], session_id=SESSION)


# --- records ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "version",
    [
        pytest.param("", id="empty"),
        pytest.param("v" * 65, id="overlong"),
        pytest.param("v1\n", id="newline"),
        pytest.param("v1\x00", id="nul"),
        pytest.param("v\t1", id="tab"),
        pytest.param("v1\u202e", id="bidi-override"),
        pytest.param("\x1b[31mv1", id="escape"),
    ],
)
def test_give_refuses_a_bad_text_version(version: str) -> None:
    with pytest.raises(ConsentError) as info:
        give(
            participant_id=ALICE,
            session_id=SESSION,
            kind=ConsentKind.RECORDING,
            text_version=version,
            at=1.0,
        )
    assert type(info.value) is ConsentError


@pytest.mark.parametrize("version", ["v", "2024-05-01", "v" * 64, "rec v1.2"])
def test_give_accepts_printable_versions_up_to_64(version: str) -> None:
    record = give(
        participant_id=ALICE,
        session_id=SESSION,
        kind=ConsentKind.TELEHEALTH,
        text_version=version,
        at=5.0,
    )
    assert record == ConsentRecord(
        participant_id=ALICE,
        session_id=SESSION,
        kind=ConsentKind.TELEHEALTH,
        text_version=version,
        given_at=5.0,
        withdrawn_at=None,
    )
    assert record.live


def test_withdraw_sets_the_time_and_keeps_the_rest() -> None:
    given = recording(ALICE, at=100.0)
    withdrawn = withdraw(given, at=250.0)
    assert withdrawn.withdrawn_at == 250.0
    assert not withdrawn.live
    assert dataclasses.replace(withdrawn, withdrawn_at=None) == given
    assert given.live  # the original is untouched


def test_withdrawing_twice_keeps_the_first_time() -> None:
    once = withdraw(recording(ALICE), at=250.0)
    twice = withdraw(once, at=900.0)
    assert twice.withdrawn_at == 250.0
    assert twice == once


def test_records_are_frozen() -> None:
    record = recording(ALICE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.withdrawn_at = 1.0  # type: ignore[misc]
