"""The forwarder's parts on their own: rewriter, history and RTX, NACK numbers, keyframes."""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RTCP_RTPFB_NACK, RtcpRtpfbPacket, RtpPacket, wrap_rtx
from hypothesis import given
from hypothesis import strategies as st

from gateway.media.codecs import (
    CodecFormat,
    VideoCodec,
    codec_format,
    is_keyframe_start,
    video_preferences,
)
from gateway.media.nack import MAX_NACKED, MissingPackets, nacked_sequence_numbers
from gateway.media.rtp_history import PacketHistory, rtx_packet
from gateway.media.rtp_rewriter import SequenceRewriter, seq_newer
from tests.media_plane.fakes import VP8_CONTINUATION, VP8_DELTA_START, VP8_KEYFRAME_START, h264

VP8 = CodecFormat(mime_type="video/vp8", clock_rate=90000)
H264 = codec_format(h264()[0])
OPUS = CodecFormat(mime_type="audio/opus", clock_rate=48000)


# --- rewriter -----------------------------------------------------------------------------


def test_inside_an_epoch_gaps_and_reordering_pass_through() -> None:
    rewriter = SequenceRewriter(90000, first_seq=1000)
    outs = [rewriter.map("a", seq, 0, 0.0).sequence_number for seq in (10, 11, 14, 12)]
    assert outs == [1000, 1001, 1004, 1002]


@given(
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(1, 300),
)
def test_a_new_epoch_continues_where_the_last_stopped(
    seq_a: int, seq_b: int, ts_a: int, ts_b: int, count: int
) -> None:
    rewriter = SequenceRewriter(90000)
    last = None
    for n in range(count):
        last = rewriter.map("a", (seq_a + n) % 65536, (ts_a + 3000 * n) % 2**32, n / 30)
    assert last is not None
    first_b = rewriter.map("b", seq_b, ts_b, count / 30 + 0.1)
    assert first_b.new_epoch
    assert first_b.sequence_number == (last.sequence_number + 1) % 65536
    advance = (first_b.timestamp - last.timestamp) % 2**32
    assert 0 < advance < 2**31
    assert rewriter.translate_timestamp("b", ts_b) == first_b.timestamp
    assert rewriter.translate_timestamp("a", ts_a) is None


@given(st.integers(0, 65535), st.integers(1, 32767))
def test_seq_newer_wraps(base: int, step: int) -> None:
    assert seq_newer((base + step) % 65536, base)
    assert not seq_newer(base, (base + step) % 65536)


# --- history and RTX ------------------------------------------------------------------------


def test_history_is_a_bounded_ring() -> None:
    history = PacketHistory(4)
    for seq in range(10):
        history.put(seq, bytes([seq]))
    assert history.get(9) == b"\x09"
    assert history.get(5) is None
    assert history.take_for_resend(9, now=1.0, min_interval=0.1) == b"\x09"
    assert history.take_for_resend(9, now=1.05, min_interval=0.1) is None
    assert history.take_for_resend(9, now=1.2, min_interval=0.1) == b"\x09"
    with pytest.raises(ValueError, match="positive"):
        PacketHistory(0)


@given(
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=64),
    st.lists(st.integers(0, 2**32 - 1), max_size=3),
    st.booleans(),
    st.integers(0, 8),
)
def test_rtx_packet_matches_aiortc(
    seq: int, ts: int, payload: bytes, csrc: list[int], marker: bool, padding: int
) -> None:
    packet = RtpPacket(
        payload_type=120,
        marker=int(marker),
        sequence_number=seq,
        timestamp=ts,
        ssrc=7,
        payload=payload,
    )
    packet.csrc = csrc
    packet.extensions.mid = "2"
    packet.padding_size = padding
    from tests.media_plane.fakes import extension_map, extensions

    ext = extension_map(extensions())
    ours = RtpPacket.parse(
        rtx_packet(packet.serialize(ext), payload_type=121, sequence_number=5, ssrc=9), ext
    )
    packet.padding_size = 0
    theirs = wrap_rtx(packet, payload_type=121, sequence_number=5, ssrc=9)
    assert ours.serialize(ext) == theirs.serialize(ext)


# --- NACK numbers ---------------------------------------------------------------------------


def test_missing_packets_reports_new_gaps_only() -> None:
    missing = MissingPackets()
    assert not missing.add(65534)
    assert missing.add(1)  # 65535 and 0 lost, across the wrap
    assert missing.missing == [65535, 0]
    assert not missing.add(0)  # a late arrival is no new gap
    assert missing.missing == [65535]
    assert not missing.add(2)
    # A huge jump is a restart, not 10 000 losses.
    assert not missing.add(10_002)
    assert missing.missing == []


def test_missing_packets_forget_what_is_too_old() -> None:
    missing = MissingPackets(horizon=10)
    for seq in (0, 3, 9, 13):
        missing.add(seq)
    assert missing.missing == [4, 5, 6, 7, 8, 10, 11, 12]


def test_nacked_numbers_wrap_and_are_bounded() -> None:
    packet = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=2)
    packet.lost = [65535, 65536, 65537, 1]
    assert nacked_sequence_numbers(packet) == [65535, 0, 1]
    packet.lost = list(range(1000))
    assert len(nacked_sequence_numbers(packet)) == MAX_NACKED


# --- keyframes and formats --------------------------------------------------------------------


def test_vp8_keyframe_start() -> None:
    assert is_keyframe_start(VP8, VP8_KEYFRAME_START)
    assert not is_keyframe_start(VP8, VP8_DELTA_START)
    assert not is_keyframe_start(VP8, VP8_CONTINUATION)
    # No extension byte at all: descriptor 0x10 then a keyframe header.
    assert is_keyframe_start(VP8, bytes([0x10, 0x50]))
    assert not is_keyframe_start(VP8, b"")
    assert not is_keyframe_start(VP8, bytes([0x90]))


def test_h264_keyframe_start() -> None:
    assert H264 is not None
    idr = bytes([0x65, 0x88])
    sps = bytes([0x67, 0x42])
    pps = bytes([0x68, 0xCE])
    stap = bytes([0x78]) + struct.pack("!H", 2) + sps + struct.pack("!H", 2) + pps
    assert is_keyframe_start(H264, idr)
    assert is_keyframe_start(H264, stap)
    assert is_keyframe_start(H264, bytes([0x7C, 0x85, 0x00]))  # FU-A, start, IDR
    assert not is_keyframe_start(H264, bytes([0x7C, 0x05, 0x00]))  # FU-A, not the start
    assert not is_keyframe_start(H264, bytes([0x41, 0x9A]))  # a P slice
    assert not is_keyframe_start(H264, bytes([0x78, 0x00, 0x09]))  # truncated STAP-A


@given(st.binary(max_size=40))
def test_keyframe_detection_never_raises(payload: bytes) -> None:
    assert H264 is not None
    for fmt in (VP8, H264, OPUS):
        assert isinstance(is_keyframe_start(fmt, payload), bool)


def test_codec_formats() -> None:
    baseline = RTCRtpCodecParameters(
        mimeType="video/H264",
        clockRate=90000,
        payloadType=100,
        parameters={"packetization-mode": "1", "profile-level-id": "42001f"},
    )
    assert codec_format(baseline) != H264
    rtx = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=101)
    assert codec_format(rtx) is None
    broken = RTCRtpCodecParameters(
        mimeType="video/H264",
        clockRate=90000,
        payloadType=102,
        parameters={"profile-level-id": "zz"},
    )
    assert codec_format(broken) is None


def test_video_preferences_keep_only_constrained_baseline_h264() -> None:
    names = [
        (c.mimeType, c.parameters.get("profile-level-id"))
        for c in video_preferences([VideoCodec.H264, VideoCodec.VP8])
    ]
    assert names == [("video/H264", "42e01f"), ("video/VP8", None), ("video/rtx", None)]


def test_abs_send_time_matches_aiortcs_ntp_clock() -> None:
    from aiortc import clock

    from gateway.media.forwarder import _abs_send_time

    theirs = (clock.current_ntp_time() >> 14) & 0xFFFFFF
    ours = _abs_send_time()
    # Within a few milliseconds (2^18 ticks per second), modulo the 64 s wrap.
    assert min((ours - theirs) % (1 << 24), (theirs - ours) % (1 << 24)) < 2600
