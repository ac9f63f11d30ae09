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

The selector's ``select`` is ``_native.Polling.select``, in C: asyncio calls it at every
turn of the loop. Only the compiled path reads media sockets itself, so without it
(a package built without a C compiler) nothing would set the pace, and the loop is
asyncio's own.

``QUIETROOM_MEDIA_POLL_INTERVAL_US`` sets it, in microseconds (0 turns it off).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable

try:  # built with the compiled path (gateway/media/_native.pyx)
    from gateway.media import _native
except ImportError:  # pragma: no cover (CI builds it)
    _native = None  # type: ignore[assignment]

__all__ = ["PollingSelector", "loop_factory"]


class PollingSelector(selectors.EpollSelector):
    """Asyncio's epoll selector, polling at most once per ``interval`` seconds while media
    datagrams are read between polls (:class:`_native.Polling`).

    ``activity``, ``clock``, ``sleep`` and ``record`` replace the compiled path's
    datagram counter, the monotonic clock and the wait, and note each poll's timeout
    (for tests).
    """

    def __init__(
        self,
        interval: float,
        activity: Callable[[], int] | None = None,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
        record: list[float | None] | None = None,
    ) -> None:
        if _native is None:  # pragma: no cover (CI builds it)
            raise RuntimeError("the poll interval needs the compiled path")
        super().__init__()
        try:
            self._polling = _native.Polling(
                interval,
                self._selector.fileno(),  # type: ignore[attr-defined]
                self._fd_to_key,  # type: ignore[attr-defined]
                activity,
                clock,
                sleep,
                record,
            )
        except BaseException:
            super().close()
            raise
        self.select = self._polling.select  # type: ignore[method-assign]

    @property
    def interval(self) -> float:
        return float(self._polling.interval)

    @property
    def waits(self) -> int:
        """Polls that waited first."""
        return int(self._polling.waits)

    @property
    def skipped(self) -> int:
        """Calls that did not poll: callbacks or a timer were due first."""
        return int(self._polling.skipped)

    @property
    def waited(self) -> float:
        """The seconds both waited."""
        return float(self._polling.waited)

    def close(self) -> None:
        self._polling.close()
        super().close()


def loop_factory(interval_us: int) -> Callable[[], asyncio.AbstractEventLoop]:
    """What ``asyncio.Runner(loop_factory=...)`` should make for this poll interval."""
    if interval_us <= 0 or _native is None:
        return asyncio.new_event_loop
    interval = interval_us / 1_000_000

    def new_loop() -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(PollingSelector(interval))

    return new_loop
