"""The counters the forwarder keeps per track and per room, written once per packet.

Plain Python classes, and also compiled (``counters.pxd`` declares their fields as C
integers): the compiled path (``gateway/media/_native.pyx``) then adds to them without
a Python attribute lookup or a new int object per packet, and the Python path reads and
writes the very same fields through Python attributes. Without a C compiler the package
installs this file as it is, and nothing changes but the speed. The counters only grow:
the compiled classes refuse a negative value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.media.tracks import MediaKind

__all__ = ["ForwarderStats", "TrackCounters"]

_TRACK_FIELDS = ("packets", "octets", "dropped", "retransmissions", "nacks", "keyframe_requests")
_STATS_FIELDS = (
    "packets_in",
    "octets_in",
    "packets_out",
    "octets_out",
    "audio_packets_out",
    "audio_octets_out",
    "video_packets_out",
    "video_octets_out",
    "unknown_payload",
    "not_forwarded",
    "held_for_keyframe",
    "keyframe_requests_sent",
    "keyframe_requests_suppressed",
    "nacks_received",
    "retransmissions_sent",
    "retransmissions_missed",
    "nacks_sent_upstream",
    "retransmissions_received",
    "remb_received",
    "remb_sent_upstream",
    "sender_reports_received",
)


class TrackCounters:
    """What went through one track. Payload octets, as RTCP counts them."""

    __slots__ = _TRACK_FIELDS

    def __init__(self) -> None:
        self.packets = 0
        self.octets = 0
        #: Packets not forwarded: unknown payload type, no common codec, leg not sending.
        self.dropped = 0
        #: Retransmissions: received (publisher) or sent to answer NACKs (subscriber).
        self.retransmissions = 0
        self.nacks = 0
        self.keyframe_requests = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _TRACK_FIELDS}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrackCounters):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass would be

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value}" for name, value in self.as_dict().items())
        return f"TrackCounters({fields})"


class ForwarderStats:
    """Room-wide counters. Octets are RTP payload bytes."""

    __slots__ = _STATS_FIELDS

    def __init__(self) -> None:
        self.packets_in = 0
        self.octets_in = 0
        self.packets_out = 0
        self.octets_out = 0
        #: packets_out and octets_out, split by kind.
        self.audio_packets_out = 0
        self.audio_octets_out = 0
        self.video_packets_out = 0
        self.video_octets_out = 0
        #: Incoming packets with a payload type the publisher's leg did not negotiate.
        self.unknown_payload = 0
        #: Copies not sent: the subscriber's leg lacks the codec, or cannot send yet.
        self.not_forwarded = 0
        #: Video held back from a subscriber until a keyframe starts.
        self.held_for_keyframe = 0
        self.keyframe_requests_sent = 0
        self.keyframe_requests_suppressed = 0
        self.nacks_received = 0
        self.retransmissions_sent = 0
        #: NACKed packets not in the history (too old, or never received).
        self.retransmissions_missed = 0
        self.nacks_sent_upstream = 0
        self.retransmissions_received = 0
        self.remb_received = 0
        self.remb_sent_upstream = 0
        self.sender_reports_received = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _STATS_FIELDS}

    def by_kind(self) -> dict[MediaKind, tuple[int, int]]:
        """Forwarded (packets, octets) per kind of media."""
        from gateway.media.tracks import MediaKind  # here: tracks imports this module

        return {
            MediaKind.AUDIO: (self.audio_packets_out, self.audio_octets_out),
            MediaKind.VIDEO: (self.video_packets_out, self.video_octets_out),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ForwarderStats):
            return NotImplemented
        return self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value}" for name, value in self.as_dict().items())
        return f"ForwarderStats({fields})"
