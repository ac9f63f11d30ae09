"""A gateway process's end: it stops taking joins, tells whom it must, and closes.

On SIGTERM (see :mod:`gateway.web.serve`) or when the application shuts down,
:meth:`Lifecycle.drain` marks the process as draining (readiness answers 503; link
redemptions and new sockets are refused with "the service is restarting") and runs every
registered closer once: signaling tells connected browsers, the media plane seals the
recordings it is writing. Each closer is bounded in time, so the process always exits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["CLOSER_TIMEOUT", "Closer", "Lifecycle"]

log = logging.getLogger(__name__)

#: A closer still running after this many seconds is cancelled.
CLOSER_TIMEOUT = 10.0

Closer = Callable[[], Awaitable[None]]


class Lifecycle:
    """Whether this process still takes joins, and what runs before it stops."""

    def __init__(self, *, closer_timeout: float = CLOSER_TIMEOUT) -> None:
        self._closer_timeout = closer_timeout
        self._closers: list[Closer] = []
        self._draining = False
        self._drain: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        """True from the start of the drain: no new joins."""
        return self._draining

    def add_closer(self, closer: Closer) -> None:
        """Run ``closer`` once when the process drains (e.g. seal open recordings).

        Closers run concurrently, each for at most ``closer_timeout`` seconds; one that
        fails is logged and does not stop the others.
        """
        self._closers.append(closer)

    def remove_closer(self, closer: Closer) -> None:
        if closer in self._closers:
            self._closers.remove(closer)

    async def drain(self) -> None:
        """Stop taking joins and run the closers; safe to call again (it waits for the
        first call's closers)."""
        self._draining = True
        if self._drain is None:
            self._drain = asyncio.create_task(self._run_closers(), name="lifecycle drain")
        await asyncio.shield(self._drain)

    async def _run_closers(self) -> None:
        closers = list(self._closers)
        log.info("draining: %d closers", len(closers))
        await asyncio.gather(*(self._run(closer) for closer in closers))

    async def _run(self, closer: Closer) -> None:
        name = getattr(closer, "__qualname__", type(closer).__name__)
        try:
            async with asyncio.timeout(self._closer_timeout):
                await closer()
        except TimeoutError:
            log.error("closer %s did not finish within %.0f s", name, self._closer_timeout)
        except Exception:  # one closer must not keep the others from running
            log.exception("closer %s failed", name)
