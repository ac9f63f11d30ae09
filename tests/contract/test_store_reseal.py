"""Re-sealing stored secrets under the newest data key, for every Store.

A data key can be dropped only once nothing sealed under it is left: ``reseal_secrets``
moves TOTP seeds and webhook secrets to the newest key, leaves what it cannot open alone,
and never overwrites a secret written between its read and its write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis
from cryptography.fernet import Fernet

from gateway.domain.ids import new_id
from gateway.errors import StoreError
from gateway.storage import MemoryStore, RedisStore, ResealReport, SecretBox, Store
from tests.fixtures.servers import RedisServer

OLD = Fernet.generate_key().decode("ascii")
NEW = Fernet.generate_key().decode("ascii")
UNKNOWN = Fernet.generate_key().decode("ascii")

#: (store under the old key only, a function giving the same data under ``keys``)
Rotation = tuple[Store, Callable[[list[str]], Awaitable[Store]]]


@pytest.fixture(params=["memory", "redis"])
async def rotation(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> AsyncIterator[Rotation]:
    if request.param == "memory":
        memory = MemoryStore(secret_box=SecretBox([OLD]))

        async def rotate_memory(keys: list[str]) -> Store:
            # The embedded store's keys change only with a restart, which empties it:
            # swapping the box stands in for that here.
            memory._box = SecretBox(keys)
            return memory

        yield memory, rotate_memory
        return
    prefix = f"test-{new_id('rs')}:"
    stores = [RedisStore.from_url(redis_server.url, secret_box=SecretBox([OLD]), prefix=prefix)]

    async def rotate_redis(keys: list[str]) -> Store:
        stores.append(
            RedisStore.from_url(redis_server.url, secret_box=SecretBox(keys), prefix=prefix)
        )
        return stores[-1]

    try:
        yield stores[0], rotate_redis
    finally:
        for store in stores:
            await store.close()


async def test_old_secrets_move_to_the_newest_key_and_the_old_key_can_go(
    rotation: Rotation,
) -> None:
    before, rotate = rotation
    participants = {new_id("ptc"): f"SECRET{i}" for i in range(3)}
    for pid, secret in participants.items():
        await before.set_totp_secret(pid, secret)
    platform = new_id("plt")
    await before.set_webhook_secret(platform, "whsec")

    report = await (await rotate([NEW, OLD])).reseal_secrets()

    assert report == ResealReport(resealed=4)
    after = await rotate([NEW])
    for pid, secret in participants.items():
        assert await after.get_totp_secret(pid) == secret
    assert await after.get_webhook_secret(platform) == "whsec"


async def test_a_second_pass_finds_everything_current(rotation: Rotation) -> None:
    before, rotate = rotation
    await before.set_totp_secret(new_id("ptc"), "A")
    store = await rotate([NEW, OLD])
    await store.set_totp_secret(new_id("ptc"), "B")  # sealed under NEW already

    assert await store.reseal_secrets() == ResealReport(resealed=1, current=1)
    assert await store.reseal_secrets() == ResealReport(current=2)


async def test_a_secret_no_key_opens_is_counted_and_left_alone(rotation: Rotation) -> None:
    before, rotate = rotation
    kept = new_id("ptc")
    await before.set_totp_secret(kept, "K")
    stranger = await rotate([UNKNOWN])
    lost = new_id("ptc")
    await stranger.set_totp_secret(lost, "sealed by a key nobody has")
    store = await rotate([NEW, OLD])

    report = await store.reseal_secrets()

    assert report == ResealReport(resealed=1, unreadable=1)
    assert await store.get_totp_secret(kept) == "K"
    with pytest.raises(StoreError):
        await store.get_totp_secret(lost)
    assert await (await rotate([UNKNOWN])).get_totp_secret(lost) == "sealed by a key nobody has"


async def test_a_secret_written_during_the_pass_is_not_overwritten(
    redis_server: RedisServer,
) -> None:
    prefix = f"test-{new_id('rs')}:"
    old = RedisStore.from_url(redis_server.url, secret_box=SecretBox([OLD]), prefix=prefix)
    box = SecretBox([NEW, OLD])
    new = RedisStore.from_url(redis_server.url, secret_box=box, prefix=prefix)
    sync = redis.Redis.from_url(redis_server.url)
    pid = new_id("ptc")
    try:
        await old.set_totp_secret(pid, "BEFORE")
        written = Fernet(NEW).encrypt(b"WRITTEN MEANWHILE")
        real_reseal = box.reseal

        def reseal_while_a_gateway_writes(sealed: bytes) -> bytes | None:
            sync.set(f"{prefix}totp_secret:{pid}", written)
            return real_reseal(sealed)

        box.reseal = reseal_while_a_gateway_writes  # type: ignore[method-assign]
        report = await new.reseal_secrets()

        assert report == ResealReport(changed=1)
        assert await new.get_totp_secret(pid) == "WRITTEN MEANWHILE"
    finally:
        sync.close()
        await old.close()
        await new.close()


async def test_keys_of_another_prefix_are_not_touched(redis_server: RedisServer) -> None:
    mine = RedisStore.from_url(redis_server.url, secret_box=SecretBox([OLD]), prefix="a*[b]:")
    other = RedisStore.from_url(redis_server.url, secret_box=SecretBox([OLD]), prefix="aX[b]:")
    try:
        await mine.set_totp_secret(new_id("ptc"), "MINE")
        await other.set_totp_secret(new_id("ptc"), "OTHER")
        rotated = RedisStore.from_url(
            redis_server.url, secret_box=SecretBox([NEW, OLD]), prefix="a*[b]:"
        )
        try:
            assert await rotated.reseal_secrets() == ResealReport(resealed=1)
        finally:
            await rotated.close()
    finally:
        await mine.close()
        await other.close()


def test_a_reseal_keeps_the_secret_and_its_time() -> None:
    old_box = SecretBox([OLD])
    sealed = old_box.seal("S")
    fresh = SecretBox([NEW, OLD]).reseal(sealed)
    assert fresh is not None
    assert SecretBox([NEW]).open(fresh) == "S"
    assert Fernet(NEW).extract_timestamp(fresh) == Fernet(OLD).extract_timestamp(sealed)
    assert SecretBox([NEW, OLD]).reseal(fresh) is None
    with pytest.raises(StoreError):
        SecretBox([UNKNOWN]).reseal(sealed)
