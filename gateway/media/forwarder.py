"""Packet forwarding for one room: each publisher track to its subscribers, RTP as RTP.

Nothing is decoded or re-encoded. For every packet from a publisher the forwarder picks
the subscriber tracks that carry it and, for each, rewrites what differs between legs:
SSRC (the one the subscriber's sender announced), payload type (that leg's number for
the same codec), header extensions (that leg's ids, its own MID, a fresh abs-send-time),
sequence number and timestamp (continuous across publisher changes). RTCP is kept
coherent around it:

* a subscriber's PLI or FIR becomes a PLI to the publisher, at most one per
  ``keyframe_interval`` per publisher track; a newly attached subscriber triggers one at
  once, and gets no video until a keyframe starts;
* a subscriber's NACK is answered from that leg's packet history (RTX if negotiated,
  else the packet again); gaps from the publisher are NACKed upstream;
* subscribers' REMBs go to the publisher as their minimum;
* each subscriber sender's reports carry the publisher's NTP/RTP pair, translated into
  the subscriber's timestamps, so lip sync survives.

Subscriber slots are filled automatically, in pairs: a participant's audio and video
slots with the same number show one other participant (one MediaStream in the browser),
and a free pair takes the first publisher that none of the participant's slots shows.
Taps (:meth:`RoomForwarder.add_tap`: the recorder) see every publisher packet as it
arrives and may ask for a keyframe. Forwarding is synchronous (:meth:`RoomForwarder.forward`
runs inside the datagram's arrival callback, sends included) and the forwarder starts no
task of its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable, Iterable

from aiortc import clock as aiortc_clock
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    RtpPacket,
    unpack_remb_fci,
    unwrap_rtx,
)

from gateway.media.codecs import CodecFormat, is_keyframe_start
from gateway.media.counters import ForwarderStats
from gateway.media.nack import nacked_sequence_numbers
from gateway.media.reasons import MediaCloseReason
from gateway.media.rtp_history import rtx_packet
from gateway.media.rtp_rewriter import seq_newer
from gateway.media.tracks import MediaKind, PublishedTrack, SubscribedTrack

__all__ = ["ForwarderStats", "PacketTap", "RoomForwarder"]

log = logging.getLogger(__name__)

_SEQ_MOD = 1 << 16

#: Sees every packet a publisher sends (RTX unwrapped), with its format, before it is
#: forwarded; returns True to ask that publisher for a keyframe. Called synchronously
#: in the receive path, so it must be quick and must not block.
PacketTap = Callable[[PublishedTrack, CodecFormat, RtpPacket], bool]


def _abs_send_time() -> int:
    """Now as abs-send-time: NTP seconds in 6.18 fixed point, 24 bits.

    The NTP epoch is a whole multiple of 64 s before the Unix one, so Unix time gives the
    same 24 bits without building a datetime for every packet.
    """
    return int(time.time() * (1 << 18)) & 0x00FFFFFF


class RoomForwarder:
    """Forwards RTP and RTCP between the publisher and subscriber tracks of one room."""

    def __init__(
        self,
        *,
        room_id: str,
        monotonic: Callable[[], float] = time.monotonic,
        keyframe_interval: float = 0.5,
        resend_interval: float = 0.1,
        remb_interval: float = 1.0,
    ) -> None:
        self.room_id = room_id
        self._monotonic = monotonic
        self._keyframe_interval = keyframe_interval
        self._resend_interval = resend_interval
        self._remb_interval = remb_interval
        # _published, _targets and _taps are never replaced, only changed: the compiled
        # path keeps references to them.
        self._published: dict[str, PublishedTrack] = {}
        self._subscribed: dict[str, SubscribedTrack] = {}
        self._targets: dict[str, list[SubscribedTrack]] = {}
        self._closed: MediaCloseReason | None = None
        self._taps: list[PacketTap] = []
        #: Never replaced: the compiled path keeps a reference to it.
        self.stats = ForwarderStats()

    # --- membership ---------------------------------------------------------------------

    @property
    def closed(self) -> MediaCloseReason | None:
        """Why the forwarder was closed; None while it forwards."""
        return self._closed

    @property
    def published(self) -> list[PublishedTrack]:
        return list(self._published.values())

    @property
    def subscribed(self) -> list[SubscribedTrack]:
        return list(self._subscribed.values())

    def add_tap(self, tap: PacketTap) -> None:
        """Hand every publisher packet to ``tap`` too (the recorder)."""
        if tap not in self._taps:
            self._taps.append(tap)

    def remove_tap(self, tap: PacketTap) -> None:
        if tap in self._taps:
            self._taps.remove(tap)

    async def publish(self, track: PublishedTrack) -> None:
        """A publisher track is live: fill free subscriber slots with it."""
        if self._closed is not None:
            return
        if track.track_id in self._published:
            raise ValueError(f"track {track.track_id} is already published")
        self._published[track.track_id] = track
        self._targets.setdefault(track.track_id, [])
        log.info("room %s: %s publishes %s", self.room_id, track.participant_id, track.kind.value)
        if track.featured:
            self._make_room_for(track)
        self._assign()

    async def add_subscriber(self, track: SubscribedTrack) -> None:
        """A subscriber's sender is live: give it a publisher track if one is free."""
        if self._closed is not None:
            return
        if track.track_id in self._subscribed:
            raise ValueError(f"track {track.track_id} is already subscribed")
        self._subscribed[track.track_id] = track
        self._assign()

    async def remove_tracks(self, track_ids: Iterable[str]) -> None:
        """Forget these tracks; the slots they filled go to someone else."""
        for track_id in track_ids:
            target = self._subscribed.pop(track_id, None)
            if target is not None:
                self._detach(target)
            if track_id in self._published:
                for orphan in self._targets.pop(track_id, []):
                    orphan.source = None
                del self._published[track_id]
        if self._closed is None:
            self._assign()

    async def remove_participant(self, participant_id: str) -> None:
        """Forget every track of a participant (all its connections)."""
        published = [t.track_id for t in self._published.values()]
        subscribed = [t.track_id for t in self._subscribed.values()]
        await self.remove_tracks(
            track_id
            for track_id in (*published, *subscribed)
            if self._owner(track_id) == participant_id
        )

    def _owner(self, track_id: str) -> str | None:
        track = self._published.get(track_id) or self._subscribed.get(track_id)
        return track.participant_id if track is not None else None

    def close(self, reason: MediaCloseReason) -> None:
        """Stop forwarding for good. Safe to call again (the first reason is kept)."""
        if self._closed is not None:
            return
        self._closed = reason
        for target in self._subscribed.values():
            target.source = None
        self._targets.clear()
        self._published.clear()
        self._subscribed.clear()
        log.info("room %s: forwarding closed (%s)", self.room_id, reason.value)

    def _assign(self) -> None:
        for target in self._subscribed.values():
            if target.source is None:
                source = self._source_for(target)
                if source is not None:
                    self._attach(target, source)

    def _make_room_for(self, source: PublishedTrack) -> None:
        """Show a featured publisher (the host) to every subscriber: one whose slots of
        the track's kind are all taken by others gives up the pair with the highest
        number, and its slot of this kind takes the track at once (its sibling then
        waits for the host's other track). Those are the slots filled last."""
        by_participant: dict[str, list[SubscribedTrack]] = {}
        for target in self._subscribed.values():
            if target.participant_id != source.participant_id:
                by_participant.setdefault(target.participant_id, []).append(target)
        for mine in by_participant.values():
            if any(
                t.source is not None and t.source.participant_id == source.participant_id
                for t in mine
            ) or any(self._free_for(t, source, mine) for t in mine):
                continue  # shows the host already, or a free slot will take it
            taken = [
                t
                for t in mine
                if t.kind is source.kind and t.source is not None and not t.source.featured
            ]
            if not taken:
                continue
            slot = max(t.slot for t in taken)
            for target in mine:
                if target.slot == slot:
                    self._detach(target)
            self._attach(next(t for t in taken if t.slot == slot), source)

    @staticmethod
    def _free_for(
        target: SubscribedTrack, source: PublishedTrack, mine: list[SubscribedTrack]
    ) -> bool:
        """Whether ``target``, one of a subscriber's slots ``mine``, would take ``source``:
        free, of its kind, and its sibling free too or showing the same participant."""
        if target.kind is not source.kind or target.source is not None:
            return False
        sibling = next(
            (t for t in mine if t.slot == target.slot and t.kind is not target.kind), None
        )
        return (
            sibling is None
            or sibling.source is None
            or sibling.source.participant_id == source.participant_id
        )

    def _source_for(self, target: SubscribedTrack) -> PublishedTrack | None:
        """The publisher track a free slot should carry, if any.

        A participant's audio and video slots with the same number form a pair that
        shows one other participant: a slot whose sibling carries someone takes that
        person's track of its kind (or waits for it); an unpaired slot takes the first
        track of its kind from someone none of the participant's slots shows yet.
        """
        mine = [t for t in self._subscribed.values() if t.participant_id == target.participant_id]
        receiving = {t.source.track_id for t in mine if t.source is not None}
        # Featured publishers (the host) first, then in the order they started.
        candidates = sorted(
            (
                source
                for source in self._published.values()
                if source.kind is target.kind
                and source.participant_id != target.participant_id
                and source.track_id not in receiving
            ),
            key=lambda source: not source.featured,
        )
        sibling = next(
            (
                t.source
                for t in mine
                if t.slot == target.slot and t.kind is not target.kind and t.source is not None
            ),
            None,
        )
        if sibling is not None:
            return next((s for s in candidates if s.participant_id == sibling.participant_id), None)
        shown = {t.source.participant_id for t in mine if t.source is not None}
        return next((s for s in candidates if s.participant_id not in shown), None)

    def _attach(self, target: SubscribedTrack, source: PublishedTrack) -> None:
        target.source = source
        self._targets[source.track_id].append(target)
        if target.kind is MediaKind.VIDEO:
            target.waiting_keyframe = True
            # Without a keyframe at once, a browser subscriber can stay black.
            source.keyframe_urgent = True
            self._request_keyframe(source, self._monotonic())
        log.info(
            "room %s: %s receives %s from %s",
            self.room_id,
            target.participant_id,
            target.kind.value,
            source.participant_id,
        )

    def _detach(self, target: SubscribedTrack) -> None:
        source = target.source
        if source is not None:
            targets = self._targets.get(source.track_id, [])
            if target in targets:
                targets.remove(target)
        target.source = None

    # --- RTP from a publisher ---------------------------------------------------------------

    async def on_rtp(self, source: PublishedTrack, packet: RtpPacket) -> None:
        """:meth:`forward`, for callers on a coroutine."""
        self.forward(source, packet)

    def forward(self, source: PublishedTrack, packet: RtpPacket) -> None:
        """One RTP packet (already SRTP-unprotected and parsed) from a publisher."""
        if self._closed is not None or source.track_id not in self._published:
            return
        now = self._monotonic()
        fmt = source.formats.get(packet.payload_type)
        if fmt is None:
            apt = source.rtx_apts.get(packet.payload_type)
            media_ssrc = source.rtx_ssrcs.get(packet.ssrc, source.media_ssrc)
            if apt is not None and len(packet.payload) < 2:
                return  # padding on the RTX stream: a bandwidth probe, nothing to forward
            if apt is None or media_ssrc is None:
                self.stats.unknown_payload += 1
                source.counters.dropped += 1
                return
            packet = unwrap_rtx(packet, payload_type=apt, ssrc=media_ssrc)
            fmt = source.formats.get(apt)
            if fmt is None:
                self.stats.unknown_payload += 1
                return
            source.counters.retransmissions += 1
            self.stats.retransmissions_received += 1
        elif packet.ssrc != source.media_ssrc:
            if source.media_ssrc is not None:
                log.info("room %s: %s changed SSRC", self.room_id, source.track_id)
                if fmt.is_video:
                    # A new stream: subscribers start again from one of its keyframes.
                    for target in self._targets.get(source.track_id, []):
                        target.waiting_keyframe = True
                    source.keyframe_urgent = True
            source.media_ssrc = packet.ssrc
            source.missing.reset()
        size = len(packet.payload)
        source.counters.packets += 1
        source.counters.octets += size
        self.stats.packets_in += 1
        self.stats.octets_in += size

        # Only a keyframe that arrives in order can start a subscriber's video: one that
        # comes late (retransmitted) has had its following packets held back already.
        in_order = True
        if fmt.is_video:
            highest = source.missing.highest
            in_order = highest is None or seq_newer(packet.sequence_number, highest)
            if source.missing.add(packet.sequence_number):
                source.counters.nacks += 1
                self.stats.nacks_sent_upstream += 1
                source.feedback.nack(packet.ssrc, source.missing.missing)

        if self._taps and self._tap(source, fmt, packet):
            source.keyframe_wanted = True
        targets = self._targets.get(source.track_id)
        if not targets:
            if self._taps and source.keyframe_wanted and fmt.is_video:
                self._request_keyframe(source, now)
            return
        keyframe: bool | None = None
        epoch: Hashable = (source.track_id, packet.ssrc)
        abs_send_time = _abs_send_time().to_bytes(3, "big")
        audio_level = packet.extensions.audio_level
        for target in targets:
            payload_type = target.payload_types.get(fmt)
            if payload_type is None:
                self.stats.not_forwarded += 1
                target.counters.dropped += 1
                continue
            if target.waiting_keyframe:
                if keyframe is None:
                    keyframe = in_order and is_keyframe_start(fmt, packet.payload)
                if not keyframe:
                    self.stats.held_for_keyframe += 1
                    source.keyframe_wanted = True
                    continue
                target.waiting_keyframe = False
            out = target.rewriter.map(epoch, packet.sequence_number, packet.timestamp, now)
            if out.new_epoch:
                self._report_mapping(target, source, packet.ssrc, out.timestamp)
            data = target.header.build(
                payload_type=payload_type,
                marker=packet.marker,
                sequence_number=out.sequence_number,
                timestamp=out.timestamp,
                csrc=packet.csrc,
                abs_send_time=abs_send_time,
                audio_level=audio_level,
                payload=packet.payload,
                padding_size=packet.padding_size,
            )
            if target.history is not None:
                target.history.put(out.sequence_number, data)
            if target.sink.send(data):
                target.counters.packets += 1
                target.counters.octets += size
                self.stats.packets_out += 1
                self.stats.octets_out += size
                if fmt.is_video:
                    self.stats.video_packets_out += 1
                    self.stats.video_octets_out += size
                else:
                    self.stats.audio_packets_out += 1
                    self.stats.audio_octets_out += size
            else:
                self.stats.not_forwarded += 1
                target.counters.dropped += 1
        if source.keyframe_wanted and in_order and fmt.is_video:
            if keyframe is None:
                keyframe = is_keyframe_start(fmt, packet.payload)
            if keyframe:
                # This keyframe answers every request made before it.
                source.keyframe_wanted = False
        if source.keyframe_wanted or source.keyframe_urgent:
            self._request_keyframe(source, now)

    def _tap(self, source: PublishedTrack, fmt: CodecFormat, packet: RtpPacket) -> bool:
        wants_keyframe = False
        for tap in list(self._taps):
            try:
                wants_keyframe = tap(source, fmt, packet) or wants_keyframe
            except Exception:  # a broken tap must not stop the forwarding
                log.exception("room %s: a packet tap failed and was removed", self.room_id)
                self.remove_tap(tap)
        return wants_keyframe

    def _report_mapping(
        self, target: SubscribedTrack, source: PublishedTrack, ssrc: int, out_timestamp: int
    ) -> None:
        report = source.sender_reports.get(ssrc)
        if report is not None:
            ntp, rtp_timestamp = report
            translated = target.rewriter.translate_timestamp((source.track_id, ssrc), rtp_timestamp)
            if translated is not None:
                target.sink.report(ntp_timestamp=ntp, rtp_timestamp=translated)
                return
        # Until the publisher's first report: this packet, on the gateway's clock.
        target.sink.report(
            ntp_timestamp=aiortc_clock.current_ntp_time(), rtp_timestamp=out_timestamp
        )

    # --- RTCP from a publisher --------------------------------------------------------------

    async def on_publisher_rtcp(self, source: PublishedTrack, packet: AnyRtcpPacket) -> None:
        """RTCP routed to a publisher track's receiver: its sender reports matter here."""
        if self._closed is not None or not isinstance(packet, RtcpSrPacket):
            return
        self.stats.sender_reports_received += 1
        info = packet.sender_info
        source.sender_reports[packet.ssrc] = (info.ntp_timestamp, info.rtp_timestamp)
        epoch = (source.track_id, packet.ssrc)
        for target in self._targets.get(source.track_id, []):
            translated = target.rewriter.translate_timestamp(epoch, info.rtp_timestamp)
            if translated is not None:
                target.sink.report(ntp_timestamp=info.ntp_timestamp, rtp_timestamp=translated)

    # --- RTCP from a subscriber -------------------------------------------------------------

    async def on_subscriber_rtcp(self, target: SubscribedTrack, packet: AnyRtcpPacket) -> None:
        """Feedback a subscriber sent about one of its gateway senders."""
        if self._closed is not None or target.track_id not in self._subscribed:
            return
        now = self._monotonic()
        if isinstance(packet, RtcpRtpfbPacket):
            if packet.fmt == RTCP_RTPFB_NACK:
                self._answer_nack(target, packet, now)
        elif isinstance(packet, RtcpPsfbPacket):
            if packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                target.counters.keyframe_requests += 1
                if target.source is not None:
                    target.source.keyframe_wanted = True
                    self._request_keyframe(target.source, now)
            elif packet.fmt == RTCP_PSFB_APP:
                self._handle_remb(target, packet, now)

    def _answer_nack(self, target: SubscribedTrack, packet: RtcpRtpfbPacket, now: float) -> None:
        self.stats.nacks_received += 1
        target.counters.nacks += 1
        history = target.history
        if history is None:
            return
        for seq in nacked_sequence_numbers(packet):
            data = history.take_for_resend(seq, now, self._resend_interval)
            if data is None:
                self.stats.retransmissions_missed += 1
                continue
            rtx_payload_type = target.rtx_payload_types.get(data[1] & 0x7F)
            if rtx_payload_type is not None:
                data = rtx_packet(
                    data,
                    payload_type=rtx_payload_type,
                    sequence_number=target.rtx_sequence_number,
                    ssrc=target.rtx_ssrc,
                )
                target.rtx_sequence_number = (target.rtx_sequence_number + 1) % _SEQ_MOD
            if target.sink.send(data):
                target.counters.retransmissions += 1
                self.stats.retransmissions_sent += 1

    def _handle_remb(self, target: SubscribedTrack, packet: RtcpPsfbPacket, now: float) -> None:
        try:
            bitrate, _ssrcs = unpack_remb_fci(packet.fci)
        except (ValueError, IndexError):
            return
        self.stats.remb_received += 1
        target.remb = bitrate
        source = target.source
        if source is None or source.media_ssrc is None:
            return
        estimates = [t.remb for t in self._targets.get(source.track_id, []) if t.remb is not None]
        if not estimates:
            return
        lowest = min(estimates)
        last, last_at = source.remb_sent, source.remb_sent_at
        due = last is None or last_at is None or now - last_at >= self._remb_interval
        # A drop goes up at once: the publisher should not wait a second to slow down.
        if not due and last is not None and lowest >= last * 0.95:
            return
        source.remb_sent, source.remb_sent_at = lowest, now
        self.stats.remb_sent_upstream += 1
        source.feedback.remb(lowest, [source.media_ssrc])

    # --- keyframes ----------------------------------------------------------------------------

    def _request_keyframe(self, source: PublishedTrack, now: float) -> None:
        """A PLI to the publisher, unless one went less than ``keyframe_interval`` ago."""
        if source.media_ssrc is None or source.kind is not MediaKind.VIDEO:
            return
        last = source.keyframe_sent_at
        if not source.keyframe_urgent and last is not None and now - last < self._keyframe_interval:
            self.stats.keyframe_requests_suppressed += 1
            return
        source.keyframe_wanted = source.keyframe_urgent = False
        source.keyframe_sent_at = now
        source.counters.keyframe_requests += 1
        self.stats.keyframe_requests_sent += 1
        source.feedback.request_keyframe(source.media_ssrc)
