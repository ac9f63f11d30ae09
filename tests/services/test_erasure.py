"""Erasing a participant's data at the platform's request, through the service, on both
stores: nothing of theirs is left but ids, a live session loses them first, the host is
refused while the session runs, a repeat is harmless, and the audit chain verifies."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.clock import FrozenClock
from gateway.domain.audit import AuditEntry
from gateway.domain.consent import ConsentKind
from gateway.domain.links import LinkPurpose
from gateway.domain.model import BrowserSession, RoomPolicy
from gateway.domain.retention import ERASED_ACTION, GoneReason
from gateway.domain.waiting_room import ParticipantState
from gateway.errors import ErasureRefused, LinkInvalid, NotFound
from gateway.services import Event, EventKind, Services
from gateway.storage import Store
from tests.factories import Seeded, make_settings, seed

DAY = 86400.0
KEY = "key_AAAAAAAAAAAAAAAAAAAAAA"


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


async def platform_of(services: Services, seeded: Seeded) -> str:
    host = await services.store.get_host(seeded.room.host_id)
    assert host is not None
    return host.platform_id


async def client_session(services: Services, seeded: Seeded) -> tuple[str, BrowserSession]:
    redemption = await services.links.redeem(
        LinkPurpose.CLIENT_JOIN, seeded.client_path.removeprefix("/j/")
    )
    session = replace(redemption.session, verified=True)
    return redemption.session_token, session


async def entries(services: Services) -> list[AuditEntry]:
    anchor = await services.store.audit_anchor()
    return await services.store.read_audit(after_seq=anchor.seq, limit=10_000)


async def test_erasure_leaves_nothing_of_the_participant_but_ids(
    services: Services, clock: FrozenClock
) -> None:
    seeded = await seed(services, policy=RoomPolicy(telehealth_consent_version="tele-1"))
    platform = await platform_of(services, seeded)
    await services.identity.enrol(seeded.client.id, actor="test")
    token, session = await client_session(services, seeded)
    await services.waiting_room.accept_telehealth_consent(session, text_version="tele-1")
    clock.advance(60)

    tombstone = await services.erasure.erase(platform, seeded.client.id, actor=KEY)

    assert (tombstone.participant_id, tombstone.appointment_id) == (
        seeded.client.id,
        seeded.appointment.id,
    )
    assert (tombstone.at, tombstone.reason) == (clock.now(), GoneReason.ERASED)
    store = services.store
    assert await store.get_participant(seeded.client.id) is None
    assert await store.get_totp_secret(seeded.client.id) is None
    assert await services.sessions.resolve(token) is None
    assert await store.list_consents(seeded.appointment.id) == []
    assert [p.id for p in await store.list_participants(seeded.appointment.id)] == [seeded.host.id]
    # The audit log keeps its entries (ids only), gets the tombstone, and verifies.
    log = await entries(services)
    assert log[-1].action == ERASED_ACTION
    assert log[-1].actor == KEY
    assert dict(log[-1].subjects) == {
        "appointment": seeded.appointment.id,
        "participant": seeded.client.id,
    }
    assert any(e.action == "consent.given" for e in log)
    report = await services.audit.verify()
    assert report.head_seq == log[-1].seq


async def test_an_erased_participant_is_gone_everywhere(services: Services) -> None:
    seeded = await seed(services)
    platform = await platform_of(services, seeded)
    await services.erasure.erase(platform, seeded.client.id, actor=KEY)

    with pytest.raises(NotFound):
        await services.platform_access.participant(platform, seeded.client.id)
    with pytest.raises(NotFound):
        await services.platform_access.records(platform, seeded.client.id)
    with pytest.raises(NotFound):
        await services.links.issue(
            LinkPurpose.CLIENT_JOIN, participant_id=seeded.client.id, actor=KEY
        )
    # A link issued before the erasure opens nothing.
    with pytest.raises(LinkInvalid):
        await services.links.redeem(LinkPurpose.CLIENT_JOIN, seeded.client_path.removeprefix("/j/"))


async def test_a_waiting_client_is_removed_from_the_session_first(
    services: Services, events: list[Event]
) -> None:
    seeded = await seed(services, policy=RoomPolicy(client_totp_required=False))
    platform = await platform_of(services, seeded)
    _, session = await client_session(services, seeded)
    await services.waiting_room.get_in_line(session)
    events.clear()

    await services.erasure.erase(platform, seeded.client.id, actor=KEY)

    # The host's Remove, as far as everyone else can tell: media stops, both are told.
    assert [(e.kind, e.participant_id) for e in events] == [
        (EventKind.PARTICIPANT_REMOVED, seeded.client.id)
    ]
    actions = [e.action for e in await entries(services)]
    assert actions[-2:] == ["participant.remove", ERASED_ACTION]


async def test_a_knocking_client_leaves_first(services: Services, events: list[Event]) -> None:
    seeded = await seed(services)
    platform = await platform_of(services, seeded)
    await client_session(services, seeded)
    participant = await services.store.get_participant(seeded.client.id)
    assert participant is not None
    assert participant.state is ParticipantState.KNOCKING
    events.clear()
    await services.erasure.erase(platform, seeded.client.id, actor=KEY)
    assert [e.kind for e in events] == [EventKind.PARTICIPANT_LEFT]


async def test_a_client_never_in_the_session_just_goes(
    services: Services, events: list[Event]
) -> None:
    seeded = await seed(services)
    await services.erasure.erase(await platform_of(services, seeded), seeded.client.id, actor=KEY)
    assert events == []


async def test_the_hosts_participant_waits_for_the_end_of_the_session(services: Services) -> None:
    seeded = await seed(services)
    platform = await platform_of(services, seeded)
    with pytest.raises(ErasureRefused) as refused:
        await services.erasure.erase(platform, seeded.host.id, actor=KEY)
    assert refused.value.code == "erasure_refused"
    assert refused.value.participant_id == seeded.host.id
    assert await services.store.get_participant(seeded.host.id) is not None

    await services.waiting_room.end(appointment_id=seeded.appointment.id, actor=KEY)
    tombstone = await services.erasure.erase(platform, seeded.host.id, actor=KEY)
    assert tombstone.participant_id == seeded.host.id


async def test_erasing_twice_answers_the_same_and_changes_nothing(
    services: Services, clock: FrozenClock
) -> None:
    seeded = await seed(services)
    platform = await platform_of(services, seeded)
    first = await services.erasure.erase(platform, seeded.client.id, actor=KEY)
    head = await services.store.audit_head()
    clock.advance(3600)
    assert await services.erasure.erase(platform, seeded.client.id, actor=KEY) == first
    assert await services.store.audit_head() == head


async def test_another_platform_cannot_erase_or_learn_anything(services: Services) -> None:
    mine, theirs = await seed(services), await seed(services)
    platform = await platform_of(services, mine)
    for participant_id in (theirs.client.id, "ptc_" + "A" * 22, "not an id", ""):
        with pytest.raises(NotFound, match="participant"):
            await services.erasure.erase(platform, participant_id, actor=KEY)
    assert await services.store.get_participant(theirs.client.id) is not None
    # Nor after the owner erased it: the tombstone is theirs too.
    await services.erasure.erase(await platform_of(services, theirs), theirs.client.id, actor=KEY)
    with pytest.raises(NotFound, match="participant"):
        await services.erasure.erase(platform, theirs.client.id, actor=KEY)


async def test_a_participant_purged_by_the_retention_answers_with_its_tombstone(
    services: Services, clock: FrozenClock
) -> None:
    seeded = await seed(services)
    platform = await platform_of(services, seeded)
    await services.waiting_room.end(appointment_id=seeded.appointment.id, actor=KEY)
    clock.advance(31 * DAY)
    report = await services.retention.run_once()
    assert report.participants == 2
    head = await services.store.audit_head()
    tombstone = await services.erasure.erase(platform, seeded.client.id, actor=KEY)
    assert tombstone.reason is GoneReason.RETENTION
    assert await services.store.audit_head() == head


async def test_the_platform_still_reads_its_audit_entries_about_an_erased_participant(
    services: Services,
) -> None:
    mine, theirs = await seed(services), await seed(services)
    platform = await platform_of(services, mine)
    # totp.enrolled names the participant only: its owner comes from the tombstone.
    await services.identity.enrol(mine.client.id, actor=KEY)
    await services.identity.enrol(theirs.client.id, actor=KEY)
    await services.erasure.erase(platform, mine.client.id, actor=KEY)

    page = await services.platform_access.audit_page(platform, limit=1000)
    about_mine = [e for e in page.entries if e.subjects.get("participant") == mine.client.id]
    assert [e.action for e in about_mine if e.action.startswith(("totp.", "participant.e"))] == [
        "totp.enrolled",
        ERASED_ACTION,
    ]
    assert not any(e.subjects.get("participant") == theirs.client.id for e in page.entries)


async def test_other_participants_keep_their_consent(services: Services) -> None:
    seeded = await seed(services, policy=RoomPolicy(telehealth_consent_version="tele-1"))
    platform = await platform_of(services, seeded)
    second = await services.provisioning.add_client(
        appointment_id=seeded.appointment.id, display_name="Other client", actor="test"
    )
    link = await services.links.issue(
        LinkPurpose.CLIENT_JOIN, participant_id=second.id, actor="test"
    )
    _, first_session = await client_session(services, seeded)
    redemption = await services.links.redeem(LinkPurpose.CLIENT_JOIN, link.url.rsplit("/j/")[1])
    second_session = replace(redemption.session, verified=True)
    for session in (first_session, second_session):
        await services.waiting_room.accept_telehealth_consent(session, text_version="tele-1")

    await services.erasure.erase(platform, seeded.client.id, actor=KEY)

    consents = await services.store.list_consents(seeded.appointment.id)
    assert [(c.participant_id, c.kind, c.live) for c in consents] == [
        (second.id, ConsentKind.TELEHEALTH, True)
    ]
    waiting = await services.waiting_room.get_in_line(second_session)
    assert waiting.state is ParticipantState.WAITING
