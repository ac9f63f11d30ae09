"""The session recorder on real encoded media: packets in through the tap, a sealed file
out that holds no plaintext and decodes after export, with tracks placed in time."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import pytest
from aiortc.rtp import RtpPacket

from gateway.domain.ids import new_id
from gateway.media.codecs import CodecFormat
from gateway.media.recorder import SessionRecorder, TrackClock, place_stream
from gateway.media.sealed import RecordingKeyring, export_plaintext, verify_sealed
from gateway.media.tracks import MediaKind, PublishedTrack
from tests.media.rtp_frames import Encoded, encode_opus, encode_video, packetize
from tests.media_plane.fakes import h264, opus, published, vp8

EBML_MAGIC = b"\x1a\x45\xdf\xa3"
HOST, CLIENT = "ptc_host", "ptc_client"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def vp8_frames() -> list[Encoded]:
    return encode_video("libvpx", width=160, height=120, count=30, keyframe_every=15)


@pytest.fixture(scope="module")
def h264_frames() -> list[Encoded]:
    return encode_video("libx264", width=160, height=120, count=30, keyframe_every=15)


@pytest.fixture(scope="module")
def opus_frames() -> list[Encoded]:
    return encode_opus(50)


def fmt_of(track: PublishedTrack) -> CodecFormat:
    return next(iter(track.formats.values()))


def timed(
    packets: list[RtpPacket], *, clock_rate: int, start: float, first_ts: int
) -> Iterator[tuple[float, RtpPacket]]:
    """Each packet with the time it arrives: its media time, from ``start``."""
    for packet in packets:
        yield start + ((packet.timestamp - first_ts) % (1 << 32)) / clock_rate, packet


def feed(
    recorder: SessionRecorder,
    clock: FakeClock,
    streams: list[tuple[PublishedTrack, list[tuple[float, RtpPacket]]]],
) -> list[bool]:
    """Every packet of every stream through the tap, in arrival order; the answers."""
    merged = sorted(
        (
            (at, index, track, packet)
            for index, (track, timed_packets) in enumerate(streams)
            for at, packet in timed_packets
        ),
        key=lambda item: (item[0], item[1]),
    )
    answers = []
    for at, _index, track, packet in merged:
        clock.now = at
        answers.append(recorder.tap(track, fmt_of(track), packet))
    return answers


def recorder_in(
    directory: Path, keyring: RecordingKeyring, clock: FakeClock, **options: object
) -> SessionRecorder:
    return SessionRecorder(
        recording_id=new_id("rec"),
        session_id=new_id("apt"),
        directory=directory,
        keyring=keyring,
        host_id=HOST,
        audio_participants=[HOST, CLIENT],
        monotonic=clock,
        **options,  # type: ignore[arg-type]
    )


def decode(path: Path) -> dict[str, list[float]]:
    """Decoded frame times (seconds) per stream, keyed like 'video:vp8' or 'audio1:opus'."""
    times: dict[str, list[float]] = {}
    with av.open(str(path)) as container:
        names = {}
        audio = 0
        for stream in container.streams:
            if stream.type == "video":
                names[stream.index] = f"video:{stream.codec_context.name}"
            else:
                names[stream.index] = f"audio{audio}:{stream.codec_context.name}"
                audio += 1
            times[names[stream.index]] = []
        for packet in container.demux():
            if packet.size == 0:
                continue
            for frame in packet.decode():
                assert frame.time is not None
                times[names[packet.stream.index]].append(float(frame.time))
    return times


async def test_vp8_and_opus_become_a_sealed_webm_that_decodes_after_export(
    tmp_path: Path,
    keyring: RecordingKeyring,
    vp8_frames: list[Encoded],
    opus_frames: list[Encoded],
) -> None:
    clock = FakeClock()
    directory = tmp_path / "recordings"
    recorder = recorder_in(directory, keyring, clock)
    recorder.start()
    client_video, _ = published(CLIENT, codecs=vp8())
    host_video, _ = published(HOST, codecs=vp8(), name="2")
    client_audio, _ = published(CLIENT, kind=MediaKind.AUDIO, codecs=opus(), name="3")
    host_audio, _ = published(HOST, kind=MediaKind.AUDIO, codecs=opus(), name="4")
    start = clock.now
    answers = feed(
        recorder,
        clock,
        [
            # The client's video starts 0.5 s into the recording, its audio at once.
            (
                client_video,
                list(
                    timed(
                        list(packetize(vp8_frames, "vp8")),
                        clock_rate=90000,
                        start=start + 0.5,
                        first_ts=0,
                    )
                ),
            ),
            (
                host_video,
                list(
                    timed(
                        list(packetize(vp8_frames, "vp8", ssrc=77)),
                        clock_rate=90000,
                        start=start,
                        first_ts=0,
                    )
                ),
            ),
            (
                client_audio,
                list(
                    timed(
                        list(packetize(opus_frames, "opus", ssrc=5)),
                        clock_rate=48000,
                        start=start,
                        first_ts=0,
                    )
                ),
            ),
            (
                host_audio,
                list(
                    timed(
                        list(packetize(opus_frames, "opus", ssrc=6)),
                        clock_rate=48000,
                        start=start + 0.2,
                        first_ts=0,
                    )
                ),
            ),
        ],
    )
    sealed = await recorder.stop()
    assert sealed is not None
    assert await recorder.stop() == sealed  # twice: the same file
    assert not any(answers[-5:])  # no keyframe asked once video flows

    path = directory / sealed.file_name
    assert sealed.file_name == f"{recorder.recording_id}.sealed"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(os.listdir(directory)) == [sealed.file_name]  # no temporary file left
    content = path.read_bytes()
    assert EBML_MAGIC not in content
    assert vp8_frames[0].data[20:52] not in content
    report = verify_sealed(path, keyring=keyring)
    assert report.sealed_hash == sealed.sealed_hash
    assert report.key_id == sealed.key_id == keyring.sealing_key.key_id

    plain = tmp_path / "out.webm"
    export_plaintext(path, plain, keyring=keyring)
    assert plain.read_bytes().startswith(EBML_MAGIC)
    times = decode(plain)
    assert set(times) == {"video:vp8", "audio0:opus", "audio1:opus"}
    # The host's video until the client's comes (0.5 s in), then only the client's.
    video = times["video:vp8"]
    assert len(video) == 15 + len(vp8_frames)
    assert recorder.stats.video_switches == 2
    assert len(times["audio0:opus"]) == len(opus_frames)
    assert len(times["audio1:opus"]) == len(opus_frames)
    # Each stream placed where it arrived: host audio 0.2 s in, the client's video 0.5 s.
    assert video[0] == pytest.approx(0.0, abs=0.002)
    assert video[15] == pytest.approx(0.5, abs=0.002)
    assert video[-1] == pytest.approx(0.5 + 29 / 30, abs=0.002)
    # (Opus decoders skip the encoder's first 6.5 ms.)
    assert times["audio0:opus"][0] == pytest.approx(0.2, abs=0.01)
    assert times["audio1:opus"][0] == pytest.approx(0.0, abs=0.01)


async def test_h264_makes_matroska(
    tmp_path: Path,
    keyring: RecordingKeyring,
    h264_frames: list[Encoded],
    opus_frames: list[Encoded],
) -> None:
    clock = FakeClock()
    recorder = recorder_in(tmp_path, keyring, clock)
    recorder.start()
    video, _ = published(CLIENT, codecs=h264())
    audio, _ = published(CLIENT, kind=MediaKind.AUDIO, codecs=opus(), name="2")
    packets = list(packetize(h264_frames, "h264"))
    # Joining a running stream: a frame boundary comes before the first keyframe.
    primer = RtpPacket(
        payload_type=102,
        marker=1,
        sequence_number=packets[0].sequence_number - 1,
        timestamp=packets[0].timestamp - 3000,
        ssrc=packets[0].ssrc,
        payload=b"\x09\xf0",
    )
    feed(
        recorder,
        clock,
        [
            (
                video,
                list(
                    timed(
                        [primer, *packets],
                        clock_rate=90000,
                        start=clock.now,
                        first_ts=primer.timestamp,
                    )
                ),
            ),
            (
                audio,
                list(
                    timed(
                        list(packetize(opus_frames, "opus")),
                        clock_rate=48000,
                        start=clock.now,
                        first_ts=0,
                    )
                ),
            ),
        ],
    )
    sealed = await recorder.stop()
    assert sealed is not None
    plain = tmp_path / "out.mkv"
    export_plaintext(tmp_path / sealed.file_name, plain, keyring=keyring)
    with av.open(str(plain)) as container:
        assert "matroska" in container.format.name
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 160, 120)
    times = decode(plain)
    assert len(times["video:h264"]) == len(h264_frames)
    assert len(times["audio0:opus"]) == 0  # the host sent nothing
    assert len(times["audio1:opus"]) == len(opus_frames)


async def test_a_keyframe_is_asked_for_until_one_arrives(
    tmp_path: Path, keyring: RecordingKeyring, vp8_frames: list[Encoded]
) -> None:
    clock = FakeClock()
    recorder = recorder_in(tmp_path, keyring, clock)
    recorder.start()
    video, _ = published(CLIENT, codecs=vp8())
    packets = list(packetize(vp8_frames, "vp8"))
    keyframe_at = next(i for i, p in enumerate(packets) if p.timestamp == vp8_frames[15].timestamp)
    answers = feed(
        recorder,
        clock,
        [
            (
                video,
                list(
                    timed(
                        packets[keyframe_at - 20 :],
                        clock_rate=90000,
                        start=clock.now,
                        first_ts=packets[keyframe_at - 20].timestamp,
                    )
                ),
            )
        ],
    )
    keyframe_packets = sum(1 for p in packets if p.timestamp == vp8_frames[15].timestamp)
    assert keyframe_packets > 1
    # Until the keyframe is complete, one is wanted; from then on, none.
    complete = 20 + keyframe_packets - 1
    assert all(answers[:complete])
    assert not any(answers[complete:])
    sealed = await recorder.stop()
    assert sealed is not None
    plain = tmp_path / "out.webm"
    export_plaintext(tmp_path / sealed.file_name, plain, keyring=keyring)
    assert len(decode(plain)["video:vp8"]) == len(vp8_frames) - 15


async def test_audio_only_when_no_video_comes(
    tmp_path: Path, keyring: RecordingKeyring, opus_frames: list[Encoded]
) -> None:
    clock = FakeClock()
    recorder = recorder_in(tmp_path, keyring, clock, video_wait=0.5)
    recorder.start()
    audio, _ = published(HOST, kind=MediaKind.AUDIO, codecs=opus())
    feed(
        recorder,
        clock,
        [
            (
                audio,
                list(
                    timed(
                        list(packetize(opus_frames, "opus")),
                        clock_rate=48000,
                        start=clock.now,
                        first_ts=0,
                    )
                ),
            )
        ],
    )
    sealed = await recorder.stop()
    assert sealed is not None
    plain = tmp_path / "out.webm"
    export_plaintext(tmp_path / sealed.file_name, plain, keyring=keyring)
    times = decode(plain)
    assert set(times) == {"audio0:opus", "audio1:opus"}
    assert len(times["audio0:opus"]) == len(opus_frames)  # the held frames too


async def test_a_recording_stopped_before_any_media_is_sealed_empty(
    tmp_path: Path, keyring: RecordingKeyring
) -> None:
    recorder = recorder_in(tmp_path, keyring, FakeClock())
    sealed = await recorder.stop()
    assert sealed is not None
    plain = tmp_path / "out.webm"
    report = export_plaintext(tmp_path / sealed.file_name, plain, keyring=keyring)
    assert report.plaintext_size == 0  # FFmpeg writes a container's header with its first frame
    assert report.sealed_hash == sealed.sealed_hash


async def test_video_of_someone_who_joined_after_the_start_is_not_taken(
    tmp_path: Path, keyring: RecordingKeyring, vp8_frames: list[Encoded]
) -> None:
    clock = FakeClock()
    recorder = recorder_in(tmp_path, keyring, clock, video_wait=0.0)
    recorder.start()
    newcomer, _ = published("ptc_newcomer", kind=MediaKind.VIDEO, codecs=vp8())
    host_video, _ = published(HOST, kind=MediaKind.VIDEO, codecs=vp8())
    packets = list(packetize(vp8_frames, "vp8"))
    for packet in packets:
        recorder.tap(newcomer, fmt_of(newcomer), packet)
    assert recorder.stats.video_frames == 0
    for packet in packets:
        recorder.tap(host_video, fmt_of(host_video), packet)
    assert recorder.stats.video_frames > 0
    await recorder.stop()


async def test_nothing_is_taken_after_halt(
    tmp_path: Path, keyring: RecordingKeyring, opus_frames: list[Encoded]
) -> None:
    clock = FakeClock()
    recorder = recorder_in(tmp_path, keyring, clock, video_wait=0.0)
    recorder.start()
    audio, _ = published(HOST, kind=MediaKind.AUDIO, codecs=opus())
    packets = list(packetize(opus_frames, "opus"))
    for packet in packets[:10]:
        recorder.tap(audio, fmt_of(audio), packet)
    recorder.halt()
    for packet in packets[10:]:
        assert recorder.tap(audio, fmt_of(audio), packet) is False
    sealed = await recorder.stop()
    assert sealed is not None
    assert recorder.stats.audio_frames == 10


async def test_a_failing_disk_leaves_nothing_and_says_so(
    tmp_path: Path, keyring: RecordingKeyring, opus_frames: list[Encoded]
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    clock = FakeClock()
    recorder = recorder_in(blocker / "recordings", keyring, clock, video_wait=0.0)
    recorder.start()
    audio, _ = published(HOST, kind=MediaKind.AUDIO, codecs=opus())
    for packet in packetize(opus_frames, "opus"):
        recorder.tap(audio, fmt_of(audio), packet)
    assert await recorder.stop() is None
    assert recorder.failed
    assert os.listdir(tmp_path) == ["not-a-folder"]


async def test_abort_publishes_nothing(
    tmp_path: Path, keyring: RecordingKeyring, opus_frames: list[Encoded]
) -> None:
    clock = FakeClock()
    recorder = recorder_in(tmp_path, keyring, clock, video_wait=0.0)
    recorder.start()
    audio, _ = published(HOST, kind=MediaKind.AUDIO, codecs=opus())
    for packet in packetize(opus_frames, "opus"):
        recorder.tap(audio, fmt_of(audio), packet)
    await recorder.abort()
    assert os.listdir(tmp_path) == []


# --- time ----------------------------------------------------------------------------------------


def test_track_clock_places_streams_and_never_goes_back() -> None:
    clock = TrackClock(clock_rate=90000, start=10.0)
    assert clock.pts("a", 123) is None
    clock.begin("a", timestamp=(1 << 32) - 1500, at=10.5)  # wraps right after
    assert clock.pts("a", (1 << 32) - 1500) == 45000
    assert clock.pts("a", 1500) == 48000
    # A second stream placed earlier than where the track is cannot go back.
    clock.begin("b", timestamp=7, at=10.1)
    assert clock.pts("b", 7) == 48001
    assert clock.pts("b", 7 + 90000) == 9000 + 90000


def test_track_clock_never_gives_negative_pts() -> None:
    clock = TrackClock(clock_rate=48000, start=10.0)
    clock.begin("a", timestamp=0, at=9.9)
    assert clock.pts("a", 0) == 0
    assert clock.pts("a", 9600) == 4800


def test_track_clock_runs_on_past_half_the_timestamp_range() -> None:
    # 2**31 ticks of 90 kHz video are 6.6 hours: a session that long keeps counting up.
    clock = TrackClock(clock_rate=90000, start=0.0)
    clock.begin("a", timestamp=5, at=0.0)
    step = 1 << 29
    pts = [clock.pts("a", (5 + i * step) % (1 << 32)) for i in range(20)]
    assert pts == [i * step for i in range(20)]


def test_streams_of_one_sender_line_up_on_its_ntp_clock() -> None:
    offsets: dict[str, float] = {}
    ntp = int(3_900_000_000.0 * (1 << 32))  # sender clock, in NTP seconds
    # Audio (48 kHz): RTP 48000 was captured at NTP 3_900_000_000.0; it arrives at 20.3.
    audio_at = place_stream(
        offsets,
        CLIENT,
        arrival=20.3,
        timestamp=48000,
        clock_rate=48000,
        sender_report=(ntp, 48000),
    )
    assert audio_at == pytest.approx(20.3)
    # Video captured 0.1 s after that audio, arriving 0.25 s later (a slow encoder).
    video_at = place_stream(
        offsets,
        CLIENT,
        arrival=20.65,
        timestamp=90000 + 9000,
        clock_rate=90000,
        sender_report=(ntp, 90000),
    )
    assert video_at == pytest.approx(20.4)
    # Without a sender report: by arrival.
    assert (
        place_stream(offsets, HOST, arrival=21.0, timestamp=5, clock_rate=90000, sender_report=None)
        == 21.0
    )


def test_opus_time_base_is_the_rtp_clock() -> None:
    assert Fraction(1, 48000) == Fraction(
        1, fmt_of(published(CLIENT, kind=MediaKind.AUDIO, codecs=opus())[0]).clock_rate
    )


async def test_a_keyframe_it_cannot_record_fails_the_recording_and_keeps_nothing(
    tmp_path: Path, keyring: RecordingKeyring, vp8_frames: list[Encoded]
) -> None:
    # A publisher chooses what its keyframe claims: 16000 pixels wide is more than the
    # container takes. The recording fails (the service then stops it as failed, and the
    # host hears of it); the tap neither raises into the forwarder nor goes on silently.
    first = vp8_frames[0]
    assert first.keyframe
    assert first.data[3:6] == b"\x9d\x01\x2a"  # VP8's start code; the width follows
    wide = first.data[:6] + (16000).to_bytes(2, "little") + first.data[8:]
    frames = [Encoded(wide, first.timestamp, True), *vp8_frames[1:]]
    clock = FakeClock()
    recorder = recorder_in(tmp_path, keyring, clock, video_wait=5.0)
    recorder.start()
    video, _ = published(HOST, kind=MediaKind.VIDEO, codecs=vp8())
    packets = list(packetize(frames, "vp8"))
    arriving = list(timed(packets, clock_rate=90000, start=clock.now, first_ts=first.timestamp))
    answers = feed(recorder, clock, [(video, arriving)])
    assert recorder.failed
    assert answers[-1] is False  # halted: no more keyframes asked for
    assert await recorder.stop() is None
    assert [files for _, _, files in os.walk(tmp_path) if files] == []
