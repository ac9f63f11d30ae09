"""The consent-gated recorder: a session's forwarded packets into a sealed WebM/Matroska.

A :class:`SessionRecorder` taps the session's forwarder (:meth:`MediaRooms.add_tap`):
every publisher packet is depacketized (:mod:`gateway.media.depacketize`), given a
presentation time, and muxed without re-encoding (:mod:`gateway.media.muxer`) into a
:class:`~gateway.media.sealed.SealedWriter` that encrypts it in chunks as it is written.
Whether it may run is not its business: :mod:`gateway.services.recordings` decides, and
starts and stops it.

What is recorded
----------------
* Audio: one Opus track per participant in the session when the recording starts (host
  first), so every voice is kept as it was sent, without mixing (mixing would mean
  decoding and encoding again). A player plays the first track by default; every track
  is in the file (``ffmpeg -filter_complex amix`` makes one out of them).
* Video: one track, from the first publisher who is not the host, else the host's (in a
  one-to-one session, the client's face; the therapist's own video is rarely what the
  record needs). When that publisher stops sending for a second, the next one that sends
  takes over from its next keyframe. Video in a codec other than the track's (a Safari
  participant on H.264 in a VP8 recording) is not recorded.
* Someone who joins later with consent is not added (a container's tracks are fixed when
  it starts); someone who joins without consent stops the recording anyway.

The container's tracks need the video's codec and picture size, which only the first
keyframe tells: until it comes (a keyframe is asked for at once) audio frames wait in
memory. If no video keyframe arrives within ``video_wait`` seconds the recording is audio
only.

Time
----
Each stream's RTP timestamps become ``pts`` from the recording's start: a stream's first
packet is placed on the gateway's clock (``time.monotonic``), and its later frames follow
its own RTP clock from there. When a participant's sender reports are known, their other
streams are placed through the sender's NTP clock relative to the first one, so a
participant's audio and video keep the lip sync they were sent with; otherwise by arrival.

Never blocking the event loop
-----------------------------
The tap runs inside the forwarder's receive path: it only depacketizes and queues.
Muxing, encryption and writes happen in a worker thread (one batch at a time, through
``asyncio.to_thread``) fed by a worker task the recorder owns. The queue is bounded: if
the disk stalls, new frames are dropped (video then resumes at a keyframe) rather than
piling up. :meth:`SessionRecorder.stop` drains the queue, finishes the container, seals
and publishes the file, and returns its hash; it is safe to call twice.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from aiortc.rtp import RtpPacket

from gateway.domain.recording import SealedFile, recording_file_name
from gateway.errors import RecordingError
from gateway.media.codecs import CodecFormat
from gateway.media.depacketize import EncodedFrame, FrameAssembler, assembler_for
from gateway.media.muxer import AudioTrack, RecordingMuxer, VideoTrack
from gateway.media.rooms import MediaRooms
from gateway.media.sealed import RecordingKeyring, SealedWriter
from gateway.media.tracks import MediaKind, PublishedTrack

__all__ = ["MediaRecorders", "SessionRecorder", "TrackClock", "place_stream"]

log = logging.getLogger(__name__)

_TS_MOD = 1 << 32
#: 2**32 in an NTP timestamp: its seconds are the upper 32 bits.
_NTP_SCALE = float(1 << 32)
#: Used when an H.264 keyframe's SPS cannot be read: any size plays, this one is common.
_FALLBACK_SIZE = (640, 480)

Track = VideoTrack | AudioTrack


def _signed_ts(delta: int) -> int:
    delta %= _TS_MOD
    return delta - _TS_MOD if delta >= _TS_MOD // 2 else delta


class TrackClock:
    """One output track's RTP timestamps as ``pts`` from the recording's start.

    Each stream (an epoch, e.g. a publisher's SSRC) is placed once with :meth:`begin`:
    its ``timestamp`` happened at ``at`` (seconds on the recording's clock). Later
    timestamps of that stream follow from there, wrap-around included. A track's pts
    never go back and never repeat, across streams too.
    """

    def __init__(self, *, clock_rate: int, start: float) -> None:
        self.clock_rate = clock_rate
        self._start = start
        self._epochs: dict[Hashable, tuple[int, int]] = {}
        self._last: int | None = None

    def begin(self, epoch: Hashable, *, timestamp: int, at: float) -> None:
        base = round((at - self._start) * self.clock_rate)
        self._epochs[epoch] = (timestamp, base)

    def knows(self, epoch: Hashable) -> bool:
        return epoch in self._epochs

    def pts(self, epoch: Hashable, timestamp: int) -> int | None:
        """The frame's pts, or None for a stream that was never placed."""
        placed = self._epochs.get(epoch)
        if placed is None:
            return None
        reference, base = placed
        unclamped = base + _signed_ts(timestamp - reference)
        # The reference follows the stream, so a delta never nears half the 32-bit range
        # however long it runs (2**31 ticks are 6.6 hours of video).
        self._epochs[epoch] = (timestamp, unclamped)
        pts = max(0, unclamped)
        if self._last is not None and pts <= self._last:
            pts = self._last + 1
        self._last = pts
        return pts


def place_stream(
    offsets: dict[str, float],
    participant_id: str,
    *,
    arrival: float,
    timestamp: int,
    clock_rate: int,
    sender_report: tuple[int, int] | None,
) -> float:
    """When (on the recording's clock) the media at ``timestamp`` was captured.

    Without a sender report: when it arrived. With one, the sender's NTP clock says when
    it was captured; ``offsets`` keeps, per participant, the distance between that clock
    and ours, fixed by the first stream placed this way, so all of a participant's streams
    line up as the sender captured them.
    """
    if sender_report is None:
        return arrival
    ntp, rtp = sender_report
    captured = ntp / _NTP_SCALE + _signed_ts(timestamp - rtp) / clock_rate
    offset = offsets.setdefault(participant_id, arrival - captured)
    return captured + offset


@dataclass(slots=True)
class _Stream:
    """One publisher stream (track and SSRC) the recorder listens to."""

    epoch: tuple[str, int]
    fmt: CodecFormat
    assembler: FrameAssembler
    #: Index of the output audio track (audio), or None (video).
    audio: int | None


@dataclass(frozen=True, slots=True)
class _Frame:
    track: int
    data: bytes
    pts: int
    keyframe: bool


@dataclass(slots=True)
class RecordingStats:
    """What a recorder did, for logs and tests."""

    video_frames: int = 0
    audio_frames: int = 0
    #: Frames not recorded: queue full, codec of another track, refused by the muxer.
    dropped: int = 0
    #: Video publishers taken (the first one included).
    video_switches: int = 0


class SessionRecorder:
    """Records one session into ``directory/<recording id>.sealed``; see the module."""

    def __init__(
        self,
        *,
        recording_id: str,
        session_id: str,
        directory: str | os.PathLike[str],
        keyring: RecordingKeyring,
        host_id: str,
        audio_participants: Sequence[str],
        monotonic: Callable[[], float] = time.monotonic,
        video_wait: float = 3.0,
        max_queue: int = 3000,
        max_held: int = 1500,
    ) -> None:
        if not audio_participants:
            raise ValueError("a recording needs at least one participant")
        self.recording_id = recording_id
        self.session_id = session_id
        self._directory = Path(directory)
        self._keyring = keyring
        self._host_id = host_id
        self._audio_index = {pid: i for i, pid in enumerate(audio_participants)}
        self._audio_count = len(audio_participants)
        self._monotonic = monotonic
        self._video_wait = video_wait
        self._max_queue = max_queue
        self._max_held = max_held
        self._started_at = monotonic()
        self._video_clock = TrackClock(clock_rate=90000, start=self._started_at)
        self._audio_clocks = [
            TrackClock(clock_rate=48000, start=self._started_at) for _ in audio_participants
        ]
        self._offsets: dict[str, float] = {}
        self._streams: dict[tuple[str, int], _Stream] = {}
        self._video_source: PublishedTrack | None = None
        self._video_seen_at = 0.0
        self._video_gap = False
        #: The container's tracks, once decided (video first, if any).
        self._layout: tuple[Track, ...] | None = None
        self._video_codec: Literal["vp8", "h264"] | None = None
        self._held: collections.deque[_Frame] = collections.deque()
        self._queue: collections.deque[_Frame] = collections.deque()
        self._wake = asyncio.Event()
        self._halted = False
        self._stopping = False
        self._worker: asyncio.Task[SealedFile | None] | None = None
        self._muxer: RecordingMuxer | None = None
        self._sink: SealedWriter | None = None
        #: The muxer and its sink are used in worker threads, one at a time.
        self._files = threading.Lock()
        self.failure: BaseException | None = None
        self.stats = RecordingStats()

    def __repr__(self) -> str:
        return f"SessionRecorder({self.recording_id!r}, session={self.session_id!r})"

    @property
    def file_name(self) -> str:
        return recording_file_name(self.recording_id)

    @property
    def failed(self) -> bool:
        return self.failure is not None

    # --- life -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker; packets are taken from now on."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name=f"recorder {self.recording_id}")
            log.info("%s: recording", self, extra={"appointment_id": self.session_id})

    def halt(self) -> None:
        """Take no more packets, at once (the rest of stopping may take a moment)."""
        self._halted = True

    async def stop(self) -> SealedFile | None:
        """Stop, seal and publish; the sealed file, or None if the recorder failed (it
        then wrote nothing that lasts). Safe to call twice."""
        self.halt()
        if not self._stopping:
            self._stopping = True
            if self._layout is None:
                self._decide(video=None)
            self._wake.set()
        if self._worker is None:
            self.start()
        assert self._worker is not None
        return await asyncio.shield(self._worker)

    async def abort(self) -> None:
        """Drop the recording (nothing is published); for a stop that takes too long."""
        self.halt()
        self._stopping = True
        worker = self._worker
        if worker is not None and not worker.done():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        await asyncio.to_thread(self._abort_files)

    # --- the tap ------------------------------------------------------------------------------

    def tap(self, source: PublishedTrack, fmt: CodecFormat, packet: RtpPacket) -> bool:
        """Take one forwarded packet; True asks its publisher for a keyframe.

        What the publisher sends decides what is written, and a packet this cannot take
        (a keyframe claiming more than 8192 pixels a side, say) fails the recording:
        nothing is kept, and the recording service stops it as failed, so the host
        hears of it. It never raises into the forwarder, which would drop the tap and
        leave the recording running without media."""
        if self._halted:
            return False
        try:
            return self._take(source, fmt, packet)
        except Exception as exc:  # noqa: BLE001 (logged by _fail, and the recording fails)
            self._fail(exc)
            return False

    def _fail(self, exc: BaseException) -> None:
        self.failure = exc
        self._halted = True
        log.error(
            "%s: a forwarded packet could not be recorded (%s); the recording fails",
            self,
            type(exc).__name__,
            extra={"appointment_id": self.session_id},
        )
        self._wake.set()  # the worker drops what it wrote

    def _take(self, source: PublishedTrack, fmt: CodecFormat, packet: RtpPacket) -> bool:
        now = self._monotonic()
        if source.kind is MediaKind.AUDIO:
            index = self._audio_index.get(source.participant_id)
            if index is None:
                return False
            stream = self._stream(source, fmt, packet, now, audio=index)
            if stream is not None:
                for frame in stream.assembler.push(packet):
                    self._audio_frame(stream, frame, index)
            if self._layout is None and now - self._started_at >= self._video_wait:
                self._decide(video=None)
            return False
        if self._layout is not None and self._video_codec is None:
            return False  # an audio-only recording
        if not self._takes_video(source, fmt, now):
            return False
        self._video_seen_at = now
        stream = self._stream(source, fmt, packet, now, audio=None)
        if stream is None:
            return False
        for frame in stream.assembler.push(packet):
            self._video_frame(stream, frame)
        return stream.assembler.waiting_keyframe or self._video_gap

    def _takes_video(self, source: PublishedTrack, fmt: CodecFormat, now: float) -> bool:
        if self._video_codec is not None and _video_codec(fmt) != self._video_codec:
            return False
        current = self._video_source
        if source is current:
            return True
        if source.participant_id not in self._audio_index:
            return False  # only those present (and consenting) when it started
        if (
            current is None
            or now - self._video_seen_at > 1.0  # the current one stopped sending
            or (current.participant_id == self._host_id and source.participant_id != self._host_id)
        ):
            if _video_codec(fmt) is None:
                return False
            self._video_source = source
            self.stats.video_switches += 1
            log.info("%s: video from %s", self, source.participant_id)
            return True
        return False

    def _stream(
        self,
        source: PublishedTrack,
        fmt: CodecFormat,
        packet: RtpPacket,
        now: float,
        *,
        audio: int | None,
    ) -> _Stream | None:
        epoch = (source.track_id, packet.ssrc)
        stream = self._streams.get(epoch)
        if stream is not None and stream.fmt == fmt:
            return stream
        assembler = assembler_for(fmt)
        if assembler is None:
            return None
        stream = self._streams[epoch] = _Stream(
            epoch=epoch, fmt=fmt, assembler=assembler, audio=audio
        )
        clock = self._video_clock if audio is None else self._audio_clocks[audio]
        at = place_stream(
            self._offsets,
            source.participant_id,
            arrival=now,
            timestamp=packet.timestamp,
            clock_rate=fmt.clock_rate,
            sender_report=source.sender_reports.get(packet.ssrc),
        )
        clock.begin(epoch, timestamp=packet.timestamp, at=at)
        return stream

    def _video_frame(self, stream: _Stream, frame: EncodedFrame) -> None:
        if self._layout is None:
            if not frame.keyframe:
                return
            codec = _video_codec(stream.fmt)
            if codec is None:
                return
            width, height = (frame.width, frame.height)
            if width is None or height is None:
                width, height = _FALLBACK_SIZE
            self._decide(video=VideoTrack(codec, width, height))
        if self._video_codec is None:
            return  # decided audio only
        if self._video_gap:
            if not frame.keyframe:
                self.stats.dropped += 1
                return
            self._video_gap = False
        pts = self._video_clock.pts(stream.epoch, frame.timestamp)
        if pts is None:
            return
        if self._enqueue(_Frame(0, frame.data, pts, frame.keyframe)):
            self.stats.video_frames += 1
        else:
            self._video_gap = True

    def _audio_frame(self, stream: _Stream, frame: EncodedFrame, index: int) -> None:
        pts = self._audio_clocks[index].pts(stream.epoch, frame.timestamp)
        if pts is None:
            return
        item = _Frame(index, frame.data, pts, True)
        if self._layout is None:
            if len(self._held) >= self._max_held:
                self._held.popleft()
                self.stats.dropped += 1
            self._held.append(item)
            return
        if self._enqueue(self._audio_track(item)):
            self.stats.audio_frames += 1

    def _audio_track(self, item: _Frame) -> _Frame:
        """An audio frame with its track number in the container (after the video)."""
        offset = 1 if self._video_codec is not None else 0
        return _Frame(item.track + offset, item.data, item.pts, item.keyframe)

    def _decide(self, *, video: VideoTrack | None) -> None:
        """Fix the container's tracks; held audio goes to the queue."""
        audio = tuple(AudioTrack(channels=2) for _ in range(self._audio_count))
        self._layout = audio if video is None else (video, *audio)
        self._video_codec = None if video is None else video.codec
        log.info(
            "%s: tracks %s",
            self,
            ", ".join(t.codec for t in self._layout),
            extra={"appointment_id": self.session_id},
        )
        while self._held:
            if self._enqueue(self._audio_track(self._held.popleft())):
                self.stats.audio_frames += 1

    def _enqueue(self, item: _Frame) -> bool:
        if len(self._queue) >= self._max_queue:
            self.stats.dropped += 1
            return False
        self._queue.append(item)
        self._wake.set()
        return True

    # --- the worker ---------------------------------------------------------------------------

    async def _run(self) -> SealedFile | None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if self.failure is not None:  # the tap failed: nothing is kept
                    await asyncio.to_thread(self._abort_files)
                    return None
                if self._queue and self._layout is not None:
                    batch = list(self._queue)
                    self._queue.clear()
                    await asyncio.to_thread(self._write, self._layout, batch)
                if self._stopping and not self._queue:
                    break
            assert self._layout is not None
            return await asyncio.to_thread(self._seal, self._layout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failure = exc
            self._halted = True
            log.exception(
                "%s: failed, nothing is kept", self, extra={"appointment_id": self.session_id}
            )
            await asyncio.to_thread(self._abort_files)
            return None

    def _open(self, layout: tuple[Track, ...]) -> RecordingMuxer:
        if self._muxer is None:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._sink = SealedWriter(
                self._directory / self.file_name,
                keyring=self._keyring,
                recording_id=self.recording_id,
            )
            self._muxer = RecordingMuxer(self._sink, layout)
        return self._muxer

    def _write(self, layout: tuple[Track, ...], batch: list[_Frame]) -> None:
        """In the worker thread: mux a batch (a frame the muxer refuses is skipped)."""
        with self._files:
            muxer = self._open(layout)
            for item in batch:
                try:
                    muxer.write(item.track, item.data, pts=item.pts, keyframe=item.keyframe)
                except RecordingError as exc:
                    self.stats.dropped += 1
                    log.debug("%s: frame refused (%s)", self, exc)

    def _seal(self, layout: tuple[Track, ...]) -> SealedFile:
        """In the worker thread: finish the container, seal and publish the file."""
        with self._files:
            muxer = self._open(layout)
            muxer.close()
        assert self._sink is not None
        sealed = SealedFile(
            file_name=self.file_name,
            sealed_hash=self._sink.sealed_hash,
            key_id=self._sink.key_id,
        )
        log.info(
            "%s: sealed (%d video and %d audio frames, %d dropped)",
            self,
            self.stats.video_frames,
            self.stats.audio_frames,
            self.stats.dropped,
            extra={"appointment_id": self.session_id},
        )
        return sealed

    def _abort_files(self) -> None:
        with self._files:
            if self._muxer is not None:
                self._muxer.abort()
            elif self._sink is not None:
                self._sink.abort()


def _video_codec(fmt: CodecFormat) -> Literal["vp8", "h264"] | None:
    if fmt.mime_type == "video/vp8":
        return "vp8"
    if fmt.mime_type == "video/h264":
        return "h264"
    return None


class MediaRecorders:
    """The recordings this process writes, one :class:`SessionRecorder` per session,
    tapped into its :class:`MediaRooms` (the media plane's side of
    :class:`gateway.services.recordings.RecorderBackend`)."""

    def __init__(
        self,
        *,
        rooms: MediaRooms,
        keyring: RecordingKeyring,
        directory: str | os.PathLike[str],
        exclusive: bool = True,
        stop_timeout: float = 8.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rooms = rooms
        self._keyring = keyring
        self._directory = Path(directory)
        #: True when this process carries every session's media (one process); else a
        #: session's recording is written by the process its media is on.
        self._exclusive = exclusive
        self._stop_timeout = stop_timeout
        self._monotonic = monotonic
        self._open: dict[str, SessionRecorder] = {}

    @property
    def open_count(self) -> int:
        return len(self._open)

    def recorder(self, recording_id: str) -> SessionRecorder | None:
        return self._open.get(recording_id)

    def recording_ids(self) -> list[str]:
        return list(self._open)

    def has(self, recording_id: str) -> bool:
        return recording_id in self._open

    def failed(self, recording_id: str) -> bool:
        recorder = self._open.get(recording_id)
        return recorder is not None and recorder.failed

    def here(self, session_id: str) -> bool:
        """Whether the session's media is (or, on one process, will be) on this process."""
        return self._exclusive or self._rooms.forwarder(session_id) is not None

    def sessions(self) -> list[str]:
        """The sessions whose media is on this process now."""
        return self._rooms.session_ids()

    async def begin(
        self,
        *,
        recording_id: str,
        session_id: str,
        host_id: str,
        participants: Sequence[str],
    ) -> None:
        recorder = SessionRecorder(
            recording_id=recording_id,
            session_id=session_id,
            directory=self._directory,
            keyring=self._keyring,
            host_id=host_id,
            audio_participants=participants,
            monotonic=self._monotonic,
        )
        self._open[recording_id] = recorder
        recorder.start()
        self._rooms.add_tap(session_id, recorder.tap)

    def halt(self, recording_id: str) -> None:
        recorder = self._open.get(recording_id)
        if recorder is not None:
            self._rooms.remove_tap(recorder.session_id, recorder.tap)
            recorder.halt()

    async def end(self, recording_id: str) -> SealedFile | None:
        """Stop and seal; None if it is not recorded here or failed."""
        recorder = self._open.get(recording_id)
        if recorder is None:
            return None
        self.halt(recording_id)
        try:
            async with asyncio.timeout(self._stop_timeout):
                return await recorder.stop()
        except TimeoutError:
            log.error("%s: sealing took too long; the recording is dropped", recorder)
            await recorder.abort()
            return None
        finally:
            self._open.pop(recording_id, None)

    async def discard(self, recording_id: str) -> None:
        """Drop it: the temporary file is removed, nothing is published."""
        recorder = self._open.pop(recording_id, None)
        if recorder is not None:
            self._rooms.remove_tap(recorder.session_id, recorder.tap)
            await recorder.abort()

    async def close(self) -> None:
        """Stop every recording (their service finishes the records first, normally)."""
        for recording_id in list(self._open):
            await self.end(recording_id)
