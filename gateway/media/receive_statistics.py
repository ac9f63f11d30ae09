"""What a receiver knows of one incoming SSRC, for its reports (RFC 3550 A.3 and A.8).

aiortc's receiver keeps a ``StreamStatistics`` per SSRC and reads it for its receiver
reports and ``getStats``. The gateway's intercepted receivers
(``_aiortc.intercept_receiver``) keep a :class:`ReceiveStatistics` there instead: the
same fields, properties and arithmetic (tests/media_plane/test_receive_statistics.py
gives both the same packets). Compiled, with the C fields of its .pxd, the compiled
path (``_native.pyx``) updates it without a Python attribute lookup per field.
"""

from __future__ import annotations

import time
from typing import Protocol

from gateway.media.rtp_rewriter import seq_newer

__all__ = ["ReceiveStatistics"]

#: A report block's cumulative loss is a signed 24-bit number (RFC 3550 6.4.1).
_LOST_MIN = -(1 << 23)
_LOST_MAX = (1 << 23) - 1


class _Packet(Protocol):
    sequence_number: int
    timestamp: int


class ReceiveStatistics:
    """Counts, highest sequence number and jitter of one incoming SSRC."""

    __slots__ = (
        "_clockrate",
        "_expected_prior",
        "_jitter_q4",
        "_last_arrival",
        "_last_timestamp",
        "_received_prior",
        "base_seq",
        "cycles",
        "max_seq",
        "packets_received",
    )

    def __init__(self, clockrate: int) -> None:
        #: The first and the highest sequence number; None before the first packet.
        self.base_seq: int | None = None
        self.max_seq: int | None = None
        #: Wraps of the sequence number, times 2^16.
        self.cycles = 0
        self.packets_received = 0
        self._clockrate = clockrate
        # Interarrival jitter times 16, in the clock's units (A.8).
        self._jitter_q4 = 0
        self._last_arrival: int | None = None
        self._last_timestamp: int | None = None
        # For the fraction lost since the last report (A.3).
        self._expected_prior = 0
        self._received_prior = 0

    def add(self, packet: _Packet) -> None:
        """Count one received packet; only in-order ones move the highest and the jitter."""
        seq = packet.sequence_number
        in_order = self.max_seq is None or seq_newer(seq, self.max_seq)
        self.packets_received += 1
        if self.base_seq is None:
            self.base_seq = seq
        if not in_order:
            return
        arrival = int(time.time() * self._clockrate)
        if self.max_seq is not None and seq < self.max_seq:
            self.cycles += 1 << 16
        self.max_seq = seq
        if packet.timestamp != self._last_timestamp and self.packets_received > 1:
            assert self._last_arrival is not None
            assert self._last_timestamp is not None
            diff = abs((arrival - self._last_arrival) - (packet.timestamp - self._last_timestamp))
            self._jitter_q4 += diff - ((self._jitter_q4 + 8) >> 4)
        self._last_arrival = arrival
        self._last_timestamp = packet.timestamp

    @property
    def fraction_lost(self) -> int:
        """Lost since the previous call, in 256ths (reading it starts a new interval)."""
        expected = self.packets_expected
        expected_interval = expected - self._expected_prior
        self._expected_prior = expected
        received_interval = self.packets_received - self._received_prior
        self._received_prior = self.packets_received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return (lost_interval << 8) // expected_interval

    @property
    def jitter(self) -> int:
        return self._jitter_q4 >> 4

    @property
    def packets_expected(self) -> int:
        assert self.max_seq is not None
        assert self.base_seq is not None
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def packets_lost(self) -> int:
        return max(_LOST_MIN, min(self.packets_expected - self.packets_received, _LOST_MAX))
