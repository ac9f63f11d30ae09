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
poll as well. Callbacks that are ready now, and timers, are never held back: when asyncio
asks for a poll before the next one is due (a timeout of 0 for ready callbacks, the time
to its next timer otherwise), the selector returns without polling once that time has
come, and the I/O waits for the poll that is due. So while media flows, I/O is polled
once per interval, whatever else wakes the loop.

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
        #: Polls that waited first; calls that did not poll (callbacks or a timer were
        #: due first); the seconds both waited (for tests and profiles).
        self.waits = 0
        self.skipped = 0
        self.waited = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self._activity() != self._seen:
            due = min(self._polled + self.interval - self._clock(), self.interval)
            if due > 0:
                if timeout is not None and timeout < due:
                    # Callbacks are ready (timeout 0) or a timer is due before the next
                    # poll: they run now, and I/O waits for that poll.
                    if timeout > 0:
                        self._sleep(timeout)
                        self.waited += timeout
                    self.skipped += 1
                    return []
                self._sleep(due)
                self.waits += 1
                self.waited += due
                if timeout is not None:
                    timeout -= due
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
