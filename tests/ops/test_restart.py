"""SIGTERM on ``quietroom serve``: it stops taking joins, tells its browsers and exits in
bounded time; the next process on the same Redis finds everyone where they were."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from gateway.clock import SystemClock
from gateway.services import Services
from gateway.settings import Settings, new_data_key, new_secret_key
from gateway.storage import RedisStore, SecretBox
from tests.fixtures.servers import RedisServer, free_port
from tests.gateway_harness import Refused, RunningGateway
from tests.ops.support import serve_process

pytestmark = pytest.mark.integration

DRAIN = 5
#: The drain, then closing: what a process manager's stop timeout must exceed.
EXIT_BOUND = DRAIN + 12


async def _readyz(url: str) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as resp:
        return resp.status, await resp.json()


async def test_sigterm_drains_and_a_restarted_gateway_finds_everyone(
    redis_server_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    redis = redis_server_factory()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_key = new_data_key()
    env = {
        "QUIETROOM_SECRET_KEYS": new_secret_key(),
        "QUIETROOM_DATA_KEYS": data_key,
        "QUIETROOM_REDIS_URL": redis.url,
        "QUIETROOM_PUBLIC_URL": url,
        "QUIETROOM_RECONNECT_GRACE": "60",
        "QUIETROOM_HOST_AWAY_GRACE": "30",
        "QUIETROOM_SHUTDOWN_DRAIN": str(DRAIN),
        "QUIETROOM_LOG_FORMAT": "json",
    }
    store = RedisStore.from_url(redis.url, secret_box=SecretBox([data_key]))
    services = Services.build(settings=Settings.load(env), store=store, clock=SystemClock())
    # The test's view of the gateway: its URL, and the same Redis behind it.
    gateway = RunningGateway(url=url, settings=Settings.load(env), services=services)
    try:
        first_log = tmp_path / "first.log"
        with serve_process(env, port, first_log) as first:
            seeded = await gateway.seed()
            client, client_sock = await gateway.verified_client(seeded)
            latecomer = await gateway.invite_client(seeded, "Late Client")

            stopped_at = time.monotonic()
            first.terminate()
            restarting = await client_sock.wait_for("restarting")
            assert restarting == {"retry_after": DRAIN + 2}
            # While draining: not ready, no link redemption, no new socket.
            assert await _readyz(url) == (503, {"status": "not_ready", "reason": "restarting"})
            status, page = await gateway.browser().get(latecomer.path)
            assert status == 503
            assert "The service is restarting" in page
            with pytest.raises(Refused) as refused:
                await client.socket("/client")
            assert refused.value.code == "restarting"
            assert await first.wait(timeout=EXIT_BOUND + 5) == 0
            assert time.monotonic() - stopped_at < EXIT_BOUND
        lines = [json.loads(line) for line in first_log.read_text().splitlines()]
        assert any(line["message"].startswith("SIGTERM: draining") for line in lines)
        assert lines[-1]["message"] == "stopped"

        with serve_process(env, port, tmp_path / "second.log") as second:
            # The client comes back to the new process: still waiting, no new knock.
            back = await client.socket("/client")
            status_ack = await back.call("status")
            assert status_ack["state"] == "waiting"
            host = await gateway.signed_in_host(seeded)
            console = await host.socket("/host")
            queue = await console.call("queue")
            assert [(p["participant_id"], p["state"]) for p in queue["participants"]] == [
                (seeded.client.id, "waiting")
            ]
            admitted = await console.call("admit", {"participant_id": seeded.client.id})
            assert admitted["ok"], admitted
            await back.wait_for("admitted")
            # The link refused while draining was not used up.
            assert await gateway.browser().open_link(latecomer.path) == 303
            second.terminate()
            await console.wait_for("restarting")
            assert await second.wait(timeout=EXIT_BOUND + 5) == 0

        with serve_process(env, port, tmp_path / "third.log"):
            again = await client.socket("/client")
            assert (await again.call("status"))["state"] == "admitted"
            console = await host.socket("/host")
            queue = await console.call("queue")
            states = {p["participant_id"]: p["state"] for p in queue["participants"]}
            assert states == {seeded.client.id: "admitted", latecomer.participant.id: "knocking"}
    finally:
        for sock in gateway.sockets:
            await sock.close()
        await store.close()
