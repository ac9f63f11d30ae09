"""The gateway's event loop: asyncio's, with a floor on how often it polls while media flows.

Below saturation a media socket rarely holds more than one datagram when the event loop
gets to it, so each datagram costs a whole wake-up: ``epoll_wait``, a context switch and
a turn of asyncio's loop in Python, a fifth to a third of a forwarded packet's CPU
(docs/decisions/0010-poll-interval.md). :class:`PollingSelector` makes a loop whose last
turn read media datagrams wait until ``interval`` seconds have passed since its last
poll before it polls again; the datagrams that arrive meanwhile, on every socket, wait
in the kernel's buffers and are then read in one wake-up (``_native.Reader`` drains each
socket). That is interrupt coalescing, as network cards do it: a packet waits at most
``interval`` longer.

Only media sets the pace. A turn that read no media datagram (an idle gateway, a chain
of Redis round trips, the HTTP API with no call running) polls at once, so that chain
runs at full speed; while media flows, any other I/O may wait up to ``interval`` per
poll as well. Callbacks that are ready now are never held back (asyncio then polls
with a timeout of 0), and timers are not made late by the wait.

``QUIETROOM_MEDIA_POLL_INTERVAL_US`` sets it, in microseconds (0 turns it off).
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable

from gateway.media._aiortc import media_datagrams_read

__all__ = ["PollingSelector", "loop_factory"]


class PollingSelector(selectors.DefaultSelector):
    """Asyncio's selector, polling at most once per ``interval`` seconds while the
    counter ``activity`` (media datagrams read so far) moves between polls."""

    def __init__(
        self,
        interval: float,
        activity: Callable[[], int],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        if not 0 < interval <= 0.05:
            raise ValueError("the poll interval must be more than 0 and at most 50 ms")
        self.interval = interval
        self._activity = activity
        self._clock = clock
        self._sleep = sleep
        self._polled = -interval
        self._seen = activity()
        #: Polls that waited first, and the seconds they waited (for tests and profiles).
        self.waits = 0
        self.waited = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # timeout 0: callbacks are ready now, and asyncio only looks for more I/O.
        if (timeout is None or timeout > 0) and self._activity() != self._seen:
            wait = min(self._polled + self.interval - self._clock(), self.interval)
            if wait > 0:
                if timeout is not None:
                    wait = min(wait, timeout)
                    timeout -= wait
                self._sleep(wait)
                self.waits += 1
                self.waited += wait
        try:
            return super().select(timeout)
        finally:
            self._polled = self._clock()
            self._seen = self._activity()


def loop_factory(interval_us: int) -> Callable[[], asyncio.AbstractEventLoop]:
    """What ``asyncio.Runner(loop_factory=...)`` should make for this poll interval."""
    if interval_us <= 0:
        return asyncio.new_event_loop
    interval = interval_us / 1_000_000

    def new_loop() -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(PollingSelector(interval, media_datagrams_read))

    return new_loop
