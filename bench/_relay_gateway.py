"""The gateway side of the relay benchmark, served in its own process by :mod:`._relay_rpc`.

Two ways to carry the same one-to-one sessions, measured alike:

* :class:`ForwardingGateway`: Quietroom's relay, a :class:`RoomForwarder` per session
  and a :class:`GatewayPeer` per participant, exactly as the gateway runs them;
* :class:`MediaRelayGateway`: the baseline, plain aiortc peers and aiortc's
  ``MediaRelay``, which decodes what each participant sends and encodes it again for
  the other.

The parent marks a steady-state window; the process's CPU time (all threads) and its
packet counts over that window are what the benchmark reports.
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any, ClassVar

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.stats import RTCOutboundRtpStreamStats
from av.frame import Frame
from av.packet import Packet

from bench._relay_probe import LatencyProbe
from gateway.media import _aiortc
from gateway.media.codecs import VideoCodec
from gateway.media.forwarder import RoomForwarder
from gateway.media.ice_policy import MediaNetwork
from gateway.media.peer import GatewayPeer
from gateway.media.reasons import MediaCloseReason

__all__ = [
    "FORWARDER_COUNTERS",
    "LOOPBACK",
    "SIDES",
    "ForwardingGateway",
    "Gateway",
    "MediaRelayGateway",
    "PythonForwardingGateway",
]

LOOPBACK = "127.0.0.1"
SIDES = ("a", "b")
#: Forwarder statistics reported beside the CPU figures, to show what the window held.
FORWARDER_COUNTERS = (
    "packets_in",
    "keyframe_requests_sent",
    "nacks_received",
    "nacks_sent_upstream",
    "not_forwarded",
    "held_for_keyframe",
)


def _percentiles(samples_ns: list[int]) -> dict[str, float | int]:
    """p50, p99, p99.9 and max, in milliseconds; empty without samples."""
    if not samples_ns:
        return {"samples": 0}
    ordered = sorted(samples_ns)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6, 3)

    return {
        "samples": len(ordered),
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "p999_ms": at(0.999),
        "max_ms": round(ordered[-1] / 1e6, 3),
    }


class Gateway:
    """What both gateways share: connection states and the measurement window."""

    #: Whether each packet out is a copy of one in (so out should keep up with in).
    copies_packets: ClassVar[bool]

    def __init__(self) -> None:
        self.probe = LatencyProbe()
        self._pcs: list[RTCPeerConnection] = []
        self._window: dict[str, Any] | None = None

    def connected(self) -> int:
        """How many of this gateway's peer connections are connected."""
        return sum(1 for pc in self._pcs if pc.connectionState == "connected")

    async def _counters(self) -> dict[str, int]:
        """RTP packets and payload octets sent to the clients: counters that only grow."""
        raise NotImplementedError

    async def _snapshot(self) -> dict[str, Any]:
        counters = await self._counters()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "wall": time.monotonic(),
            "user": usage.ru_utime,
            "system": usage.ru_stime,
            **counters,
        }

    async def start_window(self) -> None:
        """Begin measuring: CPU time and counters now, latency samples from now on."""
        self.probe.samples_ns.clear()
        self.probe.recording = True
        self._window = await self._snapshot()

    async def end_window(self) -> dict[str, Any]:
        """CPU seconds, counter deltas and latency percentiles since :meth:`start_window`."""
        end = await self._snapshot()
        self.probe.recording = False
        start = self._window
        if start is None:
            raise RuntimeError("end_window without start_window")
        delta = {key: end[key] - start[key] for key in end}
        delta["cpu"] = delta["user"] + delta["system"]
        delta["latency"] = _percentiles(self.probe.samples_ns)
        loop = asyncio.get_running_loop()
        delta["event_loop"] = type(loop).__module__
        delta["poll_interval_us"] = round(
            getattr(getattr(loop, "_selector", None), "interval", 0) * 1e6
        )
        self.probe.samples_ns.clear()
        return delta

    async def close(self) -> None:
        for pc in self._pcs:
            await pc.close()
        self._pcs.clear()


class ForwardingGateway(Gateway):
    """Quietroom's packet-forwarding relay: one RoomForwarder per session.

    Packets are counted by the forwarders. Only the first session's peers carry the
    latency probe: its packets share the event loop with every other session's, so they
    wait as long, and the probe's own cost stays off the others.
    """

    copies_packets = True
    #: Forward in C where the state allows (gateway/media/_native.pyx).
    native = True

    def __init__(self) -> None:
        super().__init__()
        self._network = MediaNetwork.build(addresses=[LOOPBACK], allow_loopback=True)
        self._forwarders: dict[str, RoomForwarder] = {}
        self._peers: list[GatewayPeer] = []

    async def answer(self, *, session: str, side: str, sdp: str) -> str:
        """The gateway's answer to one participant's offer."""
        probed = not self._forwarders or session == next(iter(self._forwarders))
        forwarder = self._forwarders.get(session)
        if forwarder is None:
            forwarder = self._forwarders[session] = RoomForwarder(room_id=session)
        peer = GatewayPeer(
            room_id=session,
            participant_id=f"{session}/{side}",
            forwarder=forwarder,
            network=self._network,
            video_codecs=(VideoCodec.VP8,),
            native=self.native,
        )
        self._peers.append(peer)
        answer = await peer.answer(sdp=sdp, sdp_type="offer")
        pc = peer.peer_connection
        assert pc is not None
        self._pcs.append(pc)
        if probed:
            self.probe.attach(pc)
        return answer

    async def _counters(self) -> dict[str, int]:
        forwarders = self._forwarders.values()
        return {
            name: sum(getattr(f.stats, name) for f in forwarders)
            for name in ("packets_out", "octets_out", *FORWARDER_COUNTERS)
        }

    async def close(self) -> None:
        for peer in self._peers:
            await peer.close(MediaCloseReason.SESSION_ENDED)
        for forwarder in self._forwarders.values():
            forwarder.close(MediaCloseReason.SESSION_ENDED)
        self._peers.clear()
        await super().close()


class PythonForwardingGateway(ForwardingGateway):
    """The same relay with its compiled path turned off: every packet on Python, as on a
    gateway installed without a C compiler."""

    native = False


class _RelayedTrack(MediaStreamTrack):
    """The other participant's track through the MediaRelay, once that participant joins."""

    def __init__(
        self, kind: str, source: asyncio.Future[MediaStreamTrack], relay: MediaRelay
    ) -> None:
        super().__init__()
        self.kind = kind
        self._source = source
        self._relay = relay
        self._proxy: MediaStreamTrack | None = None

    async def recv(self) -> Frame | Packet[Any]:
        if self._proxy is None:
            # Unbuffered: an encoder that falls behind gets the latest frame, not a backlog.
            self._proxy = self._relay.subscribe(await self._source, buffered=False)
        return await self._proxy.recv()

    def stop(self) -> None:
        super().stop()
        if self._proxy is not None:
            self._proxy.stop()


class MediaRelayGateway(Gateway):
    """The baseline: aiortc's MediaRelay, decoding and re-encoding every track.

    Packets are counted by aiortc's senders. Latency is not measured: frames are
    decoded and encoded again, so no outgoing packet is the copy of an incoming one.
    """

    copies_packets = False

    def __init__(self) -> None:
        super().__init__()
        self._relay = MediaRelay()
        self._sources: dict[tuple[str, str, str], asyncio.Future[MediaStreamTrack]] = {}

    def _source(self, session: str, side: str, kind: str) -> asyncio.Future[MediaStreamTrack]:
        key = (session, side, kind)
        if key not in self._sources:
            self._sources[key] = asyncio.get_running_loop().create_future()
        return self._sources[key]

    async def answer(self, *, session: str, side: str, sdp: str) -> str:
        """Answer with senders that relay the other side's tracks, once it has joined."""
        other = SIDES[1 - SIDES.index(side)]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pcs.append(pc)
        for kind in ("audio", "video"):
            track = _RelayedTrack(kind, self._source(session, other, kind), self._relay)
            pc.addTransceiver(track, direction="sendrecv")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for transceiver in pc.getTransceivers():
            self._source(session, side, transceiver.kind).set_result(transceiver.receiver.track)
        _aiortc.restrict_gathering(pc, [LOOPBACK])
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def _counters(self) -> dict[str, int]:
        counters = {"packets_out": 0, "octets_out": 0}
        for pc in self._pcs:
            for sender in pc.getSenders():
                for stats in (await sender.getStats()).values():
                    if isinstance(stats, RTCOutboundRtpStreamStats):
                        counters["packets_out"] += stats.packetsSent
                        counters["octets_out"] += stats.bytesSent
        return counters

    async def close(self) -> None:
        for source in self._sources.values():
            source.cancel()
        await super().close()
