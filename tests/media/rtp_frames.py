"""Real encoded frames and the RTP packets aiortc's own packetizers make of them."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtp import RtpPacket


@dataclass(frozen=True)
class Encoded:
    data: bytes
    #: RTP timestamp (90 kHz video, 48 kHz audio).
    timestamp: int
    keyframe: bool


def encode_video(
    codec: str, *, width: int, height: int, count: int, keyframe_every: int = 0
) -> list[Encoded]:
    """``count`` frames of a moving synthetic picture at 30 fps; a keyframe at the start
    and every ``keyframe_every`` frames (0: only the first)."""
    encoder: Any = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, 90000)
    encoder.framerate = 30
    encoder.bit_rate = 2_000_000
    if codec == "libvpx":
        encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    else:
        encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"}
    frames: list[Encoded] = []

    def collect(packets: Any) -> None:
        frames.extend(Encoded(bytes(p), int(p.pts), bool(p.is_keyframe)) for p in packets)

    for n in range(count):
        image = av.VideoFrame(width, height, "yuv420p")
        for plane_index, plane in enumerate(image.planes):
            plane.update(
                bytes(
                    (x * 7 + (x // 13) * 31 + 11 * n + 60 * plane_index) % 256
                    for x in range(plane.buffer_size)
                )
            )
        image.pts = n * 3000
        image.time_base = encoder.time_base
        if keyframe_every and n and n % keyframe_every == 0:
            image.pict_type = av.video.frame.PictureType.I
        collect(encoder.encode(image))
    collect(encoder.encode(None))
    return frames


def encode_opus(count: int) -> list[Encoded]:
    """20 ms Opus frames of a 440 Hz tone (mono)."""
    encoder: Any = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = 48000
    encoder.layout = "mono"
    encoder.format = "s16"
    encoder.time_base = Fraction(1, 48000)
    payloads: list[bytes] = []
    for n in range(count):
        pcm = b"".join(
            struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * (n * 960 + i) / 48000)))
            for i in range(960)
        )
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.sample_rate = 48000
        frame.planes[0].update(pcm)
        frame.pts = n * 960
        frame.time_base = encoder.time_base
        payloads.extend(bytes(p) for p in encoder.encode(frame))
    payloads.extend(bytes(p) for p in encoder.encode(None))
    return [Encoded(payload, n * 960, True) for n, payload in enumerate(payloads)]


def vp8_payloads(frame: Encoded, picture_id: int) -> list[bytes]:
    return Vp8Encoder._packetize(frame.data, picture_id)


def h264_payloads(frame: Encoded) -> list[bytes]:
    return H264Encoder._packetize(H264Encoder._split_bitstream(frame.data))


def packetize(
    frames: list[Encoded],
    codec: str,
    *,
    first_seq: int = 1000,
    ssrc: int = 1234,
    timestamp_offset: int = 0,
) -> Iterator[RtpPacket]:
    """RTP packets in sending order; the marker bit on each video frame's last packet."""
    seq = first_seq
    for index, frame in enumerate(frames):
        if codec == "vp8":
            payloads = vp8_payloads(frame, index % (1 << 15))
        elif codec == "h264":
            payloads = h264_payloads(frame)
        else:
            payloads = [frame.data]
        for position, payload in enumerate(payloads):
            yield RtpPacket(
                payload_type=96,
                marker=int(codec != "opus" and position == len(payloads) - 1),
                sequence_number=seq % (1 << 16),
                timestamp=(frame.timestamp + timestamp_offset) % (1 << 32),
                ssrc=ssrc,
                payload=payload,
            )
            seq += 1


def nal_units(annex_b: bytes) -> list[bytes]:
    """The NAL units of an Annex B buffer, whatever start codes it uses."""
    return list(H264Encoder._split_bitstream(annex_b))
