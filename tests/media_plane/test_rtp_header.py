"""The in-place header writer against aiortc's own RtpPacket serialisation."""

from __future__ import annotations

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from aiortc.rtp import RtpPacket
from hypothesis import given
from hypothesis import strategies as st

from gateway.media.rtp_header import (
    ABS_SEND_TIME_URI,
    AUDIO_LEVEL_URI,
    MID_URI,
    OutgoingHeader,
)
from tests.media_plane.fakes import extension_map

_ids = st.one_of(st.just(0), st.integers(1, 14), st.integers(15, 255))


def _extensions(mid_id: int, abs_id: int, level_id: int) -> list[RTCRtpHeaderExtensionParameters]:
    wanted = [(mid_id, MID_URI), (abs_id, ABS_SEND_TIME_URI), (level_id, AUDIO_LEVEL_URI)]
    return [RTCRtpHeaderExtensionParameters(id=i, uri=uri) for i, uri in wanted if i]


@given(
    ids=st.lists(_ids, min_size=3, max_size=3, unique=True).filter(
        lambda ids: len({i for i in ids if i}) == len([i for i in ids if i])
    ),
    mid=st.one_of(st.none(), st.text(min_size=0, max_size=20)),
    seq=st.integers(0, 65535),
    ts=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    payload_type=st.integers(0, 127),
    marker=st.integers(0, 1),
    csrc=st.lists(st.integers(0, 2**32 - 1), max_size=15),
    abs_send_time=st.integers(0, 2**24 - 1),
    audio_level=st.one_of(st.none(), st.tuples(st.booleans(), st.integers(0, 127))),
    payload=st.binary(max_size=100),
)
def test_the_header_is_what_aiortc_serialises(
    ids: list[int],
    mid: str | None,
    seq: int,
    ts: int,
    ssrc: int,
    payload_type: int,
    marker: int,
    csrc: list[int],
    abs_send_time: int,
    audio_level: tuple[bool, int] | None,
    payload: bytes,
) -> None:
    params = _extensions(*ids)
    header = OutgoingHeader(ssrc=ssrc, mid=mid, header_extensions=params)
    ours = header.build(
        payload_type=payload_type,
        marker=marker,
        sequence_number=seq,
        timestamp=ts,
        csrc=csrc,
        abs_send_time=abs_send_time.to_bytes(3, "big"),
        audio_level=audio_level,
        payload=payload,
    )
    packet = RtpPacket(
        payload_type=payload_type,
        marker=marker,
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=payload,
    )
    packet.csrc = csrc
    packet.extensions.mid = mid
    packet.extensions.abs_send_time = abs_send_time
    packet.extensions.audio_level = audio_level
    assert ours == packet.serialize(extension_map(params))


@given(padding=st.integers(1, 255), payload=st.binary(max_size=40))
def test_padding_is_counted_and_parsed_away(padding: int, payload: bytes) -> None:
    header = OutgoingHeader(ssrc=7, mid="1", header_extensions=_extensions(4, 9, 10))
    data = header.build(
        payload_type=96,
        marker=1,
        sequence_number=1,
        timestamp=2,
        csrc=[],
        abs_send_time=b"\x00\x00\x01",
        audio_level=None,
        payload=payload,
        padding_size=padding,
    )
    parsed = RtpPacket.parse(data, extension_map(_extensions(4, 9, 10)))
    assert parsed.padding_size == padding
    assert parsed.payload == payload
    assert parsed.extensions.mid == "1"
    assert parsed.extensions.abs_send_time == 1
