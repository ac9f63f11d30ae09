"""A media node past its configured capacity refuses new sessions, not new participants."""

from __future__ import annotations

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from redis.asyncio import Redis

from gateway.domain.ids import new_id
from gateway.errors import ConfigError, MediaError
from gateway.media.ice_policy import MediaNetwork
from gateway.media.reasons import MediaCloseReason
from gateway.media.rooms import MediaRooms
from gateway.media.routing import RedisRouter
from tests.factories import make_settings
from tests.fixtures.servers import RedisServer
from tests.media_plane.harness import LOOPBACK

pytestmark = pytest.mark.timeout(60)


async def _offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_a_full_node_refuses_a_new_session_but_not_a_joiner() -> None:
    rooms = MediaRooms(
        network=MediaNetwork.build(addresses=[LOOPBACK], allow_loopback=True), max_sessions=1
    )
    clients: list[RTCPeerConnection] = []
    try:
        assert not rooms.full
        pc, sdp = await _offer()
        clients.append(pc)
        await rooms.answer(session_id="s1", participant_id="p1", sdp=sdp, sdp_type="offer")
        assert rooms.full

        pc, sdp = await _offer()
        clients.append(pc)
        with pytest.raises(MediaError, match="capacity"):
            await rooms.answer(session_id="s2", participant_id="p3", sdp=sdp, sdp_type="offer")
        assert rooms.peer("p3") is None
        assert rooms.session_ids() == ["s1"]
        assert rooms.refused_sessions == 1

        # Someone joining a session already here is not a new session.
        await rooms.answer(session_id="s1", participant_id="p2", sdp=sdp, sdp_type="offer")
        assert rooms.peer("p2") is not None
        assert rooms.refused_sessions == 1

        # Datagrams an overloaded peer dropped stay counted after it closes.
        peer = rooms.peer("p2")
        assert peer is not None
        assert peer.fast_path is not None
        peer.fast_path.dropped += 5
        peer.fast_path.errors += 2
        assert rooms.dropped_datagrams() == 5
        assert rooms.forwarding_errors() == 2
        await rooms.close_participant("p2", MediaCloseReason.LEFT)
        assert rooms.dropped_datagrams() == 5
        assert rooms.forwarding_errors() == 2

        # A peer that closes by itself (its connection failed) stops counting at once,
        # and the last one of a session frees its place.
        peer = rooms.peer("p1")
        assert peer is not None
        await peer.close(MediaCloseReason.CONNECTION_FAILED)
        assert rooms.peer("p1") is None
        assert rooms.session_ids() == []
        assert not rooms.full
        assert rooms.dropped_datagrams() == 5
        await rooms.answer(session_id="s1", participant_id="p1", sdp=sdp, sdp_type="offer")
        assert rooms.session_ids() == ["s1"]

        # Once the session ends, there is room again.
        await rooms.close_session("s1", MediaCloseReason.SESSION_ENDED)
        assert not rooms.full
        pc, sdp = await _offer()
        clients.append(pc)
        await rooms.answer(session_id="s2", participant_id="p3", sdp=sdp, sdp_type="offer")
        assert rooms.session_ids() == ["s2"]
    finally:
        await rooms.close()
        for pc in clients:
            await pc.close()


def test_no_limit_by_default_and_no_negative_limit() -> None:
    network = MediaNetwork.build(addresses=[LOOPBACK], allow_loopback=True)
    assert not MediaRooms(network=network).full
    with pytest.raises(ValueError, match="max_sessions"):
        MediaRooms(network=network, max_sessions=-1)


def test_the_setting_is_read_and_checked() -> None:
    assert make_settings().media_max_sessions == 0
    assert make_settings(media_max_sessions="12").media_max_sessions == 12
    with pytest.raises(ConfigError, match="MEDIA_MAX_SESSIONS"):
        make_settings(media_max_sessions="-1")


async def test_a_session_turned_away_by_a_full_node_is_placed_again(
    redis_server: RedisServer,
) -> None:
    """Placed on a node that filled up since its last load figure, a new session is
    refused there once; its next offer goes to a node with room."""
    client = Redis.from_url(redis_server.url)
    prefix = f"qr-{new_id('tst')}:"
    network = MediaNetwork.build(addresses=[LOOPBACK], allow_loopback=True)
    nodes = [
        RedisRouter(MediaRooms(network=network, max_sessions=1), client, prefix=prefix, node_id=n)
        for n in ("a", "b")
    ]
    offers: list[RTCPeerConnection] = []
    try:
        for node in nodes:
            await node.start()
        full, spare = nodes
        pc, sdp = await _offer()
        offers.append(pc)
        await full.rooms.answer(session_id="s1", participant_id="p1", sdp=sdp, sdp_type="offer")
        assert full.rooms.full
        # The load table has not caught up yet: the new session is placed on the full node.
        await client.hset(f"{prefix}media:sessions", "s2", "a")

        pc, sdp = await _offer()
        offers.append(pc)
        with pytest.raises(MediaError):
            await spare.answer(session_id="s2", participant_id="p2", sdp=sdp, sdp_type="offer")
        assert await client.hget(f"{prefix}media:sessions", "s2") is None

        await full._beat()  # the full node now publishes itself as the last choice
        await spare.answer(session_id="s2", participant_id="p2", sdp=sdp, sdp_type="offer")
        assert await client.hget(f"{prefix}media:sessions", "s2") == b"b"
        assert spare.rooms.session_ids() == ["s2"]
    finally:
        for node in nodes:
            await node.stop()
            await node.rooms.close()
        for pc in offers:
            await pc.close()
        await client.aclose()
