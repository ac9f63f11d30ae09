"""The compiled path (gateway/media/_native.pyx) against the Python path it stands in for.

Two forwarders get the same packets: one only through the Python path, the other
through a lane (real SRTP both ways, a real UDP socket out). Whatever the lane forwards
itself, and whatever it hands back, the subscriber must receive the same bytes (but for
abs-send-time, which is the clock's) and both forwarders must end in the same state.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pylibsrtp
import pytest
from aiortc.rtp import HeaderExtensions, RtpPacket

from gateway.media import _aiortc
from gateway.media.counters import TrackCounters
from gateway.media.forwarder import RoomForwarder
from gateway.media.receive_statistics import ReceiveStatistics
from gateway.media.tracks import PublishedTrack, SubscribedTrack
from tests.factories import make_settings
from tests.media_plane.fakes import (
    VP8_CONTINUATION,
    VP8_KEYFRAME_START,
    FakeSink,
    extension_map,
    extensions,
    published,
    subscribed,
)
from tests.media_plane.harness import wait_for

LOOPBACK = "127.0.0.1"
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
ABS_ID = 9  # extensions()'s abs-send-time id, on both legs
CONNECTED = _aiortc._DTLS_CONNECTED


def test_the_compiled_path_is_built() -> None:
    # CI builds it (scripts/dev.sh installs a C compiler); without it the gateway works,
    # at several times the CPU per packet, and this says so.
    assert _aiortc.native_available()


def test_the_setting_turns_it_off() -> None:
    assert make_settings().media_native is True
    assert make_settings(media_native="false").media_native is False


def _session(key: bytes, direction: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(
        policy=pylibsrtp.Policy(key=key, ssrc_type=direction, srtp_profile=PROFILE)
    )


def _without_abs_send_time(data: bytes) -> bytes:
    """The packet with abs-send-time's value zeroed (one-byte extension form)."""
    first = data[0]
    if not first & 0x10:
        return data
    at = 12 + 4 * (first & 0x0F)
    length = int.from_bytes(data[at + 2 : at + 4], "big") * 4
    out = bytearray(data)
    pos, end = at + 4, at + 4 + length
    while pos < end:
        if out[pos] == 0:
            pos += 1
            continue
        x_id, x_len = out[pos] >> 4, (out[pos] & 0x0F) + 1
        if x_id == ABS_ID:
            out[pos + 1 : pos + 1 + x_len] = bytes(x_len)
        pos += 1 + x_len
    return bytes(out)


class SocketSink:
    """A subscriber's leg as the lane sees it (``SenderSink``'s fields) and as the
    Python path uses it: SRTP with one session, out of one UDP socket."""

    def __init__(self, sock: socket.socket, to: tuple[str, int], key: bytes) -> None:
        self._sock = sock
        self._to = to
        self._tx = _session(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        pair = object()
        #: asyncio's transport as ``Out`` reads it: its write buffer.
        self.transport = SimpleNamespace(_buffer=collections.deque())
        address = _aiortc._sockaddr(socket.AF_INET, to)
        assert address is not None
        out = _aiortc._native.Out(
            pair,
            self.transport,
            sock.fileno(),
            address,
            self._tx,
            _aiortc._srtp_pointer(self._tx),
        )
        self._leg = SimpleNamespace(
            _out=out, drop=None, _nominated={1: pair}, _dtls=SimpleNamespace(_state=CONNECTED)
        )
        self.counters: TrackCounters | None = None
        self.reports: list[tuple[int, int]] = []

    def send(self, data: bytes) -> bool:
        self._sock.sendto(self._tx.protect(data), self._to)
        return True

    def report(self, *, ntp_timestamp: int, rtp_timestamp: int) -> None:
        self.reports.append((ntp_timestamp, rtp_timestamp))

    def count_from(self, counters: TrackCounters) -> None:
        self.counters = counters


@dataclass
class Side:
    """One forwarder with one publisher track and its subscribers."""

    forwarder: RoomForwarder
    source: PublishedTrack
    statistics: dict[int, ReceiveStatistics] = field(default_factory=dict)
    targets: list[SubscribedTrack] = field(default_factory=list)

    def receive(self, packet: RtpPacket) -> None:
        """What ``intercept_receiver`` and ``_Inbound.rtp`` do with a parsed packet."""
        stream = self.statistics.setdefault(packet.ssrc, ReceiveStatistics(90000))
        stream.add(packet)
        self.forwarder.forward(self.source, packet)


class Pair:
    """The Python-only side and the lane's side, fed the same packets.

    With ``through_socket``, the lane's side gets each datagram as the gateway does:
    through a UDP socket that a :class:`_native.Reader` reads; otherwise straight into
    ``Lane.receive``.
    """

    def __init__(self, *, through_socket: bool = False) -> None:
        self.ext = extension_map(extensions())
        self.python = Side(RoomForwarder(room_id="rm_py"), published()[0])
        self.native = Side(RoomForwarder(room_id="rm_c"), published()[0])
        in_key = secrets.token_bytes(30)
        self._publisher = _session(in_key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        dtls = SimpleNamespace(
            _rx_srtp=_session(in_key, pylibsrtp.Policy.SSRC_ANY_INBOUND), _state=CONNECTED
        )
        self.fast = _aiortc.FastPath(256)
        ids = getattr(self.ext, _aiortc._HEADER_IDS)
        self.lane = _aiortc._native.Lane(
            dtls, CONNECTED, self.fast, time.monotonic, _aiortc._srtp_pointer, ids
        )
        self.fast.lanes.append(self.lane)
        self.sinks: list[tuple[FakeSink, socket.socket, pylibsrtp.Session]] = []
        self.sockets: list[socket.socket] = []
        self.sent: list[bytes] = []
        self.handed_back = 0
        self.refused = 0
        self.reader: Any = None
        self._plain: list[bytes] = []
        if through_socket:
            inbound = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            inbound.bind((LOOPBACK, 0))
            inbound.setblocking(False)
            self._from = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._from.bind((LOOPBACK, 0))
            self._to = inbound.getsockname()
            self.sockets += [inbound, self._from]
            self.reader = _aiortc._native.Reader(
                inbound.fileno(),
                SimpleNamespace(_closing=False),
                self.lane,
                _unexpected,
                self._plain.append,
                _unexpected,
                _unexpected,
                _unexpected,
            )

    async def start(self) -> None:
        await self.python.forwarder.publish(self.python.source)
        await self.native.forwarder.publish(self.native.source)

    async def add_subscriber(self, name: str) -> None:
        out_key = secrets.token_bytes(30)
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind((LOOPBACK, 0))
        receiver.setblocking(False)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind((LOOPBACK, 0))
        self.sockets += [receiver, sender]
        python_target, python_sink = subscribed(f"ptc_{name}", mid=name)
        native_target, _ = subscribed(f"ptc_{name}", mid=name)
        native_target.sink = SocketSink(sender, receiver.getsockname(), out_key)
        native_target.sink.count_from(native_target.counters)
        # Both legs start from the same (otherwise random) numbers.
        for attr in ("_last_seq", "_last_ts"):
            setattr(native_target.rewriter, attr, getattr(python_target.rewriter, attr))
        await self.python.forwarder.add_subscriber(python_target)
        await self.native.forwarder.add_subscriber(native_target)
        self.python.targets.append(python_target)
        self.native.targets.append(native_target)
        unprotect = _session(out_key, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        self.sinks.append((python_sink, receiver, unprotect))

    def deliver(self, packet: RtpPacket) -> str:
        """One publisher packet to both sides; which path the lane's side took."""
        data = packet.serialize(self.ext)
        self.python.receive(RtpPacket.parse(data, self.ext))
        protected = self._publisher.protect(data)
        return self.deliver_protected(protected, data)

    def deliver_protected(self, protected: bytes, data: bytes | None = None) -> str:
        if self.reader is None:
            result = self.lane.receive(protected)
        else:
            forwarded, handed_back = self.lane.forwarded, self.lane.handed_back
            self._from.sendto(protected, self._to)
            self.reader.ready()
            if self.lane.forwarded > forwarded:
                result = None
            elif self.lane.handed_back > handed_back:
                (result,) = self._plain
                self._plain.clear()
            else:
                result = False
        if result is None:
            return "native"
        if result is False:
            self.refused += 1
            return "refused"
        assert isinstance(result, bytes)
        if data is not None:
            assert result == data
        self.handed_back += 1
        packet = RtpPacket.parse(result, self.ext)
        self.native.receive(packet)
        if packet.ssrc not in self.lane.routes:
            self.lane.learn(
                packet.ssrc,
                self.native.forwarder,
                self.native.source,
                self.native.statistics[packet.ssrc],
            )
        return "python"

    def received(self) -> Iterator[tuple[list[bytes], list[bytes]]]:
        """Per subscriber: what the Python side sent, what the lane's side sent."""
        for sink, receiver, unprotect in self.sinks:
            got: list[bytes] = []
            while True:
                try:
                    got.append(unprotect.unprotect(receiver.recv(2048)))
                except BlockingIOError:
                    break
            yield list(sink.sent), got

    def assert_same(self) -> None:
        for python_sent, native_sent in self.received():
            assert [_without_abs_send_time(d) for d in native_sent] == [
                _without_abs_send_time(d) for d in python_sent
            ]
        py, c = self.python, self.native
        assert c.forwarder.stats.as_dict() == py.forwarder.stats.as_dict()
        assert c.source.counters == py.source.counters
        assert c.source.missing.highest == py.source.missing.highest
        assert c.source.missing.missing == py.source.missing.missing
        for ssrc, stream in py.statistics.items():
            other = c.statistics[ssrc]
            for name in ("base_seq", "max_seq", "cycles", "packets_received", "_last_timestamp"):
                assert getattr(other, name) == getattr(stream, name), name
        for python_target, native_target in zip(py.targets, c.targets, strict=True):
            assert native_target.counters == python_target.counters
            for attr in ("_epoch", "_seq_offset", "_ts_offset", "_last_seq", "_last_ts"):
                assert getattr(native_target.rewriter, attr) == getattr(
                    python_target.rewriter, attr
                )
            sink: Any = native_target.sink
            assert sink.counters is native_target.counters  # what its reports read
            assert python_target.history is not None
            assert native_target.history is not None
            python_history = [
                None if d is None else _without_abs_send_time(d)
                for d in (python_target.history.get(s) for s in range(65536))
            ]
            native_history = [
                None if d is None else _without_abs_send_time(d)
                for d in (native_target.history.get(s) for s in range(65536))
            ]
            assert native_history == python_history


def video(
    seq: int,
    ts: int,
    payload: bytes = VP8_CONTINUATION,
    *,
    ssrc: int = 0x1111,
    pt: int = 96,
    marker: int = 0,
    csrc: list[int] | None = None,
    padding: int = 0,
    level: tuple[bool, int] | None = None,
    mid: str | None = None,
) -> RtpPacket:
    packet = RtpPacket(
        payload_type=pt,
        marker=marker,
        sequence_number=seq % 65536,
        timestamp=ts,
        ssrc=ssrc,
        payload=payload,
    )
    packet.csrc = list(csrc or [])
    packet.padding_size = padding
    packet.extensions = HeaderExtensions()
    packet.extensions.abs_send_time = 0x123456
    packet.extensions.audio_level = level
    packet.extensions.mid = mid
    return packet


def _unexpected(*args: Any) -> None:
    raise AssertionError(f"unexpected call with {args!r}")


@pytest.fixture(params=["lane", "reader"])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    pair = Pair(through_socket=request.param == "reader")
    await pair.start()
    await pair.add_subscriber("7")
    yield pair
    for sock in pair.sockets:
        sock.close()


async def test_steady_video_is_forwarded_in_c_byte_for_byte(pair: Pair) -> None:
    paths = [pair.deliver(video(100, 3000, VP8_KEYFRAME_START, mid="0"))]
    paths += [pair.deliver(video(seq, 3000 + seq // 3 * 3000)) for seq in range(101, 140)]
    # The keyframe goes through Python (the subscriber waits for it, the SSRC is new);
    # once the lane knows the SSRC, the rest is forwarded in C.
    assert paths[0] == "python"
    assert paths[1:].count("native") >= 38
    pair.assert_same()
    assert pair.fast.native_packets == paths.count("native")
    assert pair.fast.packets == paths.count("native")  # the Python side counts the rest


async def test_a_route_learnt_again_replaces_the_one_the_lane_remembers(pair: Pair) -> None:
    assert pair.deliver(video(100, 3000, VP8_KEYFRAME_START)) == "python"
    assert pair.deliver(video(101, 3000)) == "native"  # the lane now remembers the route
    # The SSRC now feeds another forwarder, where that publisher's track is not
    # published: the lane must hand its packets back instead of using the old route.
    elsewhere = RoomForwarder(room_id="rm_other")
    ssrc = next(iter(pair.lane.routes))
    pair.lane.learn(ssrc, elsewhere, pair.native.source, pair.native.statistics[ssrc])
    assert pair.lane.routes[ssrc] is not None
    assert pair.deliver(video(102, 6000)) == "python"
    # Learnt back, it is forwarded here again.
    pair.lane.learn(ssrc, pair.native.forwarder, pair.native.source, pair.native.statistics[ssrc])
    assert pair.deliver(video(103, 6000)) == "native"
    pair.assert_same()


async def test_csrc_padding_audio_level_marker_and_wraparound_match(pair: Pair) -> None:
    pair.deliver(video(65530, 1000, VP8_KEYFRAME_START))
    paths = [
        pair.deliver(video(65531, 1000, marker=1, csrc=[0xC0FFEE, 7])),
        pair.deliver(video(65532, 4000, padding=13)),
        pair.deliver(video(65533, 4000, level=(True, 42))),
        pair.deliver(video(65534, 4000, level=(False, 127), mid="video")),
        pair.deliver(video(65535, 4000, marker=1)),
        pair.deliver(video(0, 0xFFFFFFFF)),
        pair.deliver(video(1, 2000, padding=1, csrc=[1])),
        # Fifteen CSRCs, the most a header can name (60 bytes of them), with extensions.
        pair.deliver(video(2, 2000, csrc=list(range(15)), level=(True, 1))),
    ]
    assert paths == ["native"] * 8
    pair.assert_same()


async def test_gaps_rtx_and_replays_go_back_to_python_and_end_the_same(pair: Pair) -> None:
    pair.deliver(video(10, 1000, VP8_KEYFRAME_START))
    assert pair.deliver(video(11, 1000)) == "native"
    # A gap: the Python path NACKs it (and the late packets fill it) before C resumes.
    assert pair.deliver(video(14, 4000)) == "python"
    assert pair.deliver(video(12, 1000)) == "python"
    assert pair.deliver(video(15, 4000)) == "python"  # 13 is still missing
    rtx_payload = (13).to_bytes(2, "big") + VP8_CONTINUATION
    assert pair.deliver(video(500, 4000, rtx_payload, ssrc=0x2222, pt=97)) == "python"
    assert pair.deliver(video(16, 4000)) == "native"
    # A replayed datagram is refused by SRTP on the lane, as it would be on aiortc's path.
    data = video(17, 4000).serialize(pair.ext)
    protected = pair._publisher.protect(data)
    pair.python.receive(RtpPacket.parse(data, pair.ext))
    assert pair.deliver_protected(protected, data) == "native"
    assert pair.deliver_protected(protected) == "refused"
    pair.assert_same()
    assert pair.python.forwarder.stats.nacks_sent_upstream == 1
    assert pair.python.forwarder.stats.retransmissions_received == 1


async def test_a_new_subscriber_a_tap_and_a_keyframe_request_go_back_to_python(
    pair: Pair,
) -> None:
    pair.deliver(video(1, 1000, VP8_KEYFRAME_START))
    assert pair.deliver(video(2, 1000)) == "native"
    # A second subscriber waits for a keyframe: the packets go through Python meanwhile.
    await pair.add_subscriber("9")
    assert pair.deliver(video(3, 4000)) == "python"
    assert pair.deliver(video(4, 7000, VP8_KEYFRAME_START)) == "python"
    assert pair.deliver(video(5, 7000)) == "native"
    # A recorder's tap sees every packet, so the room goes back to Python while it runs.
    tapped: list[int] = []

    def tap(source: PublishedTrack, fmt: Any, packet: RtpPacket) -> bool:
        tapped.append(packet.sequence_number)
        return False

    pair.python.forwarder.add_tap(tap)
    pair.native.forwarder.add_tap(tap)
    assert pair.deliver(video(6, 7000)) == "python"
    pair.python.forwarder.remove_tap(tap)
    pair.native.forwarder.remove_tap(tap)
    assert pair.deliver(video(7, 7000)) == "native"
    # A subscriber's PLI: the Python path asks the publisher until a keyframe comes.
    for side in (pair.python, pair.native):
        side.source.keyframe_wanted = True
    assert pair.deliver(video(8, 10000)) == "python"
    assert pair.deliver(video(9, 13000, VP8_KEYFRAME_START)) == "python"
    assert pair.deliver(video(10, 13000)) == "native"
    assert tapped == [6, 6]
    pair.assert_same()


async def test_malformed_packets_are_handed_back_untouched(pair: Pair) -> None:
    pair.deliver(video(1, 1000, VP8_KEYFRAME_START))
    good = video(2, 1000).serialize(pair.ext)
    assert good[0] & 0x10
    for number, data in enumerate(
        (
            # An audio-level element two bytes long (aiortc's parser raises on it).
            good[:12] + bytes([0xBE, 0xDE, 0, 1, (10 << 4) | 1, 0, 0, 0]) + b"payload",
            # A one-byte element longer than the extension block, a bad version, bad padding.
            good[:12] + bytes([0xBE, 0xDE, 0, 1, (10 << 4) | 7, 0, 0, 0]) + b"payload",
            bytes([0x40]) + good[1:],
            bytes([good[0] | 0x20]) + good[1:-1] + b"\xff",
        )
    ):
        data = data[:2] + (50 + number).to_bytes(2, "big") + data[4:]  # no replays
        assert pair.lane.receive(pair._publisher.protect(data)) == data
    # The Python path parses them and drops them; nothing was counted or sent here.
    assert pair.native.forwarder.stats.packets_in == 1
    assert pair.deliver(video(2, 1000)) == "native"
    pair.assert_same()


async def test_a_leg_that_cannot_send_in_c_goes_back_to_python(pair: Pair) -> None:
    pair.deliver(video(1, 1000, VP8_KEYFRAME_START))
    sink: Any = pair.native.targets[0].sink
    sink._leg.drop = lambda data: False  # fault injection lives in Python
    assert pair.deliver(video(2, 1000)) == "python"
    sink._leg.drop = None
    sink._leg._nominated[1] = object()  # another pair was nominated
    assert pair.deliver(video(3, 1000)) == "python"
    pair.assert_same()


async def test_copies_wait_behind_what_asyncio_has_buffered(pair: Pair) -> None:
    pair.deliver(video(1, 1000, VP8_KEYFRAME_START))
    sink: Any = pair.native.targets[0].sink
    # The socket was full once: asyncio holds a datagram until it can write again, and
    # copies sent past it would overtake it.
    sink.transport._buffer.append((b"held", ("127.0.0.1", 9)))
    assert pair.deliver(video(2, 1000)) == "python"
    sink.transport._buffer.clear()
    assert pair.deliver(video(3, 1000)) == "native"
    pair.assert_same()


async def test_subscribers_leaving_and_joining_change_who_gets_copies_in_c(pair: Pair) -> None:
    await pair.add_subscriber("9")
    pair.deliver(video(1, 1000, VP8_KEYFRAME_START))
    assert pair.deliver(video(2, 1000)) == "native"
    # The first subscriber leaves: the second is now first in the forwarder's list.
    for side in (pair.python, pair.native):
        await side.forwarder.remove_participant("ptc_7")
    assert pair.deliver(video(3, 1000)) == "native"
    await pair.add_subscriber("5")
    assert pair.deliver(video(4, 4000)) == "python"  # the new one waits for a keyframe
    assert pair.deliver(video(5, 7000, VP8_KEYFRAME_START)) == "python"
    assert pair.deliver(video(6, 7000)) == "native"
    for side in (pair.python, pair.native):
        await side.forwarder.remove_participant("ptc_9")
        await side.forwarder.remove_participant("ptc_5")
    assert pair.deliver(video(7, 7000)) == "native"  # nobody left to send to
    pair.assert_same()
    gone = [python_sent for python_sent, _ in pair.received()]
    assert [len(sent) for sent in gone] == [2, 6, 2]


# --- the compiled path's socket reader ------------------------------------------------------


class Sorted:
    """A Reader on a fresh socket whose DTLS transport is not connected yet, and what it
    sorted where."""

    def __init__(self, family: int = socket.AF_INET, host: str = LOOPBACK) -> None:
        self.dtls = SimpleNamespace(_state="new", _rx_srtp=None)
        self.lane = _aiortc._native.Lane(
            self.dtls, CONNECTED, _aiortc.FastPath(256), time.monotonic, _aiortc._srtp_pointer,
            getattr(extension_map(extensions()), _aiortc._HEADER_IDS),
        )  # fmt: skip
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.sender = socket.socket(family, socket.SOCK_DGRAM)
        self.sender.bind((host, 0))
        self.transport = SimpleNamespace(_closing=False)
        self.other: list[tuple[bytes, Any]] = []
        self.plain: list[bytes] = []
        self.errors: list[BaseException] = []
        self.reported: list[BaseException] = []
        self.reader = _aiortc._native.Reader(
            self.sock.fileno(),
            self.transport,
            self.lane,
            lambda data, addr: self.other.append((data, addr)),
            self.plain.append,
            _unexpected,
            self.errors.append,
            self.reported.append,
        )

    def send(self, *datagrams: bytes) -> None:
        for data in datagrams:
            self.sender.sendto(data, self.sock.getsockname())

    def close(self) -> None:
        self.sock.close()
        self.sender.close()


@pytest.fixture
def sorted_() -> Iterator[Sorted]:
    sorted_ = Sorted()
    yield sorted_
    sorted_.close()


def test_the_reader_gives_stun_dtls_and_srtcp_to_aioice_as_recvfrom_would(
    sorted_: Sorted,
) -> None:
    stun = b"\x00\x01\x00\x00" + bytes(16)
    dtls = b"\x16\xfe\xfd" + bytes(40)
    srtcp = b"\x81\xc9\x00\x07" + bytes(40)  # a receiver report (RFC 5761: 200)
    empty = b""
    # SRTP before DTLS is up goes to aioice too, as it does without the reader.
    early_rtp = b"\x80\x60" + bytes(40)
    sorted_.send(stun, dtls, srtcp, empty, early_rtp)
    sorted_.reader.ready()
    expected = sorted_.sender.getsockname()
    assert sorted_.other == [(d, expected) for d in (stun, dtls, srtcp, empty, early_rtp)]
    assert all(type(addr) is tuple for _, addr in sorted_.other)
    assert sorted_.plain == []
    assert (sorted_.reader.reads, sorted_.reader.datagrams) == (1, 5)


def test_the_reader_gives_srtcp_on_a_connected_transport_to_its_rtcp_handler(
    sorted_: Sorted,
) -> None:
    rtcp: list[bytes] = []

    def handle(data: bytes) -> None:
        rtcp.append(data)
        if len(rtcp) == 2:
            raise RuntimeError("the RTCP handler failed")

    reader = _aiortc._native.Reader(
        sorted_.sock.fileno(), sorted_.transport, sorted_.lane,
        lambda data, addr: sorted_.other.append((data, addr)),
        _unexpected, _unexpected, _unexpected, sorted_.reported.append, handle,
    )  # fmt: skip
    receiver_report = b"\x81\xc9\x00\x07" + bytes(40)
    sender_report = b"\x80\xc8\x00\x06" + bytes(40)
    stun = b"\x00\x01\x00\x00" + bytes(16)
    sorted_.send(receiver_report)
    reader.ready()  # before DTLS is up: aioice's, as before
    sorted_.dtls._state = CONNECTED
    sorted_.send(receiver_report, sender_report, stun)
    reader.ready()
    assert rtcp == [receiver_report, sender_report]
    assert [d for d, _ in sorted_.other] == [receiver_report, stun]
    assert [str(e) for e in sorted_.reported] == ["the RTCP handler failed"]


def test_the_reader_gives_ipv6_addresses_as_recvfrom_would() -> None:
    sorted_ = Sorted(socket.AF_INET6, "::1")
    try:
        sorted_.send(b"\x00\x01")
        sorted_.reader.ready()
        # (host, port, flowinfo, scope_id), as socket.recvfrom and getsockname give it.
        assert sorted_.other == [(b"\x00\x01", sorted_.sender.getsockname())]
        assert len(sorted_.other[0][1]) == 4
    finally:
        sorted_.close()


def test_the_reader_tells_senders_apart(sorted_: Sorted) -> None:
    # Several remote candidates on one socket (and STUN answered to each): every
    # datagram keeps its own sender, whatever came just before it.
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with other:
        other.bind((LOOPBACK, 0))
        for n in range(3):
            sorted_.send(b"\x00\x01" + bytes([n]))
            other.sendto(b"\x00\x02" + bytes([n]), sorted_.sock.getsockname())
        sorted_.reader.ready()
        first, second = sorted_.sender.getsockname(), other.getsockname()
        assert [addr for _, addr in sorted_.other] == [first, second] * 3


def test_the_reader_gives_ipv4_mapped_senders_as_recvfrom_would() -> None:
    sorted_ = Sorted(socket.AF_INET6, "::1")
    dual = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        dual.bind(("::", 0))
        dual.setblocking(False)
        v4.bind((LOOPBACK, 0))
        port = dual.getsockname()[1]
        v4.sendto(b"\x00\x01", (LOOPBACK, port))
        sorted_.sender.sendto(b"\x00\x02", ("::1", port))
        v4.sendto(b"\x00\x03", (LOOPBACK, port))
        reader = _aiortc._native.Reader(
            dual.fileno(), sorted_.transport, sorted_.lane,
            lambda data, addr: sorted_.other.append((data, addr)),
            _unexpected, _unexpected, _unexpected, _unexpected,
        )  # fmt: skip
        reader.ready()
        mapped = ("::ffff:127.0.0.1", v4.getsockname()[1], 0, 0)
        assert sorted_.other == [
            (b"\x00\x01", mapped),
            (b"\x00\x02", sorted_.sender.getsockname()),
            (b"\x00\x03", mapped),
        ]
    finally:
        dual.close()
        v4.close()
        sorted_.close()


def test_the_reader_drops_srtp_too_long_for_the_srtp_library(sorted_: Sorted) -> None:
    sorted_.dtls._state = CONNECTED
    sorted_.send(b"\x80\x60" + bytes(1600), b"\x81\xc9" + bytes(1600), b"\x00\x01" + bytes(3000))
    sorted_.reader.ready()
    # The two SRTP-looking ones went nowhere; the third is not SRTP, and aioice gets it.
    assert sorted_.other == [(b"\x00\x01" + bytes(3000), sorted_.sender.getsockname())]
    assert sorted_.plain == []
    assert sorted_.lane.forwarded == sorted_.lane.handed_back == 0


def test_the_reader_drains_a_burst_in_batches_and_then_lets_the_loop_go_on(
    sorted_: Sorted,
) -> None:
    datagrams = [b"\x00" + bytes([n]) for n in range(70)]
    sorted_.send(*datagrams)
    sorted_.reader.ready()
    # Four reads of 16, then the event loop's other sockets get their turn.
    assert (sorted_.reader.reads, sorted_.reader.datagrams) == (4, 64)
    sorted_.reader.ready()
    assert (sorted_.reader.reads, sorted_.reader.datagrams) == (5, 70)
    assert [d for d, _ in sorted_.other] == datagrams  # every one, in order
    sorted_.reader.ready()  # nothing waiting: one empty read, nothing else
    assert sorted_.reader.datagrams == 70
    assert sorted_.errors == []


def test_a_failing_handler_costs_its_datagram_only(sorted_: Sorted) -> None:
    seen: list[bytes] = []

    def other(data: bytes, addr: Any) -> None:
        seen.append(data)
        if data == b"\x00\x02":
            raise RuntimeError("aioice failed")

    reader = _aiortc._native.Reader(
        sorted_.sock.fileno(), sorted_.transport, sorted_.lane, other,
        _unexpected, _unexpected, _unexpected, sorted_.reported.append,
    )  # fmt: skip
    sorted_.send(b"\x00\x01", b"\x00\x02", b"\x00\x03")
    reader.ready()
    assert seen == [b"\x00\x01", b"\x00\x02", b"\x00\x03"]
    assert [str(e) for e in sorted_.reported] == ["aioice failed"]


async def test_a_failure_on_the_python_path_costs_its_packet_only() -> None:
    pair = Pair(through_socket=True)
    try:
        await pair.start()
        await pair.add_subscriber("7")
        failures: list[BaseException] = []
        stun: list[bytes] = []

        def plain(data: bytes) -> None:
            raise RuntimeError("the Python path failed")

        pair.reader = _aiortc._native.Reader(
            pair.sockets[0].fileno(), SimpleNamespace(_closing=False), pair.lane,
            lambda data, addr: stun.append(data), plain, failures.append,
            _unexpected, _unexpected,
        )  # fmt: skip
        # A new SSRC goes back to Python, which fails; the STUN after it still arrives.
        data = video(1, 1000, VP8_KEYFRAME_START).serialize(pair.ext)
        pair._from.sendto(pair._publisher.protect(data), pair._to)
        pair._from.sendto(b"\x00\x01", pair._to)
        pair.reader.ready()
        assert [str(e) for e in failures] == ["the Python path failed"]
        assert stun == [b"\x00\x01"]
    finally:
        for sock in pair.sockets:
            sock.close()


def test_a_closing_transport_stops_the_reader_at_once(sorted_: Sorted) -> None:
    def other(data: bytes, addr: Any) -> None:
        sorted_.other.append((data, addr))
        sorted_.transport._closing = True  # e.g. the datagram ended the session

    reader = _aiortc._native.Reader(
        sorted_.sock.fileno(), sorted_.transport, sorted_.lane, other,
        _unexpected, _unexpected, _unexpected, _unexpected,
    )  # fmt: skip
    sorted_.send(b"\x00\x01", b"\x00\x02")
    reader.ready()
    reader.ready()
    assert [d for d, _ in sorted_.other] == [b"\x00\x01"]


def test_a_socket_error_goes_to_the_protocol_as_asyncio_reports_it(sorted_: Sorted) -> None:
    # A connected UDP socket learns of the ICMP "port unreachable" on its next read.
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind((LOOPBACK, 0))
    nobody = closed.getsockname()
    closed.close()
    sorted_.sock.connect(nobody)
    sorted_.sock.send(b"anyone?")
    sorted_.reader.ready()
    assert [type(e) for e in sorted_.errors] == [ConnectionRefusedError]
    assert sorted_.other == []


async def test_the_fast_path_reads_with_the_reader_and_closing_removes_it() -> None:
    loop = asyncio.get_running_loop()
    selector = loop._selector  # type: ignore[attr-defined]
    got: list[tuple[bytes, Any]] = []
    lost: list[Exception | None] = []

    class Protocol(asyncio.DatagramProtocol):
        transport: Any = None

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            got.append((data, addr))

        def connection_lost(self, exc: Exception | None) -> None:
            # Heard before the socket is closed: the poller let go of it while open.
            fd = self.transport.get_extra_info("socket").fileno()
            assert fd >= 0
            assert fd not in watched(poller)
            lost.append(exc)

    endpoints = [
        await loop.create_datagram_endpoint(Protocol, local_addr=(LOOPBACK, 0)) for _ in range(2)
    ]
    sorted_ = Sorted()
    try:
        fast = _aiortc.FastPath(256)
        for _, protocol in endpoints:
            assert _aiortc._read_natively(
                protocol,
                sorted_.lane,
                protocol.datagram_received,
                _unexpected,
                _unexpected,
                fast,  # type: ignore[arg-type]
            )
        readers = fast.readers
        poller = getattr(loop, _aiortc._POLLER)
        assert all(reader in poller for reader in readers)
        # The loop watches the poller's one descriptor, not the sockets.
        assert selector.get_key(poller.fileno()).data[0]._callback == poller.ready
        fds = [transport.get_extra_info("socket").fileno() for transport, _ in endpoints]
        for fd in fds:
            with pytest.raises(KeyError):
                selector.get_key(fd)
        for transport, _ in endpoints:
            sorted_.sender.sendto(b"\x00\x01", transport.get_extra_info("sockname"))
        assert await wait_for(lambda: len(got) == 2, timeout=2)
        # the readers read them, not asyncio's transports
        assert [reader.datagrams for reader in readers] == [1, 1]
        assert got == [(b"\x00\x01", sorted_.sender.getsockname())] * 2
        # Closing one transport takes its reader out; the protocol still hears of it.
        endpoints[0][0].close()
        await asyncio.sleep(0)
        assert lost == [None]
        assert readers[0] not in poller
        assert readers[1] in poller
        assert getattr(loop, _aiortc._POLLER) is poller
        # The last one leaves: the loop stops watching the poller, which is closed.
        epoll = poller.fileno()
        endpoints[1][0].close()
        await asyncio.sleep(0)
        assert lost == [None, None]
        assert len(poller) == 0
        assert poller.fileno() == -1
        with pytest.raises(KeyError):
            selector.get_key(epoll)
        assert not hasattr(loop, _aiortc._POLLER)
        # The next call's first reader makes a new one.
        transport, protocol = endpoints[0] = await loop.create_datagram_endpoint(
            Protocol, local_addr=(LOOPBACK, 0)
        )
        assert _aiortc._read_natively(
            protocol, sorted_.lane, protocol.datagram_received, _unexpected, _unexpected,
            fast,  # type: ignore[arg-type]
        )  # fmt: skip
        assert getattr(loop, _aiortc._POLLER) is not poller
        sorted_.sender.sendto(b"\x00\x02", transport.get_extra_info("sockname"))
        assert await wait_for(lambda: len(got) == 3, timeout=2)
    finally:
        for transport, _ in endpoints:
            transport.close()
        await asyncio.sleep(0)
        sorted_.close()
    assert not hasattr(loop, _aiortc._POLLER)


def watched(poller: Any) -> set[int]:
    """The socket descriptors ``poller``'s epoll set holds, as the kernel lists them."""
    if poller.fileno() < 0:
        return set()
    info = Path(f"/proc/self/fdinfo/{poller.fileno()}").read_text()
    return {int(line.split()[1]) for line in info.splitlines() if line.startswith("tfd:")}


class Polled:
    """A poller and what it reported, and whether it said it was empty."""

    def __init__(self) -> None:
        self.reported: list[BaseException] = []
        self.emptied = 0
        self.poller = _aiortc._native.Poller(self.reported.append, self._empty)

    def _empty(self) -> None:
        self.emptied += 1


def test_the_poller_drains_every_ready_socket_in_one_wake_up() -> None:
    polled, first, second = Polled(), Sorted(), Sorted()
    try:
        polled.poller.add(first.reader)
        polled.poller.add(second.reader)
        polled.poller.add(second.reader)  # again: nothing changes
        assert len(polled.poller) == 2
        polled.poller.ready()  # nothing ready yet
        assert polled.poller.wakeups == 0
        first.send(b"\x00\x01", b"\x00\x02")
        second.send(b"\x00\x03")
        polled.poller.ready()
        assert (polled.poller.wakeups, polled.poller.sockets) == (1, 2)
        assert [d for d, _ in first.other] == [b"\x00\x01", b"\x00\x02"]
        assert [d for d, _ in second.other] == [b"\x00\x03"]
        # A burst longer than a reader's turn waits for the next wake-up.
        first.send(*[b"\x00" + bytes([n]) for n in range(70)])
        polled.poller.ready()
        assert first.reader.datagrams == 2 + 64
        polled.poller.ready()
        assert first.reader.datagrams == 2 + 70
        assert polled.reported == []
        assert polled.emptied == 0
    finally:
        polled.poller.close()
        first.close()
        second.close()


def test_one_wake_up_serves_every_ready_socket_however_many() -> None:
    polled, many = Polled(), [Sorted() for _ in range(100)]
    try:
        for sorted_ in many:
            polled.poller.add(sorted_.reader)
            sorted_.send(b"\x00\x01")
        polled.poller.ready()
        assert (polled.poller.wakeups, polled.poller.sockets) == (1, 100)
        assert all(len(sorted_.other) == 1 for sorted_ in many)
    finally:
        polled.poller.close()
        for sorted_ in many:
            sorted_.close()


def test_a_reader_that_raises_is_reported_and_the_others_still_read() -> None:
    class Broken:
        @property
        def _closing(self) -> bool:
            raise RuntimeError("transport broken")

    polled, broken, working = Polled(), Sorted(), Sorted()
    try:
        reader = _aiortc._native.Reader(
            broken.sock.fileno(), Broken(), broken.lane, _unexpected,
            _unexpected, _unexpected, _unexpected, _unexpected,
        )  # fmt: skip
        polled.poller.add(reader)
        polled.poller.add(working.reader)
        broken.send(b"\x00\x01")
        working.send(b"\x00\x02")
        polled.poller.ready()
        assert [str(e) for e in polled.reported] == ["transport broken"]
        assert [d for d, _ in working.other] == [b"\x00\x02"]
        assert reader in polled.poller  # it is its owner's to take out
    finally:
        polled.poller.close()
        broken.close()
        working.close()


def test_a_closing_transport_leaves_the_poller_at_once() -> None:
    polled, sorted_ = Polled(), Sorted()
    try:
        polled.poller.add(sorted_.reader)
        sorted_.transport._closing = True  # asyncio closes the socket a turn later
        sorted_.send(b"\x00\x01")
        polled.poller.ready()
        # Out, with its datagram unread: it would otherwise wake the loop until then.
        assert sorted_.reader not in polled.poller
        assert watched(polled.poller) == set()
        assert sorted_.other == []
        assert polled.emptied == 1
        polled.poller.remove(sorted_.reader)  # connection_lost, after: nothing more
        assert polled.emptied == 1
    finally:
        polled.poller.close()
        sorted_.close()


def test_a_socket_number_reused_after_removal_or_close_is_watched_again() -> None:
    polled = Polled()
    keep = Sorted()  # so that the poller is never empty
    try:
        polled.poller.add(keep.reader)
        for remove_first in (True, False):
            old = Sorted()
            polled.poller.add(old.reader)
            number = old.sock.fileno()
            assert number in watched(polled.poller)
            if remove_first:
                polled.poller.remove(old.reader)  # as connection_lost does
                assert number not in watched(polled.poller)
            old.close()  # the kernel takes a closed socket out of the set either way
            new = Sorted()
            try:
                assert new.sock.fileno() == number  # the lowest free number, reused
                polled.poller.add(new.reader)
                assert old.reader not in polled.poller
                polled.poller.remove(old.reader)  # a stale owner: nothing happens
                assert new.reader in polled.poller
                new.send(b"\x00\x01")
                polled.poller.ready()
                assert [d for d, _ in new.other] == [b"\x00\x01"]
                polled.poller.remove(new.reader)
            finally:
                new.close()
        assert polled.emptied == 0
    finally:
        polled.poller.close()
        keep.close()


def test_a_closed_poller_reads_nothing_and_takes_no_reader() -> None:
    polled, sorted_ = Polled(), Sorted()
    try:
        polled.poller.add(sorted_.reader)
        polled.poller.close()
        assert polled.poller.fileno() == -1
        assert len(polled.poller) == 0
        sorted_.send(b"\x00\x01")
        polled.poller.ready()
        assert sorted_.other == []
        with pytest.raises(ValueError, match="closed"):
            polled.poller.add(sorted_.reader)
    finally:
        sorted_.close()


async def test_a_probed_reader_reports_when_the_kernel_received_each_datagram() -> None:
    pair = Pair(through_socket=True)
    try:
        await pair.start()
        await pair.add_subscriber("7")
        seen: list[int | None] = []
        pair.lane.on_ingress = seen.append
        pair.deliver(video(1, 1000, VP8_KEYFRAME_START))
        assert seen == [0, None]  # not stamped: the probe takes its own time
        seen.clear()
        pair.reader.stamp()
        before = time.time_ns()
        assert pair.deliver(video(2, 1000)) == "native"
        arrival, done = seen
        assert done is None
        assert isinstance(arrival, int)
        assert before <= arrival <= time.time_ns()
    finally:
        for sock in pair.sockets:
            sock.close()
