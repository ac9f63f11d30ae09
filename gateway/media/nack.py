"""Sequence numbers for generic NACKs (RFC 4585 section 6.2.1), both ways.

Upstream, :class:`MissingPackets` notices gaps in what a publisher sends so the gateway
can ask for them again. Downstream, :func:`nacked_sequence_numbers` reads what a
subscriber asks for: aiortc's parser adds the bitmask offsets without wrapping at
65535, so its numbers are taken modulo 2^16 here.
"""

from __future__ import annotations

from aiortc.rtp import RtcpRtpfbPacket

from gateway.media.rtp_rewriter import seq_newer

__all__ = ["MAX_NACKED", "MissingPackets", "nacked_sequence_numbers"]

#: At most this many sequence numbers are tracked or answered per NACK.
MAX_NACKED = 256
_SEQ_MOD = 1 << 16


def nacked_sequence_numbers(packet: RtcpRtpfbPacket) -> list[int]:
    """The distinct sequence numbers a NACK asks for, wrapped, at most :data:`MAX_NACKED`."""
    seen: dict[int, None] = {}
    for seq in packet.lost:
        seen[seq % _SEQ_MOD] = None
        if len(seen) >= MAX_NACKED:
            break
    return list(seen)


class MissingPackets:
    """Gaps in one incoming stream, within the last ``horizon`` sequence numbers."""

    __slots__ = ("_highest", "_horizon", "_missing")

    def __init__(self, horizon: int = 128) -> None:
        self._horizon = horizon
        self._highest: int | None = None
        self._missing: set[int] = set()

    @property
    def highest(self) -> int | None:
        """The newest sequence number seen so far."""
        return self._highest

    @property
    def missing(self) -> list[int]:
        """Sequence numbers still missing, oldest first."""
        if self._highest is None:
            return []
        highest = self._highest
        return sorted(self._missing, key=lambda s: (highest - s) % _SEQ_MOD, reverse=True)

    def add(self, seq: int) -> bool:
        """Note a received packet; True if it revealed a new gap."""
        highest = self._highest
        if highest is None:
            self._highest = seq
            return False
        if not seq_newer(seq, highest):
            self._missing.discard(seq)
            return False
        gap = (seq - highest) % _SEQ_MOD - 1
        if gap > self._horizon:
            # A jump this large is a restart, not loss: asking for it all would be a storm.
            self._missing.clear()
            self._highest = seq
            return False
        for step in range(1, gap + 1):
            self._missing.add((highest + step) % _SEQ_MOD)
        self._highest = seq
        if self._missing:
            self._missing = {s for s in self._missing if (seq - s) % _SEQ_MOD <= self._horizon}
        return gap > 0

    def reset(self) -> None:
        self._highest = None
        self._missing.clear()
