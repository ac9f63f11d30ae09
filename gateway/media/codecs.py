"""The codecs both legs must agree on, and what forwarding needs to know of each.

The gateway never transcodes, so a publisher's packets can go to a subscriber only if
the subscriber's leg negotiated the same format: Opus for audio; VP8 or H.264
(constrained baseline, packetization-mode 1, the one Safari on iOS sends) for video.
Payload type numbers differ per leg; :class:`CodecFormat` is what stays the same.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

from aiortc import RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.sdp import parse_h264_profile_level_id

__all__ = [
    "H264_CONSTRAINED_BASELINE",
    "CodecFormat",
    "VideoCodec",
    "audio_preferences",
    "codec_format",
    "is_keyframe_start",
    "video_preferences",
]

#: The H.264 parameters every leg negotiates: constrained baseline 3.1, packetization 1.
H264_CONSTRAINED_BASELINE = {
    "level-asymmetry-allowed": "1",
    "packetization-mode": "1",
    "profile-level-id": "42e01f",
}


class VideoCodec(enum.StrEnum):
    """The video codecs a room may offer, by their SDP names."""

    VP8 = "VP8"
    H264 = "H264"


class CodecFormat(NamedTuple):
    """What a stream's payload is, independent of the payload type a leg gave it.

    A named tuple, not a dataclass: forwarding looks a format up in a dict for every
    copy of every packet, and a tuple hashes and compares in C where a frozen
    dataclass runs its generated ``__hash__`` and ``__eq__`` in Python.
    """

    mime_type: str
    clock_rate: int
    #: H.264 only: packetization mode and profile, which decoders care about.
    packetization_mode: int | None = None
    profile: str | None = None

    @property
    def name(self) -> str:
        return self.mime_type.split("/", 1)[1]

    @property
    def is_video(self) -> bool:
        return self.mime_type.startswith("video/")


def codec_format(codec: RTCRtpCodecParameters) -> CodecFormat | None:
    """The format a negotiated codec carries; None for RTX and unusable H.264 parameters."""
    mime_type = codec.mimeType.lower()
    if mime_type.endswith("/rtx"):
        return None
    if mime_type != "video/h264":
        return CodecFormat(mime_type=mime_type, clock_rate=codec.clockRate)
    try:
        mode = int(str(codec.parameters.get("packetization-mode", "0")))
        profile, _level = parse_h264_profile_level_id(
            str(codec.parameters.get("profile-level-id", "42e01f"))
        )
    except ValueError:
        return None
    return CodecFormat(
        mime_type=mime_type,
        clock_rate=codec.clockRate,
        packetization_mode=mode,
        profile=profile.name.lower(),
    )


def audio_preferences() -> list[RTCRtpCodecCapability]:
    """Opus only: every browser has it, and forwarding needs one audio format."""
    return [
        c
        for c in RTCRtpSender.getCapabilities("audio").codecs
        if c.mimeType.lower() == "audio/opus"
    ]


def video_preferences(codecs: Sequence[VideoCodec]) -> list[RTCRtpCodecCapability]:
    """The room's video codecs in its order of preference, with RTX for retransmissions."""
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    chosen: list[RTCRtpCodecCapability] = []
    for wanted in codecs:
        for capability in capabilities:
            name = capability.mimeType.split("/", 1)[1]
            if name.upper() != wanted.value:
                continue
            if wanted is VideoCodec.H264 and capability.parameters != H264_CONSTRAINED_BASELINE:
                continue
            chosen.append(capability)
    chosen.extend(c for c in capabilities if c.mimeType.lower() == "video/rtx")
    return chosen


def is_keyframe_start(codec: CodecFormat, payload: bytes) -> bool:
    """Whether this RTP payload starts a keyframe a decoder can start from."""
    if codec.mime_type == "video/vp8":
        return _vp8_keyframe_start(payload)
    if codec.mime_type == "video/h264":
        return _h264_keyframe_start(payload)
    return not codec.is_video


def _vp8_keyframe_start(payload: bytes) -> bool:
    # RFC 7741 section 4.2: payload descriptor, then the VP8 payload header.
    if not payload:
        return False
    first = payload[0]
    start, partition = first & 0x10, first & 0x0F
    if not start or partition:
        return False
    offset = 1
    if first & 0x80:
        if len(payload) < 2:
            return False
        extension = payload[1]
        offset = 2
        if extension & 0x80:
            if len(payload) < 3:
                return False
            offset += 2 if payload[2] & 0x80 else 1
        if extension & 0x40:
            offset += 1
        if extension & 0x30:
            offset += 1
    # The P bit (inverse keyframe flag) is the lowest bit of the first header byte.
    return len(payload) > offset and not payload[offset] & 0x01


_H264_IDR = 5
_H264_SPS = 7
_H264_STAP_A = 24
_H264_FU_A = 28


def _h264_keyframe_start(payload: bytes) -> bool:
    # RFC 6184: single NAL unit, STAP-A aggregate, or the first FU-A fragment.
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type in (_H264_IDR, _H264_SPS):
        return True
    if nal_type == _H264_STAP_A:
        offset = 1
        while offset + 2 < len(payload):
            size = int.from_bytes(payload[offset : offset + 2], "big")
            if size == 0 or offset + 2 + size > len(payload):
                return False
            if payload[offset + 2] & 0x1F in (_H264_IDR, _H264_SPS):
                return True
            offset += 2 + size
        return False
    if nal_type == _H264_FU_A and len(payload) > 1:
        header = payload[1]
        return bool(header & 0x80) and header & 0x1F == _H264_IDR
    return False
