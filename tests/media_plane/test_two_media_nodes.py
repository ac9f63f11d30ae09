"""Two ``quietroom serve`` processes on one real Redis, media through one of them.

The host's signaling goes to one process and the client's to the other; the session's
media is placed on one node and both reach it. Then that node is killed: its session
moves to the other node, the participants are told to offer again (or offer again as
their socket comes back), and media flows again, nobody back in the waiting room.
"""

from __future__ import annotations

import logging
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from gateway.clock import SystemClock
from gateway.services import Services
from gateway.settings import Settings, new_data_key, new_secret_key
from gateway.storage import RedisStore, SecretBox
from tests.fixtures.servers import RedisServer, free_port
from tests.gateway_harness import RunningGateway
from tests.media_plane.harness import LOOPBACK, Caller, wait_for
from tests.media_plane.media import Clip
from tests.ops.support import ServeProcess, serve_process

pytestmark = [pytest.mark.timeout(120), pytest.mark.integration]

log = logging.getLogger(__name__)

_NODE_UP = re.compile(r"media node ([0-9a-f]+) up")


def node_id(process: ServeProcess) -> str:
    for line in process.log_lines():
        found = _NODE_UP.search(line)
        if found:
            return found.group(1)
    raise AssertionError("the process never said which media node it is")


@pytest.fixture
def two_nodes(
    redis_server: RedisServer, tmp_path: Path
) -> Iterator[tuple[ServeProcess, ServeProcess, Settings, str]]:
    port_a, port_b = free_port(), free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/5"
    env = {
        "QUIETROOM_SECRET_KEYS": new_secret_key(),
        "QUIETROOM_DATA_KEYS": new_data_key(),
        "QUIETROOM_REDIS_URL": redis_url,
        "QUIETROOM_PUBLIC_URL": url_a,
        "QUIETROOM_ALLOWED_ORIGINS": url_b,
        "QUIETROOM_RECONNECT_GRACE": "60",
        "QUIETROOM_HOST_AWAY_GRACE": "30",
        "QUIETROOM_MEDIA_ADDRESSES": LOOPBACK,
        "QUIETROOM_MEDIA_ALLOW_LOOPBACK": "true",
        "QUIETROOM_LOG_LEVEL": "INFO",
    }
    with ExitStack() as stack:
        a = stack.enter_context(serve_process(env, port_a, tmp_path / "a.log"))
        b = stack.enter_context(serve_process(env, port_b, tmp_path / "b.log"))
        yield a, b, Settings.load(env), redis_url


@pytest.fixture
async def services(
    two_nodes: tuple[ServeProcess, ServeProcess, Settings, str],
) -> AsyncIterator[Services]:
    _, _, settings, redis_url = two_nodes
    store = RedisStore.from_url(redis_url, secret_box=SecretBox(list(settings.data_keys)))
    try:
        yield Services.build(settings=settings, store=store, clock=SystemClock())
    finally:
        await store.client.flushdb()
        await store.close()


async def test_media_moves_to_the_other_node_when_its_node_dies(
    two_nodes: tuple[ServeProcess, ServeProcess, Settings, str],
    services: Services,
    vp8_clip: Clip,
    opus_clip: Clip,
) -> None:
    a, b, settings, _ = two_nodes
    gw_a = RunningGateway(url=a.url, settings=settings, services=services)
    gw_b = RunningGateway(url=b.url, settings=settings, services=services)
    seeded = await gw_a.seed()
    client_browser, client_sock = await gw_a.verified_client(seeded)  # client on A
    host_browser = await gw_a.signed_in_host(seeded)
    host_browser.gateway = gw_b  # the host's socket on B
    host_sock = await host_browser.socket("/host")
    assert (await host_sock.call("admit", {"participant_id": seeded.client.id}))["ok"]

    host = Caller(host_sock, vp8_clip, opus_clip)
    client = Caller(client_sock, vp8_clip, opus_clip)
    sockets = [client_sock, host_sock]
    try:
        assert (await client.offer())["ok"]
        assert (await host.offer())["ok"]
        assert await wait_for(
            lambda: client.received["video"].count >= 10 and host.received["video"].count >= 10,
            timeout=20,
        )
        store = services.store
        assert isinstance(store, RedisStore)
        placed = await store.client.hget(f"{store.prefix}media:sessions", seeded.appointment.id)
        assert placed is not None
        media_node = placed.decode()
        assert media_node in {node_id(a), node_id(b)}
        doomed, survivor = (a, b) if media_node == node_id(a) else (b, a)
        survivor_gw = gw_a if survivor is a else gw_b

        # The media node dies without a word.
        killed_at = time.monotonic()
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(timeout=10)

        # Whoever signalled through the dead process reconnects to the survivor (the
        # browser does this by itself) and offers again, as the page does on reconnect.
        sides = []
        for side, browser in ((client, client_browser), (host, host_browser)):
            namespace = side.sock.namespace
            signalled_on_doomed = (side is client) == (doomed is a)
            if signalled_on_doomed:
                await side.sock.close()
                browser.gateway = survivor_gw
                side.sock = await browser.socket(namespace)
                sockets.append(side.sock)
            else:
                # The other one is told that the session's media moved.
                assert await wait_for(lambda s=side: bool(s.sock.events("media.restart")), 15)
            sides.append(side)
        for side in sides:
            await side.close()
            side.received.clear()
            answer = await side.offer()
            assert answer["ok"], answer
        assert await wait_for(
            lambda: client.received["video"].count >= 10 and host.received["video"].count >= 10,
            timeout=20,
        )
        resumed_after = time.monotonic() - killed_at
        placed = await store.client.hget(f"{store.prefix}media:sessions", seeded.appointment.id)
        assert placed is not None
        assert placed.decode() == node_id(survivor)
        # Nobody went back to the waiting room.
        participant = await store.get_participant(seeded.client.id)
        assert participant is not None
        assert participant.state.value in {"admitted", "in_session"}
        log.info("media resumed %.1f s after its node was killed", resumed_after)
    finally:
        await client.close()
        await host.close()
        for sock in sockets:
            await sock.close()
