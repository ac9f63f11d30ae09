"""Pre-encoded media for the media-plane tests: clips made once with PyAV, and paced tracks.

The video clips have a keyframe only at their start, so a subscriber that joins mid-clip
can decode only if a keyframe request (PLI) reaches the publisher: :class:`PacedClipTrack`
answers one by restarting its clip, which starts with that keyframe. It paces packets on
its own clock, loop after loop (aiortc's ``MediaPlayer(decode=False, loop=True)`` loses
its pacing after the first loop).
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from dataclasses import dataclass
from pathlib import Path

import av
from aiortc import MediaStreamError, MediaStreamTrack

WIDTH, HEIGHT, FPS = 320, 240, 30
VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
AUDIO_TIME_BASE = fractions.Fraction(1, 48000)


@dataclass(frozen=True)
class Clip:
    """Encoded frames, in order, as they are sent: (bytes, is keyframe)."""

    codec: str
    frames: tuple[tuple[bytes, bool], ...]
    #: Seconds each frame lasts.
    frame_duration: float
    time_base: fractions.Fraction

    @property
    def keyframes(self) -> int:
        return sum(1 for _data, key in self.frames if key)


def _luma(index: int) -> bytes:
    ramp = bytes(range(256)) * 4
    rows = []
    box_x = (index * 6) % (WIDTH - 40)
    for y in range(HEIGHT):
        start = (y + 4 * index) % 256
        row = bytearray(ramp[start : start + WIDTH])
        if 100 <= y < 140:
            row[box_x : box_x + 40] = b"\xeb" * 40
        rows.append(bytes(row))
    return b"".join(rows)


def _video_frame(index: int) -> av.VideoFrame:
    frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
    frame.planes[0].update(_luma(index))
    frame.planes[1].update(bytes([(128 + index) % 256]) * (WIDTH * HEIGHT // 4))
    frame.planes[2].update(bytes([(96 + 2 * index) % 256]) * (WIDTH * HEIGHT // 4))
    frame.pts = index
    frame.time_base = fractions.Fraction(1, FPS)
    return frame


def make_video_clip(path: Path, codec: str, seconds: float) -> Clip:
    """Encode a synthetic clip (a moving ramp and box) to ``path``, then read it back."""
    count = round(seconds * FPS)
    if codec == "vp8":
        container = av.open(str(path), mode="w", format="ivf")
        stream = container.add_stream(
            "libvpx",
            rate=FPS,
            options={"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"},
        )
    elif codec == "h264":
        container = av.open(str(path), mode="w", format="h264")
        stream = container.add_stream(
            "libx264",
            rate=FPS,
            options={
                "profile": "baseline",
                "preset": "ultrafast",
                "tune": "zerolatency",
                # One keyframe only, SPS/PPS before it; no B-frames (WebRTC has none).
                "x264-params": "keyint=100000:min-keyint=100000:scenecut=0:bframes=0",
            },
        )
    else:
        raise ValueError(codec)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    stream.bit_rate = 400_000
    stream.codec_context.gop_size = 100_000
    with container:
        for index in range(count):
            for packet in stream.encode(_video_frame(index)):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    frames: list[tuple[bytes, bool]] = []
    with av.open(str(path)) as reader:
        for packet in reader.demux(video=0):
            if packet.size:
                frames.append((bytes(packet), bool(packet.is_keyframe)))
    return Clip(
        codec=codec, frames=tuple(frames), frame_duration=1 / FPS, time_base=VIDEO_TIME_BASE
    )


def make_opus_clip(path: Path, seconds: float) -> Clip:
    """A 440 Hz tone, Opus in 20 ms packets, written to ``path`` (Ogg) and read back."""
    rate, samples_per_frame = 48000, 960
    with av.open(str(path), mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=rate, layout="mono")
        for index in range(round(seconds * 50)):
            start = index * samples_per_frame
            pcm = b"".join(
                int(8000 * math.sin(2 * math.pi * 440 * (start + n) / rate)).to_bytes(
                    2, "little", signed=True
                )
                for n in range(samples_per_frame)
            )
            frame = av.AudioFrame(format="s16", layout="mono", samples=samples_per_frame)
            frame.planes[0].update(pcm)
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = fractions.Fraction(1, rate)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    frames = []
    with av.open(str(path)) as reader:
        for packet in reader.demux(audio=0):
            if packet.size:
                frames.append((bytes(packet), True))
    return Clip(codec="opus", frames=tuple(frames), frame_duration=0.02, time_base=AUDIO_TIME_BASE)


class PacedClipTrack(MediaStreamTrack):
    """Sends a clip's encoded frames in real time, looping; restarts it on a keyframe request."""

    def __init__(self, clip: Clip, *, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._clip = clip
        self._index = 0
        self._sent = 0
        self._start: float | None = None
        self.keyframe_requests = 0
        self._restart = False

    def request_keyframe(self) -> None:
        """The next frame is the clip's first one, a keyframe."""
        self.keyframe_requests += 1
        self._restart = True

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        due = self._start + self._sent * self._clip.frame_duration
        if due > now:
            await asyncio.sleep(due - now)
        if self._restart or self._index >= len(self._clip.frames):
            self._restart = False
            self._index = 0
        data, _key = self._clip.frames[self._index]
        packet = av.Packet(data)
        ticks = round(self._clip.frame_duration / self._clip.time_base)
        packet.pts = self._sent * ticks
        packet.time_base = self._clip.time_base
        self._index += 1
        self._sent += 1
        return packet
