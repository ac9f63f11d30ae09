"""Contract: platform API keys on both stores (the ``store`` fixture runs memory and Redis).

Bad cases first: absent keys are None, the first of any number of concurrent
revocations wins and later ones keep its time, and a platform lists only its own keys.
"""

from __future__ import annotations

import asyncio

from gateway.domain.apikeys import ApiKey, Scope, new_api_key, parse_presented
from gateway.domain.ids import new_id
from gateway.storage import Store

T0 = 1_800_000_000.25
CONCURRENCY = 50


def a_key(
    platform_id: str = "plt_AAAAAAAAAAAAAAAAAAAAAA",
    *,
    at: float = T0,
    scopes: tuple[Scope, ...] = (Scope.HOSTS_WRITE, Scope.AUDIT_READ),
) -> ApiKey:
    key, _ = new_api_key(platform_id=platform_id, name="billing-sync", scopes=scopes, at=at)
    return key


async def test_an_absent_key_is_none(store: Store) -> None:
    absent = new_id("key")
    assert await store.get_api_key(absent) is None
    assert await store.revoke_api_key(absent, T0) is None
    assert await store.get_api_key(absent) is None


async def test_a_platform_without_keys_lists_none(store: Store) -> None:
    assert await store.list_api_keys(new_id("plt")) == []


async def test_concurrent_revocations_keep_the_first_time(store: Store) -> None:
    key = a_key()
    await store.put_api_key(key)
    results = await asyncio.gather(
        *(store.revoke_api_key(key.id, T0 + 1 + i) for i in range(CONCURRENCY))
    )
    times = {r.revoked_at for r in results if r is not None}
    assert len(times) == 1
    (first,) = times
    assert first is not None
    assert T0 + 1 <= first < T0 + 1 + CONCURRENCY
    again = await store.revoke_api_key(key.id, T0 + 1000)
    assert again is not None
    assert again.revoked_at == first
    assert not again.live
    assert await store.get_api_key(key.id) == again


async def test_revocation_changes_nothing_else(store: Store) -> None:
    key = a_key()
    await store.put_api_key(key)
    revoked = await store.revoke_api_key(key.id, T0 + 5)
    assert revoked is not None
    assert revoked.revoked_at == T0 + 5
    assert (revoked.id, revoked.platform_id, revoked.name) == (key.id, key.platform_id, key.name)
    assert (revoked.scopes, revoked.created_at, revoked.secret_hash) == (
        key.scopes,
        key.created_at,
        key.secret_hash,
    )


async def test_a_platform_lists_only_its_own_keys_oldest_first(store: Store) -> None:
    mine, theirs = new_id("plt"), new_id("plt")
    newer = a_key(mine, at=T0 + 2)
    older = a_key(mine, at=T0 + 1)
    other = a_key(theirs, at=T0)
    for key in (newer, other, older):
        await store.put_api_key(key)
    await store.revoke_api_key(newer.id, T0 + 3)
    listed = await store.list_api_keys(mine)
    assert [k.id for k in listed] == [older.id, newer.id]
    assert listed[1].revoked_at == T0 + 3
    assert [k.id for k in await store.list_api_keys(theirs)] == [other.id]


async def test_a_key_round_trips_exactly(store: Store) -> None:
    key = a_key(scopes=tuple(Scope))
    await store.put_api_key(key)
    stored = await store.get_api_key(key.id)
    assert stored == key
    assert stored is not None
    assert stored.scopes == frozenset(Scope)
    assert stored.revoked_at is None
    assert stored.created_at == T0


async def test_the_store_never_sees_the_plaintext_key(store: Store) -> None:
    key, plaintext = new_api_key(
        platform_id=new_id("plt"), name="ops", scopes=[Scope.AUDIT_READ], at=T0
    )
    await store.put_api_key(key)
    _, secret = parse_presented(plaintext)
    stored = await store.get_api_key(key.id)
    assert stored is not None
    assert secret not in repr(stored)
    assert plaintext not in repr(stored)
