"""Two (or more) aiortc peers through the gateway on loopback, with real pre-encoded media.

The clients are plain aiortc peers in this process: a publisher sends pre-encoded VP8 or
H.264 and Opus, and a subscriber's aiortc receivers decode what the gateway forwards.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver
from aiortc import rtcrtpsender as aiortc_sender

from gateway.errors import PeerClosed, SdpRejected
from gateway.media import _aiortc
from gateway.media.codecs import VideoCodec, video_preferences
from gateway.media.forwarder import RoomForwarder
from gateway.media.ice_policy import MediaNetwork
from gateway.media.peer import GatewayPeer
from gateway.media.reasons import MediaCloseReason
from tests.media_plane.harness import LOOPBACK, LoopbackRoom, wait_for
from tests.media_plane.media import Clip

pytestmark = pytest.mark.timeout(60)


def _udp_socket_inodes() -> set[int]:
    """Every UDP socket's inode in the kernel's tables."""
    return {
        int(row.split()[9])
        for table in ("/proc/self/net/udp", "/proc/self/net/udp6")
        for row in Path(table).read_text("ascii").splitlines()[1:]
    }


async def test_oversized_and_junk_datagrams_from_anyone_do_not_end_the_call(
    room: LoopbackRoom, vp8_clip: Clip, opus_clip: Clip
) -> None:
    pub = await room.add_publisher("ptc_pub", video=vp8_clip, audio=opus_clip)
    sub = await room.add_subscriber("ptc_sub")
    video = sub.received["video"]
    assert await wait_for(lambda: video.count >= 15, timeout=6)
    ports = [
        (c.host, c.port)
        for peer in (pub.gateway, sub.gateway)
        if peer.peer_connection is not None
        for ice in _aiortc._ice_transports(peer.peer_connection)
        for c in ice._connection.local_candidates
    ]
    assert ports
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for addr in ports:
            for second in (200, 201, 96, 111):  # SRTCP (SR, RR) and SRTP, as RFC 7983 sorts
                stranger.sendto(bytes([0x80, second]) + b"\xff" * 1598, addr)
                stranger.sendto(bytes([0x80, second]) + os.urandom(100), addr)
            stranger.sendto(b"\x16\xfe\xfd" + os.urandom(60), addr)  # junk DTLS
    finally:
        stranger.close()
    seen = video.count
    assert await wait_for(lambda: video.count >= seen + 30, timeout=6)
    assert pub.gateway.connection_state == "connected"
    assert sub.gateway.connection_state == "connected"

    # A copy too long to protect is not sent, and nothing raises.
    (sent_video,) = [t for t in sub.gateway.subscribed if t.kind == "video"]
    too_long = bytes([0x80, 96, 0, 1]) + bytes(8) + b"\x00" * 1400
    assert sent_video.sink.send(too_long) is False


async def test_vp8_and_opus_are_decoded_at_the_far_end(
    room: LoopbackRoom, vp8_clip: Clip, opus_clip: Clip
) -> None:
    pub = await room.add_publisher("ptc_pub", video=vp8_clip, audio=opus_clip)
    sub = await room.add_subscriber("ptc_sub")
    video, audio = sub.received["video"], sub.received["audio"]
    assert await wait_for(lambda: video.count >= 45 and audio.count >= 50, timeout=6)
    assert video.sizes == {(320, 240)}

    stats = room.forwarder.stats
    assert stats.packets_in > 0
    assert stats.octets_in > 0
    assert stats.packets_out > 0
    assert stats.octets_out > 0
    assert stats.unknown_payload == 0
    # Media came through the synchronous path, not aiortc's queue and tasks.
    fast = pub.gateway.fast_path
    assert fast is not None
    assert fast.packets >= stats.packets_in * 0.9
    assert fast.errors == 0
    # Most of it was forwarded by the compiled path (the first packets, RTCP and RTX
    # take the Python path).
    assert fast.native_packets >= stats.packets_in * 0.5
    # The compiled path read the sockets itself (in place of asyncio's transport), and
    # that carried the call's handshake too: STUN and DTLS went on to aioice from there.
    assert fast.readers
    assert sum(r.datagrams for r in fast.readers) >= stats.packets_in
    # The kernel's drop counts (for /metrics) are read for the peer's own sockets.
    assert fast.inodes
    assert fast.inodes <= _udp_socket_inodes()
    (published_video,) = [t for t in room.forwarder.published if t.kind == "video"]
    (sent_video,) = [t for t in sub.gateway.subscribed if t.kind == "video"]
    assert published_video.counters.packets > 0
    assert sent_video.counters.octets > 0
    # The gateway's sender reports reach the subscriber, with the forwarded counts.
    assert await wait_for(lambda: stats.sender_reports_received > 0, timeout=3)
    await asyncio.sleep(1.6)
    reports = await _remote_outbound(sub.pc)
    assert reports
    assert all(r.packetsSent > 0 for r in reports)
    # And the gateway's receiver reports reach the publisher (aiortc's statistics, fed).
    publisher_stats = await pub.pc.getStats()
    received = [s for s in publisher_stats.values() if s.type == "remote-inbound-rtp"]
    assert {s.kind for s in received} == {"audio", "video"}


async def test_the_python_path_alone_carries_a_call(vp8_clip: Clip, opus_clip: Clip) -> None:
    # What a gateway installed without a C compiler does (and every packet the compiled
    # path hands back): the same call, on Python only.
    room = LoopbackRoom(native=False)
    try:
        pub = await room.add_publisher("ptc_pub", video=vp8_clip, audio=opus_clip)
        sub = await room.add_subscriber("ptc_sub")
        video, audio = sub.received["video"], sub.received["audio"]
        assert await wait_for(lambda: video.count >= 30 and audio.count >= 30, timeout=6)
        fast = pub.gateway.fast_path
        assert fast is not None
        assert fast.lanes == []
        assert fast.readers == []
        assert fast.native_packets == 0
        assert fast.packets >= room.forwarder.stats.packets_in * 0.9
    finally:
        await room.close()


async def _remote_outbound(pc: RTCPeerConnection) -> list[Any]:
    report = await pc.getStats()
    return [s for s in report.values() if s.type == "remote-outbound-rtp"]


async def test_the_gateway_never_decodes_or_encodes_forwarded_media(
    room: LoopbackRoom, vp8_clip: Clip, opus_clip: Clip, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoding: set[int] = set()
    aiortc_handle = RTCRtpReceiver._handle_rtp_packet

    async def spy_handle(self: RTCRtpReceiver, packet: Any, arrival_time_ms: int) -> None:
        decoding.add(id(self))
        await aiortc_handle(self, packet, arrival_time_ms)

    encoders: list[str] = []
    aiortc_get_encoder = aiortc_sender.get_encoder

    def spy_get_encoder(codec: Any) -> Any:
        encoders.append(codec.mimeType)
        return aiortc_get_encoder(codec)

    monkeypatch.setattr(RTCRtpReceiver, "_handle_rtp_packet", spy_handle)
    monkeypatch.setattr(aiortc_sender, "get_encoder", spy_get_encoder)

    pub = await room.add_publisher("ptc_pub", video=vp8_clip, audio=opus_clip)
    sub = await room.add_subscriber("ptc_sub")
    assert await wait_for(lambda: sub.received["video"].count >= 30, timeout=6)

    gateway_receivers = [
        t.receiver
        for client in (pub, sub)
        for t in (client.gateway.peer_connection.getTransceivers())  # type: ignore[union-attr]
    ]
    subscriber_receivers = [t.receiver for t in sub.pc.getTransceivers()]
    # aiortc's jitter buffer and decoder see the subscriber's packets, never the gateway's.
    assert {id(r) for r in subscriber_receivers} <= decoding
    assert not {id(r) for r in gateway_receivers} & decoding
    assert not any(_aiortc.decoder_running(r) for r in gateway_receivers)
    # Only the publisher's two senders made an encoder object (to packetize its clips).
    assert sorted(encoders) == ["audio/opus", "video/VP8"]


async def test_a_subscriber_joining_mid_stream_decodes_within_a_second(
    room: LoopbackRoom, vp8_clip: Clip, opus_clip: Clip
) -> None:
    assert vp8_clip.keyframes == 1  # only at the start: no luck involved
    pub = await room.add_publisher("ptc_pub", video=vp8_clip, audio=opus_clip)
    await asyncio.sleep(2)
    sub = await room.add_subscriber("ptc_sub")
    video = sub.received["video"]
    assert await wait_for(lambda: video.count > 0, timeout=3)
    assert sub.connected_at is not None
    assert video.first_at is not None
    assert video.first_at - sub.connected_at < 1.0
    assert pub.video is not None
    assert pub.video.keyframe_requests >= 1
    assert room.forwarder.stats.keyframe_requests_sent >= 1


async def test_two_percent_loss_on_each_leg_keeps_video_decoding(
    room: LoopbackRoom, vp8_clip: Clip, opus_clip: Clip
) -> None:
    await room.add_publisher("ptc_pub", video=vp8_clip, audio=opus_clip, loss=0.02, seed=11)
    sub = await room.add_subscriber("ptc_sub", loss=0.02, seed=23)
    video = sub.received["video"]
    assert await wait_for(lambda: video.count > 0, timeout=3)
    start = time.monotonic()
    await asyncio.sleep(6)
    end = time.monotonic()
    decoded = video.between(start, end)
    assert decoded >= 0.7 * 30 * (end - start), decoded
    assert video.longest_gap(start, end) < 1.5
    stats = room.forwarder.stats
    # Losses were repaired both ways: NACKs upstream, and retransmissions downstream.
    assert stats.nacks_sent_upstream > 0
    assert stats.retransmissions_received > 0
    assert stats.nacks_received > 0
    assert stats.retransmissions_sent > 0


async def test_h264_is_decoded_at_the_far_end_and_on_a_late_join(
    h264_room: LoopbackRoom, h264_clip: Clip, opus_clip: Clip
) -> None:
    assert h264_clip.keyframes == 1
    await h264_room.add_publisher("ptc_pub", video=h264_clip, audio=opus_clip)
    first = await h264_room.add_subscriber("ptc_sub")
    assert await wait_for(lambda: first.received["video"].count >= 30, timeout=6)
    assert first.received["video"].sizes == {(320, 240)}
    late = await h264_room.add_subscriber("ptc_late")
    video = late.received["video"]
    assert await wait_for(lambda: video.count > 0, timeout=3)
    assert late.connected_at is not None
    assert video.first_at is not None
    assert video.first_at - late.connected_at < 1.0
    assert "H264" in (await _answer_video_codecs(late.gateway))


async def _answer_video_codecs(peer: GatewayPeer) -> str:
    pc = peer.peer_connection
    assert pc is not None
    video = pc.localDescription.sdp.split("m=video", 1)[1]
    return " ".join(line for line in video.splitlines() if line.startswith("a=rtpmap"))


async def test_a_one_to_one_call_goes_both_ways(
    room: LoopbackRoom, vp8_clip: Clip, opus_clip: Clip
) -> None:
    therapist = await room.add_two_way("ptc_host", video=vp8_clip, audio=opus_clip)
    client = await room.add_two_way("ptc_client", video=vp8_clip, audio=opus_clip)
    for side in (therapist, client):
        assert await wait_for(
            lambda side=side: (
                side.received["video"].count >= 20 and side.received["audio"].count >= 20
            ),
            timeout=6,
        )
    # Each receives the other, never itself.
    for side, other in ((therapist, client), (client, therapist)):
        for track in side.gateway.subscribed:
            assert track.source is not None
            assert track.source.participant_id == other.participant_id


async def test_a_publisher_that_reconnects_continues_on_the_same_subscriber_stream(
    room: LoopbackRoom, vp8_clip: Clip, opus_clip: Clip
) -> None:
    first = await room.add_publisher("ptc_pub", video=vp8_clip, audio=opus_clip)
    sub = await room.add_subscriber("ptc_sub")
    video = sub.received["video"]
    assert await wait_for(lambda: video.count >= 20, timeout=6)
    await first.gateway.close(MediaCloseReason.LEFT)
    await first.pc.close()
    before = video.count
    await room.add_publisher("ptc_pub", video=vp8_clip, audio=opus_clip)
    # New SSRCs and sequence numbers upstream; one continuous stream downstream.
    assert await wait_for(lambda: video.count >= before + 30, timeout=6)
    (slot,) = [t for t in sub.gateway.subscribed if t.kind == "video"]
    assert slot.source is not None
    assert slot.source.track_id.startswith("ptc_pub/")


async def test_gateway_candidates_come_only_from_the_media_addresses(
    room: LoopbackRoom, vp8_clip: Clip
) -> None:
    pub = await room.add_publisher("ptc_pub", video=vp8_clip)
    pc = pub.gateway.peer_connection
    assert pc is not None
    candidates = [
        line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate:")
    ]
    assert candidates
    assert all(line.split()[4] == LOOPBACK for line in candidates)
    assert _aiortc.local_candidate_addresses(pc) == {LOOPBACK}


async def _client_offer(
    kinds: tuple[str, ...] = ("audio", "video"), video: VideoCodec | None = None
) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for kind in kinds:
        transceiver = pc.addTransceiver(kind, direction="sendonly")
        if kind == "video" and video is not None:
            transceiver.setCodecPreferences(video_preferences([video]))
    _aiortc.restrict_gathering(pc, [LOOPBACK])
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def _peer(
    network: MediaNetwork | None = None, codecs: tuple[VideoCodec, ...] = (VideoCodec.VP8,)
) -> GatewayPeer:
    return GatewayPeer(
        room_id="rm_test",
        participant_id="ptc_x",
        forwarder=RoomForwarder(room_id="rm_test"),
        network=network or MediaNetwork.build(addresses=[LOOPBACK], allow_loopback=True),
        video_codecs=codecs,
    )


async def test_client_loopback_candidates_are_dropped_unless_allowed() -> None:
    client, offer = await _client_offer()
    strict = _peer(MediaNetwork.build(addresses=[]))
    try:
        answer = await strict.answer(sdp=offer, sdp_type="offer")
        assert strict.dropped_candidates == offer.count("a=candidate:")
        assert "a=candidate:" not in answer  # and no media addresses: no candidates of its own
        assert not await strict.add_ice_candidate(
            candidate="candidate:1 1 udp 2130706431 127.0.0.1 4000 typ host", sdp_mid="0"
        )
        assert not await strict.add_ice_candidate(
            candidate="candidate:1 1 udp 2130706431 169.254.0.9 4000 typ host", sdp_mid="0"
        )
        assert await strict.add_ice_candidate(
            candidate="candidate:1 1 udp 2130706431 203.0.113.9 4000 typ host", sdp_mid="0"
        )
        assert not await strict.add_ice_candidate(candidate=12, sdp_mid="0")
        assert strict.dropped_candidates == offer.count("a=candidate:") + 2
    finally:
        await strict.close(MediaCloseReason.SESSION_ENDED)
        await client.close()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda sdp: "",
        lambda sdp: "x" * 70_000,
        lambda sdp: sdp + "a=" + "x" * 70_000,
        lambda sdp: sdp.replace("a=fingerprint", "a=fingerprint-not"),
        lambda sdp: sdp.replace("VP8/90000", "VP9/90000").replace("opus/48000/2", "L16/8000"),
        lambda sdp: sdp.replace("a=rtpmap:96 opus/48000/2", "a=rtpmap:96 opus"),
        lambda sdp: sdp[: len(sdp) // 2],
        lambda sdp: sdp.replace("a=mid:", "a=ssrc-group:FID x\r\na=mid:", 1),
    ],
)
async def test_bad_offers_are_refused_and_close_the_peer(mutate: Callable[[str], str]) -> None:
    client, offer = await _client_offer()
    peer = _peer()
    try:
        with pytest.raises(SdpRejected):
            await peer.answer(sdp=mutate(offer), sdp_type="offer")
        assert peer.close_reason is MediaCloseReason.SDP_REJECTED
        assert peer.connection_state == "closed"
        with pytest.raises(PeerClosed, match="sdp_rejected"):
            await peer.answer(sdp=offer, sdp_type="offer")
    finally:
        await peer.close(MediaCloseReason.SESSION_ENDED)
        await client.close()


async def test_each_audio_and_video_slot_pair_is_one_stream_in_the_answer() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for direction in ("sendrecv", "recvonly"):
        pc.addTransceiver("audio", direction=direction)
        pc.addTransceiver("video", direction=direction)
    _aiortc.restrict_gathering(pc, [LOOPBACK])
    await pc.setLocalDescription(await pc.createOffer())
    peer = _peer()
    try:
        answer = await peer.answer(sdp=pc.localDescription.sdp, sdp_type="offer")
        streams = [
            line.split(":", 1)[1].split()[0]
            for line in answer.split("\r\n")
            if line.startswith("a=msid:")
        ]
        assert len(streams) == 4
        assert streams[0] == streams[1]
        assert streams[2] == streams[3]
        assert streams[0] != streams[2]
    finally:
        await peer.close(MediaCloseReason.SESSION_ENDED)
        await pc.close()


async def test_an_offer_without_a_room_codec_is_refused() -> None:
    client, offer = await _client_offer(("video",), video=VideoCodec.VP8)
    assert "H264" not in offer
    peer = _peer(codecs=(VideoCodec.H264,))
    try:
        with pytest.raises(SdpRejected, match="cannot be answered"):
            await peer.answer(sdp=offer, sdp_type="offer")
    finally:
        await peer.close(MediaCloseReason.SESSION_ENDED)
        await client.close()


async def test_randomly_broken_offers_raise_nothing_but_sdp_rejected() -> None:
    client, offer = await _client_offer()
    lines = offer.split("\r\n")
    rng = random.Random(7)
    try:
        for _ in range(40):
            broken = list(lines)
            for _ in range(rng.randint(1, 4)):
                index = rng.randrange(len(broken))
                action = rng.choice(("drop", "duplicate", "cut", "swap"))
                if action == "drop":
                    del broken[index]
                elif action == "duplicate":
                    broken.insert(index, broken[index])
                elif action == "cut":
                    broken[index] = broken[index][: rng.randrange(len(broken[index]) + 1)]
                else:
                    other = rng.randrange(len(broken))
                    broken[index], broken[other] = broken[other], broken[index]
            peer = _peer()
            try:
                await peer.answer(sdp="\r\n".join(broken), sdp_type="offer")
            except SdpRejected:
                assert peer.connection_state == "closed"
            finally:
                await peer.close(MediaCloseReason.SESSION_ENDED)
    finally:
        await client.close()


async def test_close_is_safe_twice_and_frees_the_slots(
    room: LoopbackRoom, vp8_clip: Clip, opus_clip: Clip
) -> None:
    pub = await room.add_publisher("ptc_pub", video=vp8_clip, audio=opus_clip)
    sub = await room.add_subscriber("ptc_sub")
    assert await wait_for(lambda: sub.received["video"].count > 0, timeout=6)
    await pub.gateway.close(MediaCloseReason.REMOVED)
    await pub.gateway.close(MediaCloseReason.SESSION_ENDED)
    assert pub.gateway.close_reason is MediaCloseReason.REMOVED
    assert pub.gateway.connection_state == "closed"
    assert room.forwarder.published == []
    assert all(t.source is None for t in sub.gateway.subscribed)
    with pytest.raises(PeerClosed, match="removed"):
        await pub.gateway.answer(sdp="v=0", sdp_type="offer")
