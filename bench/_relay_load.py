"""Load peers for the relay benchmark, served in their own processes by :mod:`._relay_rpc`.

Each client is one side of a one-to-one session: a plain aiortc peer that sends the
pre-encoded 720p VP8 clip and the Opus tone, and receives the other side's. What it
receives is never decoded: its receivers are cut off at the RTP level (as the gateway
cuts off its own) and only count packets and sequence numbers, so a load process costs
little beside the gateway it loads.
"""

from __future__ import annotations

import time

from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
from aiortc.rtp import AnyRtcpPacket, RtpPacket
from aiortc.stats import RTCOutboundRtpStreamStats

from bench._relay_gateway import LOOPBACK
from gateway.media import _aiortc
from tests.media_plane.media import Clip, PacedClipTrack

__all__ = ["LoadPeers", "ReceivedStreams"]

_SEQ_MOD = 1 << 16


class ReceivedStreams:
    """What one receiver got: packets, and how many its sequence numbers say were sent.

    The gateway keeps a publisher's sequence gaps in what it forwards, so ``expected -
    received`` is what was lost anywhere between publisher and subscriber, as RTCP
    receiver reports count it, and exact at any instant (unlike counting at both ends).
    """

    __slots__ = ("_highest", "expected", "octets", "received")

    def __init__(self) -> None:
        #: Per SSRC, the highest sequence number so far, extended past wrap-arounds.
        self._highest: dict[int, int] = {}
        #: Sum over SSRCs of (highest - first + 1).
        self.expected = 0
        self.received = 0
        #: RTP payload octets received.
        self.octets = 0

    async def started(self, parameters: RTCRtpReceiveParameters) -> None:
        """Nothing to set up: received media is only counted."""

    def on_rtp(self, packet: RtpPacket) -> None:
        self.received += 1
        self.octets += len(packet.payload)
        highest = self._highest.get(packet.ssrc)
        if highest is None:
            self._highest[packet.ssrc] = packet.sequence_number
            self.expected += 1
            return
        ahead = (packet.sequence_number - highest) % _SEQ_MOD
        if 0 < ahead < _SEQ_MOD // 2:
            self._highest[packet.ssrc] = highest + ahead
            self.expected += ahead

    async def on_rtcp(self, packet: AnyRtcpPacket) -> None:
        """aiortc has handled the RTCP already (sender reports); nothing more to do."""


class LoadPeers:
    """The client peers of one load process."""

    def __init__(self, *, video: Clip, audio: Clip) -> None:
        self._video = video
        self._audio = audio
        self._pcs: dict[str, RTCPeerConnection] = {}
        self._tracks: list[PacedClipTrack] = []
        self._received: list[ReceivedStreams] = []

    async def offer(self, *, participants: list[str]) -> dict[str, str]:
        """A new client per participant id; each one's offer."""
        offers = {}
        for participant in participants:
            pc = self._pcs[participant] = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            for transceiver in self._add_clips(pc, direction="sendrecv"):
                self._count(transceiver.receiver)
            _aiortc.restrict_gathering(pc, [LOOPBACK])
            await pc.setLocalDescription(await pc.createOffer())
            offers[participant] = str(pc.localDescription.sdp)
        return offers

    def _add_clips(self, pc: RTCPeerConnection, *, direction: str) -> list[RTCRtpTransceiver]:
        """Audio and video transceivers sending the clips; the video one restarts on PLI."""
        audio = PacedClipTrack(self._audio, kind="audio")
        video = PacedClipTrack(self._video, kind="video")
        self._tracks += [audio, video]
        transceivers = [pc.addTransceiver(track, direction=direction) for track in (audio, video)]
        _aiortc.on_keyframe_request(transceivers[1].sender, video.request_keyframe)
        return transceivers

    def _count(self, receiver: RTCRtpReceiver) -> None:
        """Count what ``receiver`` gets instead of decoding it; before negotiation ends."""
        received = ReceivedStreams()
        self._received.append(received)
        _aiortc.intercept_receiver(
            receiver, on_started=received.started, on_rtp=received.on_rtp, on_rtcp=received.on_rtcp
        )

    async def accept(self, *, answers: dict[str, str]) -> None:
        """The gateway's answers: the clients connect, then start sending."""
        for participant, sdp in answers.items():
            pc = self._pcs[participant]
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    def connected(self) -> int:
        return sum(1 for pc in self._pcs.values() if pc.connectionState == "connected")

    async def counts(self) -> dict[str, float]:
        """RTP sent, expected and received so far, and this process's CPU seconds."""
        sent = 0
        for pc in self._pcs.values():
            for sender in pc.getSenders():
                for stats in (await sender.getStats()).values():
                    if isinstance(stats, RTCOutboundRtpStreamStats):
                        sent += stats.packetsSent
        return {
            "sent": sent,
            "expected": sum(r.expected for r in self._received),
            "received": sum(r.received for r in self._received),
            "octets_received": sum(r.octets for r in self._received),
            "cpu": time.process_time(),
        }

    def stop_sending(self) -> None:
        """End every clip track: each sender stops after the frame it is pacing."""
        for track in self._tracks:
            track.stop()

    async def close(self) -> None:
        self.stop_sending()
        for pc in self._pcs.values():
            await pc.close()
        self._pcs.clear()
        self._tracks.clear()
        self._received.clear()
