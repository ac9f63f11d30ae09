"""gateway.media._aiortc: the pinned aiortc internals it relies on, and each hook it adds."""

from __future__ import annotations

import struct
import subprocess
import sys
from types import SimpleNamespace

import pytest
from aioice import Connection
from aiortc import (
    RTCConfiguration,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
)
from aiortc.rtcdtlstransport import RtpRouter
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket

from gateway.media import _aiortc

LOOPBACK = "127.0.0.1"


def test_the_pinned_internals_are_all_there() -> None:
    assert _aiortc._check_internals() == []


def test_a_missing_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(RTCRtpReceiver, "_send_rtcp_pli")
    monkeypatch.delattr(RTCRtpSender, "_handle_rtcp_packet")
    missing = _aiortc._check_internals()
    assert "RTCRtpReceiver._send_rtcp_pli" in missing
    assert "RTCRtpSender._handle_rtcp_packet" in missing


def test_a_changed_signature_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    async def renamed(self: RTCRtpReceiver, packet: object, arrival: int) -> None:
        return None

    monkeypatch.setattr(RTCRtpReceiver, "_handle_rtp_packet", renamed)
    assert (
        "RTCRtpReceiver._handle_rtp_packet(packet, arrival_time_ms)" in _aiortc._check_internals()
    )


def test_another_aiortc_version_fails_at_import() -> None:
    code = (
        "import aiortc; aiortc.__version__ = '1.17.0'\n"
        "try:\n"
        "    import gateway.media._aiortc\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "aiortc version 1.16.0 (found 1.17.0)" in result.stdout


async def _offer_candidates(pc: RTCPeerConnection) -> set[str]:
    await pc.setLocalDescription(await pc.createOffer())
    return _aiortc.local_candidate_addresses(pc)


async def test_gathering_is_restricted_to_the_given_addresses() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio")
        pc.addTransceiver("video")
        assert _aiortc.restrict_gathering(pc, [LOOPBACK]) == 2
        assert _aiortc.restrict_gathering(pc, [LOOPBACK]) == 0  # already done
        assert await _offer_candidates(pc) == {LOOPBACK}
        assert "a=candidate:" in pc.localDescription.sdp
    finally:
        await pc.close()


async def test_without_the_restriction_aioice_leaves_loopback_out() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio")
        # In a loopback-only namespace that leaves nothing: why the media addresses exist.
        assert await _offer_candidates(pc) == set()
    finally:
        await pc.close()


async def test_relay_only_gathers_no_host_candidate_even_when_restricted() -> None:
    pc = RTCPeerConnection(
        RTCConfiguration(iceServers=[], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    )
    try:
        pc.addTransceiver("audio")
        _aiortc.restrict_gathering(pc, [LOOPBACK])
        assert await _offer_candidates(pc) == set()
    finally:
        await pc.close()


async def test_fir_is_routed_by_the_ssrc_in_its_fci() -> None:
    class Sender:
        _ssrc = 0xAAAA

    router = RtpRouter()
    sender = Sender()
    router.register_sender(sender, 0xAAAA)  # type: ignore[arg-type]
    transport = SimpleNamespace(_rtp_router=router)
    fir = RtcpPsfbPacket(
        fmt=RTCP_PSFB_FIR, ssrc=1, media_ssrc=0, fci=struct.pack("!LB3xLB3x", 0xBBBB, 1, 0xAAAA, 1)
    )
    assert router.route_rtcp(fir) == set()  # aiortc on its own
    _aiortc._route_fir(transport)  # type: ignore[arg-type]
    _aiortc._route_fir(transport)  # type: ignore[arg-type]
    assert router.route_rtcp(fir) == {sender}
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=0xAAAA)
    assert router.route_rtcp(pli) == {sender}


async def test_a_receiver_or_sender_is_intercepted_once() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver("video")

        async def nothing(*_args: object) -> None:
            return None

        def ignore(*_args: object) -> None:
            return None

        _aiortc.intercept_receiver(
            transceiver.receiver, on_started=nothing, on_rtp=ignore, on_rtcp=nothing
        )
        with pytest.raises(RuntimeError, match="already"):
            _aiortc.intercept_receiver(
                transceiver.receiver, on_started=nothing, on_rtp=ignore, on_rtcp=nothing
            )
        _aiortc.intercept_sender(transceiver.sender, on_started=nothing, on_feedback=nothing)
        with pytest.raises(RuntimeError, match="already"):
            _aiortc.intercept_sender(transceiver.sender, on_started=nothing, on_feedback=nothing)
        assert not _aiortc.decoder_running(transceiver.receiver)
        assert (
            _aiortc.sender_ssrcs(transceiver.sender)[0]
            != _aiortc.sender_ssrcs(transceiver.sender)[1]
        )
    finally:
        await pc.close()


async def test_a_sender_sink_refuses_quietly_before_dtls() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = pc.addTransceiver("video")
        sink = _aiortc.SenderSink(transceiver.sender)
        assert sink.send(b"\x80" + bytes(11)) is False
    finally:
        await pc.close()


async def test_the_receive_queue_is_bounded() -> None:
    connection = Connection(ice_controlling=True)
    fast = _aiortc.FastPath(limit=3)
    _aiortc._bound_queue(connection, fast)
    for n in range(5):
        connection.data_received(bytes([n]), 1)
    assert connection._queue.qsize() == 3
    assert fast.dropped == 2
    # What is queued comes out in order; then there is room again.
    assert [connection._queue.get_nowait()[0] for _ in range(3)] == [b"\x00", b"\x01", b"\x02"]
    connection.data_received(b"\x09", 1)
    assert connection._queue.qsize() == 1
    assert fast.dropped == 2
    await connection.close()


async def test_the_fast_path_needs_intercepted_receivers_and_a_positive_limit() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("video", direction="sendrecv")
        with pytest.raises(RuntimeError, match="intercept_receiver"):
            _aiortc.enable_fast_path(pc)
        with pytest.raises(ValueError, match="positive"):
            _aiortc.enable_fast_path(pc, queue_limit=0)
    finally:
        await pc.close()
