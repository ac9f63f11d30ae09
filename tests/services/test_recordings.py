"""Recording through the service, on both stores, with an in-memory recorder: refusals
name who lacks consent; start, stop and refusal reach the audit log, the bus and the
platform's webhook; a withdrawal, an admission without consent or the end of the
session stops the recording, and so does the watchdog for what the bus does not carry."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from gateway.clock import FrozenClock
from gateway.domain.consent import ConsentKind
from gateway.domain.ids import new_id
from gateway.domain.model import BrowserSession, RoomPolicy
from gateway.domain.recording import (
    RECORDING_CONSENT,
    ConsentText,
    Recording,
    SealedFile,
    StopReason,
)
from gateway.errors import ConsentMissing, NotAllowed, StoreUnavailable
from gateway.services import Event, EventKind, Services
from gateway.services.recordings import ConsentState, RecordingService
from gateway.services.webhooks import WebhookDispatcher
from gateway.storage import Store
from tests.factories import Seeded, make_settings, seed
from tests.services.test_waiting_room import client_session, host_session

VERSION = RECORDING_CONSENT.version
ALLOWED = RoomPolicy(recording_allowed=True)


class FakeRecorder:
    """The media plane's side, in memory: records calls, seals on ``end``."""

    def __init__(self) -> None:
        self.open: dict[str, tuple[str, list[str]]] = {}
        self.calls: list[tuple[str, str]] = []
        self.failing: set[str] = set()
        self.refuse: Exception | None = None
        #: The sessions whose media is here; None: every session (one process).
        self.media: set[str] | None = None

    def here(self, session_id: str) -> bool:
        return self.media is None or session_id in self.media

    def sessions(self) -> list[str]:
        return sorted(self.media or ())

    async def begin(
        self, *, recording_id: str, session_id: str, host_id: str, participants: list[str]
    ) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.open[recording_id] = (session_id, list(participants))
        self.calls.append(("begin", recording_id))

    def has(self, recording_id: str) -> bool:
        return recording_id in self.open

    def failed(self, recording_id: str) -> bool:
        return recording_id in self.failing

    def recording_ids(self) -> list[str]:
        return list(self.open)

    def halt(self, recording_id: str) -> None:
        self.calls.append(("halt", recording_id))

    async def discard(self, recording_id: str) -> None:
        self.open.pop(recording_id, None)
        self.calls.append(("discard", recording_id))

    async def end(self, recording_id: str) -> SealedFile | None:
        self.open.pop(recording_id, None)
        self.calls.append(("end", recording_id))
        if recording_id in self.failing:
            return None
        return SealedFile(
            file_name=f"{recording_id}.sealed",
            sealed_hash=hashlib.sha256(recording_id.encode()).hexdigest(),
            key_id="0123456789abcdef",
        )


@pytest.fixture
def services(any_store: Store, clock: FrozenClock) -> Services:
    return Services.build(settings=make_settings(), store=any_store, clock=clock)


@pytest.fixture
async def recorder(services: Services) -> AsyncIterator[FakeRecorder]:
    fake = FakeRecorder()
    await services.recordings.attach(fake)
    try:
        yield fake
    finally:
        await services.recordings.detach()


@pytest.fixture
def events(services: Services) -> list[Event]:
    seen: list[Event] = []

    async def collect(event: Event) -> None:
        seen.append(event)

    services.events.subscribe(collect)
    return seen


@pytest.fixture
def webhooks(services: Services, clock: FrozenClock) -> WebhookDispatcher:
    dispatcher = WebhookDispatcher(store=services.store, clock=clock)
    services.events.subscribe(dispatcher.on_event)
    return dispatcher


async def with_webhook(services: Services, seeded: Seeded) -> None:
    host = await services.store.get_host(seeded.room.host_id)
    assert host is not None
    platform = await services.store.get_platform(host.platform_id)
    assert platform is not None
    await services.store.put_platform(replace(platform, webhook_url="https://hooks.example.org/q"))


async def webhook_bodies(services: Services, clock: FrozenClock) -> list[dict[str, object]]:
    claims = await services.store.claim_webhooks(now=clock.now() + 1, lease=60, limit=100)
    return [json.loads(claim.delivery.body) for claim in claims]


async def in_session(services: Services, seeded: Seeded) -> tuple[BrowserSession, BrowserSession]:
    """A present host and the seeded client, admitted."""
    host = await host_session(services, seeded)
    client = await client_session(services, seeded)
    await services.waiting_room.get_in_line(client)
    await services.waiting_room.admit(host, seeded.client.id)
    return host, client


async def everyone_agrees(
    services: Services, *sessions: BrowserSession, version: str = VERSION
) -> None:
    for session in sessions:
        state = await services.recordings.set_consent(session, version=version, given=True)
        assert state.given


async def audit_actions(services: Services) -> list[tuple[str, dict[str, str]]]:
    entries = await services.store.read_audit(after_seq=0, limit=10_000)
    return [(e.action, dict(e.subjects)) for e in entries if e.action.startswith("recording.")]


# --- refusals ------------------------------------------------------------------------------------


async def test_a_room_that_does_not_allow_recording_refuses(
    services: Services, recorder: FakeRecorder, events: list[Event]
) -> None:
    seeded = await seed(services)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    with pytest.raises(NotAllowed, match="does not allow"):
        await services.recordings.ask(host)  # nobody is asked about it either
    with pytest.raises(NotAllowed):
        await services.recordings.start(host)
    assert recorder.calls == []
    assert [e.kind for e in events if e.kind.value.startswith("recording.")] == [
        EventKind.RECORDING_REFUSED
    ]
    assert await audit_actions(services) == [
        ("recording.refused", {"appointment": seeded.appointment.id, "reason": "not_allowed"})
    ]


async def test_without_a_recorder_recording_is_refused(services: Services) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    assert not services.recordings.available
    with pytest.raises(NotAllowed, match="not set up"):
        await services.recordings.ask(host)
    with pytest.raises(NotAllowed):
        await services.recordings.start(host)
    assert (
        await services.recordings.status(await services.waiting_room.seat_of(host))
    ).allowed is (False)


async def test_a_refused_start_names_everyone_who_lacks_consent_host_included(
    services: Services,
    recorder: FakeRecorder,
    events: list[Event],
    webhooks: WebhookDispatcher,
    clock: FrozenClock,
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    await with_webhook(services, seeded)
    host, client = await in_session(services, seeded)
    with pytest.raises(ConsentMissing) as refused:
        await services.recordings.start(host)
    assert set(refused.value.lacking) == {seeded.host.id, seeded.client.id}

    await everyone_agrees(services, client)
    with pytest.raises(ConsentMissing) as refused:
        await services.recordings.start(host)
    assert refused.value.lacking == (seeded.host.id,)
    assert recorder.calls == []
    assert await services.store.active_recording(seeded.appointment.id) is None

    refusals = [e for e in events if e.kind is EventKind.RECORDING_REFUSED]
    assert [e.extra for e in refusals] == [{"reason": "consent_missing"}] * 2
    actions = await audit_actions(services)
    assert [a for a, _ in actions] == ["recording.refused", "recording.refused"]
    assert actions[1][1] == {
        "appointment": seeded.appointment.id,
        "reason": "consent_missing",
        "lacking": "1",
    }
    bodies = [b for b in await webhook_bodies(services, clock) if b["type"] == "recording.refused"]
    assert len(bodies) == 2
    assert bodies[0]["data"] == {
        "appointment_id": seeded.appointment.id,
        "room_id": seeded.room.id,
        "reason": "consent_missing",
    }


async def test_consent_needs_the_text_version_shown(
    services: Services, recorder: FakeRecorder
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    _host, client = await in_session(services, seeded)
    with pytest.raises(NotAllowed):
        await services.recordings.set_consent(client, version="recording-1999", given=True)
    state = await services.recordings.set_consent(client, version="anything", given=False)
    assert (state.given, state.version) == (False, VERSION)
    state = await services.recordings.set_consent(client, version=VERSION, given=True)
    assert (state.given, state.version) == (True, VERSION)
    again = await services.recordings.set_consent(client, version=VERSION, given=True)
    assert again == state
    records = await services.store.list_consents(seeded.appointment.id)
    assert [(r.participant_id, r.kind, r.text_version) for r in records] == [
        (seeded.client.id, ConsentKind.RECORDING, VERSION)
    ]


async def test_a_consent_to_an_older_text_does_not_count(
    services: Services, clock: FrozenClock
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)  # to the text in force until now
    reworded = ConsentText(version="recording-2099-1", text="New words.")
    recordings = RecordingService(
        store=services.store,
        clock=clock,
        audit=services.audit,
        events=services.events,
        waiting_room=services.waiting_room,
        consent_text=reworded,
    )
    await recordings.attach(FakeRecorder())
    try:
        assert await recordings.consent_of(seeded.client.id, seeded.appointment.id) == (
            ConsentState(given=False, version=reworded.version)
        )
        with pytest.raises(ConsentMissing) as refused:
            await recordings.start(host)
        assert refused.value.lacking == (seeded.host.id, seeded.client.id)
        assert await recordings.ask(host) == [seeded.host.id, seeded.client.id]
        # The host's view does not mark the client as agreed either.
        (row,) = await services.waiting_room.queue(host)
        assert row.recording_consent is False
        assert await recordings.consenting(seeded.appointment.id) == set()
        await recordings.set_consent(host, version=reworded.version, given=True)
        await recordings.set_consent(client, version=reworded.version, given=True)
        (row,) = await services.waiting_room.queue(host)
        assert row.recording_consent is True
        assert (await recordings.start(host)).active
    finally:
        await recordings.detach()


async def test_a_withdrawal_during_the_start_is_seen_before_any_media_is_taken(
    services: Services, recorder: FakeRecorder, events: list[Event]
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    store = services.store
    begin_recording = store.begin_recording

    async def a_withdrawal_lands_first(recording: Recording) -> bool:
        # The client withdraws (another socket, another process) after the start's check.
        await services.recordings.set_consent(client, version=VERSION, given=False)
        return await begin_recording(recording)

    store.begin_recording = a_withdrawal_lands_first  # type: ignore[method-assign]
    try:
        with pytest.raises(ConsentMissing) as refused:
            await services.recordings.start(host)
    finally:
        store.begin_recording = begin_recording  # type: ignore[method-assign]
    assert refused.value.lacking == (seeded.client.id,)
    assert recorder.calls == []  # the recorder never began
    assert await store.active_recording(seeded.appointment.id) is None
    kinds = [e.kind for e in events if e.kind.value.startswith("recording.")]
    assert kinds == [EventKind.RECORDING_REFUSED]


async def test_a_start_stopped_at_once_is_answered_as_refused(
    services: Services, recorder: FakeRecorder
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    begin = recorder.begin

    async def a_withdrawal_lands_while_the_recorder_starts(**options: object) -> None:
        await begin(**options)  # type: ignore[arg-type]
        await services.store.withdraw_consent(
            participant_id=seeded.client.id,
            session_id=seeded.appointment.id,
            kind=ConsentKind.RECORDING,
            at=services.clock.now(),
        )

    recorder.begin = a_withdrawal_lands_while_the_recorder_starts  # type: ignore[method-assign]
    with pytest.raises(ConsentMissing):
        await services.recordings.start(host)
    assert recorder.open == {}
    # What the recorder took is dropped, not sealed: nothing recorded after a withdrawal.
    (recording_id,) = [rid for call, rid in recorder.calls if call == "begin"]
    assert ("discard", recording_id) in recorder.calls
    assert ("end", recording_id) not in recorder.calls
    status = await services.recordings.status(await services.waiting_room.seat_of(host))
    assert not status.active


async def test_a_withdrawal_during_the_announcement_stops_the_media_at_once(
    services: Services, recorder: FakeRecorder, clock: FrozenClock
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    halted_while_starting: list[bool] = []

    async def withdraw() -> None:
        await services.recordings.set_consent(client, version=VERSION, given=False)

    async def on_event(event: Event) -> None:
        if event.kind is not EventKind.RECORDING_STARTED:
            return
        # The client withdraws from their own page while the start is announced (the
        # start holds the appointment's lock until it returns).
        withdrawal = asyncio.create_task(withdraw())
        halt = ("halt", event.extra["recording"])
        for _ in range(500):  # up to 5 s for the store's round trips
            if halt in recorder.calls:
                break
            await asyncio.sleep(0.01)
        halted_while_starting.append(halt in recorder.calls)
        assert not withdrawal.done()  # its stop waits for the lock

    services.events.subscribe(on_event)
    with pytest.raises(ConsentMissing):
        await services.recordings.start(host)
    assert halted_while_starting == [True]
    for _ in range(500):
        if not (await services.recordings.status(await services.waiting_room.seat_of(host))).active:
            break
        await asyncio.sleep(0.01)
    status = await services.recordings.status(await services.waiting_room.seat_of(host))
    assert not status.active


async def test_a_removed_client_gives_no_consent(
    services: Services, recorder: FakeRecorder
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await services.waiting_room.remove(host, seeded.client.id)
    with pytest.raises(NotAllowed):
        await services.recordings.set_consent(client, version=VERSION, given=True)


async def test_recording_consent_needs_the_sign_in_code_a_withdrawal_does_not(
    services: Services, recorder: FakeRecorder
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    _host, client = await in_session(services, seeded)
    # The same participant, from a session that has not given the room's sign-in code.
    unproven = replace(client, verified=False)
    with pytest.raises(NotAllowed, match="prove your identity"):
        await services.recordings.set_consent(unproven, version=VERSION, given=True)
    assert await services.store.list_consents(seeded.appointment.id) == []
    await services.recordings.set_consent(client, version=VERSION, given=True)
    state = await services.recordings.set_consent(unproven, version=VERSION, given=False)
    assert not state.given


# --- start and stop ------------------------------------------------------------------------------


async def test_start_and_stop_reach_audit_events_and_webhooks_and_link_the_consents(
    services: Services,
    recorder: FakeRecorder,
    events: list[Event],
    webhooks: WebhookDispatcher,
    clock: FrozenClock,
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    await with_webhook(services, seeded)
    host, client = await in_session(services, seeded)
    assert await services.recordings.ask(host) == [seeded.host.id, seeded.client.id]
    await everyone_agrees(services, host, client)
    assert await services.recordings.ask(host) == []

    clock.advance(1)
    recording = await services.recordings.start(host)
    assert recorder.open == {
        recording.id: (seeded.appointment.id, [seeded.host.id, seeded.client.id])
    }
    assert recording.audio_tracks == (seeded.host.id, seeded.client.id)
    # Starting again while it runs is the same recording.
    assert (await services.recordings.start(host)).id == recording.id
    status = await services.recordings.status(await services.waiting_room.seat_of(host))
    assert (status.active, status.allowed, status.recording_id) == (True, True, recording.id)

    clock.advance(60)
    stopped = await services.recordings.stop(host)
    assert stopped is not None
    assert recorder.calls == [
        ("begin", recording.id),
        ("halt", recording.id),
        ("end", recording.id),
    ]
    assert await services.recordings.stop(host) is None  # nothing runs any more

    record = await services.store.get_recording(recording.id)
    assert record is not None
    assert record == stopped
    assert record.stop_reason is StopReason.HOST
    assert record.stopped_at == clock.now()
    sealed_hash = hashlib.sha256(recording.id.encode()).hexdigest()
    assert record.sealed is not None
    assert record.sealed.sealed_hash == sealed_hash
    # The consent records of the session are linked to the sealed file.
    consents = await services.store.list_consents(seeded.appointment.id)
    assert len(record.consents) == 2
    assert all(any(link.matches(c) for c in consents) for link in record.consents)
    assert {link.participant_id for link in record.consents} == {seeded.host.id, seeded.client.id}

    recording_events = [e for e in events if e.kind.value.startswith("recording.")]
    assert [(e.kind, e.extra) for e in recording_events] == [
        (EventKind.RECORDING_STARTED, {"recording": recording.id}),
        (EventKind.RECORDING_STOPPED, {"recording": recording.id, "reason": "host"}),
    ]
    assert await audit_actions(services) == [
        ("recording.consent_asked", {"appointment": seeded.appointment.id, "asked": "2"}),
        ("recording.consent_asked", {"appointment": seeded.appointment.id, "asked": "0"}),
        ("recording.started", {"appointment": seeded.appointment.id, "recording": recording.id}),
        (
            "recording.stopped",
            {
                "appointment": seeded.appointment.id,
                "recording": recording.id,
                "reason": "host",
                "sealed_hash": sealed_hash,
            },
        ),
    ]
    bodies = {b["type"]: b["data"] for b in await webhook_bodies(services, clock)}
    ids = {"appointment_id": seeded.appointment.id, "room_id": seeded.room.id}
    assert bodies["recording.started"] == {**ids, "recording_id": recording.id}
    assert bodies["recording.stopped"] == {**ids, "recording_id": recording.id, "reason": "host"}


async def test_a_withdrawal_stops_the_recording_at_once(
    services: Services, recorder: FakeRecorder, events: list[Event]
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recording = await services.recordings.start(host)

    state = await services.recordings.set_consent(client, version=VERSION, given=False)
    assert not state.given
    # By the time the withdrawal is answered, nothing more is recorded.
    assert recorder.open == {}
    assert recorder.calls[-2:] == [("halt", recording.id), ("end", recording.id)]
    record = await services.store.get_recording(recording.id)
    assert record is not None
    assert record.stop_reason is StopReason.CONSENT_WITHDRAWN
    # The withdrawn consent was live while it ran: it is linked.
    assert seeded.client.id in {link.participant_id for link in record.consents}
    kinds = [e.kind for e in events]
    assert EventKind.CONSENT_WITHDRAWN in kinds
    assert EventKind.RECORDING_STOPPED in kinds
    with pytest.raises(ConsentMissing):
        await services.recordings.start(host)


async def test_the_hosts_withdrawal_stops_it_too(
    services: Services, recorder: FakeRecorder
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recording = await services.recordings.start(host)
    await services.recordings.set_consent(host, version=VERSION, given=False)
    record = await services.store.get_recording(recording.id)
    assert record is not None
    assert record.stop_reason is StopReason.CONSENT_WITHDRAWN


async def test_admitting_someone_without_consent_stops_it_with_consent_not(
    services: Services, recorder: FakeRecorder, clock: FrozenClock
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recording = await services.recordings.start(host)

    # A second client who agreed while waiting joins: the recording goes on.
    second_participant = await services.provisioning.add_client(
        appointment_id=seeded.appointment.id, display_name="Second", actor="test"
    )
    second = BrowserSession(
        participant_id=second_participant.id,
        appointment_id=seeded.appointment.id,
        role=client.role,
        created_at=clock.now(),
        expires_at=clock.now() + 3600,
        verified=True,
    )
    await services.store.transition_participant(
        second_participant.id,
        sources={second_participant.state},
        target=type(second_participant.state)("knocking"),
        at=clock.now(),
    )
    await services.waiting_room.get_in_line(second)
    await everyone_agrees(services, second)
    await services.waiting_room.admit(host, second_participant.id)
    assert recorder.has(recording.id)

    # A third who did not agree: admitted, and the recording stops.
    third_participant = await services.provisioning.add_client(
        appointment_id=seeded.appointment.id, display_name="Third", actor="test"
    )
    third = replace(second, participant_id=third_participant.id)
    await services.store.transition_participant(
        third_participant.id,
        sources={third_participant.state},
        target=type(third_participant.state)("knocking"),
        at=clock.now(),
    )
    await services.waiting_room.get_in_line(third)
    await services.waiting_room.admit(host, third_participant.id)
    assert not recorder.has(recording.id)
    record = await services.store.get_recording(recording.id)
    assert record is not None
    assert record.stop_reason is StopReason.PARTICIPANT_WITHOUT_CONSENT


async def test_the_end_of_the_session_stops_it(services: Services, recorder: FakeRecorder) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recording = await services.recordings.start(host)
    await services.waiting_room.end_by_host(host)
    record = await services.store.get_recording(recording.id)
    assert record is not None
    assert record.stop_reason is StopReason.SESSION_ENDED
    assert record.sealed is not None


async def test_shutdown_seals_every_open_recording(
    services: Services, recorder: FakeRecorder
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recording = await services.recordings.start(host)
    await services.recordings.stop_all()
    record = await services.store.get_recording(recording.id)
    assert record is not None
    assert record.stop_reason is StopReason.SHUTDOWN
    assert record.sealed is not None
    assert recorder.open == {}


async def test_a_recorder_that_fails_to_start_is_a_refusal(
    services: Services, recorder: FakeRecorder
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recorder.refuse = OSError("no space left")
    with pytest.raises(NotAllowed):
        await services.recordings.start(host)
    assert await services.store.active_recording(seeded.appointment.id) is None
    [record] = await services.store.list_recordings(seeded.appointment.id)
    assert record.stop_reason is StopReason.FAILED


async def test_the_record_still_names_the_consents_of_someone_erased_while_it_ran(
    services: Services, recorder: FakeRecorder, clock: FrozenClock
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recording = await services.recordings.start(host)
    clock.advance(30)
    owner = await services.store.get_host(seeded.room.host_id)
    assert owner is not None
    await services.erasure.erase(owner.platform_id, seeded.client.id, actor="test")
    clock.advance(30)

    stopped = await services.recordings.stop(host)

    assert stopped is not None
    assert stopped.id == recording.id
    assert {c.participant_id for c in stopped.consents} == {seeded.host.id, seeded.client.id}


# --- the watchdog --------------------------------------------------------------------------------


async def fast_service(services: Services) -> RecordingService:
    """The same service, with a watchdog that looks every 20 ms."""
    return RecordingService(
        store=services.store,
        clock=services.clock,
        audit=services.audit,
        events=services.events,
        waiting_room=services.waiting_room,
        check_interval=0.02,
    )


async def wait_until_finished(services: Services, recording_id: str) -> Recording:
    async with asyncio.timeout(5):
        while True:
            record = await services.store.get_recording(recording_id)
            assert record is not None
            if not record.active:
                return record
            await asyncio.sleep(0.01)


async def test_the_watchdog_stops_what_the_bus_did_not_carry(services: Services) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recordings = await fast_service(services)
    fake = FakeRecorder()
    await recordings.attach(fake)
    try:
        recording = await recordings.start(host)
        # Another process withdrew the consent: the store knows, this bus does not.
        await services.store.withdraw_consent(
            participant_id=seeded.client.id,
            session_id=seeded.appointment.id,
            kind=ConsentKind.RECORDING,
            at=services.clock.now(),
        )
        record = await wait_until_finished(services, recording.id)
        assert record.stop_reason is StopReason.CONSENT_WITHDRAWN
        assert fake.open == {}
    finally:
        await recordings.detach()


async def test_the_watchdog_stops_on_a_request_from_another_process_and_beats(
    services: Services, clock: FrozenClock
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recordings = await fast_service(services)
    fake = FakeRecorder()
    await recordings.attach(fake)
    try:
        recording = await recordings.start(host)
        clock.advance(2)
        async with asyncio.timeout(5):
            while True:  # the watchdog beats
                record = await services.store.get_recording(recording.id)
                assert record is not None
                if record.heartbeat_at == clock.now():
                    break
                await asyncio.sleep(0.01)
        await services.store.request_recording_stop(recording.id, reason=StopReason.HOST)
        record = await wait_until_finished(services, recording.id)
        assert record.stop_reason is StopReason.HOST
        assert record.sealed is not None
    finally:
        await recordings.detach()


async def test_a_failed_recorder_is_stopped_as_failed(services: Services) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recordings = await fast_service(services)
    fake = FakeRecorder()
    await recordings.attach(fake)
    try:
        recording = await recordings.start(host)
        fake.failing.add(recording.id)
        record = await wait_until_finished(services, recording.id)
        assert record.stop_reason is StopReason.FAILED
        assert record.sealed is None
    finally:
        await recordings.detach()


# --- several processes ---------------------------------------------------------------------------


async def test_a_recording_of_a_live_process_is_asked_to_stop_a_dead_ones_is_lost(
    services: Services, recorder: FakeRecorder, clock: FrozenClock
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    elsewhere = Recording(
        id=new_id("rec"),
        appointment_id=seeded.appointment.id,
        room_id=seeded.room.id,
        started_at=clock.now(),
        started_by=seeded.host.id,
        node="another-process",
        heartbeat_at=clock.now(),
    )
    assert await services.store.begin_recording(elsewhere)
    # Alive elsewhere: a start here gives that one, a stop here asks its process.
    assert (await services.recordings.start(host)).id == elsewhere.id
    asked = await services.recordings.stop(host)
    assert asked is not None
    assert asked.active
    assert asked.stop_reason is StopReason.HOST
    # Its process died (no beat for longer than stale_after): a new start replaces it.
    clock.advance(30)
    fresh = await services.recordings.start(host)
    assert fresh.id != elsewhere.id
    lost = await services.store.get_recording(elsewhere.id)
    assert lost is not None
    assert lost.stop_reason is StopReason.LOST
    assert lost.sealed is None


async def test_a_start_where_the_media_is_not_is_taken_up_where_it_is(services: Services) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recordings = await fast_service(services)
    fake = FakeRecorder()
    fake.media = set()  # another process carries this session's media (so far)
    await recordings.attach(fake)
    try:
        recording = await recordings.start(host)
        assert recording.node == ""
        assert fake.open == {}
        status = await recordings.status(await services.waiting_room.seat_of(host))
        assert status.active
        # The session's media comes to this process: it claims and writes the recording.
        fake.media = {seeded.appointment.id}
        async with asyncio.timeout(5):
            while True:  # the watchdog's next look
                if recording.id in fake.open:
                    break
                await asyncio.sleep(0.01)
        claimed = await services.store.get_recording(recording.id)
        assert claimed is not None
        assert claimed.node == recordings.node
        assert fake.open[recording.id] == (
            seeded.appointment.id,
            [seeded.host.id, seeded.client.id],
        )
        await recordings.set_consent(client, version=VERSION, given=False)
        record = await wait_until_finished(services, recording.id)
        assert record.stop_reason is StopReason.CONSENT_WITHDRAWN
        assert record.sealed is not None
    finally:
        await recordings.detach()


async def test_an_unclaimed_recording_stops_without_a_file(services: Services) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    fake = FakeRecorder()
    fake.media = set()
    await services.recordings.attach(fake)
    try:
        recording = await services.recordings.start(host)
        stopped = await services.recordings.stop(host)
        assert stopped is not None
        assert not stopped.active
        assert stopped.stop_reason is StopReason.HOST
        assert stopped.sealed is None
        assert fake.calls == []
        assert recording.id == stopped.id
    finally:
        await services.recordings.detach()


async def test_an_unclaimed_recording_too_old_to_take_up_is_lost(
    services: Services, clock: FrozenClock
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recordings = await fast_service(services)
    fake = FakeRecorder()
    fake.media = set()
    await recordings.attach(fake)
    try:
        recording = await recordings.start(host)
        clock.advance(6)  # pages show it as not recording by now (status)
        fake.media = {seeded.appointment.id}
        record = await wait_until_finished(services, recording.id)
        assert record.stop_reason is StopReason.LOST
        assert fake.calls == []
    finally:
        await recordings.detach()


async def test_a_recording_taken_up_elsewhere_is_checked_first(services: Services) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recordings = await fast_service(services)
    fake = FakeRecorder()
    fake.media = set()
    await recordings.attach(fake)
    try:
        recording = await recordings.start(host)
        # A withdrawal this process's bus never carried, before the media came here.
        await services.store.withdraw_consent(
            participant_id=seeded.client.id,
            session_id=seeded.appointment.id,
            kind=ConsentKind.RECORDING,
            at=services.clock.now(),
        )
        fake.media = {seeded.appointment.id}
        record = await wait_until_finished(services, recording.id)
        assert record.stop_reason is StopReason.CONSENT_WITHDRAWN
        assert fake.calls == []
    finally:
        await recordings.detach()


async def test_a_slow_seal_does_not_delay_stopping_another_recording(
    services: Services,
) -> None:
    first, second = await seed(services, policy=ALLOWED), await seed(services, policy=ALLOWED)
    sessions = [await in_session(services, seeded) for seeded in (first, second)]
    for host, client in sessions:
        await everyone_agrees(services, host, client)
    recordings = await fast_service(services)
    sealing = asyncio.Event()

    class SlowToSeal(FakeRecorder):
        async def end(self, recording_id: str) -> SealedFile | None:
            if self.open.get(recording_id, ("",))[0] == first.appointment.id:
                await sealing.wait()
            return await super().end(recording_id)

    fake = SlowToSeal()
    await recordings.attach(fake)
    try:
        slow = await recordings.start(sessions[0][0])
        other = await recordings.start(sessions[1][0])
        await services.store.request_recording_stop(slow.id, reason=StopReason.HOST)
        await asyncio.sleep(0.1)  # the watchdog is now sealing the first, slowly
        await services.store.withdraw_consent(
            participant_id=second.client.id,
            session_id=second.appointment.id,
            kind=ConsentKind.RECORDING,
            at=services.clock.now(),
        )
        record = await wait_until_finished(services, other.id)
        assert record.stop_reason is StopReason.CONSENT_WITHDRAWN
        sealing.set()
        assert (await wait_until_finished(services, slow.id)).stop_reason is StopReason.HOST
    finally:
        sealing.set()
        await recordings.detach()


async def test_the_media_node_finishes_a_recording_whose_writer_died(
    services: Services, clock: FrozenClock, events: list[Event]
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    await in_session(services, seeded)
    dead = Recording(
        id=new_id("rec"),
        appointment_id=seeded.appointment.id,
        room_id=seeded.room.id,
        started_at=clock.now(),
        started_by=seeded.host.id,
        node="a-process-that-died",
        heartbeat_at=clock.now(),
    )
    assert await services.store.begin_recording(dead)
    recordings = await fast_service(services)
    fake = FakeRecorder()
    fake.media = {seeded.appointment.id}  # the session's media moved here
    await recordings.attach(fake)
    try:
        clock.advance(10)
        record = await wait_until_finished(services, dead.id)
        assert record.stop_reason is StopReason.LOST
        assert record.sealed is None
        assert fake.calls == []
        async with asyncio.timeout(5):
            while True:  # the event follows the record
                stopped = [e.extra for e in events if e.kind is EventKind.RECORDING_STOPPED]
                if stopped:
                    break
                await asyncio.sleep(0.01)
        assert stopped == [{"recording": dead.id, "reason": "lost"}]
    finally:
        await recordings.detach()


async def test_a_withdrawal_the_store_cannot_take_still_stops_the_recording_here(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded = await seed(services, policy=ALLOWED)
    host, client = await in_session(services, seeded)
    await everyone_agrees(services, host, client)
    recordings = await fast_service(services)
    fake = FakeRecorder()
    await recordings.attach(fake)
    try:
        recording = await recordings.start(host)

        async def unreachable(**_: object) -> None:
            raise StoreUnavailable("redis unavailable (ConnectionError)")

        with monkeypatch.context() as patch:
            patch.setattr(services.store, "withdraw_consent", unreachable)
            with pytest.raises(StoreUnavailable):
                await recordings.set_consent(client, version=VERSION, given=False)
            # Sealed here at once, whatever the store says.
            assert fake.open == {}
        # The store is back: the record is finished with the sealed file.
        record = await wait_until_finished(services, recording.id)
        assert record.stop_reason is StopReason.CONSENT_WITHDRAWN
        assert record.sealed is not None
    finally:
        await recordings.detach()
