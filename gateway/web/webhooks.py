"""The webhook worker's life, owned by the application's cleanup context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway.services.webhooks import WebhookConfig, WebhookDispatcher, WebhookWorker
from gateway.web.keys import SERVICES, SETTINGS

__all__ = ["WEBHOOKS", "webhooks_ctx"]

WEBHOOKS = web.AppKey("webhooks", WebhookWorker)


def webhooks_ctx(
    config: WebhookConfig | None = None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context that subscribes the dispatcher to the event bus and runs the
    worker (with its one HTTP client session) from start-up to clean-up.

    Append it after the services' context, so it stops before the store closes.
    """

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        services = app[SERVICES]
        worker = WebhookWorker(
            store=services.store,
            clock=services.clock,
            audit=services.audit,
            config=config,
            allow_http=app[SETTINGS].dev_mode,
            allow_private=app[SETTINGS].webhook_allow_private,
        )
        dispatcher = WebhookDispatcher(
            store=services.store, clock=services.clock, on_enqueued=worker.wake
        )
        try:
            await worker.start()
            services.events.subscribe(dispatcher.on_event)
            app[WEBHOOKS] = worker
            yield
        finally:
            services.events.unsubscribe(dispatcher.on_event)
            await worker.stop()

    return ctx
