"""RecordingMuxer: real encoded frames into WebM/Matroska inside a sealed file, no plaintext
on disk, and the exported file plays back with the right streams."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import av
import pytest

from gateway.errors import RecordingMuxFailed
from gateway.media.muxer import AudioTrack, RecordingMuxer, VideoTrack
from gateway.media.sealed import RecordingKeyring, SealedWriter, export_plaintext, verify_sealed

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
WIDTH, HEIGHT = 64, 48
VIDEO_FRAMES = 12
AUDIO_FRAMES = 20  # 20 ms each: 0.4 s, as long as the video at 30 fps


class Frame(NamedTuple):
    payload: bytes
    pts: int
    keyframe: bool


def encode_video(codec: str, options: dict[str, str]) -> list[Frame]:
    """A handful of frames of a moving synthetic image, encoded in memory."""
    encoder: Any = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height = WIDTH, HEIGHT
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, 90000)
    encoder.framerate = 30
    encoder.options = options
    frames: list[Frame] = []

    def collect(packets: Any) -> None:
        frames.extend(Frame(bytes(p), int(p.pts), bool(p.is_keyframe)) for p in packets)

    for n in range(VIDEO_FRAMES):
        image = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        for plane_index, plane in enumerate(image.planes):
            plane.update(
                bytes((x + 9 * n + 60 * plane_index) % 256 for x in range(plane.buffer_size))
            )
        image.pts = n * 3000
        image.time_base = encoder.time_base
        collect(encoder.encode(image))
    collect(encoder.encode(None))
    return frames


def encode_opus(channels: int) -> list[Frame]:
    """20 ms Opus frames of a 440 Hz sine, encoded in memory."""
    layout = "mono" if channels == 1 else "stereo"
    encoder: Any = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = 48000
    encoder.layout = layout
    encoder.format = "s16"
    encoder.time_base = Fraction(1, 48000)
    packets: list[bytes] = []
    for n in range(AUDIO_FRAMES):
        samples = [
            int(8000 * math.sin(2 * math.pi * 440 * (n * 960 + i) / 48000)) for i in range(960)
        ]
        pcm = b"".join(struct.pack("<h", s) * channels for s in samples)
        frame = av.AudioFrame(format="s16", layout=layout, samples=960)
        frame.sample_rate = 48000
        frame.planes[0].update(pcm)
        frame.pts = n * 960
        frame.time_base = encoder.time_base
        packets.extend(bytes(p) for p in encoder.encode(frame))
    packets.extend(bytes(p) for p in encoder.encode(None))
    # RTP-like timestamps: one 20 ms frame after another from the recording's start.
    return [Frame(payload, n * 960, True) for n, payload in enumerate(packets)]


@pytest.fixture(scope="module")
def vp8_frames() -> list[Frame]:
    frames = encode_video("libvpx", {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"})
    assert frames[0].keyframe
    assert len(frames) == VIDEO_FRAMES
    return frames


@pytest.fixture(scope="module")
def h264_frames() -> list[Frame]:
    try:
        av.Codec("libx264", "w")
    except av.FFmpegError:  # pragma: no cover - depends on the av wheel
        pytest.skip("this PyAV wheel has no libx264 encoder")
    frames = encode_video("libx264", {"preset": "ultrafast", "tune": "zerolatency", "bf": "0"})
    assert frames[0].keyframe
    assert frames[0].payload.startswith(b"\x00\x00\x00\x01")  # Annex B, SPS first
    assert len(frames) == VIDEO_FRAMES
    return frames


@pytest.fixture(scope="module")
def opus_frames() -> list[Frame]:
    return encode_opus(channels=2)


def windows(frames: list[Frame]) -> list[bytes]:
    """32 bytes from the middle of each frame: muxing copies frame bodies as they are."""
    return [f.payload[len(f.payload) // 2 : len(f.payload) // 2 + 32] for f in frames]


class WatchedWriter(SealedWriter):
    """A SealedWriter that, after every write, checks the whole directory for plaintext."""

    watch: list[bytes]
    scans = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        written = super().write(data)
        assert_no_plaintext(self.path.parent, self.watch)
        WatchedWriter.scans += 1
        return written


def assert_no_plaintext(directory: Path, watch: list[bytes]) -> None:
    for path in directory.iterdir():
        content = path.read_bytes()
        assert EBML_MAGIC not in content, f"container bytes in {path.name}"
        assert b"webm" not in content
        assert b"matroska" not in content
        assert b"OpusHead" not in content
        for window in watch:
            assert window not in content, f"frame bytes in {path.name}"


def interleave(video: list[Frame], audio: list[Frame]) -> Iterator[tuple[int, Frame]]:
    """Frames in presentation order across tracks (0: video, 1: audio), as they arrive."""
    timed = [(f.pts / 90000, 0, f) for f in video] + [(f.pts / 48000, 1, f) for f in audio]
    for _, track, frame in sorted(timed, key=lambda item: (item[0], item[1])):
        yield track, frame


def record(
    directory: Path,
    keyring: RecordingKeyring,
    recording_id: str,
    video_track: VideoTrack,
    video: list[Frame],
    audio: list[Frame],
    *,
    audio_first: bool = False,
) -> Path:
    path = directory / f"{recording_id}.sealed"
    sink = WatchedWriter(path, keyring=keyring, recording_id=recording_id, chunk_size=1024)
    sink.watch = windows(video) + windows(audio)
    order = list(interleave(video, audio))
    if audio_first:  # audio arrives before the first video keyframe does
        order = [(1, audio[0]), *[item for item in order if item != (1, audio[0])]]
    with RecordingMuxer(sink, [video_track, AudioTrack(channels=2)]) as muxer:
        for track, frame in order:
            assert muxer.write(track, frame.payload, pts=frame.pts, keyframe=frame.keyframe)
            assert_no_plaintext(directory, sink.watch)
    assert_no_plaintext(directory, sink.watch)
    assert [p.name for p in directory.iterdir()] == [path.name]
    return path


def export(tmp_path: Path, sealed: Path, keyring: RecordingKeyring, name: str) -> bytes:
    out = tmp_path / name
    report = export_plaintext(sealed, out, keyring=keyring)
    assert report == verify_sealed(sealed, keyring=keyring)
    return out.read_bytes()


def decode_all(path: Path) -> tuple[dict[str, Any], int, int]:
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        info = {
            "format": container.format.name,
            "video_codec": video.codec_context.name,
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "audio_codec": audio.codec_context.name,
            "channels": audio.codec_context.channels,
            "sample_rate": audio.codec_context.sample_rate,
        }
        video_frames = sum(1 for _ in container.decode(video=0))
    with av.open(str(path)) as container:
        audio_frames = sum(1 for _ in container.decode(audio=0))
    return info, video_frames, audio_frames


def test_vp8_and_opus_into_webm_sealed_and_back(
    tmp_path: Path,
    keyring: RecordingKeyring,
    recording_id: str,
    vp8_frames: list[Frame],
    opus_frames: list[Frame],
) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    WatchedWriter.scans = 0
    sealed = record(
        recordings, keyring, recording_id, VideoTrack("vp8", WIDTH, HEIGHT), vp8_frames, opus_frames
    )
    assert WatchedWriter.scans > 0

    plain = export(tmp_path, sealed, keyring, "plain.webm")
    assert plain.startswith(EBML_MAGIC)
    assert b"webm" in plain
    for window in windows(vp8_frames) + windows(opus_frames):
        assert window in plain  # so their absence from the sealed file means something

    info, video_frames, audio_frames = decode_all(tmp_path / "plain.webm")
    assert info["format"].startswith("matroska")
    assert (info["video_codec"], info["width"], info["height"]) == ("vp8", WIDTH, HEIGHT)
    assert (info["audio_codec"], info["channels"], info["sample_rate"]) == ("opus", 2, 48000)
    assert video_frames == len(vp8_frames)
    assert audio_frames == len(opus_frames)


def test_h264_and_opus_into_matroska_sealed_and_back(
    tmp_path: Path,
    keyring: RecordingKeyring,
    recording_id: str,
    h264_frames: list[Frame],
    opus_frames: list[Frame],
) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    sealed = record(
        recordings,
        keyring,
        recording_id,
        VideoTrack("h264", WIDTH, HEIGHT),
        h264_frames,
        opus_frames,
        audio_first=True,
    )

    plain = export(tmp_path, sealed, keyring, "plain.mkv")
    assert plain.startswith(EBML_MAGIC)
    assert b"matroska" in plain
    for window in windows(h264_frames) + windows(opus_frames):
        assert window in plain

    info, video_frames, audio_frames = decode_all(tmp_path / "plain.mkv")
    assert (info["video_codec"], info["width"], info["height"]) == ("h264", WIDTH, HEIGHT)
    assert info["audio_codec"] == "opus"
    assert video_frames == len(h264_frames)
    assert audio_frames == len(opus_frames)


def test_video_before_the_first_keyframe_is_dropped(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str, vp8_frames: list[Frame]
) -> None:
    sink = SealedWriter(tmp_path / "r.sealed", keyring=keyring, recording_id=recording_id)
    with RecordingMuxer(sink, [VideoTrack("vp8", WIDTH, HEIGHT)]) as muxer:
        assert not muxer.write(0, vp8_frames[1].payload, pts=0)
        assert not muxer.write(0, vp8_frames[2].payload, pts=3000)
        for frame in vp8_frames:
            assert muxer.write(0, frame.payload, pts=frame.pts, keyframe=frame.keyframe)
        assert muxer.dropped == 2
    export(tmp_path, tmp_path / "r.sealed", keyring, "plain.webm")
    with av.open(str(tmp_path / "plain.webm")) as container:
        assert sum(1 for _ in container.decode(video=0)) == len(vp8_frames)


def test_bad_frames_are_refused_with_the_track_named(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str, opus_frames: list[Frame]
) -> None:
    sink = SealedWriter(tmp_path / "r.sealed", keyring=keyring, recording_id=recording_id)
    with RecordingMuxer(sink, [AudioTrack(channels=1)]) as muxer:
        muxer.write(0, opus_frames[0].payload, pts=960)
        with pytest.raises(RecordingMuxFailed, match="before the previous") as info:
            muxer.write(0, opus_frames[1].payload, pts=0)
        assert info.value.track == 0
        with pytest.raises(RecordingMuxFailed, match="no such track"):
            muxer.write(1, opus_frames[1].payload, pts=1920)
        with pytest.raises(RecordingMuxFailed, match="empty"):
            muxer.write(0, b"", pts=1920)
        muxer.write(0, opus_frames[1].payload, pts=1920)
    assert verify_sealed(tmp_path / "r.sealed", keyring=keyring).plaintext_size > 0


def test_an_h264_track_without_a_keyframe_cannot_pile_up_frames(
    tmp_path: Path, keyring: RecordingKeyring, recording_id: str, opus_frames: list[Frame]
) -> None:
    sink = SealedWriter(tmp_path / "r.sealed", keyring=keyring, recording_id=recording_id)
    muxer = RecordingMuxer(sink, [VideoTrack("h264", WIDTH, HEIGHT), AudioTrack()], max_pending=5)
    for frame in opus_frames[:5]:
        muxer.write(1, frame.payload, pts=frame.pts)
    with pytest.raises(RecordingMuxFailed, match=r"no H\.264 keyframe") as info:
        muxer.write(1, opus_frames[5].payload, pts=opus_frames[5].pts)
    assert info.value.track == 0
    muxer.abort()
    assert list(tmp_path.iterdir()) == []


def test_abort_and_failure_leave_nothing(
    tmp_path: Path,
    keyring: RecordingKeyring,
    recording_id: str,
    vp8_frames: list[Frame],
    opus_frames: list[Frame],
) -> None:
    sink = SealedWriter(
        tmp_path / "r.sealed", keyring=keyring, recording_id=recording_id, chunk_size=256
    )
    muxer = RecordingMuxer(sink, [VideoTrack("vp8", WIDTH, HEIGHT), AudioTrack()])
    for track, frame in interleave(vp8_frames, opus_frames):
        muxer.write(track, frame.payload, pts=frame.pts, keyframe=frame.keyframe)
    assert len(list(tmp_path.iterdir())) == 1
    muxer.abort()
    muxer.abort()
    muxer.close()
    assert list(tmp_path.iterdir()) == []

    def consent_withdrawn_mid_recording() -> None:
        sink = SealedWriter(tmp_path / "r.sealed", keyring=keyring, recording_id=recording_id)
        with RecordingMuxer(sink, [VideoTrack("vp8", WIDTH, HEIGHT)]) as muxer:
            muxer.write(0, vp8_frames[0].payload, pts=0, keyframe=True)
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        consent_withdrawn_mid_recording()
    assert list(tmp_path.iterdir()) == []


def test_tracks_are_validated() -> None:
    with pytest.raises(ValueError, match="codec"):
        VideoTrack("vp9", WIDTH, HEIGHT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="width"):
        VideoTrack("vp8", 0, HEIGHT)
    with pytest.raises(ValueError, match="mono or stereo"):
        AudioTrack(channels=6)
