"""The process's media rooms and recorders, owned by the application."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import ConnectionPool, Redis

from gateway.media.ice_policy import MediaNetwork
from gateway.media.recorder import MediaRecorders
from gateway.media.rooms import ForwardedTotals, MediaRooms
from gateway.media.routing import LocalRouter, RedisRouter
from gateway.media.sealed import RecordingKeyring
from gateway.media.tracks import MediaKind
from gateway.metrics import GatewayMetrics
from gateway.storage.redis import RedisStore
from gateway.web.keys import LIFECYCLE, MEDIA, MEDIA_ROUTER, METRICS, SERVICES, SETTINGS

__all__ = ["media_ctx"]

log = logging.getLogger(__name__)


async def media_ctx(app: web.Application) -> AsyncIterator[None]:
    """Create the media rooms and their router (after the services), count what they
    forward at every scrape, and close every peer when the application stops.

    With Redis this process is one media node among several (:mod:`gateway.media.routing`).
    With recording keys set it records too (:mod:`gateway.media.recorder`): open
    recordings are sealed when the process drains (a lifecycle closer), before its media
    closes.
    """
    services = app[SERVICES]

    async def connected(session_id: str, participant_id: str) -> None:
        await services.waiting_room.joined_media(participant_id)

    rooms = app[MEDIA] = MediaRooms(
        network=MediaNetwork.from_settings(app[SETTINGS]),
        on_connected=connected,
        max_sessions=app[SETTINGS].media_max_sessions,
        native=app[SETTINGS].media_native,
    )
    seen = ForwardedTotals(packets=dict.fromkeys(MediaKind, 0), octets=dict.fromkeys(MediaKind, 0))
    seen_overload = {"dropped": 0, "refused": 0, "errors": 0}

    async def sample(metrics: GatewayMetrics) -> None:
        # Counters only go up: a total that dips (a socket gone before its peer was
        # retired) is held at its high-water mark rather than failing every scrape.
        totals = rooms.totals()
        for kind in MediaKind:
            packets, octets = metrics.forwarded(kind)
            packets.inc(max(totals.packets[kind] - seen.packets[kind], 0))
            octets.inc(max(totals.octets[kind] - seen.octets[kind], 0))
            seen.packets[kind] = max(totals.packets[kind], seen.packets[kind])
            seen.octets[kind] = max(totals.octets[kind], seen.octets[kind])
        dropped = max(rooms.dropped_datagrams(), seen_overload["dropped"])
        refused = max(rooms.refused_sessions, seen_overload["refused"])
        metrics.media_dropped.inc(dropped - seen_overload["dropped"])
        errors = max(rooms.forwarding_errors(), seen_overload["errors"])
        metrics.media_refused.inc(refused - seen_overload["refused"])
        metrics.media_errors.inc(errors - seen_overload["errors"])
        seen_overload.update(dropped=dropped, refused=refused, errors=errors)
        metrics.media_sessions.set(rooms.session_count)
        metrics.recordings_open.set(0 if recorders is None else recorders.open_count)

    store = services.store
    router: LocalRouter | RedisRouter
    if isinstance(store, RedisStore):
        # Its own connections to the store's Redis: a subscription holds one for good.
        pool = store.client.connection_pool
        client = Redis(
            connection_pool=ConnectionPool(
                connection_class=pool.connection_class, **pool.connection_kwargs
            )
        )
        router = RedisRouter(rooms, client, prefix=store.prefix, owns_client=True)
        await router.start()
    else:
        router = LocalRouter(rooms)
    app[MEDIA_ROUTER] = router
    settings = app[SETTINGS]
    recordings = services.recordings
    recorders: MediaRecorders | None = None
    if settings.recording_keys:
        recorders = MediaRecorders(
            rooms=rooms,
            keyring=RecordingKeyring.from_settings(settings),
            directory=settings.recording_dir,
            # With Redis another process may carry a session's media.
            exclusive=not isinstance(store, RedisStore),
        )
        await recordings.attach(recorders)
        app[LIFECYCLE].add_closer(recordings.stop_all)
    app[METRICS].add_sampler(sample)
    try:
        yield
    finally:
        app[METRICS].remove_sampler(sample)
        if recorders is not None:
            app[LIFECYCLE].remove_closer(recordings.stop_all)
            await recordings.detach()
            await recorders.close()
        if isinstance(router, RedisRouter):
            await router.stop()
        await rooms.close()
