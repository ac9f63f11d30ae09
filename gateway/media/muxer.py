"""Encoded WebRTC frames into WebM or Matroska, written straight into a sealed file.

No re-encoding: each frame the media plane depacketized (VP8, H.264, Opus) becomes one
``av.Packet`` muxed as is. VP8 with Opus makes WebM; any H.264 track makes Matroska.

Append-only output, and its trade-off
-------------------------------------
The Matroska muxer normally seeks back at the end to fill in the segment size, the
duration and a seek head pointing at the cues. A :class:`SealedWriter` cannot seek (what
is written is already sealed), so FFmpeg is handed a write-only object without
``seek``/``tell`` and ``seekable() -> False``: PyAV then gives it an AVIOContext with no
seek function, and the muxer switches to its streaming layout (an unknown-size segment;
each cluster assembled in memory and written whole). The ``live=1`` muxer option says the
same explicitly, so no placeholder is reserved for values that can never be filled in.
What is lost: no Duration and no Cues (index), so players show no length and seek slowly
or not at all. Every frame is there and plays from the start; ``ffmpeg -i in.mkv -c copy
out.mkv`` on an exported file rebuilds the index without re-encoding. ``reserve_index_space``
or ``cues_to_front`` would need seeking, and so would writing the trailer anywhere but
the end.

Plaintext exists only in memory: the current cluster inside FFmpeg (about 32 KiB or one
second when unseekable), PyAV's I/O buffer (32 KiB), and the writer's current chunk.

Rules for callers
-----------------
* ``pts`` is in the track's ``time_base`` (90 kHz video, 48 kHz Opus: the RTP clocks)
  counted from the recording's start, common to all tracks, never going back on a track.
  ``dts`` equals ``pts``: WebRTC's VP8 and H.264 profiles have no B-frames.
* Video frames before a track's first keyframe are dropped (they cannot be decoded), so
  request a keyframe (PLI/FIR) when recording starts.
* H.264 frames are Annex B; the first keyframe must carry SPS and PPS in band (browsers
  send them with every IDR). PyAV takes the Matroska CodecPrivate from that first frame
  and, until it arrives, holds every other track's packets in memory: at most
  ``max_pending`` of them, then :class:`~gateway.errors.RecordingMuxFailed`.
* Opus needs an OpusHead as CodecPrivate; a libopus encoder context is opened (never fed)
  because it is what writes one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import TracebackType
from typing import Literal, Self

import av
from av.container import OutputContainer
from av.stream import Stream

from gateway.errors import RecordingMuxFailed
from gateway.media.sealed import SealedWriter

__all__ = ["OPUS_TIME_BASE", "VIDEO_TIME_BASE", "AudioTrack", "RecordingMuxer", "VideoTrack"]

log = logging.getLogger(__name__)

#: The RTP clock of WebRTC video.
VIDEO_TIME_BASE = Fraction(1, 90000)
#: The RTP clock of Opus (always 48 kHz, RFC 7587).
OPUS_TIME_BASE = Fraction(1, 48000)
_OPUS_SAMPLE_RATE = 48000
_MAX_DIMENSION = 8192


@dataclass(frozen=True, slots=True)
class VideoTrack:
    """A video track: its codec and its first frame size (later keyframes may change it)."""

    codec: Literal["vp8", "h264"]
    width: int
    height: int
    time_base: Fraction = VIDEO_TIME_BASE

    def __post_init__(self) -> None:
        if self.codec not in ("vp8", "h264"):
            raise ValueError(f"unsupported video codec {self.codec!r}")
        if not (0 < self.width <= _MAX_DIMENSION and 0 < self.height <= _MAX_DIMENSION):
            raise ValueError("video width and height must be 1 to 8192")
        if self.time_base <= 0:
            raise ValueError("time_base must be positive")


@dataclass(frozen=True, slots=True)
class AudioTrack:
    """An Opus track (48 kHz); ``channels`` is what the OpusHead announces."""

    channels: int = 2
    time_base: Fraction = OPUS_TIME_BASE
    codec: Literal["opus"] = "opus"

    def __post_init__(self) -> None:
        if self.codec != "opus":
            raise ValueError(f"unsupported audio codec {self.codec!r}")
        if self.channels not in (1, 2):
            raise ValueError("Opus tracks are mono or stereo")
        if self.time_base <= 0:
            raise ValueError("time_base must be positive")


Track = VideoTrack | AudioTrack


class RecordingMuxer:
    """Muxes encoded frames of fixed tracks into a container inside a :class:`SealedWriter`.

    The muxer owns the writer: :meth:`close` finishes the container and then publishes
    the sealed file; :meth:`abort` (or an exception in a ``with`` block) discards both.
    Both are safe to repeat.
    """

    def __init__(
        self, sink: SealedWriter, tracks: Sequence[Track], *, max_pending: int = 3000
    ) -> None:
        if not tracks:
            raise ValueError("a recording needs at least one track")
        self._sink = sink
        self._tracks = tuple(tracks)
        self._max_pending = max_pending
        h264 = {
            i for i, t in enumerate(self._tracks) if isinstance(t, VideoTrack) and t.codec == "h264"
        }
        self.container_format: Literal["webm", "matroska"] = "matroska" if h264 else "webm"
        self._awaiting_extradata = h264
        self._pending = 0
        self._last_pts: list[int | None] = [None] * len(self._tracks)
        self._keyframe_seen = [not isinstance(t, VideoTrack) for t in self._tracks]
        self._dropped = 0
        self._closed = False
        try:
            self._container: OutputContainer = av.open(
                _AppendOnly(sink),
                mode="w",
                format=self.container_format,
                container_options={"live": "1"},
            )
            self._streams = [self._add_stream(track) for track in self._tracks]
        except BaseException:
            sink.abort()
            raise

    @property
    def tracks(self) -> tuple[Track, ...]:
        return self._tracks

    @property
    def dropped(self) -> int:
        """Video frames dropped because their track had no keyframe yet."""
        return self._dropped

    def write(self, track: int, payload: bytes, *, pts: int, keyframe: bool = False) -> bool:
        """Mux one encoded frame of ``track``; False if it was dropped (before a keyframe)."""
        if self._closed:
            raise ValueError("the recording is closed")
        if not 0 <= track < len(self._tracks):
            raise RecordingMuxFailed(track=track, reason="no such track")
        spec = self._tracks[track]
        if not payload:
            raise RecordingMuxFailed(track=track, reason="empty frame")
        last = self._last_pts[track]
        if pts < 0 or (last is not None and pts < last):
            raise RecordingMuxFailed(track=track, reason="timestamp before the previous one")
        if not self._keyframe_seen[track]:
            if not keyframe:
                self._dropped += 1
                log.debug("track %d: frame dropped before the first keyframe", track)
                return False
            self._keyframe_seen[track] = True
        self._awaiting_extradata.discard(track)
        if self._awaiting_extradata:
            self._pending += 1
            if self._pending > self._max_pending:
                waiting = min(self._awaiting_extradata)
                raise RecordingMuxFailed(
                    track=waiting, reason="no H.264 keyframe yet; other tracks' frames pile up"
                )
        packet = av.Packet(payload)
        packet.stream = self._streams[track]
        packet.time_base = spec.time_base
        packet.pts = pts
        packet.dts = pts
        packet.is_keyframe = keyframe or isinstance(spec, AudioTrack)
        try:
            self._container.mux(packet)
        except av.FFmpegError as exc:
            raise RecordingMuxFailed(track=track, reason=f"muxer refused the frame: {exc}") from exc
        self._last_pts[track] = pts
        return True

    def close(self) -> None:
        """Finish the container (its trailer) and publish the sealed file."""
        if self._closed:
            return
        self._closed = True
        try:
            self._container.close()
        except BaseException:
            self._sink.abort()
            raise
        self._sink.close()

    def abort(self) -> None:
        """Discard the recording; nothing is published."""
        if self._closed:
            return
        self._closed = True
        self._sink.abort()
        # The sink reports itself closed, so PyAV skips the trailer; whatever FFmpeg still
        # tries to flush into the closed sink fails and does not matter any more.
        with contextlib.suppress(av.FFmpegError, ValueError, OSError):
            self._container.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _add_stream(self, track: Track) -> Stream:
        if isinstance(track, VideoTrack):
            return self._container.add_mux_stream(
                track.codec, width=track.width, height=track.height, time_base=track.time_base
            )
        layout = "mono" if track.channels == 1 else "stereo"
        stream: Stream = self._container.add_stream(
            "libopus", rate=_OPUS_SAMPLE_RATE, layout=layout
        )
        return stream


class _AppendOnly:
    """What FFmpeg sees of the sink: write-only, not seekable, so it never seeks back."""

    def __init__(self, sink: SealedWriter) -> None:
        self._sink = sink

    @property
    def closed(self) -> bool:
        return self._sink.closed

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: bytes) -> int:
        return self._sink.write(data)
