"""Contract: participant verification, connection counts and rate limits, on both stores."""

from __future__ import annotations

import asyncio

from gateway.domain.ids import new_id
from gateway.domain.model import Participant, Role
from gateway.domain.waiting_room import ParticipantState
from gateway.storage import RedisStore, Store

T0 = 1_800_000_000.0


def a_participant() -> Participant:
    return Participant(
        id=new_id("ptc"),
        appointment_id=new_id("apt"),
        role=Role.CLIENT,
        display_name="Someone",
        state=ParticipantState.WAITING,
        state_since=T0,
        created_at=T0,
    )


async def test_verifying_an_absent_participant_changes_nothing(store: Store) -> None:
    absent = new_id("ptc")
    assert await store.set_participant_verified(absent, T0) is None
    assert await store.get_participant(absent) is None


async def test_verification_time_is_kept_exactly(store: Store) -> None:
    participant = a_participant()
    await store.put_participant(participant)
    assert (await store.get_participant(participant.id)).verified_at is None  # type: ignore[union-attr]
    updated = await store.set_participant_verified(participant.id, T0 + 0.1)
    assert updated is not None
    assert updated.verified_at == T0 + 0.1
    assert updated.state is ParticipantState.WAITING
    assert await store.get_participant(participant.id) == updated


async def test_connection_counts_never_go_below_zero(store: Store) -> None:
    pid = new_id("ptc")
    assert await store.change_connections(pid, -1) == 0
    assert await store.change_connections(pid, 1) == 1
    assert await store.change_connections(pid, 1) == 2
    assert await store.change_connections(pid, -1) == 1
    assert await store.change_connections(pid, -5) == 0
    assert await store.change_connections(pid, 1) == 1


async def test_reading_a_connection_count_changes_nothing(store: Store) -> None:
    pid = new_id("ptc")
    assert await store.connection_count(pid) == 0
    await store.change_connections(pid, 2)
    assert await store.connection_count(pid) == 2
    await store.change_connections(pid, -2)
    assert await store.connection_count(pid) == 0


async def test_redis_reading_a_count_does_not_keep_a_dead_processs_count_alive(
    redis_store: RedisStore,
) -> None:
    pid = new_id("ptc")
    await redis_store.change_connections(pid, 1)
    key = f"{redis_store.prefix}connections:{pid}"
    await redis_store.client.pexpire(key, 5000)
    assert await redis_store.connection_count(pid) == 1
    assert 0 < await redis_store.client.pttl(key) <= 5000


async def test_concurrent_connection_changes_all_count(store: Store) -> None:
    pid = new_id("ptc")
    await asyncio.gather(*(store.change_connections(pid, 1) for _ in range(40)))
    await asyncio.gather(*(store.change_connections(pid, -1) for _ in range(15)))
    assert await store.change_connections(pid, 0) == 25


async def test_rate_limit_allows_the_limit_per_window_then_refuses(store: Store) -> None:
    key = f"test:{new_id('ptc')}"
    results = await asyncio.gather(
        *(store.hit_rate_limit(key, limit=5, window=10, now=T0) for _ in range(12))
    )
    assert results.count(True) == 5
    assert results.count(False) == 7
    # The next window starts afresh.
    assert await store.hit_rate_limit(key, limit=5, window=10, now=T0 + 10)


async def test_rate_limit_keys_are_independent(store: Store) -> None:
    first, second = f"a:{new_id('ptc')}", f"b:{new_id('ptc')}"
    for _ in range(3):
        await store.hit_rate_limit(first, limit=3, window=60, now=T0)
    assert not await store.hit_rate_limit(first, limit=3, window=60, now=T0)
    assert await store.hit_rate_limit(second, limit=3, window=60, now=T0)


async def test_touching_a_session_records_activity(store: Store) -> None:
    from gateway.domain.model import BrowserSession

    assert await store.touch_session("0" * 64, T0) is None
    session = BrowserSession(
        participant_id=new_id("ptc"),
        appointment_id=new_id("apt"),
        role=Role.HOST,
        created_at=T0,
        expires_at=T0 + 3600,
    )
    await store.create_session("a" * 64, session)
    assert (await store.get_session("a" * 64, now=T0)).idle_since() == T0  # type: ignore[union-attr]
    touched = await store.touch_session("a" * 64, T0 + 12.5)
    assert touched is not None
    assert touched.last_seen == T0 + 12.5
    assert await store.get_session("a" * 64, now=T0 + 13) == touched


async def test_the_first_enrolment_wins_under_concurrency(store: Store) -> None:
    pid = new_id("ptc")
    secrets = [f"SECRET{n:02d}AAAAAAAAAAAAAAAAAAAAAAAAA" for n in range(20)]
    results = await asyncio.gather(*(store.add_totp_secret(pid, s) for s in secrets))
    assert results.count(True) == 1
    winner = secrets[results.index(True)]
    assert await store.get_totp_secret(pid) == winner
    assert not await store.add_totp_secret(pid, secrets[0] if winner != secrets[0] else secrets[1])
    assert await store.get_totp_secret(pid) == winner


async def test_ending_one_participants_sessions_leaves_the_others(store: Store) -> None:
    from gateway.domain.model import BrowserSession

    appointment, mine, theirs = new_id("apt"), new_id("ptc"), new_id("ptc")

    def session(participant_id: str) -> BrowserSession:
        return BrowserSession(
            participant_id=participant_id,
            appointment_id=appointment,
            role=Role.CLIENT,
            created_at=T0,
            expires_at=T0 + 3600,
        )

    await store.create_session("1" * 64, session(mine))
    await store.create_session("2" * 64, session(mine))
    await store.create_session("3" * 64, session(theirs))
    assert await store.delete_participant_sessions(appointment, mine) == 2
    assert await store.get_session("1" * 64, now=T0) is None
    assert await store.get_session("2" * 64, now=T0) is None
    assert await store.get_session("3" * 64, now=T0) is not None
    assert await store.delete_participant_sessions(appointment, mine) == 0
    assert await store.delete_appointment_sessions(appointment) == 1
