"""A subscriber leg's RTP header, written straight to bytes.

Every forwarded copy differs from the publisher's packet only in its header: that leg's
SSRC, payload type, sequence number and timestamp, and header extensions with that
leg's ids (its MID, a fresh abs-send-time, the publisher's audio level). What is fixed
per leg (SSRC, extension ids, the MID's encoded bytes, one-byte or two-byte form) is
prepared once here, so a copy costs one ``struct.pack`` and a join, not an
:class:`aiortc.rtp.RtpPacket` built and serialised.

The bytes are those aiortc's ``RtpPacket.serialize`` writes for the same fields
(extensions in its order: MID, abs-send-time, audio level), except padding, which is
zeros here rather than random.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

__all__ = ["ABS_SEND_TIME_URI", "AUDIO_LEVEL_URI", "MID_URI", "OutgoingHeader"]

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

_FIXED = struct.Struct("!BBHLL")
_EXTENSION_HEADER = struct.Struct("!HH")
_CSRC = struct.Struct("!L")
_ONE_BYTE_PROFILE = 0xBEDE
_TWO_BYTE_PROFILE = 0x1000
_ABS_SEND_TIME_LENGTH = 3
_AUDIO_LEVEL_LENGTH = 1


def _fits_one_byte(extension_id: int, length: int) -> bool:
    return 0 < extension_id <= 14 and 1 <= length <= 16


def _prefix(extension_id: int, length: int, *, one_byte: bool) -> bytes:
    """An extension element's id and length bytes; empty if the leg lacks the extension."""
    if not extension_id:
        return b""
    if one_byte:
        return bytes([(extension_id << 4) | (length - 1)])
    return bytes([extension_id, length])


class _Layout:
    """Extension elements in one form (one-byte or two-byte), prefixes ready."""

    __slots__ = ("abs_prefix", "level_prefix", "mid", "profile")

    def __init__(
        self, *, one_byte: bool, mid: bytes | None, mid_id: int, abs_id: int, level_id: int
    ) -> None:
        self.profile = _ONE_BYTE_PROFILE if one_byte else _TWO_BYTE_PROFILE
        self.mid = b""
        if mid is not None:
            self.mid = _prefix(mid_id, len(mid), one_byte=one_byte) + mid
        self.abs_prefix = _prefix(abs_id, _ABS_SEND_TIME_LENGTH, one_byte=one_byte)
        self.level_prefix = _prefix(level_id, _AUDIO_LEVEL_LENGTH, one_byte=one_byte)


class OutgoingHeader:
    """Builds one leg's RTP packets from a publisher packet's fields and payload."""

    __slots__ = ("_ssrc", "_with_level", "_without_level")

    def __init__(
        self,
        *,
        ssrc: int,
        mid: str | None,
        header_extensions: Sequence[RTCRtpHeaderExtensionParameters],
    ) -> None:
        ids = {ext.uri: ext.id for ext in header_extensions}
        mid_id = ids.get(MID_URI, 0)
        abs_id = ids.get(ABS_SEND_TIME_URI, 0)
        level_id = ids.get(AUDIO_LEVEL_URI, 0)
        mid_bytes = mid.encode("utf8") if mid is not None and mid_id else None
        self._ssrc = ssrc
        # aiortc picks the one-byte form when every element fits it; which elements a
        # packet carries varies only with the audio level, so both layouts are ready.
        base_fits = (mid_bytes is None or _fits_one_byte(mid_id, len(mid_bytes))) and (
            not abs_id or _fits_one_byte(abs_id, _ABS_SEND_TIME_LENGTH)
        )
        level_fits = not level_id or _fits_one_byte(level_id, _AUDIO_LEVEL_LENGTH)
        self._without_level = _Layout(
            one_byte=base_fits, mid=mid_bytes, mid_id=mid_id, abs_id=abs_id, level_id=0
        )
        self._with_level = _Layout(
            one_byte=base_fits and level_fits,
            mid=mid_bytes,
            mid_id=mid_id,
            abs_id=abs_id,
            level_id=level_id,
        )

    @property
    def ssrc(self) -> int:
        return self._ssrc

    def build(
        self,
        *,
        payload_type: int,
        marker: int,
        sequence_number: int,
        timestamp: int,
        csrc: Sequence[int],
        abs_send_time: bytes,
        audio_level: tuple[bool, int] | None,
        payload: bytes,
        padding_size: int = 0,
    ) -> bytes:
        """One packet: this leg's header, then ``payload`` (and zero padding).

        ``abs_send_time`` is the extension's three bytes, shared by every leg a packet
        goes to.
        """
        if audio_level is None:
            layout = self._without_level
            level = b""
        else:
            layout = self._with_level
            level = (
                layout.level_prefix
                + bytes([(0x80 if audio_level[0] else 0) | (audio_level[1] & 0x7F)])
                if layout.level_prefix
                else b""
            )
        extensions = layout.mid + (layout.abs_prefix + abs_send_time if layout.abs_prefix else b"")
        extensions += level
        first = 0x80 | len(csrc)
        if padding_size > 0:
            first |= 0x20
        parts = [b""]
        if extensions:
            first |= 0x10
            remainder = len(extensions) % 4
            if remainder:
                extensions += b"\x00" * (4 - remainder)
            parts.append(_EXTENSION_HEADER.pack(layout.profile, len(extensions) >> 2))
            parts.append(extensions)
        parts[0] = _FIXED.pack(
            first, (marker << 7) | payload_type, sequence_number, timestamp, self._ssrc
        )
        if csrc:
            parts[1:1] = [_CSRC.pack(c) for c in csrc]
        parts.append(payload)
        if padding_size > 0:
            parts.append(bytes(padding_size - 1) + bytes([padding_size]))
        return b"".join(parts)
