"""ReceiveStatistics against aiortc's StreamStatistics, which aiortc's receiver reads.

The intercepted receivers keep ReceiveStatistics where aiortc keeps its own, so both
must agree on every field and property, for the same packets at the same times:
in order, lost, reordered, duplicated, across the sequence number's wrap and after a
jump. Both the compiled class and the plain file are checked.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from types import ModuleType

import pytest
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtpPacket

from gateway.media import _aiortc, receive_statistics
from tests.media_plane.plain import as_plain_python

PLAIN = as_plain_python(receive_statistics)
FIELDS = (
    "base_seq",
    "max_seq",
    "cycles",
    "packets_received",
    "_jitter_q4",
    "_last_arrival",
    "_last_timestamp",
    "_expected_prior",
    "_received_prior",
)


def _stream(seed: int) -> Iterator[tuple[float, int, int]]:
    """(arrival time, sequence number, timestamp) of a lossy, reordering 90 kHz stream."""
    rng = random.Random(seed)
    now, seq, ts = 1_700_000_000.0, rng.randrange(1 << 16), rng.randrange(1 << 32)
    held: list[tuple[int, int]] = []
    for _ in range(3000):
        now += rng.uniform(0.0, 0.01)
        seq = (seq + 1) & 0xFFFF
        if rng.random() < 0.2:
            ts = (ts + rng.randrange(1, 6000)) & 0xFFFFFFFF
        roll = rng.random()
        if roll < 0.03:
            continue  # lost
        if roll < 0.06:
            held.append((seq, ts))  # comes later
            continue
        if roll < 0.07:
            seq = (seq + rng.randrange(200, 5000)) & 0xFFFF  # a jump
        yield now, seq, ts
        if roll < 0.09:
            yield now, seq, ts  # a duplicate
        if held and rng.random() < 0.3:
            yield now, *held.pop(0)


@pytest.mark.parametrize("module", [receive_statistics, PLAIN], ids=["compiled", "python"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_it_agrees_with_aiortc_packet_by_packet(
    module: ModuleType, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = module.ReceiveStatistics(90000)
    theirs = StreamStatistics(90000)
    clock = [0.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    for count, (now, seq, ts) in enumerate(_stream(seed), start=1):
        clock[0] = now
        packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts)
        ours.add(packet)
        theirs.add(packet)
        assert [getattr(ours, name) for name in FIELDS] == [
            getattr(theirs, name) for name in FIELDS
        ]
        if count % 97 == 0:  # a receiver report: reading fraction_lost starts an interval
            assert ours.fraction_lost == theirs.fraction_lost
            assert ours.packets_lost == theirs.packets_lost
            assert ours.packets_expected == theirs.packets_expected
            assert ours.jitter == theirs.jitter
    assert theirs.cycles > 0  # the stream did wrap


def test_loss_is_clamped_as_a_report_block_holds_it() -> None:
    ours, theirs = receive_statistics.ReceiveStatistics(8000), StreamStatistics(8000)
    for statistics in (ours, theirs):
        statistics.base_seq, statistics.max_seq = 0, 0
        statistics.cycles = 1 << 30
    assert ours.packets_lost == theirs.packets_lost == (1 << 23) - 1


def test_the_import_check_finds_every_field_aiortc_reads() -> None:
    assert _aiortc._check_statistics() == []


def test_the_import_check_names_a_field_aiortc_would_read_and_we_lack(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Newer:
        def __init__(self) -> None:
            self.base_seq = None
            self.packets_discarded = 0

        @property
        def burst_loss(self) -> int:
            return 0

    monkeypatch.setattr(_aiortc._receiver_module, "StreamStatistics", Newer)
    assert _aiortc._check_statistics() == [
        "ReceiveStatistics lacks StreamStatistics.burst_loss",
        "ReceiveStatistics lacks StreamStatistics.packets_discarded",
    ]
