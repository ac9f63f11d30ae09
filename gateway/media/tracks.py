"""The two ends of forwarding: a publisher's incoming track and a subscriber's outgoing one.

Each is built from what its own leg negotiated (payload types, RTX, header-extension
ids, MID, SSRCs), so the forwarder can translate between legs that agree on codecs but
not on numbers. How packets actually leave or feedback actually goes back is behind two
small protocols, so tests can use fakes and only :mod:`gateway.media._aiortc` knows how
aiortc does it.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping, Sequence
from typing import Protocol

from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters

from gateway.media.codecs import CodecFormat, codec_format
from gateway.media.counters import TrackCounters
from gateway.media.nack import MissingPackets
from gateway.media.rtp_header import OutgoingHeader
from gateway.media.rtp_history import PacketHistory
from gateway.media.rtp_rewriter import SequenceRewriter

__all__ = [
    "DownstreamSink",
    "MediaKind",
    "PublishedTrack",
    "SubscribedTrack",
    "TrackCounters",
    "UpstreamFeedback",
]


class MediaKind(enum.StrEnum):
    AUDIO = "audio"
    VIDEO = "video"


class UpstreamFeedback(Protocol):
    """RTCP the gateway sends to a publisher, sent before the call returns (never blocks)."""

    def request_keyframe(self, media_ssrc: int) -> None: ...

    def nack(self, media_ssrc: int, lost: list[int]) -> None: ...

    def remb(self, bitrate: int, ssrcs: list[int]) -> None: ...


class DownstreamSink(Protocol):
    """Where a subscriber's packets go, and what its sender reports say."""

    def send(self, data: bytes) -> bool:
        """Protect and send one RTP or RTCP packet now; False if the leg cannot send."""
        ...

    def report(self, *, ntp_timestamp: int, rtp_timestamp: int) -> None: ...

    def count_from(self, counters: TrackCounters) -> None:
        """The sender reports carry these counters' packets and payload octets (read
        when a report is built, not written per packet)."""
        ...


def _formats(codecs: Sequence[RTCRtpCodecParameters]) -> dict[int, CodecFormat]:
    formats: dict[int, CodecFormat] = {}
    for codec in codecs:
        fmt = codec_format(codec)
        if fmt is not None and codec.payloadType is not None:
            formats[codec.payloadType] = fmt
    return formats


def _rtx_apts(codecs: Sequence[RTCRtpCodecParameters]) -> dict[int, int]:
    """RTX payload type -> the payload type it retransmits."""
    apts: dict[int, int] = {}
    for codec in codecs:
        apt = codec.parameters.get("apt")
        rtx = codec.mimeType.lower().endswith("/rtx")
        if rtx and isinstance(apt, int) and codec.payloadType is not None:
            apts[codec.payloadType] = apt
    return apts


class PublishedTrack:
    """One publisher's incoming audio or video, as negotiated on the publisher's leg.

    Its ``counters`` and ``missing`` are never replaced once made: the compiled path
    keeps references to them.
    """

    def __init__(
        self,
        *,
        track_id: str,
        participant_id: str,
        kind: MediaKind,
        codecs: Sequence[RTCRtpCodecParameters],
        rtx_ssrcs: Mapping[int, int],
        feedback: UpstreamFeedback,
        featured: bool = False,
    ) -> None:
        self.track_id = track_id
        self.participant_id = participant_id
        self.kind = kind
        #: Shown to every subscriber, ahead of everyone else (the host).
        self.featured = featured
        self.formats = _formats(codecs)
        self.rtx_apts = _rtx_apts(codecs)
        #: RTX SSRC -> media SSRC, from the SDP's FID groups (may be empty).
        self.rtx_ssrcs = dict(rtx_ssrcs)
        self.feedback = feedback
        #: The SSRC media last came on; None until the first packet.
        self.media_ssrc: int | None = None
        #: Latest sender report per SSRC: (NTP timestamp, RTP timestamp).
        self.sender_reports: dict[int, tuple[int, int]] = {}
        self.missing = MissingPackets()
        self.keyframe_wanted = False
        self.keyframe_urgent = False
        self.keyframe_sent_at: float | None = None
        self.remb_sent: int | None = None
        self.remb_sent_at: float | None = None
        self.counters = TrackCounters()

    def __repr__(self) -> str:
        return f"PublishedTrack({self.track_id!r}, {self.kind.value})"


class SubscribedTrack:
    """One sender on a subscriber's leg, filled with one publisher track's packets.

    Its ``header``, ``sink``, ``rewriter``, ``history``, ``counters`` and
    ``payload_types`` are never replaced once made (nor is ``payload_types`` changed):
    the compiled path (``_native.Target``) keeps references to them while the track
    exists.
    """

    def __init__(
        self,
        *,
        track_id: str,
        participant_id: str,
        kind: MediaKind,
        mid: str | None,
        ssrc: int,
        rtx_ssrc: int,
        codecs: Sequence[RTCRtpCodecParameters],
        header_extensions: Sequence[RTCRtpHeaderExtensionParameters],
        sink: DownstreamSink,
        history_size: int = 1024,
        slot: int = 0,
    ) -> None:
        if not codecs:
            raise ValueError("a subscribed track needs at least one negotiated codec")
        #: Which of the participant's slots of this kind it is (0 first): an audio and a
        #: video slot with the same number carry one publisher, in one MediaStream.
        self.slot = slot
        self.track_id = track_id
        self.participant_id = participant_id
        self.kind = kind
        self.mid = mid
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        formats = _formats(codecs)
        #: Format -> this leg's payload type (the first one, if a format appears twice).
        self.payload_types: dict[CodecFormat, int] = {}
        for payload_type, fmt in formats.items():
            self.payload_types.setdefault(fmt, payload_type)
        #: Media payload type -> the RTX payload type that retransmits it.
        self.rtx_payload_types = {apt: rtx for rtx, apt in _rtx_apts(codecs).items()}
        self.header = OutgoingHeader(ssrc=ssrc, mid=mid, header_extensions=header_extensions)
        self.sink = sink
        self.rewriter = SequenceRewriter(codecs[0].clockRate)
        self.history = PacketHistory(history_size) if kind is MediaKind.VIDEO else None
        self.rtx_sequence_number = secrets.randbelow(1 << 15)
        #: The publisher track it carries; None while the slot is free.
        self.source: PublishedTrack | None = None
        #: Video is held back until a keyframe starts, so the decoder can begin there.
        self.waiting_keyframe = kind is MediaKind.VIDEO
        #: The subscriber's latest REMB, bits per second.
        self.remb: int | None = None
        self.counters = TrackCounters()
        sink.count_from(self.counters)

    def __repr__(self) -> str:
        return f"SubscribedTrack({self.track_id!r}, {self.kind.value})"
