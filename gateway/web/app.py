"""The aiohttp application: every resource created and closed through cleanup_ctx."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from gateway.clock import Clock, SystemClock
from gateway.metrics import GatewayMetrics
from gateway.services import Services
from gateway.services.webhooks import WebhookConfig
from gateway.settings import Settings
from gateway.storage import MemoryStore, SecretBox, Store
from gateway.web.api import api_routes
from gateway.web.keys import LIFECYCLE, METRICS, SERVICES, SETTINGS
from gateway.web.lifecycle import Lifecycle
from gateway.web.media import media_ctx
from gateway.web.middleware import error_middleware, security_headers
from gateway.web.ops import draining_middleware, metrics_ctx, ops_routes
from gateway.web.retention import retention_ctx
from gateway.web.routes import routes
from gateway.web.static import static_routes
from gateway.web.webhooks import webhooks_ctx
from signaling import attach_signaling

__all__ = ["create_app", "open_store"]

log = logging.getLogger(__name__)

#: Requests larger than this are refused before a handler runs.
MAX_REQUEST_BYTES = 64 * 1024

StoreFactory = Callable[[Settings], Store]


def open_store(settings: Settings) -> Store:
    """RedisStore when a Redis URL is set, else the embedded MemoryStore."""
    box = SecretBox(settings.data_keys)
    if settings.redis_url:
        from gateway.storage.redis import RedisStore

        return RedisStore.from_url(settings.redis_url, secret_box=box)
    return MemoryStore(secret_box=box)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    store_factory: StoreFactory = open_store,
    webhooks: WebhookConfig | None = None,
) -> web.Application:
    """The gateway's web application, configured by ``settings``.

    ``webhooks`` tunes the webhook worker (tests shorten its retry schedule).
    """
    app = web.Application(
        middlewares=[security_headers(settings), error_middleware, draining_middleware],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[SETTINGS] = settings
    app[METRICS] = GatewayMetrics()
    lifecycle = app[LIFECYCLE] = Lifecycle()
    the_clock = clock or SystemClock()

    async def services_ctx(app: web.Application) -> AsyncIterator[None]:
        store = store_factory(settings)
        try:
            app[SERVICES] = Services.build(settings=settings, store=store, clock=the_clock)
            log.info("gateway ready (%s)", type(store).__name__)
            yield
        finally:
            await store.close()

    app.cleanup_ctx.append(services_ctx)
    app.cleanup_ctx.append(metrics_ctx)
    app.cleanup_ctx.append(webhooks_ctx(webhooks))
    app.cleanup_ctx.append(retention_ctx)
    app.cleanup_ctx.append(media_ctx)
    # Closers (telling browsers, sealing recordings) run before connections close.
    app.on_shutdown.append(lambda _: lifecycle.drain())
    app.add_routes(ops_routes)
    app.add_routes(routes)
    app.add_routes(api_routes)
    app.add_routes(static_routes)
    # After the services context, so the namespaces find app[SERVICES] at start.
    attach_signaling(app, settings, the_clock)
    return app
