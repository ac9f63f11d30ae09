"""With Redis down, joins and admissions fail closed with a clear message; when it is
back, they work again by themselves, and nothing happens twice."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from gateway.storage import RedisStore, SecretBox
from tests.fixtures.servers import RedisServer
from tests.gateway_harness import Refused, RunningGateway, eventually, running_gateway

pytestmark = pytest.mark.integration


async def _ready(gateway: RunningGateway) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(gateway.url + "/readyz") as resp,
    ):
        return resp.status, await resp.text()


async def test_joins_and_admissions_fail_closed_while_redis_is_down_then_recover(
    redis_server_factory: Callable[..., RedisServer], secret_box: SecretBox
) -> None:
    redis = redis_server_factory(appendonly=True)
    # A short command timeout: a stopped server refuses connections at once anyway.
    store = RedisStore.from_url(redis.url, secret_box=secret_box, timeout=2.0)
    async with running_gateway(store, reconnect_grace=60, host_away_grace=30) as gateway:
        seeded = await gateway.seed()
        host = await gateway.signed_in_host(seeded)
        console = await host.socket("/host")
        client, client_sock = await gateway.verified_client(seeded)
        latecomer = await gateway.invite_client(seeded, "Late Client")
        assert (await _ready(gateway))[0] == 200

        redis.stop()

        status, body = await _ready(gateway)
        assert status == 503
        assert "store_unavailable" in body
        # Opening a link, and redeeming it: a 503 page that says the link works later.
        for status, page in (
            await gateway.browser().get(latecomer.path),
            await gateway.browser().post_form(latecomer.path, {"frame": ""}),
        ):
            assert status == 503
            assert "Your link has not been used up" in page
        # An admission: refused with store_unavailable and a message for people.
        ack = await console.call("admit", {"participant_id": seeded.client.id})
        assert ack["ok"] is False
        assert ack["error"]["code"] == "store_unavailable"
        assert "try again" in ack["error"]["message"]
        # A new socket (a second tab): refused, saying why.
        with pytest.raises(Refused) as refused:
            await client.socket("/client")
        assert refused.value.code == "store_unavailable"

        redis.start()

        await eventually(
            lambda: _is_ready(gateway), timeout=10, what="ready again after Redis came back"
        )
        ack = await console.call("admit", {"participant_id": seeded.client.id})
        assert ack == {"ok": True, "participant_id": seeded.client.id, "state": "admitted"}
        await client_sock.wait_for("admitted")
        # Nothing was lost meanwhile (AOF), and the latecomer's link was never used up.
        assert await gateway.browser().open_link(latecomer.path) == 303
        again = await console.call("admit", {"participant_id": seeded.client.id})
        assert again["error"]["code"] == "illegal_transition"

        entries = await store.read_audit(after_seq=0, limit=1000)
        admissions = [
            entry
            for entry in entries
            if entry.action == "participant.admit"
            and entry.subjects.get("participant") == seeded.client.id
        ]
        assert len(admissions) == 1
        await gateway.services.audit.verify()


async def _is_ready(gateway: RunningGateway) -> bool:
    return (await _ready(gateway))[0] == 200
