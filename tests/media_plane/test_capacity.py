"""A media node past its configured capacity refuses new sessions, not new participants."""

from __future__ import annotations

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from gateway.errors import ConfigError, MediaError
from gateway.media.ice_policy import MediaNetwork
from gateway.media.reasons import MediaCloseReason
from gateway.media.rooms import MediaRooms
from tests.factories import make_settings
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
        assert rooms.dropped_datagrams() == 5
        await rooms.close_participant("p2", MediaCloseReason.LEFT)
        assert rooms.dropped_datagrams() == 5

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
