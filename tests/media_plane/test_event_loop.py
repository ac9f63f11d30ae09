"""The gateway's event loop: a busy loop polls at most once per interval, an idle one at once."""

from __future__ import annotations

import asyncio
import selectors
import socket

import pytest

from gateway.media.event_loop import PollingSelector, loop_factory
from tests.factories import make_settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def selector(clock: Clock) -> PollingSelector:
    return PollingSelector(0.002, clock=clock, sleep=clock.sleep)


def test_an_idle_loop_polls_at_once(clock: Clock, selector: PollingSelector) -> None:
    selector.select(0)  # the first poll
    clock.now += 5  # nothing happened for a while; then a datagram comes
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(b"x", sock.getsockname())
        selector.register(sock, selectors.EVENT_READ)
        assert len(selector.select(None)) == 1
        clock.now += 0.0025  # more than the interval since that poll
        assert len(selector.select(None)) == 1
    assert clock.slept == []


def test_a_busy_loop_waits_out_the_interval_then_polls(
    clock: Clock, selector: PollingSelector
) -> None:
    selector.select(0)
    clock.now += 0.0005  # handling what the last poll found took half a millisecond
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(b"x", sock.getsockname())
        selector.register(sock, selectors.EVENT_READ)
        assert len(selector.select(10.0)) == 1  # asyncio's next timer is far away
    assert clock.slept == [0.0015]


def test_ready_callbacks_are_never_held_back(clock: Clock, selector: PollingSelector) -> None:
    selector.select(0)
    selector.select(0)  # asyncio polls with 0 when callbacks are waiting to run
    assert clock.slept == []


def test_a_timer_is_not_made_late_by_the_wait(clock: Clock, selector: PollingSelector) -> None:
    selector.select(0)
    clock.now += 0.0005
    # A timer is due in 0.7 ms: the wait stops there, and the poll itself does not block.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        selector.register(sock, selectors.EVENT_READ)
        assert selector.select(0.0007) == []
    assert clock.slept == [0.0007]


@pytest.mark.parametrize("interval", [0.0, -1.0, 0.051])
def test_the_interval_is_bounded(interval: float) -> None:
    with pytest.raises(ValueError, match="at most 50 ms"):
        PollingSelector(interval)


def test_the_setting_and_its_bounds() -> None:
    assert make_settings().media_poll_interval_us == 2000
    assert make_settings(media_poll_interval_us="0").media_poll_interval_us == 0
    with pytest.raises(Exception, match="MEDIA_POLL_INTERVAL_US"):
        make_settings(media_poll_interval_us="60000")


def test_zero_is_asyncio_s_own_loop() -> None:
    assert loop_factory(0) is asyncio.new_event_loop


def test_the_polling_loop_carries_datagrams_and_timers() -> None:
    received: list[bytes] = []

    class Protocol(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            received.append(data)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop._selector, PollingSelector)  # type: ignore[attr-defined]
        assert loop._selector.interval == 0.002  # type: ignore[attr-defined]
        transport, _ = await loop.create_datagram_endpoint(Protocol, local_addr=("127.0.0.1", 0))
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for n in range(20):
                sender.sendto(bytes([n]), transport.get_extra_info("sockname"))
                await asyncio.sleep(0.001)
            for _ in range(200):
                if len(received) == 20:
                    break
                await asyncio.sleep(0.005)
        finally:
            sender.close()
            transport.close()

    with asyncio.Runner(loop_factory=loop_factory(2000)) as runner:
        runner.run(main())
    assert received == [bytes([n]) for n in range(20)]
