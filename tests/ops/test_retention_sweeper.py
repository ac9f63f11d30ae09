"""The application's retention sweeper: owned by the app (started and stopped with it),
its passes counted in /metrics by kind, with no id in any label; erasures counted too."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.clock import FrozenClock
from gateway.metrics import GatewayMetrics, RetentionKind
from gateway.storage import MemoryStore
from gateway.web import SERVICES, create_app
from gateway.web.retention import RETENTION
from tests.factories import make_settings, seed

ClientFactory = Callable[..., Awaitable[TestClient]]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_the_app_runs_one_sweeper_and_counts_its_passes(
    aiohttp_client: ClientFactory, memory_store: MemoryStore, clock: FrozenClock
) -> None:
    app = create_app(make_settings(), clock=clock, store_factory=lambda _: memory_store)
    server = TestServer(app)
    client = await aiohttp_client(server)
    sweeper = app[RETENTION]
    services = app[SERVICES]
    assert sweeper.passes == 0  # the first pass waits: a start stays quick

    seeded = await seed(services)
    platform_id = (await memory_store.get_host(seeded.room.host_id)).platform_id  # type: ignore[union-attr]
    await services.erasure.erase(platform_id, seeded.client.id, actor="test")
    for n in range(3):
        await memory_store.consume_link(f"jti-{n}", expires_at=clock.now() - 1, now=clock.now())
    sweeper.wake()
    async with asyncio.timeout(10):
        await sweeper.wait_for_pass(1)

    async with client.get("/metrics") as resp:
        assert resp.status == 200
        found = samples(await resp.text())
    removed = {
        kind.value: found[("quietroom_retention_removed_total", (("kind", kind.value),))]
        for kind in RetentionKind
    }
    assert removed["links"] == 3
    assert sum(removed.values()) == 3
    assert found[("quietroom_retention_last_pass_timestamp_seconds", ())] == clock.now()
    assert found[("quietroom_retention_failures_total", ())] == 0
    assert found[("quietroom_participants_erased_total", ())] == 1
    labels = {value for _, pairs in found for _, value in pairs}
    assert seeded.client.id not in labels

    await client.close()
    assert sweeper._task is None  # stopped with the app


def test_a_failed_pass_is_counted() -> None:
    metrics = GatewayMetrics()
    metrics.retention_failures.inc()
    metrics.retention_pass({"audit_entries": 5, "recordings": 0}, at=12.0)
    assert metrics.retention_removed.labels(kind="audit_entries")._value.get() == 5
    assert metrics.retention_failures._value.get() == 1
    assert metrics.retention_last_pass._value.get() == 12.0
