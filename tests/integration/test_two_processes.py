"""Two gateway processes on one real Redis: a client on one is admitted by a host on the
other, and a reconnect to the other process finds its place."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.clock import SystemClock
from gateway.services import Services
from gateway.settings import Settings, new_data_key, new_secret_key
from gateway.storage import RedisStore, SecretBox
from tests.fixtures.servers import RedisServer, free_port
from tests.gateway_harness import RunningGateway

pytestmark = pytest.mark.integration


@contextmanager
def gateway_process(env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    """``quietroom serve`` in its own process; yields its base URL once it answers."""
    url = f"http://127.0.0.1:{port}"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"],
            env={"PATH": os.environ["PATH"], **env, "QUIETROOM_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gateway on {port} did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
async def two_gateways(
    redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    port_a, port_b = free_port(), free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    secret, data_key = new_secret_key(), new_data_key()
    # A fresh database number keeps this test's keys apart from other tests' prefixes.
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/3"
    env = {
        "QUIETROOM_SECRET_KEYS": secret,
        "QUIETROOM_DATA_KEYS": data_key,
        "QUIETROOM_REDIS_URL": redis_url,
        "QUIETROOM_PUBLIC_URL": url_a,
        "QUIETROOM_ALLOWED_ORIGINS": url_b,
        "QUIETROOM_RECONNECT_GRACE": "30",
        "QUIETROOM_HOST_AWAY_GRACE": "0",
    }
    settings = Settings.load(env)
    store = RedisStore.from_url(redis_url, secret_box=SecretBox([data_key]))
    services = Services.build(settings=settings, store=store, clock=SystemClock())
    try:
        with (
            gateway_process(env, port_a, tmp_path / "a.log"),
            gateway_process(env, port_b, tmp_path / "b.log"),
        ):
            yield (
                RunningGateway(url=url_a, settings=settings, services=services),
                RunningGateway(url=url_b, settings=settings, services=services),
            )
    finally:
        await store.client.flushdb()
        await store.close()


async def test_a_host_on_one_process_admits_a_client_on_the_other(
    two_gateways: tuple[RunningGateway, RunningGateway],
) -> None:
    a, b = two_gateways
    try:
        seeded = await a.seed()
        client, client_sock = await a.verified_client(seeded)  # signaling on process A

        host = await a.signed_in_host(seeded)
        host.gateway = b  # the same browser session, now talking to process B
        console = await host.socket("/host")
        queue = await console.call("queue")
        assert [p["participant_id"] for p in queue["participants"]] == [seeded.client.id]

        # The host's presence on B reaches the client on A through Redis.
        await client_sock.wait_for("host", lambda data: data == {"present": True})
        admitted = await console.call("admit", {"participant_id": seeded.client.id})
        assert admitted["ok"], admitted
        await client_sock.wait_for("admitted")

        # The client drops from A and comes back on B: still admitted, no new wait.
        await client_sock.close()
        client.gateway = b
        back = await client.socket("/client")
        status = await back.call("status")
        assert status["state"] == "admitted"

        # A knock on B is seen by a host whose socket is on A.
        other = await b.seed()
        host_a = await a.signed_in_host(other)
        console_a = await host_a.socket("/host")
        await b.verified_client(other)
        await console_a.wait_for(
            "participant",
            lambda data: data["participant_id"] == other.client.id and data["state"] == "waiting",
        )
    finally:
        for gateway in two_gateways:
            for sock in gateway.sockets:
                await sock.close()
