"""The media of one gateway process: a forwarder per session, a peer per participant.

Signaling decides who may have media (admitted clients, the signed-in host) and calls
:meth:`MediaRooms.answer`; this module only owns the objects and their life. A second
offer from the same participant replaces its peer: the browser renegotiates by starting
over (after an ICE failure, a new device, or a camera added), and the forwarder keeps
each subscriber's stream continuous across the change. Peers close with a reason when
the participant leaves, is denied or removed, when the session ends, and at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from gateway.errors import MediaError, PeerClosed
from gateway.media.codecs import VideoCodec
from gateway.media.forwarder import PacketTap, RoomForwarder
from gateway.media.ice_policy import MediaNetwork
from gateway.media.peer import GatewayPeer
from gateway.media.reasons import MediaCloseReason
from gateway.media.tracks import MediaKind
from gateway.media.udp_drops import kernel_drops

__all__ = ["ForwardedTotals", "MediaRooms"]

log = logging.getLogger(__name__)

#: Called once a participant's media connection is up: (session id, participant id).
Connected = Callable[[str, str], Awaitable[None]]


@dataclass(slots=True)
class ForwardedTotals:
    """Packets and payload bytes forwarded by this process since it started, per kind."""

    packets: dict[MediaKind, int]
    octets: dict[MediaKind, int]


class MediaRooms:
    """Every forwarder and peer of this process, keyed by session (appointment) id."""

    def __init__(
        self,
        *,
        network: MediaNetwork,
        video_codecs: Sequence[VideoCodec] = (VideoCodec.VP8, VideoCodec.H264),
        on_connected: Connected | None = None,
        max_sessions: int = 0,
        native: bool = True,
    ) -> None:
        if max_sessions < 0:
            raise ValueError("max_sessions must be 0 (no limit) or more")
        self.network = network
        #: Sessions this process takes at most (0: no limit); see :attr:`full`.
        self.max_sessions = max_sessions
        #: Forward in compiled code where the state allows (GatewayPeer's ``native``).
        self.native = native
        self.video_codecs = tuple(video_codecs)
        self._on_connected = on_connected
        self._forwarders: dict[str, RoomForwarder] = {}
        self._peers: dict[str, GatewayPeer] = {}
        self._retired = ForwardedTotals(
            packets=dict.fromkeys(MediaKind, 0), octets=dict.fromkeys(MediaKind, 0)
        )
        #: Packet taps per session (recorders), on its forwarder now and on later ones.
        self._taps: dict[str, list[PacketTap]] = {}
        #: New sessions turned away because this process was :attr:`full`.
        self.refused_sessions = 0
        self._dropped_retired = 0
        self._errors_retired = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"MediaRooms(sessions={len(self._forwarders)}, peers={len(self._peers)})"

    # --- reading --------------------------------------------------------------------------

    def forwarder(self, session_id: str) -> RoomForwarder | None:
        """The session's forwarder on this process, if its media started here."""
        return self._forwarders.get(session_id)

    def session_ids(self) -> list[str]:
        """The sessions whose media is on this process."""
        return list(self._forwarders)

    def add_tap(self, session_id: str, tap: PacketTap) -> None:
        """Hand every publisher packet of the session to ``tap``, on the forwarder it has
        now and on any it gets later (everyone left and came back)."""
        taps = self._taps.setdefault(session_id, [])
        if tap not in taps:
            taps.append(tap)
        forwarder = self._forwarders.get(session_id)
        if forwarder is not None:
            forwarder.add_tap(tap)

    def remove_tap(self, session_id: str, tap: PacketTap) -> None:
        taps = self._taps.get(session_id, [])
        if tap in taps:
            taps.remove(tap)
        if not taps:
            self._taps.pop(session_id, None)
        forwarder = self._forwarders.get(session_id)
        if forwarder is not None:
            forwarder.remove_tap(tap)

    def peer(self, participant_id: str) -> GatewayPeer | None:
        return self._peers.get(participant_id)

    @property
    def peer_count(self) -> int:
        return len(self._peers)

    @property
    def session_count(self) -> int:
        return len(self._forwarders)

    @property
    def full(self) -> bool:
        """Whether a new session would be refused here (its existing ones still grow)."""
        return 0 < self.max_sessions <= len(self._forwarders)

    def totals(self) -> ForwardedTotals:
        """Forwarded since start: closed sessions' counts plus the live ones'."""
        packets = dict(self._retired.packets)
        octets = dict(self._retired.octets)
        for forwarder in self._forwarders.values():
            for kind, (count, size) in forwarder.stats.by_kind().items():
                packets[kind] += count
                octets[kind] += size
        return ForwardedTotals(packets=packets, octets=octets)

    def dropped_datagrams(self) -> int:
        """Datagrams dropped since start because this process could not keep up: by the
        kernel on the peers' full sockets (RTP, mostly) and at their bounded receive
        queues (STUN, DTLS, RTCP); closed peers' counts plus the live ones'."""
        live = [p.fast_path for p in self._peers.values() if p.fast_path is not None]
        inodes = {inode for fast in live for inode in fast.inodes}
        queued = sum(fast.dropped for fast in live)
        return self._dropped_retired + queued + kernel_drops(inodes)

    def forwarding_errors(self) -> int:
        """RTP packets lost since start to an unexpected error on the synchronous path
        (each peer logs its first one); closed peers' counts plus the live ones'."""
        live = sum(p.fast_path.errors for p in self._peers.values() if p.fast_path is not None)
        return self._errors_retired + live

    # --- negotiation ----------------------------------------------------------------------

    async def answer(
        self,
        *,
        session_id: str,
        participant_id: str,
        sdp: object,
        sdp_type: object,
        featured: bool = False,
    ) -> str:
        """The gateway's answer to a participant's offer; their previous peer is replaced.
        A ``featured`` participant (the host) is shown to everyone (:class:`RoomForwarder`).

        Raises :class:`~gateway.errors.SdpRejected` for an offer that cannot be answered
        (the new peer is then closed), :class:`~gateway.errors.PeerClosed` while the
        process shuts down, and :class:`~gateway.errors.MediaError` for a new session
        while this process is :attr:`full`: past its measured capacity a node would lose
        packets for every session it carries, so the newcomer is turned away instead.
        """
        if self._closed:
            raise PeerClosed(reason=MediaCloseReason.SHUTDOWN.value)
        if session_id not in self._forwarders and self.full:
            self.refused_sessions += 1
            log.warning("media node full (%d sessions): a new session refused", self.max_sessions)
            raise MediaError("this media node is at capacity")
        # Another offer of the same participant may land while the previous peer closes:
        # no peer is ever replaced without being closed.
        while (previous := self._peers.pop(participant_id, None)) is not None:
            self._retire_peer(previous)
            await previous.close(MediaCloseReason.RENEGOTIATED)
        if self._closed:
            raise PeerClosed(reason=MediaCloseReason.SHUTDOWN.value)
        forwarder = self._forwarders.get(session_id)
        if forwarder is None or forwarder.closed is not None:
            forwarder = self._forwarders[session_id] = RoomForwarder(room_id=session_id)
            for tap in self._taps.get(session_id, ()):
                forwarder.add_tap(tap)
        peer = GatewayPeer(
            room_id=session_id,
            participant_id=participant_id,
            featured=featured,
            forwarder=forwarder,
            network=self.network,
            video_codecs=self.video_codecs,
            native=self.native,
            on_connected=self._connected,
            on_closing=self._peer_closing,
        )
        self._peers[participant_id] = peer
        try:
            return await peer.answer(sdp=sdp, sdp_type=sdp_type)
        except BaseException:
            if self._peers.get(participant_id) is peer:
                # Not retired already by a close() or a newer answer() that took it out.
                del self._peers[participant_id]
                self._retire_peer(peer)
            await peer.close(MediaCloseReason.SDP_REJECTED)
            raise

    async def add_candidate(
        self, participant_id: str, *, candidate: object, sdp_mid: object, sdp_mline_index: object
    ) -> bool:
        """A trickled candidate for the participant's current peer; False if refused."""
        peer = self._peers.get(participant_id)
        if peer is None:
            return False
        return await peer.add_ice_candidate(
            candidate=candidate, sdp_mid=sdp_mid, sdp_mline_index=sdp_mline_index
        )

    async def _connected(self, peer: GatewayPeer) -> None:
        if self._on_connected is not None and self._peers.get(peer.participant_id) is peer:
            await self._on_connected(peer.room_id, peer.participant_id)

    # --- closing --------------------------------------------------------------------------

    def _peer_closing(self, peer: GatewayPeer) -> None:
        """A peer closes by itself (its connection failed or was closed by the browser):
        it stops counting here at once, as if its participant had been closed. Closes
        this class starts have taken the peer out already."""
        if self._peers.get(peer.participant_id) is not peer:
            return
        del self._peers[peer.participant_id]
        self._retire_peer(peer)
        self._forget_session_if_empty(peer, peer.close_reason or MediaCloseReason.LEFT)

    async def close_participant(self, participant_id: str, reason: MediaCloseReason) -> bool:
        """Close the participant's peer, if it has one here; whether it had."""
        peer = self._peers.pop(participant_id, None)
        if peer is None:
            return False
        self._retire_peer(peer)
        await peer.close(reason)
        self._forget_session_if_empty(peer, reason)
        return True

    def _forget_session_if_empty(self, peer: GatewayPeer, reason: MediaCloseReason) -> None:
        if any(p.room_id == peer.room_id for p in self._peers.values()):
            return
        # The last one out: nothing left to forward in this session here.
        forwarder = self._forwarders.pop(peer.room_id, None)
        if forwarder is not None:
            self._retire(forwarder)
            forwarder.close(reason)

    async def close_session(self, session_id: str, reason: MediaCloseReason) -> None:
        """Close every peer of a session and its forwarder."""
        for participant_id, peer in list(self._peers.items()):
            if peer.room_id == session_id:
                await self.close_participant(participant_id, reason)
        # Normally closed with its last peer; not if no peer ever connected.
        forwarder = self._forwarders.pop(session_id, None)
        if forwarder is not None:
            self._retire(forwarder)
            forwarder.close(reason)

    async def close(self, reason: MediaCloseReason = MediaCloseReason.SHUTDOWN) -> None:
        """Close everything; later offers are refused. Safe to call twice."""
        self._closed = True
        for session_id in list(self._forwarders):
            await self.close_session(session_id, reason)
        for participant_id in list(self._peers):
            await self.close_participant(participant_id, reason)

    def _retire(self, forwarder: RoomForwarder) -> None:
        for kind, (count, size) in forwarder.stats.by_kind().items():
            self._retired.packets[kind] += count
            self._retired.octets[kind] += size

    def _retire_peer(self, peer: GatewayPeer) -> None:
        """Keep a peer's drop counts before it closes its sockets."""
        fast = peer.fast_path
        if fast is not None:
            self._dropped_retired += fast.dropped + kernel_drops(fast.inodes)
            self._errors_retired += fast.errors
