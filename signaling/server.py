"""The Socket.IO server on the gateway's aiohttp app, and its life."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import socketio
from aiohttp import web

from gateway.clock import Clock
from gateway.settings import Settings
from gateway.web.keys import SERVICES
from signaling.client_ns import ClientNamespace
from signaling.host_ns import HostNamespace
from signaling.relay import SocketRelay
from signaling.timers import GraceTimers

__all__ = ["MAX_PACKET_BYTES", "SIO", "attach_signaling"]

log = logging.getLogger(__name__)

SIO = web.AppKey("sio", socketio.AsyncServer)

#: The largest Socket.IO packet accepted (an SDP offer fits; a flood of bytes does not).
MAX_PACKET_BYTES = 64 * 1024


def attach_signaling(
    app: web.Application, settings: Settings, clock: Clock
) -> socketio.AsyncServer:
    """Create the Socket.IO server, attach it to ``app`` and own its life.

    Must be called after the services context is registered, so the namespaces find
    ``app[SERVICES]`` when the app starts.
    """
    manager = (
        socketio.AsyncRedisManager(settings.redis_url, channel="quietroom-signaling")
        if settings.redis_url
        else None
    )
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=manager,
        cors_allowed_origins=sorted(settings.origins),
        cors_credentials=True,
        max_http_buffer_size=MAX_PACKET_BYTES,
        ping_interval=10,
        ping_timeout=10,
        logger=False,
        engineio_logger=False,
        cookie=None,
    )
    sio.attach(app, socketio_path="socket.io")
    app[SIO] = sio

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        services = app[SERVICES]
        timers = GraceTimers()
        sio.register_namespace(
            ClientNamespace(services=services, settings=settings, clock=clock, timers=timers)
        )
        sio.register_namespace(
            HostNamespace(services=services, settings=settings, clock=clock, timers=timers)
        )
        relay = SocketRelay(sio=sio, services=services)
        services.events.subscribe(relay)
        try:
            yield
        finally:
            services.events.unsubscribe(relay)
            await timers.close()
            await sio.shutdown()

    app.cleanup_ctx.append(lifecycle)
    return sio
