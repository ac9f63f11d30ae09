"""The gateway's RTCP: its reports, from one timer per event loop, and what it receives,
handled at once (gateway/media/_aiortc.py: _Reports, _rtcp_receiver, _run_now).

The reports must be the bytes aiortc's own ``_run_rtcp`` tasks would send: the first
tests run aiortc's loop and ours on the same state and compare.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pylibsrtp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc import rtcrtpreceiver as aiortc_receiver
from aiortc import rtcrtpsender as aiortc_sender
from aiortc.rtcdtlstransport import RtpRouter
from aiortc.rtp import (
    RTCP_PSFB_APP,
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSrPacket,
    RtpPacket,
)

from gateway.media import _aiortc
from gateway.media.counters import TrackCounters
from gateway.media.receive_statistics import ReceiveStatistics
from tests.media_plane.harness import LoopbackRoom, wait_for
from tests.media_plane.media import Clip

pytestmark = pytest.mark.timeout(60)


def _unexpected(*args: object) -> None:
    raise AssertionError(f"unexpected call: {args}")


async def _one_round_of_aiortc(
    member: RTCRtpSender | RTCRtpReceiver, module: Any, monkeypatch: pytest.MonkeyPatch
) -> list[bytes]:
    """What aiortc's own ``_run_rtcp`` sends for ``member`` in one round, then on stop."""
    sent: list[bytes] = []
    sleeps = 0

    async def no_sleep(delay: float) -> None:
        nonlocal sleeps
        sleeps += 1
        if sleeps > 1:
            raise asyncio.CancelledError

    async def send_rtcp(packets: AnyRtcpPacket | list[AnyRtcpPacket]) -> None:
        listed = packets if isinstance(packets, list) else [packets]
        sent.append(b"".join(bytes(p) for p in listed))

    monkeypatch.setattr(module.asyncio, "sleep", no_sleep)
    monkeypatch.setattr(member, "_send_rtcp", send_rtcp)
    await type(member)._run_rtcp(member)
    return sent


async def test_reports_and_get_stats_read_the_counts_of_the_sinks_counters() -> None:
    # Neither path writes aiortc's counts per packet: a report (and getStats) copies
    # them from the counters the forwarder keeps for the subscribed track.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        sender = pc.addTransceiver("video").sender

        async def nothing(*args: object) -> None:
            return None

        _aiortc.intercept_sender(sender, on_started=nothing, on_feedback=nothing)
        counters = TrackCounters()
        _aiortc.SenderSink(sender).count_from(counters)
        counters.packets = (1 << 32) + 5
        counters.octets = 999
        sr, *_ = RtcpPacket.parse(_aiortc.sender_report(sender))
        assert isinstance(sr, RtcpSrPacket)
        assert (sr.sender_info.packet_count, sr.sender_info.octet_count) == (5, 999)
        counters.packets += 1
        counters.octets += 100
        stats = await sender.getStats()
        (outbound,) = [s for s in stats.values() if s.type == "outbound-rtp"]
        assert (outbound.packetsSent, outbound.bytesSent) == ((1 << 32) + 6, 1099)
        # aiortc's stats of a receiver report read the count as the report arrives.
        counters.packets = 1000
        block = RtcpReceiverInfo(
            ssrc=sender._ssrc, fraction_lost=0, packets_lost=10, highest_sequence=1000,
            jitter=0, lsr=0, dlsr=0,
        )  # fmt: skip
        await sender._handle_rtcp_packet(RtcpRrPacket(ssrc=1234, reports=[block]))
        counters.packets = 2000  # later copies do not change what that report said
        stats = await sender.getStats()
        (remote,) = [s for s in stats.values() if s.type == "remote-inbound-rtp"]
        assert remote.packetsReceived == 990
    finally:
        await pc.close()


async def test_a_sender_report_is_the_one_aiortc_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_123.25)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        sender = pc.addTransceiver("video").sender
        for name, value in (
            (_aiortc._TX_NTP, 0xE1F2_0304_0506_0708),
            (_aiortc._TX_RTP, 0x0102_0304),
            (_aiortc._TX_PACKETS, (1 << 32) + 77),  # the report carries it modulo 2^32
            (_aiortc._TX_OCTETS, 123_456),
            (_aiortc._TX_CNAME, "cname-of-the-gateway"),
        ):
            setattr(sender, name, value)
        expected = await _one_round_of_aiortc(sender, aiortc_sender, monkeypatch)
        expected_lsr = getattr(sender, _aiortc._TX_LSR), getattr(sender, _aiortc._TX_LSR_TIME)
        setattr(sender, _aiortc._TX_LSR, None)
        assert _aiortc.sender_report(sender) == expected[0]
        assert (getattr(sender, _aiortc._TX_LSR), getattr(sender, _aiortc._TX_LSR_TIME)) == (
            expected_lsr
        )
        sr, sdes = RtcpPacket.parse(expected[0])
        assert isinstance(sr, RtcpSrPacket)
        assert sr.sender_info.packet_count == 77
        assert isinstance(sdes, RtcpSdesPacket)
        # And on stop aiortc says BYE, as the gateway's senders still do.
        (bye,) = RtcpPacket.parse(expected[1])
        assert isinstance(bye, RtcpByePacket)
        assert bye.sources == [sender._ssrc]

        setattr(sender, _aiortc._TX_CNAME, None)  # no SDES without a CNAME
        assert [type(p) for p in RtcpPacket.parse(_aiortc.sender_report(sender))] == [RtcpSrPacket]
    finally:
        await pc.close()


def _stream(first_seq: int, count: int, lost: set[int]) -> ReceiveStatistics:
    stream = ReceiveStatistics(90000)
    for n in range(count):
        if n not in lost:
            seq = (first_seq + n) & 0xFFFF
            stream.add(RtpPacket(sequence_number=seq, timestamp=3000 * n))
    return stream


def _fill(receiver: RTCRtpReceiver) -> None:
    """Two streams, one that wraps and loses some, one with a sender report noted.

    Made afresh for each report: reading ``fraction_lost`` starts a new interval."""
    streams = getattr(receiver, _aiortc._RX_REMOTE_STREAMS)
    streams[1111] = _stream(65500, 90, lost={3, 40, 41})
    streams[2222] = _stream(7, 20, lost=set())
    getattr(receiver, _aiortc._RX_LSR)[1111] = 0xABCD_EF01
    getattr(receiver, _aiortc._RX_LSR_TIME)[1111] = time.time() - 0.75


async def test_a_receiver_report_is_the_one_aiortc_sends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_123.25)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        receiver = pc.addTransceiver("video").receiver
        assert _aiortc.receiver_report(receiver) == b""  # no RTCP SSRC yet, no stream
        receiver._set_rtcp_ssrc(0x1234_5678)
        assert _aiortc.receiver_report(receiver) == b""  # nothing received yet
        _fill(receiver)
        (expected,) = await _one_round_of_aiortc(receiver, aiortc_receiver, monkeypatch)
        _fill(receiver)
        assert _aiortc.receiver_report(receiver) == expected
        (rr,) = RtcpPacket.parse(expected)
        assert isinstance(rr, RtcpRrPacket)
        assert [(r.ssrc, r.fraction_lost, r.packets_lost, r.lsr, r.dlsr) for r in rr.reports] == [
            (1111, 3 * 256 // 90, 3, 0xABCD_EF01, int(0.75 * 65536)),
            (2222, 0, 0, 0, 0),
        ]
    finally:
        await pc.close()


async def test_more_than_31_streams_are_reported_in_further_receiver_reports() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        receiver = pc.addTransceiver("video").receiver
        receiver._set_rtcp_ssrc(77)
        streams = getattr(receiver, _aiortc._RX_REMOTE_STREAMS)
        for ssrc in range(1, 41):  # a publisher that kept changing its SSRC
            streams[ssrc] = _stream(ssrc * 100, 5, lost=set())
        packets = RtcpPacket.parse(_aiortc.receiver_report(receiver))
        assert [type(p) for p in packets] == [RtcpRrPacket, RtcpRrPacket]
        assert [len(p.reports) for p in packets] == [31, 9]  # type: ignore[union-attr]
        assert [r.ssrc for p in packets for r in p.reports] == list(range(1, 41))  # type: ignore[union-attr]
    finally:
        await pc.close()


class _Leg:
    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []

    def send(self, data: bytes) -> bool:
        self.sent.append((time.monotonic(), data))
        return True


class _Member:
    """A sender or receiver as _Reports sees it: its transport, whose leg sends."""

    def __init__(self, name: str, leg: _Leg) -> None:
        self.name = name
        self.transport = SimpleNamespace()
        setattr(self.transport, _aiortc._LEG, leg)


def _member(name: str) -> tuple[_Member, _Leg]:
    leg = _Leg()
    return _Member(name, leg), leg


async def test_one_timer_sends_every_members_reports_when_due(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_aiortc.random, "random", lambda: 0.0)  # every 0.5 s
    loop = asyncio.get_running_loop()
    reports = _aiortc._Reports(loop, tick=0.02)
    members = [_member(name) for name in ("a", "b", "c")]

    def report(member: Any) -> bytes:
        if member.name == "c":
            raise RuntimeError("c's report failed")
        return member.name.encode()

    def timers() -> int:
        scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
        return sum(h._callback == reports._run for h in scheduled if not h.cancelled())  # type: ignore[attr-defined]

    start = time.monotonic()
    for member, _ in members:
        reports.add(member, report)
    assert len(reports) == 3
    assert reports.timer is not None
    assert timers() == 1
    with caplog.at_level(logging.ERROR, logger=_aiortc.log.name):
        await asyncio.sleep(1.4)
    (a, a_leg), (_, b_leg), (_, c_leg) = members
    for leg, data in ((a_leg, b"a"), (b_leg, b"b")):
        assert [d for _, d in leg.sent] == [data, data]
        times = [t - start for t, _ in leg.sent]
        assert 0.5 <= times[0] < 0.8  # due at 0.5 s, sent on the next tick
        assert times[1] - times[0] >= 0.5
        assert times[1] < 1.4
    assert c_leg.sent == []
    # c failed twice, logged once; the others were not held up by it.
    assert [r.getMessage() for r in caplog.records].count(
        "an RTCP report failed (further failures not logged)"
    ) == 1
    assert timers() == 1  # one for all of them, whatever their number

    reports.remove(a)
    await asyncio.sleep(0.7)
    assert len(a_leg.sent) == 2  # no longer reported
    assert len(b_leg.sent) >= 3
    for member, _ in members:
        reports.remove(member)
    assert len(reports) == 0
    assert reports.timer is None
    assert timers() == 0


async def test_an_empty_report_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_aiortc.random, "random", lambda: 0.0)
    reports = _aiortc._Reports(asyncio.get_running_loop(), tick=0.02)
    member, leg = _member("quiet")
    reports.add(member, lambda m: b"")
    await asyncio.sleep(0.6)
    assert leg.sent == []
    reports.remove(member)


# --- what the gateway receives ----------------------------------------------------------------


async def test_a_handler_that_does_not_wait_runs_to_its_end_at_once() -> None:
    done: list[str] = []

    async def inner() -> str:
        return "yes"

    async def handler() -> None:
        done.append(await inner())  # awaits, but never waits (as aiortc's handlers)

    _aiortc._run_now(handler(), _unexpected)
    assert done == ["yes"]  # before this task waited at all


async def test_a_handler_that_waits_is_finished_by_a_task() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()
    steps: list[object] = []

    async def handler() -> None:
        steps.append("before")
        steps.append(await future)
        await asyncio.sleep(0)
        steps.append("after")

    _aiortc._run_now(handler(), _unexpected)
    assert steps == ["before"]
    assert len(_aiortc._finishing) == 1
    future.set_result(42)
    assert await wait_for(lambda: steps == ["before", 42, "after"], timeout=2)
    assert await wait_for(lambda: not _aiortc._finishing, timeout=2)


async def test_a_handler_that_fails_after_waiting_is_reported_as_failed() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    caught: list[BaseException] = []
    failures: list[BaseException] = []

    async def handler() -> None:
        try:
            await future
        except ValueError as exc:
            caught.append(exc)
            raise RuntimeError("and then it failed") from exc

    _aiortc._run_now(handler(), failures.append)
    (task,) = _aiortc._finishing
    future.set_exception(ValueError("the wait failed"))
    with pytest.raises(RuntimeError, match="and then it failed"):
        await task
    assert [str(e) for e in caught] == ["the wait failed"]
    assert [str(e) for e in failures] == ["and then it failed"]


@pytest.mark.parametrize("started", [False, True], ids=["before-its-step", "while-waiting"])
async def test_cancelling_the_task_that_finishes_a_handler_ends_the_handler(
    started: bool,
) -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    seen: list[str] = []

    async def handler() -> None:
        try:
            await future
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            seen.append("ended")

    _aiortc._run_now(handler(), _unexpected)
    (task,) = _aiortc._finishing
    if started:
        await asyncio.sleep(0)  # the task's first step: it waits on the handler's future
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # the done callbacks
    assert seen == (["cancelled", "ended"] if started else ["ended"])
    assert not _aiortc._finishing


class _Router:
    def __init__(self, recipients: list[Any]) -> None:
        self.recipients = recipients
        self.routed: list[AnyRtcpPacket] = []

    def route_rtcp(self, packet: AnyRtcpPacket) -> set[Any]:
        self.routed.append(packet)
        return set(self.recipients)


class _Recipient:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.packets: list[AnyRtcpPacket] = []

    async def _handle_rtcp_packet(self, packet: AnyRtcpPacket) -> None:
        self.packets.append(packet)
        if self.fail:
            raise RuntimeError("this handler failed")


def _receiver_of(
    unprotect: Callable[[bytes], bytes], recipients: list[Any]
) -> tuple[Callable[[bytes], None], _Router, _aiortc.FastPath]:
    router = _Router(recipients)
    dtls = SimpleNamespace(_rtp_router=router, _rx_srtp=SimpleNamespace(unprotect_rtcp=unprotect))
    fast = _aiortc.FastPath(256)
    return _aiortc._rtcp_receiver(dtls, fast), router, fast  # type: ignore[arg-type]


def test_a_truncated_remb_is_dropped_by_the_real_router() -> None:
    # aiortc's router unpacks a REMB's SSRC list while routing: a count larger than the
    # list raised struct.error out of the reader's callback (logged per datagram).
    fast = _aiortc.FastPath(256)
    dtls = SimpleNamespace(
        _rtp_router=RtpRouter(), _rx_srtp=SimpleNamespace(unprotect_rtcp=lambda data: data)
    )
    receive = _aiortc._rtcp_receiver(dtls, fast)  # type: ignore[arg-type]
    truncated = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=5, media_ssrc=0, fci=b"REMB" + bytes([9, 0, 0, 0]) + bytes(4)
    )
    receive(bytes(truncated) + bytes(RtcpByePacket(sources=[5])))
    assert fast.errors == 0


def test_received_rtcp_reaches_every_recipient_and_a_failing_one_costs_nothing_more() -> None:
    good, bad = _Recipient(), _Recipient(fail=True)
    receive, router, fast = _receiver_of(lambda data: data, [bad, good])
    compound = bytes(RtcpRrPacket(ssrc=5)) + bytes(RtcpByePacket(sources=[5]))
    receive(compound)
    assert [type(p) for p in router.routed] == [RtcpRrPacket, RtcpByePacket]
    assert [type(p) for p in good.packets] == [RtcpRrPacket, RtcpByePacket]
    assert len(bad.packets) == 2
    assert fast.errors == 2  # counted (and logged once), and the rest went on


@pytest.mark.parametrize(
    "failure",
    [pylibsrtp.Error("authentication failure"), ValueError("too long"), None],
    ids=["srtp", "length", "parse"],
)
def test_received_rtcp_that_fails_srtp_or_parsing_is_dropped(failure: Exception | None) -> None:
    def unprotect(data: bytes) -> bytes:
        if failure is not None:
            raise failure
        return data

    recipient = _Recipient()
    receive, router, fast = _receiver_of(unprotect, [recipient])
    # An SR whose length field claims more than there is (aiortc's parse: ValueError), and
    # a truncated report block (struct.error, which aiortc's own task would die of).
    receive(b"\x81\xc8\x00\x0c" + bytes(8))
    receive(struct.pack("!BBHL", 0x81, 201, 1, 5))
    assert router.routed == []
    assert recipient.packets == []
    assert fast.errors == 0


# --- end to end -------------------------------------------------------------------------------


def _record_rtcp(pc: RTCPeerConnection) -> list[AnyRtcpPacket]:
    """Every RTCP packet a client peer receives (aiortc's task handles it there)."""
    received: list[AnyRtcpPacket] = []
    (dtls,) = {t.receiver.transport for t in pc.getTransceivers()}
    original = dtls._handle_rtcp_data

    async def handle(data: bytes) -> None:
        received.extend(RtcpPacket.parse(data))
        await original(data)

    dtls._handle_rtcp_data = handle  # type: ignore[method-assign]
    return received


async def test_a_call_is_reported_from_one_timer_and_its_rtcp_handled_at_once(
    room: LoopbackRoom, vp8_clip: Clip, opus_clip: Clip
) -> None:
    loop = asyncio.get_running_loop()
    gateway_rtcp_tasks: list[bytes] = []
    pub = await room.add_publisher("ptc_pub", video=vp8_clip, audio=opus_clip)
    sub = await room.add_subscriber("ptc_sub")
    for client in (pub, sub):
        gateway_pc = client.gateway.peer_connection
        assert gateway_pc is not None
        for transceiver in gateway_pc.getTransceivers():
            dtls = transceiver.receiver.transport
            original = dtls._handle_rtcp_data

            async def in_task(data: bytes, original: Any = original) -> None:
                gateway_rtcp_tasks.append(data)
                await original(data)

            dtls._handle_rtcp_data = in_task  # type: ignore[method-assign]
    to_publisher, to_subscriber = _record_rtcp(pub.pc), _record_rtcp(sub.pc)

    # The gateway's two receivers (the publisher's audio and video) and two senders (to
    # the subscriber): one timer reports for all four.
    reports = _aiortc._Reports.of(loop)
    assert len(reports) == 4
    assert reports.timer is not None
    stats = room.forwarder.stats
    assert await wait_for(lambda: stats.sender_reports_received >= 4, timeout=5)
    await asyncio.sleep(1.6)

    sender_ssrcs = {
        _aiortc.sender_ssrcs(t.sender)[0]
        for t in sub.gateway.peer_connection.getTransceivers()  # type: ignore[union-attr]
    }
    reported = {p.ssrc for p in to_subscriber if isinstance(p, RtcpSrPacket)}
    assert reported == sender_ssrcs
    assert {c.ssrc for p in to_subscriber if isinstance(p, RtcpSdesPacket) for c in p.chunks} == (
        sender_ssrcs
    )
    published = {t.sender._ssrc for t in pub.pc.getTransceivers()}
    blocks = {r.ssrc for p in to_publisher if isinstance(p, RtcpRrPacket) for r in p.reports}
    assert blocks == published
    # The publisher's sender reports reached the forwarder without the DTLS task.
    assert gateway_rtcp_tasks == []

    await room.close()
    assert len(reports) == 0
    assert reports.timer is None
    # The gateway's senders said BYE on the way out, as aiortc's do.
    byes = {p.sources[0] for p in to_subscriber if isinstance(p, RtcpByePacket)}
    assert byes == sender_ssrcs
