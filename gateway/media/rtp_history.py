"""What a subscriber's leg recently sent, to answer its NACKs (RFC 4585, RFC 4588).

A bounded ring of the serialized packets, indexed by outgoing sequence number: memory
per leg is fixed, and a NACK for a packet that fell out (or never came through, being
lost before the gateway) is simply not answered.
"""

from __future__ import annotations

import struct

__all__ = ["PacketHistory", "rtx_packet"]


class PacketHistory:
    """The last ``capacity`` packets sent on one leg, by sequence number."""

    __slots__ = ("_capacity", "_data", "_resent_at", "_seqs")

    def __init__(self, capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._seqs: list[int] = [-1] * capacity
        self._data: list[bytes] = [b""] * capacity
        self._resent_at: list[float] = [0.0] * capacity

    @property
    def capacity(self) -> int:
        return self._capacity

    def put(self, seq: int, data: bytes) -> None:
        """Remember one sent packet (it replaces whatever had its slot)."""
        slot = seq % self._capacity
        self._seqs[slot] = seq
        self._data[slot] = data
        self._resent_at[slot] = 0.0

    def get(self, seq: int) -> bytes | None:
        """The packet sent with ``seq``, if still held."""
        slot = seq % self._capacity
        return self._data[slot] if self._seqs[slot] == seq else None

    def take_for_resend(self, seq: int, now: float, min_interval: float) -> bytes | None:
        """The packet for ``seq`` unless it was resent less than ``min_interval`` ago."""
        slot = seq % self._capacity
        if self._seqs[slot] != seq:
            return None
        last = self._resent_at[slot]
        if last and now - last < min_interval:
            return None
        self._resent_at[slot] = now
        return self._data[slot]

    def clear(self) -> None:
        self._seqs = [-1] * self._capacity
        self._data = [b""] * self._capacity


def rtx_packet(data: bytes, *, payload_type: int, sequence_number: int, ssrc: int) -> bytes:
    """RFC 4588 retransmission of a serialized RTP packet on the RTX stream.

    Same marker, timestamp, CSRCs and header extensions; the original sequence number
    leads the payload; the original padding is dropped.
    """
    first = data[0]
    header_end = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        (words,) = struct.unpack_from("!H", data, header_end + 2)
        header_end += 4 + 4 * words
    payload_end = len(data) - data[-1] if first & 0x20 else len(data)
    header = struct.pack(
        "!BBH4sL",
        first & ~0x20 & 0xFF,
        (data[1] & 0x80) | payload_type,
        sequence_number,
        data[4:8],
        ssrc,
    )
    return header + data[12:header_end] + data[2:4] + data[header_end:payload_end]
