"""One contract for every Store: MemoryStore and RedisStore (on a real redis-server).

Bad cases first: concurrent check-then-act must have exactly one winner (or exactly
``limit`` grants), refused moves must change nothing, and absent things are None.
Times are passed in (a frozen clock's values), never read from the wall clock, except
where Redis's own key expiry is involved (browser sessions), which runs on real time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import pytest

from gateway.domain.audit import GENESIS_HASH, AuditDraft, AuditEntry, verify_chain
from gateway.domain.consent import ConsentKind, ConsentRecord, give
from gateway.domain.ids import new_id
from gateway.domain.model import (
    Appointment,
    BrowserSession,
    Host,
    Participant,
    Platform,
    Role,
    Room,
    RoomPolicy,
)
from gateway.domain.totp import new_secret
from gateway.domain.waiting_room import HostPresence, ParticipantState, RoomCondition
from gateway.errors import HostAbsent, RoomLocked, StoreUnavailable
from gateway.storage import MemoryStore, RedisStore, SecretBox, Store
from tests.fixtures.servers import RedisServer

T0 = 1_800_000_000.25
CONCURRENCY = 50

S = ParticipantState


# --- builders ---------------------------------------------------------------------------


def a_host(at: float = T0) -> Host:
    return Host(
        id=new_id("hst"), display_name="Dr. Ada Example", created_at=at, platform_id="plt_x"
    )


def a_room(host_id: str, at: float = T0) -> Room:
    return Room(
        id=new_id("room"),
        host_id=host_id,
        policy=RoomPolicy(recording_allowed=True, telehealth_consent_version="tele-2026-01"),
        created_at=at,
    )


def an_appointment(room_id: str = "", at: float = T0) -> Appointment:
    return Appointment(id=new_id("apt"), room_id=room_id or new_id("room"), created_at=at)


def a_participant(
    appointment_id: str,
    *,
    state: ParticipantState = S.WAITING,
    at: float = T0,
    role: Role = Role.CLIENT,
    pid: str | None = None,
) -> Participant:
    return Participant(
        id=pid or new_id("par"),
        appointment_id=appointment_id,
        role=role,
        display_name="Client Name <b>with markup</b> & ünïcode",
        state=state,
        state_since=at,
        created_at=at,
    )


def a_consent(
    participant_id: str,
    session_id: str,
    *,
    kind: ConsentKind = ConsentKind.RECORDING,
    at: float = T0,
    version: str = "rec-v1",
) -> ConsentRecord:
    return give(
        participant_id=participant_id,
        session_id=session_id,
        kind=kind,
        text_version=version,
        at=at,
    )


def a_draft(n: int) -> AuditDraft:
    return AuditDraft(
        actor="par_AAAAAAAAAAAAAAAAAAAAAA",
        action="room.knock",
        subjects={"n": str(n), "room": "room_BBBBBBBBBBBBBBBBBBBBBB"},
    )


def a_session(appointment_id: str, *, expires_at: float, created_at: float) -> BrowserSession:
    return BrowserSession(
        participant_id=new_id("par"),
        appointment_id=appointment_id,
        role=Role.CLIENT,
        created_at=created_at,
        expires_at=expires_at,
    )


async def raw_contents(store: Store) -> list[bytes]:
    """Everything the store keeps about secrets, as bytes: names and values."""
    if isinstance(store, MemoryStore):
        return [
            *(k.encode() + v for k, v in store._totp_secrets.items()),
            *(repr(vars(store)).encode(),),
        ]
    assert isinstance(store, RedisStore)
    client = store.client
    found: list[bytes | str | None] = []
    async for key in client.scan_iter(match=f"{store.prefix}*"):
        found.append(key)
        kind = await client.type(key)
        if kind == b"string":
            found.append(await client.get(key))
        elif kind == b"hash":
            found.extend(b for pair in (await client.hgetall(key)).items() for b in pair)
        elif kind == b"list":
            found.extend(await client.lrange(key, 0, -1))
        elif kind == b"set":
            found.extend(await client.smembers(key))
        else:
            pytest.fail(f"unexpected key type {kind!r}")
    return [value if isinstance(value, bytes) else str(value).encode() for value in found]


# --- links ------------------------------------------------------------------------------


async def test_concurrent_link_redemptions_have_exactly_one_winner(store: Store) -> None:
    jti = new_id("jti")
    results = await asyncio.gather(
        *(store.consume_link(jti, expires_at=T0 + 600, now=T0) for _ in range(CONCURRENCY))
    )
    assert results.count(True) == 1
    assert results.count(False) == CONCURRENCY - 1


async def test_used_link_is_refused_later_and_other_links_are_independent(store: Store) -> None:
    jti, other = new_id("jti"), new_id("jti")
    assert await store.consume_link(jti, expires_at=T0 + 600, now=T0) is True
    assert await store.consume_link(jti, expires_at=T0 + 600, now=T0 + 599) is False
    assert await store.consume_link(other, expires_at=T0 + 600, now=T0) is True


async def test_a_link_is_used_once_consumed_and_looking_does_not_consume_it(
    store: Store,
) -> None:
    jti, other = new_id("jti"), new_id("jti")
    assert await store.link_used(jti) is False
    assert await store.link_used(jti) is False
    assert await store.consume_link(jti, expires_at=T0 + 600, now=T0) is True
    assert await store.link_used(jti) is True
    assert await store.link_used(other) is False


async def test_link_already_past_its_expiry_is_still_consumed_once(store: Store) -> None:
    jti = new_id("jti")
    assert await store.consume_link(jti, expires_at=T0 - 10, now=T0) is True
    assert await store.consume_link(jti, expires_at=T0 - 10, now=T0) is False


# --- TOTP steps and secrets -----------------------------------------------------------------


async def test_totp_step_refuses_same_and_older_steps(store: Store) -> None:
    pid = new_id("par")
    assert await store.use_totp_step(pid, 1000) is True
    assert await store.use_totp_step(pid, 1000) is False
    assert await store.use_totp_step(pid, 999) is False
    assert await store.use_totp_step(pid, 0) is False
    assert await store.use_totp_step(pid, 1001) is True
    assert await store.use_totp_step(pid, 1000) is False
    # Another participant has steps of their own.
    assert await store.use_totp_step(new_id("par"), 1000) is True


async def test_concurrent_uses_of_one_totp_step_have_one_winner(store: Store) -> None:
    pid = new_id("par")
    results = await asyncio.gather(*(store.use_totp_step(pid, 60_000_000) for _ in range(50)))
    assert results.count(True) == 1


async def test_totp_secret_is_absent_until_set_and_round_trips(store: Store) -> None:
    pid = new_id("par")
    assert await store.get_totp_secret(pid) is None
    first, second = new_secret(), new_secret()
    await store.set_totp_secret(pid, first)
    assert await store.get_totp_secret(pid) == first
    await store.set_totp_secret(pid, second)
    assert await store.get_totp_secret(pid) == second
    assert await store.get_totp_secret(new_id("par")) is None


async def test_totp_secret_is_never_stored_in_plaintext(store: Store) -> None:
    pid = new_id("par")
    secret = new_secret()
    await store.set_totp_secret(pid, secret)
    raw = await raw_contents(store)
    assert raw, "the inspection found nothing at all"
    for value in raw:
        assert secret.encode() not in value
        assert secret.lower().encode() not in value.lower()


async def test_new_totp_secret_forgets_the_used_steps(store: Store) -> None:
    pid = new_id("par")
    await store.set_totp_secret(pid, new_secret())
    assert await store.use_totp_step(pid, 5000) is True
    await store.set_totp_secret(pid, new_secret())
    assert await store.use_totp_step(pid, 4000) is True


# --- TOTP attempts --------------------------------------------------------------------------

LIMIT = 5
COOLDOWN = 900.5


async def test_concurrent_attempts_get_exactly_limit_grants(store: Store) -> None:
    pid = new_id("par")
    grants = await asyncio.gather(
        *(
            store.begin_totp_attempt(pid, limit=LIMIT, cooldown=COOLDOWN, now=T0)
            for _ in range(CONCURRENCY)
        )
    )
    allowed = [g for g in grants if g.allowed]
    refused = [g for g in grants if not g.allowed]
    assert sorted(g.attempts for g in allowed) == [1, 2, 3, 4, 5]
    assert all(g.locked_until == 0.0 for g in allowed)
    assert len(refused) == CONCURRENCY - LIMIT
    assert all(g.attempts == LIMIT and g.locked_until == T0 + COOLDOWN for g in refused)


async def test_refused_attempts_do_not_count_or_extend_the_lockout(store: Store) -> None:
    pid = new_id("par")
    for i in range(LIMIT):
        grant = await store.begin_totp_attempt(pid, limit=LIMIT, cooldown=COOLDOWN, now=T0 + i)
        assert grant.allowed
        assert grant.attempts == i + 1
    last = T0 + LIMIT - 1
    for later in (last, last + 10, last + COOLDOWN - 0.001):
        grant = await store.begin_totp_attempt(pid, limit=LIMIT, cooldown=COOLDOWN, now=later)
        assert grant.allowed is False
        assert grant.attempts == LIMIT
        assert grant.locked_until == last + COOLDOWN
    # The cool-down counts from the last granted attempt, not from the refusals.
    grant = await store.begin_totp_attempt(pid, limit=LIMIT, cooldown=COOLDOWN, now=last + COOLDOWN)
    assert grant.allowed is True
    assert grant.attempts == 1


async def test_each_attempt_restarts_the_cooldown(store: Store) -> None:
    pid = new_id("par")
    await store.begin_totp_attempt(pid, limit=LIMIT, cooldown=COOLDOWN, now=T0)
    await store.begin_totp_attempt(pid, limit=LIMIT, cooldown=COOLDOWN, now=T0 + 800)
    # Past the first attempt's cool-down but not the second's: still counting.
    grant = await store.begin_totp_attempt(pid, limit=LIMIT, cooldown=COOLDOWN, now=T0 + 1000)
    assert grant.attempts == 3


async def test_attempts_are_counted_per_participant_and_cleared(store: Store) -> None:
    pid, other = new_id("par"), new_id("par")
    for _ in range(LIMIT):
        await store.begin_totp_attempt(pid, limit=LIMIT, cooldown=COOLDOWN, now=T0)
    assert not (await store.begin_totp_attempt(pid, limit=LIMIT, cooldown=COOLDOWN, now=T0)).allowed
    grant = await store.begin_totp_attempt(other, limit=LIMIT, cooldown=COOLDOWN, now=T0)
    assert grant.allowed
    assert grant.attempts == 1

    await store.clear_totp_attempts(pid)
    grant = await store.begin_totp_attempt(pid, limit=LIMIT, cooldown=COOLDOWN, now=T0 + 1)
    assert grant.allowed
    assert grant.attempts == 1
    await store.clear_totp_attempts(new_id("par"))  # nothing on record: no error


# --- participants --------------------------------------------------------------------------


async def test_concurrent_identical_transitions_move_exactly_once(store: Store) -> None:
    appointment = an_appointment()
    participant = a_participant(appointment.id, state=S.WAITING)
    await store.put_participant(participant)
    results = await asyncio.gather(
        *(
            store.transition_participant(
                participant.id, sources={S.WAITING}, target=S.ADMITTED, at=T0 + 1 + i / 1000
            )
            for i in range(CONCURRENCY)
        )
    )
    winners = [after for moved, after in results if moved]
    assert len(winners) == 1
    assert all(after is not None and after.state is S.ADMITTED for _, after in results)
    stored = await store.get_participant(participant.id)
    assert stored == winners[0]
    assert stored is not None
    assert stored.state_since > T0


async def test_transition_from_a_wrong_state_changes_nothing(store: Store) -> None:
    participant = a_participant(new_id("apt"), state=S.KNOCKING)
    await store.put_participant(participant)
    moved, current = await store.transition_participant(
        participant.id, sources={S.WAITING}, target=S.ADMITTED, at=T0 + 5
    )
    assert moved is False
    assert current == participant
    assert await store.get_participant(participant.id) == participant


async def test_a_knock_into_a_locked_room_is_refused_in_the_same_step(store: Store) -> None:
    room = a_room(new_id("host"))
    await store.put_room(room)
    participant = a_participant(new_id("apt"), state=S.KNOCKING)
    await store.put_participant(participant)
    knock = RoomCondition(room.id, unlocked=True)
    await store.set_room_lock(room.id, True)
    with pytest.raises(RoomLocked):
        await store.transition_participant(
            participant.id, sources={S.KNOCKING}, target=S.WAITING, at=T0 + 1, room=knock
        )
    assert await store.get_participant(participant.id) == participant
    await store.set_room_lock(room.id, False)
    moved, after = await store.transition_participant(
        participant.id, sources={S.KNOCKING}, target=S.WAITING, at=T0 + 2, room=knock
    )
    assert moved is True
    assert after is not None
    assert after.state is S.WAITING


async def test_nobody_is_admitted_while_the_host_is_away_in_the_same_step(store: Store) -> None:
    room = a_room(new_id("host"))
    await store.put_room(room)
    participant = a_participant(new_id("apt"), state=S.WAITING)
    await store.put_participant(participant)
    admission = RoomCondition(room.id, host_present=True)
    await store.set_host_presence(room.id, HostPresence.PRESENT)
    await store.set_host_presence(room.id, HostPresence.AWAY)
    with pytest.raises(HostAbsent):
        await store.transition_participant(
            participant.id, sources={S.WAITING}, target=S.ADMITTED, at=T0 + 1, room=admission
        )
    assert await store.get_participant(participant.id) == participant
    # A participant who cannot move anyway gets the plain answer, not the room's.
    moved, _ = await store.transition_participant(
        participant.id, sources={S.ADMITTED}, target=S.IN_SESSION, at=T0 + 1, room=admission
    )
    assert moved is False
    await store.set_host_presence(room.id, HostPresence.PRESENT)
    moved, _ = await store.transition_participant(
        participant.id, sources={S.WAITING}, target=S.ADMITTED, at=T0 + 2, room=admission
    )
    assert moved is True


async def test_transition_of_an_absent_participant(store: Store) -> None:
    assert await store.transition_participant(
        new_id("par"), sources={S.WAITING}, target=S.ADMITTED, at=T0
    ) == (False, None)


async def test_transition_from_any_of_several_sources(store: Store) -> None:
    participant = a_participant(new_id("apt"), state=S.IN_SESSION)
    await store.put_participant(participant)
    moved, after = await store.transition_participant(
        participant.id, sources=[S.WAITING, S.ADMITTED, S.IN_SESSION], target=S.LEFT, at=T0 + 7.5
    )
    assert moved is True
    assert after == dataclasses.replace(participant, state=S.LEFT, state_since=T0 + 7.5)
    moved, _ = await store.transition_participant(
        participant.id, sources=[], target=S.KNOCKING, at=T0 + 8
    )
    assert moved is False


async def test_participants_round_trip_and_list_oldest_first(store: Store) -> None:
    appointment, other = an_appointment(), an_appointment()
    assert await store.get_participant(new_id("par")) is None
    assert await store.list_participants(appointment.id) == []
    late = a_participant(appointment.id, at=T0 + 30)
    early = a_participant(appointment.id, at=T0 + 0.125, role=Role.HOST, state=S.IN_SESSION)
    tie_b = a_participant(appointment.id, at=T0 + 10, pid="par_" + "b" * 22)
    tie_a = a_participant(appointment.id, at=T0 + 10, pid="par_" + "a" * 22)
    elsewhere = a_participant(other.id)
    for p in (late, early, tie_b, elsewhere, tie_a):
        await store.put_participant(p)
    assert await store.get_participant(early.id) == early
    assert await store.list_participants(appointment.id) == [early, tie_a, tie_b, late]
    assert await store.list_participants(other.id) == [elsewhere]

    # put_participant overwrites wholesale, even across appointments.
    moved = dataclasses.replace(late, appointment_id=other.id, display_name="Renamed")
    await store.put_participant(moved)
    assert await store.get_participant(late.id) == moved
    assert await store.list_participants(appointment.id) == [early, tie_a, tie_b]
    assert await store.list_participants(other.id) == [elsewhere, moved]


# --- hosts, rooms, appointments -------------------------------------------------------------


async def test_absent_records_are_none(store: Store) -> None:
    assert await store.get_host(new_id("hst")) is None
    assert await store.get_room(new_id("room")) is None
    assert await store.get_appointment(new_id("apt")) is None
    assert await store.set_room_lock(new_id("room"), True) is None
    assert await store.set_host_presence(new_id("room"), HostPresence.PRESENT) is None
    assert await store.end_appointment(new_id("apt"), T0) == (False, None)
    assert await store.get_room(new_id("room")) is None  # and nothing was created


async def test_setters_of_absent_records_create_nothing(store: Store) -> None:
    room_id, appointment_id = new_id("room"), new_id("apt")
    await store.set_room_lock(room_id, True)
    await store.set_host_presence(room_id, HostPresence.PRESENT)
    await store.end_appointment(appointment_id, T0)
    assert await store.get_room(room_id) is None
    assert await store.get_appointment(appointment_id) is None


async def test_platforms_round_trip(store: Store) -> None:
    assert await store.get_platform(new_id("plt")) is None
    quiet = Platform(id=new_id("plt"), name="Clinic Portal", created_at=T0 + 0.125)
    hooked = Platform(
        id=new_id("plt"),
        name="Other",
        created_at=T0,
        webhook_url="https://hooks.example/quietroom",
    )
    for platform in (quiet, hooked):
        await store.put_platform(platform)
        assert await store.get_platform(platform.id) == platform


async def test_hosts_and_rooms_round_trip(store: Store) -> None:
    host = a_host()
    room = a_room(host.id)
    await store.put_host(host)
    await store.put_room(room)
    assert await store.get_host(host.id) == host
    assert await store.get_room(room.id) == room
    replaced = dataclasses.replace(room, policy=RoomPolicy(client_totp_required=False))
    await store.put_room(replaced)
    assert await store.get_room(room.id) == replaced


async def test_room_lock_and_host_presence(store: Store) -> None:
    room = a_room(new_id("hst"))
    await store.put_room(room)
    locked = await store.set_room_lock(room.id, True)
    assert locked == dataclasses.replace(room, locked=True)
    present = await store.set_host_presence(room.id, HostPresence.PRESENT)
    assert present == dataclasses.replace(room, locked=True, host_presence=HostPresence.PRESENT)
    assert await store.set_room_lock(room.id, False) == dataclasses.replace(
        room, host_presence=HostPresence.PRESENT
    )
    assert await store.get_room(room.id) == dataclasses.replace(
        room, host_presence=HostPresence.PRESENT
    )


async def test_concurrent_ends_of_an_appointment_keep_the_first(store: Store) -> None:
    appointment = an_appointment()
    await store.put_appointment(appointment)
    assert await store.get_appointment(appointment.id) == appointment
    results = await asyncio.gather(
        *(store.end_appointment(appointment.id, T0 + 100 + i) for i in range(CONCURRENCY))
    )
    # Exactly one call ended it; every call sees the same end.
    assert sum(ended_now for ended_now, _ in results) == 1
    ended_at = {r.ended_at for _, r in results if r is not None}
    assert len(ended_at) == 1
    (first,) = ended_at
    assert first is not None
    assert T0 + 100 <= first < T0 + 100 + CONCURRENCY
    ended_now, later = await store.end_appointment(appointment.id, T0 + 9999)
    assert not ended_now
    assert later == dataclasses.replace(appointment, ended_at=first)
    assert await store.get_appointment(appointment.id) == later


# --- consent ----------------------------------------------------------------------------------


async def test_consent_is_idempotent_while_live(store: Store) -> None:
    pid, sid = new_id("par"), new_id("apt")
    first = a_consent(pid, sid, at=T0)
    assert await store.give_consent(first) == first
    again = a_consent(pid, sid, at=T0 + 5, version="rec-v2")
    assert await store.give_consent(again) == first
    assert await store.list_consents(sid) == [first]


async def test_concurrent_consents_keep_one_record(store: Store) -> None:
    pid, sid = new_id("par"), new_id("apt")
    results = await asyncio.gather(
        *(store.give_consent(a_consent(pid, sid, at=T0 + i)) for i in range(CONCURRENCY))
    )
    assert len(set(results)) == 1
    assert await store.list_consents(sid) == [results[0]]


async def test_withdraw_then_give_again_makes_a_new_record(store: Store) -> None:
    pid, sid = new_id("par"), new_id("apt")
    assert (
        await store.withdraw_consent(
            participant_id=pid, session_id=sid, kind=ConsentKind.RECORDING, at=T0
        )
        is None
    )
    first = await store.give_consent(a_consent(pid, sid, at=T0))
    withdrawn = await store.withdraw_consent(
        participant_id=pid, session_id=sid, kind=ConsentKind.RECORDING, at=T0 + 60.5
    )
    assert withdrawn == dataclasses.replace(first, withdrawn_at=T0 + 60.5)
    assert not withdrawn.live
    # Nothing live any more: a second withdrawal finds nothing.
    assert (
        await store.withdraw_consent(
            participant_id=pid, session_id=sid, kind=ConsentKind.RECORDING, at=T0 + 61
        )
        is None
    )
    second = a_consent(pid, sid, at=T0 + 120, version="rec-v2")
    assert await store.give_consent(second) == second
    assert await store.list_consents(sid) == [withdrawn, second]


async def test_consents_are_kept_per_kind_participant_and_session(store: Store) -> None:
    pid, other, sid = new_id("par"), new_id("par"), new_id("apt")
    recording = a_consent(pid, sid, at=T0)
    telehealth = a_consent(pid, sid, kind=ConsentKind.TELEHEALTH, at=T0 + 1, version="tele-1")
    others = a_consent(other, sid, at=T0 + 2)
    elsewhere = a_consent(pid, new_id("apt"), at=T0 + 3)
    for record in (recording, telehealth, others, elsewhere):
        assert await store.give_consent(record) == record
    await store.withdraw_consent(
        participant_id=pid, session_id=sid, kind=ConsentKind.TELEHEALTH, at=T0 + 4
    )
    assert await store.list_consents(sid) == [
        recording,
        dataclasses.replace(telehealth, withdrawn_at=T0 + 4),
        others,
    ]
    assert await store.list_consents(elsewhere.session_id) == [elsewhere]
    assert await store.list_consents(new_id("apt")) == []


# --- audit ------------------------------------------------------------------------------------


async def test_empty_audit_log(store: Store) -> None:
    assert await store.audit_head() == (0, GENESIS_HASH)
    assert await store.read_audit() == []
    assert verify_chain(await store.read_audit(), head=await store.audit_head()) == 0


async def test_concurrent_audit_appends_form_one_chain(store: Store) -> None:
    appended = await asyncio.gather(
        *(store.append_audit(a_draft(i), at=T0 + i / 8) for i in range(CONCURRENCY))
    )
    assert sorted(e.seq for e in appended) == list(range(1, CONCURRENCY + 1))
    entries = await store.read_audit()
    assert entries == sorted(appended, key=lambda e: e.seq)
    head = await store.audit_head()
    assert head == (entries[-1].seq, entries[-1].hash)
    assert verify_chain(entries, head=head) == CONCURRENCY


async def test_read_audit_pages(store: Store) -> None:
    for i in range(12):
        await store.append_audit(a_draft(i), at=T0 + i)
    page = await store.read_audit(after_seq=4, limit=3)
    assert [e.seq for e in page] == [5, 6, 7]
    everything = await store.read_audit()
    assert verify_chain(page, start=everything[3]) == 3
    assert [e.seq for e in await store.read_audit(after_seq=10)] == [11, 12]
    assert await store.read_audit(after_seq=12) == []
    assert await store.read_audit(after_seq=99) == []
    assert await store.read_audit(limit=0) == []
    assert [e.seq for e in await store.read_audit(after_seq=-3, limit=2)] == [1, 2]


async def test_audit_entries_round_trip_exactly(store: Store) -> None:
    entry = await store.append_audit(a_draft(1), at=T0 + 0.1 + 0.2)
    (stored,) = await store.read_audit()
    assert stored == entry
    assert isinstance(stored, AuditEntry)


# --- browser sessions --------------------------------------------------------------------------
# Redis expires sessions by its own (real) clock, so these times are near the real now.


async def test_sessions_expire_by_the_callers_clock(store: Store) -> None:
    now = time.time()
    session = a_session(new_id("apt"), created_at=now, expires_at=now + 3600)
    assert await store.get_session("h" * 64, now=now) is None
    await store.create_session("h" * 64, session)
    assert await store.get_session("h" * 64, now=now) == session
    assert await store.get_session("h" * 64, now=now + 3599.9) == session
    assert await store.get_session("h" * 64, now=now + 3600) is None
    assert await store.get_session("h" * 64, now=now + 7200) is None


async def test_session_already_expired_is_gone(store: Store) -> None:
    now = time.time()
    session = a_session(new_id("apt"), created_at=now - 7200, expires_at=now - 3600)
    await store.create_session("old", session)
    assert await store.get_session("old", now=now) is None


async def test_mark_session_verified(store: Store) -> None:
    now = time.time()
    session = a_session(new_id("apt"), created_at=now, expires_at=now + 3600)
    assert await store.mark_session_verified("nobody") is None
    await store.create_session("s1", session)
    verified = await store.mark_session_verified("s1")
    assert verified == dataclasses.replace(session, verified=True)
    assert await store.get_session("s1", now=now) == verified
    assert await store.get_session("nobody", now=now) is None


async def test_delete_sessions(store: Store) -> None:
    now = time.time()
    appointment, other = new_id("apt"), new_id("apt")
    mine = {
        f"m{i}": a_session(appointment, created_at=now, expires_at=now + 600 + i) for i in range(3)
    }
    theirs = a_session(other, created_at=now, expires_at=now + 600)
    for session_hash, session in mine.items():
        await store.create_session(session_hash, session)
    await store.create_session("t0", theirs)

    await store.delete_session("m0")
    await store.delete_session("m0")  # twice: no error
    assert await store.get_session("m0", now=now) is None
    assert await store.delete_appointment_sessions(appointment) == 2
    for session_hash in mine:
        assert await store.get_session(session_hash, now=now) is None
    assert await store.get_session("t0", now=now) == theirs
    assert await store.delete_appointment_sessions(appointment) == 0
    assert await store.delete_appointment_sessions(new_id("apt")) == 0


async def test_session_hash_reused_for_another_appointment(store: Store) -> None:
    now = time.time()
    first, second = new_id("apt"), new_id("apt")
    await store.create_session("same", a_session(first, created_at=now, expires_at=now + 600))
    replacement = a_session(second, created_at=now, expires_at=now + 600)
    await store.create_session("same", replacement)
    assert await store.delete_appointment_sessions(first) == 0
    assert await store.get_session("same", now=now) == replacement
    assert await store.delete_appointment_sessions(second) == 1


# --- life ---------------------------------------------------------------------------------------


async def test_ping_and_close_twice(store: Store) -> None:
    await store.ping()
    await store.close()
    await store.close()


async def test_closed_redis_store_refuses_instead_of_reconnecting(redis_store: RedisStore) -> None:
    await redis_store.close()
    with pytest.raises(StoreUnavailable):
        await redis_store.ping()
    with pytest.raises(StoreUnavailable):
        await redis_store.consume_link("jti", expires_at=T0 + 60, now=T0)


# --- RedisStore only ----------------------------------------------------------------------------


async def test_redis_outage_raises_store_unavailable(
    redis_server_factory: Callable[[], RedisServer], secret_box: SecretBox
) -> None:
    server = redis_server_factory()
    store = RedisStore.from_url(server.url, secret_box=secret_box, timeout=2.0)
    try:
        await store.ping()
        assert await store.consume_link("jti-a", expires_at=T0 + 60, now=T0) is True

        server.stop()
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.consume_link("jti-b", expires_at=T0 + 60, now=T0)
        with pytest.raises(StoreUnavailable):
            await store.append_audit(a_draft(1), at=T0)

        server.start()
        # No ping first: the pool replaces its dead connections, and the scripts are
        # loaded again into the new server's empty script cache.
        assert await store.use_totp_step("par", 7) is True
        assert await store.consume_link("jti-b", expires_at=T0 + 60, now=T0) is True
        await store.ping()
    finally:
        await store.close()


async def test_redis_unreachable_from_the_start(secret_box: SecretBox) -> None:
    from tests.fixtures.servers import free_port

    store = RedisStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", secret_box=secret_box, timeout=1.0
    )
    try:
        with pytest.raises(StoreUnavailable):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.get_session("x", now=T0)
    finally:
        await store.close()
        await store.close()


async def test_two_redis_stores_on_one_prefix_chain_one_audit_log(
    redis_store: RedisStore, redis_server: RedisServer, secret_box: SecretBox
) -> None:
    # Two gateway processes: the script's compare-and-set keeps one chain.
    other = RedisStore.from_url(redis_server.url, secret_box=secret_box, prefix=redis_store.prefix)
    try:
        appended = await asyncio.gather(
            *(
                (redis_store if i % 2 else other).append_audit(a_draft(i), at=T0 + i)
                for i in range(40)
            )
        )
        assert sorted(e.seq for e in appended) == list(range(1, 41))
        entries = await other.read_audit()
        assert verify_chain(entries, head=await redis_store.audit_head()) == 40
    finally:
        await other.close()


async def test_redis_keys_live_under_the_prefix_and_expire(redis_store: RedisStore) -> None:
    client = redis_store.client
    now = time.time()
    await redis_store.consume_link("jti-x", expires_at=now + 600, now=now)
    await redis_store.begin_totp_attempt("par-x", limit=5, cooldown=900, now=now)
    await redis_store.create_session(
        "sess-x", a_session("apt-x", created_at=now, expires_at=now + 300)
    )
    await redis_store.put_participant(a_participant("apt-x"))
    await redis_store.append_audit(a_draft(1), at=now)

    every_key = [k.decode() async for k in client.scan_iter(match="*")]
    assert every_key
    assert all(k.startswith(redis_store.prefix) for k in every_key)

    p = redis_store.prefix
    # Used jtis outlive the link (with a grace for clock skew), lockouts the cool-down.
    assert 600_000 <= await client.pttl(f"{p}jti:jti-x") <= 660_000
    assert 900_000 < await client.pttl(f"{p}totp_attempts:par-x") <= 960_000
    assert 0 < await client.pttl(f"{p}session:sess-x") <= 300_000
    assert 0 < await client.pttl(f"{p}apt_sessions:apt-x") <= 300_000
    # What must never vanish on its own does not.
    assert await client.pttl(f"{p}audit:log") == -1


async def test_redis_store_with_a_client_of_the_callers(
    redis_server: RedisServer, secret_box: SecretBox
) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_server.url, decode_responses=True)
    store = RedisStore(client, secret_box=secret_box, prefix=f"own-{new_id('tst')}:")
    try:
        secret = new_secret()
        await store.set_totp_secret("p", secret)
        assert await store.get_totp_secret("p") == secret
        room = a_room("hst")
        await store.put_room(room)
        assert await store.set_room_lock(room.id, True) == dataclasses.replace(room, locked=True)
        record = a_consent("p", "s")
        await store.give_consent(record)
        await store.withdraw_consent(
            participant_id="p", session_id="s", kind=ConsentKind.RECORDING, at=T0 + 1
        )
        assert await store.list_consents("s") == [dataclasses.replace(record, withdrawn_at=T0 + 1)]
        entry = await store.append_audit(a_draft(1), at=T0)
        assert await store.read_audit() == [entry]
        grant = await store.begin_totp_attempt("p", limit=1, cooldown=60, now=T0)
        assert grant.allowed
        grant = await store.begin_totp_attempt("p", limit=1, cooldown=60, now=T0 + 1)
        assert grant.locked_until == T0 + 60
        await store.close()  # the caller's client stays open
        await client.ping()
        await client.delete(*[k async for k in client.scan_iter(match=f"{store.prefix}*")])
    finally:
        await store.close()
        await client.aclose()
