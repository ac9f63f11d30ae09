"""What operators and their tools talk to: readiness, metrics, and refusing new joins
while the process drains."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import hdrs, web

from gateway.errors import ServiceRestarting, StoreError
from gateway.metrics import CONTENT_TYPE, GatewayMetrics
from gateway.settings import Settings
from gateway.web.keys import LIFECYCLE, METRICS, SERVICES, SETTINGS

__all__ = ["READY_TIMEOUT", "draining_middleware", "metrics_ctx", "ops_routes"]

ops_routes = web.RouteTableDef()

#: Readiness waits this long for the store before it says "not ready".
READY_TIMEOUT = 2.0

#: Requests through a proxy carry one of these: such a request is not from this machine,
#: even when the proxy itself connects from loopback.
_PROXY_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")

#: Paths that start a join: link redemptions.
_JOIN_PREFIXES = ("/j/", "/h/")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@ops_routes.get("/readyz")
async def readiness(request: web.Request) -> web.Response:
    """Readiness: 200 while this process takes joins and its store answers, else 503."""
    if request.app[LIFECYCLE].draining:
        return _not_ready("restarting")
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await request.app[SERVICES].store.ping()
    except (StoreError, TimeoutError):
        return _not_ready("store_unavailable")
    return web.json_response({"status": "ready"}, headers={"Cache-Control": "no-store"})


def _not_ready(reason: str) -> web.Response:
    return web.json_response(
        {"status": "not_ready", "reason": reason},
        status=503,
        headers={"Cache-Control": "no-store", "Retry-After": "5"},
    )


@ops_routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics, for loopback callers that came through no proxy, or for a
    caller with ``Authorization: Bearer <QUIETROOM_METRICS_TOKEN>``."""
    settings = request.app[SETTINGS]
    if not _may_scrape(request, settings):
        if settings.metrics_token:
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        raise web.HTTPForbidden()
    body = await request.app[METRICS].exposition()
    return web.Response(
        body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"}
    )


def _may_scrape(request: web.Request, settings: Settings) -> bool:
    token = settings.metrics_token
    if token:
        presented = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, value = presented.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8", "replace"), token.encode("utf-8")
        ):
            return True
    if any(name in request.headers for name in _PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False  # a Unix socket or an unknown peer


@web.middleware
async def draining_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """While the process drains, link redemptions are refused: the link is not used up
    and works on the next process. (Sockets are refused in signaling.)"""
    if request.path.startswith(_JOIN_PREFIXES) and request.app[LIFECYCLE].draining:
        raise ServiceRestarting("the service is restarting")
    return await handler(request)


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Subscribe the application's metrics to the event bus and the audit log, and
    sample the store and the drain at every scrape. After the services' context."""
    services = app[SERVICES]
    gateway_metrics = app[METRICS]
    lifecycle = app[LIFECYCLE]

    async def sample_health(target: GatewayMetrics) -> None:
        target.draining.set(1 if lifecycle.draining else 0)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await services.store.ping()
        except (StoreError, TimeoutError):
            target.store_up.set(0)
        else:
            target.store_up.set(1)

    services.events.subscribe(gateway_metrics.on_event)
    services.audit.subscribe(gateway_metrics.on_audit)
    gateway_metrics.add_sampler(sample_health)
    try:
        yield
    finally:
        gateway_metrics.remove_sampler(sample_health)
        services.audit.unsubscribe(gateway_metrics.on_audit)
        services.events.unsubscribe(gateway_metrics.on_event)
