"""The webhook outbox and secrets, for every Store: MemoryStore and a real redis-server.

The outbox must never hand one delivery to two claimers at once, must hide a claimed
delivery until its lease ends, must hand out due deliveries earliest first, and must
accept a reschedule or a give-up only from the claim that holds the delivery.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.domain.ids import new_id
from gateway.domain.webhooks import WebhookDelivery, WebhookType, new_delivery, new_webhook_secret
from gateway.storage import MemoryStore, RedisStore, Store

T0 = 1_800_000_000.25
LEASE = 60.0


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


def a_delivery(*, due_at: float = T0, platform_id: str | None = None) -> WebhookDelivery:
    return new_delivery(
        platform_id=platform_id or new_id("plt"),
        kind=WebhookType.PARTICIPANT_ADMITTED,
        at=due_at - 0.5,
        appointment_id=new_id("apt"),
        room_id=new_id("rm"),
        participant_id=new_id("ptc"),
        now=due_at,
    )


async def claimed_ids(store: Store, *, now: float, limit: int = 100) -> list[str]:
    return [c.delivery.id for c in await store.claim_webhooks(now=now, lease=LEASE, limit=limit)]


async def everything_stored(store: Store) -> bytes:
    """All the store holds, as one byte string (names and values)."""
    if isinstance(store, MemoryStore):
        return repr(vars(store)).encode()
    assert isinstance(store, RedisStore)
    client = store.client
    found: list[bytes] = []
    async for key in client.scan_iter(match=f"{store.prefix}*"):
        found.append(key)
        kind = await client.type(key)
        if kind == b"string":
            found.append(await client.get(key))
        elif kind == b"hash":
            found.extend(b for pair in (await client.hgetall(key)).items() for b in pair)
        elif kind == b"zset":
            found.extend(await client.zrange(key, 0, -1))
        elif kind == b"set":
            found.extend(await client.smembers(key))
        elif kind == b"list":
            found.extend(await client.lrange(key, 0, -1))
    return b"\n".join(found)


# --- secrets --------------------------------------------------------------------------------


async def test_webhook_secret_is_absent_until_set_then_round_trips(store: Store) -> None:
    platform_id = new_id("plt")
    assert await store.get_webhook_secret(platform_id) is None
    first, second = new_webhook_secret(), new_webhook_secret()
    await store.set_webhook_secret(platform_id, first)
    assert await store.get_webhook_secret(platform_id) == first
    await store.set_webhook_secret(platform_id, second)
    assert await store.get_webhook_secret(platform_id) == second
    assert await store.get_webhook_secret(new_id("plt")) is None


async def test_webhook_secret_is_never_stored_in_plaintext(store: Store) -> None:
    secret = new_webhook_secret()
    await store.set_webhook_secret(new_id("plt"), secret)
    raw = await everything_stored(store)
    assert raw, "the inspection found nothing at all"
    assert secret.encode() not in raw
    assert secret.removeprefix("whsec_").encode() not in raw


# --- claiming -------------------------------------------------------------------------------


async def test_twenty_concurrent_claimers_share_ten_deliveries_exactly_once(store: Store) -> None:
    deliveries = [a_delivery(due_at=T0 - i) for i in range(10)]
    for delivery in deliveries:
        await store.enqueue_webhook(delivery)

    results = await asyncio.gather(
        *(store.claim_webhooks(now=T0, lease=LEASE, limit=3) for _ in range(20))
    )
    ids = [claim.delivery.id for claims in results for claim in claims]
    assert sorted(ids) == sorted(d.id for d in deliveries)
    # Every claim call has a token of its own.
    tokens = {claim.claim for claims in results for claim in claims}
    assert len(tokens) == sum(1 for claims in results if claims)
    assert await claimed_ids(store, now=T0 + LEASE - 0.001) == []


async def test_a_claimed_delivery_is_what_was_enqueued(store: Store) -> None:
    delivery = a_delivery()
    await store.enqueue_webhook(delivery)
    [claim] = await store.claim_webhooks(now=T0, lease=LEASE, limit=10)
    assert claim.delivery == delivery
    assert claim.claim


async def test_nothing_is_claimed_before_it_is_due_or_with_no_room(store: Store) -> None:
    delivery = a_delivery(due_at=T0 + 10)
    await store.enqueue_webhook(delivery)
    assert await claimed_ids(store, now=T0 + 9.999) == []
    assert await store.claim_webhooks(now=T0 + 10, lease=LEASE, limit=0) == []
    assert await claimed_ids(store, now=T0 + 10) == [delivery.id]


async def test_a_lease_hides_the_delivery_until_it_ends(store: Store) -> None:
    delivery = a_delivery()
    await store.enqueue_webhook(delivery)
    [first] = await store.claim_webhooks(now=T0, lease=LEASE, limit=10)
    assert await claimed_ids(store, now=T0 + LEASE - 0.001) == []
    # The sender died: once the lease ends, someone else may claim it, under a new claim.
    [second] = await store.claim_webhooks(now=T0 + LEASE, lease=LEASE, limit=10)
    assert second.delivery == delivery
    assert second.claim != first.claim
    # The dead sender's claim no longer counts.
    assert not await store.reschedule_webhook(
        delivery.id, claim=first.claim, due_at=T0 + 100, attempts=1
    )
    assert not await store.abandon_webhook(delivery.id, claim=first.claim)
    assert await store.reschedule_webhook(
        delivery.id, claim=second.claim, due_at=T0 + 100, attempts=1
    )


async def test_due_deliveries_come_earliest_first_and_limit_is_kept(store: Store) -> None:
    dues = [T0 - 50, T0 - 40, T0 - 30, T0 - 20, T0 - 10, T0, T0 + 1]
    shuffled = [a_delivery(due_at=due) for due in dues]
    random.Random(7).shuffle(shuffled)
    for delivery in shuffled:
        await store.enqueue_webhook(delivery)
    by_due = sorted(shuffled, key=lambda d: d.due_at)

    assert await claimed_ids(store, now=T0, limit=2) == [d.id for d in by_due[:2]]
    assert await claimed_ids(store, now=T0, limit=10) == [d.id for d in by_due[2:6]]
    assert await claimed_ids(store, now=T0 + 1, limit=10) == [by_due[6].id]


# --- outcomes -------------------------------------------------------------------------------


async def test_a_delivered_webhook_is_gone(store: Store) -> None:
    delivery = a_delivery()
    await store.enqueue_webhook(delivery)
    [claim] = await store.claim_webhooks(now=T0, lease=LEASE, limit=10)
    assert await store.complete_webhook(delivery.id) is True
    assert await store.complete_webhook(delivery.id) is False
    assert await claimed_ids(store, now=T0 + 10 * LEASE) == []
    assert not await store.reschedule_webhook(delivery.id, claim=claim.claim, due_at=T0, attempts=1)
    assert not await store.abandon_webhook(delivery.id, claim=claim.claim)


async def test_a_rescheduled_webhook_is_due_again_with_its_attempts(store: Store) -> None:
    delivery = a_delivery()
    await store.enqueue_webhook(delivery)
    [claim] = await store.claim_webhooks(now=T0, lease=LEASE, limit=10)
    assert await store.reschedule_webhook(
        delivery.id, claim=claim.claim, due_at=T0 + 10.5, attempts=1
    )
    # The reschedule ends the claim: it cannot be used twice.
    assert not await store.reschedule_webhook(
        delivery.id, claim=claim.claim, due_at=T0 + 99, attempts=2
    )
    assert await claimed_ids(store, now=T0 + 10.4) == []
    [again] = await store.claim_webhooks(now=T0 + 10.5, lease=LEASE, limit=10)
    assert again.delivery.attempts == 1
    assert again.delivery.due_at == T0 + 10.5
    assert again.delivery.body == delivery.body


async def test_an_abandoned_webhook_is_gone(store: Store) -> None:
    delivery = a_delivery()
    await store.enqueue_webhook(delivery)
    [claim] = await store.claim_webhooks(now=T0, lease=LEASE, limit=10)
    assert not await store.abandon_webhook(delivery.id, claim="clm_not-the-claim-at-all")
    assert await store.abandon_webhook(delivery.id, claim=claim.claim) is True
    assert await store.abandon_webhook(delivery.id, claim=claim.claim) is False
    assert await claimed_ids(store, now=T0 + 10 * LEASE) == []


async def test_outcomes_of_unknown_deliveries_are_refused(store: Store) -> None:
    unknown = new_id("whd")
    assert await store.complete_webhook(unknown) is False
    assert not await store.reschedule_webhook(unknown, claim="clm_x", due_at=T0, attempts=1)
    assert not await store.abandon_webhook(unknown, claim="clm_x")


async def test_concurrent_outcomes_under_one_claim_apply_once(store: Store) -> None:
    delivery = a_delivery()
    await store.enqueue_webhook(delivery)
    [claim] = await store.claim_webhooks(now=T0, lease=LEASE, limit=10)
    results = await asyncio.gather(
        *(
            store.reschedule_webhook(delivery.id, claim=claim.claim, due_at=T0 + i, attempts=1)
            for i in range(10)
        ),
        *(store.abandon_webhook(delivery.id, claim=claim.claim) for _ in range(10)),
    )
    assert results.count(True) == 1
