"""Typed keys for what the aiohttp application holds."""

from __future__ import annotations

from aiohttp import web

from gateway.media.rooms import MediaRooms
from gateway.media.routing import MediaRouter
from gateway.metrics import GatewayMetrics
from gateway.services import Services
from gateway.settings import Settings
from gateway.web.lifecycle import Lifecycle

__all__ = ["LIFECYCLE", "MEDIA", "MEDIA_ROUTER", "METRICS", "SERVICES", "SETTINGS"]

SETTINGS = web.AppKey("settings", Settings)
SERVICES = web.AppKey("services", Services)
#: Draining state and the closers that run before the process stops.
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
#: The Prometheus registry of this application.
METRICS = web.AppKey("metrics", GatewayMetrics)
#: This process's media: forwarders and the participants' peer connections.
MEDIA = web.AppKey("media", MediaRooms)
#: Where each session's media lives: this process, or another media node (Redis).
MEDIA_ROUTER = web.AppKey("media_router", MediaRouter)
