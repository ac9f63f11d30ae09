"""Recording records, for every Store: MemoryStore and a real redis-server.

An appointment has at most one active recording however many start at once; a stop is
asked once and finished once; the finished record keeps the sealed file's hash and the
consents it rests on, exactly as given.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from gateway.domain.ids import new_id
from gateway.domain.recording import ConsentLink, Recording, SealedFile, StopReason
from gateway.storage import Store

T0 = 1_800_000_000.25


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


def a_recording(appointment_id: str, *, at: float = T0) -> Recording:
    return Recording(
        id=new_id("rec"),
        appointment_id=appointment_id,
        room_id=new_id("rm"),
        started_at=at,
        started_by=new_id("ptc"),
        node="node-a",
        heartbeat_at=at,
        audio_tracks=(new_id("ptc"), new_id("ptc")),
    )


SEALED = SealedFile(file_name="rec_x.sealed", sealed_hash="ab" * 32, key_id="0123456789abcdef")


async def test_one_active_recording_per_appointment(store: Store) -> None:
    appointment = new_id("apt")
    first, second = a_recording(appointment), a_recording(appointment)
    assert await store.begin_recording(first)
    assert not await store.begin_recording(second)
    assert await store.active_recording(appointment) == first
    assert await store.get_recording(first.id) == first
    assert await store.get_recording(second.id) is None
    assert await store.active_recording(new_id("apt")) is None


async def test_concurrent_begins_leave_exactly_one(store: Store) -> None:
    appointment = new_id("apt")
    candidates = [a_recording(appointment) for _ in range(20)]
    begun = await asyncio.gather(*(store.begin_recording(r) for r in candidates))
    assert begun.count(True) == 1
    winner = candidates[begun.index(True)]
    assert await store.active_recording(appointment) == winner
    assert await store.list_recordings(appointment) == [winner]


async def test_finish_once_keeps_hash_and_consents_and_frees_the_appointment(
    store: Store,
) -> None:
    appointment = new_id("apt")
    recording = a_recording(appointment)
    assert await store.begin_recording(recording)
    links = (
        ConsentLink(participant_id=new_id("ptc"), text_version="recording-2026-1", given_at=T0 - 1),
        ConsentLink(participant_id=new_id("ptc"), text_version="v:2", given_at=T0 - 0.125),
    )
    finished, record = await store.finish_recording(
        recording.id,
        stopped_at=T0 + 61.5,
        reason=StopReason.CONSENT_WITHDRAWN,
        sealed=SEALED,
        consents=links,
    )
    assert finished
    assert record is not None
    assert record == recording.finished(
        at=T0 + 61.5, reason=StopReason.CONSENT_WITHDRAWN, sealed=SEALED, consents=links
    )
    assert not record.active
    assert await store.get_recording(recording.id) == record
    assert await store.active_recording(appointment) is None

    again, same = await store.finish_recording(
        recording.id, stopped_at=T0 + 99, reason=StopReason.HOST, sealed=None, consents=()
    )
    assert not again
    assert same == record

    later = a_recording(appointment, at=T0 + 100)
    assert await store.begin_recording(later)
    assert await store.list_recordings(appointment) == [record, later]


async def test_a_failed_recording_finishes_without_a_file(store: Store) -> None:
    recording = a_recording(new_id("apt"))
    await store.begin_recording(recording)
    finished, record = await store.finish_recording(
        recording.id, stopped_at=T0 + 1, reason=StopReason.FAILED, sealed=None, consents=()
    )
    assert finished
    assert record is not None
    assert record.sealed is None
    assert record.consents == ()
    assert record.stop_reason is StopReason.FAILED


async def test_touch_moves_the_heartbeat_of_an_active_recording_only(store: Store) -> None:
    recording = a_recording(new_id("apt"))
    await store.begin_recording(recording)
    touched = await store.touch_recording(recording.id, at=T0 + 2.5)
    assert touched is not None
    assert touched.heartbeat_at == T0 + 2.5
    await store.finish_recording(
        recording.id, stopped_at=T0 + 3, reason=StopReason.HOST, sealed=SEALED, consents=()
    )
    after = await store.touch_recording(recording.id, at=T0 + 9)
    assert after is not None
    assert after.heartbeat_at == T0 + 2.5
    assert await store.touch_recording(new_id("rec"), at=T0) is None


async def test_the_first_stop_request_wins_and_a_finished_one_takes_none(store: Store) -> None:
    recording = a_recording(new_id("apt"))
    await store.begin_recording(recording)
    asked = await store.request_recording_stop(recording.id, reason=StopReason.CONSENT_WITHDRAWN)
    assert asked is not None
    assert asked.stop_reason is StopReason.CONSENT_WITHDRAWN
    assert asked.active
    again = await store.request_recording_stop(recording.id, reason=StopReason.HOST)
    assert again is not None
    assert again.stop_reason is StopReason.CONSENT_WITHDRAWN
    touched = await store.touch_recording(recording.id, at=T0 + 1)
    assert touched is not None
    assert touched.stop_reason is StopReason.CONSENT_WITHDRAWN

    await store.finish_recording(
        recording.id,
        stopped_at=T0 + 2,
        reason=StopReason.CONSENT_WITHDRAWN,
        sealed=SEALED,
        consents=(),
    )
    late = await store.request_recording_stop(recording.id, reason=StopReason.HOST)
    assert late is not None
    assert late.stop_reason is StopReason.CONSENT_WITHDRAWN
    assert await store.request_recording_stop(new_id("rec"), reason=StopReason.HOST) is None


async def test_unknown_recordings(store: Store) -> None:
    finished, record = await store.finish_recording(
        new_id("rec"), stopped_at=T0, reason=StopReason.HOST, sealed=None, consents=()
    )
    assert (finished, record) == (False, None)
    assert await store.list_recordings(new_id("apt")) == []


async def test_recordings_of_appointments_stay_apart(store: Store) -> None:
    one, two = new_id("apt"), new_id("apt")
    first, second = a_recording(one), a_recording(two)
    assert await store.begin_recording(first)
    assert await store.begin_recording(second)
    await store.finish_recording(
        first.id, stopped_at=T0 + 1, reason=StopReason.HOST, sealed=SEALED, consents=()
    )
    assert await store.active_recording(one) is None
    assert await store.active_recording(two) == second
    assert await store.list_recordings(one) == [await store.get_recording(first.id)]
    assert await store.list_recordings(two) == [second]


async def test_a_recording_nobody_writes_is_claimed_once(store: Store) -> None:
    recording = replace(a_recording(new_id("apt")), node="")
    assert await store.begin_recording(recording)
    claims = await asyncio.gather(
        *(store.claim_recording(recording.id, node=f"node-{i}", at=T0 + 1) for i in range(10))
    )
    won = [c for c in claims if c is not None]
    assert len(won) == 1
    assert won[0].heartbeat_at == T0 + 1
    assert (await store.get_recording(recording.id)) == won[0]
    # Written by someone now, or finished: nobody else claims it.
    assert await store.claim_recording(recording.id, node="late", at=T0 + 2) is None
    other = replace(a_recording(new_id("apt")), node="")
    await store.begin_recording(other)
    await store.finish_recording(
        other.id, stopped_at=T0 + 3, reason=StopReason.HOST, sealed=None, consents=()
    )
    assert await store.claim_recording(other.id, node="late", at=T0 + 4) is None
    assert await store.claim_recording(new_id("rec"), node="late", at=T0) is None
