"""One outgoing RTP stream made of possibly many incoming ones, without seams.

A subscriber's leg announces one SSRC and expects one run of sequence numbers and
timestamps. Behind it the source can change: the publisher reconnects, switches its
SSRC, or another publisher takes the slot. Each change starts a new *epoch* whose
offsets continue the outgoing numbers where they stopped: the next sequence number,
and a timestamp advanced by the wall-clock time that passed (at least one tick). Inside
an epoch the mapping is a fixed offset, so gaps and reordering pass through unchanged
and a NACK for an outgoing number maps back to exactly one packet.
"""

from __future__ import annotations

import secrets
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["Rewritten", "SequenceRewriter", "seq_newer", "ts_newer"]

_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32


def seq_newer(a: int, b: int) -> bool:
    """Whether 16-bit sequence number ``a`` comes after ``b`` (RFC 3550 wrap-around)."""
    return a != b and (a - b) % _SEQ_MOD < _SEQ_MOD // 2


def ts_newer(a: int, b: int) -> bool:
    """Whether 32-bit RTP timestamp ``a`` comes after ``b``."""
    return a != b and (a - b) % _TS_MOD < _TS_MOD // 2


@dataclass(frozen=True, slots=True)
class Rewritten:
    sequence_number: int
    timestamp: int
    #: True for the first packet of a new epoch (a new source or SSRC).
    new_epoch: bool


class SequenceRewriter:
    """Maps (source, sequence number, timestamp) onto one continuous outgoing stream."""

    __slots__ = (
        "_clock_rate",
        "_epoch",
        "_last_seq",
        "_last_ts",
        "_last_wall",
        "_seq_offset",
        "_ts_offset",
    )

    def __init__(self, clock_rate: int, *, first_seq: int | None = None) -> None:
        self._clock_rate = clock_rate
        self._epoch: Hashable | None = None
        # Start in the lower half, as aiortc and Chrome do, to keep SRTP's ROC simple.
        first = secrets.randbelow(_SEQ_MOD // 2) if first_seq is None else first_seq
        self._last_seq = (first - 1) % _SEQ_MOD
        self._last_ts = secrets.randbelow(_TS_MOD)
        self._last_wall: float | None = None
        self._seq_offset = 0
        self._ts_offset = 0

    @property
    def epoch(self) -> Hashable | None:
        """The source the current offsets belong to."""
        return self._epoch

    @property
    def ts_offset(self) -> int:
        """Added (mod 2^32) to the current source's timestamps; for sender reports."""
        return self._ts_offset

    def map(self, epoch: Hashable, seq: int, timestamp: int, now: float) -> Rewritten:
        """The outgoing numbers of one packet from ``epoch`` that arrived at ``now``."""
        new_epoch = epoch != self._epoch
        if new_epoch:
            advance = 1
            if self._last_wall is not None:
                advance = max(1, round((now - self._last_wall) * self._clock_rate))
            self._seq_offset = (self._last_seq + 1 - seq) % _SEQ_MOD
            self._ts_offset = (self._last_ts + advance - timestamp) % _TS_MOD
            self._epoch = epoch
        out_seq = (seq + self._seq_offset) % _SEQ_MOD
        out_ts = (timestamp + self._ts_offset) % _TS_MOD
        if new_epoch or seq_newer(out_seq, self._last_seq):
            self._last_seq = out_seq
        if new_epoch or ts_newer(out_ts, self._last_ts):
            self._last_ts = out_ts
            self._last_wall = now
        return Rewritten(sequence_number=out_seq, timestamp=out_ts, new_epoch=new_epoch)

    def translate_timestamp(self, epoch: Hashable, timestamp: int) -> int | None:
        """A source timestamp in outgoing terms, if ``epoch`` is the current source."""
        if epoch != self._epoch:
            return None
        return (timestamp + self._ts_offset) % _TS_MOD
