"""The waiting room's rules through the service, on both stores."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from gateway.clock import FrozenClock
from gateway.domain.links import LinkPurpose
from gateway.domain.model import BrowserSession, RoomPolicy
from gateway.domain.waiting_room import HostPresence, ParticipantState
from gateway.errors import (
    ConsentMissing,
    HostAbsent,
    IllegalTransition,
    InvalidInput,
    NotAllowed,
    NotFound,
    RoomLocked,
)
from gateway.services import Event, EventKind, Services
from gateway.storage import Store
from tests.factories import Seeded, make_settings, seed


@pytest.fixture
def services(any_store: Store, clock: FrozenClock) -> Services:
    return Services.build(settings=make_settings(), store=any_store, clock=clock)


@pytest.fixture
def events(services: Services) -> list[Event]:
    seen: list[Event] = []

    async def collect(event: Event) -> None:
        seen.append(event)

    services.events.subscribe(collect)
    return seen


async def client_session(
    services: Services, seeded: Seeded, *, verified: bool = True
) -> BrowserSession:
    redemption = await services.links.redeem(
        LinkPurpose.CLIENT_JOIN, seeded.client_path.removeprefix("/j/")
    )
    session = redemption.session
    return replace(session, verified=verified)


async def host_session(
    services: Services, seeded: Seeded, *, present: bool = True
) -> BrowserSession:
    redemption = await services.links.redeem(
        LinkPurpose.HOST_SIGN_IN, seeded.host_path.removeprefix("/h/")
    )
    host = replace(redemption.session, verified=True)
    if present:
        await services.waiting_room.host_arrived(host)
    return host


async def waiting(services: Services, seeded: Seeded) -> BrowserSession:
    client = await client_session(services, seeded)
    await services.waiting_room.get_in_line(client)
    return client


async def test_a_client_cannot_wait_before_proving_identity(services: Services) -> None:
    seeded = await seed(services)
    client = await client_session(services, seeded, verified=False)
    with pytest.raises(NotAllowed):
        await services.waiting_room.get_in_line(client)


async def test_identity_is_not_asked_when_the_room_does_not_require_it(services: Services) -> None:
    seeded = await seed(services, policy=RoomPolicy(client_totp_required=False))
    client = await client_session(services, seeded, verified=False)
    participant = await services.waiting_room.get_in_line(client)
    assert participant.state is ParticipantState.WAITING


async def test_telehealth_consent_is_required_when_the_room_asks(services: Services) -> None:
    seeded = await seed(services, policy=RoomPolicy(telehealth_consent_version="2026-01"))
    client = await client_session(services, seeded)
    with pytest.raises(ConsentMissing) as info:
        await services.waiting_room.get_in_line(client)
    assert info.value.lacking == (seeded.client.id,)
    with pytest.raises(NotAllowed):
        await services.waiting_room.accept_telehealth_consent(client, text_version="2025-12")
    record = await services.waiting_room.accept_telehealth_consent(client, text_version="2026-01")
    assert record.text_version == "2026-01"
    assert (await services.waiting_room.get_in_line(client)).state is ParticipantState.WAITING


async def test_telehealth_consent_is_taken_only_after_the_sign_in_code(
    services: Services,
) -> None:
    seeded = await seed(services, policy=RoomPolicy(telehealth_consent_version="2026-01"))
    client = await client_session(services, seeded, verified=False)
    with pytest.raises(NotAllowed, match="prove your identity"):
        await services.waiting_room.accept_telehealth_consent(client, text_version="2026-01")
    assert await services.store.list_consents(seeded.appointment.id) == []
    # Where the room asks no code, the link's holder is the one the room expects.
    open_room = await seed(
        services,
        policy=RoomPolicy(client_totp_required=False, telehealth_consent_version="2026-01"),
    )
    unverified = await client_session(services, open_room, verified=False)
    record = await services.waiting_room.accept_telehealth_consent(
        unverified, text_version="2026-01"
    )
    assert record.participant_id == open_room.client.id


async def test_a_locked_room_takes_no_new_knocks(services: Services) -> None:
    seeded = await seed(services)
    host = await host_session(services, seeded)
    client = await client_session(services, seeded)
    await services.waiting_room.set_locked(host, True)
    with pytest.raises(RoomLocked):
        await services.waiting_room.get_in_line(client)
    await services.waiting_room.set_locked(host, False)
    await services.waiting_room.get_in_line(client)


async def test_nobody_is_admitted_without_a_host_present(services: Services) -> None:
    seeded = await seed(services)
    host = await host_session(services, seeded, present=False)
    await waiting(services, seeded)
    with pytest.raises(HostAbsent):
        await services.waiting_room.admit(host, seeded.client.id)
    await services.waiting_room.host_arrived(host)
    assert (
        await services.waiting_room.admit(host, seeded.client.id)
    ).state is ParticipantState.ADMITTED


async def test_host_actions_need_a_verified_host_session(services: Services) -> None:
    seeded = await seed(services)
    client = await waiting(services, seeded)
    unverified_host = replace(await host_session(services, seeded), verified=False)
    for session in (client, unverified_host):
        with pytest.raises(NotAllowed):
            await services.waiting_room.admit(session, seeded.client.id)
        with pytest.raises(NotAllowed):
            await services.waiting_room.queue(session)
        with pytest.raises(NotAllowed):
            await services.waiting_room.end_by_host(session)


async def test_a_host_cannot_touch_another_appointments_client(services: Services) -> None:
    mine, theirs = await seed(services), await seed(services)
    host = await host_session(services, mine)
    await waiting(services, theirs)
    for forged in (theirs.client.id, theirs.host.id, "ptc_AAAAAAAAAAAAAAAAAAAAAA", 42, None):
        with pytest.raises(NotFound):
            await services.waiting_room.admit(host, forged)
        with pytest.raises(NotFound):
            await services.waiting_room.deny(host, forged)
    assert (
        await services.store.get_participant(theirs.client.id)
    ).state is ParticipantState.WAITING  # type: ignore[union-attr]


async def test_admit_is_exactly_once_under_concurrency(
    services: Services, events: list[Event]
) -> None:
    seeded = await seed(services)
    host = await host_session(services, seeded)
    await waiting(services, seeded)
    results = await asyncio.gather(
        *(services.waiting_room.admit(host, seeded.client.id) for _ in range(20)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 1
    assert all(isinstance(r, IllegalTransition) for r in results if isinstance(r, BaseException))
    assert [e.kind for e in events].count(EventKind.PARTICIPANT_ADMITTED) == 1


async def test_deny_and_remove_are_final(services: Services) -> None:
    seeded = await seed(services)
    host = await host_session(services, seeded)
    client = await waiting(services, seeded)
    await services.waiting_room.deny(host, seeded.client.id)
    with pytest.raises(IllegalTransition):
        await services.waiting_room.admit(host, seeded.client.id)
    with pytest.raises(IllegalTransition):
        await services.waiting_room.get_in_line(client)


async def test_admit_all_admits_everyone_waiting_only(services: Services) -> None:
    seeded = await seed(services)
    host = await host_session(services, seeded)
    await waiting(services, seeded)
    second = await services.provisioning.add_client(
        appointment_id=seeded.appointment.id, display_name="Second", actor="test"
    )
    admitted = await services.waiting_room.admit_all(host)
    assert [p.id for p in admitted] == [seeded.client.id]
    assert (await services.store.get_participant(second.id)).state is ParticipantState.INVITED  # type: ignore[union-attr]


async def test_the_queue_shows_state_verification_and_since(
    services: Services, clock: FrozenClock
) -> None:
    seeded = await seed(services)
    host = await host_session(services, seeded)
    client = await client_session(services, seeded)
    seat = await services.waiting_room.seat_of(client)
    await services.waiting_room.record_verified("0" * 64, seat)
    clock.advance(5)
    await services.waiting_room.get_in_line(client)
    [entry] = await services.waiting_room.queue(host)
    assert entry.participant_id == seeded.client.id
    assert entry.state is ParticipantState.WAITING
    assert entry.verified
    assert entry.since == clock.now()


async def test_host_messages_are_checked(services: Services) -> None:
    seeded = await seed(services)
    host = await host_session(services, seeded)
    await waiting(services, seeded)
    assert await services.waiting_room.message(
        host, seeded.client.id, "  Running  5 minutes late "
    ) == ("Running 5 minutes late")
    for bad in ("", "x" * 281, "bell\x07", 12, None):
        with pytest.raises(InvalidInput):
            await services.waiting_room.message(host, seeded.client.id, bad)


async def test_host_presence_follows_connections(services: Services, events: list[Event]) -> None:
    seeded = await seed(services)
    host = await host_session(services, seeded)
    await services.store.change_connections(seeded.host.id, 1)
    assert await services.waiting_room.host_gone(seeded.host.id) is None  # still connected
    await services.store.change_connections(seeded.host.id, -1)
    room = await services.waiting_room.host_gone(seeded.host.id)
    assert room is not None
    assert room.host_presence is HostPresence.AWAY
    assert EventKind.HOST_AWAY in [e.kind for e in events]
    assert host.participant_id == seeded.host.id


async def test_a_dropped_client_leaves_only_if_it_did_not_come_back(services: Services) -> None:
    seeded = await seed(services)
    await waiting(services, seeded)
    await services.store.change_connections(seeded.client.id, 1)
    assert await services.waiting_room.drop_after_grace(seeded.client.id) is None
    await services.store.change_connections(seeded.client.id, -1)
    left = await services.waiting_room.drop_after_grace(seeded.client.id)
    assert left is not None
    assert left.state is ParticipantState.LEFT


async def test_ending_the_session_ends_every_browser_session(
    services: Services, events: list[Event]
) -> None:
    seeded = await seed(services)
    host = await host_session(services, seeded)
    client = await waiting(services, seeded)
    await services.waiting_room.end_by_host(host)
    with pytest.raises(NotAllowed):
        await services.waiting_room.get_in_line(client)
    participant = await services.store.get_participant(seeded.client.id)
    assert participant is not None
    assert participant.state is ParticipantState.LEFT
    assert events[-1].kind is EventKind.SESSION_ENDED
    with pytest.raises(NotFound):
        await services.waiting_room.end(appointment_id="apt_AAAAAAAAAAAAAAAAAAAAAA", actor="t")


async def test_events_carry_ids_only(services: Services, events: list[Event]) -> None:
    seeded = await seed(services)
    host = await host_session(services, seeded)
    await waiting(services, seeded)
    await services.waiting_room.admit(host, seeded.client.id)
    for event in events:
        assert seeded.client.display_name not in repr(event)
        assert seeded.host.display_name not in repr(event)
