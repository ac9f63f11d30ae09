"""RTP packets back into the encoded frames they carry: VP8, H.264 and Opus.

The recorder works on the packets the forwarder already handles; this module undoes
the payload formats without decoding anything:

* VP8 (RFC 7741): strip each packet's payload descriptor and join the rest. A frame
  starts with S=1 and partition 0; its first payload byte says whether it is a keyframe,
  and a keyframe's header gives the picture size.
* H.264 (RFC 6184, packetization mode 1): single NAL unit packets, STAP-A aggregates and
  FU-A fragments become one Annex B access unit (each NAL unit after a 4-byte start
  code). An IDR picture is a keyframe only with SPS and PPS: those last seen on the
  stream are put in front of an IDR that arrives without them, so every keyframe can
  start a decoder (and the muxer takes its CodecPrivate from the first one).
* Opus (RFC 7587): one packet is one frame.

:class:`FrameAssembler` puts packets in sequence-number order (retransmissions arrive
late) and groups them by timestamp: a frame is complete when every packet from its first
to the one with the marker bit (or to the last before the timestamp changes) is there.
A frame with a packet still missing is waited for while newer packets span less than
``max_delay`` seconds of media, then dropped; after a dropped video frame, or a corrupt
one, nothing is emitted until the next keyframe, because the frames in between refer to
what was lost. The assembler starts on the first frame whose beginning it can be sure
of, so a recording never begins in the middle of a frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from aiortc.rtp import RtpPacket

from gateway.media.codecs import CodecFormat

__all__ = [
    "EncodedFrame",
    "FrameAssembler",
    "FrameContent",
    "H264Payload",
    "OpusPayload",
    "PayloadFormat",
    "Vp8Payload",
    "assembler_for",
    "h264_picture_size",
]

log = logging.getLogger(__name__)

_SEQ_MOD: Final = 1 << 16
_TS_MOD: Final = 1 << 32
START_CODE: Final = b"\x00\x00\x00\x01"


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One encoded frame, as a decoder (or a muxer) takes it."""

    data: bytes
    #: The RTP timestamp of its packets.
    timestamp: int
    #: A decoder can start here (VP8 keyframe; H.264 IDR with SPS and PPS; all audio).
    keyframe: bool
    #: The picture size a keyframe announces; None when unknown (and for audio).
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class FrameContent:
    """What a payload format makes of one frame's packets."""

    data: bytes
    keyframe: bool
    #: (width, height) when the frame announces its picture size.
    size: tuple[int, int] | None = None


class PayloadFormat(Protocol):
    """What one codec's RTP payload format needs from the assembler."""

    #: Video waits for a keyframe at the start and after a loss; audio never does.
    is_video: bool
    #: Every packet is one whole frame (audio): no marker bit or timestamp change needed.
    whole_frames: bool

    def starts_frame(self, payload: bytes) -> bool | None:
        """True if the packet certainly begins a frame, False if it certainly does not,
        None when the payload cannot tell (H.264: the packet before decides)."""

    def assemble(self, payloads: Sequence[bytes]) -> FrameContent | None:
        """The frame of these packet payloads, in order; None if they are malformed."""


# --- VP8 --------------------------------------------------------------------------------------


def _vp8_descriptor_size(payload: bytes) -> int | None:
    """Bytes of the RFC 7741 payload descriptor at the start of ``payload``."""
    if not payload:
        return None
    size = 1
    if payload[0] & 0x80:  # X: extension bits follow
        if len(payload) < 2:
            return None
        extension = payload[1]
        size = 2
        if extension & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) < 3:
                return None
            size += 2 if payload[2] & 0x80 else 1
        if extension & 0x40:  # L: TL0PICIDX
            size += 1
        if extension & 0x30:  # T or K: TID/Y/KEYIDX
            size += 1
    return size if size < len(payload) else None


class Vp8Payload:
    """RFC 7741."""

    is_video = True
    whole_frames = False

    def starts_frame(self, payload: bytes) -> bool | None:
        # S=1 in partition 0 begins a frame; anything else continues one.
        return bool(payload) and payload[0] & 0x1F == 0x10

    def assemble(self, payloads: Sequence[bytes]) -> FrameContent | None:
        parts = []
        for index, payload in enumerate(payloads):
            size = _vp8_descriptor_size(payload)
            if size is None:
                return None
            if index == 0 and payload[0] & 0x1F != 0x10:
                return None
            parts.append(payload[size:])
        data = b"".join(parts)
        if len(data) < 3:
            return None
        # The frame tag's lowest bit is the inverse keyframe flag (RFC 6386 9.1).
        keyframe = not data[0] & 0x01
        size_wh = None
        if keyframe:
            if len(data) < 10 or data[3:6] != b"\x9d\x01\x2a":
                return None
            width = int.from_bytes(data[6:8], "little") & 0x3FFF
            height = int.from_bytes(data[8:10], "little") & 0x3FFF
            if width and height:
                size_wh = (width, height)
        return FrameContent(data=data, keyframe=keyframe, size=size_wh)


# --- H.264 ------------------------------------------------------------------------------------

_NAL_IDR: Final = 5
_NAL_SPS: Final = 7
_NAL_PPS: Final = 8
_NAL_STAP_A: Final = 24
_NAL_FU_A: Final = 28


class H264Payload:
    """RFC 6184, non-interleaved (packetization mode 1: single NAL, STAP-A, FU-A).

    Keeps the latest SPS and PPS of its stream, to complete IDR pictures sent without.
    """

    is_video = True
    whole_frames = False

    def __init__(self) -> None:
        self._sps: bytes | None = None
        self._pps: bytes | None = None

    def starts_frame(self, payload: bytes) -> bool | None:
        if not payload:
            return False
        if payload[0] & 0x1F == _NAL_FU_A and len(payload) > 1 and not payload[1] & 0x80:
            return False  # a middle or last fragment
        return None

    def assemble(self, payloads: Sequence[bytes]) -> FrameContent | None:
        units = _h264_nal_units(payloads)
        if not units:
            return None
        types = [unit[0] & 0x1F for unit in units]
        for unit, nal_type in zip(units, types, strict=True):
            if nal_type == _NAL_SPS:
                self._sps = unit
            elif nal_type == _NAL_PPS:
                self._pps = unit
        keyframe = False
        size = None
        if _NAL_IDR in types:
            missing = []
            if _NAL_SPS not in types and self._sps is not None:
                missing.append(self._sps)
            if _NAL_PPS not in types and self._pps is not None:
                missing.append(self._pps)
            units = missing + units
            keyframe = self._sps is not None and self._pps is not None
            if keyframe and self._sps is not None:
                size = h264_picture_size(self._sps)
        data = b"".join(START_CODE + unit for unit in units)
        return FrameContent(data=data, keyframe=keyframe, size=size)


def _h264_nal_units(payloads: Iterable[bytes]) -> list[bytes] | None:
    """The NAL units of one access unit's packets; None if they are malformed."""
    units: list[bytes] = []
    fragment: bytearray | None = None
    for payload in payloads:
        if not payload:
            return None
        nal_type = payload[0] & 0x1F
        if nal_type == _NAL_FU_A:
            if len(payload) < 3:
                return None
            header = payload[1]
            if header & 0x80:  # start
                if fragment is not None:
                    return None
                fragment = bytearray([(payload[0] & 0xE0) | (header & 0x1F)])
            elif fragment is None:
                return None  # a continuation without its start
            fragment += payload[2:]
            if header & 0x40:  # end
                units.append(bytes(fragment))
                fragment = None
            continue
        if fragment is not None:
            return None  # a fragmented unit was cut short
        if 1 <= nal_type <= 23:
            units.append(payload)
        elif nal_type == _NAL_STAP_A:
            offset = 1
            while offset < len(payload):
                if offset + 2 > len(payload):
                    return None
                size = int.from_bytes(payload[offset : offset + 2], "big")
                offset += 2
                if size == 0 or offset + size > len(payload):
                    return None
                units.append(payload[offset : offset + size])
                offset += size
        else:
            return None  # STAP-B, MTAP, FU-B: not in packetization mode 1
    if fragment is not None:
        return None
    return units


class _Bits:
    """An RBSP read bit by bit (exp-Golomb codes included)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 0

    def bit(self) -> int:
        index = self._position >> 3
        if index >= len(self._data):
            raise ValueError("the parameter set ends early")
        value = (self._data[index] >> (7 - (self._position & 7))) & 1
        self._position += 1
        return value

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("an exp-Golomb code is too long")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


def _rbsp(nal: bytes) -> bytes:
    """The NAL unit's payload without emulation-prevention bytes (00 00 03 -> 00 00)."""
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


_HIGH_PROFILES: Final = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def h264_picture_size(sps: bytes) -> tuple[int, int] | None:
    """Width and height (after cropping) a sequence parameter set announces (ITU-T H.264
    7.3.2.1.1); None if it cannot be read."""
    try:
        bits = _Bits(_rbsp(sps[1:]))
        profile_idc = bits.bits(8)
        bits.bits(16)  # constraint flags, level_idc
        bits.ue()  # seq_parameter_set_id
        chroma_format_idc = 1
        separate_colour_plane = 0
        if profile_idc in _HIGH_PROFILES:
            chroma_format_idc = bits.ue()
            if chroma_format_idc == 3:
                separate_colour_plane = bits.bit()
            bits.ue()  # bit_depth_luma_minus8
            bits.ue()  # bit_depth_chroma_minus8
            bits.bit()  # qpprime_y_zero_transform_bypass_flag
            if bits.bit():  # seq_scaling_matrix_present_flag
                for index in range(8 if chroma_format_idc != 3 else 12):
                    if bits.bit():
                        _skip_scaling_list(bits, 16 if index < 6 else 64)
        bits.ue()  # log2_max_frame_num_minus4
        pic_order_cnt_type = bits.ue()
        if pic_order_cnt_type == 0:
            bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
        elif pic_order_cnt_type == 1:
            bits.bit()  # delta_pic_order_always_zero_flag
            bits.se()  # offset_for_non_ref_pic
            bits.se()  # offset_for_top_to_bottom_field
            for _ in range(bits.ue()):
                bits.se()
        bits.ue()  # max_num_ref_frames
        bits.bit()  # gaps_in_frame_num_value_allowed_flag
        width_in_mbs = bits.ue() + 1
        height_in_map_units = bits.ue() + 1
        frame_mbs_only = bits.bit()
        if not frame_mbs_only:
            bits.bit()  # mb_adaptive_frame_field_flag
        bits.bit()  # direct_8x8_inference_flag
        width = width_in_mbs * 16
        height = (2 - frame_mbs_only) * height_in_map_units * 16
        if bits.bit():  # frame_cropping_flag
            left, right, top, bottom = bits.ue(), bits.ue(), bits.ue(), bits.ue()
            if chroma_format_idc == 0 or separate_colour_plane:
                crop_x, crop_y = 1, 2 - frame_mbs_only
            else:
                sub_width = 1 if chroma_format_idc == 3 else 2
                sub_height = 2 if chroma_format_idc == 1 else 1
                crop_x, crop_y = sub_width, sub_height * (2 - frame_mbs_only)
            width -= crop_x * (left + right)
            height -= crop_y * (top + bottom)
    except (ValueError, IndexError):
        return None
    if width <= 0 or height <= 0:
        return None
    return width, height


def _skip_scaling_list(bits: _Bits, size: int) -> None:
    last, next_scale = 8, 8
    for _ in range(size):
        if next_scale:
            next_scale = (last + bits.se() + 256) % 256
        last = next_scale or last


# --- Opus -------------------------------------------------------------------------------------


class OpusPayload:
    """RFC 7587: the payload is the frame."""

    is_video = False
    whole_frames = True

    def starts_frame(self, payload: bytes) -> bool | None:
        return True

    def assemble(self, payloads: Sequence[bytes]) -> FrameContent | None:
        if len(payloads) != 1 or not payloads[0]:
            return None
        return FrameContent(data=payloads[0], keyframe=True)


# --- assembly ---------------------------------------------------------------------------------


def _signed_ts(delta: int) -> int:
    delta %= _TS_MOD
    return delta - _TS_MOD if delta >= _TS_MOD // 2 else delta


class FrameAssembler:
    """Packets of one RTP stream (one SSRC) in, complete frames out, in order.

    ``max_delay`` (seconds of media) is how long a frame with a missing packet is waited
    for; ``max_packets`` bounds what is held meanwhile.
    """

    def __init__(
        self,
        payload_format: PayloadFormat,
        *,
        clock_rate: int,
        max_delay: float,
        max_packets: int = 1024,
    ) -> None:
        self._format = payload_format
        self._max_delay = max(1, round(max_delay * clock_rate))
        self._max_packets = max_packets
        self._packets: dict[int, RtpPacket] = {}
        self._highest: int | None = None
        self._highest_ts: int | None = None
        #: Extended sequence number where the next frame starts; None until known.
        self._next: int | None = None
        self._wait_keyframe = payload_format.is_video
        #: Frames given up (incomplete or malformed), and frames skipped while waiting
        #: for a keyframe.
        self.lost = 0
        self.skipped = 0

    @property
    def waiting_keyframe(self) -> bool:
        """Video only: nothing is emitted until a keyframe (at the start, after a loss)."""
        return self._wait_keyframe

    def push(self, packet: RtpPacket) -> list[EncodedFrame]:
        """Take one packet; every frame it completes (possibly none)."""
        ext = self._extend(packet.sequence_number)
        if (self._next is not None and ext < self._next) or ext in self._packets:
            return []  # too late, or a duplicate
        self._packets[ext] = packet
        if self._highest is None or ext > self._highest:
            self._highest = ext
            self._highest_ts = packet.timestamp
        if self._next is None:
            self._synchronise()
        return self._drain()

    def flush(self) -> list[EncodedFrame]:
        """The complete frames still in order (at the end of a recording); the rest is
        dropped."""
        frames = self._drain()
        self._packets.clear()
        return frames

    # -- internals --

    def _extend(self, seq: int) -> int:
        if self._highest is None:
            return seq
        delta = (seq - self._highest) % _SEQ_MOD
        if delta < _SEQ_MOD // 2:
            return self._highest + delta
        return self._highest - (_SEQ_MOD - delta)

    def _starts(self, ext: int) -> bool:
        packet = self._packets[ext]
        certain = self._format.starts_frame(packet.payload)
        if certain is not None:
            return certain
        before = self._packets.get(ext - 1)
        return before is not None and (bool(before.marker) or before.timestamp != packet.timestamp)

    def _synchronise(self) -> None:
        """Find the first frame start among the held packets; drop what comes before it."""
        for ext in sorted(self._packets):
            if self._starts(ext):
                self._next = ext
                for older in [e for e in self._packets if e < ext]:
                    del self._packets[older]
                return
        if len(self._packets) > self._max_packets:
            # No start in sight (a stream that never ends a frame): keep the newest half.
            for ext in sorted(self._packets)[: len(self._packets) // 2]:
                del self._packets[ext]

    def _drain(self) -> list[EncodedFrame]:
        frames: list[EncodedFrame] = []
        while self._next is not None:
            end = self._frame_end(self._next)
            if end is None:
                if self._overdue():
                    self._give_up()
                    continue
                break
            timestamp = self._packets[self._next].timestamp
            payloads = [self._packets.pop(ext).payload for ext in range(self._next, end + 1)]
            self._next = end + 1
            frame = self._build(payloads, timestamp)
            if frame is not None:
                frames.append(frame)
        return frames

    def _frame_end(self, start: int) -> int | None:
        """The last packet of the frame beginning at ``start``, if all of it is here."""
        first = self._packets.get(start)
        if first is None:
            return None
        if self._format.whole_frames:
            return start
        ext = start
        while True:
            if self._packets[ext].marker:
                return ext
            following = self._packets.get(ext + 1)
            if following is None:
                return None
            if following.timestamp != first.timestamp:
                return ext  # the marker was not set; the timestamp says the frame ended
            ext += 1

    def _overdue(self) -> bool:
        if len(self._packets) > self._max_packets:
            return True
        first = self._packets.get(self._next) if self._next is not None else None
        reference = first.timestamp if first is not None else self._oldest_timestamp()
        if reference is None or self._highest_ts is None:
            return False
        return _signed_ts(self._highest_ts - reference) > self._max_delay

    def _oldest_timestamp(self) -> int | None:
        if not self._packets:
            return None
        return self._packets[min(self._packets)].timestamp

    def _give_up(self) -> None:
        """Drop the incomplete frame at ``_next`` and find the next frame's start."""
        self.lost += 1
        if self._format.is_video:
            self._wait_keyframe = True
        first = self._packets.get(self._next) if self._next is not None else None
        self._next = None
        if first is not None:
            dropped = None
            for ext in sorted(self._packets):
                if self._packets[ext].timestamp != first.timestamp:
                    if dropped == ext - 1:
                        self._next = ext  # right after the lost frame's last packet
                    break
                del self._packets[ext]
                dropped = ext
        # Whatever else is left of the lost frame cannot look like a frame's start.
        if self._next is None and self._packets:
            self._synchronise()

    def _build(self, payloads: list[bytes], timestamp: int) -> EncodedFrame | None:
        content = self._format.assemble(payloads)
        if content is None:
            self.lost += 1
            if self._format.is_video:
                self._wait_keyframe = True
            log.debug("a malformed frame was dropped")
            return None
        if self._wait_keyframe:
            if not content.keyframe:
                self.skipped += 1
                return None
            self._wait_keyframe = False
        width, height = content.size if content.size is not None else (None, None)
        return EncodedFrame(
            data=content.data,
            timestamp=timestamp,
            keyframe=content.keyframe,
            width=width,
            height=height,
        )


def assembler_for(fmt: CodecFormat) -> FrameAssembler | None:
    """An assembler for a stream of this format; None for formats not recorded."""
    if fmt.mime_type == "video/vp8":
        return FrameAssembler(Vp8Payload(), clock_rate=fmt.clock_rate, max_delay=0.5)
    if fmt.mime_type == "video/h264":
        if fmt.packetization_mode not in (None, 1):
            return None
        return FrameAssembler(H264Payload(), clock_rate=fmt.clock_rate, max_delay=0.5)
    if fmt.mime_type == "audio/opus":
        return FrameAssembler(OpusPayload(), clock_rate=fmt.clock_rate, max_delay=0.1)
    return None
