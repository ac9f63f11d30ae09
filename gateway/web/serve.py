"""``quietroom serve``: run the gateway until SIGTERM, then stop in a bounded time.

On SIGTERM (or SIGINT) the process drains: readiness turns 503, link redemptions and new
sockets are refused with "the service is restarting", connected browsers get a
``restarting`` event and the closers run (the media plane seals open recordings). It
keeps answering for ``QUIETROOM_SHUTDOWN_DRAIN`` seconds, so a proxy or orchestrator
sees it is not ready, then closes every connection and exits. A second signal skips
the rest of the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web

from gateway.media.event_loop import loop_factory
from gateway.settings import Settings
from gateway.web.access_log import RedactingAccessLogger
from gateway.web.app import create_app
from gateway.web.keys import LIFECYCLE

__all__ = ["SHUTDOWN_TIMEOUT", "serve"]

log = logging.getLogger(__name__)

#: After the drain, requests still running get this long, seconds.
HANDLER_GRACE = 3.0
#: Closing the connections and the application's resources takes at most this long.
SHUTDOWN_TIMEOUT = 15.0


def serve(settings: Settings) -> int:
    """Run until told to stop; the exit status."""
    with asyncio.Runner(loop_factory=loop_factory(settings.media_poll_interval_us)) as runner:
        return runner.run(_serve(settings))


async def _serve(settings: Settings) -> int:
    app = create_app(settings)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log_class=RedactingAccessLogger,
        shutdown_timeout=HANDLER_GRACE,
    )
    await runner.setup()
    signals = asyncio.Queue[signal.Signals]()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, signals.put_nowait, signum)
    try:
        site = web.TCPSite(runner, settings.bind_host, settings.port)
        await site.start()
        log.info("listening on %s:%d", settings.bind_host, settings.port)
        received = await signals.get()
        log.info("%s: draining for %d s, then stopping", received.name, settings.shutdown_drain)
        await _drain(app, signals, settings.shutdown_drain)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                await runner.cleanup()
        except TimeoutError:
            log.error("shutdown did not finish within %.0f s; exiting anyway", SHUTDOWN_TIMEOUT)
    log.info("stopped")
    return 0


async def _drain(
    app: web.Application, signals: asyncio.Queue[signal.Signals], seconds: float
) -> None:
    """Refuse joins, run the closers, and keep answering until ``seconds`` have passed
    since the signal (or another signal comes)."""
    deadline = asyncio.get_running_loop().time() + seconds
    closing = asyncio.create_task(app[LIFECYCLE].drain(), name="drain")
    another = asyncio.create_task(signals.get(), name="second signal")
    try:
        await asyncio.wait({closing, another}, return_when=asyncio.FIRST_COMPLETED)
        if another.done():
            return
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await asyncio.shield(another)
    finally:
        another.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await another
        if not closing.done():
            # A second signal: the closers still get their bounded time in on_shutdown.
            closing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closing
