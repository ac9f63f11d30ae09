"""The gateway's event loop: asyncio's, with a floor on how often a busy loop polls.

Below saturation a media socket rarely holds more than one datagram when the event loop
gets to it, so each datagram costs a whole wake-up: ``epoll_wait``, a context switch and
a turn of asyncio's loop in Python, about a fifth of a forwarded packet's CPU
(docs/decisions/0010-poll-interval.md). :class:`PollingSelector` makes a busy loop wait
until ``interval`` seconds have passed since its last poll before it polls again; the
datagrams that arrive meanwhile wait in the kernel's socket buffers and are then read
together (``_native.Reader`` drains a socket per wake-up). That is interrupt coalescing,
as network cards do it: a packet waits at most ``interval`` longer, and an idle loop
answers at once, because only a loop that polled less than ``interval`` ago waits.
Callbacks that are ready now are never held back (asyncio then polls with a timeout of
0), and timers are not made late by more than ``interval``.

``QUIETROOM_MEDIA_POLL_INTERVAL_US`` sets it, in microseconds (0 turns it off).
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Callable

__all__ = ["PollingSelector", "loop_factory"]


class PollingSelector(selectors.DefaultSelector):
    """Asyncio's selector, polling at most once per ``interval`` seconds while busy."""

    def __init__(
        self,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        if not 0 < interval <= 0.05:
            raise ValueError("the poll interval must be more than 0 and at most 50 ms")
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._polled = -interval

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # timeout 0: callbacks are ready now, and asyncio only looks for more I/O.
        if timeout is None or timeout > 0:
            wait = self._polled + self.interval - self._clock()
            if wait > 0:
                if timeout is not None:
                    wait = min(wait, timeout)
                    timeout -= wait
                self._sleep(wait)
        try:
            return super().select(timeout)
        finally:
            self._polled = self._clock()


def loop_factory(interval_us: int) -> Callable[[], asyncio.AbstractEventLoop]:
    """What ``asyncio.Runner(loop_factory=...)`` should make for this poll interval."""
    if interval_us <= 0:
        return asyncio.new_event_loop
    interval = interval_us / 1_000_000

    def new_loop() -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(PollingSelector(interval))

    return new_loop
