"""The data-lifecycle part of the Store contract, on MemoryStore and a real Redis:
pruning the audit log from an anchor, erasing a participant, purging and forgetting
ended appointments, forgetting expired state.

Bad cases first: repeats and races change nothing twice, a refused step changes nothing,
and what must survive (other participants, the chain) does.
"""

from __future__ import annotations

import asyncio
import time

from gateway.domain.audit import NO_ANCHOR, AuditAnchor, AuditDraft, AuditEntry, ChainVerifier
from gateway.domain.consent import ConsentKind, give
from gateway.domain.ids import new_id
from gateway.domain.model import Appointment, BrowserSession, Participant, Role
from gateway.domain.retention import (
    APPOINTMENT_PURGED_ACTION,
    ERASED_ACTION,
    Erasure,
    GoneReason,
    erased_record,
)
from gateway.domain.totp import new_secret
from gateway.domain.waiting_room import ParticipantState
from gateway.storage import MemoryStore, RedisStore, SecretBox, Store
from tests.fixtures.servers import RedisServer

T0 = 1_800_000_000.25
DAY = 86400.0


# --- builders ---------------------------------------------------------------------------------


def a_draft(n: int) -> AuditDraft:
    return AuditDraft(
        actor="par_AAAAAAAAAAAAAAAAAAAAAA", action="room.knock", subjects={"n": str(n)}
    )


async def a_log(store: Store, count: int, *, start: float = T0) -> None:
    """``count`` entries, one a day."""
    for n in range(count):
        await store.append_audit(a_draft(n), at=start + n * DAY)


async def whole_log(store: Store) -> list[AuditEntry]:
    anchor = await store.audit_anchor()
    return await store.read_audit(after_seq=anchor.seq, limit=100_000)


async def verifies(store: Store) -> int:
    """How many entries the log holds, after checking it from its anchor to its head."""
    verifier = ChainVerifier(anchor=await store.audit_anchor())
    verifier.feed(await whole_log(store))
    return verifier.finish(await store.audit_head())


async def an_appointment(store: Store, *, ended_at: float | None = None) -> Appointment:
    appointment = Appointment(id=new_id("apt"), room_id=new_id("rm"), created_at=T0)
    await store.put_appointment(appointment)
    if ended_at is not None:
        ended_now, ended = await store.end_appointment(appointment.id, ended_at)
        assert ended_now
        assert ended is not None
        appointment = ended
    return appointment


async def a_participant(
    store: Store, appointment_id: str, *, role: Role = Role.CLIENT
) -> Participant:
    participant = Participant(
        id=new_id("ptc"),
        appointment_id=appointment_id,
        role=role,
        display_name="Zelda Marker-Client",
        state=ParticipantState.WAITING,
        state_since=T0,
        created_at=T0,
    )
    await store.put_participant(participant)
    return participant


async def with_everything(store: Store, participant: Participant, *, now: float = T0) -> str:
    """TOTP secret, used step, attempts, a live connection, a browser session and both
    kinds of consent (one withdrawn) for the participant; returns the session's hash."""
    await store.set_totp_secret(participant.id, new_secret())
    assert await store.use_totp_step(participant.id, 100)
    await store.begin_totp_attempt(participant.id, limit=5, cooldown=900, now=now)
    await store.change_connections(participant.id, 1)
    session_hash = new_id("ses")
    await store.create_session(
        session_hash,
        BrowserSession(
            participant_id=participant.id,
            appointment_id=participant.appointment_id,
            role=participant.role,
            created_at=now,
            expires_at=now + 3600,  # (T0 is in the future: Redis keeps it that long)
        ),
    )
    for kind in ConsentKind:
        await store.give_consent(
            give(
                participant_id=participant.id,
                session_id=participant.appointment_id,
                kind=kind,
                text_version="v1",
                at=now,
            )
        )
    await store.withdraw_consent(
        participant_id=participant.id,
        session_id=participant.appointment_id,
        kind=ConsentKind.RECORDING,
        at=now + 1,
    )
    return session_hash


async def erase(store: Store, participant: Participant, *, at: float = T0 + 10) -> Erasure | None:
    return await store.erase_participant(
        participant.id,
        appointment_id=participant.appointment_id,
        record=erased_record(
            participant_id=participant.id,
            appointment_id=participant.appointment_id,
            actor="key_AAAAAAAAAAAAAAAAAAAAAA",
        ),
        at=at,
    )


# --- pruning the audit log --------------------------------------------------------------------


async def test_an_unpruned_log_has_no_anchor_and_nothing_to_prune(store: Store) -> None:
    assert await store.audit_anchor() == NO_ANCHOR
    assert await store.prune_audit(before=T0 + DAY, limit=100, actor="retention", at=T0) is None
    await a_log(store, 3)
    assert await store.prune_audit(before=T0, limit=100, actor="retention", at=T0) is None
    assert await store.audit_anchor() == NO_ANCHOR
    assert await verifies(store) == 3


async def test_prune_removes_the_old_head_of_the_log_and_anchors_the_rest(store: Store) -> None:
    await a_log(store, 10)
    fifth = (await store.read_audit(after_seq=4, limit=1))[0]
    now = T0 + 20 * DAY

    pruned = await store.prune_audit(before=T0 + 4.5 * DAY, limit=100, actor="retention", at=now)

    assert pruned is not None
    assert pruned.entries == 5
    assert pruned.anchor == AuditAnchor(seq=5, hash=fifth.hash)
    assert await store.audit_anchor() == pruned.anchor
    # The prune is on record, chained after the newest entry, naming the anchor.
    assert (pruned.entry.seq, pruned.entry.action, pruned.entry.actor) == (
        11,
        "audit.pruned",
        "retention",
    )
    assert dict(pruned.entry.subjects) == {
        "through_seq": "5",
        "through_hash": fifth.hash,
        "entries": "5",
    }
    assert await store.audit_head() == (11, pruned.entry.hash)
    # Reading by seq still works: the removed ones are simply not there.
    assert [e.seq for e in await store.read_audit(after_seq=0, limit=3)] == [6, 7, 8]
    assert [e.seq for e in await store.read_audit(after_seq=7, limit=2)] == [8, 9]
    assert [e.seq for e in await store.read_audit(after_seq=10)] == [11]
    assert await verifies(store) == 6
    # Appending goes on from the head.
    later = await store.append_audit(a_draft(99), at=now + 1)
    assert later.seq == 12
    assert later.prev_hash == pruned.entry.hash
    assert await verifies(store) == 7


async def test_prune_is_bounded_and_goes_on_where_it_stopped(store: Store) -> None:
    await a_log(store, 10)
    now = T0 + 20 * DAY
    first = await store.prune_audit(before=now, limit=3, actor="retention", at=now)
    assert first is not None
    assert (first.entries, first.anchor.seq) == (3, 3)
    second = await store.prune_audit(before=now, limit=3, actor="retention", at=now)
    assert second is not None
    assert (second.entries, second.anchor.seq) == (3, 6)
    assert await verifies(store) == 6  # entries 7..10 and the two audit.pruned entries


async def test_pruning_every_entry_leaves_the_pruned_entry_as_the_log(store: Store) -> None:
    await a_log(store, 4)
    now = T0 + 20 * DAY
    pruned = await store.prune_audit(before=now, limit=100, actor="retention", at=now)
    assert pruned is not None
    assert pruned.entries == 4
    assert [e.seq for e in await whole_log(store)] == [5]
    assert await verifies(store) == 1
    assert (await store.append_audit(a_draft(5), at=now)).seq == 6
    assert await verifies(store) == 2


async def test_concurrent_prunes_remove_each_entry_once(store: Store) -> None:
    await a_log(store, 30)
    now = T0 + 40 * DAY
    results = await asyncio.gather(
        *(
            store.prune_audit(before=T0 + 19.5 * DAY, limit=5, actor="retention", at=now)
            for _ in range(8)
        )
    )
    pruned = [r for r in results if r is not None]
    assert sum(r.entries for r in pruned) <= 20
    # Whatever ran, the chain holds and nothing was removed twice.
    anchor = await store.audit_anchor()
    assert anchor.seq == sum(r.entries for r in pruned)
    assert await verifies(store) == 30 - anchor.seq + len(pruned)


async def test_prunes_and_appends_race_into_one_chain(store: Store) -> None:
    await a_log(store, 20)
    now = T0 + 40 * DAY
    await asyncio.gather(
        *(store.append_audit(a_draft(100 + n), at=now) for n in range(20)),
        *(
            store.prune_audit(before=T0 + 10 * DAY, limit=2, actor="retention", at=now)
            for _ in range(5)
        ),
    )
    assert await verifies(store) >= 20


async def test_two_redis_stores_prune_one_log_once(
    redis_store: RedisStore, redis_server: RedisServer, secret_box: SecretBox
) -> None:
    # Two gateway processes sweeping at once.
    other = RedisStore.from_url(redis_server.url, secret_box=secret_box, prefix=redis_store.prefix)
    try:
        await a_log(redis_store, 40)
        now = T0 + 60 * DAY
        results = await asyncio.gather(
            *(
                (redis_store if n % 2 else other).prune_audit(
                    before=T0 + 29.5 * DAY, limit=4, actor="retention", at=now
                )
                for n in range(10)
            ),
            *(other.append_audit(a_draft(n), at=now) for n in range(10)),
        )
        pruned = [r for r in results[:10] if r is not None]
        anchor = await other.audit_anchor()
        assert anchor.seq == sum(r.entries for r in pruned)
        assert await verifies(redis_store) == 40 + 10 + len(pruned) - anchor.seq
    finally:
        await other.close()


# --- erasing a participant --------------------------------------------------------------------


async def test_erasure_removes_every_piece_of_the_participants_data(store: Store) -> None:
    appointment = await an_appointment(store)
    zelda = await a_participant(store, appointment.id)
    other = await a_participant(store, appointment.id)
    zelda_session = await with_everything(store, zelda)
    other_session = await with_everything(store, other)
    await a_log(store, 2)

    erasure = await erase(store, zelda)

    assert erasure is not None
    assert (erasure.sessions, erasure.consents) == (1, 2)
    assert erasure.tombstone.participant_id == zelda.id
    assert erasure.tombstone.appointment_id == appointment.id
    assert erasure.tombstone.reason is GoneReason.ERASED
    assert await store.get_participant(zelda.id) is None
    assert await store.get_totp_secret(zelda.id) is None
    assert await store.get_session(zelda_session, now=T0) is None
    assert await store.change_connections(zelda.id, 0) == 0
    # Attempts and used steps are gone too: a new enrolment would start clean.
    grant = await store.begin_totp_attempt(zelda.id, limit=1, cooldown=900, now=T0 + 20)
    assert grant.allowed
    assert await store.use_totp_step(zelda.id, 1)
    assert [p.id for p in await store.list_participants(appointment.id)] == [other.id]
    assert await store.get_participant_tombstone(zelda.id) == erasure.tombstone
    # The audit entry is on record in the same step, ids only.
    assert erasure.entry.action == ERASED_ACTION
    assert dict(erasure.entry.subjects) == {"appointment": appointment.id, "participant": zelda.id}
    assert await store.audit_head() == (erasure.entry.seq, erasure.entry.hash)
    assert await verifies(store) == 3
    # Nobody else lost anything.
    assert await store.get_participant(other.id) is not None
    assert await store.get_totp_secret(other.id) is not None
    assert await store.get_session(other_session, now=T0) is not None
    consents = await store.list_consents(appointment.id)
    assert {(c.participant_id, c.kind, c.live) for c in consents} == {
        (other.id, ConsentKind.TELEHEALTH, True),
        (other.id, ConsentKind.RECORDING, False),
    }


async def test_consents_kept_after_an_erasure_still_behave(store: Store) -> None:
    # The records left behind are renumbered: the live one is still the live one.
    appointment = await an_appointment(store)
    first = await a_participant(store, appointment.id)
    kept = await a_participant(store, appointment.id)
    await with_everything(store, first)
    await with_everything(store, kept)
    assert await erase(store, first) is not None

    again = give(
        participant_id=kept.id,
        session_id=appointment.id,
        kind=ConsentKind.TELEHEALTH,
        text_version="v2",
        at=T0 + 30,
    )
    assert (await store.give_consent(again)).text_version == "v1"  # live one kept
    withdrawn = await store.withdraw_consent(
        participant_id=kept.id, session_id=appointment.id, kind=ConsentKind.TELEHEALTH, at=T0 + 40
    )
    assert withdrawn is not None
    assert withdrawn.withdrawn_at == T0 + 40
    records = await store.list_consents(appointment.id)
    assert [(c.kind, c.withdrawn_at) for c in records] == [
        (ConsentKind.TELEHEALTH, T0 + 40),
        (ConsentKind.RECORDING, T0 + 1),
    ]


async def test_erasing_twice_or_in_the_wrong_appointment_changes_nothing(store: Store) -> None:
    appointment = await an_appointment(store)
    zelda = await a_participant(store, appointment.id)
    await with_everything(store, zelda)
    wrong = Participant.from_dict({**zelda.to_dict(), "appointment_id": new_id("apt")})
    assert await erase(store, wrong) is None
    assert await store.get_participant(zelda.id) == zelda
    assert (await store.audit_head())[0] == 0

    first = await erase(store, zelda)
    assert first is not None
    head = await store.audit_head()
    assert await erase(store, zelda, at=T0 + 99) is None
    assert await store.audit_head() == head
    assert await store.get_participant_tombstone(zelda.id) == first.tombstone


async def test_concurrent_erasures_erase_once(store: Store) -> None:
    appointment = await an_appointment(store)
    zelda = await a_participant(store, appointment.id)
    await with_everything(store, zelda)
    results = await asyncio.gather(*(erase(store, zelda) for _ in range(10)))
    assert len([r for r in results if r is not None]) == 1
    entries = await whole_log(store)
    assert [e.action for e in entries] == [ERASED_ACTION]


async def test_the_tombstone_of_someone_never_erased_is_none(store: Store) -> None:
    appointment = await an_appointment(store)
    zelda = await a_participant(store, appointment.id)
    assert await store.get_participant_tombstone(zelda.id) is None
    assert await store.get_participant_tombstone(new_id("ptc")) is None


# --- purging and forgetting ended appointments ------------------------------------------------


async def test_open_appointments_are_those_not_ended_oldest_first(store: Store) -> None:
    made = []
    for n in range(4):
        appointment = Appointment(id=new_id("apt"), room_id=new_id("rm"), created_at=T0 + n)
        await store.put_appointment(appointment)
        made.append(appointment.id)
    await store.put_appointment(
        Appointment(id=new_id("apt"), room_id=new_id("rm"), created_at=T0 - 5, ended_at=T0)
    )
    assert (await store.end_appointment(made[1], T0 + 10))[0]

    assert await store.open_appointments(created_before=T0 + 100, limit=10) == [
        made[0],
        made[2],
        made[3],
    ]
    # Created at the cutoff is not before it; the limit takes the oldest.
    assert await store.open_appointments(created_before=T0 + 2, limit=10) == [made[0]]
    assert await store.open_appointments(created_before=T0 + 100, limit=2) == [made[0], made[2]]
    assert await store.open_appointments(created_before=T0 + 100, limit=0) == []
    # Ending twice changes nothing; an appointment that is gone leaves the index anyway.
    assert (await store.end_appointment(made[0], T0 + 20))[0]
    assert not (await store.end_appointment(made[0], T0 + 30))[0]
    assert await store.end_appointment(new_id("apt"), T0 + 30) == (False, None)
    assert await store.open_appointments(created_before=T0 + 100, limit=10) == [made[2], made[3]]


async def test_an_appointment_put_again_as_ended_is_no_longer_open(store: Store) -> None:
    appointment = await an_appointment(store)
    assert await store.open_appointments(created_before=T0 + 1, limit=10) == [appointment.id]
    await store.put_appointment(
        Appointment(id=appointment.id, room_id=appointment.room_id, created_at=T0, ended_at=T0)
    )
    assert await store.open_appointments(created_before=T0 + 1, limit=10) == []


async def test_purge_takes_ended_appointments_past_the_cutoff_only(store: Store) -> None:
    old = await an_appointment(store, ended_at=T0 + 1 * DAY)
    recent = await an_appointment(store, ended_at=T0 + 5 * DAY)
    live = await an_appointment(store)
    people = {}
    sessions = {}
    for appointment in (old, recent, live):
        host = await a_participant(store, appointment.id, role=Role.HOST)
        client = await a_participant(store, appointment.id)
        sessions[appointment.id] = await with_everything(store, client)
        people[appointment.id] = (host, client)
    now = T0 + 40 * DAY

    purged = await store.purge_ended_appointments(
        ended_before=T0 + 3 * DAY, limit=10, actor="retention", at=now
    )

    assert [(p.appointment_id, p.participants) for p in purged] == [(old.id, 2)]
    assert purged[0].entry.action == APPOINTMENT_PURGED_ACTION
    assert dict(purged[0].entry.subjects) == {"appointment": old.id}
    assert await store.list_participants(old.id) == []
    for participant in people[old.id]:
        assert await store.get_participant(participant.id) is None
        assert await store.get_totp_secret(participant.id) is None
        tombstone = await store.get_participant_tombstone(participant.id)
        assert tombstone is not None
        assert (tombstone.appointment_id, tombstone.at, tombstone.reason) == (
            old.id,
            now,
            GoneReason.RETENTION,
        )
    assert await store.list_consents(old.id) == []
    assert await store.get_session(sessions[old.id], now=T0) is None
    # The appointment itself (ids and times) stays, so audit entries keep their owner.
    assert await store.get_appointment(old.id) == old
    # Nothing else was touched.
    for appointment in (recent, live):
        assert len(await store.list_participants(appointment.id)) == 2
        assert len(await store.list_consents(appointment.id)) == 2
        assert await store.get_session(sessions[appointment.id], now=T0) is not None
    assert await verifies(store) == 1
    # Purging again finds nothing new.
    assert (
        await store.purge_ended_appointments(
            ended_before=T0 + 3 * DAY, limit=10, actor="retention", at=now
        )
        == []
    )


async def test_purge_is_bounded_oldest_first(store: Store) -> None:
    ended = [await an_appointment(store, ended_at=T0 + n * DAY) for n in (3, 1, 2)]
    now = T0 + 40 * DAY
    first = await store.purge_ended_appointments(
        ended_before=now, limit=2, actor="retention", at=now
    )
    assert [p.appointment_id for p in first] == [ended[1].id, ended[2].id]
    rest = await store.purge_ended_appointments(
        ended_before=now, limit=2, actor="retention", at=now
    )
    assert [p.appointment_id for p in rest] == [ended[0].id]


async def test_an_appointment_put_already_ended_is_purged_too(store: Store) -> None:
    appointment = Appointment(
        id=new_id("apt"), room_id=new_id("rm"), created_at=T0, ended_at=T0 + DAY
    )
    await store.put_appointment(appointment)
    await a_participant(store, appointment.id)
    purged = await store.purge_ended_appointments(
        ended_before=T0 + 2 * DAY, limit=10, actor="retention", at=T0 + 3 * DAY
    )
    assert [(p.appointment_id, p.participants) for p in purged] == [(appointment.id, 1)]


async def test_concurrent_purges_purge_each_appointment_once(store: Store) -> None:
    for n in range(6):
        appointment = await an_appointment(store, ended_at=T0 + n)
        await a_participant(store, appointment.id)
    now = T0 + 40 * DAY
    results = await asyncio.gather(
        *(
            store.purge_ended_appointments(ended_before=now, limit=4, actor="retention", at=now)
            for _ in range(5)
        )
    )
    ids = [p.appointment_id for batch in results for p in batch]
    assert len(ids) == len(set(ids)) == 6
    assert [e.action for e in await whole_log(store)] == [APPOINTMENT_PURGED_ACTION] * 6
    assert await verifies(store) == 6


async def test_erased_then_purged_keeps_the_erasure_tombstone(store: Store) -> None:
    appointment = await an_appointment(store, ended_at=T0 + DAY)
    zelda = await a_participant(store, appointment.id)
    other = await a_participant(store, appointment.id)
    erasure = await erase(store, zelda)
    assert erasure is not None
    purged = await store.purge_ended_appointments(
        ended_before=T0 + 2 * DAY, limit=10, actor="retention", at=T0 + 3 * DAY
    )
    assert [p.participants for p in purged] == [1]
    assert await store.get_participant_tombstone(zelda.id) == erasure.tombstone
    gone = await store.get_participant_tombstone(other.id)
    assert gone is not None
    assert gone.reason is GoneReason.RETENTION


async def test_a_secret_written_as_its_participant_was_erased_goes_with_the_purge(
    store: Store,
) -> None:
    appointment = await an_appointment(store, ended_at=T0 + DAY)
    zelda = await a_participant(store, appointment.id)
    assert await erase(store, zelda) is not None
    # An enrolment that raced the erasure (decision 0004) wrote after it.
    await store.set_totp_secret(zelda.id, "JBSWY3DPEHPK3PXP")
    await store.purge_ended_appointments(
        ended_before=T0 + 2 * DAY, limit=10, actor="retention", at=T0 + 3 * DAY
    )
    assert await store.get_totp_secret(zelda.id) is None


async def test_forgetting_purged_appointments_removes_what_was_left(store: Store) -> None:
    oldest = await an_appointment(store, ended_at=T0)
    old = await an_appointment(store, ended_at=T0 + DAY)
    newer = await an_appointment(store, ended_at=T0 + 3 * DAY)
    gone = [await a_participant(store, a.id) for a in (old, newer)]
    erased = await a_participant(store, old.id)
    assert await erase(store, erased) is not None
    now = T0 + 10 * DAY
    await store.purge_ended_appointments(
        ended_before=T0 + 2 * DAY, limit=10, actor="retention", at=now
    )
    await store.purge_ended_appointments(
        ended_before=T0 + 4 * DAY, limit=10, actor="retention", at=now
    )
    assert await store.forget_purged_appointments(ended_before=T0 + 2 * DAY, limit=10) == 2

    assert await store.get_appointment(oldest.id) is None
    assert await store.get_appointment(old.id) is None
    assert await store.get_participant_tombstone(gone[0].id) is None
    assert await store.get_participant_tombstone(erased.id) is None
    assert await store.get_appointment(newer.id) is not None
    assert await store.get_participant_tombstone(gone[1].id) is not None
    assert await store.forget_purged_appointments(ended_before=T0 + 2 * DAY, limit=10) == 0
    assert await store.forget_purged_appointments(ended_before=T0 + 4 * DAY, limit=10) == 1
    assert await store.get_appointment(newer.id) is None


async def test_forgetting_never_touches_appointments_not_purged(store: Store) -> None:
    ended = await an_appointment(store, ended_at=T0)
    zelda = await a_participant(store, ended.id)
    assert await store.forget_purged_appointments(ended_before=T0 + 10 * DAY, limit=10) == 0
    assert await store.get_appointment(ended.id) == ended
    assert await store.get_participant(zelda.id) == zelda


# --- expired state ----------------------------------------------------------------------------


async def test_forget_expired_keeps_what_is_still_alive(store: Store) -> None:
    now = time.time()
    assert await store.consume_link("jti-live", expires_at=now + 600, now=now)
    session = BrowserSession(
        participant_id=new_id("ptc"),
        appointment_id=new_id("apt"),
        role=Role.CLIENT,
        created_at=now,
        expires_at=now + 600,
    )
    await store.create_session("ses-live", session)
    await store.forget_expired(now=now + 1, limit=100)
    assert not await store.consume_link("jti-live", expires_at=now + 600, now=now + 1)
    assert await store.get_session("ses-live", now=now + 1) == session


async def test_memory_store_forgets_expired_links_and_sessions(memory_store: MemoryStore) -> None:
    # Redis gives each a TTL when it is written (checked in the store contract).
    store = memory_store
    for n in range(5):
        assert await store.consume_link(f"jti-{n}", expires_at=T0 + n, now=T0)
    for n in range(3):
        await store.create_session(
            f"ses-{n}",
            BrowserSession(
                participant_id=new_id("ptc"),
                appointment_id=new_id("apt"),
                role=Role.CLIENT,
                created_at=T0,
                expires_at=T0 + n,
            ),
        )
    first = await store.forget_expired(now=T0 + 2.5, limit=2)
    assert (first.links, first.sessions) == (2, 2)
    rest = await store.forget_expired(now=T0 + 2.5, limit=100)
    assert (rest.links, rest.sessions) == (1, 1)
    assert (await store.forget_expired(now=T0 + 2.5, limit=100)).links == 0
    # What is still valid stays used.
    assert not await store.consume_link("jti-4", expires_at=T0 + 4, now=T0 + 2.5)


async def test_redis_keeps_no_expired_state_to_forget(redis_store: RedisStore) -> None:
    now = time.time()
    await redis_store.consume_link("jti-x", expires_at=now - 10, now=now)
    p = redis_store.prefix
    # Already expired: kept only for the clock-skew grace, then Redis drops it.
    assert 0 < await redis_store.client.pttl(f"{p}jti:jti-x") <= 60_000
    state = await redis_store.forget_expired(now=now, limit=100)
    assert (state.links, state.sessions) == (0, 0)


async def test_redis_lifecycle_keys_live_under_the_prefix(redis_store: RedisStore) -> None:
    appointment = await an_appointment(redis_store, ended_at=T0)
    zelda = await a_participant(redis_store, appointment.id)
    await a_log(redis_store, 3)
    assert await erase(redis_store, zelda) is not None
    await redis_store.prune_audit(before=T0 + DAY, limit=10, actor="retention", at=T0 + DAY)
    every = [k.decode() async for k in redis_store.client.scan_iter(match="*")]
    mine = [k for k in every if k.startswith(redis_store.prefix)]
    assert {f"{redis_store.prefix}{k}" for k in ("audit:anchor", "appointments:ended")} <= set(mine)
    assert f"{redis_store.prefix}participant_gone:{zelda.id}" in mine
    assert await redis_store.client.pttl(f"{redis_store.prefix}audit:anchor") == -1
