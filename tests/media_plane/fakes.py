"""In-memory stand-ins for a leg's transport, and packet builders, for forwarder unit tests."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from aiortc.rtcrtpparameters import RTCRtpCodecParameters, RTCRtpHeaderExtensionParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from gateway.media.counters import TrackCounters
from gateway.media.tracks import MediaKind, PublishedTrack, SubscribedTrack

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


def vp8(payload_type: int = 96, rtx: int | None = 97) -> list[RTCRtpCodecParameters]:
    codecs = [
        RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=payload_type)
    ]
    if rtx is not None:
        codecs.append(
            RTCRtpCodecParameters(
                mimeType="video/rtx",
                clockRate=90000,
                payloadType=rtx,
                parameters={"apt": payload_type},
            )
        )
    return codecs


def h264(payload_type: int = 102) -> list[RTCRtpCodecParameters]:
    return [
        RTCRtpCodecParameters(
            mimeType="video/H264",
            clockRate=90000,
            payloadType=payload_type,
            parameters={
                "level-asymmetry-allowed": "1",
                "packetization-mode": "1",
                "profile-level-id": "42e01f",
            },
        )
    ]


def opus(payload_type: int = 111) -> list[RTCRtpCodecParameters]:
    return [
        RTCRtpCodecParameters(
            mimeType="audio/opus", clockRate=48000, channels=2, payloadType=payload_type
        )
    ]


def extensions(
    mid: int = 4, abs_send_time: int = 9, audio_level: int = 10
) -> list[RTCRtpHeaderExtensionParameters]:
    return [
        RTCRtpHeaderExtensionParameters(id=mid, uri=MID_URI),
        RTCRtpHeaderExtensionParameters(id=abs_send_time, uri=ABS_SEND_TIME_URI),
        RTCRtpHeaderExtensionParameters(id=audio_level, uri=AUDIO_LEVEL_URI),
    ]


def extension_map(params: list[RTCRtpHeaderExtensionParameters]) -> HeaderExtensionsMap:
    from aiortc.rtcrtpparameters import RTCRtpParameters

    extension_map = HeaderExtensionsMap()
    extension_map.configure(RTCRtpParameters(headerExtensions=params))
    return extension_map


# VP8 payloads (RFC 7741): descriptor with a 15-bit picture id, then the payload header.
VP8_KEYFRAME_START = bytes([0x90, 0x80, 0x80, 0x01, 0x10, 0x02, 0x00]) + b"key"
VP8_DELTA_START = bytes([0x90, 0x80, 0x80, 0x02, 0x11, 0x02, 0x00]) + b"delta"
VP8_CONTINUATION = bytes([0x80, 0x80, 0x80, 0x02]) + b"more"


def rtp(
    seq: int,
    *,
    ts: int = 1000,
    ssrc: int = 0x1111,
    pt: int = 96,
    payload: bytes = VP8_DELTA_START,
    marker: int = 1,
) -> RtpPacket:
    return RtpPacket(
        payload_type=pt,
        marker=marker,
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=payload,
    )


def rtx(
    seq: int,
    original_seq: int,
    *,
    ssrc: int = 0x2222,
    pt: int = 97,
    payload: bytes = VP8_DELTA_START,
    ts: int = 1000,
) -> RtpPacket:
    return RtpPacket(
        payload_type=pt,
        marker=1,
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=struct.pack("!H", original_seq) + payload,
    )


@dataclass
class FakeFeedback:
    keyframes: list[int] = field(default_factory=list)
    nacks: list[tuple[int, list[int]]] = field(default_factory=list)
    rembs: list[tuple[int, list[int]]] = field(default_factory=list)

    def request_keyframe(self, media_ssrc: int) -> None:
        self.keyframes.append(media_ssrc)

    def nack(self, media_ssrc: int, lost: list[int]) -> None:
        self.nacks.append((media_ssrc, list(lost)))

    def remb(self, bitrate: int, ssrcs: list[int]) -> None:
        self.rembs.append((bitrate, list(ssrcs)))


@dataclass
class FakeSink:
    sent: list[bytes] = field(default_factory=list)
    reports: list[tuple[int, int]] = field(default_factory=list)
    connected: bool = True
    counters: TrackCounters = field(default_factory=TrackCounters)

    def send(self, data: bytes) -> bool:
        if not self.connected:
            return False
        self.sent.append(data)
        return True

    def report(self, *, ntp_timestamp: int, rtp_timestamp: int) -> None:
        self.reports.append((ntp_timestamp, rtp_timestamp))

    def count_from(self, counters: TrackCounters) -> None:
        self.counters = counters

    @property
    def counts(self) -> tuple[int, int]:
        return (self.counters.packets, self.counters.octets)


def published(
    participant: str = "ptc_a",
    *,
    kind: MediaKind = MediaKind.VIDEO,
    codecs: list[RTCRtpCodecParameters] | None = None,
    rtx_ssrcs: dict[int, int] | None = None,
    name: str = "1",
    featured: bool = False,
) -> tuple[PublishedTrack, FakeFeedback]:
    feedback = FakeFeedback()
    track = PublishedTrack(
        track_id=f"{participant}/{name}",
        participant_id=participant,
        kind=kind,
        featured=featured,
        codecs=codecs if codecs is not None else (vp8() if kind is MediaKind.VIDEO else opus()),
        rtx_ssrcs=rtx_ssrcs if rtx_ssrcs is not None else {0x2222: 0x1111},
        feedback=feedback,
    )
    return track, feedback


def subscribed(
    participant: str = "ptc_b",
    *,
    kind: MediaKind = MediaKind.VIDEO,
    codecs: list[RTCRtpCodecParameters] | None = None,
    mid: str = "3",
    ssrc: int = 0xAAAA,
    rtx_ssrc: int = 0xBBBB,
    name: str = "1",
    history_size: int = 64,
    slot: int = 0,
) -> tuple[SubscribedTrack, FakeSink]:
    sink = FakeSink()
    track = SubscribedTrack(
        track_id=f"{participant}/{name}",
        participant_id=participant,
        kind=kind,
        mid=mid,
        ssrc=ssrc,
        rtx_ssrc=rtx_ssrc,
        codecs=codecs
        if codecs is not None
        else (vp8(120, 121) if kind is MediaKind.VIDEO else opus(109)),
        header_extensions=extensions(),
        sink=sink,
        history_size=history_size,
        slot=slot,
    )
    return track, sink


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now
