"""The gateway's WebRTC peer for one admitted participant, plugged into the room's forwarder.

The browser offers; the gateway answers. Each audio or video section the browser sends
on becomes a publisher track, each it receives on becomes a subscriber slot, and the
:class:`~gateway.media.forwarder.RoomForwarder` moves packets between them. Offers are
checked first (:mod:`gateway.media.offer`); the gateway gathers candidates only on the
configured media addresses, and refuses client candidates the policy does not allow.
Only admitted participants get here: refusing the others is the caller's job, before a
peer exists.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

from aiortc import (
    MediaStreamError,
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import exceptions as aiortc_exceptions
from aiortc import sdp as aiortc_sdp
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters, RTCRtpSendParameters
from aiortc.rtp import AnyRtcpPacket, RtpPacket

from gateway.errors import MediaError, PeerClosed, SdpRejected
from gateway.media import _aiortc
from gateway.media.codecs import VideoCodec, audio_preferences, video_preferences
from gateway.media.forwarder import RoomForwarder
from gateway.media.ice_policy import MediaNetwork
from gateway.media.offer import check_candidate, check_offer
from gateway.media.reasons import MediaCloseReason
from gateway.media.tracks import MediaKind, PublishedTrack, SubscribedTrack

__all__ = ["ForwardedTrack", "GatewayPeer"]

log = logging.getLogger(__name__)

#: The gateway's direction for each direction a browser offers.
_ANSWER_DIRECTION = {
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "sendrecv": "sendrecv",
    "inactive": "inactive",
}

# What aiortc raises when an offer that passed our checks still cannot be applied.
_NEGOTIATION_ERRORS = (
    AssertionError,
    AttributeError,
    IndexError,
    KeyError,
    LookupError,
    StopIteration,
    TypeError,
    ValueError,
    aiortc_exceptions.InternalError,
    aiortc_exceptions.InvalidAccessError,
    aiortc_exceptions.InvalidStateError,
    aiortc_exceptions.OperationError,
)


class ForwardedTrack(MediaStreamTrack):
    """Stands in on a gateway sender whose packets the forwarder writes.

    aiortc's sender reads its track for frames to encode; this one never yields one, so
    no encoder is ever made, and its loop waits instead of polling.
    """

    def __init__(self, kind: MediaKind) -> None:
        super().__init__()
        self.kind = kind.value
        self._stopped = asyncio.Event()

    async def recv(self) -> NoReturn:
        await self._stopped.wait()
        raise MediaStreamError

    def stop(self) -> None:
        super().stop()
        self._stopped.set()


class _Inbound:
    """One section the participant publishes on: a receiver feeding the forwarder."""

    def __init__(self, peer: GatewayPeer, transceiver: RTCRtpTransceiver, kind: MediaKind) -> None:
        self._peer = peer
        self._receiver = transceiver.receiver
        self._kind = kind
        self.track: PublishedTrack | None = None

    async def started(self, parameters: RTCRtpReceiveParameters) -> None:
        rtx_ssrcs = {
            e.rtx.ssrc: e.ssrc for e in parameters.encodings if e.rtx is not None and e.ssrc
        }
        self.track = PublishedTrack(
            track_id=f"{self._peer.participant_id}/{self._peer.leg_id}/{parameters.muxId}",
            participant_id=self._peer.participant_id,
            kind=self._kind,
            featured=self._peer.featured,
            codecs=parameters.codecs,
            rtx_ssrcs=rtx_ssrcs,
            feedback=_aiortc.ReceiverFeedback(self._receiver),
        )
        await self._peer.forwarder.publish(self.track)

    def rtp(self, packet: RtpPacket) -> None:
        if self.track is not None:
            self._peer.forwarder.forward(self.track, packet)

    def forwarding(self) -> tuple[RoomForwarder, PublishedTrack] | None:
        """What :meth:`rtp` does with a packet, for the compiled path to do instead."""
        if self.track is None:
            return None
        return self._peer.forwarder, self.track

    async def rtcp(self, packet: AnyRtcpPacket) -> None:
        if self.track is not None:
            await self._peer.forwarder.on_publisher_rtcp(self.track, packet)


class _Outbound:
    """One section the participant receives on: a sender the forwarder writes to."""

    def __init__(
        self, peer: GatewayPeer, transceiver: RTCRtpTransceiver, kind: MediaKind, slot: int
    ) -> None:
        self._peer = peer
        self._sender = transceiver.sender
        self.kind = kind
        self.slot = slot
        self.track: SubscribedTrack | None = None

    async def started(self, parameters: RTCRtpSendParameters) -> None:
        ssrc, rtx_ssrc = _aiortc.sender_ssrcs(self._sender)
        self.track = SubscribedTrack(
            track_id=f"{self._peer.participant_id}/{self._peer.leg_id}/{parameters.muxId}",
            participant_id=self._peer.participant_id,
            kind=self.kind,
            mid=parameters.muxId,
            ssrc=ssrc,
            rtx_ssrc=rtx_ssrc,
            codecs=parameters.codecs,
            header_extensions=parameters.headerExtensions,
            sink=_aiortc.SenderSink(self._sender),
            history_size=self._peer.history_size,
            slot=self.slot,
        )
        await self._peer.forwarder.add_subscriber(self.track)

    async def feedback(self, packet: AnyRtcpPacket) -> None:
        if self.track is not None:
            await self._peer.forwarder.on_subscriber_rtcp(self.track, packet)


class GatewayPeer:
    """The gateway end of one participant's WebRTC connection."""

    def __init__(
        self,
        *,
        room_id: str,
        participant_id: str,
        forwarder: RoomForwarder,
        network: MediaNetwork,
        featured: bool = False,
        video_codecs: Sequence[VideoCodec] = (VideoCodec.VP8, VideoCodec.H264),
        history_size: int = 1024,
        receive_queue_limit: int = 256,
        native: bool = True,
        on_connected: Callable[[GatewayPeer], Awaitable[None]] | None = None,
        on_closing: Callable[[GatewayPeer], None] | None = None,
    ) -> None:
        """``on_closing(peer)`` is called once, as the peer starts closing for whatever
        reason (its own connection failing included), before its sockets close."""
        if not video_codecs:
            raise ValueError("at least one video codec is needed")
        self.room_id = room_id
        self.participant_id = participant_id
        #: Shown to every subscriber, ahead of everyone else (the host).
        self.featured = featured
        self.forwarder = forwarder
        self.network = network
        self.video_codecs = tuple(video_codecs)
        self.history_size = history_size
        self.receive_queue_limit = receive_queue_limit
        #: Forward in C where the state allows (``gateway/media/_native.pyx``), if built.
        self.native = native
        self._fast_path: _aiortc.FastPath | None = None
        #: Tells this connection's tracks from those of the same participant's next one.
        self.leg_id = secrets.token_hex(4)
        self._pc: RTCPeerConnection | None = None
        self._inbound: list[_Inbound] = []
        self._outbound: list[_Outbound] = []
        self._dropped_candidates = 0
        self._close_reason: MediaCloseReason | None = None
        self._close_task: asyncio.Future[None] | None = None
        self._on_connected = on_connected
        self._on_closing = on_closing
        self._connected_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"GatewayPeer(room={self.room_id!r}, participant={self.participant_id!r})"

    @property
    def connection_state(self) -> str:
        """aiortc's connection state: new, connecting, connected, failed or closed."""
        if self._close_reason is not None:
            return "closed"
        return self._pc.connectionState if self._pc is not None else "new"

    @property
    def close_reason(self) -> MediaCloseReason | None:
        return self._close_reason

    @property
    def published(self) -> list[PublishedTrack]:
        return [i.track for i in self._inbound if i.track is not None]

    @property
    def subscribed(self) -> list[SubscribedTrack]:
        return [o.track for o in self._outbound if o.track is not None]

    @property
    def dropped_candidates(self) -> int:
        """Client candidates refused by the network policy so far."""
        return self._dropped_candidates

    @property
    def fast_path(self) -> _aiortc.FastPath | None:
        """What the synchronous data path did (packets, drops); None before the answer."""
        return self._fast_path

    @property
    def peer_connection(self) -> RTCPeerConnection | None:
        """The aiortc peer connection, for diagnostics and tests."""
        return self._pc

    async def answer(self, *, sdp: object, sdp_type: object) -> str:
        """The SDP answer to a participant's offer.

        Raises :class:`SdpRejected` for a malformed, oversized or unanswerable offer, and
        then the peer is closed; nothing else escapes for bad input. A closed peer raises
        :class:`PeerClosed`.
        """
        if self._close_reason is not None:
            raise PeerClosed(reason=self._close_reason.value)
        if self._pc is not None:
            raise SdpRejected(reason="renegotiation is not supported")
        try:
            offer = check_offer(sdp, sdp_type, policy=self.network.policy)
        except SdpRejected as exc:
            log.warning("%s: offer refused (%s)", self, exc.reason)
            await self.close(MediaCloseReason.SDP_REJECTED)
            raise
        self._dropped_candidates += offer.dropped_candidates
        pc = self._pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        pc.on("connectionstatechange", self._connection_state_changed)
        try:
            for section in offer.sections:
                self._add_transceiver(pc, MediaKind(section.kind), section.direction)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
            _aiortc.restrict_gathering(pc, self.network.addresses)
            await pc.setLocalDescription(await pc.createAnswer())
            # Media from here on skips aiortc's receive queue and per-packet tasks.
            self._fast_path = _aiortc.enable_fast_path(
                pc, queue_limit=self.receive_queue_limit, native=self.native
            )
        except _NEGOTIATION_ERRORS as exc:
            log.warning("%s: offer could not be applied (%s)", self, type(exc).__name__)
            await self.close(MediaCloseReason.SDP_REJECTED)
            raise SdpRejected(reason="cannot be answered") from None
        foreign = {a for a in _aiortc.local_candidate_addresses(pc) if not self.network.is_own(a)}
        if foreign:
            # Defence in depth: restrict_gathering should make this impossible.
            await self.close(MediaCloseReason.SHUTDOWN)
            raise MediaError("gathered a candidate outside the configured media addresses")
        log.info("%s: answered (%d sections)", self, len(offer.sections))
        return str(pc.localDescription.sdp)

    def _add_transceiver(self, pc: RTCPeerConnection, kind: MediaKind, offered: str) -> None:
        direction = _ANSWER_DIRECTION.get(offered, "inactive")
        sends = direction in ("sendonly", "sendrecv")
        transceiver = pc.addTransceiver(
            ForwardedTrack(kind) if sends else kind.value, direction=direction
        )
        transceiver.setCodecPreferences(
            audio_preferences() if kind is MediaKind.AUDIO else video_preferences(self.video_codecs)
        )
        if direction in ("recvonly", "sendrecv"):
            inbound = _Inbound(self, transceiver, kind)
            _aiortc.intercept_receiver(
                transceiver.receiver,
                on_started=inbound.started,
                on_rtp=inbound.rtp,
                on_rtcp=inbound.rtcp,
                forwarding=inbound.forwarding,
            )
            self._inbound.append(inbound)
        if sends:
            slot = sum(1 for o in self._outbound if o.kind is kind)
            # The browser groups the audio and video of one slot into one MediaStream.
            _aiortc.set_stream_id(transceiver.sender, f"{self.leg_id}-{slot}")
            outbound = _Outbound(self, transceiver, kind, slot)
            _aiortc.intercept_sender(
                transceiver.sender, on_started=outbound.started, on_feedback=outbound.feedback
            )
            self._outbound.append(outbound)

    async def add_ice_candidate(
        self, *, candidate: object, sdp_mid: object = None, sdp_mline_index: object = None
    ) -> bool:
        """A trickled client candidate; False if the policy refused it (or it is malformed)."""
        pc = self._pc
        if pc is None or self._close_reason is not None:
            return False
        if not isinstance(candidate, str) or len(candidate) > 512:
            return False
        value = candidate.removeprefix("a=").removeprefix("candidate:")
        if not check_candidate(value, self.network.policy):
            self._dropped_candidates += 1
            return False
        if not (isinstance(sdp_mid, str) or isinstance(sdp_mline_index, int)):
            return False
        try:
            parsed = aiortc_sdp.candidate_from_sdp(value)
            parsed.sdpMid = sdp_mid if isinstance(sdp_mid, str) else None
            parsed.sdpMLineIndex = sdp_mline_index if isinstance(sdp_mline_index, int) else None
            await pc.addIceCandidate(parsed)
        except _NEGOTIATION_ERRORS:
            return False
        return True

    def _connection_state_changed(self) -> None:
        pc = self._pc
        if pc is None or self._close_task is not None:
            return
        state = pc.connectionState
        log.info("%s: connection %s", self, state)
        if state == "connected" and self._on_connected and self._connected_task is None:
            self._connected_task = asyncio.create_task(self._tell_connected(self._on_connected))
        elif state == "failed":
            self._begin_close(MediaCloseReason.CONNECTION_FAILED)
        elif state == "closed":
            self._begin_close(MediaCloseReason.LEFT)

    async def _tell_connected(self, callback: Callable[[GatewayPeer], Awaitable[None]]) -> None:
        try:
            await callback(self)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: the connected callback failed", self)

    def _begin_close(self, reason: MediaCloseReason) -> asyncio.Future[None]:
        if self._close_task is None:
            self._close_reason = reason
            self._close_task = asyncio.ensure_future(self._shutdown(reason))
            if self._on_closing is not None:
                try:
                    self._on_closing(self)
                except Exception:
                    log.exception("%s: the closing callback failed", self)
        return self._close_task

    async def close(self, reason: MediaCloseReason) -> None:
        """Close the connection and leave the forwarder. Safe to repeat; the first reason wins."""
        await asyncio.shield(self._begin_close(reason))

    async def _shutdown(self, reason: MediaCloseReason) -> None:
        if self._connected_task is not None and not self._connected_task.done():
            self._connected_task.cancel()
        track_ids = [t.track_id for t in self.published] + [t.track_id for t in self.subscribed]
        await self.forwarder.remove_tracks(track_ids)
        if self._pc is not None:
            await self._pc.close()
        log.info("%s: closed (%s)", self, reason.value)
