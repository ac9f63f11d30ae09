"""The gateway's event loop: while media flows it polls at most once per interval; any
other I/O (Redis, HTTP) runs at full speed when no media does."""

from __future__ import annotations

import asyncio
import selectors
import socket
from collections.abc import Iterator

import pytest

from gateway.media.event_loop import PollingSelector, loop_factory
from tests.factories import make_settings

INTERVAL = 0.002


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


class Media:
    """The counter of media datagrams read (``_native.datagrams_read``)."""

    def __init__(self) -> None:
        self.read = 0

    def __call__(self) -> int:
        return self.read


class Probed(PollingSelector):
    """The selector, noting the timeout each poll is given."""

    def __init__(self, interval: float, media: Media, clock: Clock) -> None:
        self._timeouts: list[float | None] = []
        super().__init__(interval, media, clock=clock, sleep=clock.sleep, record=self._timeouts)

    @property
    def timeouts(self) -> list[float | None]:
        return [None if t is None else round(t, 6) for t in self._timeouts]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def media() -> Media:
    return Media()


@pytest.fixture
def selector(clock: Clock, media: Media) -> Iterator[Probed]:
    selector = Probed(INTERVAL, media, clock)
    # Something always readable, so that no poll blocks the test.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(b"x", sock.getsockname())
        selector.register(sock, selectors.EVENT_READ)
        yield selector
        selector.close()


def test_while_media_flows_a_poll_waits_out_the_interval(
    clock: Clock, media: Media, selector: Probed
) -> None:
    selector.select(None)
    media.read += 3  # that turn read media datagrams
    clock.now += 0.0005  # and took half a millisecond
    selector.select(10.0)  # asyncio's next timer is far away
    assert clock.slept == [0.0015]
    assert selector.timeouts == [None, 9.9985]  # the wait comes off the timeout
    assert (selector.waits, round(selector.waited, 6)) == (1, 0.0015)


def test_without_media_every_poll_is_at_once(clock: Clock, selector: Probed) -> None:
    # An idle gateway, or a chain of Redis round trips: each turn polls again within
    # microseconds, and none of them waits.
    for _ in range(5):
        selector.select(None)
        clock.now += 0.00001
    assert clock.slept == []


def test_media_after_a_quiet_spell_is_read_at_once(
    clock: Clock, media: Media, selector: Probed
) -> None:
    selector.select(None)
    media.read += 1
    clock.now += 5  # long since the last poll
    selector.select(None)
    assert clock.slept == []


def test_ready_callbacks_run_at_once_and_io_waits_for_the_next_poll(
    clock: Clock, media: Media, selector: Probed
) -> None:
    selector.select(None)
    media.read += 1
    # asyncio asks with timeout 0 when callbacks are waiting to run: they run at once,
    # without a poll, and the I/O waits for the next poll, one interval after the last.
    assert selector.select(0) == []
    assert clock.slept == []
    assert selector.timeouts == [None]
    assert selector.skipped == 1


def test_busy_callbacks_still_let_io_be_polled_once_per_interval(
    clock: Clock, media: Media, selector: Probed
) -> None:
    selector.select(None)
    media.read += 1
    for _ in range(3):
        clock.now += 0.0005
        assert selector.select(0) == []
    clock.now += 0.0005  # an interval since the last poll
    assert selector.select(0)  # the socket that is always readable
    assert selector.timeouts == [None, 0]
    assert clock.slept == []


def test_a_timer_is_not_made_late_by_the_wait(clock: Clock, media: Media, selector: Probed) -> None:
    selector.select(None)
    media.read += 1
    clock.now += 0.0005
    assert selector.select(0.0007) == []  # a timer is due in 0.7 ms: it runs then
    assert clock.slept == [0.0007]
    assert selector.timeouts == [None]  # and the poll waits for the interval's end
    assert selector.select(10.0)
    assert clock.slept == [0.0007, 0.0008]
    assert selector.timeouts == [None, 9.9992]


def test_a_clock_that_steps_back_waits_one_interval_at_most(
    clock: Clock, media: Media, selector: Probed
) -> None:
    selector.select(None)
    media.read += 1
    clock.now -= 60
    selector.select(None)
    assert clock.slept == [INTERVAL]


def test_a_poll_gives_what_asyncio_s_epoll_selector_gives() -> None:
    # The poll is EpollSelector.select in C: the same keys, with the same events.
    plain, polling = selectors.EpollSelector(), PollingSelector(INTERVAL, Media())
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    e = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        a.send(b"x")  # b: readable and writable
        d.close()  # c: hung up, readable and writable
        for selector in (plain, polling):
            selector.register(b, selectors.EVENT_READ | selectors.EVENT_WRITE, "b")
            selector.register(c, selectors.EVENT_READ, "c")
            selector.register(e, selectors.EVENT_READ, "e")  # nothing to read
            selector.register(a, selectors.EVENT_WRITE, "a")
        expected = sorted((key.data, events) for key, events in plain.select(0))
        assert expected == [
            ("a", selectors.EVENT_WRITE),
            ("b", selectors.EVENT_READ | selectors.EVENT_WRITE),
            ("c", selectors.EVENT_READ),
        ]
        got = polling.select(0)
        assert sorted((key.data, events) for key, events in got) == expected
        assert all(key is polling.get_key(key.fileobj) for key, _ in got)
        polling.unregister(a)
        assert sorted(key.data for key, _ in polling.select(None)) == ["b", "c"]
    finally:
        plain.close()
        polling.close()
        for sock in (a, b, c, e):
            sock.close()
    with pytest.raises(ValueError, match="closed"):
        polling.select(0)


def test_on_the_real_clock_media_makes_the_next_poll_wait() -> None:
    from gateway.media import _aiortc

    # The longest interval: the test's own steps between two polls never outlast it.
    longest = 0.05
    selector = PollingSelector(longest)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    transport = type("Transport", (), {"_closing": False})()
    got: list[bytes] = []
    reader = _aiortc._native.Reader(
        sock.fileno(), transport, None, lambda data, addr: got.append(data),
        None, None, None, None,
    )  # fmt: skip
    try:
        selector.register(sender, selectors.EVENT_WRITE)  # always ready
        assert selector.select(None)
        assert selector.waits == 0
        sender.sendto(b"\x00\x01", sock.getsockname())
        reader.ready()  # the compiled path read a media socket in that turn
        assert got == [b"\x00\x01"]
        assert selector.select(10.0)
        assert selector.waits == 1
        assert 0 < selector.waited <= longest
        assert selector.select(None)  # nothing read since: at once
        assert selector.waits == 1
    finally:
        selector.close()
        sock.close()
        sender.close()


@pytest.mark.parametrize("interval", [0.0, -1.0, 0.051])
def test_the_interval_is_bounded(interval: float) -> None:
    with pytest.raises(ValueError, match="at most 50 ms"):
        PollingSelector(interval, Media())


def test_the_setting_and_its_bounds() -> None:
    assert make_settings().media_poll_interval_us == 2000
    assert make_settings(media_poll_interval_us="0").media_poll_interval_us == 0
    with pytest.raises(Exception, match="MEDIA_POLL_INTERVAL_US"):
        make_settings(media_poll_interval_us="60000")


def test_zero_is_asyncio_s_own_loop() -> None:
    assert loop_factory(0) is asyncio.new_event_loop


def test_round_trips_without_media_never_wait_on_the_real_loop() -> None:
    # What a Redis client does: send, await the answer, send again.
    async def main() -> int:
        loop = asyncio.get_running_loop()
        selector = loop._selector  # type: ignore[attr-defined]
        assert isinstance(selector, PollingSelector)
        assert selector.interval == INTERVAL

        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                self.transport.sendto(data, addr)  # type: ignore[attr-defined]

        answers: asyncio.Queue[bytes] = asyncio.Queue()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                answers.put_nowait(data)

        server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        client, _ = await loop.create_datagram_endpoint(
            Client, remote_addr=server.get_extra_info("sockname")
        )
        try:
            for n in range(30):
                client.sendto(bytes([n]))
                assert await asyncio.wait_for(answers.get(), 5) == bytes([n])
        finally:
            client.close()
            server.close()
        return int(selector.waits)

    with asyncio.Runner(loop_factory=loop_factory(2000)) as runner:
        assert runner.run(main()) == 0
