"""The Socket.IO server on the gateway's aiohttp app, and its life."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import socketio
from aiohttp import web

from gateway.clock import Clock
from gateway.domain.waiting_room import ParticipantState
from gateway.metrics import GatewayMetrics
from gateway.services import Services
from gateway.settings import Settings
from gateway.web.keys import LIFECYCLE, MEDIA_ROUTER, METRICS, SERVICES
from signaling.base import clients_room, host_room
from signaling.client_ns import ClientNamespace
from signaling.host_ns import HostNamespace
from signaling.media import MediaCloser
from signaling.relay import SocketRelay
from signaling.timers import GraceTimers

__all__ = ["MAX_PACKET_BYTES", "SIO", "attach_signaling"]

log = logging.getLogger(__name__)

SIO = web.AppKey("sio", socketio.AsyncServer)

#: The largest Socket.IO packet accepted (an SDP offer fits; a flood of bytes does not).
MAX_PACKET_BYTES = 64 * 1024

#: ``restarting`` tells browsers to come back this long after the drain ends, seconds.
RESTART_RETRY_SLACK = 2

_IN_SESSION = frozenset({ParticipantState.ADMITTED, ParticipantState.IN_SESSION})


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
        router = app[MEDIA_ROUTER]
        timers = GraceTimers()
        clients = ClientNamespace(
            services=services, settings=settings, clock=clock, timers=timers, media=router
        )
        sio.register_namespace(clients)
        sio.register_namespace(
            HostNamespace(
                services=services, settings=settings, clock=clock, timers=timers, media=router
            )
        )
        relay = SocketRelay(sio=sio, services=services)
        services.events.subscribe(relay)
        closer = MediaCloser(router)
        services.events.subscribe(closer)

        async def restart_media(session_id: str) -> None:
            # The session's media node is gone: its participants offer again.
            for name, namespace in ((clients_room, "/client"), (host_room, "/host")):
                await sio.emit("media.restart", {}, to=name(session_id), namespace=namespace)

        router.on_moved(restart_media)

        async def tell_restarting() -> None:
            await announce_restart(sio, retry_after=settings.shutdown_drain + RESTART_RETRY_SLACK)

        async def sample(metrics: GatewayMetrics) -> None:
            await sample_connected(metrics, services, clients.connected_participants())

        app[LIFECYCLE].add_closer(tell_restarting)
        app[METRICS].add_sampler(sample)
        try:
            yield
        finally:
            app[METRICS].remove_sampler(sample)
            app[LIFECYCLE].remove_closer(tell_restarting)
            services.events.unsubscribe(closer)
            services.events.unsubscribe(relay)
            await sio.shutdown()
            # After the sockets are gone: their disconnect handlers schedule grace timers.
            await timers.close()

    async def close_sockets(app: web.Application) -> None:
        # An Engine.IO close, not a Socket.IO "disconnect": browsers reconnect on their
        # own (to the next process), and the web server need not wait for them. Not
        # waiting for the close to be sent: a gone or polling client may never take it.
        for socket in list(sio.eio.sockets.values()):
            await socket.close(wait=False)

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_sockets)
    return sio


async def announce_restart(sio: socketio.AsyncServer, *, retry_after: int) -> None:
    """Tell every browser connected to this process (and only this one) that it is
    restarting: ``restarting`` with ``{"retry_after": seconds}``."""
    payload = {"retry_after": retry_after}
    for namespace in ("/client", "/host"):
        await sio.emit("restarting", payload, namespace=namespace, ignore_queue=True)


async def sample_connected(
    metrics: GatewayMetrics, services: Services, participant_ids: set[str]
) -> None:
    """Waiting clients and sessions in progress among the clients connected here."""
    waiting = 0
    sessions: set[str] = set()
    for participant_id in participant_ids:
        participant = await services.store.get_participant(participant_id)
        if participant is None:
            continue
        if participant.state is ParticipantState.WAITING:
            waiting += 1
        elif participant.state in _IN_SESSION:
            sessions.add(participant.appointment_id)
    metrics.waiting_clients.set(waiting)
    metrics.sessions_in_progress.set(len(sessions))
