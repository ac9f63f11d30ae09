"""RTP back to frames: real VP8, H.264 and Opus frames, packetized by aiortc's own
packetizers, come out of the assembler byte for byte, whatever the order and the losses."""

from __future__ import annotations

import random

import pytest
from aiortc.rtp import RtpPacket

from gateway.media.codecs import CodecFormat
from gateway.media.depacketize import (
    EncodedFrame,
    FrameAssembler,
    H264Payload,
    OpusPayload,
    Vp8Payload,
    assembler_for,
    h264_picture_size,
)
from tests.media.rtp_frames import (
    Encoded,
    encode_opus,
    encode_video,
    h264_payloads,
    nal_units,
    packetize,
)

VP8 = CodecFormat(mime_type="video/vp8", clock_rate=90000)
H264 = CodecFormat(
    mime_type="video/h264", clock_rate=90000, packetization_mode=1, profile="constrained_baseline"
)
OPUS = CodecFormat(mime_type="audio/opus", clock_rate=48000)


@pytest.fixture(scope="module")
def vp8_frames() -> list[Encoded]:
    frames = encode_video("libvpx", width=320, height=240, count=20, keyframe_every=10)
    assert [f.keyframe for f in frames].count(True) == 2
    return frames


@pytest.fixture(scope="module")
def h264_frames() -> list[Encoded]:
    frames = encode_video("libx264", width=320, height=240, count=20, keyframe_every=10)
    assert frames[0].keyframe
    return frames


@pytest.fixture(scope="module")
def opus_frames() -> list[Encoded]:
    return encode_opus(25)


def run(assembler: FrameAssembler, packets: list[RtpPacket]) -> list[EncodedFrame]:
    out: list[EncodedFrame] = []
    for packet in packets:
        out.extend(assembler.push(packet))
    return out


def new(fmt: CodecFormat) -> FrameAssembler:
    assembler = assembler_for(fmt)
    assert assembler is not None
    return assembler


# --- VP8 ----------------------------------------------------------------------------------------


def test_vp8_frames_come_back_whole_with_keyframes_and_size(vp8_frames: list[Encoded]) -> None:
    packets = list(packetize(vp8_frames, "vp8"))
    assert len(packets) > len(vp8_frames)  # the keyframes span several packets
    frames = run(new(VP8), packets)
    assert [f.data for f in frames] == [f.data for f in vp8_frames]
    assert [f.timestamp for f in frames] == [f.timestamp for f in vp8_frames]
    assert [f.keyframe for f in frames] == [f.keyframe for f in vp8_frames]
    assert (frames[0].width, frames[0].height) == (320, 240)
    assert frames[1].width is None


def test_vp8_reordered_and_duplicated_packets_change_nothing(vp8_frames: list[Encoded]) -> None:
    packets = list(packetize(vp8_frames, "vp8", first_seq=65530))  # wraps around
    shuffled: list[RtpPacket] = []
    rng = random.Random(7)
    for start in range(0, len(packets), 4):  # reordered within small windows
        window = packets[start : start + 4]
        rng.shuffle(window)
        shuffled.extend(window)
    shuffled.insert(10, packets[3])  # a duplicate, late
    # The very first packet must come first: the assembler starts on a certain start.
    shuffled.remove(packets[0])
    frames = run(new(VP8), [packets[0], *shuffled])
    assert [f.data for f in frames] == [f.data for f in vp8_frames]


def test_vp8_a_lost_packet_drops_frames_until_the_next_keyframe(
    vp8_frames: list[Encoded],
) -> None:
    packets = list(packetize(vp8_frames, "vp8"))
    lost_frame = 3
    lost = next(p for p in packets if p.timestamp == vp8_frames[lost_frame].timestamp)
    assembler = new(VP8)
    frames = run(assembler, [p for p in packets if p is not lost])
    kept = [f.timestamp for f in frames]
    # Frames 0-2, then nothing until the keyframe at 10, then everything.
    assert kept == [f.timestamp for f in vp8_frames[:lost_frame] + vp8_frames[10:]]
    assert assembler.lost == 1
    assert assembler.skipped == 10 - lost_frame - 1


def test_vp8_starting_mid_stream_waits_for_a_keyframe(vp8_frames: list[Encoded]) -> None:
    packets = list(packetize(vp8_frames, "vp8"))
    start = next(i for i, p in enumerate(packets) if p.timestamp == vp8_frames[4].timestamp)
    assembler = new(VP8)
    assert assembler.waiting_keyframe
    frames = run(assembler, packets[start + 1 :])  # not even at a frame's start
    assert frames[0].keyframe
    assert [f.data for f in frames] == [f.data for f in vp8_frames[10:]]
    assert not assembler.waiting_keyframe


def test_vp8_malformed_payloads_are_dropped_not_raised() -> None:
    assembler = FrameAssembler(Vp8Payload(), clock_rate=90000, max_delay=0.5)
    junk = [
        RtpPacket(payload_type=96, marker=1, sequence_number=i, timestamp=i * 3000, payload=p)
        for i, p in enumerate([b"\x10", b"\x90\x80", b"\x10\x00\x00\x00", b"\x10\x00"])
    ]
    assert run(assembler, junk) == []


# --- H.264 --------------------------------------------------------------------------------------


def test_h264_access_units_come_back_with_the_same_nal_units(h264_frames: list[Encoded]) -> None:
    packets = list(packetize(h264_frames, "h264"))
    kinds = {p.payload[0] & 0x1F for p in packets}
    assert 28 in kinds  # FU-A: the keyframes are split
    assert 24 in kinds  # STAP-A: SPS and PPS travel together
    # A marker before the first frame, as on a stream already running.
    primer = RtpPacket(
        payload_type=96,
        marker=1,
        sequence_number=(packets[0].sequence_number - 1) % 65536,
        timestamp=packets[0].timestamp - 3000,
        payload=b"\x09\xf0",
    )
    frames = run(new(H264), [primer, *packets])
    assert [nal_units(f.data) for f in frames] == [nal_units(f.data) for f in h264_frames]
    assert all(f.data.startswith(b"\x00\x00\x00\x01") for f in frames)
    assert [f.keyframe for f in frames] == [f.keyframe for f in h264_frames]
    assert (frames[0].width, frames[0].height) == (320, 240)


def test_h264_idr_without_parameter_sets_gets_the_last_ones(h264_frames: list[Encoded]) -> None:
    first, later = h264_frames[0], h264_frames[10]
    assert later.keyframe
    stripped = b"".join(
        b"\x00\x00\x00\x01" + unit for unit in nal_units(later.data) if unit[0] & 0x1F not in (7, 8)
    )
    fmt = H264Payload()
    first_content = fmt.assemble(h264_payloads(first))
    assert first_content is not None
    assert first_content.keyframe
    content = fmt.assemble(h264_payloads(Encoded(stripped, later.timestamp, True)))
    assert content is not None
    assert content.keyframe
    assert [u[0] & 0x1F for u in nal_units(content.data)][:2] == [7, 8]
    # A fresh stream that never saw an SPS cannot start there.
    fresh = H264Payload().assemble(h264_payloads(Encoded(stripped, later.timestamp, True)))
    assert fresh is not None
    assert not fresh.keyframe


def test_h264_starts_only_after_a_frame_boundary(h264_frames: list[Encoded]) -> None:
    packets = list(packetize(h264_frames, "h264"))
    # Joining mid-stream, the first packets cannot be placed; the keyframe at 10 can.
    start = next(i for i, p in enumerate(packets) if p.timestamp == h264_frames[3].timestamp)
    frames = run(new(H264), packets[start:])
    assert frames[0].keyframe
    assert [f.timestamp for f in frames] == [f.timestamp for f in h264_frames[10:]]


def test_h264_a_lost_fragment_drops_the_frame(h264_frames: list[Encoded]) -> None:
    packets = list(packetize(h264_frames, "h264"))
    fragments = [p for p in packets if p.timestamp == h264_frames[10].timestamp]
    assert len(fragments) > 2
    lost = fragments[1]
    primer = RtpPacket(
        payload_type=96,
        marker=1,
        sequence_number=(packets[0].sequence_number - 1) % 65536,
        timestamp=1,
        payload=b"\x09\xf0",
    )
    # Waits 0.1 s of media for a retransmission, then gives the frame up.
    assembler = FrameAssembler(H264Payload(), clock_rate=90000, max_delay=0.1)
    frames = run(assembler, [primer, *[p for p in packets if p is not lost]])
    assert [f.timestamp for f in frames] == [f.timestamp for f in h264_frames[:10]]
    assert assembler.lost == 1
    assert assembler.waiting_keyframe


@pytest.mark.parametrize(
    ("width", "height"), [(320, 240), (100, 60), (1280, 720), (642, 362), (16, 16)]
)
def test_h264_picture_size_from_the_sps(width: int, height: int) -> None:
    frames = encode_video("libx264", width=width, height=height, count=1)
    sps = next(u for u in nal_units(frames[0].data) if u[0] & 0x1F == 7)
    assert h264_picture_size(sps) == (width, height)


def test_h264_picture_size_of_nonsense_is_none() -> None:
    assert h264_picture_size(b"\x67") is None
    assert h264_picture_size(b"\x67\x42\x00\x1f\x00\x00\x00") is None


def test_h264_malformed_aggregates_are_dropped() -> None:
    fmt = H264Payload()
    assert fmt.assemble([b"\x18\x00\x09\x65"]) is None  # STAP-A size past the end
    assert fmt.assemble([b"\x7c\x05\x00"]) is None  # FU-A continuation without start
    assert fmt.assemble([b"\x7c\x85\x00"]) is None  # FU-A start never ended
    assert fmt.assemble([b"\x19\x00"]) is None  # STAP-B: not packetization mode 1


# --- Opus ---------------------------------------------------------------------------------------


def test_opus_each_packet_is_a_frame_and_a_gap_is_skipped(opus_frames: list[Encoded]) -> None:
    packets = list(packetize(opus_frames, "opus"))
    assembler = new(OPUS)
    lost = packets[5]
    frames = run(assembler, [p for p in packets if p is not lost])
    expected = [f for i, f in enumerate(opus_frames) if i != 5]
    assert [f.data for f in frames] == [f.data for f in expected]
    assert all(f.keyframe for f in frames)
    assert assembler.lost == 1


def test_opus_late_packets_within_the_wait_are_put_back_in_order(
    opus_frames: list[Encoded],
) -> None:
    packets = list(packetize(opus_frames, "opus"))
    swapped = packets[:]
    swapped[3], swapped[4] = swapped[4], swapped[3]
    frames = run(FrameAssembler(OpusPayload(), clock_rate=48000, max_delay=0.1), swapped)
    assert [f.data for f in frames] == [f.data for f in opus_frames]


def test_flush_gives_what_is_complete() -> None:
    assembler = new(OPUS)
    packet = RtpPacket(payload_type=111, sequence_number=1, timestamp=960, payload=b"\xfc\x01")
    gap = RtpPacket(payload_type=111, sequence_number=3, timestamp=2880, payload=b"\xfc\x02")
    assert [f.data for f in assembler.push(packet)] == [b"\xfc\x01"]
    assert assembler.push(gap) == []  # waits for packet 2
    assert assembler.flush() == []


def test_only_recordable_formats_get_an_assembler() -> None:
    assert assembler_for(CodecFormat(mime_type="audio/pcmu", clock_rate=8000)) is None
    assert (
        assembler_for(CodecFormat(mime_type="video/h264", clock_rate=90000, packetization_mode=0))
        is None
    )
