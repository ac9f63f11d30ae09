"""Media negotiated over the real sockets of a running gateway, gated on admission.

The host and the client are aiortc peers in this process that signal exactly as the
browser pages do (``media.config``, ``media.offer``, ``media.candidate``), against a
gateway serving on 127.0.0.1 with its media address on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import socketio

from gateway.domain.model import RoomPolicy
from gateway.media.reasons import MediaCloseReason
from gateway.web.keys import MEDIA
from tests.fixtures.servers import CoturnServer
from tests.gateway_harness import RunningGateway, running_gateway
from tests.media_plane.harness import LOOPBACK, Caller, wait_for
from tests.media_plane.media import Clip

pytestmark = [pytest.mark.timeout(90), pytest.mark.integration]

MEDIA_SETTINGS: dict[str, Any] = {
    "media_addresses": [LOOPBACK],
    "media_allow_loopback": True,
}


@asynccontextmanager
async def call_parties(
    gateway: RunningGateway, vp8_clip: Clip, opus_clip: Clip, *, policy: RoomPolicy | None = None
) -> AsyncIterator[tuple[Any, Caller, Caller]]:
    """A seeded session with a signed-in host and a verified client who waits."""
    seeded = await gateway.seed(policy=policy)
    host = await gateway.signed_in_host(seeded)
    host_sock = await host.socket("/host")
    _, client_sock = await gateway.verified_client(seeded)
    host_side = Caller(host_sock, vp8_clip, opus_clip)
    client_side = Caller(client_sock, vp8_clip, opus_clip)
    try:
        yield seeded, host_side, client_side
    finally:
        await client_side.close()
        await host_side.close()


async def test_admitted_client_and_host_see_each_other(vp8_clip: Clip, opus_clip: Clip) -> None:
    async with (
        running_gateway(**MEDIA_SETTINGS) as gateway,
        call_parties(gateway, vp8_clip, opus_clip) as (seeded, host, client),
    ):
        assert gateway.app is not None
        rooms = gateway.app[MEDIA]
        admitted = await host.sock.call("admit", {"participant_id": seeded.client.id})
        assert admitted["ok"], admitted
        assert (await client.offer())["ok"]
        assert (await host.offer())["ok"]

        decoded = await wait_for(
            lambda: all(
                side.received[kind].count >= 10 for side in (host, client) for kind in ("video",)
            ),
            timeout=15,
        )
        assert decoded, {k: c.count for k, c in client.received.items()}
        forwarder = rooms.forwarder(seeded.appointment.id)
        assert forwarder is not None
        assert forwarder.stats.video_packets_out > 0
        assert forwarder.stats.audio_packets_out > 0
        # Connected media moves the client from admitted to in session.
        assert await wait_for(
            lambda: client.sock.events("state")[-1:] == [{"state": "in_session"}], timeout=5
        )
        # The forwarding counters reach /metrics.
        status, metrics = await gateway.browser().get("/metrics")
        assert status == 200
        video_line = next(
            line
            for line in metrics.splitlines()
            if line.startswith('quietroom_forwarded_packets_total{kind="video"}')
        )
        assert float(video_line.split()[-1]) > 0
        samples = dict(
            line.split(" ", 1)
            for line in metrics.splitlines()
            if line.startswith("quietroom_media_")
        )
        assert float(samples["quietroom_media_sessions"]) == 1
        assert float(samples["quietroom_media_sessions_refused_total"]) == 0
        assert "quietroom_media_dropped_datagrams_total" in samples
        assert float(samples["quietroom_media_forwarding_errors_total"]) == 0


async def test_a_waiting_clients_offer_is_refused_before_any_peer_exists(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    async with (
        running_gateway(**MEDIA_SETTINGS) as gateway,
        call_parties(gateway, vp8_clip, opus_clip) as (seeded, _host, client),
    ):
        assert gateway.app is not None
        rooms = gateway.app[MEDIA]
        for event, payload in (
            ("media.config", None),
            ("media.offer", {"type": "offer", "sdp": "v=0\r\n"}),
            ("media.candidate", {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}),
        ):
            answer = await client.sock.call(event, payload)
            assert answer["ok"] is False
            assert answer["error"]["code"] == "not_allowed"
        answer = await client.offer(ask_config=False)
        assert answer["error"]["code"] == "not_allowed"
        assert rooms.peer_count == 0
        assert rooms.forwarder(seeded.appointment.id) is None


async def test_removal_and_session_end_close_the_peers(vp8_clip: Clip, opus_clip: Clip) -> None:
    async with (
        running_gateway(**MEDIA_SETTINGS) as gateway,
        call_parties(gateway, vp8_clip, opus_clip) as (seeded, host, client),
    ):
        assert gateway.app is not None
        rooms = gateway.app[MEDIA]
        await host.sock.call("admit", {"participant_id": seeded.client.id})
        assert (await client.offer())["ok"]
        assert (await host.offer())["ok"]
        client_peer = rooms.peer(seeded.client.id)
        host_peer = rooms.peer(seeded.host.id)
        assert client_peer is not None
        assert host_peer is not None

        removed = await host.sock.call("remove", {"participant_id": seeded.client.id})
        assert removed["ok"], removed
        assert client_peer.close_reason is MediaCloseReason.REMOVED
        assert rooms.peer(seeded.client.id) is None
        # A removed client cannot come back with a new offer.
        again = await client.sock.call("media.offer", {"type": "offer", "sdp": "v=0\r\n"})
        assert again["ok"] is False

        assert (await host.sock.call("end"))["ok"]
        assert host_peer.close_reason is MediaCloseReason.SESSION_ENDED
        assert rooms.peer_count == 0
        assert rooms.session_count == 0


async def test_a_second_offer_replaces_the_first_peer(vp8_clip: Clip, opus_clip: Clip) -> None:
    async with (
        running_gateway(**MEDIA_SETTINGS) as gateway,
        call_parties(gateway, vp8_clip, opus_clip) as (seeded, host, client),
    ):
        assert gateway.app is not None
        rooms = gateway.app[MEDIA]
        await host.sock.call("admit", {"participant_id": seeded.client.id})
        assert (await host.offer())["ok"]
        assert (await client.offer())["ok"]
        first = rooms.peer(seeded.client.id)
        assert first is not None
        await client.close()
        client.received.clear()
        assert (await client.offer())["ok"]
        assert first.close_reason is MediaCloseReason.RENEGOTIATED
        second = rooms.peer(seeded.client.id)
        assert second is not None
        assert second is not first
        counter = client.received["video"]
        assert await wait_for(lambda: counter.count >= 10, timeout=15)


async def test_bad_media_payloads_are_refused_without_a_peer(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    async with (
        running_gateway(**MEDIA_SETTINGS) as gateway,
        call_parties(gateway, vp8_clip, opus_clip) as (seeded, host, client),
    ):
        assert gateway.app is not None
        rooms = gateway.app[MEDIA]
        await host.sock.call("admit", {"participant_id": seeded.client.id})
        cases: list[tuple[Any, str]] = [
            ({"type": "answer", "sdp": "v=0\r\n"}, "sdp_rejected"),
            ({"type": "offer", "sdp": "v=0\r\nm=nonsense\r\n"}, "sdp_rejected"),
            ({"type": "offer", "sdp": "v=0\r\n" + "a=x\r\n" * 5_000}, "sdp_rejected"),
            ({"type": "offer"}, "invalid_input"),
            ({"type": "offer", "sdp": 42}, "invalid_input"),
            ("v=0", "invalid_input"),
        ]
        for payload, code in cases:
            answer = await client.sock.call("media.offer", payload)
            assert answer["ok"] is False, payload
            assert answer["error"]["code"] == code, (payload, answer)
            assert rooms.peer(seeded.client.id) is None
        # Candidates: malformed or toward refused addresses are not accepted.
        await asyncio.sleep(1.5)  # the per-connection rate limit (bursts of 10) refills
        answer = await client.offer()
        assert answer["ok"], answer
        for candidate in ("nonsense", "candidate:1 1 udp 1 169.254.1.1 9 typ host"):
            answer = await client.sock.call(
                "media.candidate", {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0}
            )
            assert answer == {"ok": True, "accepted": False}


async def test_an_oversized_offer_closes_the_socket_without_a_peer(
    vp8_clip: Clip, opus_clip: Clip
) -> None:
    async with (
        running_gateway(**MEDIA_SETTINGS) as gateway,
        call_parties(gateway, vp8_clip, opus_clip) as (seeded, host, client),
    ):
        assert gateway.app is not None
        await host.sock.call("admit", {"participant_id": seeded.client.id})
        with pytest.raises(socketio.exceptions.TimeoutError):
            await client.sock.call("media.offer", {"type": "offer", "sdp": "x" * 70_000}, timeout=2)
        assert await wait_for(lambda: not client.sock.sio.connected, timeout=5)
        assert gateway.app[MEDIA].peer_count == 0


async def test_relay_only_rooms_connect_through_coturn(
    coturn_server: CoturnServer, vp8_clip: Clip, opus_clip: Clip
) -> None:
    turn_url = f"turn:{LOOPBACK}:{coturn_server.port}?transport=udp"
    async with (
        running_gateway(
            **MEDIA_SETTINGS, turn_secrets=list(coturn_server.secrets), turn_urls=[turn_url]
        ) as gateway,
        call_parties(gateway, vp8_clip, opus_clip, policy=RoomPolicy(relay_only=True)) as (
            seeded,
            host,
            client,
        ),
    ):
        await host.sock.call("admit", {"participant_id": seeded.client.id})
        config = await client.sock.call("media.config")
        assert config["ice_transport_policy"] == "relay"
        (server,) = config["ice_servers"]
        assert server["urls"] == [turn_url]
        assert server["username"].endswith(":" + seeded.client.id)
        assert (await client.offer())["ok"]
        assert (await host.offer())["ok"]
        assert client.pc is not None
        # The client's only candidates are relayed ones: its media crossed coturn.
        offered = client.pc.localDescription.sdp
        candidates = [line for line in offered.splitlines() if line.startswith("a=candidate:")]
        assert candidates
        assert all(" typ relay " in line for line in candidates)
        assert await wait_for(lambda: client.received["video"].count >= 10, timeout=20)
        assert await wait_for(lambda: host.received["video"].count >= 10, timeout=20)
