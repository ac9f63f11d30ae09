"""Client peers (plain aiortc, in the test process) joined through the gateway on loopback.

A publisher sends pre-encoded clips; a subscriber's aiortc receivers decode what the
gateway forwards, and :class:`FrameCounter` counts the decoded frames. Loss is injected
by dropping SRTP datagrams as a peer sends them, seeded so a run repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    MediaStreamError,
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)

from gateway.media import _aiortc
from gateway.media.codecs import VideoCodec, video_preferences
from gateway.media.forwarder import RoomForwarder
from gateway.media.ice_policy import MediaNetwork
from gateway.media.peer import GatewayPeer
from gateway.media.reasons import MediaCloseReason
from tests.gateway_harness import SocketClient
from tests.media_plane.media import Clip, PacedClipTrack

LOOPBACK = "127.0.0.1"


async def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(step)
    return predicate()


class FrameCounter:
    """Counts the frames a remote track yields (decoded by aiortc in the client)."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.count = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.sizes: set[tuple[int, int]] = set()
        self.times: list[float] = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if self.first_at is None:
                self.first_at = now
            self.last_at = now
            self.count += 1
            self.times.append(now)
            width = getattr(frame, "width", None)
            height = getattr(frame, "height", None)
            if isinstance(width, int) and isinstance(height, int):
                self.sizes.add((width, height))

    def between(self, start: float, end: float) -> int:
        """Frames decoded in [start, end)."""
        return sum(1 for t in self.times if start <= t < end)

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time without a decoded frame in [start, end]."""
        marks = [start, *(t for t in self.times if start <= t <= end), end]
        return max(b - a for a, b in itertools.pairwise(marks))

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def lossy(rate: float, seed: int) -> Callable[[bytes], bool]:
    """Picks ``rate`` of the SRTP and SRTCP datagrams (never ICE or DTLS) to drop."""
    rng = random.Random(seed)

    def should_drop(data: bytes) -> bool:
        return 127 < data[0] < 192 and rng.random() < rate

    return should_drop


@dataclass
class Client:
    participant_id: str
    pc: RTCPeerConnection
    gateway: GatewayPeer
    video: PacedClipTrack | None = None
    audio: PacedClipTrack | None = None
    received: dict[str, FrameCounter] = field(default_factory=dict)
    connected_at: float | None = None


class LoopbackRoom:
    """One room on the gateway, and the client peers joined to it, all on 127.0.0.1."""

    def __init__(
        self, *, video_codecs: Sequence[VideoCodec] = (VideoCodec.VP8,), native: bool = True
    ) -> None:
        self.forwarder = RoomForwarder(room_id="rm_test")
        self.network = MediaNetwork.build(addresses=[LOOPBACK], allow_loopback=True)
        self.video_codecs = tuple(video_codecs)
        self.native = native
        self.clients: list[Client] = []

    def gateway_peer(self, participant_id: str) -> GatewayPeer:
        return GatewayPeer(
            room_id=self.forwarder.room_id,
            participant_id=participant_id,
            forwarder=self.forwarder,
            network=self.network,
            video_codecs=self.video_codecs,
            native=self.native,
        )

    async def _connect(self, client: Client, loss: float, seed: int) -> None:
        pc = client.pc
        _aiortc.restrict_gathering(pc, [LOOPBACK])
        await pc.setLocalDescription(await pc.createOffer())
        answer = await client.gateway.answer(sdp=pc.localDescription.sdp, sdp_type="offer")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        if loss:
            _aiortc.drop_outgoing(pc, lossy(loss, seed))
            gateway_pc = client.gateway.peer_connection
            assert gateway_pc is not None
            _aiortc.drop_outgoing(gateway_pc, lossy(loss, seed + 1))
        connected = await wait_for(
            lambda: (
                pc.connectionState == "connected" and client.gateway.connection_state == "connected"
            ),
            timeout=10,
        )
        assert connected, f"{client.participant_id} did not connect ({pc.connectionState})"
        client.connected_at = time.monotonic()

    async def add_publisher(
        self,
        participant_id: str,
        *,
        video: Clip,
        audio: Clip | None = None,
        loss: float = 0.0,
        seed: int = 1,
    ) -> Client:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        client = Client(participant_id, pc, self.gateway_peer(participant_id))
        self.clients.append(client)
        if audio is not None:
            client.audio = PacedClipTrack(audio, kind="audio")
            pc.addTransceiver(client.audio, direction="sendonly")
        client.video = PacedClipTrack(video, kind="video")
        transceiver = pc.addTransceiver(client.video, direction="sendonly")
        _aiortc.on_keyframe_request(transceiver.sender, client.video.request_keyframe)
        await self._connect(client, loss, seed)
        return client

    async def add_subscriber(
        self, participant_id: str, *, audio: bool = True, loss: float = 0.0, seed: int = 2
    ) -> Client:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        client = Client(participant_id, pc, self.gateway_peer(participant_id))
        self.clients.append(client)
        kinds = ("audio", "video") if audio else ("video",)
        transceivers = [pc.addTransceiver(kind, direction="recvonly") for kind in kinds]
        await self._connect(client, loss, seed)
        for transceiver in transceivers:
            client.received[transceiver.kind] = FrameCounter(transceiver.receiver.track)
        return client

    async def add_two_way(
        self, participant_id: str, *, video: Clip, audio: Clip, loss: float = 0.0, seed: int = 3
    ) -> Client:
        """A participant that sends and receives on the same two sections (a 1:1 call)."""
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        client = Client(participant_id, pc, self.gateway_peer(participant_id))
        self.clients.append(client)
        client.audio = PacedClipTrack(audio, kind="audio")
        client.video = PacedClipTrack(video, kind="video")
        audio_transceiver = pc.addTransceiver(client.audio, direction="sendrecv")
        video_transceiver = pc.addTransceiver(client.video, direction="sendrecv")
        _aiortc.on_keyframe_request(video_transceiver.sender, client.video.request_keyframe)
        await self._connect(client, loss, seed)
        for transceiver in (audio_transceiver, video_transceiver):
            client.received[transceiver.kind] = FrameCounter(transceiver.receiver.track)
        return client

    async def close(self) -> None:
        for client in self.clients:
            for counter in client.received.values():
                await counter.stop()
            await client.gateway.close(MediaCloseReason.SESSION_ENDED)
            await client.pc.close()
        self.forwarder.close(MediaCloseReason.SESSION_ENDED)


class Caller:
    """One side of a call signalled over a gateway socket, as the browser pages do: an
    aiortc peer that sends clips and decodes what comes."""

    def __init__(
        self, sock: SocketClient, video: Clip, audio: Clip, *, video_codec: VideoCodec | None = None
    ) -> None:
        self.sock = sock
        self._clips = (video, audio)
        #: Offer only this video codec (the clip's), as a Safari would offer H.264.
        self._video_codec = video_codec
        self.pc: RTCPeerConnection | None = None
        self.received: dict[str, FrameCounter] = {}

    async def offer(self, *, ask_config: bool = True) -> dict[str, Any]:
        """Ask for ICE servers, offer, and apply the answer; the gateway's reply."""
        config = {"ice_servers": [], "ice_transport_policy": "all"}
        if ask_config:
            config = await self.sock.call("media.config")
            assert config["ok"], config
        servers = [
            RTCIceServer(s["urls"], username=s.get("username"), credential=s.get("credential"))
            for s in config["ice_servers"]
        ]
        relay = config["ice_transport_policy"] == "relay"
        pc = self.pc = RTCPeerConnection(
            RTCConfiguration(
                iceServers=servers,
                iceTransportPolicy=RTCIceTransportPolicy.RELAY
                if relay
                else RTCIceTransportPolicy.ALL,
            )
        )
        # Fresh tracks for every connection: closing a peer connection ends its tracks.
        video_track = PacedClipTrack(self._clips[0], kind="video")
        audio = pc.addTransceiver(
            PacedClipTrack(self._clips[1], kind="audio"), direction="sendrecv"
        )
        video = pc.addTransceiver(video_track, direction="sendrecv")
        if self._video_codec is not None:
            video.setCodecPreferences(video_preferences([self._video_codec]))
        _aiortc.on_keyframe_request(video.sender, video_track.request_keyframe)
        _aiortc.restrict_gathering(pc, [LOOPBACK])
        await pc.setLocalDescription(await pc.createOffer())
        answer = await self.sock.call(
            "media.offer", {"type": "offer", "sdp": pc.localDescription.sdp}, timeout=15
        )
        if answer.get("ok"):
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            for transceiver in (audio, video):
                self.received[transceiver.kind] = FrameCounter(transceiver.receiver.track)
        return dict(answer)

    async def close(self) -> None:
        for counter in self.received.values():
            await counter.stop()
        if self.pc is not None:
            await self.pc.close()
