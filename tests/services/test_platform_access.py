"""What one platform may see: ownership through the host, and a bounded audit scan."""

from __future__ import annotations

import pytest

from gateway.clock import FrozenClock
from gateway.domain.audit import AuditDraft
from gateway.errors import NotFound
from gateway.services import Services
from gateway.services.platform_access import MAX_AUDIT_PAGE
from gateway.storage import MemoryStore, Store
from tests.factories import make_settings, seed


@pytest.fixture
def services(any_store: Store, clock: FrozenClock) -> Services:
    return Services.build(settings=make_settings(), store=any_store, clock=clock)


async def platform_of(services: Services, host_participant_id: str) -> str:
    participant = await services.store.get_participant(host_participant_id)
    assert participant is not None
    appointment = await services.store.get_appointment(participant.appointment_id)
    assert appointment is not None
    room = await services.store.get_room(appointment.room_id)
    assert room is not None
    host = await services.store.get_host(room.host_id)
    assert host is not None
    return host.platform_id


async def test_lookups_refuse_other_platforms_and_empty_ones(services: Services) -> None:
    mine, theirs = await seed(services), await seed(services)
    platform = await platform_of(services, mine.host.id)
    access = services.platform_access
    assert (await access.room(platform, mine.room.id)).id == mine.room.id
    assert (await access.participant(platform, mine.client.id)).id == mine.client.id
    for platform_id in (platform, "", "plt_AAAAAAAAAAAAAAAAAAAAAA"):
        with pytest.raises(NotFound, match="room"):
            await access.room(platform_id, theirs.room.id)
        with pytest.raises(NotFound, match="appointment"):
            await access.appointment(platform_id, theirs.appointment.id)
        with pytest.raises(NotFound, match="participant"):
            await access.participant(platform_id, theirs.client.id)
    with pytest.raises(NotFound, match="room"):
        await access.room(platform, "rm_" + "A" * 22)


async def test_the_audit_scan_is_bounded_and_resumes(
    memory_store: MemoryStore, clock: FrozenClock
) -> None:
    # Memory only: the scan is the service's logic; 6000 appends to Redis add nothing.
    store = memory_store
    services = Services.build(settings=make_settings(), store=store, clock=clock)
    seeded = await seed(services)
    platform = await platform_of(services, seeded.host.id)
    for n in range(6000):  # someone else's noise, beyond one request's scan
        await store.append_audit(AuditDraft(actor="other", action=f"noise.{n}"), at=clock.now())
    await services.audit.record("late.entry", actor="test", subjects={"platform": platform})

    first = await services.platform_access.audit_page(platform, limit=MAX_AUDIT_PAGE)
    assert first.next_after_seq is not None
    collected = list(first.entries)
    cursor = first.next_after_seq
    while cursor is not None:
        page = await services.platform_access.audit_page(platform, after_seq=cursor)
        collected.extend(page.entries)
        cursor = page.next_after_seq
    actions = [e.action for e in collected]
    assert "late.entry" in actions
    assert not any(a.startswith("noise.") for a in actions)


async def test_since_skips_straight_to_the_time(services: Services, clock: FrozenClock) -> None:
    seeded = await seed(services)
    platform = await platform_of(services, seeded.host.id)
    clock.advance(60)
    marker = await services.audit.record(
        "later.entry", actor="test", subjects={"platform": platform}
    )
    page = await services.platform_access.audit_page(platform, since=clock.now())
    assert [e.seq for e in page.entries] == [marker.seq]
    assert page.next_after_seq is None
    none = await services.platform_access.audit_page(platform, until=clock.now() - 3600)
    assert none.entries == []
