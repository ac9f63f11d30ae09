"""The retention sweeper's life, owned by the application's cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from gateway.services.retention import RetentionReport, RetentionSweeper
from gateway.web.keys import METRICS, SERVICES, SETTINGS

__all__ = ["RETENTION", "retention_ctx"]

RETENTION = web.AppKey("retention", RetentionSweeper)


async def retention_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run one retention sweeper from start-up to clean-up, counting what it removes in
    the application's metrics. Append it after the services' context, so it stops
    before the store closes."""
    services = app[SERVICES]
    metrics = app[METRICS]

    def on_pass(report: RetentionReport) -> None:
        metrics.retention_pass(report.counts(), at=services.clock.now())

    sweeper = RetentionSweeper(
        service=services.retention,
        interval=app[SETTINGS].retention_interval,
        on_pass=on_pass,
        on_failure=metrics.retention_failures.inc,
    )
    app[RETENTION] = sweeper
    await sweeper.start()
    try:
        yield
    finally:
        await sweeper.stop()
