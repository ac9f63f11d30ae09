"""The relay benchmark's media: a pre-encoded 720p VP8 clip at about 1.5 Mbit/s, and Opus.

Load peers send these as they are (no encoding in the load), paced by the media-plane
tests' :class:`PacedClipTrack`. The VP8 clip takes a while to encode, so it is kept in
a cache directory and made again only when its parameters change.
"""

from __future__ import annotations

import fractions
import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path

import av

from tests.media_plane.media import Clip, make_opus_clip

__all__ = ["FPS", "HEIGHT", "VIDEO_BITRATE", "WIDTH", "cached_clips"]

WIDTH, HEIGHT, FPS = 1280, 720, 30
VIDEO_BITRATE = 1_500_000
VIDEO_SECONDS = 10
AUDIO_SECONDS = 2
VIDEO_TIME_BASE = fractions.Fraction(1, 90000)

# Bump when the way the clip is made changes, so stale caches are not reused.
_CLIP_VERSION = 1
# How many distinct textured rows frames are made of, and how many change per frame:
# enough detail and motion that the encoder needs its whole budget.
_ROW_KINDS = 1024
_ROWS_CHANGED = 0.05


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "quietroom-bench"


def _frames(count: int) -> Iterator[av.VideoFrame]:
    """Synthetic 720p frames: rows of a noisy ramp, a few of them replaced each frame."""
    rng = random.Random(720)
    kinds = [
        bytes(((x * 255) // WIDTH + rng.randrange(16)) % 256 for x in range(WIDTH))
        for _ in range(_ROW_KINDS)
    ]
    rows = [rng.randrange(_ROW_KINDS) for _ in range(HEIGHT)]
    chroma = WIDTH * HEIGHT // 4
    for index in range(count):
        for y in range(HEIGHT):
            if rng.random() < _ROWS_CHANGED:
                rows[y] = rng.randrange(_ROW_KINDS)
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        frame.planes[0].update(b"".join(kinds[r] for r in rows))
        frame.planes[1].update(bytes([(128 + index) % 256]) * chroma)
        frame.planes[2].update(bytes([(96 + 2 * index) % 256]) * chroma)
        frame.pts = index
        frame.time_base = fractions.Fraction(1, FPS)
        yield frame


def _encode_vp8(path: Path) -> None:
    """Encode the clip to an IVF file: one keyframe at its start, VP8 rate-controlled."""
    with av.open(str(path), mode="w", format="ivf") as container:
        stream = container.add_stream(
            "libvpx",
            rate=FPS,
            options={
                "deadline": "realtime",
                "cpu-used": "16",
                "lag-in-frames": "0",
                # A keyframe at most three average frames, as a WebRTC encoder keeps it.
                "max-intra-rate": "300",
                "threads": "2",
            },
        )
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.bit_rate = VIDEO_BITRATE
        # One keyframe only: a subscriber's keyframe request restarts the clip.
        stream.codec_context.gop_size = 1 << 30
        for frame in _frames(VIDEO_SECONDS * FPS):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _read_clip(path: Path, codec: str) -> Clip:
    frames: list[tuple[bytes, bool]] = []
    with av.open(str(path)) as reader:
        for packet in reader.demux(video=0):
            if packet.size:
                frames.append((bytes(packet), bool(packet.is_keyframe)))
    return Clip(
        codec=codec, frames=tuple(frames), frame_duration=1 / FPS, time_base=VIDEO_TIME_BASE
    )


def cached_clips() -> tuple[Clip, Clip]:
    """The 720p VP8 clip (from the cache, or encoded now) and an Opus tone."""
    directory = _cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    kbps = VIDEO_BITRATE // 1000
    name = f"vp8-{WIDTH}x{HEIGHT}-{FPS}fps-{kbps}k-{VIDEO_SECONDS}s-v{_CLIP_VERSION}.ivf"
    video_path = directory / name
    if not video_path.exists():
        # Written beside its final name, then renamed: a crash leaves no half clip.
        with tempfile.NamedTemporaryFile(dir=directory, suffix=".ivf", delete=False) as part:
            partial = Path(part.name)
        try:
            _encode_vp8(partial)
            partial.replace(video_path)
        finally:
            partial.unlink(missing_ok=True)
    video = _read_clip(video_path, "vp8")
    with tempfile.TemporaryDirectory() as scratch:
        audio = make_opus_clip(Path(scratch) / "tone.ogg", seconds=AUDIO_SECONDS)
    return video, audio
